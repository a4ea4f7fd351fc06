use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DType, TensorMap};

/// A model's interface, read from its bytes at publish time: the declared inputs and outputs
/// of an ONNX graph, or, for a language model, its kind and the facts its file states (an LLM
/// takes messages and answers tokens; an encoder takes texts and answers vectors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct IoSignature {
    /// Graph inputs that must be fed (initialisers excluded), in graph order (ONNX only).
    pub inputs: Vec<TensorSpec>,
    /// Graph outputs, in graph order (ONNX only).
    pub outputs: Vec<TensorSpec>,
    /// What kind of model this is (absent in JSON: `onnx`).
    #[serde(default, skip_serializing_if = "ModelKind::is_onnx")]
    pub kind: ModelKind,
    /// For `llm` and `embedding`: what the engine read from the file (context length,
    /// vocabulary, quantization, dimensions, ...), as the engine states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<serde_json::Value>,
}

/// The kinds of model the hub stores. Each is one blob, named by its sha256.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// An ONNX graph: tensors in, tensors out.
    #[default]
    Onnx,
    /// A GGUF language model (tokenizer and chat template in its metadata).
    Llm,
    /// A sentence encoder bundle (weights, tokenizer, config in one canonical bundle).
    Embedding,
}

impl ModelKind {
    /// Whether this is the default kind.
    pub fn is_onnx(&self) -> bool {
        *self == ModelKind::Onnx
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ModelKind::Onnx => "onnx",
            ModelKind::Llm => "llm",
            ModelKind::Embedding => "embedding",
        }
    }

    /// The kind the bytes look like: GGUF magic, the bundle's first line, else ONNX.
    pub fn detect(bytes: &[u8]) -> Self {
        if bytes.starts_with(b"GGUF") {
            ModelKind::Llm
        } else if bytes.starts_with(b"VERINET-BUNDLE-1\n") {
            ModelKind::Embedding
        } else {
            ModelKind::Onnx
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named tensor slot in a signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TensorSpec {
    /// Tensor name in the graph.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dims; symbolic ones are named (e.g. `batch`) and bound per request.
    pub shape: Vec<Dim>,
}

/// One dimension: fixed, or a named symbol bound per request (JSON: a number or a string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A symbol such as `batch` or `sequence`; equal names must bind to equal sizes.
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        write!(f, "{}: {}[{}]", self.name, self.dtype, dims.join(", "))
    }
}

/// Why a request's inputs do not fit a signature. Each variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputMismatch {
    /// A declared input was not given.
    #[error("missing input {name:?} (expected {expected})")]
    Missing {
        /// Input name.
        name: String,
        /// Its declared spec.
        expected: String,
    },
    /// An input the model does not declare was given.
    #[error("unknown input {name:?}; the model takes {expected}")]
    Unknown {
        /// The given name.
        name: String,
        /// The names the model takes.
        expected: String,
    },
    /// Wrong element type.
    #[error("input {name:?} has dtype {got}, expected {expected}")]
    DType {
        /// Input name.
        name: String,
        /// Given dtype.
        got: DType,
        /// Declared dtype.
        expected: DType,
    },
    /// Wrong number of dims.
    #[error("input {name:?} has rank {got}, expected {expected}")]
    Rank {
        /// Input name.
        name: String,
        /// Given rank.
        got: usize,
        /// Declared rank.
        expected: usize,
    },
    /// A fixed dim or a symbol bound elsewhere disagrees.
    #[error("input {name:?} dim {axis} is {got}, expected {expected}")]
    Dim {
        /// Input name.
        name: String,
        /// Axis index.
        axis: usize,
        /// Given size.
        got: usize,
        /// What was required (a number, or `symbol=size`).
        expected: String,
    },
    /// A bare list's values do not fit the declared dtype (e.g. 1.5 for an int64 input).
    #[error("input {name:?} (a bare list, read as {expected}): {reason}")]
    Value {
        /// Input name.
        name: String,
        /// Declared dtype.
        expected: DType,
        /// What does not fit.
        reason: String,
    },
    /// The request carries more elements than the node allows.
    #[error("inputs have {got} elements in total, the limit is {limit}")]
    TooLarge {
        /// Total elements given.
        got: usize,
        /// Configured limit.
        limit: usize,
    },
}

impl IoSignature {
    /// Gives each input read from a bare JSON list the dtype its declaration names
    /// ([`Tensor::conform`](crate::Tensor::conform)); explicit tensors are left for
    /// [`IoSignature::check_inputs`] to judge.
    pub fn conform_inputs(&self, inputs: &mut TensorMap) -> Result<(), InputMismatch> {
        for spec in &self.inputs {
            if let Some(t) = inputs.get_mut(&spec.name).filter(|t| t.is_loose()) {
                t.conform(spec.dtype).map_err(|e| InputMismatch::Value {
                    name: spec.name.clone(),
                    expected: spec.dtype,
                    reason: e.to_string().trim_start_matches("invalid tensor: ").to_owned(),
                })?;
            }
        }
        Ok(())
    }

