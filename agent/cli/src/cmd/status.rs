//! `treasury status`: the journal's counts by state, the trigger cursor, alerts, and the chain's view.
use std::path::PathBuf;

use alloy::providers::Provider;
use anyhow::Context;
use clap::Args;
use serde_json::json;
use treasury_chain::contracts::TreasuryModule;

use treasury_agent::config::Config;
use treasury_agent::journal::Journal;

/// Arguments of `treasury status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's config file.
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl StatusArgs {
    /// Prints the status; the chain part is reported as unreachable rather than failing.
    pub async fn run(self) -> anyhow::Result<()> {
        let config = super::load_agent_config(&self.config)?;
        let journal = Journal::open(&config.journal.url)
            .await
            .with_context(|| format!("journal {}", config.journal.url))?;
        let counts = journal.count_by_state().await?;
        let safe = config.safe.address;
        let cursor = journal.cursor(treasury_agent::trigger::CURSOR_SOURCE, &format!("{safe:#x}")).await?;
        let alerts = journal.alerts(5).await?;
        let waiting_manual = journal.open_manual_triggers().await?.len();
        let chain = chain_status(&config).await;
        let jobs = job_status(&config, &journal).await?;
        let report = json!({
            "safe": config.safe.address,
            "module": config.safe.module,
            "journal": config.journal.url,
            "intents_by_state": counts.iter().map(|(s, n)| (s.as_str().to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            "cursor": cursor,
            "manual_triggers_waiting": waiting_manual,
            "recent_alerts": alerts,
            "chain": chain,
            "keeper_jobs": jobs,
        });
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        println!("safe     {}  module {}", config.safe.address, config.safe.module);
        println!("journal  {}", config.journal.url);
        let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!("intents  {}", if counts.is_empty() { "none".to_string() } else { counts.join(", ") });
        match &cursor {
            Some(c) => println!("cursor   block {} ({})", c.block_number, c.block_hash),
            None => println!("cursor   none (the agent has not run yet)"),
        }
        println!("manual triggers waiting: {waiting_manual}");
        match chain.get("error") {
            Some(e) => println!("chain    unreachable: {}", e.as_str().unwrap_or_default()),
            None => println!(
                "chain    {} at block {}, module nonce {}, paused {}",
                chain["chain_id"], chain["head"], chain["module_nonce"], chain["paused"]
            ),
        }
        for job in jobs.as_array().into_iter().flatten() {
            println!(
                "job      {} ({}): {}",
                job["name"].as_str().unwrap_or_default(),
                job["kind"].as_str().unwrap_or_default(),
                job["runs"].as_object().map_or_else(String::new, |runs| runs
                    .iter()
                    .map(|(state, n)| format!("{state} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "))
            );
        }
        for a in alerts {
            println!("alert    [{}] {}", a.policy, a.message);
        }
        Ok(())
    }
}

/// Each configured keeper job with its runs by state and the gas they used.
async fn job_status(config: &Config, journal: &Journal) -> anyhow::Result<serde_json::Value> {
    let counts = journal.keeper_counts().await?;
    let jobs: Vec<serde_json::Value> = config
        .keeper
        .jobs
        .iter()
        .map(|job| {
            let mine: Vec<_> = counts.iter().filter(|c| c.job == job.name).collect();
            let runs: std::collections::BTreeMap<String, u64> = mine
                .iter()
                .map(|c| {
                    (
                        serde_json::to_value(c.state)
                            .unwrap_or_default()
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        c.count,
                    )
                })
                .collect();
            json!({
                "name": job.name,
                "kind": job.kind.name(),
                "runs": runs,
                "gas_used": mine.iter().map(|c| c.gas_used).sum::<u64>(),
            })
        })
        .collect();
    Ok(json!(jobs))
}

async fn chain_status(config: &Config) -> serde_json::Value {
    let read = async {
        let provider = treasury_chain::provider::connect(config.chain.rpc_http.as_str())?;
        let chain_id = provider.get_chain_id().await?;
        let head = provider.get_block_number().await?;
        let module = TreasuryModule::new(config.safe.module, &provider);
        let nonce = module.nonce().call().await?;
        let paused = module.paused().call().await?;
        anyhow::Ok(
            json!({ "chain_id": chain_id, "head": head, "module_nonce": nonce.to_string(), "paused": paused }),
        )
    };
    read.await.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
}
