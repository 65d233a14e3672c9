//! The period caps' rolling windows: per (asset, period) a running total of the live flows after a
//! horizon, kept in the transactions that add flows or end requests, so a window's total is the
//! stored total minus the few flows that aged out since its horizon, never a scan of the window.
//!
//! Amounts are alloy's [`U256`], stored as decimal text (SQLite integers are 64-bit).
use alloy::primitives::{Address, U256};
use rusqlite::{Connection, OptionalExtension, params};

use super::super::error::{Result, RootError};
use super::Store;
use super::records::to_i64;

/// A rolling-window total as read for the guard, and the window it was read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRead {
    /// Asset.
    pub token: Address,
    /// Window length, seconds.
    pub period: u64,
    /// Start of the window read (exclusive): flows after it count.
    pub since: u64,
    /// The total of live flows after `since`.
    pub total: U256,
    /// Whether `window_totals` already had a row for (token, period) when it was read.
    pub stored: bool,
}

/// A stored running total: the live flows of its asset after `horizon`.
struct Running {
    horizon: u64,
    total: U256,
}

/// An amount as stored.
pub(super) fn amount_text(amount: U256) -> String {
    amount.to_string()
}

fn parse_amount(text: &str, table: &'static str) -> Result<U256> {
    text.parse().map_err(RootError::corrupt(table, "amount"))
}

/// The live flows of `token` at `after < at <= until`, summed (saturating at `U256::MAX`).
fn sum_flows(db: &Connection, token: &str, after: u64, until: u64) -> Result<U256> {
    let fail = || RootError::store("sum the flows of a window");
    let mut stmt = db
        .prepare_cached("SELECT amount FROM flows WHERE token = ? AND live = 1 AND at > ? AND at <= ?")
        .map_err(fail())?;
    let mut rows = stmt.query(params![token, to_i64(after), to_i64(until)]).map_err(fail())?;
    let mut sum = U256::ZERO;
    while let Some(row) = rows.next().map_err(fail())? {
        let amount: String = row.get(0).map_err(fail())?;
        sum = sum.saturating_add(parse_amount(&amount, "flows")?);
    }
    Ok(sum)
}

fn running(db: &Connection, token: &str, period: u64) -> Result<Option<Running>> {
    let fail = || RootError::store("read a window total");
    let mut stmt = db
        .prepare_cached("SELECT horizon, total FROM window_totals WHERE token = ? AND period = ?")
        .map_err(fail())?;
    let row = stmt
        .query_row(params![token, to_i64(period)], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })
        .optional()
        .map_err(fail())?;
    let Some((horizon, total)) = row else { return Ok(None) };
    Ok(Some(Running { horizon: horizon.max(0) as u64, total: parse_amount(&total, "window_totals")? }))
}

impl Store {
    /// The total of `token` in live requests queued after `since` (unix seconds), summed over
    /// every flow of the window.
    pub fn committed_since(&self, token: Address, since: u64) -> Result<U256> {
        sum_flows(&self.conn(), &token.to_string(), since, u64::MAX)
    }

    /// The total of `token` in live requests queued after `since`, for a window of `period`
    /// seconds: the stored running total minus the flows that aged out since its horizon (few), or
    /// the full sum when there is no usable row yet.
    pub fn window_total(&self, token: Address, period: u64, since: u64) -> Result<WindowRead> {
        let conn = self.conn();
        let key = token.to_string();
        let stored = running(&conn, &key, period)?;
        let total = match &stored {
            Some(r) if since >= r.horizon => {
                r.total.saturating_sub(sum_flows(&conn, &key, r.horizon, since)?)
            }
            _ => sum_flows(&conn, &key, since, u64::MAX)?,
        };
        Ok(WindowRead { token, period, since, total, stored: stored.is_some() })
    }
}

/// Moves a stored window's horizon forward to `w.since`, subtracting the flows that aged out, or
/// creates the row from the full sum when there is none. Re-read inside the transaction: another
/// process may have changed the row since `w` was read.
pub(super) fn advance(tx: &Connection, w: &WindowRead) -> Result<()> {
    let token = w.token.to_string();
    let total = match running(tx, &token, w.period)? {
        Some(r) if r.horizon < w.since => r.total.saturating_sub(sum_flows(tx, &token, r.horizon, w.since)?),
        Some(_) => return Ok(()),
        None => sum_flows(tx, &token, w.since, u64::MAX)?,
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO window_totals (token, period, horizon, total) VALUES (?, ?, ?, ?)",
    )
    .and_then(|mut s| s.execute(params![token, to_i64(w.period), to_i64(w.since), amount_text(total)]))
    .map_err(RootError::store("advance a window total"))?;
    Ok(())
}

