//! The last block processed per source (block watcher, log watcher…) and Safe, for gap-free catch-up.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Journal, JournalError, Result, WriteTx, corrupt, db, now_ms};

/// The last block a source processed for a Safe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Block number.
    pub block_number: u64,
    /// Block hash, hex: a different hash at that height on restart means a reorg.
    pub block_hash: String,
}

impl Journal {
    /// The cursor of `source` for `safe`, if one was stored.
    pub async fn cursor(&self, source: &str, safe: &str) -> Result<Option<Cursor>> {
        let row = sqlx::query("SELECT block_number, block_hash FROM cursors WHERE source = $1 AND safe = $2")
            .bind(source)
            .bind(safe)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read cursor"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |e| JournalError::Database { what: "read cursor", source: e };
        let number: i64 = row.try_get("block_number").map_err(read)?;
        Ok(Some(Cursor {
            block_number: u64::try_from(number).map_err(|e| corrupt("cursor block", e))?,
            block_hash: row.try_get("block_hash").map_err(read)?,
        }))
    }

    /// Stores the cursor of `source` for `safe`, replacing the previous one.
    pub async fn set_cursor(&self, source: &str, safe: &str, cursor: &Cursor) -> Result<()> {
        let mut tx = self.write().await?;
        upsert_cursor(&mut tx, source, safe, cursor).await?;
        tx.commit().await.map_err(db("commit cursor"))
    }

    /// Stores several cursors of `source` (by key) in one write that does not wait for the disk:
    /// for cursors whose loss on a power cut only makes the reader look at some blocks again
    /// (what it does there is refused by its own exactly-once keys). Fenced like every write.
    pub async fn set_cursors_relaxed(&self, source: &str, cursors: &[(&str, &Cursor)]) -> Result<()> {
        let mut tx = self.write_relaxed().await?;
        for (safe, cursor) in cursors {
            upsert_cursor(&mut tx, source, safe, cursor).await?;
        }
        tx.commit().await.map_err(db("commit cursor"))
    }
}

/// Writes the cursor of `source` for `safe` inside `tx`, replacing the previous one.
async fn upsert_cursor(tx: &mut WriteTx, source: &str, safe: &str, cursor: &Cursor) -> Result<()> {
    sqlx::query(
        "INSERT INTO cursors (source, safe, block_number, block_hash, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source, safe) DO UPDATE SET
           block_number = excluded.block_number, block_hash = excluded.block_hash, updated_at = excluded.updated_at",
    )
    .bind(source)
    .bind(safe)
    .bind(cursor.block_number as i64)
    .bind(&cursor.block_hash)
    .bind(now_ms())
    .execute(&mut **tx)
    .await
    .map_err(db("write cursor"))?;
    Ok(())
}
