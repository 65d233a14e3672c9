//! `treasury root …`.
use clap::Subcommand;

/// `treasury root` subcommands.
#[derive(Debug, Subcommand)]
pub enum RootCmd {
    /// Not built yet.
    Placeholder,
}

impl RootCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        anyhow::bail!("treasury root is not built yet")
    }
}
