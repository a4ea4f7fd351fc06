//! The backend suite on tract.

use verinet_runtime::TractBackend;

use crate::suite;

#[test]
fn digits_matches_reference() {
    suite::digits_matches_reference(&TractBackend::new());
}

#[test]
fn minilm_matches_reference() {
    suite::model_matches_reference(&TractBackend::new(), "minilm");
}

#[test]
fn magika_matches_reference() {
    suite::model_matches_reference(&TractBackend::new(), "magika");
}

#[test]
fn signatures_match_manifests() {
    for name in ["digits", "minilm", "magika"] {
        suite::signature_matches_manifest(&TractBackend::new(), name);
    }
}

#[test]
fn every_dtype_round_trips() {
    suite::every_dtype_round_trips(&TractBackend::new());
}

#[test]
fn refuses_invalid_models() {
    suite::refuses_invalid_models(&TractBackend::new());
}

#[test]
fn infers_undeclared_output_shape() {
    suite::infers_undeclared_output_shape(&TractBackend::new());
}

#[test]
fn concurrent_runs_agree() {
    suite::concurrent_runs_agree(&TractBackend::new());
}

#[test]
fn unchecked_bad_inputs_fail_cleanly() {
    suite::unchecked_bad_inputs_fail_cleanly(&TractBackend::new());
}

#[test]
fn sklearn_table_matches_reference() {
    suite::sklearn_table_matches_reference(&TractBackend::new());
}
