//! The durable approval queue (SQLite, WAL): requests, their state, and every decision with who and when.
use std::path::Path;
use std::str::FromStr;

use alloy::primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Transaction};

use super::error::{Result, RootError};
use super::guard::Assessment;
use super::request::EscalationRequest;

/// The state of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for an approver.
    Pending,
    /// Approved; waiting for the HSM to sign.
    Approved,
    /// Signed; the signature can be fetched.
    Signed,
    /// Rejected by an approver.
    Rejected,
    /// Not approved or signed in time.
    Expired,
}

impl RequestState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Signed => "signed",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    /// Whether no further change can happen.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Signed | Self::Rejected | Self::Expired)
    }
}

impl FromStr for RequestState {
    type Err = RootError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "signed" => Self::Signed,
            "rejected" => Self::Rejected,
            "expired" => Self::Expired,
            other => return Err(RootError::Store(format!("unknown state {other:?}"))),
        })
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored request as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Request id.
    pub id: String,
    /// What was asked.
    pub request: EscalationRequest,
    /// The digest the root rebuilt (and signs once approved).
    pub digest: B256,
    /// Who asked (client name).
    pub requester: String,
    /// Totals per asset the guard counted.
    pub totals: Vec<(Address, U256)>,
    /// Unix seconds when queued.
    pub created_at: u64,
    /// Unix seconds after which an unapproved request expires.
    pub expires_at: u64,
    /// Current state.
    pub state: RequestState,
    /// The 65-byte root signature (r ‖ s ‖ v, v ∈ {27, 28}) once signed.
    pub signature: Option<Bytes>,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    /// When (unix seconds).
    pub decided_at: Option<u64>,
    /// Rejection reason.
    pub reason: Option<String>,
}

/// One recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Request id.
    pub request_id: String,
    /// `queued`, `approve`, `auto_approve`, `reject`, `expire` or `sign`.
    pub action: String,
    /// Who (client name, operator, `auto-approve rule`, `root service`).
    pub by: String,
    /// When (unix seconds).
    pub at: u64,
    /// Reason, for rejections.
    pub reason: Option<String>,
}

/// A request to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewRequest<'a> {
    /// Request id.
    pub id: &'a str,
    /// The payload.
    pub request: &'a EscalationRequest,
    /// Client name.
    pub requester: &'a str,
    /// The guard's assessment.
    pub assessment: &'a Assessment,
    /// Unix seconds now.
    pub now: u64,
    /// When it expires unapproved.
    pub expires_at: u64,
    /// Who approves it at once (the auto-approve rule), if anyone.
    pub auto_approver: Option<&'a str>,
}

/// The queue.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS requests (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, body TEXT NOT NULL, digest TEXT NOT NULL,
        requester TEXT NOT NULL, totals TEXT NOT NULL, created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, deadline INTEGER NOT NULL, state TEXT NOT NULL, signature TEXT,
        decided_by TEXT, decided_at INTEGER, reason TEXT)",
    "CREATE INDEX IF NOT EXISTS requests_digest ON requests(digest)",
    "CREATE INDEX IF NOT EXISTS requests_state ON requests(state)",
    "CREATE TABLE IF NOT EXISTS flows (request_id TEXT NOT NULL, token TEXT NOT NULL, amount TEXT NOT NULL,
        at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS flows_token ON flows(token, at)",
    "CREATE TABLE IF NOT EXISTS decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,
        action TEXT NOT NULL, by TEXT NOT NULL, at INTEGER NOT NULL, reason TEXT)",
];

const COLUMNS: &str = "id, body, digest, requester, totals, created_at, expires_at, state, signature, decided_by, decided_at, reason";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_row(row: &SqliteRow) -> Result<RequestRecord> {
    let get_str = |c: &str| row.try_get::<String, _>(c).map_err(RootError::store);
    let get_opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(RootError::store);
    let get_u64 = |c: &str| row.try_get::<i64, _>(c).map(|v| v.max(0) as u64).map_err(RootError::store);
    let totals: Vec<(Address, U256)> = serde_json::from_str(&get_str("totals")?).map_err(RootError::store)?;
    Ok(RequestRecord {
        id: get_str("id")?,
        request: serde_json::from_str(&get_str("body")?).map_err(RootError::store)?,
        digest: get_str("digest")?.parse().map_err(RootError::store)?,
        requester: get_str("requester")?,
        totals,
        created_at: get_u64("created_at")?,
        expires_at: get_u64("expires_at")?,
        state: get_str("state")?.parse()?,
        signature: get_opt("signature")?.map(|s| s.parse()).transpose().map_err(RootError::store)?,
        decided_by: get_opt("decided_by")?,
        decided_at: row
            .try_get::<Option<i64>, _>("decided_at")
            .map_err(RootError::store)?
            .map(|v| v.max(0) as u64),
        reason: get_opt("reason")?,
    })
}

