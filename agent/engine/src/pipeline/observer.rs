//! Journals every step of the keeper's send before it is taken.

use treasury_chain::sender::{ObserverError, SendEvent, SendObserver};

use super::Pipeline;
use crate::journal::{
    IntentId, IntentState, Journal, NewTransaction, QuorumSignature, SigningAnswer, TxState, Write,
};

/// Writes the keeper's transactions to the journal; the first signed one moves the intents to `submitted`.
pub(super) struct JournalObserver<'a> {
    journal: Journal,
    pipeline: &'a Pipeline,
    operation_id: String,
    module_nonce: u64,
    intents: Vec<IntentId>,
    signed_operation: serde_json::Value,
    submitted: bool,
    started: std::time::Instant,
    broadcast_after: Option<std::time::Duration>,
    /// A quorum signature to journal with the first transaction: (answer, `signed` event detail).
    fresh_signature: Option<(QuorumSignature, serde_json::Value)>,
    /// Observations (broadcast, inclusion) not journaled yet: written with the next write, before
    /// the sender waits ([`SendObserver::flush`]), or dropped when the lane journals the
    /// transaction's outcome, which supersedes them.
    held: Vec<(String, TxState, Option<u64>)>,
}

impl<'a> JournalObserver<'a> {
    pub(super) fn new(
        pipeline: &'a Pipeline,
        operation: (&str, u64, &[IntentId]),
        signed_operation: serde_json::Value,
        submitted: bool,
    ) -> Self {
        let (operation_id, module_nonce, intents) = operation;
        Self {
            journal: pipeline.journal.clone(),
            pipeline,
            operation_id: operation_id.to_string(),
            module_nonce,
            intents: intents.to_vec(),
            signed_operation,
            submitted,
            started: std::time::Instant::now(),
            broadcast_after: None,
            fresh_signature: None,
            held: Vec::new(),
        }
    }

    /// Journals this quorum answer (and the `signed` transition) with the first transaction.
    pub(super) fn with_fresh_signature(
        mut self,
        signature: QuorumSignature,
        detail: serde_json::Value,
    ) -> Self {
        self.fresh_signature = Some((signature, detail));
        self
    }

    /// The writes that journal the fresh signature, if no transaction carried it.
    pub(super) fn unwritten_signature(&mut self) -> Option<Vec<Write>> {
        let (signature, detail) = self.fresh_signature.take()?;
        Some(self.signature_writes(signature, detail))
    }

    fn signature_writes(&self, signature: QuorumSignature, detail: serde_json::Value) -> Vec<Write> {
        vec![
            Write::SigningAnswer {
                operation_id: self.operation_id.clone(),
                signer: "quorum".into(),
                answer: SigningAnswer::Quorum(signature),
            },
            Write::Transition { intents: self.intents.clone(), to: IntentState::Signed, detail },
        ]
    }

    /// How long after the observer's creation the first broadcast happened.
    pub(super) fn broadcast_after(&self) -> Option<std::time::Duration> {
        self.broadcast_after
    }

    /// Whether a transaction was journaled and the intents moved to `submitted`.
    pub(super) fn submitted(&self) -> bool {
        self.submitted
    }

    /// Journals the held observations (one relaxed commit); nothing when none is held.
    pub(super) async fn write_held(&mut self) -> crate::journal::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.journal.set_transaction_states(&self.held).await?;
        self.held.clear();
        Ok(())
    }

    async fn record(&mut self, event: &SendEvent) -> crate::journal::Result<()> {
        // A broadcast or an inclusion is an observation the chain can tell again (a crash before
        // it is journaled leaves the transaction `signed`, and resuming rebroadcasts it and looks
        // for its receipt, as after a crash right after the broadcast): it is held back and
        // written with the next write, so a transaction mined at once costs no commit between its
        // broadcast and its outcome. Anything else is written after what is held, in order.
        match event {
            SendEvent::Broadcast { tx_hash } => {
                tracing::info!(operation = %self.operation_id, module_nonce = self.module_nonce, %tx_hash, "submitted: exec transaction broadcast");
                self.broadcast_after.get_or_insert(self.started.elapsed());
                self.held.push((tx_hash.to_string(), TxState::Broadcast, None));
                return Ok(());
            }
            SendEvent::Included { tx_hash, block_number, .. } => {
                self.held.push((tx_hash.to_string(), TxState::Included, Some(*block_number)));
                return Ok(());
            }
            SendEvent::Confirmed { tx_hash, .. } => {
                // The lane journals this transaction's outcome next, with its block.
                let confirmed = tx_hash.to_string();
                self.held.retain(|(h, _, _)| *h != confirmed);
            }
            _ => {}
        }
        self.write_held().await?;
        match event {
            SendEvent::Signed { nonce, tx_hash, raw, replaces, .. } => {
                let new = NewTransaction {
                    operation_id: self.operation_id.clone(),
                    module_nonce: self.module_nonce,
                    signed_operation: self.signed_operation.clone(),
                    keeper_nonce: *nonce,
                    tx_hash: tx_hash.to_string(),
                    raw_tx: raw.to_string(),
                };
                if self.submitted {
                    self.journal.record_transaction(&new).await?;
                } else {
                    // The transaction, the signature (if fresh), signed and submitted: one
                    // commit, before the broadcast (the two moves back to back: one pass).
                    let detail =
                        serde_json::json!({ "tx_hash": new.tx_hash, "keeper_nonce": new.keeper_nonce });
                    let mut writes = vec![Write::Transaction(new)];
                    let fresh = self.fresh_signature.take();
                    let signed_too = fresh.is_some();
                    if let Some((response, detail)) = fresh {
                        writes.extend(self.signature_writes(response, detail));
                    }
                    writes.push(Write::Transition {
                        intents: self.intents.clone(),
                        to: IntentState::Submitted,
                        detail,
                    });
                    self.journal.apply(&writes).await?;
                    self.submitted = true;
                    if signed_too {
                        self.pipeline.transitioned(IntentState::Signed);
                    }
                    self.pipeline.transitioned(IntentState::Submitted);
                }
                if let Some(old) = replaces {
                    self.journal.set_transaction_state(&old.to_string(), TxState::Replaced, None).await?;
                }
            }
            SendEvent::Reorged { tx_hash, block_number } => {
                self.journal
                    .set_transaction_state(&tx_hash.to_string(), TxState::Reorged, Some(*block_number))
                    .await?;
            }
            // The lane journals confirmation together with the intents' outcome.
            _ => {}
        }
        Ok(())
    }
}

impl SendObserver for JournalObserver<'_> {
    async fn observe(&mut self, event: &SendEvent) -> Result<(), ObserverError> {
        self.record(event).await.map_err(|e| Box::new(e) as ObserverError)
    }

    async fn flush(&mut self) -> Result<(), ObserverError> {
        self.write_held().await.map_err(|e| Box::new(e) as ObserverError)
    }
}
