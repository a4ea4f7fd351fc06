use alloy_primitives::{B256, Keccak256};

use crate::TensorMap;

/// Canonical hash of named tensors (DESIGN.md "Formats"): keccak256 over the tensors in name
/// order, each encoded as
///
/// ```text
/// name bytes (UTF-8) | 0x00 | dtype code (u8, ONNX) | rank (u32 LE) | dims (u64 LE each) |
/// byte length of data (u64 LE) | data (raw little-endian elements)
/// ```
///
/// Names cannot contain NUL in practice, and every later field has a fixed width or an explicit
/// length, so two different tensor maps never encode alike. Receipts bind the input and output
/// hashes; a re-executing validator compares outputs with tolerance, not by this hash.
pub fn tensors_hash(tensors: &TensorMap) -> B256 {
    let mut h = Keccak256::new();
    for (name, t) in tensors {
        h.update(name.as_bytes());
        h.update([0u8, t.dtype().code()]);
        h.update((t.shape().len() as u32).to_le_bytes());
        for d in t.shape() {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((t.raw().len() as u64).to_le_bytes());
        h.update(t.raw());
    }
    h.finalize()
}

/// Canonical hash of token ids (a prompt or a completion): keccak256 over each id as u32
/// little-endian, in order. An LLM receipt binds the prompt and output this way, so anyone
/// holding the ids (the response returns the output ids) recomputes it.
pub fn token_ids_hash(ids: &[u32]) -> B256 {
    let mut h = Keccak256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize()
}

/// Canonical hash of several token id lists (the inputs of one embeddings call): keccak256 over
/// each list as its length (u32 LE) then its ids (u32 LE each), in order.
pub fn token_lists_hash(lists: &[Vec<u32>]) -> B256 {
    let mut h = Keccak256::new();
    for ids in lists {
        h.update((ids.len() as u32).to_le_bytes());
        for id in ids {
            h.update(id.to_le_bytes());
        }
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    #[test]
    fn order_independent_of_insertion_and_sensitive_to_every_field() {
        let mut a = TensorMap::new();
        a.insert("x".into(), Tensor::from_f32(vec![1, 2], &[1.0, 2.0]).unwrap());
        a.insert("a".into(), Tensor::from_i64(vec![1], &[7]).unwrap());
        let base = tensors_hash(&a);
        let mut b = TensorMap::new();
        b.insert("a".into(), Tensor::from_i64(vec![1], &[7]).unwrap());
        b.insert("x".into(), Tensor::from_f32(vec![1, 2], &[1.0, 2.0]).unwrap());
        assert_eq!(tensors_hash(&b), base);
        let mut shape = a.clone();
        shape.insert("x".into(), Tensor::from_f32(vec![2, 1], &[1.0, 2.0]).unwrap());
        let mut value = a.clone();
        value.insert("x".into(), Tensor::from_f32(vec![1, 2], &[1.0, 2.5]).unwrap());
        let mut name = TensorMap::new();
        name.insert("y".into(), a["x"].clone());
        name.insert("a".into(), a["a"].clone());
        for other in [shape, value, name] {
            assert_ne!(tensors_hash(&other), base);
        }
    }

    #[test]
    fn token_hashes_are_the_documented_bytes() {
        let mut bytes = Vec::new();
        for id in [1u32, 9690, 198] {
            bytes.extend(id.to_le_bytes());
        }
        assert_eq!(token_ids_hash(&[1, 9690, 198]), alloy_primitives::keccak256(&bytes));
        assert_ne!(token_ids_hash(&[1, 9690]), token_ids_hash(&[1, 9690, 198]));
        // List boundaries count: [[1],[2,3]] and [[1,2],[3]] differ.
        assert_ne!(token_lists_hash(&[vec![1], vec![2, 3]]), token_lists_hash(&[vec![1, 2], vec![3]]));
        let mut b = 1u32.to_le_bytes().to_vec();
        b.extend(7u32.to_le_bytes());
        assert_eq!(token_lists_hash(&[vec![7]]), alloy_primitives::keccak256(&b));
    }

    /// The documented test vector (docs/receipts.md): one float32 tensor "x" = [[1, 2]].
    #[test]
    fn test_vector() {
        let mut m = TensorMap::new();
        m.insert("x".into(), Tensor::from_f32(vec![1, 2], &[1.0, 2.0]).unwrap());
        let mut bytes = b"x\x00\x01".to_vec();
        bytes.extend(2u32.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend(2u64.to_le_bytes());
        bytes.extend(8u64.to_le_bytes());
        bytes.extend(1.0f32.to_le_bytes());
        bytes.extend(2.0f32.to_le_bytes());
        assert_eq!(tensors_hash(&m), alloy_primitives::keccak256(&bytes));
        // Computed independently (Python eth_utils.keccak over the same bytes); docs/receipts.md.
        assert_eq!(
            format!("{:#x}", tensors_hash(&m)),
            "0x48a5a882dd73f5d1ae3054f3da2a9d0b97222f056abe34c4d498e56f79780cf2"
        );
    }
}
