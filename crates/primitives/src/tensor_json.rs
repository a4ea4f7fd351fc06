//! Reading a tensor's JSON form in bounded memory.
//!
//! `data` is parsed straight into the tensor's little-endian bytes when `dtype` and `shape` come
//! before it (as every verinet client writes them), and stops at the first element past the
//! shape's count; when they come after it, elements are held as compact numbers (16 bytes
//! each) until the tensor is known. Either way a parse never holds more elements than the
//! budget: [`with_element_limit`] for all the tensors read inside it (a request body), else
//! [`DEFAULT_MAX_ELEMENTS`] per tensor. A 60 MiB body of zeros for a 64-element input is
//! refused after reading 65 numbers.
//!
//! `data` may be flat (row-major) or nested as numpy's `tolist()` writes it; nested lists must
//! be regular and their dimensions must be the shape.
//!
//! A tensor may also be a bare list (`{"pixels": [[0, 1], [2, 3]]}`, numpy's `tolist()` as it
//! is) or a bare number: the shape is the nesting, and the dtype is a guess from the values
//! (int64, float64 or bool) that [`Tensor::conform`] replaces with the model's declared dtype
//! before the inputs are checked. Bare lists are held as compact numbers while read, so they
//! get a quarter of the element budget, like data before `dtype`.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::tensor::{DType, Tensor, element_count};
use crate::{Error, Result};

/// Budget elements one element costs when it is held as a [`Num`] (16 bytes) rather than as
/// typed bytes (4 for float32).
const LOOSE_COST: usize = 4;

/// Elements one tensor may hold when no request budget is set.
pub const DEFAULT_MAX_ELEMENTS: usize = 16 << 20;

thread_local! {
    /// Elements left for the tensors being read on this thread (`None`: no request budget).
    static BUDGET: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `f` (a synchronous parse) with at most `limit` tensor elements for all the tensors it
/// reads together; a tensor past it fails to parse (`too many elements`).
pub fn with_element_limit<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(BUDGET.with(|b| b.replace(Some(limit))));
    f()
}

fn budget() -> usize {
    BUDGET.with(|b| b.get()).unwrap_or(DEFAULT_MAX_ELEMENTS)
}

fn spend(n: usize) {
    BUDGET.with(|b| {
        if let Some(left) = b.get() {
            b.set(Some(left.saturating_sub(n)));
        }
    });
}

/// One JSON element, compact (no heap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Null,
    Bool(bool),
    I(i64),
    U(u64),
    F(f64),
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Null => f.write_str("null"),
            Num::Bool(b) => write!(f, "{b}"),
            Num::I(v) => write!(f, "{v}"),
            Num::U(v) => write!(f, "{v}"),
            Num::F(v) => write!(f, "{v}"),
        }
    }
}

impl Num {
    fn as_f64(self) -> Option<f64> {
        match self {
            Num::I(v) => Some(v as f64),
            Num::U(v) => Some(v as f64),
            Num::F(v) => Some(v),
            _ => None,
        }
    }

