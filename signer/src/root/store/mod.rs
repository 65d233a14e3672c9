//! The durable approval queue (SQLite, WAL): requests, their state, and every decision with who and when.
//!
//! - [`records`]: what is stored and shown (request records, states, decisions).
//! - `requests`: queueing a request and moving it through its states, with the decision log.
//! - `windows`: the period caps' running window totals.
//!
//! The schema is `signer/migrations/root/`, applied with `sqlx::migrate!` when the queue is opened.
use std::path::Path;

use alloy::primitives::B256;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::error::{Result, RootError};

pub mod records;
mod requests;
mod windows;

pub use records::{Decision, NewRequest, RequestRecord, RequestState};
pub use windows::WindowRead;

use records::{COLUMNS, from_row};

/// The queue's schema migrations.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/root");

/// The queue.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
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
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<()> {
    let mut tx =
        pool.begin_with("BEGIN IMMEDIATE").await.map_err(RootError::store("lock the queue to migrate it"))?;
    MIGRATOR.run(&mut *tx).await.map_err(|source| RootError::Migrate { path: path.to_owned(), source })?;
    tx.commit().await.map_err(RootError::store("commit the queue's migration"))
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
            .map_err(RootError::store("open the queue"))?;
        migrate(&pool, path).await?;
        Ok(Self { pool })
    }

    async fn one(&self, id: &str) -> Result<RequestRecord> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM requests WHERE id = ?"));
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(RootError::store("read a request"))?;
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
            .map_err(RootError::store("find a live request by digest"))?;
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
            .map_err(RootError::store("list requests"))?;
        rows.iter().map(from_row).collect()
    }
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

    pub(super) async fn queue(store: &Store, id: &str, amount: U256, at: u64) {
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
}

#[cfg(test)]
mod tests;
