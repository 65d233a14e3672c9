//! `treasury intents list|show`: what the agent decided and where each intent stands.
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use treasury_agent::journal::{IntentFilter, IntentId, IntentState, Journal};

/// `treasury intents` subcommands.
#[derive(Debug, Subcommand)]
pub enum IntentsCmd {
    /// List intents, newest first.
    List(ListArgs),
    /// One intent: its events, operation and keeper transactions.
    Show(ShowArgs),
}

/// Arguments of `treasury intents list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The agent's config file (for the journal URL).
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// Only intents in this state (proposed, guarded, planned, authorising, awaiting_root, signed,
    /// submitted, confirmed, failed, rejected, expired).
    #[arg(long)]
    state: Option<IntentState>,
    /// Only intents of this policy.
    #[arg(long)]
    policy: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `treasury intents show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The intent's id.
    id: i64,
    /// The agent's config file (for the journal URL).
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl IntentsCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            IntentsCmd::List(args) => args.run().await,
            IntentsCmd::Show(args) => args.run().await,
        }
    }
}

/// Opens the journal named by the config at `path`.
pub(crate) async fn open_journal(path: &std::path::Path) -> anyhow::Result<Journal> {
    let config = super::load_agent_config(path)?;
    Journal::open(&config.journal.url).await.with_context(|| format!("journal {}", config.journal.url))
}

/// `YYYY-MM-DD hh:mm:ssZ` from unix milliseconds.
fn time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => format!("{ms} ms"),
    }
}

impl ListArgs {
    async fn run(self) -> anyhow::Result<()> {
        let journal = open_journal(&self.config).await?;
        let filter = IntentFilter { state: self.state, policy: self.policy.clone(), limit: Some(self.limit) };
        let intents = journal.list(&filter).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&intents)?);
            return Ok(());
        }
        if intents.is_empty() {
            println!("no intents");
            return Ok(());
        }
        println!(
            "{:>5}  {:<13}  {:<16}  {:<6}  {:<24}  {:<20}  KEY",
            "ID", "STATE", "POLICY", "KIND", "TRIGGER", "UPDATED"
        );
        for i in intents {
            println!(
                "{:>5}  {:<13}  {:<16}  {:<6}  {:<24}  {:<20}  {}",
                i.id.0,
                i.state.as_str(),
                i.policy,
                i.kind,
                i.trigger,
                time(i.updated_at),
                i.idempotency_key
            );
        }
        Ok(())
    }
}

impl ShowArgs {
    async fn run(self) -> anyhow::Result<()> {
        let journal = open_journal(&self.config).await?;
        let Some((mut intent, events)) = journal.intent(IntentId(self.id)).await? else {
            bail!("no intent with id {} in the journal", self.id);
        };
        // Intents journaled before the column existed carry the version in their payload only.
        if intent.policy_version.is_none() {
            intent.policy_version =
                intent.payload.get("policy_version").and_then(|v| v.as_str()).map(str::to_owned);
        }
        let operation = journal.operation_of(intent.id).await?;
        let transactions = match &operation {
            Some(op) => journal.transactions(&op.operation_id).await?,
            None => Vec::new(),
        };
        if self.json {
            let out = serde_json::json!({
                "intent": intent, "events": events, "operation": operation, "transactions": transactions,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        println!(
            "intent {}  {}  ({} by {}, trigger {})",
            intent.id, intent.state, intent.kind, intent.policy, intent.trigger
        );
        println!("key      {}", intent.idempotency_key);
        if let Some(version) = &intent.policy_version {
            println!(
                "policy   {} version {version} (SHA-256 of its script, first 16 hex digits)",
                intent.policy
            );
        }
        println!("payload  {}", intent.payload);
        println!("events:");
        for e in &events {
            let from = e.from.map_or("-".to_string(), |s| s.to_string());
            let detail = if e.detail.is_null() { String::new() } else { e.detail.to_string() };
            println!("  {}  {:>13} -> {:<13} {}", time(e.at), from, e.to, detail);
        }
        if let Some(op) = &operation {
            println!(
                "operation {} (module nonce {}, intents {:?})",
                op.operation_id,
                op.module_nonce,
                op.intents.iter().map(|i| i.0).collect::<Vec<_>>()
            );
        }
        for t in &transactions {
            println!(
                "  tx {}  keeper nonce {}  {:?}  block {:?}",
                t.tx.tx_hash, t.tx.keeper_nonce, t.state, t.block_number
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rendered_in_utc() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::time(1_709_283_600_000), "2024-03-01 09:00:00Z");
    }
}
