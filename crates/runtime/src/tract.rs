//! The default backend: tract, pure Rust, single-threaded per run.

use std::sync::{Arc, Mutex, MutexGuard};

use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, IntoTValue, IntoTensor, TDim,
    TValue, TVec, Tensor as TractTensor, TractError, TypedModel, TypedSimplePlan,
};
use tract_onnx::tract_core::ops::konst::Const;
use verinet_primitives::{DType, Dim, IoSignature, Tensor, TensorMap, TensorSpec};

use crate::{InferenceBackend, Plan, Result, RuntimeError, graph, onnx_ml};

// Tensors cross the boundary as raw bytes: verinet's are little-endian, tract's are native.
#[cfg(not(target_endian = "little"))]
compile_error!("verinet-runtime copies tensor bytes as they are and needs a little-endian target");

/// Runs models with [tract](https://github.com/sonos/tract): no native dependency, one thread per
/// run, so the runtime's concurrency limit is the number of busy cores.
#[derive(Debug, Default, Clone, Copy)]
pub struct TractBackend;

impl TractBackend {
    /// A tract backend; it holds no state, plans hold the compiled models.
    pub fn new() -> Self {
        Self
    }
}

impl InferenceBackend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn prepare(&self, onnx: &[u8]) -> Result<Arc<dyn Plan>> {
        let plan = graph::guard(|| TractPlan::compile(onnx), RuntimeError::InvalidModel)?;
        Ok(Arc::new(plan))
    }
}

/// How many shape-specialised plans one model keeps (least recently used first out).
const MAX_SPECIALISED: usize = 8;

/// A compiled model. tract can usually optimise a graph once with its symbolic dims (`batch`,
/// `sequence`) kept, and run that general plan on any binding. Some graphs defeat its symbolic
/// analysis (a shape computed at run time with variable rank), and some general plans fail at run
/// time (tract's debug builds check every intermediate shape against its analysis and catch
/// symbolic rewrites that went wrong). Those inputs run on a plan specialised to their concrete
/// shapes instead, compiled from the parsed graph on first use and kept for reuse.
struct TractPlan {
    signature: IoSignature,
    general: Option<Arc<TypedSimplePlan>>,
    /// The parsed graph, value info ignored, from which specialised plans are compiled.
    model: InferenceModel,
    specialised: Mutex<Vec<Specialised>>,
    /// Bytes of the parsed graph and of the general plan's constants.
    base_memory: usize,
}

struct Specialised {
    shapes: Vec<Vec<usize>>,
    plan: Arc<TypedSimplePlan>,
    memory: usize,
}

impl TractPlan {
    fn compile(onnx: &[u8]) -> Result<Self> {
        let (proto, _) = graph::normalize(onnx)?;
        let framework = onnx_ml::framework();
        refuse_unknown_ops(&framework, &proto)?;
        // Value info is a hint; exporters write stale ones that tract would take as facts.
        let mut model = framework
            .with_ignore_value_info(true)
            .model_for_proto_model(&proto)
            .map_err(invalid("reading the graph"))?;
        bind_input_symbols(&mut model, &proto)?;
        let output_names: Vec<&str> = proto.graph.iter().flat_map(|g| &g.output).map(|o| o.name.as_str()).collect();
        match general(&model) {
            Ok((typed, plan)) => {
                let signature = graph::signature(&proto, &|i| inferred_output(&typed, i, output_names.get(i)?))?;
                check_wiring(&signature, &model)?;
                // The parsed graph kept for specialising weighs about the bytes.
                let base_memory = onnx.len() + constant_bytes(plan.model());
                Ok(Self { signature, general: Some(plan), model, specialised: Mutex::default(), base_memory })
            }
            Err(symbolic) => {
                let signature = graph::signature(&proto, &|_| None)?;
                check_wiring(&signature, &model)?;
                // Validate now, with every symbol bound to 1, so a broken graph fails at publish.
                let ones: Vec<Vec<usize>> = signature
                    .inputs
                    .iter()
                    .map(|s| s.shape.iter().map(|d| if let Dim::Fixed(n) = d { *n as usize } else { 1 }).collect())
                    .collect();
                let first = specialise(&model, &signature, &ones).map_err(|_| symbolic)?;
                tracing::debug!("tract cannot plan this graph with symbolic dims; specialising per input shape");
                let plan = Self {
                    signature,
                    general: None,
                    model,
                    specialised: Mutex::new(vec![first]),
                    base_memory: onnx.len(),
                };
                Ok(plan)
            }
        }
    }

