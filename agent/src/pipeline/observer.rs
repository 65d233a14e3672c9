//! Journals every step of the keeper's send before it is taken.

use treasury_chain::sender::{ObserverError, SendEvent, SendObserver};

use super::Pipeline;
use crate::journal::{IntentId, IntentState, Journal, NewTransaction, TxState};

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
        }
    }

    /// How long after the observer's creation the first broadcast happened.
    pub(super) fn broadcast_after(&self) -> Option<std::time::Duration> {
        self.broadcast_after
    }

    /// Whether a transaction was journaled and the intents moved to `submitted`.
    pub(super) fn submitted(&self) -> bool {
        self.submitted
    }

    async fn record(&mut self, event: &SendEvent) -> crate::journal::Result<()> {
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
                    self.journal.record_submission(&new, &self.intents).await?;
                    self.submitted = true;
                    self.pipeline.transitioned(IntentState::Submitted);
                }
                if let Some(old) = replaces {
                    self.journal.set_transaction_state(&old.to_string(), TxState::Replaced, None).await?;
                }
            }
            SendEvent::Broadcast { tx_hash } => {
                self.broadcast_after.get_or_insert(self.started.elapsed());
                self.journal.set_transaction_state(&tx_hash.to_string(), TxState::Broadcast, None).await?;
            }
            SendEvent::Included { tx_hash, block_number, .. } => {
                self.journal
                    .set_transaction_state(&tx_hash.to_string(), TxState::Included, Some(*block_number))
                    .await?;
            }
            SendEvent::Reorged { tx_hash, block_number } => {
                self.journal
                    .set_transaction_state(&tx_hash.to_string(), TxState::Reorged, Some(*block_number))
                    .await?;
            }
            SendEvent::Confirmed { tx_hash, block_number, success } => {
                let state = if *success { TxState::Confirmed } else { TxState::Failed };
                self.journal.set_transaction_state(&tx_hash.to_string(), state, Some(*block_number)).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl SendObserver for JournalObserver<'_> {
    async fn observe(&mut self, event: &SendEvent) -> Result<(), ObserverError> {
        self.record(event).await.map_err(|e| Box::new(e) as ObserverError)
    }
}