    /// Checks `inputs` against the declared inputs: names, dtypes, ranks, fixed dims, consistent
    /// symbol bindings, zero-sized dims and a total element limit. Returns the symbol bindings.
    pub fn check_inputs(
        &self,
        inputs: &TensorMap,
        max_elements: usize,
    ) -> Result<BTreeMap<String, usize>, InputMismatch> {
        if let Some(extra) = inputs.keys().find(|k| !self.inputs.iter().any(|s| &s.name == *k)) {
            let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(InputMismatch::Unknown { name: extra.clone(), expected: names.join(", ") });
        }
        let total: usize = inputs.values().map(|t| t.len()).sum();
        if total > max_elements {
            return Err(InputMismatch::TooLarge { got: total, limit: max_elements });
        }
        let mut bound: BTreeMap<String, usize> = BTreeMap::new();
        for spec in &self.inputs {
            let t = inputs
                .get(&spec.name)
                .ok_or_else(|| InputMismatch::Missing { name: spec.name.clone(), expected: spec.to_string() })?;
            let name = || spec.name.clone();
            if t.dtype() != spec.dtype {
                return Err(InputMismatch::DType { name: name(), got: t.dtype(), expected: spec.dtype });
            }
            if t.shape().len() != spec.shape.len() {
                return Err(InputMismatch::Rank { name: name(), got: t.shape().len(), expected: spec.shape.len() });
            }
            for (axis, (&got, dim)) in t.shape().iter().zip(&spec.shape).enumerate() {
                let expected = match dim {
                    Dim::Fixed(n) if *n as usize != got => n.to_string(),
                    Dim::Symbolic(s) => match bound.get(s) {
                        Some(&b) if b != got => format!("{s}={b}"),
                        Some(_) => continue,
                        None if got == 0 => format!("{s}>=1"),
                        None => {
                            bound.insert(s.clone(), got);
                            continue;
                        }
                    },
                    Dim::Fixed(_) => continue,
                };
                return Err(InputMismatch::Dim { name: name(), axis, got, expected });
            }
        }
        Ok(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    fn sig() -> IoSignature {
        let spec = |name: &str| TensorSpec {
            name: name.into(),
            dtype: DType::Int64,
            shape: vec![Dim::Symbolic("batch".into()), Dim::Symbolic("seq".into())],
        };
        IoSignature {
            inputs: vec![
                spec("ids"),
                spec("mask"),
                TensorSpec { name: "x".into(), dtype: DType::Float32, shape: vec![Dim::Symbolic("batch".into()), Dim::Fixed(3)] },
            ],
            outputs: vec![],
            ..Default::default()
        }
    }

    fn inputs(ids: &[usize], mask: &[usize], x: &[usize]) -> TensorMap {
        let i = |s: &[usize]| Tensor::from_i64(s.to_vec(), &vec![0; s.iter().product()]).unwrap();
        let f = Tensor::from_f32(x.to_vec(), &vec![0.0; x.iter().product()]).unwrap();
        [("ids".to_string(), i(ids)), ("mask".to_string(), i(mask)), ("x".to_string(), f)].into()
    }

    #[test]
    fn accepts_and_binds_symbols() {
        let b = sig().check_inputs(&inputs(&[2, 7], &[2, 7], &[2, 3]), 1000).unwrap();
        assert_eq!(b["batch"], 2);
        assert_eq!(b["seq"], 7);
    }

    #[test]
    fn rejects_each_mismatch_with_its_reason() {
        let s = sig();
        let err = |m: TensorMap| s.check_inputs(&m, 1000).unwrap_err();
        assert!(matches!(err(inputs(&[2, 7], &[2, 6], &[2, 3])), InputMismatch::Dim { axis: 1, got: 6, .. }));
        assert!(matches!(err(inputs(&[2, 7], &[2, 7], &[2, 4])), InputMismatch::Dim { axis: 1, got: 4, .. }));
        assert!(matches!(err(inputs(&[2, 7], &[2, 7], &[3, 3])), InputMismatch::Dim { axis: 0, .. }));
        assert!(matches!(err(inputs(&[2, 7, 1], &[2, 7], &[2, 3])), InputMismatch::Rank { got: 3, .. }));
        assert!(matches!(err(inputs(&[0, 7], &[0, 7], &[0, 3])), InputMismatch::Dim { axis: 0, got: 0, .. }));
        let mut m = inputs(&[2, 7], &[2, 7], &[2, 3]);
        m.remove("mask");
        assert!(matches!(err(m), InputMismatch::Missing { .. }));
        let mut m = inputs(&[2, 7], &[2, 7], &[2, 3]);
        m.insert("y".into(), Tensor::from_f32(vec![1], &[0.0]).unwrap());
        assert!(matches!(err(m), InputMismatch::Unknown { .. }));
        let mut m = inputs(&[2, 7], &[2, 7], &[2, 3]);
        m.insert("x".into(), Tensor::from_i64(vec![2, 3], &[0; 6]).unwrap());
        assert!(matches!(err(m), InputMismatch::DType { got: DType::Int64, expected: DType::Float32, .. }));
        assert!(matches!(
            s.check_inputs(&inputs(&[2, 7], &[2, 7], &[2, 3]), 10).unwrap_err(),
            InputMismatch::TooLarge { got: 34, limit: 10 }
        ));
    }
}
