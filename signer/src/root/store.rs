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
use super::sql_batch::Batch;

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
    /// The root signature, when an auto-approved request was signed before it is stored: it is
    /// then recorded as signed, with its decisions, in the same transaction (and only returned to
    /// the requester after that commit).
    pub signature: Option<&'a [u8]>,
    /// The window totals read for the guard ([`Store::window_total`]), advanced in the same
    /// transaction.
    pub windows: &'a [WindowRead],
}

/// A rolling-window total as read for the guard, and what it takes to advance its stored row.
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
    /// Whether `window_totals` already has a row for (token, period).
    pub stored: bool,
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
    "CREATE INDEX IF NOT EXISTS flows_request ON flows(request_id)",
    "CREATE TABLE IF NOT EXISTS decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,
        action TEXT NOT NULL, by TEXT NOT NULL, at INTEGER NOT NULL, reason TEXT)",
    // The service's authentication of a human approval (see `RootService::approve`).
    "CREATE TABLE IF NOT EXISTS approval_tags (request_id TEXT PRIMARY KEY, tag TEXT NOT NULL)",
];

/// Schema version 1 adds to `flows` whether the request still counts (`live`: pending, approved or
/// signed) and the amount as eight 32-bit limbs (`l0` least significant), so the guard's window sum
/// is one indexed `SUM` per limb in SQLite instead of reading every row into Rust. Version 2 makes
/// that index covering (the sum reads the index only, never the table). Version 3 adds
/// `window_totals`: per (asset, period) the limb sums of the live flows after `horizon`, kept in the
/// transactions that add flows or end requests, so a window total is the stored row minus the few
/// flows that aged out since it was last advanced.
const LIMBS: usize = 8;
const SCHEMA_VERSION: i64 = 3;

/// How far a commit is durable before the call that made it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is flushed to the disk (`synchronous = FULL`): a decision survives a power loss
    /// or OS crash once recorded. What the service uses.
    #[default]
    Flushed,
    /// Commits reach the WAL in the OS page cache (`synchronous = NORMAL`): they survive a crash of
    /// the process, not of the machine. Only for measuring what the flush costs (`treasury root bench`).
    ProcessCrashOnly,
}

/// The amount as eight 32-bit limbs, least significant first.
fn limbs(amount: U256) -> [i64; LIMBS] {
    let words = amount.as_limbs();
    let mut out = [0i64; LIMBS];
    for (i, w) in words.iter().enumerate() {
        out[2 * i] = (w & 0xffff_ffff) as i64;
        out[2 * i + 1] = (w >> 32) as i64;
    }
    out
}

/// Reassembles per-limb sums (each below 2^63) into a total, saturating at `U256::MAX`.
fn from_limb_sums(sums: [i64; LIMBS]) -> U256 {
    let mut total = U256::ZERO;
    for (i, sum) in sums.iter().enumerate() {
        let part = U256::from((*sum).max(0) as u64);
        let shift = 32 * i;
        if part.bit_len() + shift > 256 {
            return U256::MAX;
        }
        total = total.saturating_add(part << shift);
    }
    total
}

/// `l0, l1, …, l7`.
fn limb_list() -> String {
    (0..LIMBS).map(|i| format!("l{i}")).collect::<Vec<_>>().join(", ")
}

/// `COALESCE(SUM(l0),0), …` over the limbs.
fn limb_sums() -> String {
    (0..LIMBS).map(|i| format!("COALESCE(SUM(l{i}),0)")).collect::<Vec<_>>().join(", ")
}

/// A request that will not be signed stops counting against the caps: out of the running window
/// totals, its flows no longer live.
async fn stop_counting(tx: &mut Transaction<'_, sqlx::Sqlite>, id: &str) -> Result<()> {
    drop_from_windows(tx, id).await?;
    sqlx::query("UPDATE flows SET live = 0 WHERE request_id = ?")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(RootError::store)?;
    Ok(())
}

