//! The same node on PostgreSQL: two nodes (gateways) sharing one database see one hub.

use alloy_signer_local::PrivateKeySigner;
use verinet_client::{Client, ClientError};
use verinet_node::{Config, Node};
use verinet_primitives::wire::InferRequest;
use verinet_store::PgTestDb;

use crate::helpers::{digits_bytes, signed};
use verinet_runtime::test_utils::{Tolerance, assert_outputs, parse_reference};

#[tokio::test]
async fn two_nodes_share_one_postgres_hub() {
    PgTestDb::with(|db| async move {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let shared_blobs = tempfile::tempdir().unwrap();
        let config = |dir: &std::path::Path| {
            let mut c = Config::default();
            c.storage.data_dir = dir.to_path_buf();
            c.storage.database_url = Some(db.url.clone());
            c.storage.blobs_dir = Some(shared_blobs.path().to_path_buf());
            c.server.listen = "127.0.0.1:0".parse().unwrap();
            c
        };
        let a = Node::spawn(&config(dir_a.path())).await.unwrap();
        let b = Node::spawn(&config(dir_b.path())).await.unwrap();
        let (ca, cb) = (Client::new(a.url()), Client::new(b.url()));
        assert_eq!(ca.health().await.unwrap().storage, "postgres");

        // Node A published the bundled model first; B, with another node key, must not steal it.
        let owner = ca.model("digits").await.unwrap().owner;
        assert_eq!(cb.model("digits").await.unwrap().owner, owner);

        // Published through A, served by B.
        let key = PrivateKeySigner::random();
        let bytes = digits_bytes();
        ca.publish_bytes(&signed("shared", "1.0.0", &bytes, &key), bytes.clone()).await.unwrap();
        let reference = parse_reference(&crate::helpers::repo_root().join("fixtures/digits/reference.json"));
        let case = &reference.cases[0];
        let req = InferRequest::new("shared@1.0.0", case.inputs.clone());
        let resp = cb.infer(&req).await.unwrap();
        assert_outputs("served by b", &resp.tensors().unwrap(), &case.outputs, Tolerance { abs: 1e-5, rel: 1e-5 });
        assert_eq!(cb.model("shared").await.unwrap().usage.calls, 1, "usage counted in the shared database");
        // The other node sees it once the serving node's buffer flushed (every 200 ms).
        let mut seen = 0;
        for _ in 0..50 {
            seen = ca.model("shared").await.unwrap().usage.calls;
            if seen == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(seen, 1, "usage reaches the shared database");

        // B resolves "shared" from memory once it has; a version published through A must
        // reach B's calls anyway (A's publication is announced to B by the database).
        let shared = InferRequest::new("shared", case.inputs.clone());
        let by_name = || cb.infer(&shared);
        assert_eq!(by_name().await.unwrap().model.version.to_string(), "1.0.0");
        assert_eq!(by_name().await.unwrap().model.version.to_string(), "1.0.0");
        ca.publish_bytes(&signed("shared", "1.1.0", &bytes, &key), bytes.clone()).await.unwrap();
        let mut served = String::new();
        for _ in 0..100 {
            served = by_name().await.unwrap().model.version.to_string();
            if served == "1.1.0" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(served, "1.1.0", "another gateway's publication reaches this gateway's calls by name");

        // Ownership holds across nodes.
        let err = cb.publish_bytes(&signed("shared", "2.0.0", &bytes, &PrivateKeySigner::random()), bytes).await.unwrap_err();
        assert!(matches!(err, ClientError::Api { status: 403, .. }), "{err:?}");

        a.stop().await.unwrap();
        b.stop().await.unwrap();
    })
    .await;
}

/// Two gateways on one PostgreSQL ledger: a payer's balance is spent once across both, and the
/// ledger balances afterwards.
#[tokio::test]
async fn two_gateways_on_postgres_never_double_spend() {
    PgTestDb::with(|db| async move {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let shared_blobs = tempfile::tempdir().unwrap();
        let config = |dir: &std::path::Path| {
            let mut c = Config::default();
            c.storage.data_dir = dir.to_path_buf();
            c.storage.database_url = Some(db.url.clone());
            c.storage.blobs_dir = Some(shared_blobs.path().to_path_buf());
            c.server.listen = "127.0.0.1:0".parse().unwrap();
            c.payments.operator_fee = "100".into();
            c
        };
        let a = Node::spawn(&config(dir_a.path())).await.unwrap();
        let b = Node::spawn(&config(dir_b.path())).await.unwrap();
        let (ca, cb) = (Client::new(a.url()), Client::new(b.url()));
        let payer = PrivateKeySigner::random();
        ca.faucet(payer.address(), Some(500)).await.unwrap();
        let reference = parse_reference(&crate::helpers::repo_root().join("fixtures/digits/reference.json"));
        let req = InferRequest::new("digits", reference.cases[0].inputs.clone());
        let tasks = (0..12).map(|i| {
            let (client, payer, req) = (if i % 2 == 0 { ca.clone() } else { cb.clone() }, payer.clone(), req.clone());
            tokio::spawn(async move { client.infer_paid(&req, &payer).await })
        });
        let mut ok = 0;
        for r in futures::future::join_all(tasks).await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(ClientError::Api { status: 402, code, .. }) => assert_eq!(code, "insufficient_funds"),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(ok, 5, "500 pays for exactly five calls of 100");
        let account = cb.account(payer.address()).await.unwrap();
        assert_eq!((account.balance.as_str(), account.escrow.as_str()), ("0", "0"));
        let store = verinet_store::SqlStore::connect(&db.url).await.unwrap();
        let totals = verinet_store::LedgerStore::totals(&store).await.unwrap();
        assert!(totals.balanced(), "{totals:?}");
        store.close().await;
        a.stop().await.unwrap();
        b.stop().await.unwrap();
    })
    .await;
}
