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
    let args = cli::Cli::parse();
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
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
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
