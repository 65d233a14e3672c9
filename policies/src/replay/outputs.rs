//! What a firing's policies derived, kept per inputs: the snapshot's block (number and hash), the
//! policies fired and the payments they saw. Every operation of a firing is replayed, so a
//! firing paying 1,000 recipients in 63 operations would otherwise be evaluated 63 times over the
//! same inputs. The key is a keccak256 of all of them (a script's output depends on nothing
//! else: no clock, no randomness, no I/O), so an output is reused only for the same inputs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use alloy::primitives::{B256, keccak256};
use treasury_chain::snapshot::Snapshot;

use crate::intent::Intent;
use crate::view::Payment;

/// How many firings' outputs are kept (the newest).
const KEPT: usize = 16;

/// The outputs of the last [`KEPT`] firings replayed, newest last.
#[derive(Debug, Default)]
pub(super) struct FiringOutputs(Mutex<VecDeque<(B256, Arc<Vec<Intent>>)>>);

impl FiringOutputs {
    /// The key of a firing's inputs.
    pub(super) fn key(snapshot: &Snapshot, policies: &[String], seen: &[Payment]) -> B256 {
        let inputs = (snapshot.block_number, snapshot.block_hash, policies, seen);
        keccak256(serde_json::to_vec(&inputs).expect("firing inputs serialise"))
    }

    /// The output kept for `key`, else `derive`'s (kept when it succeeds).
    pub(super) fn get_or_derive<E>(
        &self,
        key: B256,
        derive: impl FnOnce() -> Result<Vec<Intent>, E>,
    ) -> Result<Arc<Vec<Intent>>, E> {
        if let Some((_, kept)) = self.lock().iter().find(|(k, _)| *k == key) {
            return Ok(kept.clone());
        }
        let derived = Arc::new(derive()?);
        let mut kept = self.lock();
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((key, derived.clone()));
        Ok(derived)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(B256, Arc<Vec<Intent>>)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
