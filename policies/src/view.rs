//! What a script reads: the config's names, a snapshot in decimal units, and payment history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use alloy::primitives::Address;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use treasury_chain::Snapshot;

use crate::config::{PoliciesConfig, TokenEntry};
use crate::error::{PolicyError, Result};
use crate::money;

/// The names scripts may use: token symbols and named addresses, from config.
#[derive(Debug, Clone, Default)]
pub struct Book {
    tokens: BTreeMap<String, TokenEntry>,
    names: BTreeMap<String, Address>,
    by_address: HashMap<Address, String>,
}

impl Book {
    /// The book of a config's token table and address book.
    pub fn from_config(cfg: &PoliciesConfig) -> Self {
        let by_address = cfg.addresses.iter().map(|(n, a)| (*a, n.clone())).collect();
        Self { tokens: cfg.tokens.clone(), names: cfg.addresses.clone(), by_address }
    }

    /// The token with this symbol, or an error suggesting the closest known one.
    pub fn token(&self, symbol: &str) -> Result<&TokenEntry, String> {
        self.tokens
            .get(symbol)
            .ok_or_else(|| format!("unknown token `{symbol}`{}", suggest(symbol, self.tokens.keys())))
    }

    /// Resolves a recipient: a configured name, or an address in the address book.
    ///
    /// Returns the address and, when known, its name. Mixed-case hex must carry a valid EIP-55
    /// checksum.
    pub fn recipient(&self, s: &str) -> Result<(Address, Option<String>), String> {
        if let Some(a) = self.names.get(s) {
            return Ok((*a, Some(s.to_owned())));
        }
        if !s.starts_with("0x") {
            return Err(format!("unknown recipient `{s}`{}", suggest(s, self.names.keys())));
        }
        let addr = parse_address(s)?;
        match self.by_address.get(&addr) {
            Some(name) => Ok((addr, Some(name.clone()))),
            None => Err(format!("address {addr} is not in the config's address book")),
        }
    }

    /// Token symbols, sorted.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.tokens.keys().map(String::as_str)
    }

    /// Address-book names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }
}

/// Parses a hex address, checking the EIP-55 checksum when the hex is mixed-case.
fn parse_address(s: &str) -> Result<Address, String> {
    let hex = &s[2..];
    let mixed = hex.chars().any(|c| c.is_ascii_uppercase()) && hex.chars().any(|c| c.is_ascii_lowercase());
    let parsed = if mixed { Address::parse_checksummed(s, None).ok() } else { s.parse().ok() };
    parsed.ok_or_else(|| format!("malformed address `{s}` (40 hex digits, valid EIP-55 checksum)"))
}

/// ", did you mean `x`?" for the closest known name, if one is close.
pub fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let best = known.map(|k| (edit_distance(name, k), k)).min();
    match best {
        Some((d, k)) if d <= 2 || k.eq_ignore_ascii_case(name) => format!(", did you mean `{k}`?"),
        _ => String::new(),
    }
}

/// Levenshtein distance, for typo suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A payment a policy already made, as the caller's journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The policy that paid.
    pub policy: String,
    /// Who was paid.
    pub recipient: Address,
    /// Token symbol.
    pub token: String,
    /// Amount in token units.
    pub amount: Decimal,
    /// Timestamp of the block the payment was decided at; period helpers key on it.
    pub timestamp: u64,
}

/// A price in decimal form, with its freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceView {
    /// Price of one token unit in the feed's quote currency (USD).
    pub price: Decimal,
    /// Seconds since the feed updated, at the snapshot's block.
    pub age_secs: u64,
    /// Whether the reading is stale.
    pub stale: bool,
}

/// One asset in decimal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetView {
    /// The Safe's balance in token units.
    pub balance: Decimal,
    /// The oracle price, if the asset has a feed.
    pub price: Option<PriceView>,
    /// What tier 1 may still move this period, in token units, if budgeted.
    pub budget_remaining: Option<Decimal>,
}

