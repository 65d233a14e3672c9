//! The durable approval queue (SQLite, WAL): requests, their state, and every decision with who and when.
//!
//! - [`records`]: what is stored and shown (request records, states, decisions).
//! - `requests`: queueing a request and moving it through its states, with the decision log.
//! - `windows`: the period caps' running window totals.
//!
//! The schema is `signer/migrations/root/`, applied with `sqlx::migrate!` when the queue is opened.
//! After that the queue is one synchronous SQLite connection (rusqlite) that the caller uses in
//! place: every method blocks until its transaction is committed, so the root service runs a
//! request's reads, guard, HSM call and write as one blocking call instead of a thread round trip
//! per statement (see docs/ARCHITECTURE.md, "The root's queue").
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alloy::primitives::B256;
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::error::{Result, RootError};

pub mod records;
mod requests;
mod windows;

pub use records::{Approval, Decision, NewRequest, RequestRecord, RequestState};
pub use windows::WindowRead;

use records::{COLUMNS, from_row};

/// The queue's schema migrations.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/root");

/// How long a statement waits for another process (a CLI, a second service) holding the file's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The queue: one connection, used by one caller at a time.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Mutex<Connection>>,
}

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

/// Creates the queue file readable and writable by its owner only (0600) when it is absent;
/// SQLite gives its journal and WAL files the same mode.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(RootError::StoreFile { path: path.to_owned(), source }),
    }
}

/// Brings the queue at `path` to the current schema. sqlx takes no lock on SQLite, so the
/// migrations run inside one `BEGIN IMMEDIATE` transaction (each a savepoint in it): a service and
/// a CLI opening the same queue migrate one after the other, and a failed step leaves the file as
/// it was.
async fn migrate(path: &Path) -> Result<()> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = connect_to_migrate(opts).await.map_err(RootError::store("open the queue to migrate it"))?;
    let mut tx =
        pool.begin_with("BEGIN IMMEDIATE").await.map_err(RootError::store("lock the queue to migrate it"))?;
    MIGRATOR.run(&mut *tx).await.map_err(|source| RootError::Migrate { path: path.to_owned(), source })?;
    tx.commit().await.map_err(RootError::store("commit the queue's migration"))?;
    pool.close().await;
    Ok(())
}

/// The migration's connection, tried again while another opener holds the file: switching a
/// queue to WAL needs it alone, and SQLite answers "database is locked" at once rather than wait
/// for its busy timeout then. Gives up after [`BUSY_TIMEOUT`].
async fn connect_to_migrate(
    opts: SqliteConnectOptions,
) -> std::result::Result<sqlx::SqlitePool, sqlx::Error> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            connected => return connected,
        }
    }
}

/// Whether `e` is SQLite's `SQLITE_BUSY` (any of its extended codes).
fn is_busy(e: &sqlx::Error) -> bool {
    let code = match e {
        sqlx::Error::Database(d) => d.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    code.is_some_and(|c| c & 0xff == 5)
}

/// Opens the migrated queue's connection with the WAL and the chosen flush.
fn connect(path: &Path, durability: Durability) -> Result<Connection> {
    let conn = Connection::open(path).map_err(RootError::store("open the queue"))?;
    let sync = match durability {
        Durability::Flushed => "FULL",
        Durability::ProcessCrashOnly => "NORMAL",
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(RootError::store("set the queue's busy timeout"))?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(RootError::store("use the queue's WAL"))?;
    conn.pragma_update(None, "synchronous", sync).map_err(RootError::store("set the queue's flush"))?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) the queue at `path`, every commit flushed to disk.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, Durability::Flushed).await
    }

    /// Opens the queue at `path` with the given durability of commits.
    pub async fn open_with(path: &Path, durability: Durability) -> Result<Self> {
        create_private(path)?;
        migrate(path).await?;
        Ok(Self { db: Arc::new(Mutex::new(connect(path, durability)?)) })
    }

    /// The connection, waiting for the caller using it. A caller that panicked mid-transaction
    /// left nothing half-written (the transaction rolled back when dropped), so the lock is taken
    /// over.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The request `id`.
    pub fn get(&self, id: &str) -> Result<RequestRecord> {
        one(&self.conn(), id)
    }

    /// A request for the same digest that is still live (pending, approved or signed).
    pub fn live_by_digest(&self, digest: B256) -> Result<Option<RequestRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM requests WHERE digest = ? AND state IN ('pending','approved','signed') LIMIT 1"
        );
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&sql).map_err(RootError::store("find a live request by digest"))?;
        let row = stmt
            .query_row(params![digest.to_string()], |row| Ok(from_row(row)))
            .optional()
            .map_err(RootError::store("find a live request by digest"))?;
        row.transpose()
    }

    /// How many requests are in `state`.
    pub fn count(&self, state: RequestState) -> Result<usize> {
        let conn = self.conn();
        let n: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM requests WHERE state = ?")
            .and_then(|mut s| s.query_row(params![state.as_str()], |r| r.get(0)))
            .map_err(RootError::store("count requests"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Requests, newest first, optionally only in `state`.
    pub fn list(&self, state: Option<RequestState>) -> Result<Vec<RequestRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM requests WHERE (?1 IS NULL OR state = ?1) ORDER BY created_at DESC, id"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(RootError::store("list requests"))?;
        let rows = stmt
            .query_map(params![state.map(|s| s.as_str())], |row| Ok(from_row(row)))
            .map_err(RootError::store("list requests"))?;
        rows.map(|r| r.map_err(RootError::store("list requests"))?).collect()
    }
}

/// The request `id`, read on `conn`.
fn one(conn: &Connection, id: &str) -> Result<RequestRecord> {
    let sql = format!("SELECT {COLUMNS} FROM requests WHERE id = ?");
    let mut stmt = conn.prepare_cached(&sql).map_err(RootError::store("read a request"))?;
    let row = stmt
        .query_row(params![id], |row| Ok(from_row(row)))
        .optional()
        .map_err(RootError::store("read a request"))?;
    row.ok_or_else(|| RootError::UnknownRequest(id.to_owned()))?
}

/// What the tests of the queue share: a request, an asset, queueing an amount.
#[cfg(test)]
mod testing {
    use alloy::primitives::{Address, U256};
    use treasury_chain::{Call, Operation};

    use super::{NewRequest, Store};
    use crate::root::guard::Assessment;
    use crate::root::request::EscalationRequest;

    pub(super) fn token() -> Address {
        Address::repeat_byte(0xaa)
    }

    pub(super) fn request(nonce: u64) -> EscalationRequest {
        let op = Operation {
            calls: vec![Call::new(Address::repeat_byte(1), U256::from(1), Vec::<u8>::new())],
            nonce: U256::from(nonce),
            deadline: U256::from(u64::MAX),
        };
        EscalationRequest::operation(op, 1, Address::repeat_byte(0x4d))
    }

    pub(super) fn queue(store: &Store, id: &str, amount: U256, at: u64) {
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
        store.insert(new).unwrap();
    }
}

#[cfg(test)]
mod tests;
