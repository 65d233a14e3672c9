//! What follows planning: the operation, its signing requests and the keeper transactions carrying it.

use alloy::primitives::Bytes;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use treasury_signer::quorum::FrostSignature;
use utoipa::ToSchema;

use super::intents::{INSERT_CHUNK, IntentId, values_placeholders};
use super::{Journal, JournalError, Result, WriteTx, corrupt, db, now_ms};

/// A planned module operation (one `exec`) and the intents it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OperationRecord {
    /// Stable id of the operation (e.g. its EIP-712 digest in hex).
    pub operation_id: String,
    /// The module nonce it was planned with.
    pub module_nonce: u64,
    /// The operation itself (calls, nonce, deadline).
    #[schema(value_type = Object)]
    pub operation: serde_json::Value,
    /// The intents it carries.
    pub intents: Vec<IntentId>,
}

/// Who is asked to sign and what is asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSigningRequest {
    /// The operation to sign.
    pub operation_id: String,
    /// `quorum` or `root`.
    pub signer: String,
    /// The EIP-712 digest the signature must verify against, hex.
    pub digest: String,
    /// The request as sent (operation, tier, policy context).
    pub request: serde_json::Value,
}

/// Where a signing request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigningState {
    /// Sent, no answer yet.
    Pending,
    /// Answered with a signature.
    Signed,
    /// Refused.
    Refused,
}

impl SigningState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Signed => "signed",
            Self::Refused => "refused",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(Self::Pending),
            "signed" => Ok(Self::Signed),
            "refused" => Ok(Self::Refused),
            other => Err(corrupt("signing state", other)),
        }
    }
}

/// The quorum's signature of an operation, with the root's signature it was given (tier 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumSignature {
    /// The FROST signature `exec` checks.
    pub signature: FrostSignature,
    /// The root's signature, passed to `exec` as `rootSig`; `None` for tier 1.
    pub root_signature: Option<Bytes>,
}

/// The root service's signature of an operation (tier 2), before the quorum signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootSignature {
    /// The 65-byte signature (r ‖ s ‖ v).
    pub signature: Bytes,
}

/// A signer's answer to a signing request, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningAnswer {
    /// Signed by the quorum (signer `quorum`).
    Quorum(QuorumSignature),
    /// Signed by the root service (signer `root`).
    Root(RootSignature),
    /// Refused, and why.
    Refused(String),
}

impl SigningAnswer {
    /// The state of a request answered so.
    pub fn state(&self) -> SigningState {
        match self {
            Self::Quorum(_) | Self::Root(_) => SigningState::Signed,
            Self::Refused(_) => SigningState::Refused,
        }
    }

    /// The stored JSON: the signature object, or the reason as a string.
    fn to_json(&self) -> String {
        let value = match self {
            Self::Quorum(q) => serde_json::to_value(q),
            Self::Root(r) => serde_json::to_value(r),
            Self::Refused(reason) => serde_json::to_value(reason),
        };
        value.expect("signatures serialise").to_string()
    }

    /// Reads back what [`Self::to_json`] stored for `signer` in `state`; why not if it does not parse.
    fn from_json(signer: &str, state: SigningState, text: &str) -> std::result::Result<Self, String> {
        let answer = match (state, signer) {
            (SigningState::Pending, _) => return Err("a pending request holds an answer".into()),
            (SigningState::Refused, _) => serde_json::from_str(text).map(Self::Refused),
            (SigningState::Signed, "quorum") => serde_json::from_str(text).map(Self::Quorum),
            (SigningState::Signed, "root") => serde_json::from_str(text).map(Self::Root),
            (SigningState::Signed, other) => return Err(format!("signed by unknown signer `{other}`")),
        };
        answer.map_err(|e| e.to_string())
    }
}

/// A journaled signing request.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningRequest {
    /// The request.
    pub request: NewSigningRequest,
    /// Where it stands.
    pub state: SigningState,
    /// The signature or the refusal, once answered.
    pub answer: Option<SigningAnswer>,
}

