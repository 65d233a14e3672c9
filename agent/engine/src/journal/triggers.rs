//! Manual trigger requests waiting for the agent, and alerts raised by policies or the agent.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::{Journal, JournalError, Result, db, now_ms};

/// A request to run a manual policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ManualTrigger {
    /// Journal id.
    pub id: i64,
    /// The policy to run.
    pub policy: String,
    /// Who asked (`cli`, `api:<addr>`).
    pub requested_by: String,
    /// When, unix milliseconds.
    pub requested_at: i64,
    /// When the agent handled it; `None` while waiting.
    pub handled_at: Option<i64>,
    /// What came of it (intents journaled, or why not).
    pub outcome: Option<String>,
}

/// An alert, deduplicated by its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique key (the same alert twice is stored once).
    pub idempotency_key: String,
    /// The policy that raised it, or `agent`.
    pub policy: String,
    /// What fired the policy.
    pub trigger: String,
    /// The message.
    pub message: String,
}

fn trigger_from_row(row: &sqlx::any::AnyRow) -> Result<ManualTrigger> {
    let get = |e| JournalError::Database { what: "read manual trigger", source: e };
    Ok(ManualTrigger {
        id: row.try_get("id").map_err(get)?,
        policy: row.try_get("policy").map_err(get)?,
        requested_by: row.try_get("requested_by").map_err(get)?,
        requested_at: row.try_get("requested_at").map_err(get)?,
        handled_at: row.try_get("handled_at").map_err(get)?,
        outcome: row.try_get("outcome").map_err(get)?,
    })
}

impl Journal {
    /// Queues a run of the manual policy `policy`; the running agent picks it up. A request, not
    /// an action: it is accepted from any handle, fenced or not.
    pub async fn request_manual_trigger(&self, policy: &str, requested_by: &str) -> Result<ManualTrigger> {
        let row = sqlx::query(
            "INSERT INTO manual_triggers (policy, requested_by, requested_at) VALUES ($1, $2, $3)
             RETURNING id, policy, requested_by, requested_at, handled_at, outcome",
        )
        .bind(policy)
        .bind(requested_by)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(db("insert manual trigger"))?;
        trigger_from_row(&row)
    }

    /// Manual trigger requests not yet handled, oldest first.
    pub async fn open_manual_triggers(&self) -> Result<Vec<ManualTrigger>> {
        let rows = sqlx::query(
            "SELECT id, policy, requested_by, requested_at, handled_at, outcome FROM manual_triggers
             WHERE handled_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("read manual triggers"))?;
        rows.iter().map(trigger_from_row).collect()
    }

    /// The manual trigger request `id`.
    pub async fn manual_trigger(&self, id: i64) -> Result<Option<ManualTrigger>> {
        let row = sqlx::query(
            "SELECT id, policy, requested_by, requested_at, handled_at, outcome FROM manual_triggers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read manual trigger"))?;
        row.as_ref().map(trigger_from_row).transpose()
    }

    /// Marks a manual trigger request handled, with what came of it.
    pub async fn finish_manual_trigger(&self, id: i64, outcome: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE manual_triggers SET handled_at = $1, outcome = $2 WHERE id = $3 AND handled_at IS NULL",
        )
        .bind(now_ms())
        .bind(outcome)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db("finish manual trigger"))?;
        tx.commit().await.map_err(db("commit manual trigger"))
    }

    /// Stores an alert; returns `false` if one with the same key was already stored.
    pub async fn record_alert(&self, alert: &Alert) -> Result<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "INSERT INTO alerts (idempotency_key, policy, trigger_name, message, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&alert.idempotency_key)
        .bind(&alert.policy)
        .bind(&alert.trigger)
        .bind(&alert.message)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db("insert alert"))?;
        tx.commit().await.map_err(db("commit alert"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The newest alerts, at most `limit`.
    pub async fn alerts(&self, limit: u32) -> Result<Vec<Alert>> {
        let rows = sqlx::query(
            "SELECT idempotency_key, policy, trigger_name, message FROM alerts ORDER BY id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read alerts"))?;
        let get = |e| JournalError::Database { what: "read alert", source: e };
        rows.iter()
            .map(|r| {
                Ok(Alert {
                    idempotency_key: r.try_get("idempotency_key").map_err(get)?,
                    policy: r.try_get("policy").map_err(get)?,
                    trigger: r.try_get("trigger_name").map_err(get)?,
                    message: r.try_get("message").map_err(get)?,
                })
            })
            .collect()
    }
}
