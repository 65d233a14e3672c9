//! The `treasury` binary: the command tree over the agent's engine, the signer nodes, the root
//! service, the policies and the local devnet.
// A binary has no public API: `pub` marks what a module offers the rest of the command tree.
#![allow(unreachable_pub)]

use clap::Parser;

mod cli;
mod cmd;
mod dev;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    treasury_agent::logging::init(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, each cause once: a cause whose text the message
/// before it already carries (libraries' errors often name their source) is not repeated.
fn report(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
