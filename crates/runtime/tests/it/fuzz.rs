//! Fuzz target: ONNX at publish. Mutated, truncated and spliced model bytes (from the digits
//! MLP and the expansion bomb) compile or are refused as invalid models: never a panic that
//! escapes, never another error kind, and a plan that compiled runs or refuses its input.
//!
//! Cases: `VERINET_FUZZ_CASES` / 4 (default 128); each compiles a model.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use verinet_runtime::{RuntimeConfig, RuntimeError};

use crate::helpers::*;

#[derive(Debug, Clone)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
    /// Copies a slice of the model over another place (protobuf fields are length-delimited,
    /// so this makes plausible nested messages with wrong lengths).
    Splice(prop::sample::Index, prop::sample::Index, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Remove),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u8..64).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match e {
            Edit::Set(i, b) => bytes[i.index(len)] = *b,
            Edit::Insert(i, b) => bytes.insert(i.index(len), *b),
            Edit::Remove(i) => {
                bytes.remove(i.index(len));
            }
            Edit::Truncate(i) => bytes.truncate(i.index(len)),
            Edit::Splice(from, to, n) => {
                let (from, to) = (from.index(len), to.index(len));
                let n = (*n as usize).min(len - from).min(len - to);
                let chunk = bytes[from..from + n].to_vec();
                bytes[to..to + n].copy_from_slice(&chunk);
            }
        }
    }
    bytes
}

#[test]
fn mutated_models_compile_or_are_refused_as_invalid() {
    let cases = std::env::var("VERINET_FUZZ_CASES").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(512) / 4;
    let seeds = [digits_bytes(), std::fs::read(repo_root().join("fixtures/bombs/constant_of_shape.onnx")).expect("bomb fixture")];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let mut runner = TestRunner::new(Config { cases: cases.max(1), failure_persistence: None, ..Config::default() });
    let strategy = (0usize..seeds.len(), prop::collection::vec(edit(), 1..6));
    let (compiled, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    runner
        .run(&strategy, |(seed, edits)| {
            let bytes = apply(seeds[seed].clone(), &edits);
            let runtime = tract_runtime(RuntimeConfig::default());
            match rt.block_on(runtime.inspect(id(&bytes), bytes.clone())) {
                Ok(signature) => {
                    compiled.set(compiled.get() + 1);
                    // It runs, or refuses its input; either way an answer, not a crash.
                    if signature.inputs.len() == 1 && signature.inputs[0].name == "pixels" {
                        let _ = rt.block_on(runtime.run(id(&bytes), loader(&bytes), digits_input(1)));
                    }
                }
                Err(RuntimeError::InvalidModel(_)) => refused.set(refused.get() + 1),
                Err(other) => prop_assert!(false, "a mutated model gave {other:?}, not InvalidModel"),
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{} compiled, {} refused", compiled.get(), refused.get());
    assert!(refused.get() > 0, "the mutations never produced an invalid model: the target tests nothing");
}
