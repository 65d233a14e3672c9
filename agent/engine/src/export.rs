//! Bookkeeping export: every executed payment and swap between two dates, with the recipient's
//! name, the USD value at the block the policy decided on, the gas fee and the transaction, as
//! `treasury payments export` and the API's `/v1/payments/export` give it.

use std::collections::BTreeMap;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use rust_decimal::Decimal;
use serde::Serialize;
use treasury_chain::snapshot::{SnapshotSpec, read_snapshot};
use treasury_policies::intent::Action;
use utoipa::ToSchema;

use crate::config::Config;
use crate::journal::{IntentFilter, IntentState, Journal, JournalError};
use crate::pipeline::intake::StoredIntent;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The journal could not be read.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// A journaled record could not be understood.
    #[error("journal record: {0}")]
    Record(String),
    /// The chain could not be read.
    #[error("{call}: {reason}")]
    Chain {
        /// What was asked.
        call: String,
        /// What went wrong.
        reason: String,
    },
    /// The config's assets could not be turned into a snapshot's.
    #[error("the config's assets: {0}")]
    Config(String),
}

/// One executed payment or swap.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PaymentRow {
    /// Execution time (the block's), RFC 3339 UTC.
    pub date: String,
    /// The Safe.
    #[schema(value_type = String)]
    pub treasury: Address,
    /// The policy that decided it.
    pub policy: String,
    /// `pay` or `swap`.
    pub kind: String,
    /// The recipient's name in the config's address book (swaps: the Safe itself).
    pub recipient_name: String,
    /// The recipient's address.
    #[schema(value_type = String)]
    pub recipient_address: Address,
    /// Token paid (or sold).
    pub token: String,
    /// Amount in token units (a decimal).
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// USD value at the block the policy decided on, when the token has a fresh price there.
    #[schema(value_type = Option<String>)]
    pub usd_value: Option<Decimal>,
    /// Gas fee of the executing transaction, ETH (a batch's fee is on each of its rows).
    #[schema(value_type = String)]
    pub fee_eth: Decimal,
    /// The executing transaction.
    #[schema(value_type = String)]
    pub tx_hash: B256,
}

/// Where the rows' chain facts come from: the chain, the Safe's assets and the address book.
#[derive(Debug, Clone)]
pub struct PaymentsSource {
    /// The chain's RPC.
    pub provider: DynProvider,
    /// The Safe's assets and their feeds (for USD values at the decision's block).
    pub spec: SnapshotSpec,
    /// Recipients' names.
    pub address_book: BTreeMap<String, Address>,
}

impl PaymentsSource {
    /// From a checked config and a provider of its chain.
    pub fn from_config(config: &Config, provider: DynProvider) -> Result<Self, ExportError> {
        let spec = crate::pipeline::snapshot_spec(config).map_err(|e| ExportError::Config(e.to_string()))?;
        Ok(Self { provider, spec, address_book: config.policies.addresses.clone() })
    }

    fn name_of(&self, addr: Address) -> String {
        self.address_book.iter().find(|(_, a)| **a == addr).map(|(n, _)| n.clone()).unwrap_or_default()
    }
}

fn chain_error(call: String) -> impl FnOnce(String) -> ExportError {
    move |reason| ExportError::Chain { call, reason }
}

/// Every payment and swap confirmed in a block whose time is between `from` and `to` (UTC days,
/// inclusive), oldest first.
pub async fn payments(
    journal: &Journal,
    src: &PaymentsSource,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<Vec<PaymentRow>, ExportError> {
    let safe = src.spec.safe;
    let from = from.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp();
    let to = to.and_hms_opt(23, 59, 59).expect("a second before midnight").and_utc().timestamp();
    let filter =
        IntentFilter { state: Some(IntentState::Confirmed), limit: Some(u32::MAX), ..Default::default() };
    let mut rows = Vec::new();
    for intent in journal.list(&filter).await? {
        let stored =
            StoredIntent::from_payload(&intent.payload).map_err(|e| ExportError::Record(e.to_string()))?;
        let (recipient, token, amount, kind) = match &stored.intent.action {
            Action::Pay { to, token, amount, .. } => (*to, token.clone(), *amount, "pay"),
            Action::Swap { sell, amount, .. } => (safe, sell.clone(), *amount, "swap"),
            _ => continue,
        };
        let Some(op) = journal.operation_of(intent.id).await? else { continue };
        let Some(tx) = journal.latest_transaction(&op.operation_id).await? else { continue };
        let hash: B256 = tx
            .tx
            .tx_hash
            .parse()
            .map_err(|e| ExportError::Record(format!("journaled tx hash {}: {e}", tx.tx.tx_hash)))?;
        let receipt = src
            .provider
            .get_transaction_receipt(hash)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.ok_or_else(|| "no receipt".to_string()))
            .map_err(chain_error(format!("eth_getTransactionReceipt {hash}")))?;
        let block_no = receipt.block_number.ok_or_else(|| ExportError::Chain {
            call: format!("eth_getTransactionReceipt {hash}"),
            reason: "receipt without a block".into(),
        })?;
        let block = src
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(block_no))
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| b.ok_or_else(|| "no such block".to_string()))
            .map_err(chain_error(format!("eth_getBlockByNumber {block_no}")))?;
        let at = i64::try_from(block.header.timestamp).unwrap_or(i64::MAX);
        if at < from || at > to {
            continue;
        }
        let fee_wei = u128::from(receipt.gas_used).saturating_mul(receipt.effective_gas_price);
        let fee_eth = Decimal::from_i128_with_scale(i128::try_from(fee_wei).unwrap_or(i128::MAX), 18);
        let snapshot = read_snapshot(&src.provider, &src.spec, BlockNumberOrTag::Number(stored.block))
            .await
            .map_err(|e| ExportError::Chain {
                call: format!("snapshot at block {}", stored.block),
                reason: e.to_string(),
            })?;
        let usd_value = snapshot.asset(&token).and_then(|asset| {
            let p = asset.price.as_ref().filter(|p| !p.stale)?;
            let answer = i128::try_from(p.answer).ok()?;
            Some(amount * Decimal::from_i128_with_scale(answer, u32::from(p.decimals)))
        });
        let date = chrono::DateTime::from_timestamp(at, 0).map(|d| d.to_rfc3339()).unwrap_or_default();
        rows.push(PaymentRow {
            date,
            treasury: safe,
            policy: intent.policy.clone(),
            kind: kind.into(),
            recipient_name: if kind == "swap" { "treasury (swap)".into() } else { src.name_of(recipient) },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_fields_with_commas_and_quotes() {
        let row = PaymentRow {
            date: "2026-11-30T09:00:00+00:00".into(),
            treasury: Address::repeat_byte(1),
            policy: "pay, \"monthly\"".into(),
            kind: "pay".into(),
            recipient_name: "alice".into(),
            recipient_address: Address::repeat_byte(2),
            token: "USDC".into(),
            amount: Decimal::new(2505, 1),
            usd_value: Some(Decimal::new(250_504, 3)),
            fee_eth: Decimal::new(1, 4),
            tx_hash: B256::repeat_byte(3),
        };
        let text = csv(&[row]);
        let line = text.lines().nth(1).unwrap();
        assert!(line.contains(",\"pay, \"\"monthly\"\"\",pay,alice,"), "{line}");
        assert!(line.contains(",250.5,250.50,0.0001,"), "{line}");
    }
}