async fn record(
    tx: &mut Transaction<'_, sqlx::Sqlite>,
    id: &str,
    action: &str,
    by: &str,
    at: u64,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query("INSERT INTO decisions (request_id, action, by, at, reason) VALUES (?, ?, ?, ?, ?)")
        .bind(id)
        .bind(action)
        .bind(by)
        .bind(to_i64(at))
        .bind(reason)
        .execute(&mut **tx)
        .await
        .map_err(RootError::store)?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the queue at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool =
            SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.map_err(RootError::store)?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await.map_err(RootError::store)?;
        }
        Ok(Self { pool })
    }

    async fn one(&self, id: &str) -> Result<RequestRecord> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM requests WHERE id = ?"));
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await.map_err(RootError::store)?;
        from_row(&row.ok_or_else(|| RootError::UnknownRequest(id.to_owned()))?)
    }

    /// The request `id`.
    pub async fn get(&self, id: &str) -> Result<RequestRecord> {
        self.one(id).await
    }

    /// A request for the same digest that is still live (pending, approved or signed).
    pub async fn live_by_digest(&self, digest: B256) -> Result<Option<RequestRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM requests WHERE digest = ? AND state IN ('pending','approved','signed') LIMIT 1"
        ));
        let row = sqlx::query(sql)
            .bind(digest.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(RootError::store)?;
        row.as_ref().map(from_row).transpose()
    }

    /// Requests, newest first, optionally only in `state`.
    pub async fn list(&self, state: Option<RequestState>) -> Result<Vec<RequestRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM requests WHERE (?1 IS NULL OR state = ?1) ORDER BY created_at DESC, id"
        ));
        let rows = sqlx::query(sql)
            .bind(state.map(|s| s.as_str()))
            .fetch_all(&self.pool)
            .await
            .map_err(RootError::store)?;
        rows.iter().map(from_row).collect()
    }

    /// The total of `token` in live requests queued after `since` (unix seconds).
    pub async fn committed_since(&self, token: Address, since: u64) -> Result<U256> {
        let rows = sqlx::query(
            "SELECT f.amount FROM flows f JOIN requests r ON r.id = f.request_id
             WHERE f.token = ? AND f.at > ? AND r.state IN ('pending','approved','signed')",
        )
        .bind(token.to_string())
        .bind(to_i64(since))
        .fetch_all(&self.pool)
        .await
        .map_err(RootError::store)?;
        let mut sum = U256::ZERO;
        for r in rows {
            let a: String = r.try_get("amount").map_err(RootError::store)?;
            sum = sum.saturating_add(a.parse().map_err(RootError::store)?);
        }
        Ok(sum)
    }

    /// Queues a request the guard accepted; `auto_approver` approves it at once.
    pub async fn insert(&self, new: NewRequest<'_>) -> Result<RequestRecord> {
        let NewRequest { id, request, requester, assessment, now, expires_at, auto_approver } = new;
        let totals: Vec<(Address, U256)> = assessment.totals.iter().map(|(a, v)| (*a, *v)).collect();
        let deadline = u64::try_from(request.deadline()).unwrap_or(u64::MAX);
        let state = if auto_approver.is_some() { RequestState::Approved } else { RequestState::Pending };
        let mut tx = self.pool.begin().await.map_err(RootError::store)?;
        sqlx::query(
            "INSERT INTO requests (id, kind, body, digest, requester, totals, created_at, expires_at, deadline, state,
             decided_by, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(request.kind())
        .bind(serde_json::to_string(request).map_err(RootError::store)?)
        .bind(request.digest().to_string())
        .bind(requester)
        .bind(serde_json::to_string(&totals).map_err(RootError::store)?)
        .bind(to_i64(now))
        .bind(to_i64(expires_at))
        .bind(to_i64(deadline))
        .bind(state.as_str())
        .bind(auto_approver)
        .bind(auto_approver.map(|_| to_i64(now)))
        .execute(&mut *tx)
        .await
        .map_err(RootError::store)?;
        for (token, amount) in &totals {
            sqlx::query("INSERT INTO flows (request_id, token, amount, at) VALUES (?, ?, ?, ?)")
                .bind(id)
                .bind(token.to_string())
                .bind(amount.to_string())
                .bind(to_i64(now))
                .execute(&mut *tx)
                .await
                .map_err(RootError::store)?;
        }
        record(&mut tx, id, "queued", requester, now, None).await?;
        if let Some(by) = auto_approver {
            record(&mut tx, id, "auto_approve", by, now, None).await?;
        }
        tx.commit().await.map_err(RootError::store)?;
        self.one(id).await
    }

    /// Moves a pending request to `to` (approved or rejected), recording who and when. An expired
    /// request is marked expired and refused with [`RootError::Expired`].
    async fn decide(
        &self,
        id: &str,
        to: RequestState,
        by: &str,
        reason: Option<&str>,
        now: u64,
    ) -> Result<RequestRecord> {
        let current = self.one(id).await?;
        if current.state == RequestState::Pending && current.expires_at <= now {
            self.expire_due(now).await?;
            return Err(RootError::Expired(id.to_owned()));
        }
        if current.state == RequestState::Expired {
            return Err(RootError::Expired(id.to_owned()));
        }
        let mut tx = self.pool.begin().await.map_err(RootError::store)?;
        let done = sqlx::query(
            "UPDATE requests SET state = ?, decided_by = ?, decided_at = ?, reason = ?
             WHERE id = ? AND state = 'pending' AND expires_at > ?",
        )
        .bind(to.as_str())
        .bind(by)
        .bind(to_i64(now))
        .bind(reason)
        .bind(id)
        .bind(to_i64(now))
        .execute(&mut *tx)
        .await
        .map_err(RootError::store)?;
        if done.rows_affected() == 0 {
            let state = self.one(id).await?.state;
            return Err(RootError::NotPending { id: id.to_owned(), state: state.to_string() });
        }
        let action = if to == RequestState::Approved { "approve" } else { "reject" };
        record(&mut tx, id, action, by, now, reason).await?;
        tx.commit().await.map_err(RootError::store)?;
        self.one(id).await
    }

    /// Approves a pending request.
    pub async fn approve(&self, id: &str, by: &str, now: u64) -> Result<RequestRecord> {
        self.decide(id, RequestState::Approved, by, None, now).await
    }

    /// Rejects a pending request with a reason.
    pub async fn reject(&self, id: &str, by: &str, reason: &str, now: u64) -> Result<RequestRecord> {
        self.decide(id, RequestState::Rejected, by, Some(reason), now).await
    }

    /// Expires pending requests past their approval window and approved ones past their deadline.
    pub async fn expire_due(&self, now: u64) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await.map_err(RootError::store)?;
        let rows = sqlx::query(
            "SELECT id FROM requests WHERE (state = 'pending' AND expires_at <= ?1) OR (state = 'approved' AND deadline < ?1)",
        )
        .bind(to_i64(now))
        .fetch_all(&mut *tx)
        .await
        .map_err(RootError::store)?;
        let ids: Vec<String> = rows.iter().map(|r| r.get::<String, _>("id")).collect();
        for id in &ids {
            sqlx::query("UPDATE requests SET state = 'expired' WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(RootError::store)?;
            record(&mut tx, id, "expire", "root service", now, None).await?;
        }
        tx.commit().await.map_err(RootError::store)?;
        Ok(ids)
    }

    /// Approved requests still waiting for their signature.
    pub async fn awaiting_signature(&self) -> Result<Vec<RequestRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM requests WHERE state = 'approved' AND signature IS NULL ORDER BY created_at"
        ));
        let rows = sqlx::query(sql).fetch_all(&self.pool).await.map_err(RootError::store)?;
        rows.iter().map(from_row).collect()
    }

    /// Stores the root signature of an approved request.
    pub async fn set_signed(&self, id: &str, signature: &[u8], now: u64) -> Result<RequestRecord> {
        let mut tx = self.pool.begin().await.map_err(RootError::store)?;
        let done = sqlx::query(
            "UPDATE requests SET state = 'signed', signature = ? WHERE id = ? AND state = 'approved'",
        )
        .bind(Bytes::copy_from_slice(signature).to_string())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(RootError::store)?;
        if done.rows_affected() == 0 {
            let state = self.one(id).await?.state;
            return Err(RootError::NotPending { id: id.to_owned(), state: state.to_string() });
        }
        record(&mut tx, id, "sign", "root service", now, None).await?;
        tx.commit().await.map_err(RootError::store)?;
        self.one(id).await
    }

    /// Every decision on `id`, oldest first.
    pub async fn decisions(&self, id: &str) -> Result<Vec<Decision>> {
        let rows = sqlx::query(
            "SELECT request_id, action, by, at, reason FROM decisions WHERE request_id = ? ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(RootError::store)?;
        rows.iter()
            .map(|r| {
                Ok(Decision {
                    request_id: r.try_get("request_id").map_err(RootError::store)?,
                    action: r.try_get("action").map_err(RootError::store)?,
                    by: r.try_get("by").map_err(RootError::store)?,
                    at: r.try_get::<i64, _>("at").map_err(RootError::store)?.max(0) as u64,
                    reason: r.try_get("reason").map_err(RootError::store)?,
                })
            })
            .collect()
    }
}
