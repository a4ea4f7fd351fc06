//! `/openapi.json`: a valid OpenAPI 3.1 document (checked by the PyPI openapi-spec-validator,
//! an independent implementation) that covers every route the router serves.

use std::collections::BTreeSet;

use crate::helpers::{TestNode, repo_root};

fn python() -> String {
    std::env::var("VERINET_TEST_PYTHON")
        .unwrap_or_else(|_| panic!("VERINET_TEST_PYTHON is not set: run scripts/test.sh, which installs openapi-spec-validator into target/pyenv"))
}

#[tokio::test]
async fn the_openapi_document_validates_and_lists_every_route() {
    let n = TestNode::start().await;
    let url = n.node.url().to_owned();
    let spec: serde_json::Value = reqwest::get(format!("{url}/openapi.json")).await.unwrap().json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");

    // An independent validator accepts it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = std::process::Command::new(python()).args(["-m", "openapi_spec_validator"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator refused /openapi.json:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every operation in it is served: no "no such route" 404 and no 405 for its method.
    let mut operations = BTreeSet::new();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let concrete = path.split('/').map(|seg| if seg.starts_with('{') { "x" } else { seg }).collect::<Vec<_>>().join("/");
            let req = match method.as_str() {
                "get" => client.get(format!("{url}{concrete}")),
                "post" => client.post(format!("{url}{concrete}")).header("content-type", "application/json").body("{}"),
                other => panic!("{other} {path}: only GET and POST are expected"),
            };
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            assert!(status != 405 && !(status == 404 && body.contains("no such route")), "{method} {path}: {status} {body}");
            operations.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    // The ones a user reaches first, named so a lost annotation fails here.
    for op in [
        "POST /v1/infer",
        "POST /v1/models",
        "GET /v1/models/{name}",
        "POST /v1/chat/completions",
        "POST /v1/embeddings",
        "POST /v1/sessions",
        "GET /v1/receipts/{request_id}/proof",
        "GET /openapi.json",
        "GET /docs",
        "GET /",
    ] {
        assert!(operations.contains(op), "{op} is missing from /openapi.json");
    }
    assert!(operations.len() >= 32, "{} operations: {operations:?}", operations.len());

    // And the router has no route of its own beside them: every route is registered through
    // `routes!` from an annotated handler.
    for entry in std::fs::read_dir(repo_root().join("crates/api/src")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains(".route(\""), "{} adds a route outside the OpenAPI document", path.display());
    }

    // The x402 header, the bearer session and the amounts are described where clients look.
    let infer = &spec["paths"]["/v1/infer"]["post"];
    assert!(infer["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "PAYMENT-SIGNATURE"));
    assert!(infer["responses"]["402"].is_object());
    assert_eq!(spec["components"]["securitySchemes"]["session"]["scheme"], "bearer");
    assert_eq!(spec["components"]["schemas"]["Amount"]["type"], "string");
}
