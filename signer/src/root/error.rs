//! [`RootError`]: everything the root signer, its guard, queue, service and client can fail with.
use std::path::PathBuf;

use super::guard::GuardRule;
use crate::quorum::error::QuorumError;

/// An error of the root signer.
///
/// Each message names what failed; why is its [`source`](std::error::Error::source), never
/// repeated in the message: print the whole chain with [`crate::error_chain`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// The file at the module path could not be found.
    #[error("cannot find PKCS#11 module {path}")]
    ModuleMissing {
        /// Path given.
        path: PathBuf,
        /// Why it cannot be resolved.
        #[source]
        source: std::io::Error,
    },
    /// The file at the module path could not be loaded or initialised as a PKCS#11 library.
    #[error("cannot load PKCS#11 module {path}")]
    ModuleLoad {
        /// Path given.
        path: PathBuf,
        /// What the loader said.
        #[source]
        source: cryptoki::error::Error,
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
    /// The PIN's environment variable is unset or empty.
    #[error("no PIN: environment variable {var} is not set")]
    PinNotSet {
        /// The variable.
        var: String,
    },
    /// The PIN file could not be read, or is empty.
    #[error("no PIN: cannot read a PIN from {path}")]
    PinFile {
        /// The file.
        path: PathBuf,
        /// Why (none: the file is empty).
        #[source]
        source: Option<std::io::Error>,
    },
    /// The HSM is unreachable (module missing, token removed, device error); retry later.
    #[error("HSM unavailable: {op} failed")]
    HsmUnavailable {
        /// The PKCS#11 call.
        op: &'static str,
        /// The library's error.
        #[source]
        source: cryptoki::error::Error,
    },
    /// A PKCS#11 call failed for another reason.
    #[error("PKCS#11 {op} failed")]
    Pkcs11 {
        /// The operation attempted.
        op: &'static str,
        /// The library's error.
        #[source]
        source: cryptoki::error::Error,
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
    /// A configuration or key file could not be read or written.
    #[error("configuration: cannot read or write {path}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for the service.
    #[error("configuration: {path} is not a valid service configuration")]
    ConfigSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
    /// A statement on the durable queue (SQLite) failed.
    #[error("queue store: cannot {op}")]
    Store {
        /// What the statement was for.
        op: &'static str,
        /// The database's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
    /// The root service could not be reached, or the connection failed before it answered.
    #[error("root service: {what} failed")]
    Transport {
        /// The request (method and path).
        what: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The root service (or the listener of a bench) could not be started.
    #[error("root service: cannot {what}")]
    Listen {
        /// What was attempted.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The root service answered something that does not decode.
    #[error("root service: the answer to {what} does not decode")]
    BadAnswer {
        /// The request (method and path).
        what: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The root service answered an HTTP error this client does not classify.
    #[error("root service: {what} answered HTTP {status}: {message}")]
    Status {
        /// The request (method and path).
        what: String,
        /// The HTTP status.
        status: u16,
        /// The service's message (its error chain) or body.
        message: String,
    },
    /// A request is recorded as signed but carries no signature.
    #[error("root request {id} is signed but carries no signature")]
    SignedWithoutSignature {
        /// Request id.
        id: String,
    },
    /// Reading the module's state from chain failed.
    #[error("cannot read the module's state from chain")]
    Chain(#[source] treasury_chain::ChainError),
    /// The FROST quorum failed to sign.
    #[error("the signer quorum failed to sign")]
    Quorum(#[source] QuorumError),
    /// Too few quorum nodes were reachable or answered in time; retrying later may succeed.
    #[error("the signer quorum is unavailable")]
    QuorumUnavailable(#[source] QuorumError),
}

impl RootError {
    /// Whether retrying the same call later may succeed (HSM back, service reachable again).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::HsmUnavailable { .. }
                | Self::Transport { .. }
                | Self::BadAnswer { .. }
                | Self::Status { .. }
                | Self::SignedWithoutSignature { .. }
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
    pub(crate) fn store<E>(op: &'static str) -> impl FnOnce(E) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        move |source| Self::Store { op, source: source.into() }
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
            RootError::QuorumUnavailable(e)
        } else {
            RootError::Quorum(e)
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
        let broken = RootError::from(QuorumError::Frost(frost_secp256k1::Error::MalformedSignature));
        assert!(
            matches!(broken, RootError::Quorum(_)) && !broken.is_retryable() && !broken.is_policy_denial()
        );
    }
}
