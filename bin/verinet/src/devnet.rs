//! `verinet devnet`: a multi-process network on 127.0.0.1, and `devnet status`.
//!
//! Every process is this binary's `up` with a role: gateways first (the first publishes the
//! bundled models; several share the PostgreSQL at --database-url and one blob directory), then
//! workers and validators joining every gateway. What runs is written to `<dir>/devnet.json`;
//! logs go to `<dir>/<name>.log`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::{DevnetArgs, DevnetCmd, DevnetStatusArgs};

/// One process of the devnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proc {
    /// `gateway-0`, `worker-1`, ...
    pub name: String,
    /// gateway, worker or validator.
    pub role: String,
    /// Its base URL.
    pub url: String,
    /// Its process id.
    pub pid: u32,
}

/// `<dir>/devnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevnetFile {
    /// The devnet process.
    pub pid: u32,
    /// Shared database, if any.
    pub database_url: Option<String>,
    /// Every process, gateways first.
    pub procs: Vec<Proc>,
}

pub async fn run(a: DevnetArgs) -> anyhow::Result<()> {
    match a.command {
        Some(DevnetCmd::Status(s)) => status(s).await,
        None => start(a).await,
    }
}

async fn start(a: DevnetArgs) -> anyhow::Result<()> {
    if a.gateways == 0 {
        bail!("a devnet needs at least one gateway");
    }
    if a.gateways > 1 && a.database_url.is_none() {
        bail!("several gateways share their state through PostgreSQL: pass --database-url postgres://...");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let exe = std::env::current_exe().context("locating the verinet binary")?;
    let mut children = Children(Vec::new());
    let mut procs = Vec::new();
    let hb = a.heartbeat_ms.max(10).to_string();
    // Ports: from --port on, one per process in start order (gateways first); else any free
    // one. A gateway's own `--gateway-arg=--listen=...` wins over both.
    let mut next_port = a.port;
    let mut listen = || match next_port {
        Some(p) => {
            next_port = Some(p.saturating_add(1));
            format!("127.0.0.1:{p}")
        }
        None => "127.0.0.1:0".to_owned(),
    };
    let gateway_listens = a.gateway_args.iter().any(|x| x == "--listen" || x.starts_with("--listen="));
    let timeout = (a.heartbeat_ms.max(10) * 3).to_string();

    for i in 0..a.gateways {
        let name = format!("gateway-{i}");
        let mut args = vec!["--role".into(), "gateway".into(), "--heartbeat-timeout-ms".into(), timeout.clone()];
        args.extend(["--blobs-dir".into(), a.dir.join("blobs").display().to_string()]);
        if let Some(db) = &a.database_url {
            args.extend(["--database-url".into(), db.clone()]);
        }
        if i > 0 {
            // The first gateway published them into the shared database and blobs.
            args.push("--no-bundled".into());
        }
        args.extend(a.gateway_args.iter().cloned());
        // A gateway told where to listen takes no port from the range.
        let port = (!gateway_listens).then(&mut listen);
        let (child, url) = spawn(&exe, &a, &name, port.as_deref(), &args)?;
        procs.push(Proc { name, role: "gateway".into(), url, pid: child.id() });
        children.0.push(child);
    }
    let gateways: Vec<String> = procs.iter().map(|p| p.url.clone()).collect();
    let mut executors = Vec::new();
    for (role, n) in [("worker", a.workers), ("validator", a.validators)] {
        for i in 0..n {
            let name = format!("{role}-{i}");
            let mut args = vec!["--role".into(), role.into(), "--heartbeat-ms".into(), hb.clone()];
            for g in &gateways {
                args.extend(["--gateway".into(), g.clone()]);
            }
            executors.push((name, role, listen(), args));
        }
    }
    let shutdown = crate::up::shutdown_signal();
    for (name, role, port, args) in executors {
        let (child, url) = spawn(&exe, &a, &name, Some(&port), &args)?;
        procs.push(Proc { name, role: role.into(), url, pid: child.id() });
        children.0.push(child);
    }
    let file = DevnetFile { pid: std::process::id(), database_url: a.database_url.clone(), procs };
    std::fs::write(a.dir.join("devnet.json"), serde_json::to_vec_pretty(&file)?)?;

    wait_until_routed(&file, a.workers + a.validators, Duration::from_secs(120)).await?;
    print_status(&file).await;
    println!("\ndevnet ready: {} gateway(s), {} worker(s), {} validator(s)", a.gateways, a.workers, a.validators);
    let sample: serde_json::Value = serde_json::from_str(crate::up::SAMPLE)?;
    println!("  try: verinet infer digits --node {} --input '{}'", gateways[0], serde_json::to_string(&sample)?);
    println!("  verinet devnet status --dir {}\n\nCtrl-C stops every process.", a.dir.display());
    let _ = std::io::stdout().flush();

    // A process that dies stays dead (the network routes around it) until the devnet stops.
    tokio::select! {
        _ = shutdown => {}
        _ = watch(&mut children, &file) => {}
    }
    children.stop();
    let _ = std::fs::remove_file(a.dir.join("devnet.json"));
    Ok(())
}

/// Starts `verinet up <args>` as `name` (on `listen`, unless its args name one), logging to
/// `<dir>/<name>.log`; returns it with the URL it printed.
fn spawn(exe: &Path, a: &DevnetArgs, name: &str, listen: Option<&str>, args: &[String]) -> anyhow::Result<(Child, String)> {
    let data = a.dir.join(name);
    let log_path = a.dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(exe);
    cmd.arg("up").arg("--data-dir").arg(&data);
    if let Some(l) = listen {
        cmd.arg("--listen").arg(l);
    }
    cmd.args(args);
    if let Some(b) = &a.backend {
        cmd.arg("--backend").arg(b);
    }
    let mut child = cmd
        .env_remove("VERINET_DATABASE_URL")
        .env_remove("VERINET_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.try_clone()?))
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut log_out = log;
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                let _ = writeln!(log_out, "{line}");
                if let Some(url) = line.split(" up at ").nth(1) {
                    break url.trim().to_owned();
                }
            }
            _ => {
                let _ = child.kill();
                bail!("{name} exited before serving; see {}", log_path.display());
            }
        }
    };
    // Keep draining its stdout into the log so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log_out, "{line}");
        }
    });
    Ok((child, url))
}

