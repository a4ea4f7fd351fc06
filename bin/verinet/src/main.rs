//! `verinet`: run a node, manage a wallet, publish models, run inference, chat and embed.
//!
//! main only parses arguments, sets up tracing and hands off to a command module.

mod chat;
mod cli;
mod devnet;
mod fetch;
mod flywheel;
mod infer;
mod model;
mod money;
mod output;
mod receipt;
mod simulate;
mod up;
mod wallet;

use clap::Parser;

fn main() -> std::process::ExitCode {
    pin_thread_count();
    restore_sigpipe();
    let args = cli::Cli::parse();
    // A command asked for JSON output: its errors are JSON too.
    let json = std::env::args().any(|a| a == "--json");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VERINET_LOG").unwrap_or_else(|_| args.default_log_filter().into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            report(&e, json);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints a failed command's error once, in words a user can act on: a node that cannot be
/// reached says so and how to start one; a node's refusal shows its code. With `--json` the
/// error is `{"error": {"code", "message", "status"?}}` on stdout, where the answer would have
/// been.
fn report(e: &anyhow::Error, json: bool) {
    if let Some(shown) = e.downcast_ref::<Shown>() {
        // The answer (a failed verdict) is already on stdout, as JSON when asked.
        eprintln!("error: {}", shown.0);
        return;
    }
    let client = e.chain().find_map(|c| c.downcast_ref::<verinet_client::ClientError>());
    let (code, message, status) = match client {
        Some(verinet_client::ClientError::Api { status, code, message }) => (code.clone(), message.clone(), Some(*status)),
        Some(verinet_client::ClientError::Http(h)) if h.is_connect() || h.is_timeout() => {
            let at = h.url().map(|u| format!("{}://{}", u.scheme(), u.authority())).unwrap_or_else(|| "the node".into());
            let why = if h.is_timeout() { "timed out" } else { "connection refused" };
            (
                "unreachable".to_owned(),
                format!("cannot reach a node at {at} ({why}). Is one running? Start one with `verinet up`, or point at another with --node URL (or VERINET_NODE)."),
                None,
            )
        }
        _ => ("error".to_owned(), format!("{e:#}"), None),
    };
    if json {
        let mut body = serde_json::json!({"error": {"code": code, "message": message}});
        if let Some(s) = status {
            body["error"]["status"] = s.into();
        }
        println!("{body}");
    } else if let Some(s) = status {
        // The context a command added (what it was doing), then the node's word.
        let context: Vec<String> = e.chain().take_while(|c| c.downcast_ref::<verinet_client::ClientError>().is_none()).map(|c| c.to_string()).collect();
        let prefix = if context.is_empty() { String::new() } else { format!("{}: ", context.join(": ")) };
        eprintln!("error: {prefix}{s} {code}: {message}");
    } else {
        eprintln!("error: {message}");
    }
}

/// A failure whose answer the command has already printed (a verdict that does not hold): the
/// exit code says it failed, and nothing more goes to stdout.
#[derive(Debug)]
pub(crate) struct Shown(pub String);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Shown {}

/// Rust ignores SIGPIPE, so writing to a closed pipe (`verinet model show x | head -1`) is an
/// error every `println!` turns into a panic. The default action ends the process quietly,
/// as `cat` does.
#[allow(unsafe_code, reason = "one libc call before any thread exists")]
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to its default is async-signal-safe and done
    // before other threads start.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// candle 0.11 works out its thread count on every matmul, and without `RAYON_NUM_THREADS` that
/// means reading `/proc/cpuinfo` each time: 8,640 file opens for one 32-token completion, and
/// decoding ~1.4x slower (measured, BENCHMARKS.md). Fixed once here, before any thread exists;
/// an operator's own setting wins.
#[allow(unsafe_code, reason = "set_var before any other thread is started")]
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        // SAFETY: first statement of main; no other thread runs yet, so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}
