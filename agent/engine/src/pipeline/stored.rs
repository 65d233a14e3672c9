//! The intents' journaled payloads, parsed once per process: a payload never changes once the
//! intent is journaled, and authorising each operation of a large firing reads the decided
//! history (up to thousands of intents) again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Result;
use super::intake::StoredIntent;
use crate::journal::{IntentId, Journal, JournalError};

/// Parsed payloads by intent id.
#[derive(Default)]
pub(crate) struct StoredIntents(Mutex<HashMap<IntentId, Arc<StoredIntent>>>);

impl StoredIntents {
    /// The stored form of each of `ids`, in order, reading from `journal` only those not parsed
    /// yet; an id the journal does not hold is an error.
    pub(crate) async fn get(&self, journal: &Journal, ids: &[IntentId]) -> Result<Vec<Arc<StoredIntent>>> {
        let missing: Vec<IntentId> = {
            let known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ids.iter().filter(|id| !known.contains_key(id)).copied().collect()
        };
        let mut parsed = Vec::with_capacity(missing.len());
        for (id, payload) in journal.payloads(&missing).await? {
            parsed.push((id, Arc::new(StoredIntent::from_payload(&payload)?)));
        }
        let mut known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        known.extend(parsed);
        ids.iter().map(|id| known.get(id).cloned().ok_or(JournalError::NotFound(*id).into())).collect()
    }

    /// Keeps `stored` as the stored form of `id` (one just journaled).
    pub(crate) fn insert(&self, id: IntentId, stored: Arc<StoredIntent>) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, stored);
    }

    /// Forgets every intent older than `oldest` (the histories read hold none of them).
    pub(crate) fn forget_older_than(&self, oldest: IntentId) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|id, _| *id >= oldest);
    }
}