    fn specialised(&self) -> MutexGuard<'_, Vec<Specialised>> {
        self.specialised.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept plan specialised to these input shapes, now the most recently used.
    fn kept(&self, shapes: &[Vec<usize>]) -> Option<Arc<TypedSimplePlan>> {
        let mut kept = self.specialised();
        let i = kept.iter().position(|s| s.shapes == shapes)?;
        let hit = kept.remove(i);
        let plan = hit.plan.clone();
        kept.push(hit);
        Some(plan)
    }

    /// Compiles and keeps a plan specialised to these input shapes.
    fn specialise(&self, shapes: &[Vec<usize>]) -> Result<Arc<TypedSimplePlan>> {
        // Compiled outside the lock: runs of other shapes go on meanwhile.
        let fresh = specialise(&self.model, &self.signature, shapes).map_err(|e| match e {
            RuntimeError::InvalidModel(m) => RuntimeError::Execution(m),
            other => other,
        })?;
        let plan = fresh.plan.clone();
        let mut kept = self.specialised();
        if kept.len() >= MAX_SPECIALISED {
            kept.remove(0);
        }
        kept.push(fresh);
        Ok(plan)
    }
}

/// The symbolic pipeline: typed, optimised, planned.
fn general(model: &InferenceModel) -> Result<(TypedModel, Arc<TypedSimplePlan>)> {
    let mut typed = model.clone().into_typed().map_err(invalid("typing the graph"))?;
    fold_constant_casts(&mut typed).map_err(invalid("folding constant casts"))?;
    let optimized = typed.clone().into_optimized().map_err(invalid("optimising the graph"))?;
    let plan = optimized.into_runnable().map_err(invalid("planning the graph"))?;
    Ok((typed, plan))
}

/// A plan for one set of concrete input shapes (in signature order).
fn specialise(model: &InferenceModel, signature: &IoSignature, shapes: &[Vec<usize>]) -> Result<Specialised> {
    let mut model = model.clone();
    for (i, (spec, shape)) in signature.inputs.iter().zip(shapes).enumerate() {
        let fact = InferenceFact::dt_shape(datum_type(spec.dtype), shape.iter().copied().collect::<TVec<_>>());
        model.set_input_fact(i, fact).map_err(invalid("fixing input shapes"))?;
    }
    let mut typed = model.into_typed().map_err(invalid("typing the graph"))?;
    fold_constant_casts(&mut typed).map_err(invalid("folding constant casts"))?;
    let optimized = typed.into_optimized().map_err(invalid("optimising the graph"))?;
    let memory = constant_bytes(&optimized);
    let plan = optimized.into_runnable().map_err(invalid("planning the graph"))?;
    Ok(Specialised { shapes: shapes.to_vec(), plan, memory })
}

/// Replaces every `Cast` of a constant with the cast constant. tract folds constants only within
/// a 4 MiB budget, so a large int8 weight (MiniLM's 30522x384 embedding table) stayed int8 and
/// was widened to float on every call; folded, it costs its float size once (the plan expansion
/// limit still applies) and the kernels get plain float weights.
fn fold_constant_casts(model: &mut TypedModel) -> tract_onnx::prelude::TractResult<()> {
    use tract_onnx::tract_core::model::{SpecialOps, TypedModelPatch};
    use tract_onnx::tract_core::ops::cast::Cast;
    loop {
        let found = model.nodes().iter().find_map(|n| {
            let cast = n.op_as::<Cast>()?;
            // A folded cast keeps its node, unplugged: skip those.
            if n.outputs.iter().all(|o| o.successors.is_empty()) && !model.output_outlets().ok()?.iter().any(|o| o.node == n.id) {
                return None;
            }
            let konst = model.outlet_fact(n.inputs[0]).ok()?.konst.clone()?;
            Some((n.id, n.name.clone(), cast.to, konst))
        });
        let Some((id, name, to, konst)) = found else { return Ok(()) };
        let value = konst.cast_to_dt(to)?.into_owned();
        let mut patch = TypedModelPatch::default();
        let wire = patch.add_const(format!("{name}.folded"), value)?;
        patch.shunt_outside(model, id.into(), wire)?;
        patch.apply(model)?;
    }
}

