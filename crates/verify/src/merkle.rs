//! Merkle batches of `bytes32` values (e.g. receipts' EIP-712 digests), byte-for-byte compatible
//! with OpenZeppelin's `StandardMerkleTree` for the leaf encoding `["bytes32"]`, so a root posted
//! on chain can be checked with `MerkleProof.verify` and a dump can be opened with the JS
//! library's `StandardMerkleTree.load`.
//!
//! The scheme, as in `@openzeppelin/merkle-tree` 1.0.8:
//! - leaf = `keccak256(bytes.concat(keccak256(abi.encode(value))))`. Hashing twice makes every
//!   leaf preimage 32 bytes, never the 64 of an internal node, so a node cannot pose as a leaf.
//! - internal node = `keccak256(min(a, b) ++ max(a, b))`. Sorting the pair is what lets a proof be
//!   a bare list of siblings, with no left/right flags.
//! - the tree is one array: the root at 0, the children of `i` at `2i + 1` and `2i + 2`, and the
//!   `n` leaves in the last `n` slots. Leaves are sorted by ascending hash and laid out from the
//!   END of the array backwards, so the smallest leaf hash sits in the last slot. With a leaf count
//!   that is not a power of two the leaves span two levels; the tree is complete, not perfect.

use std::collections::HashMap;

use alloy_primitives::{B256, keccak256};
use serde_json::{Value, json};

use crate::VerifyError;

/// A Merkle tree over `bytes32` values in OpenZeppelin `StandardMerkleTree` layout.
///
/// Built with [`MerkleTree::of`]; proofs check with [`verify`] here, with OZ's
/// `StandardMerkleTree.verify` in JS, or with `MerkleProof.verify(proof, root, leaf)` in Solidity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// Every node in OZ's array layout (see the module docs): root first, leaves last.
    tree: Vec<B256>,
    /// The values in the order given to [`MerkleTree::of`], each with the slot of its leaf: OZ's
    /// `values` array, which keeps input order, not leaf order.
    values: Vec<IndexedValue>,
    /// Value to its index in `values`. A repeated value maps to its last occurrence, as OZ's
    /// `hashLookup` does, so proofs of repeated values match OZ's too.
    lookup: HashMap<B256, usize>,
}

/// One entry of OZ's `values` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexedValue {
    value: B256,
    tree_index: usize,
}

impl MerkleTree {
    /// Builds the tree over `values` exactly like
    /// `StandardMerkleTree.of(values.map(v => [v]), ["bytes32"])` (`sortLeaves` default true).
    /// Repeated values are kept, each as its own leaf, as OZ does. Errors on an empty list.
    pub fn of(values: &[B256]) -> Result<Self, VerifyError> {
        if values.is_empty() {
            return Err(VerifyError::EmptyBatch);
        }
        let leaves = values.len();
        let mut hashed: Vec<(B256, usize)> =
            values.iter().enumerate().map(|(value_index, value)| (leaf_hash(value), value_index)).collect();
        // Stable, like JS `Array.prototype.sort`: equal hashes (repeated values) keep input order,
        // which decides which slot each copy gets and so their proofs.
        hashed.sort_by_key(|&(hash, _)| hash);

        let len = 2 * leaves - 1;
        let mut tree = vec![B256::ZERO; len];
        let mut indexed: Vec<IndexedValue> =
            values.iter().map(|&value| IndexedValue { value, tree_index: 0 }).collect();
        for (leaf_index, (hash, value_index)) in hashed.into_iter().enumerate() {
            let slot = len - 1 - leaf_index;
            tree[slot] = hash;
            indexed[value_index].tree_index = slot;
        }
        // Every slot before the leaves is internal and has both children: 2i + 2 <= len - 1
        // for i < leaves - 1.
        for i in (0..len - leaves).rev() {
            tree[i] = node_hash(&tree[2 * i + 1], &tree[2 * i + 2]);
        }

        let lookup = indexed.iter().enumerate().map(|(value_index, v)| (v.value, value_index)).collect();
        Ok(Self { tree, values: indexed, lookup })
    }

    /// The Merkle root, the value to publish or post on chain.
    pub fn root(&self) -> B256 {
        self.tree[0]
    }

