//! Fixtures for `treasury policy test`: a snapshot and history written in token units, the
//! intents expected, and a readable diff when the script disagrees.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy::primitives::{Address, B256, I256, U256};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use treasury_chain::{AssetState, BudgetState, PriceReading, Snapshot};

use crate::config::PoliciesConfig;
use crate::engine::{CompiledPolicy, PolicyEngine, Run};
use crate::error::{Location, PolicyError, Result};
use crate::intent::{Action, Intent};
use crate::money;
use crate::period::Period;
use crate::view::{Book, Payment, SnapshotView};

/// Decimals of fixture prices once converted to feed answers (Chainlink USD feeds use 8).
const FEED_DECIMALS: u32 = 8;

/// A fixture file (TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Config holding the token table and address book, relative to the fixture file.
    pub config: PathBuf,
    /// Policy name (default: the script's file stem).
    #[serde(default)]
    pub policy: Option<String>,
    /// Trigger label for default keys (default: the configured trigger's kind, else `manual`).
    #[serde(default)]
    pub trigger: Option<String>,
    /// Period for default keys (default: the configured policy's, else `day`).
    #[serde(default)]
    pub period: Option<Period>,
    /// The block.
    pub block: BlockFixture,
    /// Assets by symbol.
    #[serde(default)]
    pub assets: BTreeMap<String, AssetFixture>,
    /// What the policy already paid.
    #[serde(default)]
    pub history: Vec<PaymentFixture>,
    /// The intents expected, in order (an empty list expects none).
    #[serde(default)]
    pub expect: Option<Vec<Expected>>,
    /// Instead of intents, an error whose message contains this text.
    #[serde(default)]
    pub expect_error: Option<String>,
    /// The file's text, to say where a name in it is.
    #[serde(skip)]
    source: String,
}

/// The block of a fixture.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockFixture {
    /// Block number.
    pub number: u64,
    /// UTC time: RFC 3339 text or Unix seconds.
    pub time: Time,
    /// Chain id (default 1).
    #[serde(default = "one")]
    pub chain_id: u64,
}

fn one() -> u64 {
    1
}

/// A time written as RFC 3339 text or as Unix seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Time {
    /// Unix seconds.
    Unix(u64),
    /// e.g. `2025-02-01T09:00:00Z`.
    Text(String),
}

impl Time {
    /// Unix seconds.
    pub fn unix(&self) -> std::result::Result<u64, String> {
        match self {
            Time::Unix(t) => Ok(*t),
            Time::Text(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("bad time `{s}`: {e}"))
                .and_then(|t| u64::try_from(t.timestamp()).map_err(|_| format!("`{s}` is before 1970"))),
        }
    }
}

/// One asset of a fixture, in token units.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetFixture {
    /// Balance in token units.
    pub balance: Decimal,
    /// USD price, if the asset has a feed.
    #[serde(default)]
    pub price: Option<Decimal>,
    /// Seconds since the feed updated.
    #[serde(default)]
    pub price_age: u64,
    /// Whether the price is stale.
    #[serde(default)]
    pub stale: bool,
    /// Remaining tier-1 budget this period, in token units.
    #[serde(default)]
    pub budget_remaining: Option<Decimal>,
}

/// A past payment in a fixture.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentFixture {
    /// Recipient name or address.
    pub recipient: String,
    /// Token symbol.
    pub token: String,
    /// Amount in token units.
    pub amount: Decimal,
    /// When it was paid.
    pub time: Time,
}

/// An expected intent; fields left out are not compared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// `pay`, `swap` or `alert`.
    pub kind: String,
    /// Pay: recipient name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Pay: token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Pay or swap: amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Decimal>,
    /// Swap: token sold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sell: Option<String>,
    /// Swap: token bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buy: Option<String>,
    /// Swap: slippage bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_slippage: Option<Decimal>,
    /// Alert: message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Memo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = toml::to_string(self).unwrap_or_default();
        let fields: Vec<_> = text.lines().filter(|l| !l.is_empty()).collect();
        write!(f, "{{ {} }}", fields.join(", "))
    }
}

/// The outcome of running one fixture.
#[derive(Debug, Clone, Serialize)]
pub struct FixtureReport {
    /// Script file.
    pub script: PathBuf,
    /// Fixture file.
    pub fixture: PathBuf,
    /// Whether the script did what the fixture expects.
    pub passed: bool,
    /// Intents produced.
    pub actual: Vec<Intent>,
    /// The error the script stopped with, if it did.
    pub error: Option<String>,
    /// One line per difference.
    pub diff: Vec<String>,
}

impl fmt::Display for FixtureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "ok  " } else { "FAIL" };
        writeln!(f, "{verdict} {} with {}", self.script.display(), self.fixture.display())?;
        for line in &self.diff {
            writeln!(f, "     {line}")?;
        }
        Ok(())
    }
}

