//! `policy diff`: two versions of a policy over the same blocks (or fixtures), and where their
//! intents differ: added, removed, changed, with totals per token and recipient.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rust_decimal::Decimal;
use serde::Serialize;
use treasury_chain::Snapshot;

use crate::budget::{self, BudgetTracker, BudgetWindow};
use crate::engine::{CompiledPolicy, PolicyEngine, Run};
use crate::error::Result;
use crate::fixture::Fixture;
use crate::intent::{Action, Intent};
use crate::simulate::{Simulation, SnapshotSource, simulate};
use crate::view::{Book, SnapshotView};

/// How one intent differs between the old and the new version (matched by idempotency key).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Only the new version asks for it.
    Added {
        /// The new intent.
        new: Intent,
    },
    /// Only the old version asked for it.
    Removed {
        /// The old intent.
        old: Intent,
    },
    /// Both ask, with a different action (amount, recipient, token, slippage, message).
    Changed {
        /// The old intent.
        old: Intent,
        /// The new intent.
        new: Intent,
    },
}

/// The differences at one block or fixture.
#[derive(Debug, Clone, Serialize)]
pub struct PointDiff {
    /// `block N` or the fixture's path.
    pub at: String,
    /// The block number, when replayed on a chain.
    pub block: Option<u64>,
    /// Intent changes, in the old version's order then the new one's additions.
    pub changes: Vec<Change>,
    /// The old version's error here, if it failed.
    pub old_error: Option<String>,
    /// The new version's error here, if it failed.
    pub new_error: Option<String>,
}

/// What each version moves of one token to one recipient (or sells in swaps) over the whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Total {
    /// Token symbol (the token paid, or sold).
    pub token: String,
    /// Recipient name (or address), or `swap → BUY` for sales.
    pub to: String,
    /// The old version's total.
    pub old: Decimal,
    /// The new version's total.
    pub new: Decimal,
}

/// A whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyDiff {
    /// Blocks or fixtures where something differs (or a version failed).
    pub points: Vec<PointDiff>,
    /// Blocks or fixtures evaluated.
    pub evaluated: usize,
    /// Snapshots read from the source (one per block, shared by both versions).
    pub snapshot_reads: usize,
    /// Totals per token and recipient where the versions differ.
    pub totals: Vec<Total>,
    /// The old version's tier-1 budget windows (replays with a module snapshot source; fixtures
    /// with `budget_remaining`, each fixture on its own).
    pub old_budget: Vec<BudgetWindow>,
    /// The new version's.
    pub new_budget: Vec<BudgetWindow>,
}

/// The changes between two runs' intents, matched by idempotency key.
pub fn changes(old: &[Intent], new: &[Intent]) -> Vec<Change> {
    let by_key: HashMap<&str, &Intent> = new.iter().map(|i| (i.key.as_str(), i)).collect();
    let mut out = Vec::new();
    for o in old {
        match by_key.get(o.key.as_str()) {
            None => out.push(Change::Removed { old: o.clone() }),
            Some(n) if n.action != o.action => {
                out.push(Change::Changed { old: o.clone(), new: (*n).clone() })
            }
            Some(_) => {}
        }
    }
    let old_keys: std::collections::HashSet<&str> = old.iter().map(|i| i.key.as_str()).collect();
    out.extend(
        new.iter().filter(|n| !old_keys.contains(n.key.as_str())).map(|n| Change::Added { new: n.clone() }),
    );
    out
}

/// What an intent moves, as (token, to, amount) for the totals.
fn moved(intent: &Intent) -> Option<(String, String, Decimal)> {
    match &intent.action {
        Action::Pay { to, recipient, token, amount } => {
            Some((token.clone(), recipient.clone().unwrap_or_else(|| to.to_string()), *amount))
        }
        Action::Swap { sell, buy, amount, .. } => Some((sell.clone(), format!("swap → {buy}"), *amount)),
        _ => None,
    }
}

/// Sums both versions' intents per (token, to) and keeps the rows that differ.
fn totals<'a>(old: impl Iterator<Item = &'a Intent>, new: impl Iterator<Item = &'a Intent>) -> Vec<Total> {
    let mut sums: BTreeMap<(String, String), (Decimal, Decimal)> = BTreeMap::new();
    for (intent, is_new) in old.map(|i| (i, false)).chain(new.map(|i| (i, true))) {
        if let Some((token, to, amount)) = moved(intent) {
            let entry = sums.entry((token, to)).or_default();
            if is_new {
                entry.1 += amount;
            } else {
                entry.0 += amount;
            }
        }
    }
    sums.into_iter()
        .filter(|(_, (o, n))| o != n)
        .map(|((token, to), (old, new))| Total { token, to, old: old.normalize(), new: new.normalize() })
        .collect()
}

/// A source that reads each block once and hands the same snapshot to every version.
struct SharedSnapshots<'a, S> {
    inner: &'a S,
    cache: Mutex<HashMap<u64, Snapshot>>,
    reads: AtomicUsize,
}

impl<S: SnapshotSource + Sync> SnapshotSource for SharedSnapshots<'_, S> {
    async fn snapshot_at(&self, block: u64) -> Result<Snapshot> {
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&block).cloned();
        if let Some(snap) = cached {
            return Ok(snap);
        }
        let snap = self.inner.snapshot_at(block).await?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(block, snap.clone());
        Ok(snap)
    }
}

