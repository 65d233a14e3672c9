//! The journal: intents, their state machine and event rows, operations, signing requests,
//! keeper transactions and block cursors (sqlx; SQLite in WAL mode by default, PostgreSQL for
//! replicas).
//!
//! One [`Journal`] type serves both backends through sqlx's `Any` driver: every statement is
//! written once in the SQL both accept (`$N` parameters, `ON CONFLICT`, `RETURNING`), each backend
//! has its own migrations (`migrations/sqlite`, `migrations/postgres`: the same tables), and the
//! pipeline never knows which it has. Where they differ (how a write transaction begins, the
//! database's clock, durability of relaxed writes) [`Backend`] says so.
//!
//! Every state change of an intent is written together with its event row, in one database
//! transaction, *before* the action it describes; after a crash [`Journal::pending`] lists what is
//! left to do and where each intent stood.
//!
//! # Layout
//! - [`state`]: the intent state machine.
//! - [`intents`]: intents, their transitions and queries.
//! - [`execution`]: operations, signing requests and keeper transactions.
//! - [`batch`]: several writes in one transaction.
//! - [`cursors`]: the last block processed per source and Safe.
//! - [`triggers`]: manual trigger requests and alerts.
//! - [`lease`]: which replica acts for a treasury, and the fence every write checks.
//! - [`pending`]: the work to resume (pending intents with their operations), in four queries.
pub mod batch;
pub mod cursors;
pub mod execution;
pub mod intents;
pub mod keeper;
pub mod lease;
pub mod pending;
pub mod state;
pub mod stats;
pub mod triggers;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Executor};

pub use batch::Write;
pub use cursors::Cursor;
pub use execution::{
    NewSigningRequest, NewTransaction, OperationRecord, QuorumSignature, RootSignature, SigningAnswer,
    SigningRequest, SigningState, TransactionRecord, TxState,
};
pub use intents::{
    DecidedIntent, Inserted, Intent, IntentEvent, IntentFilter, IntentId, NewIntent, PendingIntent,
};
pub use lease::Lease;
pub use state::IntentState;
pub use triggers::{Alert, ManualTrigger};

/// The journal URL used when the config names none.
pub const DEFAULT_URL: &str = "sqlite://treasury.db";

/// What can go wrong reading or writing the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The journal URL names a database this build cannot open.
    #[error("journal URL {0:?} is not supported (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl(String),
    /// The database could not be opened.
    #[error("cannot open journal {url}")]
    Open {
        /// The journal URL.
        url: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The embedded migrations could not be applied.
    #[error("cannot migrate the journal")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("journal query {what} failed")]
    Database {
        /// What the query was for.
        what: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// A transition the state machine does not allow.
    #[error("intent {id}: illegal transition from {from} to {to}")]
    IllegalTransition {
        /// The intent.
        id: IntentId,
        /// Its current state.
        from: IntentState,
        /// The state asked for.
        to: IntentState,
    },
    /// No intent has this id.
    #[error("intent {0} not found")]
    NotFound(IntentId),
    /// A signer's stored answer (signature or refusal) could not be read back.
    #[error("journal holds an unreadable {signer} answer for operation {operation_id}: {reason}")]
    CorruptAnswer {
        /// The operation signed.
        operation_id: String,
        /// `quorum` or `root`.
        signer: String,
        /// Why it does not parse.
        reason: String,
    },
    /// This replica's lease was taken over (or released): it may no longer write for the treasury.
    #[error(
        "treasury {treasury}: this replica's lease (term {term}) is no longer held \
         (the lease is now term {current:?}); write refused"
    )]
    Fenced {
        /// The treasury.
        treasury: String,
        /// The term this replica held.
        term: i64,
        /// The term in the database, if the lease row exists.
        current: Option<i64>,
    },
    /// A stored value could not be read back (edited by hand, or written by a newer version).
    #[error("journal holds an unreadable {what}: {reason}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// Why it does not parse.
        reason: String,
    },
}

