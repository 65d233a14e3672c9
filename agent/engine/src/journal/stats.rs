//! Aggregate counts over the journal, read at scrape time by the metrics and the HTTP API.

use std::collections::BTreeMap;

use super::{Journal, Result, corrupt, db};
use crate::journal::state::IntentState;

impl Journal {
    /// How many intents are in each state; every state of [`IntentState::ALL`] is present (0 when none).
    pub async fn count_by_state(&self) -> Result<BTreeMap<IntentState, u64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM intents GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db("count intents by state"))?;
        let mut counts: BTreeMap<IntentState, u64> = IntentState::ALL.into_iter().map(|s| (s, 0)).collect();
        for (state, n) in rows {
            let state: IntentState = state.parse().map_err(|e| corrupt("intent state", e))?;
            *counts.entry(state).or_default() += u64::try_from(n).unwrap_or(0);
        }
        Ok(counts)
    }
}