impl AssetView {
    /// Balance times price, if priced.
    pub fn value(&self) -> Option<Decimal> {
        self.price.and_then(|p| self.balance.checked_mul(p.price))
    }
}

/// A snapshot in the units scripts read, built once per block and shared by every policy.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    /// Chain id.
    pub chain_id: u64,
    /// Block number.
    pub block_number: u64,
    /// Block timestamp (UTC seconds).
    pub timestamp: u64,
    /// Assets by symbol.
    pub assets: BTreeMap<String, AssetView>,
    /// Names from config.
    pub book: Arc<Book>,
}

impl SnapshotView {
    /// Converts a chain snapshot, checking every asset against the config's token table.
    pub fn new(snap: &Snapshot, book: Arc<Book>) -> Result<Self> {
        let mut assets = BTreeMap::new();
        for a in &snap.assets {
            let bad = |m: String| PolicyError::Snapshot { block: snap.block_number, message: m };
            let entry = book.token(&a.symbol).map_err(bad)?;
            if entry.decimals != a.decimals {
                return Err(bad(format!(
                    "{}: snapshot says {} decimals, config says {}",
                    a.symbol, a.decimals, entry.decimals
                )));
            }
            let balance = money::from_units(a.balance, a.decimals)
                .ok_or_else(|| bad(format!("{}: balance too large", a.symbol)))?
                .normalize();
            let price = match &a.price {
                Some(p) => Some(PriceView {
                    price: money::from_signed_units(p.answer, p.decimals)
                        .ok_or_else(|| bad(format!("{}: price out of range", a.symbol)))?
                        .normalize(),
                    age_secs: p.age_secs,
                    stale: p.stale,
                }),
                None => None,
            };
            let budget_remaining = match &a.budget {
                Some(b) => Some(
                    money::from_units(b.remaining, a.decimals)
                        .ok_or_else(|| bad(format!("{}: budget too large", a.symbol)))?
                        .normalize(),
                ),
                None => None,
            };
            assets.insert(a.symbol.clone(), AssetView { balance, price, budget_remaining });
        }
        Ok(Self {
            chain_id: snap.chain_id,
            block_number: snap.block_number,
            timestamp: snap.timestamp,
            assets,
            book,
        })
    }

    /// The asset with this symbol; a symbol unknown to config or absent from the snapshot is an
    /// error.
    pub fn asset(&self, symbol: &str) -> Result<&AssetView, String> {
        self.book.token(symbol)?;
        self.assets
            .get(symbol)
            .ok_or_else(|| format!("token `{symbol}` is configured but not in the snapshot"))
    }

    /// Sum of the value of every priced asset.
    pub fn portfolio_value(&self) -> Decimal {
        self.assets.values().filter_map(AssetView::value).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> Book {
        let cfg: PoliciesConfig = toml::from_str(
            r#"
            tokens.USDC = { address = "0x0000000000000000000000000000000000000001", decimals = 6 }
            addresses.alice = "0x00000000000000000000000000000000000000a1"
            "#,
        )
        .unwrap();
        Book::from_config(&cfg)
    }

    #[test]
    fn typos_are_errors_with_suggestions() {
        let b = book();
        assert!(b.token("USDC").is_ok());
        assert!(b.token("USCD").unwrap_err().contains("did you mean `USDC`"));
        assert!(b.recipient("alcie").unwrap_err().contains("did you mean `alice`"));
    }

    #[test]
    fn addresses_must_be_well_formed_and_known() {
        let b = book();
        let (a, name) = b.recipient("0x00000000000000000000000000000000000000A1").unwrap();
        assert_eq!((a, name.as_deref()), (b.names["alice"], Some("alice")));
        assert!(b.recipient("0x1234").unwrap_err().contains("malformed"));
        let unknown = "0x00000000000000000000000000000000000000b2";
        assert!(b.recipient(unknown).unwrap_err().contains("not in the config"));
        // Mixed case with a wrong checksum is a typo, not an address.
        let bad_sum = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        assert!(b.recipient(bad_sum).unwrap_err().contains("malformed"));
    }
}
