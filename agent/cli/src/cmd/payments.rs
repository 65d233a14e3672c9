//! `treasury payments export`: every executed payment and swap in a date range, for bookkeeping.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use treasury_agent::export::PaymentsSource;
use treasury_agent::journal::Journal;

/// `treasury payments` subcommands.
#[derive(Debug, Subcommand)]
pub enum PaymentsCmd {
    /// Every executed payment and swap executed between two dates (UTC, inclusive), as CSV or JSON.
    Export(ExportArgs),
}

/// Arguments of `treasury payments export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The agent's config file.
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// First day (YYYY-MM-DD, UTC) of the execution's block time.
    #[arg(long)]
    from: chrono::NaiveDate,
    /// Last day (YYYY-MM-DD, UTC), inclusive.
    #[arg(long)]
    to: chrono::NaiveDate,
    /// `csv` or `json`.
    #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
    format: String,
}

pub use treasury_agent::export::{PaymentRow, csv};

impl PaymentsCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Export(a) => {
                let rows = export(&a).await?;
                if a.format == "json" {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    print!("{}", csv(&rows));
                }
                Ok(())
            }
        }
    }
}

async fn export(a: &ExportArgs) -> anyhow::Result<Vec<PaymentRow>> {
    let config = super::load_agent_config(&a.config)?;
    let journal = Journal::open(&config.journal.url)
        .await
        .with_context(|| format!("journal {}", config.journal.url))?;
    let provider =
        treasury_chain::provider::connect(config.chain.rpc_http.as_str()).context("the chain's RPC")?;
    let source = PaymentsSource::from_config(&config, provider)?;
    Ok(treasury_agent::export::payments(&journal, &source, a.from, a.to).await?)
}