/// A keeper transaction, journaled before broadcast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewTransaction {
    /// The operation it carries.
    pub operation_id: String,
    /// The module nonce of that operation.
    pub module_nonce: u64,
    /// The authorised operation (calls, nonce, deadline, signatures).
    #[schema(value_type = Object)]
    pub signed_operation: serde_json::Value,
    /// The keeper account nonce.
    pub keeper_nonce: u64,
    /// Hash of the signed keeper transaction, hex.
    pub tx_hash: String,
    /// The signed keeper transaction (EIP-2718), hex: enough to broadcast it again.
    pub raw_tx: String,
}

/// Where a keeper transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TxState {
    /// Signed and stored, maybe not broadcast yet.
    Signed,
    /// Accepted by the node.
    Broadcast,
    /// Mined, not yet deep enough.
    Included,
    /// Dropped by a reorg; it is being broadcast again.
    Reorged,
    /// Superseded by a same-nonce replacement with higher fees.
    Replaced,
    /// Buried under the configured confirmations.
    Confirmed,
    /// Mined and reverted, or abandoned.
    Failed,
}

impl TxState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Signed => "signed",
            Self::Broadcast => "broadcast",
            Self::Included => "included",
            Self::Reorged => "reorged",
            Self::Replaced => "replaced",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        [
            Self::Signed,
            Self::Broadcast,
            Self::Included,
            Self::Reorged,
            Self::Replaced,
            Self::Confirmed,
            Self::Failed,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| corrupt("transaction state", s))
    }
}

/// A journaled keeper transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransactionRecord {
    /// What was stored before broadcast.
    pub tx: NewTransaction,
    /// Where it stands.
    pub state: TxState,
    /// The block it was last seen mined in.
    pub block_number: Option<u64>,
}

pub(super) fn read_err(e: sqlx::Error) -> JournalError {
    JournalError::Database { what: "read row", source: e }
}

pub(super) fn u64_col(row: &AnyRow, col: &str) -> Result<u64> {
    let v: i64 = row.try_get(col).map_err(read_err)?;
    u64::try_from(v).map_err(|e| corrupt("unsigned column", e))
}

pub(super) fn json_col(row: &AnyRow, col: &str) -> Result<serde_json::Value> {
    let text: String = row.try_get(col).map_err(read_err)?;
    serde_json::from_str(&text).map_err(|e| corrupt("JSON column", e))
}

pub(super) fn transaction_from_row(row: &AnyRow) -> Result<TransactionRecord> {
    let state: String = row.try_get("state").map_err(read_err)?;
    let block: Option<i64> = row.try_get("block_number").map_err(read_err)?;
    Ok(TransactionRecord {
        tx: NewTransaction {
            operation_id: row.try_get("operation_id").map_err(read_err)?,
            module_nonce: u64_col(row, "module_nonce")?,
            signed_operation: json_col(row, "signed_operation")?,
            keeper_nonce: u64_col(row, "keeper_nonce")?,
            tx_hash: row.try_get("tx_hash").map_err(read_err)?,
            raw_tx: row.try_get("raw_tx").map_err(read_err)?,
        },
        state: TxState::parse(&state)?,
        block_number: block.map(|b| b as u64),
    })
}

pub(super) const TX_COLUMNS: &str =
    "operation_id, module_nonce, signed_operation, keeper_nonce, tx_hash, raw_tx, state, block_number";

impl Journal {
    /// Stores a planned operation and links it to its intents; storing the same id again changes nothing.
    pub async fn record_operation(&self, op: &OperationRecord) -> Result<()> {
        let mut tx = self.write().await?;
        insert_operation(&mut tx, op).await?;
        tx.commit().await.map_err(db("commit operation"))
    }

