//! Fuzz target: tensor JSON. Whatever bytes arrive, parsing answers Ok or Err (never a panic),
//! an accepted tensor is consistent (bytes = elements x dtype size, shape product = elements)
//! and round-trips, and no parse holds more elements than its budget allows.
//!
//! Cases per property: `VERINET_FUZZ_CASES` (default 512), so the test command's run is bounded.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use proptest::prelude::*;
use serde_json::{Value, json};
use verinet_primitives::{Tensor, TensorMap, with_element_limit};

fn cases() -> u32 {
    std::env::var("VERINET_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

const DTYPES: &[&str] = &["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "complex64", ""];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        "[a-z]{0,3}".prop_map(Value::String),
        (0i64..3).prop_map(Value::from),
    ]
}

fn data() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| prop::collection::vec(inner, 0..6).prop_map(Value::Array))
}

fn tensor_json() -> impl Strategy<Value = Value> {
    (prop::sample::select(DTYPES), prop::collection::vec(0usize..5, 0..4), data(), any::<bool>()).prop_map(|(dtype, shape, data, b64)| {
        if b64 {
            json!({"dtype": dtype, "shape": shape, "b64": data.to_string()})
        } else {
            json!({"dtype": dtype, "shape": shape, "data": data})
        }
    })
}

fn check(t: &Tensor) {
    let elems: usize = t.shape().iter().product();
    assert_eq!(t.raw().len(), elems * t.dtype().size(), "{t:?}");
    let back: Tensor = serde_json::from_value(serde_json::to_value(t).unwrap()).unwrap();
    assert_eq!(back.shape(), t.shape());
    assert_eq!(back.dtype(), t.dtype());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn structured_tensors(v in tensor_json()) {
        if let Ok(t) = serde_json::from_value::<Tensor>(v.clone()) {
            check(&t);
        }
        // The same through text, with fields in another order.
        let text = v.to_string();
        if let Ok(t) = serde_json::from_str::<Tensor>(&text) {
            check(&t);
        }
    }

    #[test]
    fn mutated_bytes(seed in tensor_json(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..8)) {
        let mut bytes = serde_json::to_vec(&json!({"x": seed})).unwrap();
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => { bytes.insert(i, byte); }
                _ => { bytes.remove(i); }
            }
        }
        if let Ok(m) = serde_json::from_slice::<TensorMap>(&bytes) {
            m.values().for_each(check);
        }
    }

    #[test]
    fn no_parse_holds_more_than_its_budget(n in 0usize..200, budget in 0usize..64, dtype_first in any::<bool>()) {
        // Written out by hand: serde_json's own maps sort keys ("data" before "dtype").
        let data = serde_json::to_string(&vec![0; n]).unwrap();
        let text = if dtype_first {
            format!(r#"{{"x":{{"dtype":"int32","shape":[{n}],"data":{data}}}}}"#)
        } else {
            format!(r#"{{"x":{{"data":{data},"shape":[{n}],"dtype":"int32"}}}}"#)
        };
        let r = with_element_limit(budget, || serde_json::from_str::<TensorMap>(&text));
        let fits = if dtype_first { n <= budget } else { n <= budget / 4 };
        prop_assert_eq!(r.is_ok(), fits, "n {} budget {} dtype first {}", n, budget, dtype_first);
    }
}
