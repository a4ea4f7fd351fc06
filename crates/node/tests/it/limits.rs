//! Limits that keep an attacker from taking the node's memory or file handles: connections that
//! send nothing are closed, open connections are capped, request bodies in flight share one
//! budget, and tensor JSON stops at the shape's element count.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestNode, digits_sample};

/// Waits for the server to close `s` (EOF or reset) and says how long it took, or `None` when
/// it is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            // An answer (e.g. 408) before the close: keep reading to the close.
            Ok(Ok(_)) => continue,
        }
    }
}

fn host(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_are_closed_and_open_connections_are_capped() {
    let n = TestNode::start_with(|c| {
        c.server.header_read_timeout_secs = 1;
        c.server.max_connections = 8;
    })
    .await;
    let addr = host(&n.node.url());

    // Idle from the start, or after a half-sent request head: closed after the timeout.
    let mut idle = Vec::new();
    for i in 0..6 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        }
        idle.push(s);
    }
    // At the cap (6 idle + 2 more = 8), a ninth connection is closed at once.
    let mut held = [TcpStream::connect(&addr).await.unwrap(), TcpStream::connect(&addr).await.unwrap()];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(&addr).await.unwrap();
    let t = closed_within(&mut over, Duration::from_millis(500)).await;
    assert!(t.is_some(), "a connection past the cap is closed at once");

    for s in idle.iter_mut().chain(held.iter_mut()) {
        let t = closed_within(s, Duration::from_secs(5)).await.expect("an idle connection is closed after the header read timeout");
        assert!(t <= Duration::from_secs(3), "closed after {t:?}");
    }
    // Room again: the node serves, and a keep-alive connection that goes quiet after its answer
    // is closed too.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let got = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..got]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..got]));
    assert!(closed_within(&mut s, Duration::from_secs(5)).await.is_some(), "a quiet keep-alive connection is closed");
    n.client.model("digits").await.unwrap();
}

/// Sends a request head for `path` with `content_length` and the first `sent` body bytes.
async fn start_post(addr: &str, path: &str, content_length: usize, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // A node that refuses on the head (503 busy) may close before the body is all sent; the
    // answer is what the test reads.
    let _ = s.write_all(body).await;
    s
}

async fn read_answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let got = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await.expect("an answer").unwrap();
        if got == 0 {
            break;
        }
        out.extend_from_slice(&buf[..got]);
        let text = String::from_utf8_lossy(&out);
        if let Some(i) = text.find("\r\n\r\n") {
            let len = text[..i].lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap()));
            if len.is_some_and(|l| out.len() >= i + 4 + l) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_in_flight_share_one_budget() {
    let n = TestNode::start_with(|c| c.server.max_inflight_body_mib = 1).await;
    let addr = host(&n.node.url());
    // A valid request padded with spaces to 700 KiB: two do not fit in 1 MiB at once.
    let mut body = serde_json::to_vec(&serde_json::json!({"model": "digits", "inputs": digits_sample()})).unwrap();
    body.resize(700 << 10, b' ');

    // The first one's head is in: its 700 KiB are reserved while its body trickles in.
    let mut first = start_post(&addr, "/v1/infer", body.len(), &body[..1000]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = start_post(&addr, "/v1/infer", body.len(), &body).await;
    let busy = read_answer(&mut second).await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(busy.to_ascii_lowercase().contains("retry-after: 1"), "{busy}");
    assert!(busy.contains("\"busy\""), "{busy}");
    // Small requests still fit beside it.
    n.client.model("digits").await.unwrap();

    first.write_all(&body[1000..]).await.unwrap();
    let ok = read_answer(&mut first).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // Released: the same request now goes through.
    let mut again = start_post(&addr, "/v1/infer", body.len(), &body).await;
    let ok = read_answer(&mut again).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_tensor_body_is_refused_at_the_shapes_element_count() {
    let n = TestNode::start().await;
    // 40 MiB of zeros for digits' 64-element input.
    let mut body = br#"{"model":"digits","inputs":{"pixels":{"dtype":"float32","shape":[1,64],"data":["#.to_vec();
    body.extend(std::iter::repeat_n(b"0,".as_slice(), 20 << 20).flatten());
    body.extend(b"0]}}}");
    let started = Instant::now();
    let r = reqwest::Client::new().post(format!("{}/v1/infer", n.node.url())).header("content-type", "application/json").body(body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");
    assert!(v["error"]["message"].as_str().unwrap().contains("too many elements (more than 64)"), "{v}");
    eprintln!("refused in {:?}", started.elapsed());
    // numpy's nested .tolist() form is taken as it is.
    let sample = digits_sample();
    let flat = sample.values().next().unwrap().as_f32().unwrap();
    let name = sample.keys().next().unwrap().clone();
    let nested = serde_json::json!({"model": "digits", "inputs": {name: {"dtype": "float32", "shape": [1, 64], "data": [flat]}}});
    let r = reqwest::Client::new().post(format!("{}/v1/infer", n.node.url())).json(&nested).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_expands_when_compiled_is_refused_at_publish() {
    let n = TestNode::start().await;
    let bytes = std::fs::read(crate::helpers::repo_root().join("fixtures/bombs/constant_of_shape.onnx")).unwrap();
    let key = alloy_signer_local::PrivateKeySigner::random();
    let meta = crate::helpers::signed("bomb", "1.0.0", &bytes, &key);
    match n.client.publish_bytes(&meta, bytes).await {
        Err(verinet_client::ClientError::Api { status: 422, code, message, .. }) => {
            assert_eq!(code, "invalid_model");
            // tract counts the folded constant (256 MiB); onnxruntime's session shows it in the
            // heap it allocates from, which is the process's: other tests' runs freeing memory
            // meanwhile can take a MiB or so off the reading.
            assert!(message.contains("allows 64 MiB"), "{message}");
            let held: usize = message.split(" holds ").nth(1).and_then(|m| m.split(" MiB").next()?.parse().ok()).unwrap();
            assert!(held >= 240, "{message}");
        }
        other => panic!("the expansion bomb must be refused, got {other:?}"),
    }
    assert!(n.client.model("bomb").await.is_err(), "nothing was published");
}