    /// The number of values (leaves), repeated values counted each time.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always false: [`MerkleTree::of`] refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Proof for the value (by value), as OZ `getProof`: sibling hashes, bottom-up. `None` if the
    /// value is not in the tree. A single-value tree's proof is empty (the leaf is the root).
    pub fn proof(&self, value: &B256) -> Option<Vec<B256>> {
        let &value_index = self.lookup.get(value)?;
        let mut index = self.values[value_index].tree_index;
        let mut proof = Vec::new();
        while index > 0 {
            // Left children sit at odd slots, right children at even ones.
            let sibling = if index % 2 == 1 { index + 1 } else { index - 1 };
            proof.push(self.tree[sibling]);
            index = (index - 1) / 2;
        }
        Some(proof)
    }

    /// The OZ dump format
    /// `{"format":"standard-v1","leafEncoding":["bytes32"],"tree":[..],"values":[{"value":["0x.."],"treeIndex":n}..]}`
    /// with lowercase `0x` hex, so OZ's `StandardMerkleTree.load()` can load it (its validation
    /// compares hex strings, so the case matters). Values are in the order given to `of`.
    pub fn dump(&self) -> Value {
        let tree: Vec<String> = self.tree.iter().map(hex32).collect();
        let values: Vec<Value> =
            self.values.iter().map(|v| json!({ "value": [hex32(&v.value)], "treeIndex": v.tree_index })).collect();
        json!({
            "format": "standard-v1",
            "leafEncoding": ["bytes32"],
            "tree": tree,
            "values": values,
        })
    }
}

/// Leaf hash of one bytes32 value (double keccak of its abi encoding).
pub fn leaf_hash(value: &B256) -> B256 {
    // `abi.encode(bytes32)` is the 32 bytes themselves: a static type gets no length or padding.
    keccak256(keccak256(value))
}

/// OZ `processProof`/`verify`: recomputes the root from a leaf value and a proof.
pub fn verify(root: B256, value: &B256, proof: &[B256]) -> bool {
    proof.iter().fold(leaf_hash(value), |node, sibling| node_hash(&node, sibling)) == root
}

/// OZ `standardNodeHash`: keccak256 of the pair in ascending order.
fn node_hash(a: &B256, b: &B256) -> B256 {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut pair = [0u8; 64];
    pair[..32].copy_from_slice(low.as_slice());
    pair[32..].copy_from_slice(high.as_slice());
    keccak256(pair)
}

