//! One module per `treasury` subcommand.
pub mod completions;
pub mod config;
pub mod dev;
pub mod dkg;
pub mod intents;
pub mod keeper;
pub mod module;
pub mod payments;
pub mod policy;
pub mod root;
pub mod run;
pub mod signer;
pub mod status;
pub mod trigger;

/// Marks an error as the configuration's: the process exits with [`EXIT_CONFIG`].
#[derive(Debug)]
pub struct ConfigProblem(pub String);

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Exit code of a runtime failure (the chain, a node, the journal, ...).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code of a usage error (clap's: an unknown flag, a missing argument).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a configuration that cannot be read or is invalid (sysexits' `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

/// The agent's config at `path`, a failure marked as the configuration's.
pub fn load_agent_config(path: &std::path::Path) -> anyhow::Result<treasury_agent::config::Config> {
    treasury_agent::config::Config::load(path)
        .map_err(anyhow::Error::new)
        .map_err(|e| e.context(ConfigProblem(format!("config {}", path.display()))))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (systemd's stop), naming which.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops gracefully");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
