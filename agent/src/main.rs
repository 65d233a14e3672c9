//! The `treasury` binary: parses the command line, sets up logging and hands over to the library.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = treasury_agent::cli::Cli::parse();
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
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
