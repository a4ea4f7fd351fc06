//! Model distribution: bytes are fetched by content id from the hub or any peer, and bytes that
//! do not hash to the id asked for are refused.

use axum::{Router, routing::get};
use verinet_client::{Client, ClientError};
use verinet_primitives::ModelId;

use crate::helpers::{TestNode, digits_bytes};

#[tokio::test]
async fn models_are_fetched_by_sha256_and_wrong_bytes_are_refused() {
    // From the hub: the bundled model's bytes, verified.
    let n = TestNode::start().await;
    let id = n.client.model("digits").await.unwrap().latest.sha256;
    let bytes = n.client.fetch_model(&id).await.unwrap();
    assert_eq!(ModelId::of_bytes(&bytes), id);
    assert_eq!(bytes.as_ref(), digits_bytes().as_slice());

    // From a peer that serves other bytes under that id (tampered, truncated or just wrong).
    for served in [b"not an onnx model".to_vec(), digits_bytes()[..1000].to_vec(), {
        let mut b = digits_bytes();
        b[500] ^= 1;
        b
    }] {
        let app = Router::new().route("/v1/blobs/{sha}", get(move || async move { served.clone() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        match Client::new(peer).fetch_model(&id).await {
            Err(ClientError::HashMismatch { expected, got }) => {
                assert_eq!(expected, id.to_string());
                assert_ne!(got, expected);
            }
            other => panic!("a wrong blob must be refused, got {other:?}"),
        }
        server.abort();
    }
}
