//! The tier-1 budget a replayed policy would use, window by window, and which of its intents would
//! have needed the root (escalation) — what `policy simulate` and `policy diff` report.
//!
//! The module's rule (`TreasuryModule.sol`): per budgeted asset, a window opens at the first
//! outflow after the previous one ended and lasts the asset's period; tier 1 may move at most the
//! limit within it. In a replay the chain's own budget state at a block does not include the
//! replayed intents (they never executed), so a window's room is what the module had left at the
//! block where the replay opened it, minus what the replay moved since.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;
use treasury_chain::Snapshot;

use crate::intent::{Action, Intent};
use crate::money;

/// What one intent charges against its asset's budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetCharge {
    /// The intent's key.
    pub key: String,
    /// Asset symbol (paid, or sold in a swap).
    pub token: String,
    /// Amount in whole tokens.
    pub amount: Decimal,
    /// Unix start of the budget window it falls in.
    pub window_start: u64,
    /// The window's tier-1 room (what the module had left when the replay opened it).
    pub window_room: Decimal,
    /// 1 when it fits the window's tier-1 room, 2 when it would need the root.
    pub tier: u8,
}

/// One budget window of one asset over a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetWindow {
    /// Asset symbol.
    pub token: String,
    /// Unix start of the window.
    pub start: u64,
    /// Tier-1 room the module had at the window's first intent, whole tokens.
    pub room: Decimal,
    /// What the replayed intents moved at tier 1 in it.
    pub used: Decimal,
    /// Intents that would have needed the root.
    pub escalations: usize,
    /// What those intents would have moved.
    pub escalated: Decimal,
}

/// The open window of one asset during a replay.
#[derive(Debug)]
struct Open {
    start: u64,
    end: u64,
    room: Decimal,
    used: Decimal,
}

/// Follows the module's budget windows through a replay of one version of a policy.
#[derive(Debug, Default)]
pub struct BudgetTracker {
    open: BTreeMap<String, Open>,
}

impl BudgetTracker {
    /// Charges the intents produced at `snap` (in order) and says what each would cost; intents
    /// on assets the module does not budget are not listed.
    pub fn charge(&mut self, snap: &Snapshot, intents: &[Intent]) -> Vec<BudgetCharge> {
        intents.iter().filter_map(|i| self.charge_one(snap, i)).collect()
    }

    fn charge_one(&mut self, snap: &Snapshot, intent: &Intent) -> Option<BudgetCharge> {
        let (token, amount) = match &intent.action {
            Action::Pay { token, amount, .. } => (token, *amount),
            Action::Swap { sell, amount, .. } => (sell, *amount),
            _ => return None,
        };
        let asset = snap.asset(token)?;
        let budget = asset.budget.as_ref()?;
        let now = snap.timestamp;
        let open = match self.open.get_mut(token) {
            Some(w) if now < w.end => w,
            _ => {
                let room = money::from_units(budget.remaining, asset.decimals)
                    .map_or(Decimal::MAX, |r| r.normalize());
                let window = Open {
                    start: now,
                    end: now.saturating_add(budget.period_secs),
                    room,
                    used: Decimal::ZERO,
                };
                self.open.insert(token.clone(), window);
                self.open.get_mut(token).expect("just inserted")
            }
        };
        let fits = open.used.checked_add(amount).is_some_and(|total| total <= open.room);
        if fits {
            open.used += amount;
        }
        Some(BudgetCharge {
            key: intent.key.clone(),
            token: token.clone(),
            amount,
            window_start: open.start,
            window_room: open.room,
            tier: if fits { 1 } else { 2 },
        })
    }
}

/// The windows of a replay, from its charges: per asset and window, what tier 1 used and what
/// would have escalated.
pub fn windows<'a>(charges: impl IntoIterator<Item = &'a BudgetCharge>) -> Vec<BudgetWindow> {
    let mut out: BTreeMap<(String, u64), BudgetWindow> = BTreeMap::new();
    for c in charges {
        let w = out.entry((c.token.clone(), c.window_start)).or_insert_with(|| BudgetWindow {
            token: c.token.clone(),
            start: c.window_start,
            room: c.window_room,
            used: Decimal::ZERO,
            escalations: 0,
            escalated: Decimal::ZERO,
        });
        if c.tier == 1 {
            w.used += c.amount;
        } else {
            w.escalations += 1;
            w.escalated += c.amount;
        }
    }
    out.into_values().collect()
}
