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
    /// High availability: two treasuries on two chains, two agent replicas on a private
    /// PostgreSQL cluster; the leading replica is killed mid-scenario and the other takes over.
    #[arg(long, conflicts_with = "resume")]
    ha: bool,
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
            ha: self.ha,
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
            "  {}#{:<3} {:<13} {:<5} {:<10} {:<40} {}",
            i.treasury.as_deref().map(|t| format!("{t} ")).unwrap_or_default(),
            i.id,
            i.policy,
            i.kind,
            i.state,
            i.description,
            i.tx_hash.as_deref().unwrap_or("-")
        );
    }
    if s.treasuries.is_empty() {
        print_balances("balances", &s.balances);
    }
    for t in &s.treasuries {
        print_balances(
            &format!("balances of {} (chain {})", t.name, t.deployment.chain_id),
            &s.balances[&t.name],
        );
    }
    if let Some(f) = &s.failover {
        println!(
            "\nfailover: replica pid {} killed, pid {} took over after {} ms (lease TTL {} ms)",
            f.killed, f.standby, f.taken_over_after_ms, f.lease_ttl_ms
        );
    }
    println!("\nstate, logs and config: {}", s.state_dir);
}

/// `{who: {token: amount}}` as a line per holder.
fn print_balances(title: &str, balances: &serde_json::Value) {
    let Some(map) = balances.as_object() else { return };
    println!("\n{title}");
    for (who, b) in map {
        let parts: Vec<String> = b
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{} {k}", v.as_str().unwrap_or("?"))).collect())
            .unwrap_or_default();
        println!("  {who:<8} {}", parts.join(", "));
    }
}