/// Subtracts from every `window_totals` row the live flows of request `id` inside its window: run
/// before the request's flows are marked dead.
async fn drop_from_windows(tx: &mut Transaction<'_, sqlx::Sqlite>, id: &str) -> Result<()> {
    let sets = (0..LIMBS)
        .map(|i| {
            format!(
                "l{i} = l{i} - (SELECT COALESCE(SUM(f.l{i}),0) FROM flows f WHERE f.request_id = ?1
                 AND f.token = window_totals.token AND f.live = 1 AND f.at > window_totals.horizon)"
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE window_totals SET {sets} WHERE token IN (SELECT token FROM flows WHERE request_id = ?1)"
    )))
    .bind(id)
    .execute(&mut **tx)
    .await
    .map_err(RootError::store)?;
    Ok(())
}

/// Moves a stored window's horizon forward to `w.since`, subtracting the flows that aged out, or
/// creates the row from the full sum when there was none.
fn advance_window(batch: &mut Batch, w: &WindowRead) -> Result<()> {
    let token = w.token.to_string();
    let (period, since) = (to_i64(w.period), to_i64(w.since));
    let mut arg = |v: Arg| {
        let placeholder = match v {
            Arg::Text(t) => batch.arg(t),
            Arg::Int(i) => batch.arg(i),
        };
        placeholder.map_err(RootError::store)
    };
    let sql = if w.stored {
        let mut sets = Vec::with_capacity(LIMBS);
        for i in 0..LIMBS {
            let (t, s) = (arg(Arg::Text(token.clone()))?, arg(Arg::Int(since))?);
            sets.push(format!(
                "l{i} = l{i} - (SELECT COALESCE(SUM(f.l{i}),0) FROM flows f WHERE f.token = {t} AND f.live = 1
                 AND f.at > window_totals.horizon AND f.at <= {s})"
            ));
        }
        let (h, t, p, s) = (
            arg(Arg::Int(since))?,
            arg(Arg::Text(token.clone()))?,
            arg(Arg::Int(period))?,
            arg(Arg::Int(since))?,
        );
        format!(
            "UPDATE window_totals SET {}, horizon = {h} WHERE token = {t} AND period = {p} AND horizon < {s}",
            sets.join(", ")
        )
    } else {
        let (t, p, s) = (arg(Arg::Text(token.clone()))?, arg(Arg::Int(period))?, arg(Arg::Int(since))?);
        let (t2, s2) = (arg(Arg::Text(token))?, arg(Arg::Int(since))?);
        format!(
            "INSERT OR IGNORE INTO window_totals (token, period, horizon, {}) SELECT {t}, {p}, {s}, {} FROM flows
             WHERE token = {t2} AND live = 1 AND at > {s2}",
            limb_list(),
            limb_sums()
        )
    };
    batch.push(&sql);
    Ok(())
}

/// A parameter of [`advance_window`].
enum Arg {
    Text(String),
    Int(i64),
}

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

/// Creates the queue file readable and writable by its owner only (0600) when it is absent;
/// SQLite gives its journal and WAL files the same mode.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(RootError::Store(format!("creating {}: {e}", path.display()))),
    }
}

/// Who records signatures in the decision log.
const SIGNER: &str = "root service";