    /// The newest operation planned for intent `id`.
    pub async fn operation_of(&self, id: IntentId) -> Result<Option<OperationRecord>> {
        let row = sqlx::query(
            "SELECT o.operation_id, o.module_nonce, o.operation FROM operations o
             JOIN operation_intents l ON l.operation_id = o.operation_id
             WHERE l.intent_id = $1 ORDER BY o.created_at DESC, o.operation_id LIMIT 1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read operation"))?;
        let Some(row) = row else { return Ok(None) };
        let operation_id: String = row.try_get("operation_id").map_err(read_err)?;
        let intents = sqlx::query_scalar(
            "SELECT intent_id FROM operation_intents WHERE operation_id = $1 ORDER BY intent_id",
        )
        .bind(&operation_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read operation intents"))?
        .into_iter()
        .map(IntentId)
        .collect();
        Ok(Some(OperationRecord {
            module_nonce: u64_col(&row, "module_nonce")?,
            operation: json_col(&row, "operation")?,
            operation_id,
            intents,
        }))
    }

    /// Stores a signing request as pending; storing it again returns the stored one unchanged.
    pub async fn record_signing_request(&self, req: &NewSigningRequest) -> Result<SigningRequest> {
        self.apply(&[super::batch::Write::SigningRequest(req.clone())]).await?;
        self.signing_request(&req.operation_id, &req.signer)
            .await?
            .ok_or_else(|| corrupt("signing request", "vanished after insert"))
    }

    /// Records the answer to a signing request.
    pub async fn answer_signing_request(
        &self,
        operation_id: &str,
        signer: &str,
        answer: &SigningAnswer,
    ) -> Result<()> {
        let answer = super::batch::Write::SigningAnswer {
            operation_id: operation_id.to_string(),
            signer: signer.to_string(),
            answer: answer.clone(),
        };
        self.apply(&[answer]).await.map(drop)
    }

    /// The signing request of `operation_id` addressed to `signer`; a stored answer that does not
    /// parse is [`JournalError::CorruptAnswer`], never an empty one.
    pub async fn signing_request(&self, operation_id: &str, signer: &str) -> Result<Option<SigningRequest>> {
        let row = sqlx::query(
            "SELECT operation_id, signer, digest, request, state, response FROM signing_requests
             WHERE operation_id = $1 AND signer = $2",
        )
        .bind(operation_id)
        .bind(signer)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read signing request"))?;
        let Some(row) = row else { return Ok(None) };
        let state = SigningState::parse(&row.try_get::<String, _>("state").map_err(read_err)?)?;
        let response: Option<String> = row.try_get("response").map_err(read_err)?;
        let corrupt_answer = |reason: String| JournalError::CorruptAnswer {
            operation_id: operation_id.to_string(),
            signer: signer.to_string(),
            reason,
        };
        let answer = match (state, response) {
            (SigningState::Pending, None) => None,
            (_, None) => return Err(corrupt_answer(format!("{} without an answer", state.as_str()))),
            (state, Some(text)) => {
                Some(SigningAnswer::from_json(signer, state, &text).map_err(corrupt_answer)?)
            }
        };
        Ok(Some(SigningRequest {
            request: NewSigningRequest {
                operation_id: row.try_get("operation_id").map_err(read_err)?,
                signer: row.try_get("signer").map_err(read_err)?,
                digest: row.try_get("digest").map_err(read_err)?,
                request: json_col(&row, "request")?,
            },
            state,
            answer,
        }))
    }

    /// Stores a signed keeper transaction before it is broadcast; storing the same hash again changes nothing.
    pub async fn record_transaction(&self, new: &NewTransaction) -> Result<()> {
        let mut tx = self.write().await?;
        insert_transaction(&mut tx, new, now_ms()).await?;
        tx.commit().await.map_err(db("commit transaction"))
    }

    /// Records what became of keeper transaction `tx_hash`. An observation the chain can tell
    /// again, so it is written without waiting for the disk (it survives a crash of the process,
    /// not necessarily a power loss).
    pub async fn set_transaction_state(
        &self,
        tx_hash: &str,
        state: TxState,
        block_number: Option<u64>,
    ) -> Result<()> {
        let mut tx = self.write_relaxed().await?;
        update_transaction_state(&mut tx, tx_hash, state, block_number, now_ms()).await?;
        tx.commit().await.map_err(db("commit transaction state"))
    }

    /// [`Journal::set_transaction_state`] for several observations, in order, in one commit.
    pub async fn set_transaction_states(&self, states: &[(String, TxState, Option<u64>)]) -> Result<()> {
        if states.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.write_relaxed().await?;
        for (tx_hash, state, block_number) in states {
            update_transaction_state(&mut tx, tx_hash, *state, *block_number, now).await?;
        }
        tx.commit().await.map_err(db("commit transaction states"))
    }

    /// Every keeper transaction carrying `operation_id`, oldest first.
    pub async fn transactions(&self, operation_id: &str) -> Result<Vec<TransactionRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TX_COLUMNS} FROM transactions WHERE operation_id = $1 ORDER BY id"
        )))
        .bind(operation_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("list transactions"))?
        .iter()
        .map(transaction_from_row)
        .collect()
    }

    /// The newest keeper transaction carrying `operation_id`.
    pub async fn latest_transaction(&self, operation_id: &str) -> Result<Option<TransactionRecord>> {
        Ok(self.transactions(operation_id).await?.pop())
    }
}