/// Gives every input its declared fact with each dynamic dim a named symbol. Exporters often
/// leave the batch dim unnamed (skl2onnx does), which tract reads as unknown and cannot type;
/// named, the graph plans once for every batch size.
fn bind_input_symbols(model: &mut InferenceModel, proto: &tract_onnx::pb::ModelProto) -> Result<()> {
    for (i, spec) in graph::inputs(proto)?.iter().enumerate() {
        let shape: TVec<TDim> = spec
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => TDim::from(*n as usize),
                Dim::Symbolic(name) => model.symbols.sym(name).into(),
            })
            .collect();
        let fact = InferenceFact::dt_shape(datum_type(spec.dtype), shape);
        model.set_input_fact(i, fact).map_err(invalid("setting input facts"))?;
    }
    Ok(())
}

/// Names the first operator tract has no implementation of, rather than tract's later failure
/// to type a placeholder.
fn refuse_unknown_ops(framework: &tract_onnx::Onnx, proto: &tract_onnx::pb::ModelProto) -> Result<()> {
    let nodes = proto.graph.iter().flat_map(|g| &g.node);
    for node in nodes {
        if !framework.op_register.0.contains_key(&node.op_type) {
            let domain = if node.domain.is_empty() { "ai.onnx" } else { node.domain.as_str() };
            return Err(RuntimeError::InvalidModel(format!(
                "operator {domain}:{} (node {:?}) is not supported by the tract backend",
                node.op_type, node.name
            )));
        }
    }
    Ok(())
}

/// tract adds its sources in graph order, skipping initialisers, as the signature does.
fn check_wiring(signature: &IoSignature, model: &InferenceModel) -> Result<()> {
    let (inputs, outputs) =
        (model.input_outlets().map_or(0, |o| o.len()), model.output_outlets().map_or(0, |o| o.len()));
    if inputs != signature.inputs.len() || outputs != signature.outputs.len() {
        return Err(RuntimeError::InvalidModel(format!(
            "graph wiring: {} inputs and {} outputs declared, {inputs} and {outputs} found",
            signature.inputs.len(),
            signature.outputs.len(),
        )));
    }
    Ok(())
}

impl Plan for TractPlan {
    fn signature(&self) -> &IoSignature {
        &self.signature
    }

