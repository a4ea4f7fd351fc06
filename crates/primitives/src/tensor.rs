use std::collections::BTreeMap;
use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeMap, ser::SerializeSeq};
use serde_json::Value;

use crate::{Error, Result};

/// Named tensors, ordered by name (the order canonical hashing uses).
pub type TensorMap = BTreeMap<String, Tensor>;

/// Element types a verinet tensor may carry. Codes are ONNX `TensorProto.DataType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE 754 single precision.
    Float32,
    /// IEEE 754 double precision.
    Float64,
    /// IEEE 754 half precision.
    Float16,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Unsigned 64-bit integer.
    Uint64,
    /// Boolean, one byte per element (0 or 1).
    Bool,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 12] = [
        DType::Float32,
        DType::Uint8,
        DType::Int8,
        DType::Uint16,
        DType::Int16,
        DType::Int32,
        DType::Int64,
        DType::Bool,
        DType::Float16,
        DType::Float64,
        DType::Uint32,
        DType::Uint64,
    ];

    /// The JSON name (`float32`, `int64`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::Float16 => "float16",
            DType::Int8 => "int8",
            DType::Int16 => "int16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::Uint8 => "uint8",
            DType::Uint16 => "uint16",
            DType::Uint32 => "uint32",
            DType::Uint64 => "uint64",
            DType::Bool => "bool",
        }
    }

    /// The ONNX `TensorProto.DataType` code, used in canonical hashing.
    pub const fn code(self) -> u8 {
        match self {
            DType::Float32 => 1,
            DType::Uint8 => 2,
            DType::Int8 => 3,
            DType::Uint16 => 4,
            DType::Int16 => 5,
            DType::Int32 => 6,
            DType::Int64 => 7,
            DType::Bool => 9,
            DType::Float16 => 10,
            DType::Float64 => 11,
            DType::Uint32 => 12,
            DType::Uint64 => 13,
        }
    }

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::Int8 | DType::Uint8 | DType::Bool => 1,
            DType::Float16 | DType::Int16 | DType::Uint16 => 2,
            DType::Float32 | DType::Int32 | DType::Uint32 => 4,
            DType::Float64 | DType::Int64 | DType::Uint64 => 8,
        }
    }

    /// True for floating point types (compared with tolerance, never exactly).
    pub const fn is_float(self) -> bool {
        matches!(self, DType::Float16 | DType::Float32 | DType::Float64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        // Accept the common aliases people paste from numpy / onnx.
        let d = match s {
            "float32" | "float" | "f32" => DType::Float32,
            "float64" | "double" | "f64" => DType::Float64,
            "float16" | "half" | "f16" => DType::Float16,
            "int8" | "i8" => DType::Int8,
            "int16" | "i16" => DType::Int16,
            "int32" | "i32" => DType::Int32,
            "int64" | "i64" => DType::Int64,
            "uint8" | "u8" => DType::Uint8,
            "uint16" | "u16" => DType::Uint16,
            "uint32" | "u32" => DType::Uint32,
            "uint64" | "u64" => DType::Uint64,
            "bool" => DType::Bool,
            _ => return Err(Error::UnknownDType { got: s.to_owned() }),
        };
        Ok(d)
    }
}

impl Serialize for DType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A dense tensor: dtype, shape and raw little-endian element bytes in row-major order.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
    /// Read from a bare JSON list, so `dtype` is a guess from the values (int64, float64 or
    /// bool) until [`Tensor::conform`] gives it the model's. Not part of equality.
    loose: bool,
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.data == other.data
    }
}

