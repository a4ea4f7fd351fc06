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
    let initialised: HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref().map(|t| t.name.as_str())))
        .collect();
    let inputs = graph
        .input
        .iter()
        .filter(|v| !initialised.contains(v.name.as_str()))
        .map(|v| declared("input", v)?.ok_or_else(|| undeclared("input", v)))
        .collect::<Result<Vec<_>>>()?;
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