/// `0x` + 64 lowercase hex digits, the only spelling OZ's string comparisons accept.
fn hex32(hash: &B256) -> String {
    format!("0x{}", hex::encode(hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::b256;
    use alloy_sol_types::SolValue;

    /// Deterministic distinct values; the same as the cross-check in `tests/oz_merkle.rs`.
    fn values(n: u64) -> Vec<B256> {
        (0..n).map(|i| keccak256(i.to_be_bytes())).collect()
    }

    #[test]
    fn leaf_hash_is_double_keccak_of_the_abi_encoding() {
        let value = keccak256(b"receipt");
        let encoded = (value,).abi_encode();
        assert_eq!(encoded.len(), 32, "abi.encode(bytes32) is the bare 32 bytes");
        assert_eq!(leaf_hash(&value), keccak256(keccak256(&encoded)));
        assert_ne!(leaf_hash(&value), keccak256(value), "single hashing would let leaves pose as nodes");
    }

    #[test]
    fn empty_list_is_refused() {
        assert!(matches!(MerkleTree::of(&[]), Err(VerifyError::EmptyBatch)));
    }

    #[test]
    fn single_leaf_is_its_own_root_with_an_empty_proof() {
        let value = keccak256(b"only");
        let tree = MerkleTree::of(&[value]).unwrap();
        assert_eq!(tree.len(), 1);
        assert!(!tree.is_empty());
        assert_eq!(tree.root(), leaf_hash(&value));
        assert_eq!(tree.proof(&value), Some(vec![]));
        assert!(verify(tree.root(), &value, &[]));
    }

    #[test]
    fn two_leaves_hash_as_a_sorted_pair_whatever_the_input_order() {
        let [a, b] = [keccak256(b"a"), keccak256(b"b")];
        let (la, lb) = (leaf_hash(&a), leaf_hash(&b));
        let (low, high) = if la < lb { (la, lb) } else { (lb, la) };
        let expected = keccak256([low.as_slice(), high.as_slice()].concat());

        let tree = MerkleTree::of(&[a, b]).unwrap();
        assert_eq!(tree.root(), expected);
        assert_eq!(MerkleTree::of(&[b, a]).unwrap().root(), expected);
        assert_eq!(tree.proof(&a), Some(vec![lb]));
        assert_eq!(tree.proof(&b), Some(vec![la]));
        assert!(verify(expected, &a, &[lb]));
        assert!(verify(expected, &b, &[la]));
    }

    #[test]
    fn every_proof_verifies_for_odd_and_even_counts() {
        for n in [1, 2, 3, 4, 5, 7, 8, 13, 16, 33] {
            let values = values(n);
            let tree = MerkleTree::of(&values).unwrap();
            assert_eq!(tree.len(), values.len());
            for value in &values {
                let proof = tree.proof(value).unwrap();
                assert!(verify(tree.root(), value, &proof), "n = {n}, value {value}");
                // A complete tree: every leaf is at depth floor(log2(n)) or one deeper.
                let shallow = n.ilog2() as usize;
                assert!(proof.len() == shallow || proof.len() == shallow + 1, "n = {n}: depth {}", proof.len());
            }
        }
    }

    #[test]
    fn layout_puts_leaves_last_in_descending_hash_order() {
        let values = values(5);
        let tree = MerkleTree::of(&values).unwrap();
        assert_eq!(tree.tree.len(), 9);
        let leaves = &tree.tree[4..];
        let mut expected: Vec<B256> = values.iter().map(leaf_hash).collect();
        expected.sort_by(|a, b| b.cmp(a));
        assert_eq!(leaves, expected.as_slice());
        for i in 0..4 {
            assert_eq!(tree.tree[i], node_hash(&tree.tree[2 * i + 1], &tree.tree[2 * i + 2]));
        }
        // Values keep input order and point at their own leaf.
        for (v, value) in tree.values.iter().zip(&values) {
            assert_eq!(v.value, *value);
            assert_eq!(tree.tree[v.tree_index], leaf_hash(value));
        }
    }

    /// Reference output of `@openzeppelin/merkle-tree` 1.0.8 for `values(3)`:
    /// `StandardMerkleTree.of(values.map(v => [v]), ["bytes32"])`, its `getProof` per value and
    /// its `dump()`. `tests/oz_merkle.rs` checks more sizes against the live package.
    #[test]
    fn matches_openzeppelin_reference_output() {
        let values = values(3);
        let tree = MerkleTree::of(&values).unwrap();
        assert_eq!(tree.root(), b256!("1dc33a1c5dfd873b58c7d04d69de049505892fa6d9fd9afde3b7a6bb93209d27"));
        let proofs: Vec<Vec<B256>> = values.iter().map(|v| tree.proof(v).unwrap()).collect();
        assert_eq!(
            proofs,
            vec![
                vec![
                    b256!("d263acdc7d287e1bd19ce6401bcbb34c547ea37a187992045c21586c4f692608"),
                    b256!("f7292e5e9573407924f6b6ee2e81bd83f825d013d4ef8cb986f715461ac2b09d"),
                ],
                vec![b256!("9341a4fa081b4339ca7bd8ad9234bb5004e5e0a34e5812593313f9e92aa7a7ad")],
                vec![
                    b256!("ad434c7c024c358bca830cb4abd08577a02c96faabe6a2496c20c7ce790711fc"),
                    b256!("f7292e5e9573407924f6b6ee2e81bd83f825d013d4ef8cb986f715461ac2b09d"),
                ],
            ]
        );
        let expected_dump = json!({
            "format": "standard-v1",
            "leafEncoding": ["bytes32"],
            "tree": [
                "0x1dc33a1c5dfd873b58c7d04d69de049505892fa6d9fd9afde3b7a6bb93209d27",
                "0x9341a4fa081b4339ca7bd8ad9234bb5004e5e0a34e5812593313f9e92aa7a7ad",
                "0xf7292e5e9573407924f6b6ee2e81bd83f825d013d4ef8cb986f715461ac2b09d",
                "0xd263acdc7d287e1bd19ce6401bcbb34c547ea37a187992045c21586c4f692608",
                "0xad434c7c024c358bca830cb4abd08577a02c96faabe6a2496c20c7ce790711fc",
            ],
            "values": [
                { "value": ["0x011b4d03dd8c01f1049143cf9c4c817e4b167f1d1b83e5c6f0f10d89ba1e7bce"], "treeIndex": 4 },
                { "value": ["0x6c31fc15422ebad28aaf9089c306702f67540b53c7eea8b7d2941044b027100f"], "treeIndex": 2 },
                { "value": ["0x859f11b75569a4eb0496c5138fd42cc52aee8cf5c4e7cfafe58c92b2ed138e04"], "treeIndex": 3 },
            ],
        });
        assert_eq!(tree.dump(), expected_dump);
    }

    #[test]
    fn tampering_with_proof_value_or_root_fails() {
        let values = values(13);
        let tree = MerkleTree::of(&values).unwrap();
        let root = tree.root();
        for (i, value) in values.iter().enumerate() {
            let proof = tree.proof(value).unwrap();
            assert!(verify(root, value, &proof));

            for level in 0..proof.len() {
                let mut flipped = proof.clone();
                flipped[level].0[31] ^= 1;
                assert!(!verify(root, value, &flipped), "flipped sibling at level {level}");
            }
            assert!(!verify(root, value, &proof[..proof.len() - 1]), "dropped the top sibling");
            let mut longer = proof.clone();
            longer.push(root);
            assert!(!verify(root, value, &longer), "extra sibling");
            let mut reversed = proof.clone();
            reversed.reverse();
            assert!(!verify(root, value, &reversed), "levels out of order");

            let other = &values[(i + 1) % values.len()];
            assert!(!verify(root, other, &proof), "another value's leaf under this proof");
            let mut bad_root = root;
            bad_root.0[0] ^= 0x80;
            assert!(!verify(bad_root, value, &proof), "wrong root");
        }
        // The leaf hash itself is not a value: proofs bind the double-hashed preimage.
        let value = &values[0];
        assert!(!verify(root, &leaf_hash(value), &tree.proof(value).unwrap()));
    }

    #[test]
    fn absent_values_have_no_proof() {
        let values = values(5);
        let tree = MerkleTree::of(&values).unwrap();
        assert_eq!(tree.proof(&keccak256(b"absent")), None);
        // Neither a leaf hash nor an internal node is a value of the tree.
        assert_eq!(tree.proof(&leaf_hash(&values[0])), None);
        assert_eq!(tree.proof(&tree.root()), None);
    }

    #[test]
    fn repeated_values_stay_separate_leaves_and_prove_the_last_copy() {
        let [a, b] = [keccak256(b"a"), keccak256(b"b")];
        let tree = MerkleTree::of(&[a, b, a]).unwrap();
        assert_eq!(tree.len(), 3);
        let proof = tree.proof(&a).unwrap();
        assert!(verify(tree.root(), &a, &proof));
        // OZ's stable sort puts the copies in adjacent slots, the first copy deeper in the array.
        assert_eq!(tree.values[0].tree_index, tree.values[2].tree_index + 1);
        let mut index = tree.values[2].tree_index;
        let mut expected = Vec::new();
        while index > 0 {
            expected.push(tree.tree[if index % 2 == 1 { index + 1 } else { index - 1 }]);
            index = (index - 1) / 2;
        }
        assert_eq!(proof, expected);
    }

    #[test]
    fn dump_has_the_standard_v1_shape() {
        let values = values(3);
        let tree = MerkleTree::of(&values).unwrap();
        let dump = tree.dump();
        assert_eq!(dump["format"], "standard-v1");
        assert_eq!(dump["leafEncoding"], json!(["bytes32"]));
        let nodes = dump["tree"].as_array().unwrap();
        assert_eq!(nodes.len(), 5);
        assert_eq!(nodes[0], json!(hex32(&tree.root())));
        for node in nodes {
            let text = node.as_str().unwrap();
            assert!(text.starts_with("0x") && text.len() == 66, "{text}");
            assert_eq!(text, text.to_lowercase());
        }
        let dumped = dump["values"].as_array().unwrap();
        assert_eq!(dumped.len(), 3);
        for (entry, value) in dumped.iter().zip(&values) {
            assert_eq!(entry["value"], json!([hex32(value)]));
            let slot = entry["treeIndex"].as_u64().unwrap() as usize;
            assert_eq!(nodes[slot], json!(hex32(&leaf_hash(value))));
        }
    }
}