impl JournalError {
    /// Whether trying again later may succeed (database busy or briefly unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database { source, .. } | Self::Open { source, .. } => {
                matches!(source, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Database(_))
            }
            _ => false,
        }
    }

    /// Whether the write was refused because another replica took over the lease.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }

    /// Whether the error is a refused state transition (the caller's logic is at fault).
    pub fn is_illegal_transition(&self) -> bool {
        matches!(self, Self::IllegalTransition { .. })
    }
}

/// Result alias for the journal.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> JournalError {
    move |source| JournalError::Database { what, source }
}

fn corrupt(what: &'static str, reason: impl ToString) -> JournalError {
    JournalError::Corrupt { what, reason: reason.to_string() }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The database behind a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (`sqlite://PATH`): one host.
    Sqlite,
    /// A PostgreSQL server (`postgres://…`): any number of replicas.
    Postgres,
}

impl Backend {
    /// The backend a journal URL names.
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(JournalError::UnsupportedUrl(url.to_string()))
        }
    }

    /// The statement that begins a write transaction. SQLite's `BEGIN IMMEDIATE` takes the write
    /// lock from the first statement, so concurrent writers wait for each other (busy timeout)
    /// instead of failing to upgrade a read lock; PostgreSQL locks rows as it writes them.
    fn begin_write(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }

    /// An SQL expression for the database's clock in unix milliseconds (leases are timed by the
    /// database, so replicas on different hosts never compare their clocks).
    fn now_ms_sql(self) -> &'static str {
        match self {
            Self::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
            Self::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// What a fenced write appends to its read of the lease row: on PostgreSQL a share lock, so a
    /// takeover (an update of that row) waits until the write commits or rolls back; SQLite's
    /// write lock already serialises them.
    fn lock_for_share(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR SHARE",
        }
    }
}

/// A write transaction on either backend.
pub(crate) type WriteTx = sqlx::Transaction<'static, Any>;

/// A handle on the journal database; cheap to clone, safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Journal {
    pool: AnyPool,
    /// SQLite: one connection with `synchronous = NORMAL`, for observations the chain can tell
    /// again. PostgreSQL: the same pool (those writes turn `synchronous_commit` off instead).
    relaxed: AnyPool,
    backend: Backend,
    /// When set, every write first checks that this lease is still the treasury's (fencing).
    fence: Option<Arc<Lease>>,
}

impl Journal {
    /// Opens (creating if missing) the journal at `url` and applies the embedded migrations of its
    /// backend.
    ///
    /// SQLite runs in WAL mode with `synchronous = FULL`: a committed transition survives a power
    /// loss, not only a crash of the process, because actions follow it that cannot be undone.
    /// PostgreSQL keeps its default `synchronous_commit = on` for the same reason.
    pub async fn open(url: &str) -> Result<Self> {
        let backend = Backend::of_url(url)?;
        sqlx::any::install_default_drivers();
        let open_err = |source| JournalError::Open { url: url.to_string(), source };
        let (pool, relaxed) = match backend {
            Backend::Sqlite => {
                let url = sqlite_url_creating(url);
                let pool = sqlite_pool(SQLITE_CONNECTIONS, "FULL").connect(&url).await.map_err(open_err)?;
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
                // Creating or checking the tables filled the connection's page cache with every
                // table's pages; a lane keeps only those its own reads touch again (issue 16:
                // 1,000 lanes, one connection each).
                pool.execute("PRAGMA shrink_memory").await.map_err(db("shrink the page cache"))?;
                let relaxed = sqlite_pool(1, "NORMAL")
                    .idle_timeout(SQLITE_RELAXED_IDLE)
                    .connect_lazy(&url)
                    .map_err(open_err)?;
                (pool, relaxed)
            }
            Backend::Postgres => {
                let pool = postgres_pool().connect(url).await.map_err(open_err)?;
                sqlx::migrate!("./migrations/postgres").run(&pool).await?;
                (pool.clone(), pool)
            }
        };
        Ok(Self { pool, relaxed, backend, fence: None })
    }