/// The two versions to compare and the blocks to replay them over.
#[derive(Debug, Clone, Copy)]
pub struct RangeDiff<'a> {
    /// The version running today.
    pub old: &'a CompiledPolicy,
    /// The proposed version.
    pub new: &'a CompiledPolicy,
    /// The simulation settings (its `policy` is ignored).
    pub sim: &'a Simulation<'a>,
}

/// Replays both versions over the range, each with its own history as if it had run live, reading
/// every block's snapshot once.
pub async fn diff_range<S: SnapshotSource + Sync>(
    engine: &PolicyEngine,
    book: &Arc<Book>,
    source: &S,
    run: RangeDiff<'_>,
) -> Result<PolicyDiff> {
    let shared = SharedSnapshots { inner: source, cache: Mutex::default(), reads: AtomicUsize::new(0) };
    let old = simulate(engine, book, &shared, Simulation { policy: run.old, ..run.sim.clone() }).await?;
    let new = simulate(engine, book, &shared, Simulation { policy: run.new, ..run.sim.clone() }).await?;
    let mut points = Vec::new();
    let mut evaluated = 0;
    for (o, n) in old.iter().zip(&new) {
        if run.sim.only_when_fired && !o.fired {
            continue;
        }
        evaluated += 1;
        let point = PointDiff {
            at: format!("block {}", o.block),
            block: Some(o.block),
            changes: changes(&o.intents, &n.intents),
            old_error: o.error.clone(),
            new_error: n.error.clone(),
        };
        if !point.changes.is_empty() || point.old_error.is_some() || point.new_error.is_some() {
            points.push(point);
        }
    }
    let totals = totals(old.iter().flat_map(|b| &b.intents), new.iter().flat_map(|b| &b.intents));
    Ok(PolicyDiff {
        points,
        evaluated,
        snapshot_reads: shared.reads.into_inner(),
        totals,
        old_budget: budget::windows(old.iter().flat_map(|b| &b.budget)),
        new_budget: budget::windows(new.iter().flat_map(|b| &b.budget)),
    })
}

/// Evaluates both versions on each fixture (its snapshot and history) and compares them.
pub fn diff_fixtures(
    engine: &PolicyEngine,
    book: &Arc<Book>,
    old: &CompiledPolicy,
    new: &CompiledPolicy,
    trigger: &str,
    fixtures: &[&Path],
) -> Result<PolicyDiff> {
    let (mut points, mut all_old, mut all_new) = (Vec::new(), Vec::new(), Vec::new());
    let (mut old_budget, mut new_budget) = (Vec::new(), Vec::new());
    for path in fixtures {
        let fx = Fixture::from_file(path)?;
        let snap = fx.snapshot(book, path)?;
        let view = Arc::new(SnapshotView::new(&snap, Arc::clone(book))?);
        let history = fx.payments(&old.name, book, path)?;
        let trigger = fx.trigger.as_deref().unwrap_or(trigger);
        let run = Run { trigger, history: &history };
        let (o, n) = (engine.evaluate(old, &view, run), engine.evaluate(new, &view, run));
        let (o_intents, o_err) = split(o);
        let (n_intents, n_err) = split(n);
        let point = PointDiff {
            at: path.display().to_string(),
            block: None,
            changes: changes(&o_intents, &n_intents),
            old_error: o_err,
            new_error: n_err,
        };
        if !point.changes.is_empty() || point.old_error.is_some() || point.new_error.is_some() {
            points.push(point);
        }
        for (intents, out) in [(&o_intents, &mut old_budget), (&n_intents, &mut new_budget)] {
            let charges = BudgetTracker::default().charge(&snap, intents);
            let at = path.display().to_string();
            out.extend(
                budget::windows(&charges).into_iter().map(|w| BudgetWindow { at: Some(at.clone()), ..w }),
            );
        }
        all_old.extend(o_intents);
        all_new.extend(n_intents);
    }
    let totals = totals(all_old.iter(), all_new.iter());
    Ok(PolicyDiff { points, evaluated: fixtures.len(), snapshot_reads: 0, totals, old_budget, new_budget })
}

fn split(outcome: Result<Vec<Intent>>) -> (Vec<Intent>, Option<String>) {
    match outcome {
        Ok(intents) => (intents, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added { new } => write!(f, "+ {} [{}]", new.action, new.key),
            Change::Removed { old } => write!(f, "- {} [{}]", old.action, old.key),
            Change::Changed { old, new } => write!(f, "~ {} → {} [{}]", old.action, new.action, new.key),
        }
    }
}

impl std::fmt::Display for PolicyDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.points {
            for c in &p.changes {
                writeln!(f, "{}: {c}", p.at)?;
            }
            if let Some(e) = &p.old_error {
                writeln!(f, "{}: old version failed: {e}", p.at)?;
            }
            if let Some(e) = &p.new_error {
                writeln!(f, "{}: new version failed: {e}", p.at)?;
            }
        }
        if self.totals.is_empty() {
            writeln!(f, "totals: the same")?;
        }
        for t in &self.totals {
            writeln!(
                f,
                "total {} to {}: {} → {} ({:+})",
                t.token,
                t.to,
                t.old,
                t.new,
                (t.new - t.old).normalize()
            )?;
        }
        for (version, windows) in [("old", &self.old_budget), ("new", &self.new_budget)] {
            for w in windows {
                writeln!(f, "{version} budget {w}")?;
            }
        }
        write!(f, "{} evaluated, {} with differences", self.evaluated, self.points.len())
    }
}
