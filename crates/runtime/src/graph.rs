//! What both backends read from the ONNX graph itself: the declared signature, and a guard
//! that turns a backend panic on hostile bytes into an error.

use std::any::Any;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tract_onnx::pb::{self, tensor_shape_proto::dimension, type_proto};
use tract_onnx::prelude::Framework;
use verinet_primitives::{DType, Dim, IoSignature, TensorSpec};

use crate::{Result, RuntimeError};

/// Decodes the ONNX protobuf, refusing bytes that are plainly not a model.
pub(crate) fn decode(onnx: &[u8]) -> Result<pb::ModelProto> {
    if onnx.is_empty() {
        return Err(RuntimeError::InvalidModel("empty file: no ONNX model".into()));
    }
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &onnx[..])
        .map_err(|e| RuntimeError::InvalidModel(format!("not an ONNX protobuf: {e:#}")))?;
    // Protobuf reads many short byte strings as a valid but empty message.
    if proto.graph.is_none() {
        return Err(RuntimeError::InvalidModel("not an ONNX model: no graph".into()));
    }
    Ok(proto)
}

/// The graph both backends compile, from the bytes as published, and the bytes of that graph when
/// they differ from the published ones.
///
/// One rewrite is made: a `ZipMap` output (scikit-learn classifiers' default probabilities, a
/// sequence of maps) becomes the probability tensor it wraps, `[N, classes]` float with columns in
/// the order of its class labels, under the same output name. The model's content hash stays that
/// of the published bytes; the rewrite is a pure function of them, so every executor runs the same
/// graph.
pub(crate) fn normalize(onnx: &[u8]) -> Result<(pb::ModelProto, Option<Vec<u8>>)> {
    let mut proto = decode(onnx)?;
    let Some(graph) = proto.graph.as_mut() else { return Ok((proto, None)) };
    if !graph.node.iter().any(|n| n.op_type == "ZipMap") {
        return Ok((proto, None));
    }
    let consumed: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    for node in graph.node.iter_mut().filter(|n| n.op_type == "ZipMap") {
        let (Some(input), Some(output)) = (node.input.first(), node.output.first()) else {
            return Err(RuntimeError::InvalidModel("ZipMap needs one input and one output".into()));
        };
        let Some(declared) = graph.output.iter_mut().find(|o| &o.name == output) else {
            let why = if consumed.contains(output) { "feeds another node" } else { "is not a graph output" };
            return Err(RuntimeError::InvalidModel(format!(
                "ZipMap output {output:?} {why}: verinet turns a ZipMap graph output into its probability tensor, and \
                 nothing else (export with options={{'zipmap': False}})"
            )));
        };
        tracing::debug!(input = %input, output = %output, "ZipMap output served as its probability tensor");
        // The output's type is left to the backend's inference: [N, classes] float.
        declared.r#type = Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: 1, shape: None })),
            ..Default::default()
        });
        node.op_type = "Identity".into();
        node.domain = String::new();
        node.attribute.clear();
    }
    if !proto.opset_import.iter().any(|o| o.domain.is_empty() || o.domain == "ai.onnx") {
        proto.opset_import.push(pb::OperatorSetIdProto { domain: String::new(), version: 13 });
    }
    let bytes = prost::Message::encode_to_vec(&proto);
    Ok((proto, Some(bytes)))
}

/// The signature as the graph declares it: inputs that are not initialisers, then outputs.
///
/// Dims keep their ONNX names (`batch`); an unnamed dynamic dim becomes `<tensor>_dim<axis>`, a
/// symbol of its own. An output whose type or shape the graph leaves out is taken from
/// `infer_output(index)`, the backend's own type inference.
pub(crate) fn signature(
    proto: &pb::ModelProto,
    infer_output: &dyn Fn(usize) -> Option<TensorSpec>,
) -> Result<IoSignature> {
    let graph = proto.graph.as_ref().ok_or_else(|| RuntimeError::InvalidModel("no graph".into()))?;
    let inputs = inputs(proto)?;
    let outputs = graph
        .output
        .iter()
        .enumerate()
        .map(|(i, v)| match declared("output", v)? {
            Some(spec) => Ok(spec),
            None => infer_output(i).ok_or_else(|| undeclared("output", v)),
        })
        .collect::<Result<Vec<_>>>()?;
    if outputs.is_empty() {
        return Err(RuntimeError::InvalidModel("the graph has no outputs".into()));
    }
    Ok(IoSignature { inputs, outputs, ..Default::default() })
}

/// The declared inputs, initialisers excluded, in graph order; dims named as in [`signature`].
pub(crate) fn inputs(proto: &pb::ModelProto) -> Result<Vec<TensorSpec>> {
    let graph = proto.graph.as_ref().ok_or_else(|| RuntimeError::InvalidModel("no graph".into()))?;
    let initialised: HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref().map(|t| t.name.as_str())))
        .collect();
    graph
        .input
        .iter()
        .filter(|v| !initialised.contains(v.name.as_str()))
        .map(|v| declared("input", v)?.ok_or_else(|| undeclared("input", v)))
        .collect()
}

/// The declared spec of one graph value; `None` when its type or shape is left out.
fn declared(role: &str, v: &pb::ValueInfoProto) -> Result<Option<TensorSpec>> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Ok(None);
    };
    if t.elem_type == 0 {
        return Ok(None);
    }
    let dtype = dtype_from_onnx(t.elem_type).ok_or_else(|| {
        RuntimeError::InvalidModel(format!(
            "{role} {:?} has element type {}, which verinet tensors cannot carry",
            v.name,
            onnx_type_name(t.elem_type)
        ))
    })?;
    let Some(shape) = &t.shape else { return Ok(None) };
    let shape = shape
        .dim
        .iter()
        .enumerate()
        .map(|(axis, d)| match &d.value {
            Some(dimension::Value::DimValue(n)) => u64::try_from(*n)
                .map(Dim::Fixed)
                .map_err(|_| RuntimeError::InvalidModel(format!("{role} {:?} dim {axis} is {n}", v.name))),
            Some(dimension::Value::DimParam(p)) if !p.is_empty() => Ok(Dim::Symbolic(p.clone())),
            _ => Ok(Dim::Symbolic(format!("{}_dim{axis}", v.name))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(TensorSpec { name: v.name.clone(), dtype, shape }))
}

fn undeclared(role: &str, v: &pb::ValueInfoProto) -> RuntimeError {
    RuntimeError::InvalidModel(format!("{role} {:?} declares no tensor type and shape", v.name))
}

/// The verinet dtype of an ONNX `TensorProto.DataType` code (verinet uses the same codes).
pub(crate) fn dtype_from_onnx(code: i32) -> Option<DType> {
    DType::ALL.into_iter().find(|d| i32::from(d.code()) == code)
}

fn onnx_type_name(code: i32) -> String {
    let name = match code {
        8 => "string",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        17..=20 => "float8",
        21 => "uint4",
        22 => "int4",
        23 => "float4e2m1",
        _ => return format!("code {code}"),
    };
    name.into()
}

/// Runs `f`, turning a panic into `wrap(message)`. Backends are not meant to panic on any input,
/// but a node must survive a model crafted to make them.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T>, wrap: fn(String) -> RuntimeError) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(wrap(format!("backend panicked: {}", panic_message(&*payload)))))
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
