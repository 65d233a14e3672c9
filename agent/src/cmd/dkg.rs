//! `treasury dkg`.
use clap::Args;

/// Arguments of `treasury dkg`.
#[derive(Debug, Args)]
pub struct DkgArgs {}

impl DkgArgs {
    /// Runs DKG.
    pub async fn run(self) -> anyhow::Result<()> {
        anyhow::bail!("treasury dkg is not built yet")
    }
}