fn fixture_err(path: &Path, message: impl Into<String>) -> PolicyError {
    PolicyError::Fixture { path: path.to_owned(), message: message.into() }
}

impl Fixture {
    /// Reads a fixture file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.into(), source })?;
        let mut fx: Fixture = toml::from_str(&text).map_err(|e| fixture_err(path, e.to_string()))?;
        fx.source = text;
        if fx.expect.is_some() == fx.expect_error.is_some() {
            return Err(fixture_err(path, "give exactly one of `expect` and `expect_error`"));
        }
        Ok(fx)
    }

    /// The chain snapshot this fixture describes, in on-chain integers as a live read gives them.
    pub fn snapshot(&self, book: &Book, path: &Path) -> Result<Snapshot> {
        let timestamp = self.block.time.unix().map_err(|e| fixture_err(path, e))?;
        let mut assets = Vec::new();
        for (symbol, a) in &self.assets {
            let token = book.token(symbol).map_err(|e| self.name_err(path, symbol, e))?;
            let units = |d: Decimal| {
                money::to_units(d, token.decimals)
                    .ok_or_else(|| fixture_err(path, format!("{symbol}: bad amount {d}")))
            };
            let price = a.price.map(|p| price_reading(p, a, timestamp)).transpose();
            let budget = a.budget_remaining.map(&units).transpose()?.map(|remaining| BudgetState {
                limit: remaining,
                period_secs: 86_400,
                spent: U256::ZERO,
                remaining,
            });
            assets.push(AssetState {
                symbol: symbol.clone(),
                token: token.address,
                decimals: token.decimals,
                balance: units(a.balance)?,
                price: price.map_err(|e| fixture_err(path, format!("{symbol}: {e}")))?,
                budget,
            });
        }
        // Native ETH first, as the chain crate orders assets.
        assets.sort_by_key(|a| a.token != Address::ZERO);
        Ok(Snapshot {
            chain_id: self.block.chain_id,
            block_number: self.block.number,
            block_hash: B256::ZERO,
            timestamp,
            safe: Address::ZERO,
            module: Address::ZERO,
            module_nonce: U256::ZERO,
            paused: false,
            assets,
        })
    }

    /// An unknown `name` in this fixture, located in its text.
    fn name_err(&self, path: &Path, name: &str, message: String) -> PolicyError {
        PolicyError::FixtureName { path: path.to_owned(), at: locate(&self.source, name), message }
    }

    /// The history as the engine takes it.
    pub fn payments(&self, policy: &str, book: &Book, path: &Path) -> Result<Vec<Payment>> {
        self.history
            .iter()
            .map(|h| {
                let (recipient, _) =
                    book.recipient(&h.recipient).map_err(|e| self.name_err(path, &h.recipient, e))?;
                book.token(&h.token).map_err(|e| self.name_err(path, &h.token, e))?;
                Ok(Payment {
                    policy: policy.to_owned(),
                    recipient,
                    token: h.token.clone(),
                    amount: h.amount,
                    timestamp: h.time.unix().map_err(|e| fixture_err(path, e))?,
                })
            })
            .collect()
    }
}