    fn as_i64(self) -> Option<i64> {
        match self {
            Num::I(v) => Some(v),
            Num::U(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    fn as_u64(self) -> Option<u64> {
        match self {
            Num::U(v) => Some(v),
            Num::I(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// Appends element `i` (`v`) as `dtype` bytes, refusing values that do not fit.
pub(crate) fn push(dtype: DType, i: usize, v: Num, out: &mut Vec<u8>) -> Result<()> {
    let bad = |what: &str| Error::InvalidTensor(format!("data[{i}] = {v}: {what} for {dtype}"));
    match dtype {
        DType::Float32 | DType::Float64 | DType::Float16 => {
            // null stands for NaN, which JSON cannot spell.
            let f = match v {
                Num::Null => f64::NAN,
                _ => v.as_f64().ok_or_else(|| bad("not a number"))?,
            };
            match dtype {
                DType::Float32 => out.extend((f as f32).to_le_bytes()),
                DType::Float64 => out.extend(f.to_le_bytes()),
                _ => out.extend(half::f16::from_f64(f).to_le_bytes()),
            }
        }
        DType::Bool => {
            let b = match v {
                Num::Bool(b) => b,
                Num::I(0) | Num::U(0) => false,
                Num::I(1) | Num::U(1) => true,
                _ => return Err(bad("not a boolean")),
            };
            out.push(b as u8);
        }
        DType::Uint64 => out.extend(v.as_u64().ok_or_else(|| bad("not an unsigned integer"))?.to_le_bytes()),
        _ => {
            let n = v.as_i64().ok_or_else(|| bad("not an integer"))?;
            let range = |lo: i64, hi: i64| if (lo..=hi).contains(&n) { Ok(n) } else { Err(bad("out of range")) };
            match dtype {
                DType::Int8 => out.extend((range(i8::MIN.into(), i8::MAX.into())? as i8).to_le_bytes()),
                DType::Uint8 => out.extend((range(0, u8::MAX.into())? as u8).to_le_bytes()),
                DType::Int16 => out.extend((range(i16::MIN.into(), i16::MAX.into())? as i16).to_le_bytes()),
                DType::Uint16 => out.extend((range(0, u16::MAX.into())? as u16).to_le_bytes()),
                DType::Int32 => out.extend((range(i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes()),
                DType::Uint32 => out.extend((range(0, u32::MAX.into())? as u32).to_le_bytes()),
                _ => out.extend(n.to_le_bytes()),
            }
        }
    }
    Ok(())
}

/// Where parsed elements go.
enum Sink {
    /// `dtype` known: straight to bytes.
    Typed { dtype: DType, out: Vec<u8> },
    /// Not known yet: compact numbers.
    Loose(Vec<Num>),
}

/// `data` as read: the elements, the count, and the dimensions of a nested form.
struct Data {
    sink: Sink,
    count: usize,
    /// Lengths of the lists at each depth (one entry for a flat list).
    dims: Vec<usize>,
    /// Depth of the leaves (all must be at the same depth).
    leaf_depth: Option<usize>,
    limit: usize,
}

impl Data {
    fn leaf<E: de::Error>(&mut self, v: Num, depth: usize) -> std::result::Result<(), E> {
        match self.leaf_depth {
            None => self.leaf_depth = Some(depth),
            Some(d) if d != depth => return Err(E::custom("data: nested lists are not regular (leaves at different depths)")),
            Some(_) => {}
        }
        if self.count >= self.limit {
            return Err(E::custom(format!("data: too many elements (more than {})", self.limit)));
        }
        match &mut self.sink {
            Sink::Typed { dtype, out } => push(*dtype, self.count, v, out).map_err(E::custom)?,
            Sink::Loose(vals) => vals.push(v),
        }
        self.count += 1;
        Ok(())
    }
}

/// Reads one list (at `depth`) into `data`.
struct ListSeed<'a> {
    data: &'a mut Data,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of numbers (flat or nested)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let depth = self.depth;
        let mut n = 0usize;
        while seq.next_element_seed(ElemSeed { data: &mut *self.data, depth })?.is_some() {
            n += 1;
        }
        let dims = &mut self.data.dims;
        if dims.len() <= depth {
            dims.resize(depth + 1, usize::MAX);
        }
        if dims[depth] == usize::MAX {
            dims[depth] = n;
        } else if dims[depth] != n {
            return Err(de::Error::custom(format!("data: nested lists are not regular (lengths {} and {n} at depth {depth})", dims[depth])));
        }
        Ok(())
    }
}

/// Reads one element of a list: a number, a boolean, null, or a nested list.
struct ElemSeed<'a> {
    data: &'a mut Data,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ElemSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElemSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, a boolean, null or a list")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<(), E> {
        self.data.leaf(Num::Bool(v), self.depth)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<(), E> {
        self.data.leaf(Num::I(v), self.depth)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<(), E> {
        self.data.leaf(Num::U(v), self.depth)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<(), E> {
        self.data.leaf(Num::F(v), self.depth)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        self.data.leaf(Num::Null, self.depth)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<(), A::Error> {
        if self.depth >= 32 {
            return Err(de::Error::custom("data: nested deeper than 32 lists"));
        }
        ListSeed { data: self.data, depth: self.depth + 1 }.visit_seq(seq)
    }
}

/// `data`, read with what is known of the tensor so far.
struct DataSeed<'a> {
    dtype: Option<DType>,
    shape: Option<&'a [usize]>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Data;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Data, D::Error> {
        let budget = budget();
        // The shape's count, when known, bounds the parse (one element past it fails).
        let expected = match self.shape {
            Some(s) => Some(element_count(s).map_err(de::Error::custom)?),
            None => None,
        };
        if let Some(n) = expected.filter(|&n| n > budget) {
            return Err(de::Error::custom(format!("data: {n} elements is more than the limit of {budget}")));
        }
        let reserve = expected.unwrap_or(0).min(1 << 20);
        let (sink, limit) = match (self.dtype, expected) {
            (Some(dtype), Some(n)) => (Sink::Typed { dtype, out: Vec::with_capacity(reserve * dtype.size()) }, n),
            // Held as 16-byte numbers until the tensor is known: a quarter of the budget keeps
            // that within the memory of a typed parse of the whole budget.
            _ => {
                let loose = budget / LOOSE_COST;
                if let Some(n) = expected.filter(|&n| n > loose) {
                    return Err(de::Error::custom(format!(
                        "data: {n} elements given before \"dtype\": put dtype and shape first for tensors over {loose} elements"
                    )));
                }
                (Sink::Loose(Vec::with_capacity(reserve)), expected.unwrap_or(loose))
            }
        };
        let mut data = Data { sink, count: 0, dims: Vec::new(), leaf_depth: None, limit };
        d.deserialize_seq(ListSeed { data: &mut data, depth: 0 })?;
        spend(data.count);
        Ok(data)
    }
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Dtype,
    Shape,
    Data,
    B64,
}

struct TensorVisitor;

impl<'de> Visitor<'de> for TensorVisitor {
    type Value = Tensor;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tensor: {\"dtype\", \"shape\", \"data\" or \"b64\"}, or a bare (nested) list of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Tensor, A::Error> {
        let mut data = Self::loose_data();
        ListSeed { data: &mut data, depth: 0 }.visit_seq(seq)?;
        spend(data.count);
        bare(data).map_err(de::Error::custom)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Tensor, E> {
        Self::scalar(Num::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Tensor, E> {
        Self::scalar(Num::I(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Tensor, E> {
        Self::scalar(Num::U(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Tensor, E> {
        Self::scalar(Num::F(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Tensor, A::Error> {
        let (mut dtype, mut shape, mut data, mut b64) = (None::<DType>, None::<Vec<usize>>, None::<Data>, None::<String>);
        let dup = |name: &'static str| de::Error::duplicate_field(name);
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Dtype if dtype.is_some() => return Err(dup("dtype")),
                Field::Dtype => dtype = Some(map.next_value()?),
                Field::Shape if shape.is_some() => return Err(dup("shape")),
                Field::Shape => shape = Some(map.next_value()?),
                Field::Data if data.is_some() => return Err(dup("data")),
                Field::Data => data = Some(map.next_value_seed(DataSeed { dtype, shape: shape.as_deref() })?),
                Field::B64 if b64.is_some() => return Err(dup("b64")),
                Field::B64 => b64 = Some(map.next_value()?),
            }
        }
        let dtype = dtype.ok_or_else(|| de::Error::missing_field("dtype"))?;
        let shape = shape.ok_or_else(|| de::Error::missing_field("shape"))?;
        let r = match (data, b64) {
            (Some(d), None) => finish(dtype, shape, d),
            (None, Some(b64)) => {
                use base64::{Engine, engine::general_purpose::STANDARD as B64};
                B64.decode(b64.as_bytes())
                    .map_err(|e| Error::InvalidTensor(format!("b64: {e}")))
                    .and_then(|bytes| Tensor::from_raw(dtype, shape, bytes))
            }
            (Some(_), Some(_)) => Err(Error::InvalidTensor("give either data or b64, not both".into())),
            (None, None) => Err(Error::InvalidTensor("missing data (or b64)".into())),
        };
        r.map_err(de::Error::custom)
    }
}

/// The tensor from parsed `data`: the count and any nesting must match the shape.
fn finish(dtype: DType, shape: Vec<usize>, d: Data) -> Result<Tensor> {
    let elems = element_count(&shape)?;
    if d.count != elems {
        return Err(Error::InvalidTensor(format!("shape {shape:?} has {elems} elements but data has {}", d.count)));
    }
    let nested = d.leaf_depth.unwrap_or(0) > 0;
    if nested && d.dims != shape {
        return Err(Error::InvalidTensor(format!("shape {shape:?} but the nested data has dimensions {:?}", d.dims)));
    }
    let bytes = match d.sink {
        Sink::Typed { out, .. } => out,
        Sink::Loose(vals) => {
            let mut out = Vec::with_capacity(vals.len() * dtype.size());
            for (i, v) in vals.into_iter().enumerate() {
                push(dtype, i, v, &mut out)?;
            }
            out
        }
    };
    Tensor::from_raw(dtype, shape, bytes)
}

impl<'de> serde::Deserialize<'de> for Tensor {
    /// In bounded memory (see the module doc).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(TensorVisitor)
    }
}

/// A bare list or number: the shape from the nesting, the dtype from the values.
fn bare(d: Data) -> Result<Tensor> {
    let shape = if d.leaf_depth.is_none() && d.dims.is_empty() { Vec::new() } else { d.dims.clone() };
    let Sink::Loose(vals) = d.sink else { return Err(Error::InvalidTensor("bare list read as typed".into())) };
    let (mut bools, mut floats, mut big) = (0usize, false, false);
    for v in &vals {
        match v {
            Num::Bool(_) => bools += 1,
            Num::F(_) | Num::Null => floats = true,
            Num::U(u) if *u > i64::MAX as u64 => big = true,
            _ => {}
        }
    }
    if bools > 0 && bools < vals.len() {
        return Err(Error::InvalidTensor("a bare list mixes booleans and numbers".into()));
    }
    let dtype = match () {
        _ if bools > 0 => DType::Bool,
        _ if floats => DType::Float64,
        _ if big => DType::Uint64,
        _ if vals.is_empty() => DType::Float32,
        _ => DType::Int64,
    };
    let mut out = Vec::with_capacity(vals.len() * dtype.size());
    for (i, v) in vals.into_iter().enumerate() {
        push(dtype, i, v, &mut out)?;
    }
    Tensor::loose(dtype, shape, out)
}

impl TensorVisitor {
    fn loose_data() -> Data {
        let limit = budget() / LOOSE_COST;
        Data { sink: Sink::Loose(Vec::new()), count: 0, dims: Vec::new(), leaf_depth: None, limit }
    }

    fn scalar<E: de::Error>(v: Num) -> std::result::Result<Tensor, E> {
        let mut data = Self::loose_data();
        data.leaf::<E>(v, 0)?;
        data.leaf_depth = None;
        spend(1);
        bare(data).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_lists_as_numpy_writes_them() {
        let t: Tensor = serde_json::from_value(json!({"dtype":"float32","shape":[2,3],"data":[[1,2,3],[4,5,6]]})).unwrap();
        assert_eq!(t.as_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let flat: Tensor = serde_json::from_value(json!({"dtype":"float32","shape":[2,3],"data":[1,2,3,4,5,6]})).unwrap();
        assert_eq!(t, flat);
        // Data before dtype and shape parses the same.
        let late: Tensor = serde_json::from_str(r#"{"data":[[1,2,3],[4,5,6]],"shape":[2,3],"dtype":"float32"}"#).unwrap();
        assert_eq!(late, t);
        for bad in [
            json!({"dtype":"float32","shape":[3,2],"data":[[1,2,3],[4,5,6]]}),
            json!({"dtype":"float32","shape":[6],"data":[[1,2,3],[4,5,6]]}),
            json!({"dtype":"float32","shape":[2,3],"data":[[1,2,3],[4,5]]}),
            json!({"dtype":"float32","shape":[2,2],"data":[[1,2],3,4]}),
        ] {
            assert!(serde_json::from_value::<Tensor>(bad.clone()).is_err(), "accepted {bad}");
        }
        let twice = r#"{"dtype":"float32","shape":[1],"data":[1],"dtype":"int8"}"#;
        assert!(serde_json::from_str::<Tensor>(twice).unwrap_err().to_string().contains("duplicate field"));
    }

    #[test]
    fn bare_lists_guess_then_conform_to_the_declared_dtype() {
        let read = |v: serde_json::Value| serde_json::from_value::<Tensor>(v);
        let t = read(json!([[1, 2, 3], [4, 5, 6]])).unwrap();
        assert!(t.is_loose());
        assert_eq!((t.dtype(), t.shape()), (DType::Int64, &[2usize, 3][..]));
        // Relayed (a client parses it, then sends it on), it stays a bare list.
        assert_eq!(serde_json::to_value(&t).unwrap(), json!([[1, 2, 3], [4, 5, 6]]));
        assert_eq!(serde_json::to_value(read(json!(7)).unwrap()).unwrap(), json!(7));
        let mut f = t.clone();
        f.conform(DType::Float32).unwrap();
        assert!(!f.is_loose());
        assert_eq!(f, read(json!({"dtype": "float32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]})).unwrap());
        let mut small = t.clone();
        small.conform(DType::Uint8).unwrap();
        assert_eq!(small.raw(), &[1, 2, 3, 4, 5, 6]);
        // Floats are float64 until conformed, so a float64 input keeps every digit.
        let mut x = read(json!([0.1, null])).unwrap();
        assert_eq!(x.dtype(), DType::Float64);
        x.conform(DType::Float64).unwrap();
        assert_eq!(x.to_f64_vec()[0], 0.1);
        assert!(x.to_f64_vec()[1].is_nan());
        let mut y = read(json!([0.1])).unwrap();
        y.conform(DType::Float32).unwrap();
        assert_eq!(y.as_f32().unwrap(), vec![0.1f32]);
        // What does not fit the declared dtype is refused, naming the element.
        let err = read(json!([1.5])).unwrap().conform(DType::Int64).unwrap_err().to_string();
        assert!(err.contains("data[0] = 1.5: not an integer for int64"), "{err}");
        assert!(read(json!([300])).unwrap().conform(DType::Uint8).unwrap_err().to_string().contains("out of range"));
        let mut b = read(json!([true, false])).unwrap();
        b.conform(DType::Bool).unwrap();
        assert_eq!(b.raw(), &[1, 0]);
        // A number is a scalar; an empty list has no elements.
        let s = read(json!(7)).unwrap();
        assert_eq!((s.shape(), s.len()), (&[][..], 1));
        assert_eq!(read(json!([])).unwrap().shape(), &[0]);
        assert!(read(json!([true, 1])).unwrap_err().to_string().contains("mixes booleans and numbers"));
        // An explicit tensor is never conformed: its dtype is the client's word.
        let mut e = read(json!({"dtype": "int64", "shape": [1], "data": [1]})).unwrap();
        e.conform(DType::Float32).unwrap();
        assert_eq!(e.dtype(), DType::Int64);
        // Bare lists get a quarter of the element budget (held as 16-byte numbers while read).
        let big = format!("[{}0]", "0,".repeat(100));
        assert!(with_element_limit(400, || serde_json::from_str::<Tensor>(&big)).unwrap_err().to_string().contains("too many elements"));
        assert!(with_element_limit(500, || serde_json::from_str::<Tensor>(&big)).is_ok());
    }

    #[test]
    fn a_parse_stops_at_the_first_element_past_the_shape() {
        // 10 million zeros for a 4-element tensor: refused at the fifth.
        let body = format!(r#"{{"dtype":"float32","shape":[4],"data":[{}0]}}"#, "0,".repeat(10_000_000));
        let err = serde_json::from_str::<Tensor>(&body).unwrap_err().to_string();
        assert!(err.contains("too many elements (more than 4)"), "{err}");
    }

    #[test]
    fn a_request_budget_bounds_every_tensor_read_under_it() {
        let two = r#"{"a":{"dtype":"int32","shape":[3],"data":[1,2,3]},"b":{"dtype":"int32","shape":[3],"data":[1,2,3]}}"#;
        type Map = std::collections::BTreeMap<String, Tensor>;
        assert!(with_element_limit(6, || serde_json::from_str::<Map>(two)).is_ok());
        let err = with_element_limit(5, || serde_json::from_str::<Map>(two)).unwrap_err().to_string();
        assert!(err.contains("3 elements is more than the limit of 2"), "the second tensor gets what the first left: {err}");
        let err = with_element_limit(2, || serde_json::from_str::<Map>(two)).unwrap_err().to_string();
        assert!(err.contains("3 elements is more than the limit of 2"), "{err}");
        // Data before dtype: a quarter of the budget.
        let late = r#"{"a":{"data":[1,2,3],"dtype":"int32","shape":[3]}}"#;
        assert!(with_element_limit(12, || serde_json::from_str::<Map>(late)).is_ok());
        let err = with_element_limit(11, || serde_json::from_str::<Map>(late)).unwrap_err().to_string();
        assert!(err.contains("too many elements (more than 2)"), "{err}");
        // The budget ends with its scope.
        assert!(serde_json::from_str::<Map>(two).is_ok());
    }
}
