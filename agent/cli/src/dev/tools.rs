//! What `treasury dev` needs on this machine — anvil, the Safe and Uniswap V2 contracts from npm,
//! SoftHSM2 — and installing what is missing with the checkout's `scripts/install.sh dev`, saying
//! what and why, before anything starts.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use treasury_devnet::artifacts::External;
use treasury_devnet::softhsm;

/// One thing the demo needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// What it is and where it comes from.
    pub what: &'static str,
    /// What the demo does with it.
    pub why: &'static str,
    /// Where it is looked for.
    pub at: PathBuf,
}

/// Everything the demo needs, found or not.
pub fn needs() -> Vec<Need> {
    vec![
        Need {
            what: "anvil 1.7.1 (npm @foundry-rs/anvil)",
            why: "the local chain the demo runs on",
            at: treasury_chain::tools::foundry_binary("anvil"),
        },
        Need {
            what: "Safe 1.5.0 contracts (npm @safe-global/safe-smart-account)",
            why: "the treasury's Safe",
            at: External::Safe.path(),
        },
        Need {
            what: "Uniswap V2 contracts (npm @uniswap/v2-core, @uniswap/v2-periphery)",
            why: "the DEX the rebalance swaps on",
            at: External::UniswapV2Router02.path(),
        },
        Need {
            what: "SoftHSM2 (Debian package softhsm2)",
            why: "the HSM holding the root key",
            at: softhsm::module(),
        },
    ]
}

/// The needs not found.
pub fn missing() -> Vec<Need> {
    needs().into_iter().filter(|n| !n.at.exists()).collect()
}

/// The `scripts/install.sh` of the treasury checkout holding the current directory, if any.
fn install_script() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|d| d.join("scripts/install.sh"))
        .find(|p| p.is_file() && p.with_file_name("test.sh").is_file())
}

fn list(needs: &[Need]) -> String {
    needs
        .iter()
        .map(|n| format!("  - {}: {} (looked for {})", n.what, n.why, n.at.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Installs what is missing (telling on stderr what and why), or fails naming it and how to get it.
pub fn ensure(install: bool) -> anyhow::Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let Some(script) = install_script().filter(|_| install) else {
        bail!(
            "treasury dev needs what is not installed here:\n{}\nRun scripts/install.sh dev in a treasury checkout and start \
             treasury dev there (or set {} to a node_modules folder holding the npm packages and {} to a SoftHSM2 module)",
            list(&missing),
            treasury_chain::tools::TOOLS_ENV,
            softhsm::MODULE_ENV
        );
    };
    eprintln!("treasury dev needs what is not installed yet:\n{}", list(&missing));
    eprintln!(
        "installing it with {} dev (pinned npm packages into .tools/node_modules, Debian packages with apt-get); \
         --no-install skips this",
        script.display()
    );
    run_install(&script)?;
    let still = self::missing();
    if !still.is_empty() {
        bail!("still missing after {} dev:\n{}", script.display(), list(&still));
    }
    eprintln!("installed; starting the demo");
    Ok(())
}

fn run_install(script: &Path) -> anyhow::Result<()> {
    let status = Command::new("bash")
        .arg(script)
        .arg("dev")
        // Its messages (npm's included) go to stderr: stdout is the demo's (`--json`).
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("running {} (is bash installed?)", script.display()))?;
    if !status.success() {
        bail!("{} dev failed ({status}): see its messages above", script.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_need_says_what_and_why() {
        let needs = needs();
        assert_eq!(needs.len(), 4);
        assert!(needs.iter().all(|n| !n.what.is_empty() && !n.why.is_empty()));
        assert!(list(&needs).contains("the local chain"));
    }
}
