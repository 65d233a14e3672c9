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

/// The error and its causes joined by `: `, each once (libraries keep a cause as `source()`,
/// not in their message).
fn report(err: &anyhow::Error) -> String {
    treasury_signer::error_chain(err.as_ref())
}
