//! Intents: idempotent insertion, transitions with their event rows, and queries.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::execution::{OperationRecord, TransactionRecord};
use super::{Journal, JournalError, Result, WriteTx, corrupt, db, now_ms};
use crate::journal::state::IntentState;

/// The journal's id of an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct IntentId(pub i64);

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An intent as a policy returned it, to be journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewIntent {
    /// Unique per payment: the same key twice is the same intent.
    pub idempotency_key: String,
    /// The policy that returned it.
    pub policy: String,
    /// What fired the policy (e.g. `schedule@2024-03-01T09:00:00Z`, `block:1200`).
    pub trigger: String,
    /// `pay`, `swap`, `rebalance`, `alert`.
    pub kind: String,
    /// The intent itself.
    pub payload: serde_json::Value,
    /// The version of the policy script that produced it (`PolicySet::version`), if known.
    #[serde(default)]
    pub policy_version: Option<String>,
}

/// A journaled intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Intent {
    /// Journal id.
    pub id: IntentId,
    /// Unique idempotency key.
    pub idempotency_key: String,
    /// The policy that returned it.
    pub policy: String,
    /// What fired the policy.
    pub trigger: String,
    /// `pay`, `swap`, `rebalance`, `alert`.
    pub kind: String,
    /// The intent itself.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The version of the policy script that produced it (`PolicySet::version`: the first 16 hex
    /// digits of its SHA-256); `null` for intents journaled before versions were recorded.
    #[serde(default)]
    pub policy_version: Option<String>,
    /// Where it stands.
    pub state: IntentState,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Time of the last transition, unix milliseconds.
    pub updated_at: i64,
}

/// One state change of an intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IntentEvent {
    /// The state left; `None` for the creation.
    pub from: Option<IntentState>,
    /// The state entered.
    pub to: IntentState,
    /// What the transition is about (reason, operation id, error); `null` if nothing.
    #[schema(value_type = Value)]
    pub detail: serde_json::Value,
    /// When, unix milliseconds.
    pub at: i64,
}

/// The result of [`Journal::insert_intent`].
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    /// The intent with this idempotency key, new or existing.
    pub intent: Intent,
    /// Whether this call created it.
    pub created: bool,
}

/// Which intents [`Journal::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentFilter {
    /// Only in this state.
    pub state: Option<IntentState>,
    /// Only from this policy.
    pub policy: Option<String>,
    /// At most this many, newest first (default 100).
    pub limit: Option<u32>,
}

/// An intent not yet in a final state, with what was already prepared for it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingIntent {
    /// The intent.
    pub intent: Intent,
    /// The operation planned for it, if any: resume with this one, never plan another.
    pub operation: Option<OperationRecord>,
    /// The newest keeper transaction carrying that operation, if any.
    pub transaction: Option<TransactionRecord>,
}

/// An intent decided and not failed, rejected or expired, with the operation that carries it
/// and where that operation's newest transaction was mined: what the policies' history and the
/// replaying nodes' history are built from.
#[derive(Debug, Clone, PartialEq)]
pub struct DecidedIntent {
    /// The intent.
    pub intent: Intent,
    /// The newest operation planned for it, if any.
    pub operation_id: Option<String>,
    /// The block the newest transaction carrying that operation was mined in, if any.
    pub mined_block: Option<u64>,
}

/// The states of a decided intent: every state but failed, rejected and expired (an `IN` list).
pub(super) const DECIDED: &str =
    "('proposed', 'guarded', 'planned', 'authorising', 'awaiting_root', 'signed', 'submitted', 'confirmed')";

/// The newest operation planned for the intent `i.id` (as [`Journal::operation_of`] picks it).
const NEWEST_OPERATION: &str = "SELECT o.operation_id FROM operations o
     JOIN operation_intents l ON l.operation_id = o.operation_id
     WHERE l.intent_id = i.id ORDER BY o.created_at DESC, o.operation_id LIMIT 1";

pub(super) const INTENT_COLUMNS: &str =
    "id, idempotency_key, policy, trigger_name, kind, payload, state, created_at, updated_at, policy_version";

pub(super) fn intent_from_row(row: &AnyRow) -> Result<Intent> {
    let get = |e| JournalError::Database { what: "read intent", source: e };
    let payload: String = row.try_get("payload").map_err(get)?;
    let state: String = row.try_get("state").map_err(get)?;
    Ok(Intent {
        id: IntentId(row.try_get("id").map_err(get)?),
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        policy: row.try_get("policy").map_err(get)?,
        trigger: row.try_get("trigger_name").map_err(get)?,
        kind: row.try_get("kind").map_err(get)?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt("intent payload", e))?,
        policy_version: row.try_get("policy_version").map_err(get)?,
        state: state.parse().map_err(|e| corrupt("intent state", e))?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
    })
}