impl Tensor {
    /// Builds a tensor from raw little-endian bytes, checking that their length fits the shape.
    pub fn from_raw(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        let elems = element_count(&shape)?;
        let want = elems
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::InvalidTensor("shape too large".into()))?;
        if data.len() != want {
            return Err(Error::InvalidTensor(format!(
                "{dtype} shape {shape:?} needs {want} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self { dtype, shape, data, loose: false })
    }

    /// A tensor read from a bare list: its dtype is only what the values look like.
    pub(crate) fn loose(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        Ok(Self { loose: true, ..Self::from_raw(dtype, shape, data)? })
    }

    /// Whether the dtype was guessed from a bare JSON list (see [`Tensor::conform`]).
    pub fn is_loose(&self) -> bool {
        self.loose
    }

    /// A tensor read from a bare list takes the dtype the model declares: each value is
    /// converted exactly as the explicit form `{"dtype", "shape", "data"}` would read it (a
    /// float for an integer input, or a value out of range, is refused). Any other tensor is
    /// left as it is, so an explicit dtype that differs still fails the signature check.
    pub fn conform(&mut self, dtype: DType) -> Result<()> {
        if !self.loose || self.dtype == dtype {
            self.loose = false;
            return Ok(());
        }
        let mut out = Vec::with_capacity(self.len() * dtype.size());
        let b = &self.data;
        for i in 0..self.len() {
            let v = match self.dtype {
                DType::Int64 => crate::tensor_json::Num::I(i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default())),
                DType::Uint64 => crate::tensor_json::Num::U(u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default())),
                DType::Bool => crate::tensor_json::Num::Bool(b[i] != 0),
                _ => {
                    let f = f64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
                    if f.is_nan() { crate::tensor_json::Num::Null } else { crate::tensor_json::Num::F(f) }
                }
            };
            crate::tensor_json::push(dtype, i, v, &mut out)?;
        }
        *self = Self::from_raw(dtype, std::mem::take(&mut self.shape), out)?;
        Ok(())
    }

    /// A float32 tensor from values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Self> {
        Self::from_raw(DType::Float32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// An int64 tensor from values.
    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> Result<Self> {
        Self::from_raw(DType::Int64, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape (row-major).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Raw little-endian element bytes.
    pub fn raw(&self) -> &[u8] {
        &self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Every element widened to f64 (exact for all dtypes but 64-bit integers beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let b = &self.data;
        match self.dtype {
            DType::Float32 => chunks::<4>(b).map(|c| f32::from_le_bytes(c) as f64).collect(),
            DType::Float64 => chunks::<8>(b).map(f64::from_le_bytes).collect(),
            DType::Float16 => chunks::<2>(b).map(|c| half::f16::from_le_bytes(c).to_f64()).collect(),
            DType::Int8 => b.iter().map(|&v| v as i8 as f64).collect(),
            DType::Uint8 => b.iter().map(|&v| v as f64).collect(),
            DType::Bool => b.iter().map(|&v| (v != 0) as u8 as f64).collect(),
            DType::Int16 => chunks::<2>(b).map(|c| i16::from_le_bytes(c) as f64).collect(),
            DType::Uint16 => chunks::<2>(b).map(|c| u16::from_le_bytes(c) as f64).collect(),
            DType::Int32 => chunks::<4>(b).map(|c| i32::from_le_bytes(c) as f64).collect(),
            DType::Uint32 => chunks::<4>(b).map(|c| u32::from_le_bytes(c) as f64).collect(),
            DType::Int64 => chunks::<8>(b).map(|c| i64::from_le_bytes(c) as f64).collect(),
            DType::Uint64 => chunks::<8>(b).map(|c| u64::from_le_bytes(c) as f64).collect(),
        }
    }

    /// Elements as f32 when the dtype is float32.
    pub fn as_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == DType::Float32).then(|| chunks::<4>(&self.data).map(f32::from_le_bytes).collect())
    }

    /// Elements as i64 when the dtype is int64.
    pub fn as_i64(&self) -> Option<Vec<i64>> {
        (self.dtype == DType::Int64).then(|| chunks::<8>(&self.data).map(i64::from_le_bytes).collect())
    }

}

/// A tensor's elements as the JSON `data` list, written straight from its bytes: exact for
/// integers; float32 in the shortest decimal that reads back as the same f32 (`0.048600417`,
/// not the f64 widening `0.048600416630506516`), other floats as f64; non-finite as `null`.
struct Elements<'a>(&'a Tensor);

impl Serialize for Elements<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let t = self.0;
        let b = &t.data;
        let mut seq = s.serialize_seq(Some(t.len()))?;
        match t.dtype {
            DType::Int64 => chunks::<8>(b).try_for_each(|c| seq.serialize_element(&i64::from_le_bytes(c)))?,
            DType::Uint64 => chunks::<8>(b).try_for_each(|c| seq.serialize_element(&u64::from_le_bytes(c)))?,
            DType::Bool => b.iter().try_for_each(|&v| seq.serialize_element(&(v != 0)))?,
            DType::Float32 => chunks::<4>(b).try_for_each(|c| {
                let v = f32::from_le_bytes(c);
                if v.is_finite() { seq.serialize_element(&v) } else { seq.serialize_element(&()) }
            })?,
            _ if t.dtype.is_float() => t
                .to_f64_vec()
                .into_iter()
                .try_for_each(|v| if v.is_finite() { seq.serialize_element(&v) } else { seq.serialize_element(&()) })?,
            _ => t.to_f64_vec().into_iter().try_for_each(|v| seq.serialize_element(&(v as i64)))?,
        }
        seq.end()
    }
}

fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// Product of dims, refusing overflow.
pub(crate) fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::InvalidTensor(format!("shape {shape:?} overflows")))
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} {:?}, {} bytes)", self.dtype, self.shape, self.data.len())
    }
}

