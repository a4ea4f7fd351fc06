//! `merkle::MerkleTree` against the real `@openzeppelin/merkle-tree` (the package on-chain
//! consumers use to build and check `MerkleProof` inputs), run by `scripts/oz_merkle.mjs`:
//! for the same values both sides must produce the same root, the same proofs and the same
//! dump, OZ's `StandardMerkleTree.load` must accept the Rust dump, and OZ's
//! `StandardMerkleTree.verify` must accept every Rust proof.
//!
//! Needs Node.js and the package installed where `VERINET_NODE_MODULES` points; scripts/test.sh
//! sets both up. Without them this test fails rather than skips: a silently skipped
//! compatibility check would let the formats drift apart unnoticed.

use std::path::{Path, PathBuf};
use std::process::Command;

use alloy_primitives::{B256, keccak256};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use verinet_verify::merkle::{MerkleTree, verify};

const PACKAGE: &str = "@openzeppelin/merkle-tree";

/// One tree for the script: the values, the Rust dump and the Rust proof of each value.
#[derive(Serialize)]
struct Case {
    /// Kept on the Rust side to compare with OZ's root.
    #[serde(skip)]
    root: B256,
    values: Vec<B256>,
    dump: Value,
    proofs: Vec<Vec<B256>>,
}

/// The script's answer.
#[derive(Deserialize)]
struct Report {
    version: String,
    results: Vec<OzResult>,
}

/// What OZ made of one case.
#[derive(Deserialize)]
struct OzResult {
    root: B256,
    proofs: Vec<Vec<B256>>,
    dump: Value,
    loaded: Outcome,
    verified: Vec<Outcome>,
}

/// A check on the JS side; `error` is set when the library threw instead of answering.
#[derive(Deserialize, Debug)]
struct Outcome {
    ok: bool,
    error: Option<String>,
}

/// Deterministic distinct values, the same as the unit tests in `src/merkle.rs`.
fn values(n: u64) -> Vec<B256> {
    (0..n).map(|i| keccak256(i.to_be_bytes())).collect()
}

fn case(values: Vec<B256>) -> Case {
    let tree = MerkleTree::of(&values).expect("non-empty values");
    let proofs = values.iter().map(|v| tree.proof(v).expect("every value has a proof")).collect();
    Case { root: tree.root(), dump: tree.dump(), values, proofs }
}

fn node_modules() -> PathBuf {
    let dir = std::env::var_os("VERINET_NODE_MODULES").unwrap_or_else(|| {
        panic!("VERINET_NODE_MODULES is not set: run scripts/test.sh, which installs {PACKAGE} into target/npm")
    });
    let dir = PathBuf::from(dir);
    let manifest = dir.join(PACKAGE).join("package.json");
    assert!(
        manifest.is_file(),
        "{PACKAGE} is not installed in VERINET_NODE_MODULES={}: run scripts/test.sh",
        dir.display()
    );
    dir
}

/// Runs the OZ side over `cases` and returns its report; `name` keeps the input files of tests
/// running in parallel apart.
fn run_openzeppelin(name: &str, cases: &[Case]) -> Report {
    let modules = node_modules();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/oz_merkle.mjs");
    let input = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("oz_merkle-{name}-{}.json", std::process::id()));
    std::fs::write(&input, serde_json::to_vec(cases).expect("cases serialize")).expect("write cases");
    let output = Command::new("node")
        .arg(&script)
        .arg(&input)
        .env("VERINET_NODE_MODULES", &modules)
        .output()
        .unwrap_or_else(|err| panic!("cannot run node ({err}): install Node.js and run scripts/test.sh"));
    // Best effort: the file lives under target/ and is named per process anyway.
    let _ = std::fs::remove_file(&input);
    assert!(
        output.status.success(),
        "{} failed ({}), run scripts/test.sh to install {PACKAGE}:\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!("unreadable output from {} ({err}):\n{}", script.display(), String::from_utf8_lossy(&output.stdout))
    })
}

#[test]
fn rust_trees_match_openzeppelin_standard_merkle_tree() {
    let sizes = [1, 2, 3, 7, 16];
    let mut cases: Vec<Case> = sizes.iter().map(|&n| case(values(n))).collect();
    // Repeated values: OZ keeps each copy as its own leaf and proves the last copy.
    let v = values(3);
    cases.push(case(vec![v[0], v[1], v[0], v[2], v[1]]));

    let report = run_openzeppelin("match", &cases);
    assert_eq!(report.results.len(), cases.len());
    for (case, oz) in cases.iter().zip(&report.results) {
        let n = case.values.len();
        let context = format!("{n} values, {PACKAGE} {}", report.version);
        assert_eq!(case.root, oz.root, "root, {context}");
        assert_eq!(case.proofs, oz.proofs, "proofs, {context}");
        assert_eq!(case.dump, oz.dump, "dump, {context}");
        assert!(oz.loaded.ok, "StandardMerkleTree.load rejected the Rust dump, {context}: {:?}", oz.loaded.error);
        assert_eq!(oz.verified.len(), n);
        for (value, outcome) in case.values.iter().zip(&oz.verified) {
            assert!(outcome.ok, "StandardMerkleTree.verify rejected the Rust proof of {value}, {context}: {outcome:?}");
        }
        // And the other way round: Rust accepts OZ's proofs against OZ's root.
        for (value, proof) in case.values.iter().zip(&oz.proofs) {
            assert!(verify(oz.root, value, proof), "Rust rejected OZ's proof of {value}, {context}");
        }
    }
}

/// The harness can fail: proofs shifted onto the wrong values must come back rejected, so the
/// acceptances above mean something.
#[test]
fn openzeppelin_rejects_wrong_rust_proofs() {
    let mut wrong = case(values(7));
    wrong.proofs.rotate_left(1);
    let report = run_openzeppelin("wrong", std::slice::from_ref(&wrong));
    let oz = &report.results[0];
    assert!(oz.loaded.ok, "{:?}", oz.loaded.error);
    assert_eq!(oz.verified.len(), 7);
    for (value, outcome) in wrong.values.iter().zip(&oz.verified) {
        assert!(!outcome.ok, "StandardMerkleTree.verify accepted a proof of another value for {value}");
    }
}
