//! `treasury signer …`.
use clap::Subcommand;

/// `treasury signer` subcommands.
#[derive(Debug, Subcommand)]
pub enum SignerCmd {
    /// Not built yet.
    Placeholder,
}

impl SignerCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        anyhow::bail!("treasury signer is not built yet")
    }
}