fn event_from_row(row: &AnyRow) -> Result<IntentEvent> {
    let get = |e| JournalError::Database { what: "read intent event", source: e };
    let from: Option<String> = row.try_get("from_state").map_err(get)?;
    let to: String = row.try_get("to_state").map_err(get)?;
    let detail: String = row.try_get("detail").map_err(get)?;
    Ok(IntentEvent {
        from: from.map(|s| s.parse()).transpose().map_err(|e| corrupt("event state", e))?,
        to: to.parse().map_err(|e| corrupt("event state", e))?,
        detail: serde_json::from_str(&detail).map_err(|e| corrupt("event detail", e))?,
        at: row.try_get("at").map_err(get)?,
    })
}

/// Rows per multi-row statement (or ids per `IN` list): with at most 9 bound parameters per row
/// (an intent; 5 per event row) a statement stays far below SQLite's (32,766) and PostgreSQL's
/// (65,535) limits.
pub(super) const INSERT_CHUNK: usize = 500;

/// The `VALUES` list of a multi-row insert: `rows` tuples of `columns` numbered parameters.
pub(super) fn values_placeholders(rows: usize, columns: usize) -> String {
    let row = |r: usize| {
        let params: Vec<_> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
        format!("({})", params.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// Inserts the intents of `batch` whose keys are not journaled yet, each straight in its final
/// state (`then`'s, else `proposed`), and returns the ids created per key, inside `tx`.
async fn insert_new_rows(
    tx: &mut WriteTx,
    batch: &[(NewIntent, Option<(IntentState, serde_json::Value)>)],
    now: i64,
) -> Result<HashMap<String, IntentId>> {
    let mut created = HashMap::with_capacity(batch.len());
    for chunk in batch.chunks(INSERT_CHUNK) {
        let values = values_placeholders(chunk.len(), 9);
        let sql = format!(
            "INSERT INTO intents (idempotency_key, policy, trigger_name, kind, payload, state, created_at, updated_at, policy_version)
             VALUES {values} ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (new, then) in chunk {
            let state = then.as_ref().map_or(IntentState::Proposed, |(to, _)| *to);
            query = query
                .bind(&new.idempotency_key)
                .bind(&new.policy)
                .bind(&new.trigger)
                .bind(&new.kind)
                .bind(new.payload.to_string())
                .bind(state.as_str())
                .bind(now)
                .bind(now)
                .bind(new.policy_version.as_deref());
        }
        for row in query.fetch_all(&mut **tx).await.map_err(db("insert intents"))? {
            let get = |e| JournalError::Database { what: "read inserted intent id", source: e };
            created.insert(
                row.try_get("idempotency_key").map_err(get)?,
                IntentId(row.try_get("id").map_err(get)?),
            );
        }
    }
    Ok(created)
}

/// Writes event rows `(intent, state left, state entered, detail)`, all at `now`, inside `tx`.
async fn insert_events(
    tx: &mut WriteTx,
    events: &[(IntentId, Option<IntentState>, IntentState, String)],
    now: i64,
) -> Result<()> {
    for chunk in events.chunks(INSERT_CHUNK) {
        let values = values_placeholders(chunk.len(), 5);
        let sql = format!(
            "INSERT INTO intent_events (intent_id, from_state, to_state, detail, at) VALUES {values}"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, from, to, detail) in chunk {
            query =
                query.bind(id.0).bind(from.map(IntentState::as_str)).bind(to.as_str()).bind(detail).bind(now);
        }
        query.execute(&mut **tx).await.map_err(db("insert intent events"))?;
    }
    Ok(())
}

/// The journaled intents with these keys, by key, inside `tx`.
async fn intents_by_key(tx: &mut WriteTx, keys: &[&str]) -> Result<HashMap<String, Intent>> {
    let mut intents = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(INSERT_CHUNK) {
        let sql = format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE idempotency_key IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for key in chunk {
            query = query.bind(*key);
        }
        for row in query.fetch_all(&mut **tx).await.map_err(db("read inserted intents"))? {
            let intent = intent_from_row(&row)?;
            intents.insert(intent.idempotency_key.clone(), intent);
        }
    }
    Ok(intents)
}

impl Journal {
    /// Journals an intent in state `proposed`, or returns the existing one with the same idempotency key.
    pub async fn insert_intent(&self, new: &NewIntent) -> Result<Inserted> {
        self.insert_intent_then(new, None).await
    }

    /// Like [`Journal::insert_intent`]; a new intent then moves on to `then` (state and event
    /// detail) in the same transaction, e.g. straight to `guarded` when the guard already passed.
    pub async fn insert_intent_then(
        &self,
        new: &NewIntent,
        then: Option<(IntentState, serde_json::Value)>,
    ) -> Result<Inserted> {
        let mut inserted = self.insert_intents_then(&[(new.clone(), then)]).await?;
        Ok(inserted.remove(0))
    }

    /// Journals several intents (each like [`Journal::insert_intent_then`]) in one transaction:
    /// a firing's intents land together or not at all, so the lane never batches part of one.
    pub async fn insert_intents_then(
        &self,
        intents: &[(NewIntent, Option<(IntentState, serde_json::Value)>)],
    ) -> Result<Vec<Inserted>> {
        let now = now_ms();
        let mut tx = self.write().await?;
        let mut created = insert_new_rows(&mut tx, intents, now).await?;
        // Event rows in input order; a key given twice is created by its first occurrence only.
        let mut creates = Vec::with_capacity(intents.len());
        let mut events = Vec::with_capacity(2 * created.len());
        for (new, then) in intents {
            let id = created.remove(&new.idempotency_key);
            creates.push(id.is_some());
            let Some(id) = id else { continue };
            events.push((id, None, IntentState::Proposed, serde_json::Value::Null.to_string()));
            if let Some((to, detail)) = then {
                if !IntentState::Proposed.can_become(*to) {
                    return Err(JournalError::IllegalTransition { id, from: IntentState::Proposed, to: *to });
                }
                events.push((id, Some(IntentState::Proposed), *to, detail.to_string()));
            }
        }
        insert_events(&mut tx, &events, now).await?;
        let keys: Vec<&str> = intents.iter().map(|(new, _)| new.idempotency_key.as_str()).collect();
        let journaled = intents_by_key(&mut tx, &keys).await?;
        tx.commit().await.map_err(db("commit intents"))?;
        intents
            .iter()
            .zip(creates)
            .map(|((new, _), created)| {
                let key = &new.idempotency_key;
                let intent = journaled
                    .get(key)
                    .cloned()
                    .ok_or_else(|| corrupt("inserted intent", format!("no row for key {key:?}")))?;
                Ok(Inserted { intent, created })
            })
            .collect()
    }

    /// Moves intent `id` to `to` and writes its event row, in one transaction; refuses illegal transitions.
    pub async fn transition(
        &self,
        id: IntentId,
        to: IntentState,
        detail: serde_json::Value,
    ) -> Result<Intent> {
        let mut tx = self.write().await?;
        let intent = transition_in(&mut tx, id, to, &detail, now_ms()).await?;
        tx.commit().await.map_err(db("commit transition"))?;
        Ok(intent)
    }

    /// Moves every intent of `ids` to `to` with the same event detail, all or none.
    pub async fn transition_all(
        &self,
        ids: &[IntentId],
        to: IntentState,
        detail: serde_json::Value,
    ) -> Result<Vec<Intent>> {
        let mut tx = self.write().await?;
        let moved = transition_all_in(&mut tx, ids, to, &detail, now_ms()).await?;
        tx.commit().await.map_err(db("commit transitions"))?;
        Ok(moved)
    }

    /// The intent `id` and all its events, oldest first.
    pub async fn intent(&self, id: IntentId) -> Result<Option<(Intent, Vec<IntentEvent>)>> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {INTENT_COLUMNS} FROM intents WHERE id = $1")))
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("read intent"))?;
        let Some(row) = row else { return Ok(None) };
        let intent = intent_from_row(&row)?;
        let events = sqlx::query(
            "SELECT from_state, to_state, detail, at FROM intent_events WHERE intent_id = $1 ORDER BY id",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read intent events"))?
        .iter()
        .map(event_from_row)
        .collect::<Result<_>>()?;
        Ok(Some((intent, events)))
    }

    /// The intent with this idempotency key, if journaled.
    pub async fn intent_by_key(&self, key: &str) -> Result<Option<Intent>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INTENT_COLUMNS} FROM intents WHERE idempotency_key = $1"
        )))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read intent"))?
        .as_ref()
        .map(intent_from_row)
        .transpose()
    }

    /// Intents matching `filter`, newest first.
    pub async fn list(&self, filter: &IntentFilter) -> Result<Vec<Intent>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INTENT_COLUMNS} FROM intents
             WHERE ($1 IS NULL OR state = $2) AND ($3 IS NULL OR policy = $4)
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(filter.state.map(IntentState::as_str))
        .bind(filter.state.map(IntentState::as_str))
        .bind(filter.policy.as_deref())
        .bind(filter.policy.as_deref())
        .bind(i64::from(filter.limit.unwrap_or(100)))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list intents"))?
        .iter()
        .map(intent_from_row)
        .collect()
    }

    /// The newest `limit` intents not failed, rejected or expired, newest first, each with its
    /// newest operation and that operation's newest transaction's block, in one query.
    pub async fn decided_intents(&self, limit: u32) -> Result<Vec<DecidedIntent>> {
        self.decided_intents_with(INTENT_COLUMNS, &format!("i.state IN {DECIDED}"), limit).await
    }

    /// The ids of [`Journal::decided_intents`], newest first, read from the state index alone.
    pub async fn decided_ids(&self, limit: u32) -> Result<Vec<IntentId>> {
        let sql = format!("SELECT id FROM intents WHERE state IN {DECIDED} ORDER BY id DESC LIMIT $1");
        let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db("list decided intent ids"))?;
        Ok(ids.into_iter().map(IntentId).collect())
    }

    /// Like [`Journal::decided_intents`], only those planned into an operation (the others have
    /// none to name), each with its payload left out (`null`); a caller that keeps the (never
    /// changing) payloads reads only the new ones ([`Journal::payloads`]).
    pub async fn planned_intents_without_payloads(&self, limit: u32) -> Result<Vec<DecidedIntent>> {
        let planned =
            "i.state IN ('planned', 'authorising', 'awaiting_root', 'signed', 'submitted', 'confirmed')";
        self.decided_intents_with(super::pending::INTENT_COLUMNS_NO_PAYLOAD, planned, limit).await
    }

    /// The newest `limit` intents matching `filter` (decided ones), newest first.
    async fn decided_intents_with(
        &self,
        columns: &str,
        filter: &str,
        limit: u32,
    ) -> Result<Vec<DecidedIntent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT d.*, (SELECT t.block_number FROM transactions t WHERE t.operation_id = d.op_id
                          ORDER BY t.id DESC LIMIT 1) AS mined_block
             FROM (SELECT {columns}, ({NEWEST_OPERATION}) AS op_id FROM intents i
                   WHERE {filter} ORDER BY i.id DESC LIMIT $1) d
             ORDER BY d.id DESC"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("list decided intents"))?;
        rows.iter()
            .map(|row| {
                let get = |e| JournalError::Database { what: "read decided intent", source: e };
                let mined: Option<i64> = row.try_get("mined_block").map_err(get)?;
                Ok(DecidedIntent {
                    intent: intent_from_row(row)?,
                    operation_id: row.try_get("op_id").map_err(get)?,
                    mined_block: mined
                        .map(|b| u64::try_from(b).map_err(|e| corrupt("mined block", e)))
                        .transpose()?,
                })
            })
            .collect()
    }
}

