//! The CLI as a user runs it: `verinet up` in one process, client commands in others.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verinet"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `verinet up` on a free port; returns the child and the URL it printed.
fn up(data: &Path) -> (Child, String) {
    let (child, url, _) = up_with(data, |_| {});
    (child, url)
}

/// `verinet up` on a free port with `tweak` applied to the command; returns the child, the URL
/// and the second line it printed (data dir, storage, backend, node).
fn up_with(data: &Path, tweak: impl FnOnce(&mut Command)) -> (Child, String, String) {
    let mut cmd = bin();
    cmd.args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data).stdout(Stdio::piped()).stderr(Stdio::null());
    tweak(&mut cmd);
    let mut child = cmd.spawn().expect("spawn verinet up");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a first line").expect("utf8");
    let url = first.strip_prefix("verinet node up at ").unwrap_or_else(|| panic!("unexpected first line {first:?}")).to_owned();
    let second = lines.next().expect("a second line").expect("utf8");
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url, second)
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

fn stop(mut child: Child) {
    // SIGTERM: graceful shutdown must end the process with success.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "node exited with {exit:?} after SIGTERM");
}

#[test]
fn up_infer_push_ls_show() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = up(&tmp.path().join("data"));

    // The quick-start call: the bundled model gives onnxruntime's class for the sample.
    let sample = root().join("fixtures/digits/sample.json");
    let out = run(bin().args(["infer", "digits", "--json", "--node", &url, "--input"]).arg(&sample));
    let resp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("fixtures/digits/reference.json")).unwrap()).unwrap();
    assert_eq!(resp["outputs"]["label"]["data"], reference["cases"][0]["outputs"]["label"]["data"]);
    // The saved response's receipt checks offline; a tampered one does not.
    let saved = tmp.path().join("response.json");
    std::fs::write(&saved, &out.stdout).unwrap();
    let text = String::from_utf8(run(bin().args(["receipt", "verify"]).arg(&saved)).stdout).unwrap();
    assert!(text.starts_with("valid receipt signed by"), "{text}");
    assert!(text.contains("✓ output_hash") && text.contains("the input hash"), "{text}");
    // With the inputs beside the outputs, both hashes are recomputed; an edited output or
    // input fails although the signature still holds.
    let mut with_inputs = resp.clone();
    with_inputs["inputs"] = serde_json::from_str(&std::fs::read_to_string(&sample).unwrap()).unwrap();
    std::fs::write(&saved, serde_json::to_vec(&with_inputs).unwrap()).unwrap();
    let text = String::from_utf8(run(bin().args(["receipt", "verify"]).arg(&saved)).stdout).unwrap();
    assert!(text.contains("✓ input_hash"), "{text}");
    for (path, edit) in [("outputs", "label"), ("inputs", "")] {
        let mut edited = with_inputs.clone();
        let tensors = edited[path].as_object_mut().unwrap();
        let name = if edit.is_empty() { tensors.keys().next().unwrap().clone() } else { edit.to_owned() };
        let data = tensors.get_mut(&name).unwrap()["data"].as_array_mut().unwrap();
        let first = data[0].as_f64().unwrap();
        data[0] = serde_json::json!(first + 1.0);
        std::fs::write(&saved, serde_json::to_vec(&edited).unwrap()).unwrap();
        let bad = bin().args(["receipt", "verify"]).arg(&saved).output().unwrap();
        assert_eq!(bad.status.code(), Some(1), "an edited {path} must fail");
        let err = String::from_utf8_lossy(&bad.stderr);
        let want = if path == "outputs" { "output_hash" } else { "input_hash" };
        assert!(err.contains("INVALID") && err.contains(want), "{err}");
    }
    let mut tampered = resp.clone();
    tampered["receipt"]["receipt"]["price"] = serde_json::json!("1");
    std::fs::write(&saved, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let bad = bin().args(["receipt", "verify"]).arg(&saved).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("INVALID"));
    // The table form names the class too.
    let out = run(bin().args(["infer", "digits", "--node", &url, "--input"]).arg(&sample));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("digits@1.0.0") && text.contains("label"), "{text}");

    // Wallet, then publish with it, then find it.
    let wallet = tmp.path().join("wallet.key");
    let out = run(bin().args(["wallet", "new", "--wallet"]).arg(&wallet));
    let address = String::from_utf8(out.stdout).unwrap().lines().next().unwrap().trim_start_matches("address ").to_owned();
    assert!(bin().args(["wallet", "new", "--wallet"]).arg(&wallet).output().unwrap().status.code() == Some(1), "never overwrites a key");
    // The bundled bytes belong to the node (a content hash has one owner): push a copy with an
    // ONNX doc_string appended (field 6 of ModelProto; the model is the same).
    let model = tmp.path().join("mine.onnx");
    let mut bytes = std::fs::read(root().join("models/digits-mlp.onnx")).unwrap();
    let doc = b"a cli copy";
    bytes.extend_from_slice(&[0x32, doc.len() as u8]);
    bytes.extend_from_slice(doc);
    std::fs::write(&model, &bytes).unwrap();
    let out = run(bin()
        .args(["model", "push", "--json", "--name", "mine", "--version", "0.1.0", "--tag", "cli", "--node", &url, "--wallet"])
        .arg(&wallet)
        .arg(&model));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["owner"].as_str().unwrap().to_lowercase(), address.to_lowercase());
    let out = run(bin().args(["model", "ls", "--json", "--tag", "cli", "--node", &url]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["models"][0]["name"], "mine");
    let out = run(bin().args(["model", "show", "mine@0.1.0", "--node", &url]));
    assert!(String::from_utf8(out.stdout).unwrap().contains("pixels: float32[batch, 64]"));

    // Errors are a clean failure with the node's code, not a panic.
    let out = bin().args(["infer", "nope", "--node", &url, "--input", "{}"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));

    stop(node);
}

