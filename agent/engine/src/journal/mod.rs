//! The journal: intents, their state machine and event rows, operations, signing requests,
//! keeper transactions and block cursors (sqlx; SQLite in WAL mode by default).
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
pub mod batch;
pub mod cursors;
pub mod execution;
pub mod intents;
pub mod state;
pub mod stats;
pub mod triggers;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use batch::Write;
pub use cursors::Cursor;
pub use execution::{
    NewSigningRequest, NewTransaction, OperationRecord, QuorumSignature, RootSignature, SigningAnswer,
    SigningRequest, SigningState, TransactionRecord, TxState,
};
pub use intents::{Inserted, Intent, IntentEvent, IntentFilter, IntentId, NewIntent, PendingIntent};
pub use state::IntentState;
pub use triggers::{Alert, ManualTrigger};

/// The journal URL used when the config names none.
pub const DEFAULT_URL: &str = "sqlite://treasury.db";

/// What can go wrong reading or writing the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The journal URL names a database this build cannot open.
    #[error("journal URL {0:?} is not supported (use sqlite://PATH)")]
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

/// A handle on the journal database; cheap to clone, safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Journal {
    pool: SqlitePool,
    /// One connection with `synchronous = NORMAL`, for observations the chain can tell again.
    relaxed: SqlitePool,
}

impl Journal {
    /// Opens (creating if missing) the journal at `url` and applies the embedded migrations.
    ///
    /// SQLite runs in WAL mode with `synchronous = FULL`: a committed transition survives a power
    /// loss, not only a crash of the process, because actions follow it that cannot be undone.
    pub async fn open(url: &str) -> Result<Self> {
        if !url.starts_with("sqlite:") {
            return Err(JournalError::UnsupportedUrl(url.to_string()));
        }
        let open_err = |source| JournalError::Open { url: url.to_string(), source };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let relaxed = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(open_err)?;
        Ok(Self { pool, relaxed })
    }

    /// Begins a transaction that holds SQLite's write lock from its first statement, so concurrent
    /// writers wait for each other (busy timeout) instead of failing to upgrade a read lock.
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db("begin"))
    }

    /// Closes every connection, flushing the WAL.
    pub async fn close(&self) {
        self.relaxed.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;