    /// The database this journal is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a write transaction; with a fence, first checks (and on PostgreSQL share-locks) the
    /// lease row, so a replica whose lease was taken over writes nothing.
    async fn write(&self) -> Result<WriteTx> {
        let mut tx = self.pool.begin_with(self.backend.begin_write()).await.map_err(db("begin"))?;
        self.check_fence_in(&mut tx).await?;
        Ok(tx)
    }

    /// Begins a write transaction for an observation the chain can tell again: it survives a crash
    /// of the process, not necessarily a power loss (SQLite `synchronous = NORMAL`, PostgreSQL
    /// `synchronous_commit = off`). Fenced like [`Journal::write`].
    async fn write_relaxed(&self) -> Result<WriteTx> {
        let mut tx = self.relaxed.begin_with(self.backend.begin_write()).await.map_err(db("begin"))?;
        if self.backend == Backend::Postgres {
            tx.execute("SET LOCAL synchronous_commit TO OFF").await.map_err(db("relax commit"))?;
        }
        self.check_fence_in(&mut tx).await?;
        Ok(tx)
    }

    /// Closes every connection, flushing the WAL.
    pub async fn close(&self) {
        self.relaxed.close().await;
        self.pool.close().await;
    }
}

/// `url` with `mode=rwc`, so sqlx creates a missing SQLite file (the `Any` driver takes options
/// only from the URL).
fn sqlite_url_creating(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rwc")
}

/// How long PostgreSQL lets a transaction of ours sit idle before aborting it (and releasing its
/// locks). The journal's transactions run their statements back to back; one left idle belongs to
/// a replica that was paused or cut off mid-write, and its share lock on the lease row must not
/// hold a takeover back for longer than this.
const PG_IDLE_IN_TRANSACTION_MS: u32 = 5_000;

/// A pool of PostgreSQL connections whose idle transactions the server aborts.
fn postgres_pool() -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(8).after_connect(|conn, _| {
        Box::pin(async move {
            let set = format!("SET idle_in_transaction_session_timeout = {PG_IDLE_IN_TRANSACTION_MS}");
            conn.execute(sqlx::AssertSqlSafe(set)).await.map(drop)
        })
    })
}

/// Connections of a SQLite journal's pool of durable writes and reads. Each costs a sqlx worker
/// thread, file descriptors, its own page cache and its own parsed schema and prepared statements,
/// and one process may run 1,000 lanes, each with its journal (issue 16); SQLite takes one writer
/// at a time anyway, and a lane's watcher, intake and steps each run their statements back to back.
const SQLITE_CONNECTIONS: u32 = 1;

/// How long the relaxed connection (transaction states seen on chain) stays open unused: it is
/// opened on the first such write, and a lane that sends nothing holds none.
const SQLITE_RELAXED_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The page cache of each SQLite connection, KiB (SQLite's default is 2,000 KiB): journal reads
/// touch recent rows, the OS keeps the file's pages cached for all lanes, and in WAL mode a write
/// by the lane's other connection empties the cache anyway. At 256 KiB a lane's journal cached
/// all its ≈ 30 pages (136 KiB of heap a lane, heaptrack, 200 lanes).
const SQLITE_CACHE_KIB: u32 = 64;

/// A pool of SQLite connections in WAL mode with foreign keys, a 10 s busy timeout, a small page
/// cache and the given `synchronous` level, set on each new connection.
fn sqlite_pool(max: u32, synchronous: &'static str) -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(max).after_connect(move |conn, _| {
        Box::pin(async move {
            let pragmas = format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                 PRAGMA cache_size = -{SQLITE_CACHE_KIB};"
            );
            conn.execute(sqlx::AssertSqlSafe(pragmas)).await.map(drop)
        })
    })
}

#[cfg(test)]
mod tests;