/// Moves one intent inside an open write transaction (see [`Journal::transition`]).
pub(super) async fn transition_in(
    tx: &mut WriteTx,
    id: IntentId,
    to: IntentState,
    detail: &serde_json::Value,
    now: i64,
) -> Result<Intent> {
    let current: Option<String> = sqlx::query_scalar("SELECT state FROM intents WHERE id = $1")
        .bind(id.0)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("read intent state"))?;
    let from: IntentState =
        current.ok_or(JournalError::NotFound(id))?.parse().map_err(|e| corrupt("intent state", e))?;
    if !from.can_become(to) {
        return Err(JournalError::IllegalTransition { id, from, to });
    }
    // Conditional on the state just read: on PostgreSQL a concurrent writer may have moved the
    // intent in between (SQLite's write lock excludes that); then nothing is written.
    let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE intents SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4 RETURNING {INTENT_COLUMNS}"
    )))
    .bind(to.as_str())
    .bind(now)
    .bind(id.0)
    .bind(from.as_str())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db("update intent state"))?;
    let Some(row) = moved else { return Err(moved_meanwhile(tx, id, to).await) };
    insert_event(tx, id, Some(from), to, detail, now).await?;
    intent_from_row(&row)
}

/// Moves the intents `ids` to `to` inside an open write transaction, each as
/// [`transition_in`] would, in a few statements whatever their number: one read of their states,
/// one conditional update per state they come from, and their event rows in multi-row inserts.
pub(super) async fn transition_all_in(
    tx: &mut WriteTx,
    ids: &[IntentId],
    to: IntentState,
    detail: &serde_json::Value,
    now: i64,
) -> Result<Vec<Intent>> {
    if let [id] = ids {
        return Ok(vec![transition_in(tx, *id, to, detail, now).await?]);
    }
    let mut moved = transition_path_in(tx, ids, &[(to, detail)], now).await?;
    Ok(moved.pop().unwrap_or_default())
}

