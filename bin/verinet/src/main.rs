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
