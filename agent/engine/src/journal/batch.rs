//! Several journal writes committed as one transaction: one fsync where the flow takes several
//! steps with no action between them (e.g. planned → authorising, signed → submitted).

use super::execution::{
    NewSigningRequest, NewTransaction, OperationRecord, SigningAnswer, TxState, insert_operation,
    insert_signing_request, insert_transaction, update_signing_request, update_transaction_state,
};
use super::intents::{Intent, IntentId, transition_all_in, transition_path_in};
use super::state::IntentState;
use super::{Journal, Result, WriteTx, db, now_ms};

/// One write of a [`Journal::apply`] batch.
#[derive(Debug, Clone)]
pub enum Write {
    /// Store a planned operation and link its intents (idempotent).
    Operation(OperationRecord),
    /// Move these intents to a state, with one event row each.
    Transition {
        /// The intents.
        intents: Vec<IntentId>,
        /// The state entered.
        to: IntentState,
        /// The event detail.
        detail: serde_json::Value,
    },
    /// Store a signing request as pending (idempotent).
    SigningRequest(NewSigningRequest),
    /// Record the answer to a signing request.
    SigningAnswer {
        /// The operation.
        operation_id: String,
        /// `quorum` or `root`.
        signer: String,
        /// The signature or the refusal.
        answer: SigningAnswer,
    },
    /// Store a signed keeper transaction (idempotent on its hash).
    Transaction(NewTransaction),
    /// Record what became of a keeper transaction.
    TransactionState {
        /// Its hash, hex.
        tx_hash: String,
        /// Its state.
        state: TxState,
        /// The block it was seen in.
        block: Option<u64>,
    },
}

impl Journal {
    /// Applies `writes` in order in one transaction, all or none; returns the intents moved.
    pub async fn apply(&self, writes: &[Write]) -> Result<Vec<Intent>> {
        let tx = self.write().await?;
        apply_in(tx, writes).await
    }

    /// [`Journal::apply`] for what the chain can tell again (a mined transaction's outcome): it
    /// survives a crash of the process, not necessarily a power loss, until the next durable
    /// commit (see [`Journal::write_relaxed`]).
    pub async fn apply_relaxed(&self, writes: &[Write]) -> Result<Vec<Intent>> {
        let tx = self.write_relaxed().await?;
        apply_in(tx, writes).await
    }
}

/// Applies `writes` in order in `tx` and commits it; returns the intents moved.
async fn apply_in(mut tx: WriteTx, writes: &[Write]) -> Result<Vec<Intent>> {
    let now = now_ms();
    let mut moved = Vec::new();
    let mut next = 0;
    while let Some(w) = writes.get(next) {
        next += 1;
        match w {
            Write::Operation(op) => insert_operation(&mut tx, op).await?,
            Write::Transition { intents, to, detail } => {
                // Transitions of the same intents back to back (planned → authorising) are
                // one pass through their rows.
                let mut steps = vec![(*to, detail)];
                while let Some(Write::Transition { intents: same, to, detail }) = writes.get(next)
                    && same == intents
                {
                    steps.push((*to, detail));
                    next += 1;
                }
                match steps.as_slice() {
                    [(to, detail)] => {
                        moved.extend(transition_all_in(&mut tx, intents, *to, detail, now).await?)
                    }
                    path => moved
                        .extend(transition_path_in(&mut tx, intents, path, now).await?.into_iter().flatten()),
                }
            }
            Write::SigningRequest(req) => insert_signing_request(&mut tx, req, now).await?,
            Write::SigningAnswer { operation_id, signer, answer } => {
                update_signing_request(&mut tx, operation_id, signer, answer, now).await?
            }
            Write::Transaction(new) => insert_transaction(&mut tx, new, now).await?,
            Write::TransactionState { tx_hash, state, block } => {
                update_transaction_state(&mut tx, tx_hash, *state, *block, now).await?
            }
        }
    }
    tx.commit().await.map_err(db("commit journal batch"))?;
    Ok(moved)
}