/// Moves the intents `ids` through each state of `steps` in turn (each with its event detail)
/// inside an open write transaction, in the statements of one [`transition_all_in`]: the update
/// writes the last state, and every step has its event rows. Returns the intents as each step
/// left them.
pub(super) async fn transition_path_in(
    tx: &mut WriteTx,
    ids: &[IntentId],
    steps: &[(IntentState, &serde_json::Value)],
    now: i64,
) -> Result<Vec<Vec<Intent>>> {
    let Some(&(to, _)) = steps.last() else { return Ok(Vec::new()) };
    let mut current: HashMap<IntentId, Intent> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(INSERT_CHUNK) {
        let sql =
            format!("SELECT {INTENT_COLUMNS} FROM intents WHERE id IN ({})", placeholders(1, chunk.len()));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.0);
        }
        for row in query.fetch_all(&mut **tx).await.map_err(db("read intent states"))? {
            let intent = intent_from_row(&row)?;
            current.insert(intent.id, intent);
        }
    }
    let mut by_source: Vec<(IntentState, Vec<IntentId>)> = Vec::new();
    for id in ids {
        let from = current.get(id).ok_or(JournalError::NotFound(*id))?.state;
        let mut at = from;
        for &(next, _) in steps {
            if !at.can_become(next) {
                return Err(JournalError::IllegalTransition { id: *id, from: at, to: next });
            }
            at = next;
        }
        match by_source.iter_mut().find(|(state, _)| *state == from) {
            Some((_, group)) => group.push(*id),
            None => by_source.push((from, vec![*id])),
        }
    }
    for (from, group) in &by_source {
        // Conditional on the states just read, as in `transition_in`.
        for chunk in group.chunks(INSERT_CHUNK) {
            let sql = format!(
                "UPDATE intents SET state = $1, updated_at = $2 WHERE state = $3 AND id IN ({}) RETURNING id",
                placeholders(4, chunk.len())
            );
            let mut query =
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(to.as_str()).bind(now).bind(from.as_str());
            for id in chunk {
                query = query.bind(id.0);
            }
            let moved: Vec<i64> = query.fetch_all(&mut **tx).await.map_err(db("update intent states"))?;
            if let Some(missed) = chunk.iter().find(|id| !moved.contains(&id.0)) {
                return Err(moved_meanwhile(tx, *missed, steps[0].0).await);
            }
        }
    }
    let mut events = Vec::with_capacity(ids.len() * steps.len());
    let mut left = Vec::with_capacity(steps.len());
    let mut before: Vec<IntentState> = ids.iter().map(|id| current[id].state).collect();
    for &(step, detail) in steps {
        let detail = detail.to_string();
        for (id, from) in ids.iter().zip(&mut before) {
            events.push((*id, Some(*from), step, detail.clone()));
            *from = step;
        }
        left.push(
            ids.iter().map(|id| Intent { state: step, updated_at: now, ..current[id].clone() }).collect(),
        );
    }
    insert_events(tx, &events, now).await?;
    Ok(left)
}

/// `$first, …` for `count` parameters (an `IN` list).
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The error for an intent the conditional update did not move although it was read in a state
/// that may become `to`: another writer moved it meanwhile, and the error names its state now.
async fn moved_meanwhile(tx: &mut WriteTx, id: IntentId, to: IntentState) -> JournalError {
    let now_in: std::result::Result<Option<String>, _> =
        sqlx::query_scalar("SELECT state FROM intents WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&mut **tx)
            .await;
    match now_in {
        Err(e) => db("read intent state")(e),
        Ok(None) => JournalError::NotFound(id),
        Ok(Some(state)) => match state.parse() {
            Ok(from) => JournalError::IllegalTransition { id, from, to },
            Err(e) => corrupt("intent state", e),
        },
    }
}

async fn insert_event(
    tx: &mut WriteTx,
    id: IntentId,
    from: Option<IntentState>,
    to: IntentState,
    detail: &serde_json::Value,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO intent_events (intent_id, from_state, to_state, detail, at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.0)
    .bind(from.map(IntentState::as_str))
    .bind(to.as_str())
    .bind(detail.to_string())
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(db("insert intent event"))?;
    Ok(())
}