impl Serialize for Tensor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.loose {
            // As it came (a bare nested list), so a client that relays it leaves the dtype
            // to the model, as the user did.
            let Value::Array(flat) = serde_json::to_value(Elements(self)).map_err(serde::ser::Error::custom)? else {
                return Err(serde::ser::Error::custom("tensor elements are not a list"));
            };
            return nest(flat, &self.shape).serialize(s);
        }
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("dtype", &self.dtype)?;
        m.serialize_entry("shape", &self.shape)?;
        m.serialize_entry("data", &Elements(self))?;
        m.end()
    }
}

/// A flat element list as nested lists of `shape` (a scalar for shape `[]`).
fn nest(flat: Vec<Value>, shape: &[usize]) -> Value {
    match shape {
        [] => flat.into_iter().next().unwrap_or(Value::Null),
        [_] => Value::Array(flat),
        [n, rest @ ..] => {
            let inner: usize = rest.iter().product();
            if inner == 0 {
                return Value::Array((0..*n).map(|_| nest(Vec::new(), rest)).collect());
            }
            let mut items = flat.into_iter();
            Value::Array((0..*n).map(|_| nest(items.by_ref().take(inner).collect(), rest)).collect())
        }
    }
}

impl Tensor {
    /// The JSON form with `b64` instead of `data` (compact for large tensors).
    pub fn to_b64_json(&self) -> Value {
        serde_json::json!({"dtype": self.dtype, "shape": self.shape, "b64": B64.encode(&self.data)})
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn float32_is_written_in_its_shortest_form_and_reads_back_exactly() {
        let values = [0.1f32, 0.048600417, -2.5, 1e-8, f32::MAX, 3.0, f32::NAN];
        let t = Tensor::from_f32(vec![values.len()], &values).unwrap();
        let text = serde_json::to_string(&t).unwrap();
        assert!(text.contains("[0.1,0.048600417,-2.5,1e-8,3.4028235e+38,3.0,null]"), "{text}");
        let back: Tensor = serde_json::from_str(&text).unwrap();
        let got = back.as_f32().unwrap();
        assert_eq!(&got[..6], &values[..6], "every finite f32 reads back bit for bit");
        assert!(got[6].is_nan());
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trip_every_dtype() {
        for dt in DType::ALL {
            let v = if dt == DType::Bool { json!([true, false]) } else { json!([1, 2]) };
            let t: Tensor = serde_json::from_value(json!({"dtype": dt.name(), "shape": [2], "data": v})).unwrap();
            assert_eq!(t.dtype(), dt);
            assert_eq!(t.raw().len(), 2 * dt.size());
            assert_eq!(t.to_f64_vec()[0], 1.0);
            let back: Tensor = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
            assert_eq!(back, t);
            let back: Tensor = serde_json::from_value(t.to_b64_json()).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn float32_values_are_exact_and_little_endian() {
        let t: Tensor = serde_json::from_value(json!({"dtype":"float32","shape":[1,2],"data":[0.1, -2.5]})).unwrap();
        assert_eq!(t.as_f32().unwrap(), vec![0.1f32, -2.5]);
        assert_eq!(&t.raw()[4..], &(-2.5f32).to_le_bytes());
        assert_eq!(serde_json::to_value(&t).unwrap()["data"], json!([0.1f32 as f64, -2.5]));
    }

    #[test]
    fn rejects_malformed_tensors() {
        let cases = [
            json!({"dtype":"float32","shape":[2],"data":[1.0]}),
            json!({"dtype":"float32","shape":[1],"data":["x"]}),
            json!({"dtype":"int8","shape":[1],"data":[300]}),
            json!({"dtype":"uint8","shape":[1],"data":[-1]}),
            json!({"dtype":"int64","shape":[1],"data":[1.5]}),
            json!({"dtype":"bool","shape":[1],"data":[2]}),
            json!({"dtype":"complex64","shape":[1],"data":[1]}),
            json!({"dtype":"float32","shape":[1]}),
            json!({"dtype":"float32","shape":[1],"data":[1],"b64":"AAAAAA=="}),
            json!({"dtype":"float32","shape":[2],"b64":"AAAAAA=="}),
            json!({"dtype":"float32","shape":[1],"b64":"!!"}),
            json!({"dtype":"float32","shape":[-1],"data":[]}),
            json!({"dtype":"float32","shape":[4294967296u64, 4294967296u64, 4294967296u64],"data":[]}),
            json!({"dtype":"float32","shape":[1],"data":[1],"extra":1}),
        ];
        for c in cases {
            assert!(serde_json::from_value::<Tensor>(c.clone()).is_err(), "accepted {c}");
        }
    }

    #[test]
    fn nan_travels_as_null() {
        let t = Tensor::from_f32(vec![2], &[f32::NAN, 1.0]).unwrap();
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["data"], json!([null, 1.0]));
        let back: Tensor = serde_json::from_value(v).unwrap();
        assert!(back.as_f32().unwrap()[0].is_nan());
    }
}
