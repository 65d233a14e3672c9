//! Leases: for each treasury, the one replica that may act, and the term that fences the others.
//!
//! A lease is a row `(treasury, holder, term, expires_at)`. A replica takes it when it is free or
//! expired (by the database's clock), which increments the term; the holder renews it well within
//! its time to live. A [`Journal::fenced`] handle checks, inside every write transaction, that the
//! row still carries its term: once another replica took over, a replica that was paused or cut
//! off and wakes up late can write nothing (on PostgreSQL the check share-locks the row, so a
//! takeover waits for a write in flight and the write never lands after it). See
//! docs/ARCHITECTURE.md ("Replicas") for why a row and not advisory locks.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;

use super::{Journal, JournalError, Result, WriteTx, db};

/// A lease held on one treasury.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The treasury (e.g. `CHAIN_ID:MODULE`).
    pub treasury: String,
    /// Who holds it (a replica's name).
    pub holder: String,
    /// Incremented at each takeover; the fence every write checks.
    pub term: i64,
    /// When it expires unless renewed, unix milliseconds by the database's clock.
    pub expires_at: i64,
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Journal {
    /// Takes the lease on `treasury` for `holder` if it is free or expired (a new term), for `ttl`;
    /// `None` while someone else's lease (or this holder's own earlier one) is still running.
    pub async fn try_acquire_lease(
        &self,
        treasury: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let now = self.backend.now_ms_sql();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO leases (treasury, holder, term, expires_at) VALUES ($1, $2, 1, {now} + $3)
             ON CONFLICT (treasury) DO UPDATE SET
               holder = excluded.holder, term = leases.term + 1, expires_at = excluded.expires_at
             WHERE leases.expires_at <= {now}
             RETURNING term, expires_at"
        )))
        .bind(treasury)
        .bind(holder)
        .bind(ttl_ms(ttl))
        .fetch_optional(&self.pool)
        .await
        .map_err(db("acquire lease"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |e| JournalError::Database { what: "read lease", source: e };
        Ok(Some(Lease {
            treasury: treasury.to_string(),
            holder: holder.to_string(),
            term: row.try_get("term").map_err(read)?,
            expires_at: row.try_get("expires_at").map_err(read)?,
        }))
    }

    /// Extends `lease` by `ttl` from now; [`JournalError::Fenced`] if another replica took it over.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let now = self.backend.now_ms_sql();
        let expires_at: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "UPDATE leases SET expires_at = {now} + $1 WHERE treasury = $2 AND term = $3 RETURNING expires_at"
        )))
        .bind(ttl_ms(ttl))
        .bind(&lease.treasury)
        .bind(lease.term)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("renew lease"))?;
        match expires_at {
            Some(expires_at) => Ok(Lease { expires_at, ..lease.clone() }),
            None => Err(self.fenced_error(lease).await),
        }
    }

    /// Lets `lease` expire now, so a standby takes over at once (a clean shutdown); the term is
    /// kept, so this replica's writes stay allowed until someone does.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE treasury = $1 AND term = $2")
            .bind(&lease.treasury)
            .bind(lease.term)
            .execute(&self.pool)
            .await
            .map_err(db("release lease"))?;
        Ok(())
    }

    /// The lease row of `treasury`, whoever holds it (expired or not).
    pub async fn current_lease(&self, treasury: &str) -> Result<Option<Lease>> {
        let row = sqlx::query("SELECT holder, term, expires_at FROM leases WHERE treasury = $1")
            .bind(treasury)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read lease"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |e| JournalError::Database { what: "read lease", source: e };
        Ok(Some(Lease {
            treasury: treasury.to_string(),
            holder: row.try_get("holder").map_err(read)?,
            term: row.try_get("term").map_err(read)?,
            expires_at: row.try_get("expires_at").map_err(read)?,
        }))
    }

    /// A handle on the same database whose every write first checks that `lease` still holds.
    pub fn fenced(&self, lease: Lease) -> Journal {
        Journal { fence: Some(Arc::new(lease)), ..self.clone() }
    }

    /// The lease this handle's writes are fenced by, if any.
    pub fn fence(&self) -> Option<&Lease> {
        self.fence.as_deref()
    }

    /// Checks, before an action outside the database (broadcasting a transaction), that this
    /// handle's lease still holds; [`JournalError::Fenced`] if not. Unfenced handles always pass.
    pub async fn check_fence(&self) -> Result<()> {
        let Some(lease) = &self.fence else { return Ok(()) };
        let current = self.current_term(&lease.treasury).await?;
        if current == Some(lease.term) { Ok(()) } else { Err(fenced(lease, current)) }
    }

    /// The fence check inside an open write transaction.
    pub(super) async fn check_fence_in(&self, tx: &mut WriteTx) -> Result<()> {
        let Some(lease) = &self.fence else { return Ok(()) };
        let lock = self.backend.lock_for_share();
        let current: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT term FROM leases WHERE treasury = $1{lock}"
        )))
        .bind(&lease.treasury)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("check lease"))?;
        if current == Some(lease.term) { Ok(()) } else { Err(fenced(lease, current)) }
    }

    async fn current_term(&self, treasury: &str) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT term FROM leases WHERE treasury = $1")
            .bind(treasury)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("check lease"))
    }

    async fn fenced_error(&self, lease: &Lease) -> JournalError {
        match self.current_term(&lease.treasury).await {
            Ok(current) => fenced(lease, current),
            Err(e) => e,
        }
    }
}

fn fenced(lease: &Lease, current: Option<i64>) -> JournalError {
    JournalError::Fenced { treasury: lease.treasury.clone(), term: lease.term, current }
}
