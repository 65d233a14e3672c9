//! `treasury dkg` and `treasury dkg refresh`.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use treasury_signer::quorum::QuorumError;
use treasury_signer::quorum::coordinator::{PinnedNode, activate_refresh, run_dkg, run_refresh};
use treasury_signer::quorum::quorum_file::QuorumFile;
use treasury_signer::quorum::store::{COORDINATOR_PASSPHRASE_ENV, open_coordinator_key};

/// Arguments of `treasury dkg`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DkgArgs {
    /// Refresh instead of a new key.
    #[command(subcommand)]
    action: Option<DkgAction>,
    /// Threshold t.
    #[arg(long)]
    threshold: Option<u16>,
    /// A node as `URL#FINGERPRINT` (fingerprint confirmed by its operator); repeat for every node.
    #[arg(long = "signer")]
    signers: Vec<String>,
    /// The coordinator key file (from `treasury signer coordinator-key`).
    #[arg(long)]
    coordinator_key: Option<PathBuf>,
    /// Quorum file to write.
    #[arg(long, default_value = "quorum.toml")]
    out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `treasury dkg` subcommands.
#[derive(Debug, Subcommand)]
enum DkgAction {
    /// Rotate every share; the group key stays. With `--activate`, finish an earlier refresh on
    /// the nodes that did not activate it.
    Refresh {
        /// Quorum file to refresh (updated in place).
        #[arg(long, default_value = "quorum.toml")]
        quorum: PathBuf,
        /// Only activate refresh REFRESH_ID (named by the refresh that could not) on the nodes
        /// the quorum file lists as pending; idempotent.
        #[arg(long, value_name = "REFRESH_ID")]
        activate: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl DkgArgs {
    /// Runs DKG.
    pub async fn run(self) -> anyhow::Result<()> {
        let pass =
            crate::prompt::passphrase(COORDINATOR_PASSPHRASE_ENV, "coordinator key passphrase", false)?;
        if let Some(DkgAction::Refresh { quorum, activate, json }) = self.action {
            let q = QuorumFile::load(&quorum)?;
            let key = open_coordinator_key(&q.coordinator_key_path(&quorum), &pass)
                .context("opening the coordinator key")?;
            if let Some(id) = activate {
                return activate_pending(key, &q, &quorum, &id, json).await;
            }
            let outcome = run_refresh(key, &q).await.map_err(|e| saving_incomplete(e, &quorum));
            let outcome = outcome.context("share refresh")?;
            outcome.quorum.save(&quorum)?;
            print(&outcome.group_key, &quorum, json, "refreshed");
            return Ok(());
        }
        let threshold = self.threshold.context("--threshold is required")?;
        let key_path = self.coordinator_key.context("--coordinator-key is required")?;
        anyhow::ensure!(self.signers.len() >= 2, "at least two --signer URL#FINGERPRINT are needed");
        let nodes: Vec<PinnedNode> = self.signers.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        let key = open_coordinator_key(&key_path, &pass).context("opening the coordinator key")?;
        let key_ref = std::path::absolute(&key_path).unwrap_or(key_path.clone());
        let outcome =
            run_dkg(key, &key_ref.display().to_string(), &nodes, threshold, 8).await.context("DKG")?;
        outcome.quorum.save(&self.out)?;
        print(&outcome.group_key, &self.out, self.json, "created");
        Ok(())
    }
}

/// `treasury dkg refresh --activate ID`: activates refresh `id` on the nodes still pending and
/// records the outcome in the quorum file.
async fn activate_pending(
    key: treasury_signer::quorum::identity::IdentityKey,
    q: &QuorumFile,
    path: &std::path::Path,
    id: &str,
    json: bool,
) -> anyhow::Result<()> {
    let done = activate_refresh(key, q, id).await.map_err(|e| saving_incomplete(e, path));
    let done = done.with_context(|| format!("activating refresh {id}"))?;
    done.quorum.save(path)?;
    let status = if done.activated.is_empty() { "already active on every node" } else { "activated" };
    if json {
        println!("{}", serde_json::json!({ "refresh": id, "status": status, "activated": done.activated }));
    } else if done.activated.is_empty() {
        println!("refresh {id}: {status}");
    } else {
        println!(
            "refresh {id}: activated on {}; every node now signs with the new shares",
            done.activated.join(", ")
        );
    }
    Ok(())
}

/// Saves the refreshed quorum file an incomplete activation carries (the nodes that activated
/// sign only under it), and passes the error on.
fn saving_incomplete(e: QuorumError, path: &std::path::Path) -> anyhow::Error {
    let QuorumError::ActivationIncomplete { quorum, .. } = &e else { return e.into() };
    match quorum.save(path) {
        Ok(()) => anyhow::Error::new(e)
            .context(format!("{} updated (the nodes that activated sign only under it)", path.display())),
        Err(save) => {
            anyhow::anyhow!("{e}; saving the refreshed quorum file {} failed: {save}", path.display())
        }
    }
}

fn print(gk: &treasury_signer::quorum::GroupKey, path: &std::path::Path, json: bool, what: &str) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "group_key": gk.compressed, "group_key_x": gk.x.to_string(), "group_key_x_hex": format!("{:#066x}", gk.x),
                "group_key_parity": gk.parity, "quorum_file": path.display().to_string(), "status": what,
            })
        );
    } else {
        println!("group key (compressed): {}", gk.compressed);
        println!("group key x:            {:#066x}", gk.x);
        println!("group key parity:       {}", gk.parity);
        println!("quorum file {what}:   {}", path.display());
    }
}
