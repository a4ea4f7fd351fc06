//! The Python SDK (`sdk/python`, package `verinet`) against a real node: its pytest suite
//! publishes a priced model, pays with x402 and sessions under a spend limit, verifies receipts
//! and inclusion proofs offline and checks the typed errors, all over HTTP.

use std::process::Command;

use crate::helpers::{TestNode, repo_root};

#[tokio::test]
async fn python_sdk_tests_pass_against_a_real_node() {
    let python = std::env::var("VERINET_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("VERINET_TEST_PYTHON is not set: run scripts/test.sh, which installs the SDK (./sdk/python) and pytest into target/pyenv")
    });
    let installed = Command::new(&python).args(["-c", "import verinet, pytest"]).output().unwrap();
    assert!(
        installed.status.success(),
        "{python} cannot import verinet and pytest: run scripts/test.sh (pip install ./sdk/python, pytest from fixtures/requirements.txt)\n{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    // Receipts sealed within a tenth of a second; a devnet faucet; fees besides the royalty so
    // a call's price is more than what its creator earns; three workers and a validator for
    // the `sampled` and `quorum` modes.
    let n = TestNode::start_with(|c| {
        c.receipts.batch_max = 16;
        c.receipts.batch_interval_ms = 100;
        c.payments.devnet = true;
        c.payments.operator_fee = "1000".into();
        c.payments.protocol_fee_bps = 500;
        c.verification.workers = 3;
        c.verification.validators = 1;
    })
    .await;
    let url = n.node.url();
    let root = repo_root();
    // The node serves from this test's runtime while pytest runs on a blocking thread.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(["-m", "pytest", "sdk/python/tests", "-q", "-p", "no:cacheprovider"])
            .current_dir(&root)
            .env("VERINET_NODE_URL", &url)
            // This checkout's SDK even if the installed copy is older.
            .env("PYTHONPATH", root.join("sdk/python"))
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "the Python SDK tests failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
