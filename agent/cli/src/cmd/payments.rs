//! `treasury payments export`: every executed payment and swap in a date range, for bookkeeping.
use std::path::PathBuf;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use anyhow::Context;
use clap::{Args, Subcommand};
use rust_decimal::Decimal;
use serde::Serialize;
use treasury_agent::journal::{IntentFilter, IntentState, Journal};
use treasury_agent::pipeline::intake::StoredIntent;
use treasury_chain::snapshot::read_snapshot;
use treasury_policies::intent::Action;

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

/// One executed payment or swap.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentRow {
    /// Execution time (the block's), RFC 3339 UTC.
    pub date: String,
    /// The Safe.
    pub treasury: Address,
    /// The policy that decided it.
    pub policy: String,
    /// `pay` or `swap`.
    pub kind: String,
    /// The recipient's name in the config's address book (swaps: the Safe itself).
    pub recipient_name: String,
    /// The recipient's address.
    pub recipient_address: Address,
    /// Token paid (or sold).
    pub token: String,
    /// Amount in token units.
    pub amount: Decimal,
    /// USD value at the block the policy decided on, when the token has a fresh price there.
    pub usd_value: Option<Decimal>,
    /// Gas fee of the executing transaction, ETH (a batch's fee is on each of its rows).
    pub fee_eth: Decimal,
    /// The executing transaction.
    pub tx_hash: B256,
}

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

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The rows as CSV with a header line.
pub fn csv(rows: &[PaymentRow]) -> String {
    let mut out = String::from(
        "date,treasury,policy,kind,recipient_name,recipient_address,token,amount,usd_value,fee_eth,tx_hash\n",
    );
    for r in rows {
        let fields = [
            r.date.clone(),
            format!("{:#x}", r.treasury),
            r.policy.clone(),
            r.kind.clone(),
            r.recipient_name.clone(),
            format!("{:#x}", r.recipient_address),
            r.token.clone(),
            r.amount.to_string(),
            r.usd_value.map(|v| v.round_dp(2).to_string()).unwrap_or_default(),
            r.fee_eth.normalize().to_string(),
            r.tx_hash.to_string(),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

async fn export(a: &ExportArgs) -> anyhow::Result<Vec<PaymentRow>> {
    let config = super::load_agent_config(&a.config)?;
    let journal = Journal::open(&config.journal.url)
        .await
        .with_context(|| format!("journal {}", config.journal.url))?;
    let provider =
        treasury_chain::provider::connect(config.chain.rpc_http.as_str()).context("the chain's RPC")?;
    let spec = treasury_agent::pipeline::snapshot_spec(&config).context("the config's assets")?;
    let book = &config.policies.addresses;
    let name_of =
        |addr: Address| book.iter().find(|(_, a)| **a == addr).map(|(n, _)| n.clone()).unwrap_or_default();
    let from = a.from.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp();
    let to = a.to.and_hms_opt(23, 59, 59).expect("a second before midnight").and_utc().timestamp();
    let filter =
        IntentFilter { state: Some(IntentState::Confirmed), limit: Some(u32::MAX), ..Default::default() };
    let mut rows = Vec::new();
    for intent in journal.list(&filter).await? {
        let stored = StoredIntent::from_payload(&intent.payload)?;
        let (recipient, token, amount, kind) = match &stored.intent.action {
            Action::Pay { to, token, amount, .. } => (*to, token.clone(), *amount, "pay"),
            Action::Swap { sell, amount, .. } => (config.safe.address, sell.clone(), *amount, "swap"),
            _ => continue,
        };
        let Some(op) = journal.operation_of(intent.id).await? else { continue };
        let Some(tx) = journal.latest_transaction(&op.operation_id).await? else { continue };
        let hash: B256 =
            tx.tx.tx_hash.parse().with_context(|| format!("journaled tx hash {}", tx.tx.tx_hash))?;
        let receipt = provider
            .get_transaction_receipt(hash)
            .await
            .with_context(|| format!("eth_getTransactionReceipt {hash}"))?
            .with_context(|| format!("no receipt for {hash}"))?;
        let block_no = receipt.block_number.context("receipt without a block")?;
        let block = provider
            .get_block_by_number(BlockNumberOrTag::Number(block_no))
            .await
            .with_context(|| format!("eth_getBlockByNumber {block_no}"))?
            .with_context(|| format!("no block {block_no}"))?;
        let at = i64::try_from(block.header.timestamp).unwrap_or(i64::MAX);
        if at < from || at > to {
            continue;
        }
        let fee_wei = u128::from(receipt.gas_used).saturating_mul(receipt.effective_gas_price);
        let fee_eth = Decimal::from_i128_with_scale(i128::try_from(fee_wei).unwrap_or(i128::MAX), 18);
        let snapshot = read_snapshot(&provider, &spec, BlockNumberOrTag::Number(stored.block))
            .await
            .with_context(|| format!("snapshot at block {}", stored.block))?;
        let usd_value = snapshot.asset(&token).and_then(|asset| {
            let p = asset.price.as_ref().filter(|p| !p.stale)?;
            let answer = i128::try_from(p.answer).ok()?;
            Some(amount * Decimal::from_i128_with_scale(answer, u32::from(p.decimals)))
        });
        let date = chrono::DateTime::from_timestamp(at, 0).map(|d| d.to_rfc3339()).unwrap_or_default();
        rows.push(PaymentRow {
            date,
            treasury: config.safe.address,
            policy: intent.policy.clone(),
            kind: kind.into(),
            recipient_name: if kind == "swap" { "treasury (swap)".into() } else { name_of(recipient) },
            recipient_address: recipient,
            token,
            amount,
            usd_value,
            fee_eth,
            tx_hash: hash,
        });
    }
    rows.sort_by(|a, b| a.date.cmp(&b.date).then(a.tx_hash.cmp(&b.tx_hash)));
    Ok(rows)
}
