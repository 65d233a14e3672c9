//! `treasury dev`: the whole system locally, a scenario that makes the policies act, a live view.
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::dev::{DevOptions, Summary, run};

/// Arguments of `treasury dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// State directory (wiped at start: it must be empty, missing, or a previous run's).
    #[arg(long, default_value = ".state/dev")]
    state_dir: PathBuf,
    /// Restart from the state directory of a previous run (chain, nodes, root, journal) instead of
    /// starting clean; the scenario goes on to the next day.
    #[arg(long)]
    resume: bool,
    /// Approve the escalated payment without asking.
    #[arg(long, short)]
    yes: bool,
    /// Run the scenario to the end without prompts, print a summary, stop everything and exit.
    #[arg(long)]
    once: bool,
    /// Print the summary as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Do not install what is missing (anvil, the Safe and Uniswap contracts, SoftHSM2): only say it.
    #[arg(long)]
    no_install: bool,
}

impl DevArgs {
    /// Runs the demo; fails (non-zero exit) if a step failed or an intent did not succeed.
    pub async fn run(self) -> anyhow::Result<()> {
        let json = self.json;
        crate::dev::tools::ensure(!self.no_install)?;
        let summary = run(DevOptions {
            state_dir: self.state_dir,
            resume: self.resume,
            yes: self.yes,
            once: self.once,
            json,
        })
        .await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            print_human(&summary);
        }
        if !summary.ok {
            bail!("{}", summary.error.as_deref().unwrap_or("a step failed"));
        }
        Ok(())
    }
}

fn print_human(s: &Summary) {
    if s.intents.is_empty() {
        return;
    }
    println!("\nintents");
    for i in &s.intents {
        println!(
            "  #{:<3} {:<13} {:<5} {:<10} {:<40} {}",
            i.id,
            i.policy,
            i.kind,
            i.state,
            i.description,
            i.tx_hash.as_deref().unwrap_or("-")
        );
    }
    if let Some(map) = s.balances.as_object() {
        println!("\nbalances");
        for (who, b) in map {
            let parts: Vec<String> = b
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{} {k}", v.as_str().unwrap_or("?"))).collect())
                .unwrap_or_default();
            println!("  {who:<8} {}", parts.join(", "));
        }
    }
    println!("\nstate, logs and config: {}", s.state_dir);
}
