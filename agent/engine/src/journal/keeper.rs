//! Keeper jobs' runs: one row per (job, work, perform data hash), claimed before anything is
//! signed, so a perform is sent at most once whoever restarts or takes over (see `keeper/`).

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{Journal, JournalError, Result, corrupt, db, now_ms};

/// Where a keeper run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Claimed; nothing signed yet.
    Sending,
    /// Signed and stored before its broadcast; waiting for confirmations.
    Submitted,
    /// Mined and buried under the confirmations, status 1.
    Confirmed,
    /// Mined with status 0.
    Reverted,
    /// Never sent; the reason says why (check or perform would revert, gas, fee or spending cap).
    Skipped,
    /// Not mined and no longer due (its log was reorged away, or it was never broadcast).
    Dropped,
}

impl RunState {
    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sending => "sending",
            Self::Submitted => "submitted",
            Self::Confirmed => "confirmed",
            Self::Reverted => "reverted",
            Self::Skipped => "skipped",
            Self::Dropped => "dropped",
        }
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Sending | Self::Submitted)
    }

    /// Whether the run's gas counts against a spending cap (in flight or paid).
    pub fn spends(self) -> bool {
        matches!(self, Self::Sending | Self::Submitted | Self::Confirmed | Self::Reverted)
    }
}

impl std::str::FromStr for RunState {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "sending" => Self::Sending,
            "submitted" => Self::Submitted,
            "confirmed" => Self::Confirmed,
            "reverted" => Self::Reverted,
            "skipped" => Self::Skipped,
            "dropped" => Self::Dropped,
            other => return Err(format!("unknown keeper run state `{other}`")),
        })
    }
}

/// A run to claim (or a skip to record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// The job's name.
    pub job: String,
    /// What made it due (`block:N`, `every@N`, `schedule@T`, `log:HASH:INDEX`).
    pub work_key: String,
    /// keccak256 of the perform calldata (hex), or `check:…` for a reverting check.
    pub perform_hash: String,
    /// The block the check was pinned to.
    pub block_number: u64,
    /// Its hash (hex).
    pub block_hash: String,
    /// Where the perform goes (hex address).
    pub target: String,
    /// The perform calldata (hex).
    pub calldata: String,
    /// Wei counted against the caps (the worst case while in flight).
    pub spent_wei: u64,
    /// The spending period the run falls in.
    pub period: i64,
}

/// A run as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeeperRun {
    /// Row id.
    pub id: i64,
    /// The job.
    pub job: String,
    /// What made it due.
    pub work_key: String,
    /// keccak256 of the perform calldata, or `check:…`.
    pub perform_hash: String,
    /// Where it stands.
    pub state: RunState,
    /// The block the check was pinned to.
    pub block_number: u64,
    /// Its hash.
    pub block_hash: String,
    /// Where the perform goes.
    pub target: String,
    /// The perform calldata (hex).
    pub calldata: String,
    /// The newest transaction signed for it.
    pub tx_hash: Option<String>,
    /// Its signed raw transaction (hex), stored before the broadcast.
    #[serde(skip)]
    pub raw_tx: Option<String>,
    /// Why it was skipped, dropped or reverted.
    pub reason: Option<String>,
    /// Gas used, once mined.
    pub gas_used: Option<u64>,
    /// Wei counted against the caps.
    pub spent_wei: u64,
    /// The spending period.
    pub period: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// Runs per job and state, for the status and the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobCounts {
    /// The job.
    pub job: String,
    /// The state.
    pub state: RunState,
    /// How many runs.
    pub count: u64,
    /// Gas used by them.
    pub gas_used: u64,
}

const COLUMNS: &str = "id, job, work_key, perform_hash, state, block_number, block_hash, target, calldata, \
     tx_hash, raw_tx, reason, gas_used, spent_wei, period, created_at, updated_at";

fn run_from_row(row: &AnyRow) -> Result<KeeperRun> {
    let get = |e| JournalError::Database { what: "read keeper run", source: e };
    let state: String = row.try_get("state").map_err(get)?;
    let block: i64 = row.try_get("block_number").map_err(get)?;
    let gas_used: Option<i64> = row.try_get("gas_used").map_err(get)?;
    let spent: i64 = row.try_get("spent_wei").map_err(get)?;
    Ok(KeeperRun {
        id: row.try_get("id").map_err(get)?,
        job: row.try_get("job").map_err(get)?,
        work_key: row.try_get("work_key").map_err(get)?,
        perform_hash: row.try_get("perform_hash").map_err(get)?,
        state: state.parse().map_err(|e| corrupt("keeper run state", e))?,
        block_number: u64::try_from(block).map_err(|e| corrupt("keeper run block", e))?,
        block_hash: row.try_get("block_hash").map_err(get)?,
        target: row.try_get("target").map_err(get)?,
        calldata: row.try_get("calldata").map_err(get)?,
        tx_hash: row.try_get("tx_hash").map_err(get)?,
        raw_tx: row.try_get("raw_tx").map_err(get)?,
        reason: row.try_get("reason").map_err(get)?,
        gas_used: gas_used.map(|g| g.max(0) as u64),
        spent_wei: spent.max(0) as u64,
        period: row.try_get("period").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
    })
}

fn wei_i64(wei: u64) -> i64 {
    i64::try_from(wei).unwrap_or(i64::MAX)
}

