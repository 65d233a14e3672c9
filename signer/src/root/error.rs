//! [`RootError`]: everything the root signer, its guard, queue, service and client can fail with.
use std::path::PathBuf;

use super::guard::GuardRule;
use crate::quorum::error::QuorumError;

/// An error of the root signer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// The file at the module path could not be loaded as a PKCS#11 library.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    ModuleLoad {
        /// Path given.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// No initialised token carries this label.
    #[error("no PKCS#11 token labelled {0:?}")]
    TokenNotFound(String),
    /// The token holds no secp256k1 key pair with this label.
    #[error("no secp256k1 key labelled {0:?} on the token")]
    KeyNotFound(String),
    /// More than one key pair carries this label: refusing to guess.
    #[error("{0} keys labelled {1:?} on the token; labels must be unique")]
    AmbiguousKey(usize, String),
    /// The token refused the PIN.
    #[error("the token refused the PIN")]
    WrongPin,
    /// The token's user PIN is locked after too many failures.
    #[error("the token's user PIN is locked")]
    PinLocked,
    /// The PIN could not be read from its environment variable or file.
    #[error("no PIN: {0}")]
    PinUnavailable(String),
    /// The HSM is unreachable (module missing, token removed, device error); retry later.
    #[error("HSM unavailable: {0}")]
    HsmUnavailable(String),
    /// A PKCS#11 call failed for another reason.
    #[error("PKCS#11 {op} failed: {reason}")]
    Pkcs11 {
        /// The operation attempted.
        op: &'static str,
        /// The library's error.
        reason: String,
    },
    /// The HSM returned something that is not a valid secp256k1 key or signature.
    #[error("malformed HSM output: {0}")]
    Malformed(String),
    /// The root guard refused the request.
    #[error("refused by the root guard, rule `{rule}`: {detail}")]
    GuardDenied {
        /// The rule that refused.
        rule: GuardRule,
        /// What exceeded it.
        detail: String,
    },
    /// An approver rejected the request.
    #[error("rejected by {by}: {reason}")]
    Rejected {
        /// Who rejected it.
        by: String,
        /// Their reason.
        reason: String,
    },
    /// No request has this id.
    #[error("unknown request {0}")]
    UnknownRequest(String),
    /// The request expired before it was approved or signed.
    #[error("request {0} has expired")]
    Expired(String),
    /// The request is not in a state that allows this decision.
    #[error("request {id} is {state}")]
    NotPending {
        /// Request id.
        id: String,
        /// Its current state.
        state: String,
    },
    /// Missing or wrong credentials, or a role that may not do this.
    #[error("unauthorised: {0}")]
    Unauthorized(String),
    /// The request was malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A statement on the durable queue (SQLite) failed.
    #[error("queue store: cannot {op}")]
    Store {
        /// What the statement was for.
        op: &'static str,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// The queue file could not be created.
    #[error("cannot create the queue file {path}")]
    StoreFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The queue file could not be brought to the current schema.
    #[error("cannot migrate the queue {path} to the current schema")]
    Migrate {
        /// The file.
        path: PathBuf,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A stored request cannot be read back as it was written.
    #[error("queue record {id}: unreadable {field}")]
    CorruptRecord {
        /// Request id.
        id: String,
        /// The column or value that does not decode.
        field: &'static str,
        /// Why it does not decode.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Talking to the root service failed.
    #[error("root service: {0}")]
    Transport(String),
    /// Reading the module's state from chain failed.
    #[error("chain: {0}")]
    Chain(String),
    /// The FROST quorum failed to sign.
    #[error("quorum: {0}")]
    Quorum(String),
    /// Too few quorum nodes were reachable or answered in time; retrying later may succeed.
    #[error("quorum unavailable: {0}")]
    QuorumUnavailable(String),
}

impl RootError {
    /// Whether retrying the same call later may succeed (HSM back, service reachable again).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::HsmUnavailable(_)
                | Self::Transport(_)
                | Self::Store { .. }
                | Self::StoreFile { .. }
                | Self::Migrate { .. }
                | Self::CorruptRecord { .. }
                | Self::Chain(_)
                | Self::QuorumUnavailable(_)
        )
    }

    /// Whether a policy refused the request (guard rule or human rejection), not a fault.
    pub fn is_policy_denial(&self) -> bool {
        matches!(self, Self::GuardDenied { .. } | Self::Rejected { .. })
    }

    /// The guard rule that refused, if any.
    pub fn guard_rule(&self) -> Option<GuardRule> {
        match self {
            Self::GuardDenied { rule, .. } => Some(*rule),
            _ => None,
        }
    }

    /// A failed queue statement, named by what it was for.
    pub(crate) fn store(op: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Store { op, source }
    }

    /// A stored value of request `id` that does not decode.
    pub(crate) fn corrupt<'a, E>(id: &'a str, field: &'static str) -> impl FnOnce(E) -> Self + 'a
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        move |e| Self::CorruptRecord { id: id.to_owned(), field, source: e.into() }
    }
}

/// A quorum failure as the escalation path reports it: a node guard's refusal is a policy denial
/// ([`RootError::Rejected`]), too few nodes up or in time is retryable
/// ([`RootError::QuorumUnavailable`]), anything else is [`RootError::Quorum`].
impl From<QuorumError> for RootError {
    fn from(e: QuorumError) -> Self {
        if e.is_policy_denial() {
            RootError::Rejected { by: "the signer quorum".into(), reason: e.to_string() }
        } else if e.is_retryable() {
            RootError::QuorumUnavailable(e.to_string())
        } else {
            RootError::Quorum(e.to_string())
        }
    }
}

/// Result with [`RootError`].
pub type Result<T, E = RootError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::quorum::error::{NodeFault, Refusal, RefusalCode};

    fn not_enough(fault: NodeFault) -> QuorumError {
        QuorumError::NotEnoughSigners { needed: 2, got: 1, faults: vec![("http://n1".into(), fault)] }
    }

    #[test]
    fn quorum_failures_map_to_root_errors_by_what_the_caller_should_do() {
        let denied =
            RootError::from(not_enough(NodeFault::Refused(Refusal::new(RefusalCode::OverBudget, "over"))));
        assert!(denied.is_policy_denial() && !denied.is_retryable(), "{denied}");
        assert!(denied.to_string().contains("over"), "{denied}");
        let down = RootError::from(not_enough(NodeFault::TimedOut(Duration::from_secs(1))));
        assert!(down.is_retryable() && !down.is_policy_denial(), "{down}");
        assert!(matches!(
            RootError::from(not_enough(NodeFault::Unreachable("refused".into()))),
            RootError::QuorumUnavailable(_)
        ));
        let broken = RootError::from(QuorumError::Frost("bad package".into()));
        assert!(
            matches!(broken, RootError::Quorum(_)) && !broken.is_retryable() && !broken.is_policy_denial()
        );
    }
}