/// `up` with an operator fee; the wallet pays with `infer --pay` after `faucet`. Amounts a
/// person types and reads are tokens (`0.25 vUSD`); `--json` keeps the API's base units.
#[test]
fn faucet_pay_balance_and_apps() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("verinet.toml");
    // 0.25 tokens of 18 decimals.
    std::fs::write(&config, "[payments]\noperator_fee = \"250000000000000000\"\n").unwrap();
    let mut child = bin()
        .args(["up", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap().strip_prefix("verinet node up at ").unwrap().to_owned();
    std::thread::spawn(move || for _ in lines {});

    let wallet = tmp.path().join("wallet.key");
    run(bin().args(["wallet", "new", "--wallet"]).arg(&wallet));
    let with = |cmd: &mut Command| -> String {
        let out = run(cmd.args(["--node", &url, "--wallet"]).arg(&wallet));
        String::from_utf8(out.stdout).unwrap()
    };
    let sample = root().join("fixtures/digits/sample.json");

    // Unpaid: a clean failure that says how to pay.
    let out = bin().args(["infer", "digits", "--node", &url, "--input"]).arg(&sample).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0.25 tokens") && err.contains("--pay"), "{err}");

    // Base units are what --amount refuses: more decimals than the token has.
    let out = bin().args(["faucet", "--amount", "0.0000000000000000001", "--node", &url, "--wallet"]).arg(&wallet).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses a malformed amount");
    let text = with(bin().args(["faucet", "--amount", "1.5"]));
    assert!(text.contains("minted 1.5 vUSD") && text.contains("available  1.5 vUSD"), "{text}");
    let text = with(bin().args(["infer", "digits", "--pay", "--input"]).arg(&sample));
    assert!(text.contains("price 0.25 vUSD") && text.contains("paid 0.25 vUSD") && text.contains("label"), "{text}");
    let balance: serde_json::Value = serde_json::from_str(&with(bin().args(["wallet", "balance", "--json"]))).unwrap();
    assert_eq!((balance["balance"].as_str(), balance["escrow"].as_str()), (Some("1250000000000000000"), Some("0")));
    let text = with(bin().args(["wallet", "balance"]));
    assert!(text.contains("available  1.25 vUSD") && text.contains("escrow     0 vUSD"), "{text}");

    // An app owned by the wallet earns its markup on the calls it tags.
    let text = with(bin().args(["app", "register", "chat", "--markup", "0.05"]));
    let id = text.split_whitespace().nth(1).unwrap().to_owned();
    assert!(id.starts_with("app-") && text.contains("markup   0.05 vUSD per call"), "{text}");
    // `app show` is a table like every other show; --json is the API's body.
    let shown = String::from_utf8(run(bin().args(["app", "show", &id, "--node", &url])).stdout).unwrap();
    assert!(shown.starts_with(&format!("app      {id}")) && shown.contains("name     chat"), "{shown}");
    let shown: serde_json::Value = serde_json::from_slice(&run(bin().args(["app", "show", &id, "--json", "--node", &url])).stdout).unwrap();
    assert_eq!(shown["markup"], "50000000000000000");
    with(bin().args(["infer", "digits", "--pay", "--app", &id, "--input"]).arg(&sample));
    let balance: serde_json::Value = serde_json::from_str(&with(bin().args(["wallet", "balance", "--json"]))).unwrap();
    // Paid 0.3 (0.25 + 0.05 markup), earned the 0.05 back as the app owner.
    assert_eq!(balance["balance"].as_str(), Some("1000000000000000000"));
    assert_eq!(balance["earnings"]["app"].as_str(), Some("50000000000000000"));
    let text = with(bin().args(["wallet", "balance"]));
    assert!(text.contains("earned     0.05 vUSD as app") && text.contains("spent      0.55 vUSD"), "{text}");
    // `app ls` lists the wallet's apps.
    let listed = with(bin().args(["app", "ls"]));
    assert!(listed.lines().count() == 2 && listed.contains(&id) && listed.contains("0.05 vUSD"), "{listed}");
    // `wallet transfer` sends tokens, signed by the wallet.
    let friend = tmp.path().join("friend.key");
    let to = String::from_utf8(run(bin().args(["wallet", "new", "--wallet"]).arg(&friend)).stdout).unwrap();
    let to = to.split_whitespace().find(|w| w.starts_with("0x")).unwrap().to_owned();
    let text = with(bin().args(["wallet", "transfer", "--to", &to, "--amount", "0.4"]));
    assert!(text.contains("sent 0.4 vUSD") && text.contains("available  0.6 vUSD"), "{text}");
    let theirs = String::from_utf8(run(bin().args(["wallet", "balance", "--node", &url, "--wallet"]).arg(&friend)).stdout).unwrap();
    assert!(theirs.contains("available  0.4 vUSD"), "{theirs}");

    // A session: a budget signed once, then calls paid by its bearer token.
    let s: serde_json::Value = serde_json::from_str(&with(bin().args(["session", "create", "--budget", "0.5", "--model", "digits", "--json"]))).unwrap();
    assert_eq!(s["max_total"], "500000000000000000");
    let token = s["token"].as_str().unwrap();
    let body = serde_json::json!({"model": "digits", "inputs": serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&sample).unwrap()).unwrap()});
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let paid: serde_json::Value = rt.block_on(async {
        reqwest::Client::new().post(format!("{url}/v1/infer")).bearer_auth(token).json(&body).send().await.unwrap().json().await.unwrap()
    });
    assert_eq!(paid["payment"]["method"], "session", "{paid}");
    stop(child);
}