pub(super) async fn insert_operation(tx: &mut WriteTx, op: &OperationRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO operations (operation_id, module_nonce, operation, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (operation_id) DO NOTHING",
    )
    .bind(&op.operation_id)
    .bind(op.module_nonce as i64)
    .bind(op.operation.to_string())
    .bind(now_ms())
    .execute(&mut **tx)
    .await
    .map_err(db("insert operation"))?;
    for chunk in op.intents.chunks(INSERT_CHUNK) {
        let sql = format!(
            "INSERT INTO operation_intents (operation_id, intent_id) VALUES {}
             ON CONFLICT (operation_id, intent_id) DO NOTHING",
            values_placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for intent in chunk {
            query = query.bind(&op.operation_id).bind(intent.0);
        }
        query.execute(&mut **tx).await.map_err(db("link operation to intents"))?;
    }
    Ok(())
}

pub(super) async fn insert_transaction(tx: &mut WriteTx, new: &NewTransaction, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO transactions (operation_id, module_nonce, signed_operation, keeper_nonce, tx_hash, raw_tx, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tx_hash) DO NOTHING",
    )
    .bind(&new.operation_id)
    .bind(new.module_nonce as i64)
    .bind(new.signed_operation.to_string())
    .bind(new.keeper_nonce as i64)
    .bind(&new.tx_hash)
    .bind(&new.raw_tx)
    .bind(TxState::Signed.as_str())
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db("insert transaction"))?;
    Ok(())
}

pub(super) async fn insert_signing_request(
    tx: &mut WriteTx,
    req: &NewSigningRequest,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO signing_requests (operation_id, signer, digest, request, state, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (operation_id, signer) DO NOTHING",
    )
    .bind(&req.operation_id)
    .bind(&req.signer)
    .bind(&req.digest)
    .bind(req.request.to_string())
    .bind(SigningState::Pending.as_str())
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db("insert signing request"))?;
    Ok(())
}

pub(super) async fn update_signing_request(
    tx: &mut WriteTx,
    operation_id: &str,
    signer: &str,
    answer: &SigningAnswer,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE signing_requests SET state = $1, response = $2, updated_at = $3 WHERE operation_id = $4 AND signer = $5")
        .bind(answer.state().as_str())
        .bind(answer.to_json())
        .bind(now)
        .bind(operation_id)
        .bind(signer)
        .execute(&mut **tx)
        .await
        .map_err(db("answer signing request"))?;
    Ok(())
}

pub(super) async fn update_transaction_state(
    tx: &mut WriteTx,
    tx_hash: &str,
    state: TxState,
    block_number: Option<u64>,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE transactions SET state = $1, block_number = $2, updated_at = $3 WHERE tx_hash = $4")
        .bind(state.as_str())
        .bind(block_number.map(|b| b as i64))
        .bind(now)
        .bind(tx_hash)
        .execute(&mut **tx)
        .await
        .map_err(db("update transaction"))?;
    Ok(())
}