/// The devnet's children; stopped (SIGTERM, then SIGKILL) when dropped.
struct Children(Vec<Child>);

impl Children {
    fn stop(&mut self) {
        // Executors first, then gateways, so no gateway loses a worker mid-request on the way down.
        for c in self.0.iter_mut().rev() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in self.0.iter_mut() {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reports each child that exits, once; never resolves.
async fn watch(children: &mut Children, file: &DevnetFile) {
    let mut reported = std::collections::HashSet::new();
    loop {
        for c in children.0.iter_mut() {
            if let Ok(Some(st)) = c.try_wait()
                && reported.insert(c.id())
            {
                let name = file.procs.iter().find(|p| p.pid == c.id()).map_or("?", |p| p.name.as_str());
                println!("{name} (pid {}) exited: {st}", c.id());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every gateway routes to `n` live nodes in good standing.
async fn wait_until_routed(file: &DevnetFile, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for g in file.procs.iter().filter(|p| p.role == "gateway") {
        loop {
            let active = nodes(&g.url).await.map(|v| active_remote(&v).len()).unwrap_or(0);
            if active >= n {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} routes to {active} of {n} nodes after {timeout:?}; see the logs", g.name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn nodes(gateway: &str) -> anyhow::Result<Value> {
    Ok(verinet_client::Client::new(gateway.to_owned()).get_json("/v1/nodes").await?)
}

/// Addresses of remote nodes the gateway's `/v1/nodes` shows active.
fn active_remote(nodes: &Value) -> Vec<String> {
    nodes["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["endpoint"].is_string() && n["active"] == true)
        .filter_map(|n| n["address"].as_str().map(str::to_lowercase))
        .collect()
}

async fn status(a: DevnetStatusArgs) -> anyhow::Result<()> {
    let path = a.dir.join("devnet.json");
    let file: DevnetFile = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("no devnet at {} (start one with `verinet devnet`)", a.dir.display()))?,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&status_json(&file).await)?);
    } else {
        print_status(&file).await;
    }
    Ok(())
}

/// Each process with whether it runs and answers, and for workers and validators, how many
/// gateways route to them.
async fn status_json(file: &DevnetFile) -> Value {
    // Each gateway's `/v1/nodes`, by URL: its answer also says it is up and who it is.
    let mut views = std::collections::HashMap::new();
    for g in file.procs.iter().filter(|p| p.role == "gateway") {
        views.insert(g.url.as_str(), nodes(&g.url).await.ok());
    }
    let gateways = views.len();
    let mut out = Vec::new();
    for p in &file.procs {
        let alive = pid_alive(p.pid);
        let (health, address) = if p.role == "gateway" {
            let view = views.get(p.url.as_str()).and_then(Option::as_ref);
            (view.is_some(), view.and_then(|v| v["gateway"].as_str().map(str::to_owned)))
        } else {
            let v = verinet_client::Client::new(p.url.clone()).get_json("/worker/v1/health").await.ok();
            (v.is_some(), v.and_then(|v| v["address"].as_str().map(str::to_owned)))
        };
        let mut row = serde_json::json!({
            "name": p.name, "role": p.role, "url": p.url, "pid": p.pid,
            "running": alive, "answering": health, "address": address,
        });
        if p.role != "gateway" {
            let me = address.as_deref().map(str::to_lowercase);
            let mut routed = 0;
            let mut served = 0u64;
            let mut reputation = None;
            for v in views.values().flatten() {
                for n in v["nodes"].as_array().into_iter().flatten() {
                    if n["address"].as_str().map(str::to_lowercase) == me {
                        routed += usize::from(n["active"] == true);
                        served += n["stats"]["served"].as_u64().unwrap_or(0);
                        reputation = n["reputation"].as_f64().or(reputation);
                    }
                }
            }
            row["routed_by"] = serde_json::json!(format!("{routed}/{gateways}"));
            row["served"] = served.into();
            row["reputation"] = serde_json::json!(reputation);
        }
        out.push(row);
    }
    serde_json::json!({ "database_url": file.database_url, "procs": out })
}

async fn print_status(file: &DevnetFile) {
    let v = status_json(file).await;
    println!("{:<12} {:<10} {:<24} {:>7} {:<8} {:<44} {:>9} {:>7} {:>5}", "NAME", "ROLE", "URL", "PID", "STATE", "ADDRESS", "ROUTED BY", "SERVED", "REP");
    for p in v["procs"].as_array().into_iter().flatten() {
        let state = match (p["running"] == true, p["answering"] == true) {
            (_, true) => "up",
            (true, false) => "starting",
            (false, false) => "down",
        };
        println!(
            "{:<12} {:<10} {:<24} {:>7} {:<8} {:<44} {:>9} {:>7} {:>5}",
            p["name"].as_str().unwrap_or_default(),
            p["role"].as_str().unwrap_or_default(),
            p["url"].as_str().unwrap_or_default(),
            p["pid"],
            state,
            p["address"].as_str().unwrap_or("-"),
            p["routed_by"].as_str().unwrap_or("-"),
            p["served"].as_u64().map_or("-".into(), |n| n.to_string()),
            p["reputation"].as_f64().map_or("-".into(), |r| format!("{r:.2}")),
        );
    }
}

fn pid_alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
        || Command::new("kill").arg("-0").arg(pid.to_string()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}