/// Records several decisions on `id` at `at` (no reason) in one statement.
fn record_all(batch: &mut Batch, id: &str, decisions: &[(&str, &str)], at: u64) -> Result<()> {
    let mut rows = Vec::with_capacity(decisions.len());
    for (action, by) in decisions {
        let values = [
            batch.arg(id.to_owned()),
            batch.arg(action.to_string()),
            batch.arg(by.to_string()),
            batch.arg(to_i64(at)),
        ]
        .into_iter()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(RootError::store)?;
        rows.push(format!("({}, NULL)", values.join(", ")));
    }
    batch.push(&format!(
        "INSERT INTO decisions (request_id, action, by, at, reason) VALUES {}",
        rows.join(", ")
    ));
    Ok(())
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
    /// Opens (creating if needed) the queue at `path`, every commit flushed to disk.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Durability::Flushed).await
    }

    /// Opens the queue at `path` with the given durability of commits.
    pub async fn open_with(path: &Path, durability: Durability) -> Result<Self> {
        create_private(path)?;
        let sync = match durability {
            Durability::Flushed => SqliteSynchronous::Full,
            Durability::ProcessCrashOnly => SqliteSynchronous::Normal,
        };
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(std::time::Duration::from_secs(10));
        // No liveness ping when a connection is taken from the pool: an SQLite connection is a
        // file in this process, and the ping is a round trip to its thread on every query.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(RootError::store)?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await.map_err(RootError::store)?;
        }
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Brings an older queue to [`SCHEMA_VERSION`] in one transaction (idempotent).
    async fn migrate(&self) -> Result<()> {
        // IMMEDIATE: a service and a CLI opening the same queue migrate one after the other.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(RootError::store)?;
        let version: i64 =
            sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await.map_err(RootError::store)?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        if version < 1 {
            self.migrate_v1(&mut tx).await?;
        }
        let mut steps = vec![
            "DROP INDEX IF EXISTS flows_window".to_owned(),
            format!(
                "CREATE INDEX IF NOT EXISTS flows_window_sum ON flows(token, live, at, {})",
                (0..LIMBS).map(|i| format!("l{i}")).collect::<Vec<_>>().join(", ")
            ),
        ];
        steps.push(format!(
            "CREATE TABLE IF NOT EXISTS window_totals (token TEXT NOT NULL, period INTEGER NOT NULL,
             horizon INTEGER NOT NULL, {}, PRIMARY KEY (token, period))",
            (0..LIMBS).map(|i| format!("l{i} INTEGER NOT NULL")).collect::<Vec<_>>().join(", ")
        ));
        steps.push(format!("PRAGMA user_version = {SCHEMA_VERSION}"));
        for stmt in steps {
            sqlx::query(sqlx::AssertSqlSafe(stmt)).execute(&mut *tx).await.map_err(RootError::store)?;
        }
        tx.commit().await.map_err(RootError::store)
    }

    /// Version 1: the `live` flag and the limbs, backfilled from `amount` and the request states.
    async fn migrate_v1(&self, tx: &mut Transaction<'_, sqlx::Sqlite>) -> Result<()> {
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('flows')")
            .fetch_all(&mut **tx)
            .await
            .map_err(RootError::store)?;
        if !columns.iter().any(|c| c == "live") {
            let mut adds = vec!["ALTER TABLE flows ADD COLUMN live INTEGER NOT NULL DEFAULT 1".to_owned()];
            adds.extend(
                (0..LIMBS).map(|i| format!("ALTER TABLE flows ADD COLUMN l{i} INTEGER NOT NULL DEFAULT 0")),
            );
            for add in adds {
                sqlx::query(sqlx::AssertSqlSafe(add)).execute(&mut **tx).await.map_err(RootError::store)?;
            }
        }
        let rows = sqlx::query("SELECT rowid, amount FROM flows")
            .fetch_all(&mut **tx)
            .await
            .map_err(RootError::store)?;
        for row in rows {
            let rowid: i64 = row.try_get("rowid").map_err(RootError::store)?;
            let amount: U256 = row
                .try_get::<String, _>("amount")
                .map_err(RootError::store)?
                .parse()
                .map_err(RootError::store)?;
            let l = limbs(amount);
            sqlx::query(
                "UPDATE flows SET l0 = ?, l1 = ?, l2 = ?, l3 = ?, l4 = ?, l5 = ?, l6 = ?, l7 = ? WHERE rowid = ?",
            )
            .bind(l[0]).bind(l[1]).bind(l[2]).bind(l[3]).bind(l[4]).bind(l[5]).bind(l[6]).bind(l[7])
            .bind(rowid)
            .execute(&mut **tx)
            .await
            .map_err(RootError::store)?;
        }
        sqlx::query(
            "UPDATE flows SET live = COALESCE((SELECT state IN ('pending','approved','signed') FROM requests
             WHERE requests.id = flows.request_id), 0)",
        )
        .execute(&mut **tx)
        .await
        .map_err(RootError::store)?;
        Ok(())
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

    /// The total of `token` in live requests queued after `since` (unix seconds): one indexed
    /// `SUM` per 32-bit limb, independent of how many requests the window holds in Rust terms.
    pub async fn committed_since(&self, token: Address, since: u64) -> Result<U256> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM flows WHERE token = ? AND live = 1 AND at > ?",
            limb_sums()
        )))
        .bind(token.to_string())
        .bind(to_i64(since))
        .fetch_one(&self.pool)
        .await
        .map_err(RootError::store)?;
        let mut sums = [0i64; LIMBS];
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = row.try_get(i).map_err(RootError::store)?;
        }
        Ok(from_limb_sums(sums))
    }

    /// The total of `token` in live requests queued after `since`, for a window of `period`
    /// seconds: the stored running total minus the flows that aged out since its horizon (few), or
    /// the full sum when there is no usable row yet.
    pub async fn window_total(&self, token: Address, period: u64, since: u64) -> Result<WindowRead> {
        // One statement (one round trip): the stored row and, per limb, the flows aged out since
        // its horizon subtracted.
        let kept = (0..LIMBS)
            .map(|i| {
                format!(
                    "w.l{i} - (SELECT COALESCE(SUM(f.l{i}),0) FROM flows f WHERE f.token = w.token AND f.live = 1
                     AND f.at > w.horizon AND f.at <= ?3)"
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT w.horizon, {kept} FROM window_totals w WHERE w.token = ?1 AND w.period = ?2"
        )))
        .bind(token.to_string())
        .bind(to_i64(period))
        .bind(to_i64(since))
        .fetch_optional(&self.pool)
        .await
        .map_err(RootError::store)?;
        let stored = row.is_some();
        let read = |total| WindowRead { token, period, since, total, stored };
        let Some(row) = row else { return Ok(read(self.committed_since(token, since).await?)) };
        let horizon = row.try_get::<i64, _>(0).map_err(RootError::store)?.max(0) as u64;
        if since < horizon {
            return Ok(read(self.committed_since(token, since).await?));
        }
        let mut sums = [0i64; LIMBS];
        for (i, sum) in sums.iter_mut().enumerate() {
            *sum = row.try_get(i + 1).map_err(RootError::store)?;
        }
        Ok(read(from_limb_sums(sums)))
    }

    /// Queues a request the guard accepted; `auto_approver` approves it at once, and a `signature`
    /// stores it signed. One transaction; the record is returned without reading it back.
    pub async fn insert(&self, new: NewRequest<'_>) -> Result<RequestRecord> {
        let NewRequest {
            id,
            request,
            requester,
            assessment,
            now,
            expires_at,
            auto_approver,
            signature,
            windows,
        } = new;
        if signature.is_some() && auto_approver.is_none() {
            return Err(RootError::Store(format!("request {id}: signed without an approval")));
        }
        let totals: Vec<(Address, U256)> = assessment.totals.iter().map(|(a, v)| (*a, *v)).collect();
        let deadline = u64::try_from(request.deadline()).unwrap_or(u64::MAX);
        let state = match (auto_approver, signature) {
            (_, Some(_)) => RequestState::Signed,
            (Some(_), None) => RequestState::Approved,
            (None, None) => RequestState::Pending,
        };
        let signature = signature.map(Bytes::copy_from_slice);
        let digest = request.digest();
        // Every statement of the insert goes to SQLite in one batch: one round trip to the
        // connection's thread instead of one per statement, inside the same transaction.
        let mut batch = Batch::default();
        let values = [
            batch.arg(id.to_owned()),
            batch.arg(request.kind().to_owned()),
            batch.arg(serde_json::to_string(request).map_err(RootError::store)?),
            batch.arg(digest.to_string()),
            batch.arg(requester.to_owned()),
            batch.arg(serde_json::to_string(&totals).map_err(RootError::store)?),
            batch.arg(to_i64(now)),
            batch.arg(to_i64(expires_at)),
            batch.arg(to_i64(deadline)),
            batch.arg(state.as_str()),
            batch.arg(signature.as_ref().map(|s| s.to_string())),
            batch.arg(auto_approver.map(str::to_owned)),
            batch.arg(auto_approver.map(|_| to_i64(now))),
        ]
        .into_iter()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(RootError::store)?;
        batch.push(&format!(
            "INSERT INTO requests (id, kind, body, digest, requester, totals, created_at, expires_at, deadline, state,
             signature, decided_by, decided_at) VALUES ({})",
            values.join(", ")
        ));
        for w in windows {
            advance_window(&mut batch, w)?;
        }
        for (token, amount) in &totals {
            let l = limbs(*amount);
            let int = |batch: &mut Batch, v: i64| batch.arg(v).map_err(RootError::store);
            let text = |batch: &mut Batch, v: String| batch.arg(v).map_err(RootError::store);
            let mut adds = Vec::with_capacity(LIMBS);
            for (i, v) in l.iter().enumerate() {
                adds.push(format!("l{i} = l{i} + {}", int(&mut batch, *v)?));
            }
            let (t, n) = (text(&mut batch, token.to_string())?, int(&mut batch, to_i64(now))?);
            batch.push(&format!(
                "UPDATE window_totals SET {} WHERE token = {t} AND horizon < {n}",
                adds.join(", ")
            ));
            let row = [
                text(&mut batch, id.to_owned())?,
                text(&mut batch, token.to_string())?,
                text(&mut batch, amount.to_string())?,
                int(&mut batch, to_i64(now))?,
            ];
            let limb_args = l.iter().map(|v| int(&mut batch, *v)).collect::<Result<Vec<_>>>()?;
            batch.push(&format!(
                "INSERT INTO flows (request_id, token, amount, at, live, l0, l1, l2, l3, l4, l5, l6, l7)
                 VALUES ({}, 1, {})",
                row.join(", "),
                limb_args.join(", ")
            ));
        }
        let mut decisions = vec![("queued", requester)];
        if let Some(by) = auto_approver {
            decisions.push(("auto_approve", by));
        }
        if signature.is_some() {
            decisions.push(("sign", SIGNER));
        }
        record_all(&mut batch, id, &decisions, now)?;
        let mut tx = self.pool.begin().await.map_err(RootError::store)?;
        batch.execute(&mut *tx).await.map_err(RootError::store)?;
        tx.commit().await.map_err(RootError::store)?;
        Ok(RequestRecord {
            id: id.to_owned(),
            request: request.clone(),
            digest,
            requester: requester.to_owned(),
            totals,
            created_at: now,
            expires_at,
            state,
            signature,
            decided_by: auto_approver.map(str::to_owned),
            decided_at: auto_approver.map(|_| now),
            reason: None,
        })
    }

    /// Moves a pending request to `to` (approved or rejected), recording who and when. An expired
    /// request is marked expired and refused with [`RootError::Expired`].
    /// An approval's authentication `tag` is stored in the same transaction.
    async fn decide(
        &self,
        id: &str,
        to: RequestState,
        by: &str,
        reason: Option<&str>,
        tag: Option<&str>,
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
        if to != RequestState::Approved {
            stop_counting(&mut tx, id).await?;
        }
        if let Some(tag) = tag {
            sqlx::query("INSERT OR REPLACE INTO approval_tags (request_id, tag) VALUES (?, ?)")
                .bind(id)
                .bind(tag)
                .execute(&mut *tx)
                .await
                .map_err(RootError::store)?;
        }
        record(&mut tx, id, action, by, now, reason).await?;
        tx.commit().await.map_err(RootError::store)?;
        self.one(id).await
    }

    /// Approves a pending request (no authentication tag: the service will not sign it on a
    /// human's behalf; see [`Store::approve_tagged`]).
    pub async fn approve(&self, id: &str, by: &str, now: u64) -> Result<RequestRecord> {
        self.decide(id, RequestState::Approved, by, None, None, now).await
    }

    /// Approves a pending request and stores `tag`, the service's authentication of the approval,
    /// in the same transaction.
    pub async fn approve_tagged(&self, id: &str, by: &str, now: u64, tag: &str) -> Result<RequestRecord> {
        self.decide(id, RequestState::Approved, by, None, Some(tag), now).await
    }

    /// The authentication tag stored with a request's approval, if any.
    pub async fn approval_tag(&self, id: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT tag FROM approval_tags WHERE request_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(RootError::store)
    }

    /// Ends an approved request that failed the checks made right before signing: it becomes
    /// `rejected` by the root service with `reason`, and stops counting against the caps.
    pub async fn refuse_at_signing(&self, id: &str, reason: &str, now: u64) -> Result<RequestRecord> {
        let mut tx = self.pool.begin().await.map_err(RootError::store)?;
        let done = sqlx::query(
            "UPDATE requests SET state = 'rejected', decided_by = ?, decided_at = ?, reason = ?
             WHERE id = ? AND state = 'approved'",
        )
        .bind(SIGNER)
        .bind(to_i64(now))
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(RootError::store)?;
        if done.rows_affected() > 0 {
            stop_counting(&mut tx, id).await?;
            record(&mut tx, id, "refuse", SIGNER, now, Some(reason)).await?;
        }
        tx.commit().await.map_err(RootError::store)?;
        self.one(id).await
    }

    /// Rejects a pending request with a reason.
    pub async fn reject(&self, id: &str, by: &str, reason: &str, now: u64) -> Result<RequestRecord> {
        self.decide(id, RequestState::Rejected, by, Some(reason), None, now).await
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
            stop_counting(&mut tx, id).await?;
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
        record(&mut tx, id, "sign", SIGNER, now, None).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use treasury_chain::{Call, Operation};

    fn token() -> Address {
        Address::repeat_byte(0xaa)
    }

    fn request(nonce: u64) -> EscalationRequest {
        let op = Operation {
            calls: vec![Call::new(Address::repeat_byte(1), U256::from(1), Vec::<u8>::new())],
            nonce: U256::from(nonce),
            deadline: U256::from(u64::MAX),
        };
        EscalationRequest::operation(op, 1, Address::repeat_byte(0x4d))
    }

    async fn queue(store: &Store, id: &str, amount: U256, at: u64) {
        let assessment = Assessment { totals: [(token(), amount)].into(), auto_approve: false };
        let req = request(at);
        let new = NewRequest {
            id,
            request: &req,
            requester: "agent",
            assessment: &assessment,
            now: at,
            expires_at: at + 100,
            auto_approver: None,
            signature: None,
            windows: &[],
        };
        store.insert(new).await.unwrap();
    }

    #[test]
    fn limb_sums_reassemble_and_saturate() {
        let big = U256::MAX - U256::from(5);
        assert_eq!(from_limb_sums(limbs(big)), big);
        let a = U256::from(u128::MAX) + U256::from(7);
        let (la, lb) = (limbs(a), limbs(a));
        let sum: [i64; LIMBS] = std::array::from_fn(|i| la[i] + lb[i]);
        assert_eq!(from_limb_sums(sum), a + a);
        let lm = limbs(U256::MAX);
        assert_eq!(from_limb_sums(std::array::from_fn(|i| lm[i] * 2)), U256::MAX);
    }

    /// Attack (issue 13 item 8): another local user reads (or, with a loose umask, writes) the
    /// root's queue; the file and its WAL are the owner's alone.
    #[tokio::test]
    async fn the_queue_file_is_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        let store = Store::open(&path).await.unwrap();
        queue(&store, "a", U256::from(1), 1_000).await;
        for p in [path.clone(), dir.path().join("q.sqlite-wal")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[tokio::test]
    async fn the_window_sum_counts_live_requests_after_since_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.sqlite")).await.unwrap();
        let huge = U256::from(u128::MAX);
        queue(&store, "a", huge, 1_000).await;
        queue(&store, "b", U256::from(5), 2_000).await;
        queue(&store, "c", U256::from(7), 2_050).await;
        assert_eq!(store.committed_since(token(), 999).await.unwrap(), huge + U256::from(12));
        assert_eq!(store.committed_since(token(), 1_000).await.unwrap(), U256::from(12));
        store.reject("b", "alice", "no", 2_010).await.unwrap();
        assert_eq!(store.committed_since(token(), 1_000).await.unwrap(), U256::from(7));
        // "a" expired unapproved: no longer counted.
        assert_eq!(store.expire_due(2_060).await.unwrap(), ["a"]);
        assert_eq!(store.committed_since(token(), 0).await.unwrap(), U256::from(7));
        assert_eq!(store.committed_since(Address::ZERO, 0).await.unwrap(), U256::ZERO);
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
            let read = store.window_total(token(), period, since).await.unwrap();
            assert_eq!(read.total, store.committed_since(token(), since).await.unwrap(), "step {step}");
            match seed % 5 {
                0 if !ids.is_empty() => {
                    let id: &String = &ids[(seed as usize / 5) % ids.len()];
                    // Already decided or expired ones are refused; that changes nothing.
                    let _ = store.reject(id, "alice", "no", t).await;
                    kinds[0] += 1;
                }
                1 => {
                    store.expire_due(t).await.unwrap();
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
                    store.insert(new).await.unwrap();
                    ids.push(id);
                    kinds[2] += 1;
                }
            }
        }
        assert!(kinds.iter().all(|k| *k > 20), "every kind of change was exercised: {kinds:?}");
    }

    #[tokio::test]
    async fn commits_are_flushed_unless_asked_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        for (name, durability, want) in
            [("full", Durability::Flushed, 2), ("normal", Durability::ProcessCrashOnly, 1)]
        {
            let store = Store::open_with(&dir.path().join(name), durability).await.unwrap();
            let mut conns = Vec::new();
            // Every pooled connection carries the setting.
            for _ in 0..4 {
                let mut c = store.pool.acquire().await.unwrap();
                let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *c).await.unwrap();
                assert_eq!(sync, want, "{name}");
                conns.push(c);
            }
        }
        let store = Store::open(&dir.path().join("default")).await.unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&store.pool).await.unwrap();
        assert_eq!(sync, 2, "the service's default is FULL");
    }

    #[tokio::test]
    async fn a_queue_of_the_first_schema_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let opts = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
            let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
            for stmt in SCHEMA {
                sqlx::query(*stmt).execute(&pool).await.unwrap();
            }
            for (id, state, amount) in [("live", "pending", "300"), ("gone", "rejected", "400")] {
                sqlx::query(
                    "INSERT INTO requests (id, kind, body, digest, requester, totals, created_at, expires_at,
                     deadline, state) VALUES (?, 'operation', '{}', '0x', 'agent', '[]', 10, 99, 99, ?)",
                )
                .bind(id)
                .bind(state)
                .execute(&pool)
                .await
                .unwrap();
                sqlx::query("INSERT INTO flows (request_id, token, amount, at) VALUES (?, ?, ?, 10)")
                    .bind(id)
                    .bind(token().to_string())
                    .bind(amount)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.committed_since(token(), 0).await.unwrap(), U256::from(300));
        drop(store);
        let again = Store::open(&path).await.unwrap();
        assert_eq!(again.committed_since(token(), 0).await.unwrap(), U256::from(300), "idempotent");
    }
}
