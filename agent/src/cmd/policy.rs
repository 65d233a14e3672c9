//! `treasury policy …`.
use clap::Subcommand;

/// `treasury policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Not built yet.
    Placeholder,
}

impl PolicyCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        anyhow::bail!("treasury policy is not built yet")
    }
}
