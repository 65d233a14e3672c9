//! The tier-1 budget a replayed policy would use, window by window, and which of its intents would
//! have needed the root (escalation) — what `policy simulate` and `policy diff` report.
//!
//! The module's rule (`TreasuryModule.sol`, `treasury_chain::tiers::classify`): per budgeted
//! asset, a window opens at the first outflow after the previous one ended and lasts the asset's
//! period; tier 1 may move at most the limit within it, and an asset without a budget cannot move
//! at tier 1 at all (nor be bought by a swap). In a replay the chain's own budget state at a block
//! does not include the replayed intents (they never executed), so a window's room is what the
//! module had left at the block where the replay opened it, minus what the replay moved since.
//!
//! Judged per intent, on budgets only: the module's allow-lists (the token's `transfer`, the
//! router) are not read in a replay; the agent batches a firing's intents only while the batch
//! stays tier 1, so per-intent judgement is what it does.

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
    /// Unix start of the budget window it falls in (0: the asset has no budget).
    pub window_start: u64,
    /// Unix end (exclusive) of that window.
    pub window_end: u64,
    /// The window's tier-1 room (what the module had left when the replay opened it).
    pub window_room: Decimal,
    /// 1 when it fits the window's tier-1 room, 2 when it would need the root.
    pub tier: u8,
    /// Why it would need the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One budget window of one asset over a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetWindow {
    /// Asset symbol.
    pub token: String,
    /// The fixture it was judged on (fixture comparisons: each fixture is its own moment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Whether the module budgets the asset (without a budget, every outflow needs the root).
    pub budgeted: bool,
    /// Unix start of the window.
    pub start: u64,
    /// Unix end (exclusive) of the window.
    pub end: u64,
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
        let (token, amount, buys) = match &intent.action {
            Action::Pay { token, amount, .. } => (token, *amount, None),
            Action::Swap { sell, buy, amount, .. } => (sell, *amount, Some(buy)),
            _ => return None,
        };
        let asset = snap.asset(token)?;
        // A snapshot read without the module (fixtures, no `--module`) says nothing of budgets
        // an asset lacks; one read with it does: no budget, no tier 1.
        let module_known = snap.module != alloy::primitives::Address::ZERO;
        let unbudgeted = |symbol: &str| snap.asset(symbol).is_some_and(|a| a.budget.is_none());
        let Some(budget) = asset.budget.as_ref() else {
            return module_known.then(|| BudgetCharge {
                key: intent.key.clone(),
                token: token.clone(),
                amount,
                window_start: 0,
                window_end: 0,
                window_room: Decimal::ZERO,
                tier: 2,
                reason: Some(format!("{token} has no tier-1 budget: it cannot move without the root")),
            });
        };
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
        let over = open.used.checked_add(amount).is_none_or(|total| total > open.room);
        let reason = if over {
            Some(format!("over the tier-1 budget left ({} {token})", (open.room - open.used).normalize()))
        } else {
            buys.filter(|b| module_known && unbudgeted(b))
                .map(|b| format!("buys {b}, which has no tier-1 budget"))
        };
        if reason.is_none() {
            open.used += amount;
        }
        Some(BudgetCharge {
            key: intent.key.clone(),
            token: token.clone(),
            amount,
            window_start: open.start,
            window_end: open.end,
            window_room: open.room,
            tier: if reason.is_none() { 1 } else { 2 },
            reason,
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
            at: None,
            budgeted: c.window_start != 0 || c.window_end != 0,
            start: c.window_start,
            end: c.window_end,
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

impl std::fmt::Display for BudgetWindow {
    /// `USDC window 2026-12-03 10:00:00Z – 2026-12-04 10:00:00Z: 40000 of 50000 used at tier 1,
    /// 1 escalation(s) to the root (20000 USDC)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = |t: u64| crate::period::utc(t).format("%Y-%m-%d %H:%M:%SZ").to_string();
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        if self.budgeted {
            write!(
                f,
                "{} window {} – {}: {} of {} used at tier 1",
                self.token,
                time(self.start),
                time(self.end),
                self.used.normalize(),
                self.room.normalize()
            )?;
        } else {
            write!(f, "{} has no tier-1 budget", self.token)?;
        }
        if self.escalations > 0 {
            write!(
                f,
                ", {} escalation(s) to the root ({} {})",
                self.escalations,
                self.escalated.normalize(),
                self.token
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, B256, U256};
    use treasury_chain::{AssetState, BudgetState};

    fn snapshot(timestamp: u64, module: Address, usdc_room: Option<u64>) -> Snapshot {
        let asset = |symbol: &str, budget: Option<u64>| AssetState {
            symbol: symbol.into(),
            token: Address::repeat_byte(symbol.len() as u8),
            decimals: 6,
            balance: U256::from(1_000_000_000_000u64),
            price: None,
            budget: budget.map(|room| BudgetState {
                limit: U256::from(room),
                period_secs: 86_400,
                spent: U256::ZERO,
                remaining: U256::from(room),
            }),
        };
        Snapshot {
            chain_id: 1,
            block_number: 1,
            block_hash: B256::ZERO,
            timestamp,
            safe: Address::ZERO,
            module,
            module_nonce: U256::ZERO,
            paused: false,
            assets: vec![asset("USDC", usdc_room), asset("WBTC", None)],
        }
    }

    fn pay(key: &str, token: &str, amount: i64) -> Intent {
        Intent {
            policy: "p".into(),
            key: key.into(),
            memo: None,
            action: Action::Pay {
                to: Address::repeat_byte(0xa1),
                recipient: Some("alice".into()),
                token: token.into(),
                amount: Decimal::from(amount),
            },
        }
    }

    #[test]
    fn a_window_fills_then_escalates_and_a_new_window_starts_after_the_period() {
        let module = Address::repeat_byte(0x4d);
        let mut tracker = BudgetTracker::default();
        // 50 USDC of room (6 decimals).
        let snap = snapshot(1_000, module, Some(50_000_000));
        let first =
            tracker.charge(&snap, &[pay("a", "USDC", 30), pay("b", "USDC", 30), pay("c", "USDC", 20)]);
        assert_eq!(first.iter().map(|c| c.tier).collect::<Vec<_>>(), [1, 2, 1]);
        assert_eq!(first[1].reason.as_deref(), Some("over the tier-1 budget left (20 USDC)"));
        let next_day =
            tracker.charge(&snapshot(1_000 + 86_400, module, Some(50_000_000)), &[pay("d", "USDC", 40)]);
        assert_eq!(next_day[0].tier, 1);
        let w = windows(first.iter().chain(&next_day));
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].used, w[0].escalations, w[0].escalated), (Decimal::from(50), 1, Decimal::from(30)));
        assert_eq!((w[0].start, w[0].end), (1_000, 87_400));
        assert_eq!(
            w[0].to_string(),
            "USDC window 1970-01-01 00:16:40Z – 1970-01-02 00:16:40Z: 50 of 50 used at tier 1, \
             1 escalation(s) to the root (30 USDC)"
        );
    }

    #[test]
    fn an_asset_without_a_budget_escalates_when_the_module_was_read_and_is_unknown_otherwise() {
        let mut tracker = BudgetTracker::default();
        let with_module = snapshot(1_000, Address::repeat_byte(0x4d), Some(50_000_000));
        let charges = tracker.charge(&with_module, &[pay("a", "WBTC", 1)]);
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0].tier, 2);
        assert!(charges[0].reason.as_deref().unwrap().contains("WBTC has no tier-1 budget"));
        let w = windows(&charges);
        assert!(!w[0].budgeted);
        assert_eq!(w[0].to_string(), "WBTC has no tier-1 budget, 1 escalation(s) to the root (1 WBTC)");
        // Fixtures and replays without --module do not know the module's budgets.
        let without = snapshot(1_000, Address::ZERO, None);
        assert!(BudgetTracker::default().charge(&without, &[pay("a", "WBTC", 1)]).is_empty());
    }
}