/// Applies `change` to every running total of `token` whose window holds a flow at `at`.
fn shift(tx: &Connection, token: &str, at: u64, change: impl Fn(U256) -> U256) -> Result<()> {
    let rows: Vec<(i64, String)> = {
        let fail = || RootError::store("read the window totals of a flow");
        let mut stmt = tx
            .prepare_cached("SELECT period, total FROM window_totals WHERE token = ? AND horizon < ?")
            .map_err(fail())?;
        let rows =
            stmt.query_map(params![token, to_i64(at)], |r| Ok((r.get(0)?, r.get(1)?))).map_err(fail())?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail())?
    };
    let mut update = tx
        .prepare_cached("UPDATE window_totals SET total = ? WHERE token = ? AND period = ?")
        .map_err(RootError::store("update a window total"))?;
    for (period, total) in rows {
        let total = change(parse_amount(&total, "window_totals")?);
        update
            .execute(params![amount_text(total), token, period])
            .map_err(RootError::store("update a window total"))?;
    }
    Ok(())
}

/// Adds a new flow of `amount` at `at` to the running totals of `token`.
pub(super) fn add_flow(tx: &Connection, token: &str, amount: U256, at: u64) -> Result<()> {
    shift(tx, token, at, |total| total.saturating_add(amount))
}

/// A request that will not be signed stops counting against the caps: out of the running window
/// totals, its flows no longer live.
pub(super) fn stop_counting(tx: &Connection, id: &str) -> Result<()> {
    let flows: Vec<(String, String, i64)> = {
        let fail = || RootError::store("read the flows of a request");
        let mut stmt = tx
            .prepare_cached("SELECT token, amount, at FROM flows WHERE request_id = ? AND live = 1")
            .map_err(fail())?;
        let rows = stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(fail())?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail())?
    };
    for (token, amount, at) in flows {
        let amount = parse_amount(&amount, "flows")?;
        shift(tx, &token, at.max(0) as u64, |total| total.saturating_sub(amount))?;
    }
    tx.prepare_cached("UPDATE flows SET live = 0 WHERE request_id = ?")
        .and_then(|mut s| s.execute(params![id]))
        .map_err(RootError::store("stop counting a request's flows"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Durability;
    use super::super::records::NewRequest;
    use super::super::testing::{queue, request, token};
    use super::*;
    use crate::root::guard::Assessment;

    #[tokio::test]
    async fn the_window_sum_counts_live_requests_after_since_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite")).await.unwrap();
        let huge = U256::MAX - U256::from(100);
        queue(&store, "a", huge, 1_000);
        queue(&store, "b", U256::from(5), 2_000);
        queue(&store, "c", U256::from(7), 2_050);
        assert_eq!(store.committed_since(token(), 999).unwrap(), huge + U256::from(12));
        assert_eq!(store.committed_since(token(), 1_000).unwrap(), U256::from(12));
        store.reject("b", "alice", "no", 2_010).unwrap();
        assert_eq!(store.committed_since(token(), 1_000).unwrap(), U256::from(7));
        // "a" expired unapproved: no longer counted.
        assert_eq!(store.expire_due(2_060).unwrap(), ["a"]);
        assert_eq!(store.committed_since(token(), 0).unwrap(), U256::from(7));
        assert_eq!(store.committed_since(Address::ZERO, 0).unwrap(), U256::ZERO);
    }

    #[tokio::test]
    async fn a_window_saturates_at_the_largest_amount() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite")).await.unwrap();
        queue(&store, "a", U256::MAX, 1_000);
        queue(&store, "b", U256::MAX, 1_001);
        assert_eq!(store.committed_since(token(), 0).unwrap(), U256::MAX);
    }

    #[tokio::test]
    async fn running_window_totals_always_equal_the_full_sum() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_with(&dir.path().join("w.sqlite"), Durability::ProcessCrashOnly).await.unwrap();
        let period = 100;
        let (mut t, mut seed, mut ids) = (1_000u64, 0x9e37_79b9_7f4a_7c15u64, Vec::new());
        let mut kinds = [0usize; 3];
        for step in 0..300 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            t += seed % 23;
            let since = t.saturating_sub(period);
            let read = store.window_total(token(), period, since).unwrap();
            assert_eq!(read.total, store.committed_since(token(), since).unwrap(), "step {step}");
            match seed % 5 {
                0 if !ids.is_empty() => {
                    let id: &String = &ids[(seed as usize / 5) % ids.len()];
                    // Already decided or expired ones are refused; that changes nothing.
                    let _ = store.reject(id, "alice", "no", t);
                    kinds[0] += 1;
                }
                1 => {
                    store.expire_due(t).unwrap();
                    kinds[1] += 1;
                }
                _ => {
                    let id = format!("r{step}");
                    let amount = U256::from(seed >> 40) << ((seed % 160) as usize);
                    let assessment = Assessment { totals: [(token(), amount)].into(), auto_approve: false };
                    let req = request(step);
                    let new = NewRequest {
                        id: &id,
                        request: &req,
                        requester: "agent",
                        assessment: &assessment,
                        now: t,
                        expires_at: t + 40,
                        auto_approver: None,
                        signature: None,
                        windows: &[read],
                    };
                    store.insert(new).unwrap();
                    ids.push(id);
                    kinds[2] += 1;
                }
            }
        }
        assert!(kinds.iter().all(|k| *k > 20), "every kind of change was exercised: {kinds:?}");
    }
}
