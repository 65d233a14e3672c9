//! The `treasury` binary: the command tree over the agent's engine, the signer nodes, the root
//! service, the policies and the local devnet.
// A binary has no public API: `pub` marks what a module offers the rest of the command tree.
#![allow(unreachable_pub)]

use clap::Parser;

mod cli;
mod cmd;
mod dev;
mod prompt;

/// Exit codes: 0 success, 1 runtime failure, 2 usage error, 78 configuration error.
fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { cmd::EXIT_USAGE } else { 0 });
        }
    };
    treasury_agent::logging::init_with(cli.verbose, cli.command.is_service(), cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(cmd::EXIT_RUNTIME);
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", report(&err));
            std::process::ExitCode::from(exit_code(&err))
        }
    }
}

/// The exit code an error ends the process with.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<cmd::ConfigProblem>().is_some() { cmd::EXIT_CONFIG } else { cmd::EXIT_RUNTIME }
}

/// The error and its causes joined by `: `, each once (libraries keep a cause as `source()`,
/// not in their message).
fn report(err: &anyhow::Error) -> String {
    treasury_signer::error_chain(err.as_ref())
}