/// Where `name` first appears in a fixture's text: as a quoted value, else as a key (`[assets.NAME]`,
/// `NAME = …`); line and column 1-based.
fn locate(source: &str, name: &str) -> Location {
    let quoted = format!("\"{name}\"");
    let dotted = format!(".{name}");
    let find = |line: &str| {
        if let Some(at) = line.find(&quoted) {
            return Some(at + 1);
        }
        if let Some(at) = line.find(&dotted) {
            let end = at + dotted.len();
            let whole = !line[end..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
            return whole.then_some(at + 1);
        }
        let key = line.trim_start();
        let rest = key.strip_prefix(name)?.trim_start();
        rest.starts_with('=').then_some(line.len() - key.len())
    };
    source
        .lines()
        .enumerate()
        .find_map(|(i, line)| find(line).map(|col| Location { line: Some(i + 1), column: Some(col + 1) }))
        .unwrap_or_default()
}

fn price_reading(
    price: Decimal,
    a: &AssetFixture,
    timestamp: u64,
) -> std::result::Result<PriceReading, String> {
    let decimals = price.scale().max(FEED_DECIMALS);
    let mut scaled = price;
    scaled.rescale(decimals);
    let answer = I256::try_from(scaled.mantissa()).map_err(|e| e.to_string())?;
    Ok(PriceReading {
        feed: Address::ZERO,
        answer,
        decimals: u8::try_from(decimals).map_err(|e| e.to_string())?,
        updated_at: timestamp.saturating_sub(a.price_age),
        age_secs: a.price_age,
        stale: a.stale,
    })
}

/// Runs `script` against the fixture at `fixture_path` and compares the outcome.
///
/// `config` overrides the fixture's own `config` path.
pub fn run_fixture(script: &Path, fixture_path: &Path, config: Option<&Path>) -> Result<FixtureReport> {
    let fx = Fixture::from_file(fixture_path)?;
    let base = fixture_path.parent().unwrap_or(Path::new("."));
    let cfg_path = config.map(Path::to_owned).unwrap_or_else(|| base.join(&fx.config));
    let cfg = PoliciesConfig::from_file(&cfg_path)?;
    let book = Arc::new(Book::from_config(&cfg));
    let stem = script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = fx.policy.clone().unwrap_or(stem);
    let entry = cfg.policy(&name);
    let period = fx.period.or(entry.map(|e| e.period)).unwrap_or_default();
    let trigger = entry.map_or("manual", |e| e.trigger.kind());

    let engine = PolicyEngine::new(cfg.limits);
    let source =
        std::fs::read_to_string(script).map_err(|source| PolicyError::Io { path: script.into(), source })?;
    let compiled = engine.compile(&name, script, &source, period, &book)?;
    check_fixture(&engine, &book, &compiled, trigger, fixture_path)
}

/// Evaluates an already compiled policy on the fixture at `fixture_path` (with the fixture's
/// trigger, else `trigger`) and compares the outcome with what the fixture expects.
pub fn check_fixture(
    engine: &PolicyEngine,
    book: &Arc<Book>,
    compiled: &CompiledPolicy,
    trigger: &str,
    fixture_path: &Path,
) -> Result<FixtureReport> {
    let fx = Fixture::from_file(fixture_path)?;
    let trigger = fx.trigger.as_deref().unwrap_or(trigger);
    let view = Arc::new(SnapshotView::new(&fx.snapshot(book, fixture_path)?, Arc::clone(book))?);
    let history = fx.payments(&compiled.name, book, fixture_path)?;
    let outcome = engine.evaluate(compiled, &view, Run { trigger, history: &history });

    let mut report = FixtureReport {
        script: compiled.file.clone(),
        fixture: fixture_path.to_owned(),
        passed: false,
        actual: Vec::new(),
        error: None,
        diff: Vec::new(),
    };
    match (outcome, &fx.expect_error) {
        (Ok(actual), None) => {
            report.diff = diff(fx.expect.as_deref().unwrap_or_default(), &actual, book);
            report.actual = actual;
        }
        (Ok(actual), Some(want)) => {
            report.diff.push(format!("expected an error containing `{want}`, got {} intents", actual.len()));
            report.actual = actual;
        }
        (Err(e), want) => {
            let msg = e.to_string();
            if !want.as_ref().is_some_and(|w| msg.contains(w.as_str())) {
                report.diff.push(format!("unexpected error: {msg}"));
            }
            report.error = Some(msg);
        }
    }
    report.passed = report.diff.is_empty();
    Ok(report)
}

/// One line per difference between expected and actual intents, compared in order.
pub fn diff(expected: &[Expected], actual: &[Intent], book: &Book) -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..expected.len().max(actual.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) => {
                for m in field_diffs(e, a, book) {
                    lines.push(format!("intent {}: {m}", i + 1));
                }
            }
            (Some(e), None) => lines.push(format!("intent {}: missing, expected {e}", i + 1)),
            (None, Some(a)) => lines.push(format!("intent {}: unexpected {a}", i + 1)),
            (None, None) => {}
        }
    }
    lines
}

fn field_diffs(e: &Expected, a: &Intent, book: &Book) -> Vec<String> {
    let mut out = Vec::new();
    if e.kind != a.action.kind() {
        out.push(format!("kind: expected {}, got {}", e.kind, a.action));
        return out;
    }
    let mut cmp = |field: &str, want: Option<String>, got: String| {
        if let Some(w) = want
            && w != got
        {
            out.push(format!("{field}: expected {w}, got {got}"));
        }
    };
    let dec = |d: Option<Decimal>| d.map(|d| d.normalize().to_string());
    match &a.action {
        Action::Pay { to, token, amount, .. } => {
            let want_to = e.to.as_ref().map(|t| match book.recipient(t) {
                Ok((addr, _)) => format!("{addr}"),
                Err(err) => err,
            });
            cmp("to", want_to, format!("{to}"));
            cmp("token", e.token.clone(), token.clone());
            cmp("amount", dec(e.amount), amount.normalize().to_string());
        }
        Action::Swap { sell, buy, amount, max_slippage } => {
            cmp("sell", e.sell.clone(), sell.clone());
            cmp("buy", e.buy.clone(), buy.clone());
            cmp("amount", dec(e.amount), amount.normalize().to_string());
            cmp("max_slippage", dec(e.max_slippage), max_slippage.normalize().to_string());
        }
        Action::Alert { message } => cmp("message", e.message.clone(), message.clone()),
    }
    cmp("memo", e.memo.clone(), a.memo.clone().unwrap_or_default());
    cmp("key", e.key.clone(), a.key.clone());
    out
}