    fn run(&self, inputs: &TensorMap) -> Result<TensorMap> {
        graph::guard(
            || {
                let tensors = self
                    .signature
                    .inputs
                    .iter()
                    .map(|spec| {
                        inputs
                            .get(&spec.name)
                            .ok_or_else(|| RuntimeError::Execution(format!("input {:?} not given", spec.name)))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let values =
                    || tensors.iter().map(|t| to_tract(t).map(IntoTValue::into_tvalue)).collect::<Result<TVec<_>>>();
                let shapes: Vec<Vec<usize>> = tensors.iter().map(|t| t.shape().to_vec()).collect();
                let failed = |e: TractError| RuntimeError::Execution(format!("{e:#}"));
                let outputs = if let Some(plan) = self.kept(&shapes) {
                    plan.run(values()?).map_err(failed)?
                } else {
                    let general = match &self.general {
                        Some(plan) => Some(plan.run(values()?)),
                        None => None,
                    };
                    match general {
                        Some(Ok(outputs)) => outputs,
                        Some(Err(e)) => {
                            tracing::debug!(error = %format!("{e:#}"), "general tract plan failed; specialising to the input shapes");
                            self.specialise(&shapes)?.run(values()?).map_err(failed)?
                        }
                        None => self.specialise(&shapes)?.run(values()?).map_err(failed)?,
                    }
                };
                outputs
                    .into_iter()
                    .zip(&self.signature.outputs)
                    .map(|(value, spec)| Ok((spec.name.clone(), from_tract(value, spec.dtype)?)))
                    .collect()
            },
            RuntimeError::Execution,
        )
    }

    /// The general plan (or the bytes) plus every specialised plan kept now; the cache re-weighs
    /// plans as they are used.
    fn memory_bytes(&self) -> usize {
        self.base_memory + self.specialised().iter().map(|s| s.memory).sum::<usize>()
    }
}

fn invalid(stage: &'static str) -> impl Fn(TractError) -> RuntimeError {
    move |e| RuntimeError::InvalidModel(format!("{stage}: {e:#}"))
}

/// Output spec from tract's type inference, for graphs that leave an output's type out.
fn inferred_output(model: &TypedModel, index: usize, name: &str) -> Option<TensorSpec> {
    let fact = model.output_fact(index).ok()?;
    let dtype = dtype_from_tract(fact.datum_type)?;
    let shape = fact
        .shape
        .iter()
        .map(|d: &TDim| match d.to_i64() {
            Ok(n) => u64::try_from(n).map(Dim::Fixed).unwrap_or_else(|_| Dim::Symbolic(d.to_string())),
            Err(_) => Dim::Symbolic(d.to_string()),
        })
        .collect();
    Some(TensorSpec { name: name.to_owned(), dtype, shape })
}

/// Bytes held by the optimised graph's constants (weights), however tract packed them.
fn constant_bytes(model: &TypedModel) -> usize {
    model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<Const>())
        .map(|k| k.val().try_as_plain_ram().map(|v| v.as_bytes().len()).unwrap_or(0))
        .sum()
}

fn datum_type(dtype: DType) -> DatumType {
    match dtype {
        DType::Float32 => DatumType::F32,
        DType::Float64 => DatumType::F64,
        DType::Float16 => DatumType::F16,
        DType::Int8 => DatumType::I8,
        DType::Int16 => DatumType::I16,
        DType::Int32 => DatumType::I32,
        DType::Int64 => DatumType::I64,
        DType::Uint8 => DatumType::U8,
        DType::Uint16 => DatumType::U16,
        DType::Uint32 => DatumType::U32,
        DType::Uint64 => DatumType::U64,
        DType::Bool => DatumType::Bool,
    }
}

fn dtype_from_tract(dt: DatumType) -> Option<DType> {
    DType::ALL.into_iter().find(|d| datum_type(*d) == dt).or(match dt {
        // Shape computations surface as TDim; ONNX declares them int64.
        DatumType::TDim => Some(DType::Int64),
        _ => None,
    })
}

fn to_tract(t: &Tensor) -> Result<TractTensor> {
    let fail = |e: TractError| RuntimeError::Execution(format!("input tensor: {e:#}"));
    if t.dtype() == DType::Bool {
        // Any non-zero byte is true; tract's bools must be exactly 0 or 1.
        let values: Vec<bool> = t.raw().iter().map(|&b| b != 0).collect();
        return TractTensor::from_shape(t.shape(), &values).map_err(fail);
    }
    let mut out = TractTensor::zero_dt(datum_type(t.dtype()), t.shape()).map_err(fail)?;
    out.try_as_plain_ram_mut().map_err(fail)?.as_bytes_mut().copy_from_slice(t.raw());
    Ok(out)
}

fn from_tract(value: TValue, dtype: DType) -> Result<Tensor> {
    let fail = |e: TractError| RuntimeError::Execution(format!("output tensor: {e:#}"));
    let tensor = value.into_tensor();
    let tensor = tensor.cast_to_dt(datum_type(dtype)).map_err(fail)?;
    let shape = tensor.shape().to_vec();
    let plain = tensor.try_as_plain_ram().map_err(fail)?;
    let bytes = if dtype == DType::Bool {
        plain.as_slice::<bool>().map_err(fail)?.iter().map(|&b| u8::from(b)).collect()
    } else {
        plain.as_bytes().to_vec()
    };
    Tensor::from_raw(dtype, shape, bytes).map_err(|e| RuntimeError::Execution(format!("output tensor: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips_through_tract() {
        for dt in DType::ALL {
            let raw: Vec<u8> =
                (0..3 * dt.size()).map(|i| if dt == DType::Bool { (i % 2) as u8 } else { i as u8 }).collect();
            let t = Tensor::from_raw(dt, vec![3], raw).expect("tensor");
            let back = from_tract(to_tract(&t).expect("to tract").into_tvalue(), dt).expect("from tract");
            assert_eq!(back, t, "{dt}");
        }
    }

    #[test]
    fn an_operator_tract_lacks_is_named_with_the_backend() {
        use tract_onnx::pb;
        let value = |name: &str| pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto {
                        dim: vec![pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(2)),
                            ..Default::default()
                        }],
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(pb::GraphProto {
                node: vec![pb::NodeProto {
                    op_type: "Binarizer".into(),
                    domain: "ai.onnx.ml".into(),
                    name: "b".into(),
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                input: vec![value("x")],
                output: vec![value("y")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&model);
        let Err(RuntimeError::InvalidModel(message)) = TractBackend::new().prepare(&bytes) else {
            panic!("a graph with an unknown operator compiled");
        };
        assert!(message.contains("ai.onnx.ml:Binarizer") && message.contains("tract backend"), "{message}");
    }

    #[test]
    fn dtypes_map_both_ways() {
        for dt in DType::ALL {
            assert_eq!(dtype_from_tract(datum_type(dt)), Some(dt));
        }
    }
}
