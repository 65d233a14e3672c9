//! The work to resume: every intent not in a final state, with the operation planned for it and
//! that operation's newest keeper transaction, read in four queries whatever their number, or in
//! one while none of them is planned yet. A step of the lane reads less ([`Journal::lane_work`]):
//! one trigger may leave a thousand intents pending, and the lane steps a few times per operation.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::execution::{
    OperationRecord, TX_COLUMNS, TransactionRecord, json_col, read_err, transaction_from_row, u64_col,
};
use super::intents::{
    INSERT_CHUNK, INTENT_COLUMNS, Intent, IntentId, PendingIntent, intent_from_row, placeholders,
};
use super::state::IntentState;
use super::{Journal, Result, db};

/// The intents not in a final state.
const PENDING: &str = "state NOT IN ('confirmed', 'failed', 'rejected', 'expired')";

/// The intents whose operation is in flight: planned, and neither executed nor given up.
const IN_FLIGHT: &str = "state IN ('planned', 'authorising', 'awaiting_root', 'signed', 'submitted')";

/// What one step of the lane works on, payloads left out (`null`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LaneWork {
    /// The intents of operations in flight, oldest first, each with its operation and newest
    /// transaction.
    pub in_flight: Vec<PendingIntent>,
    /// When none is in flight: the oldest guarded intent's trigger's guarded intents, oldest
    /// first, at most the batch asked for.
    pub next: Vec<Intent>,
}

/// The intent columns with the payload left out (read as JSON `null`).
pub(super) const INTENT_COLUMNS_NO_PAYLOAD: &str = "id, idempotency_key, policy, trigger_name, kind, 'null' AS payload, state, created_at, updated_at, policy_version";