/// A data dir is one node's: a second `up` on it exits at once with a clear error (before it
/// could recover the live node's escrows), and the file's `[storage] data_dir` is used when
/// `--data-dir` is not given.
#[test]
fn a_held_data_dir_is_refused_and_the_config_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("from-config");
    let config = tmp.path().join("verinet.toml");
    std::fs::write(&config, format!("[storage]\ndata_dir = {:?}\n", data.display().to_string())).unwrap();
    let mut child = bin()
        .current_dir(tmp.path())
        .args(["up", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env_remove("VERINET_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("verinet node up at "), "{first}");
    std::thread::spawn(move || for _ in lines {});
    assert!(data.join("verinet.db").exists(), "the config's data dir is used");
    assert!(!tmp.path().join(".verinet").exists(), "not the flag's default");

    let second = bin().args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data).output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another verinet process") && err.contains(&format!("pid {}", child.id())), "{err}");
    stop(child);

    // Released when the node stops: the same dir serves again.
    let (again, _) = up(&data);
    stop(again);
}

/// The backend line `verinet up` prints with `ORT_DYLIB_PATH` unset and `PATH` as given.
fn chosen_backend(path: &std::ffi::OsStr) -> String {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (child, _, second) = up_with(&tmp.path().join("data"), |cmd| {
        cmd.env_remove("ORT_DYLIB_PATH").env("PATH", path);
    });
    stop(child);
    let backend = second.split("backend ").nth(1).and_then(|s| s.split_whitespace().next());
    backend.unwrap_or_else(|| panic!("no backend in {second:?}")).to_owned()
}

#[test]
fn auto_backend_finds_pip_onnxruntime_and_falls_back_to_tract() {
    // The test command's venv has `pip install onnxruntime`: its python3 leads to the library.
    let python = std::env::var_os("VERINET_TEST_PYTHON")
        .unwrap_or_else(|| panic!("VERINET_TEST_PYTHON is not set: run the README test command (scripts/test.sh)"));
    let venv_bin = Path::new(&python).parent().unwrap().to_path_buf();
    let path = std::env::join_paths([venv_bin, PathBuf::from("/usr/bin"), PathBuf::from("/bin")]).unwrap();
    assert_eq!(chosen_backend(&path), "onnxruntime");
    // No ORT_DYLIB_PATH, no python3 at all: tract, and the node still serves.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(chosen_backend(empty.path().as_os_str()), "tract");
}

/// The log an operator reads: no line per call at the default level, one summary per interval
/// with what was served; `access_log` adds the line per call back.
#[test]
fn up_logs_a_traffic_summary_not_a_line_per_call() {
    for access_log in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("node.toml");
        std::fs::write(&config, format!("[server]\nlog_summary_secs = 1\naccess_log = {access_log}\n")).unwrap();
        let log = tmp.path().join("node.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let (node, url, _) = up_with(&tmp.path().join("data"), |c| {
            c.arg("--config").arg(&config).env_remove("VERINET_LOG").stderr(stderr);
        });
        let sample = root().join("fixtures/digits/sample.json");
        for _ in 0..2 {
            run(bin().args(["infer", "digits", "--json", "--node", &url, "--input"]).arg(&sample));
        }
        let out = bin().args(["infer", "nope", "--node", &url, "--input", "{}"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        // The summary of the interval holding the three calls (the calls may straddle two).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let (mut requests, mut client_errors) = (0, 0);
        while std::time::Instant::now() < deadline && requests < 3 {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let text = std::fs::read_to_string(&log).unwrap();
            let summaries: Vec<&str> = text.lines().filter(|l| l.contains("traffic in the last 1s")).collect();
            let field = |l: &str, k: &str| -> u64 {
                l.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).map_or(0, |v| v.parse().unwrap())
            };
            requests = summaries.iter().map(|l| field(l, "requests")).sum();
            client_errors = summaries.iter().map(|l| field(l, "client_errors")).sum();
        }
        assert_eq!((requests, client_errors), (3, 1), "summaries in:\n{}", std::fs::read_to_string(&log).unwrap());
        let text = std::fs::read_to_string(&log).unwrap();
        let per_call = text.lines().filter(|l| l.contains("verinet::access")).count();
        assert_eq!(per_call, if access_log { 3 } else { 0 }, "access_log = {access_log}:\n{text}");
        stop(node);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// The faults a new user hit (issue 16), each as they met it.
#[test]
fn client_commands_fail_cleanly_and_take_the_forms_users_type() {
    let tmp = tempfile::tempdir().unwrap();
    let (node, url) = up(&tmp.path().join("data"));
    let bare = url.trim_start_matches("http://").to_owned();
    let sample = root().join("fixtures/digits/sample.json");

    // `--node 127.0.0.1:PORT`, the form `--listen` takes, is that node (was "relative URL
    // without a base").
    let out = run(bin().args(["model", "show", "digits", "--node", &bare]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("digits@1.0.0"));

    // Output into a closed pipe (`| head -1`) ends quietly (was a panic, exit 101).
    let mut child = bin().args(["model", "show", "digits", "--node", &url]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && out.status.code() != Some(101), "{:?} {err}", out.status);

    // No node there: one line that says so and how to start one (was the error twice).
    let dead = format!("127.0.0.1:{}", free_port());
    let out = bin().args(["infer", "digits", "--node", &dead, "--input"]).arg(&sample).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("cannot reach a node at").count(), 1, "{err}");
    assert!(err.contains(&format!("http://{dead}")) && err.contains("verinet up") && err.lines().count() == 1, "{err}");
    // With --json the error is JSON where the answer would have been.
    let out = bin().args(["model", "ls", "--json", "--node", &dead]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error on stdout");
    assert_eq!(v["error"]["code"], "unreachable");
    let out = bin().args(["infer", "nope", "--json", "--node", &url, "--input", "{}"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error on stdout");
    assert_eq!((v["error"]["code"].as_str(), v["error"]["status"].as_u64()), (Some("not_found"), Some(404)));

    // Inputs from stdin, as numpy's tolist() writes them (a bare nested list).
    let pixels: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sample).unwrap()).unwrap();
    let nested = serde_json::json!({"pixels": [pixels["pixels"]["data"]]});
    let mut child = bin()
        .args(["infer", "digits", "--json", "--node", &url, "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), nested.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_stdin: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let from_file: serde_json::Value = serde_json::from_slice(&run(bin().args(["infer", "digits", "--json", "--node", &url, "--input"]).arg(&sample)).stdout).unwrap();
    assert_eq!(from_stdin["outputs"], from_file["outputs"]);

    // `--verification sampled` reaches the node's validator.
    let out = run(bin().args(["infer", "digits", "--verification", "sampled", "--sample-rate", "1", "--json", "--node", &url, "--input"]).arg(&sample));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["verification"].as_str(), v["check"]["status"].as_str()), (Some("sampled"), Some("passed")), "{v}");

    // A new version keeps the last one's tags, description and price unless told otherwise,
    // and `model show` lists every version with usage over all of them.
    let wallet = tmp.path().join("wallet.key");
    run(bin().args(["wallet", "new", "--wallet"]).arg(&wallet));
    let model = tmp.path().join("mine.onnx");
    let mut bytes = std::fs::read(root().join("models/digits-mlp.onnx")).unwrap();
    for (doc, version, extra) in [(&b"cli copy one"[..], "0.1.0", vec!["--tag", "cli", "--description", "digits again", "--price", "0"]), (&b"cli copy two"[..], "0.2.0", vec![])] {
        let mut b = bytes.clone();
        b.extend_from_slice(&[0x32, doc.len() as u8]);
        b.extend_from_slice(doc);
        std::fs::write(&model, &b).unwrap();
        run(bin().args(["model", "push", "--name", "mine", "--version", version, "--node", &url, "--wallet"]).arg(&wallet).args(&extra).arg(&model));
    }
    bytes.clear();
    let list: serde_json::Value = serde_json::from_slice(&run(bin().args(["model", "ls", "--json", "--tag", "cli", "--node", &url])).stdout).unwrap();
    assert_eq!((list["models"][0]["name"].as_str(), list["models"][0]["latest_version"].as_str()), (Some("mine"), Some("0.2.0")), "{list}");
    run(bin().args(["infer", "mine@0.1.0", "--node", &url, "--input"]).arg(&sample));
    run(bin().args(["infer", "mine", "--node", &url, "--input"]).arg(&sample));
    let shown = String::from_utf8(run(bin().args(["model", "show", "mine", "--node", &url])).stdout).unwrap();
    assert!(shown.contains("versions 0.2.0, 0.1.0") && shown.contains("all      2 calls") && shown.contains("about    digits again"), "{shown}");
    // `model pull` saves the exact bytes.
    let pulled = tmp.path().join("pulled.onnx");
    run(bin().args(["model", "pull", "mine@0.1.0", "--node", &url, "--output"]).arg(&pulled));
    assert!(std::fs::read(&pulled).unwrap().ends_with(b"cli copy one"));

    // A browser opening the node's root gets the dashboard; the API's document is there.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let r = no_redirect.get(format!("{url}/")).header("accept", "text/html,application/xhtml+xml").send().await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (303, "/dashboard"));
        let links: serde_json::Value = no_redirect.get(format!("{url}/")).send().await.unwrap().json().await.unwrap();
        assert_eq!(links["openapi"], "/openapi.json");
        let docs = no_redirect.get(format!("{url}/docs")).send().await.unwrap().text().await.unwrap();
        assert!(docs.contains("/openapi.json"));
    });
    stop(node);
}

/// `devnet` ports can be pinned, and its "try:" line runs as printed.
#[test]
fn devnet_ports_can_be_pinned_and_its_try_line_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (gateway_port, first) = (free_port(), free_port());
    let mut child = bin()
        .args(["devnet", "--workers", "1", "--validators", "0", "--heartbeat-ms", "200", "--port", &first.to_string(), "--dir"])
        .arg(tmp.path().join("net"))
        .arg(format!("--gateway-arg=--listen=127.0.0.1:{gateway_port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let try_line = loop {
        match lines.next() {
            Some(Ok(l)) if l.trim_start().starts_with("try: ") => break l.trim_start().trim_start_matches("try: ").to_owned(),
            Some(Ok(l)) => seen.push(l),
            _ => {
                let _ = child.kill();
                let err = child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
                panic!("devnet ended before ready:\n{}\n{err}", seen.join("\n"));
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let gateway = format!("http://127.0.0.1:{gateway_port}");
    assert!(try_line.contains(&format!("--node {gateway}")) && try_line.contains("\"pixels\""), "{try_line}");
    let status = String::from_utf8(run(bin().args(["devnet", "status", "--json", "--dir"]).arg(tmp.path().join("net"))).stdout).unwrap();
    assert!(status.contains(&format!("127.0.0.1:{first}")), "the worker takes the first --port: {status}");
    // Run the line as a shell would.
    let out = run(Command::new("sh").arg("-c").arg(try_line.replacen("verinet", &format!("'{}'", env!("CARGO_BIN_EXE_verinet")), 1)));
    assert!(String::from_utf8_lossy(&out.stdout).contains("label"));
    stop(child);
}