impl Journal {
    /// Claims `run` in `state` (`sending` to perform, `skipped` with `reason`); `None` when this
    /// (job, work, perform hash) was journaled before, by this process or another: then nothing
    /// may be sent for it.
    pub async fn claim_keeper_run(
        &self,
        run: &NewRun,
        state: RunState,
        reason: Option<&str>,
    ) -> Result<Option<i64>> {
        let now = now_ms();
        let mut tx = self.write().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO keeper_runs (job, work_key, perform_hash, state, block_number, block_hash, target,
               calldata, reason, spent_wei, period, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
             ON CONFLICT (job, work_key, perform_hash) DO NOTHING RETURNING id",
        )
        .bind(&run.job)
        .bind(&run.work_key)
        .bind(&run.perform_hash)
        .bind(state.as_str())
        .bind(run.block_number as i64)
        .bind(&run.block_hash)
        .bind(&run.target)
        .bind(&run.calldata)
        .bind(reason)
        .bind(wei_i64(if state.spends() { run.spent_wei } else { 0 }))
        .bind(run.period)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("claim keeper run"))?;
        tx.commit().await.map_err(db("commit keeper run"))?;
        Ok(id)
    }

    /// Stores the signed transaction of run `id` before it is broadcast (`submitted`).
    pub async fn keeper_run_signed(&self, id: i64, tx_hash: &str, raw_tx: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE keeper_runs SET state = 'submitted', tx_hash = $1, raw_tx = $2, updated_at = $3
             WHERE id = $4 AND state IN ('sending', 'submitted')",
        )
        .bind(tx_hash)
        .bind(raw_tx)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db("store keeper transaction"))?;
        tx.commit().await.map_err(db("commit keeper transaction"))
    }

    /// Ends run `id` in `state`, with the gas used and what it cost (or 0 when nothing was paid).
    /// A mined outcome (`confirmed`, `reverted`) is an observation the chain can tell again (a
    /// run left `submitted` is resumed from its transaction and finds the same receipt), so it is
    /// written without waiting for the disk; the other states wait for it.
    pub async fn finish_keeper_run(
        &self,
        id: i64,
        state: RunState,
        reason: Option<&str>,
        gas_used: Option<u64>,
        spent_wei: u64,
    ) -> Result<()> {
        let mut tx = match state {
            RunState::Confirmed | RunState::Reverted => self.write_relaxed().await?,
            _ => self.write().await?,
        };
        sqlx::query(
            "UPDATE keeper_runs SET state = $1, reason = $2, gas_used = $3, spent_wei = $4, updated_at = $5
             WHERE id = $6",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(gas_used.map(wei_i64))
        .bind(wei_i64(spent_wei))
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db("finish keeper run"))?;
        tx.commit().await.map_err(db("commit keeper run"))
    }

    /// Runs not over yet (`sending`, `submitted`), oldest first: what a restart resumes.
    pub async fn open_keeper_runs(&self) -> Result<Vec<KeeperRun>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM keeper_runs WHERE state IN ('sending', 'submitted') ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list open keeper runs"))?;
        rows.iter().map(run_from_row).collect()
    }

    /// The job and block of the newest `limit` runs that were performed or are being performed
    /// (`sending`, `submitted`, `confirmed`), newest first: the jobs likely due again soon.
    pub async fn recent_keeper_performs(&self, limit: u32) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT job, block_number FROM keeper_runs
             WHERE id IN (SELECT id FROM keeper_runs ORDER BY id DESC LIMIT $1)
             AND state IN ('sending', 'submitted', 'confirmed') ORDER BY id DESC",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list recent keeper performs"))?;
        rows.iter()
            .map(|row| {
                let get = |e| JournalError::Database { what: "list recent keeper performs", source: e };
                let block: i64 = row.try_get("block_number").map_err(get)?;
                Ok((
                    row.try_get("job").map_err(get)?,
                    u64::try_from(block).map_err(|e| corrupt("keeper run block", e))?,
                ))
            })
            .collect()
    }

    /// Wei counted against the caps in `period`: one job's, or every job's with `None`.
    pub async fn keeper_spent(&self, job: Option<&str>, period: i64) -> Result<u128> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT spent_wei FROM keeper_runs WHERE period = $1 AND ($2 = '' OR job = $2)
             AND state IN ('sending', 'submitted', 'confirmed', 'reverted')",
        )
        .bind(period)
        .bind(job.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(db("sum keeper spending"))?;
        Ok(rows.into_iter().map(|w| w.max(0) as u128).sum())
    }

    /// The newest runs of `job` (every job with `None`), at most `limit`.
    pub async fn keeper_runs(&self, job: Option<&str>, limit: u32) -> Result<Vec<KeeperRun>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM keeper_runs WHERE ($1 = '' OR job = $1) ORDER BY id DESC LIMIT $2"
        )))
        .bind(job.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list keeper runs"))?;
        rows.iter().map(run_from_row).collect()
    }

    /// Runs per (job, state) with the gas they used.
    pub async fn keeper_counts(&self) -> Result<Vec<JobCounts>> {
        let rows = sqlx::query("SELECT job, state, gas_used FROM keeper_runs ORDER BY job, state")
            .fetch_all(&self.pool)
            .await
            .map_err(db("count keeper runs"))?;
        let mut out: Vec<JobCounts> = Vec::new();
        for row in &rows {
            let get = |e| JournalError::Database { what: "count keeper runs", source: e };
            let job: String = row.try_get("job").map_err(get)?;
            let state: String = row.try_get("state").map_err(get)?;
            let state: RunState = state.parse().map_err(|e| corrupt("keeper run state", e))?;
            let gas: Option<i64> = row.try_get("gas_used").map_err(get)?;
            match out.last_mut() {
                Some(last) if last.job == job && last.state == state => {
                    last.count += 1;
                    last.gas_used += gas.unwrap_or(0).max(0) as u64;
                }
                _ => out.push(JobCounts { job, state, count: 1, gas_used: gas.unwrap_or(0).max(0) as u64 }),
            }
        }
        Ok(out)
    }
}