impl Journal {
    /// Every intent not in a final state, oldest first, with its operation and newest transaction: the work to resume.
    pub async fn pending(&self) -> Result<Vec<PendingIntent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE {PENDING} ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list pending intents"))?;
        let intents = rows.iter().map(intent_from_row).collect::<Result<Vec<_>>>()?;
        self.with_operations(intents).await
    }

    /// What a step of the lane needs, payloads left out: the operations in flight or, when there
    /// is none, the next `batch` intents to plan. Neither read grows with the intents waiting.
    pub async fn lane_work(&self, batch: usize) -> Result<LaneWork> {
        // One query for both: a step that plans (the usual one) reads nothing else.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INTENT_COLUMNS_NO_PAYLOAD} FROM intents WHERE {IN_FLIGHT}
             UNION ALL
             SELECT * FROM (SELECT {INTENT_COLUMNS_NO_PAYLOAD} FROM intents
                            WHERE state = 'guarded' AND trigger_name =
                              (SELECT trigger_name FROM intents WHERE state = 'guarded' ORDER BY id LIMIT 1)
                            ORDER BY id LIMIT $1) AS next
             ORDER BY id"
        )))
        .bind(i64::try_from(batch).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list the lane's work"))?;
        let intents = rows.iter().map(intent_from_row).collect::<Result<Vec<_>>>()?;
        let (next, in_flight): (Vec<Intent>, Vec<Intent>) =
            intents.into_iter().partition(|i| i.state == IntentState::Guarded);
        if in_flight.is_empty() {
            return Ok(LaneWork { in_flight: Vec::new(), next });
        }
        Ok(LaneWork { in_flight: self.with_operations(in_flight).await?, next: Vec::new() })
    }

    /// The payloads of the intents `ids` (those that exist), by id.
    pub async fn payloads(&self, ids: &[IntentId]) -> Result<HashMap<IntentId, serde_json::Value>> {
        let rows = self.rows_by_id(ids, "id, payload", "read intent payloads").await?;
        let mut payloads = HashMap::with_capacity(rows.len());
        for row in &rows {
            payloads.insert(IntentId(row.try_get("id").map_err(read_err)?), json_col(row, "payload")?);
        }
        Ok(payloads)
    }

    /// The intents `ids` (those that exist), in id order, without their events.
    pub async fn intents(&self, ids: &[IntentId]) -> Result<Vec<Intent>> {
        let rows = self.rows_by_id(ids, INTENT_COLUMNS, "read intents").await?;
        let mut intents = rows.iter().map(intent_from_row).collect::<Result<Vec<_>>>()?;
        intents.sort_by_key(|i| i.id);
        Ok(intents)
    }

    /// The `columns` of the intents `ids` (those that exist), read 500 ids to a query.
    async fn rows_by_id(&self, ids: &[IntentId], columns: &str, what: &'static str) -> Result<Vec<AnyRow>> {
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let sql = format!("SELECT {columns} FROM intents WHERE id IN ({})", placeholders(1, chunk.len()));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.0);
            }
            rows.extend(query.fetch_all(&self.pool).await.map_err(db(what))?);
        }
        Ok(rows)
    }

    /// `intents` (pending ones), each with its operation and that operation's newest transaction.
    async fn with_operations(&self, intents: Vec<Intent>) -> Result<Vec<PendingIntent>> {
        // An intent is linked to an operation in the write that plans it (`Guarded` → `Planned`),
        // so intents not yet planned have none to read: the usual case right after intake.
        let unplanned = |i: &Intent| matches!(i.state, IntentState::Proposed | IntentState::Guarded);
        if intents.iter().all(unplanned) {
            return Ok(intents
                .into_iter()
                .map(|intent| PendingIntent { intent, operation: None, transaction: None })
                .collect());
        }
        let newest = self.newest_operations_of_pending().await?;
        let members = self.members_of_pending_operations().await?;
        let transactions = self.newest_transactions_of_pending().await?;
        Ok(intents
            .into_iter()
            .map(|intent| {
                let operation =
                    newest.get(&intent.id).map(|(operation_id, module_nonce, operation)| OperationRecord {
                        operation_id: operation_id.clone(),
                        module_nonce: *module_nonce,
                        operation: operation.clone(),
                        intents: members.get(operation_id).cloned().unwrap_or_default(),
                    });
                let transaction =
                    operation.as_ref().and_then(|op| transactions.get(&op.operation_id).cloned());
                PendingIntent { intent, operation, transaction }
            })
            .collect())
    }

    /// The newest operation of each pending intent (as [`Journal::operation_of`] picks it).
    async fn newest_operations_of_pending(
        &self,
    ) -> Result<HashMap<IntentId, (String, u64, serde_json::Value)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT l.intent_id, o.operation_id, o.module_nonce, o.operation FROM operations o
             JOIN operation_intents l ON l.operation_id = o.operation_id
             JOIN intents i ON i.id = l.intent_id
             WHERE i.{PENDING} ORDER BY o.created_at DESC, o.operation_id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db("read pending operations"))?;
        let mut parsed: HashMap<String, serde_json::Value> = HashMap::new();
        let mut newest = HashMap::new();
        for row in &rows {
            let intent = IntentId(row.try_get("intent_id").map_err(read_err)?);
            if newest.contains_key(&intent) {
                continue;
            }
            let operation_id: String = row.try_get("operation_id").map_err(read_err)?;
            let operation = match parsed.get(&operation_id) {
                Some(op) => op.clone(),
                None => {
                    let op = json_col(row, "operation")?;
                    parsed.insert(operation_id.clone(), op.clone());
                    op
                }
            };
            newest.insert(intent, (operation_id, u64_col(row, "module_nonce")?, operation));
        }
        Ok(newest)
    }

    /// Every intent of each operation linked to a pending intent, by operation, in id order.
    async fn members_of_pending_operations(&self) -> Result<HashMap<String, Vec<IntentId>>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT m.operation_id, m.intent_id FROM operation_intents m
             WHERE m.operation_id IN (SELECT l.operation_id FROM operation_intents l
                                      JOIN intents i ON i.id = l.intent_id WHERE i.{PENDING})
             ORDER BY m.intent_id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db("read pending operation intents"))?;
        let mut members: HashMap<String, Vec<IntentId>> = HashMap::new();
        for row in &rows {
            let operation_id: String = row.try_get("operation_id").map_err(read_err)?;
            members
                .entry(operation_id)
                .or_default()
                .push(IntentId(row.try_get("intent_id").map_err(read_err)?));
        }
        Ok(members)
    }

    /// The newest keeper transaction of each operation linked to a pending intent.
    async fn newest_transactions_of_pending(&self) -> Result<HashMap<String, TransactionRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TX_COLUMNS} FROM transactions
             WHERE operation_id IN (SELECT l.operation_id FROM operation_intents l
                                    JOIN intents i ON i.id = l.intent_id WHERE i.{PENDING})
             ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db("read pending transactions"))?;
        let mut newest = HashMap::new();
        for row in &rows {
            let tx = transaction_from_row(row)?;
            newest.insert(tx.tx.operation_id.clone(), tx);
        }
        Ok(newest)
    }
}
