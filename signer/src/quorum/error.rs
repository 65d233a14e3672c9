//! The quorum's one error type, and the reasoned refusals a node answers with.
use serde::{Deserialize, Serialize};

/// Why a signer node refused to sign (or to take part in a protocol step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefusalCode {
    /// The request was not signed by a configured coordinator, or its signature is stale or replayed.
    Unauthenticated,
    /// The named commitment was never issued by this node (or belongs to another node).
    UnknownCommitment,
    /// The named commitment was already used: signing with it again would leak the share.
    UsedCommitment,
    /// The message in the signing package is not the digest of the operation sent with it.
    DigestMismatch,
    /// The chain id is not the one this node serves.
    WrongChain,
    /// The module address is not the one this node serves.
    WrongModule,
    /// The operation's deadline has passed.
    Expired,
    /// The operation's deadline is further away than the node's maximum TTL.
    DeadlineTooFar,
    /// A call is not allowed at tier 1 (target/selector not allow-listed, delegatecall, spender).
    NotAllowed,
    /// The operation would exceed a per-period token budget tracked by this node.
    OverBudget,
    /// A tier-2 operation without a valid root signature over the same digest.
    RootSignatureRequired,
    /// The node holds no key share yet (run DKG first).
    NoShare,
    /// The request is malformed or inconsistent.
    BadRequest,
    /// A DKG step failed verification (bad package, inconsistent transcript, swapped key).
    DkgFailure,
    /// Replay is required and the tier-1 request carries no decision, or no policy set is pinned.
    ReplayRequired,
    /// The decision names another policy set than the one the node pinned.
    PolicyMismatch,
    /// The node's replay (own RPC, pinned policies, same planner) does not give this operation.
    ReplayMismatch,
    /// An intent's idempotency key was signed before in an operation that can still execute.
    AlreadySigned,
}

/// A reasoned refusal: what a node answers instead of a signature share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct Refusal {
    /// The class of refusal.
    pub code: RefusalCode,
    /// A human-readable reason naming what failed.
    pub reason: String,
}

impl Refusal {
    /// A refusal of class `code` with `reason`.
    pub fn new(code: RefusalCode, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }

    /// True when the refusal comes from the node's guard (policy), not from the protocol.
    pub fn is_policy_denial(&self) -> bool {
        matches!(
            self.code,
            RefusalCode::WrongChain
                | RefusalCode::WrongModule
                | RefusalCode::Expired
                | RefusalCode::DeadlineTooFar
                | RefusalCode::NotAllowed
                | RefusalCode::OverBudget
                | RefusalCode::RootSignatureRequired
        )
    }
}

/// Why one node failed during a signing attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeFault {
    /// The node could not be reached, or the connection failed before it answered.
    Unreachable(String),
    /// The node did not answer within the coordinator's timeout.
    TimedOut(std::time::Duration),
    /// The node answered with a reasoned refusal.
    Refused(Refusal),
    /// The node's answer was not signed by its pinned identity key.
    BadResponseSignature,
    /// The node's signature share failed `verify_signature_share`.
    BadShare,
    /// The node answered something that could not be parsed.
    Malformed(String),
}

impl NodeFault {
    /// True when the node was down or too slow (as opposed to answering something wrong).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, NodeFault::Unreachable(_) | NodeFault::TimedOut(_))
    }
}

impl std::fmt::Display for NodeFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeFault::Unreachable(e) => write!(f, "unreachable: {e}"),
            NodeFault::TimedOut(d) => write!(f, "timed out: no answer within {} ms", d.as_millis()),
            NodeFault::Refused(r) => write!(f, "refused: {r}"),
            NodeFault::BadResponseSignature => write!(f, "answer not signed by its pinned identity key"),
            NodeFault::BadShare => write!(f, "invalid signature share (verify_signature_share failed)"),
            NodeFault::Malformed(e) => write!(f, "malformed answer: {e}"),
        }
    }
}

/// Errors of the FROST quorum: store, nodes, coordinator, DKG.
///
/// Each message names what failed; a typed cause is its [`source`](std::error::Error::source), not
/// repeated in the message: print the whole chain with [`crate::error_chain`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuorumError {
    /// The passphrase does not open the node's encrypted store (nothing was changed).
    #[error("wrong passphrase for {path}: the encrypted store could not be opened (it was not modified)")]
    WrongPassphrase {
        /// The store file.
        path: String,
    },
    /// A new passphrase is too weak to protect the files it seals.
    #[error("weak passphrase: {0}; choose a long passphrase (several random words)")]
    WeakPassphrase(String),
    /// No passphrase was given in the environment.
    #[error("no passphrase: set {var} (or {var}_FILE to a key file)")]
    NoPassphrase {
        /// The environment variable expected.
        var: &'static str,
    },
    /// A file could not be read or written.
    #[error("cannot read or write {path}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored or received value could not be decoded.
    #[error("corrupt or invalid data: {0}")]
    Corrupt(String),
    /// The node directory already holds a store.
    #[error("{0} is already initialised")]
    AlreadyInitialised(String),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A FROST operation (serialising, deserialising, signing, aggregating) failed.
    #[error("a FROST operation failed")]
    Frost(#[source] frost_secp256k1::Error),
    /// A node refused.
    #[error("node {node} refused: {refusal}")]
    Refused {
        /// The node's URL.
        node: String,
        /// Its reason.
        refusal: Refusal,
    },
    /// Fewer than `needed` nodes produced a valid share.
    #[error("only {got} of the {needed} needed signers answered with a valid share; failures: {}", fmt_faults(.faults))]
    NotEnoughSigners {
        /// Threshold.
        needed: usize,
        /// Valid shares obtained in the last attempt.
        got: usize,
        /// Every node that failed, with why.
        faults: Vec<(String, NodeFault)>,
    },
    /// DKG or refresh failed.
    #[error("dkg: {0}")]
    Dkg(String),
    /// The group key's x coordinate is not below the curve order (the module cannot verify with it).
    #[error("group key x coordinate is not below the secp256k1 order")]
    GroupKeyOutOfRange,
    /// Talking to a node failed.
    #[error("node {node}: {fault}")]
    Node {
        /// The node's URL.
        node: String,
        /// What went wrong.
        fault: NodeFault,
    },
    /// A refresh staged its shares on every node, but some nodes did not activate theirs; they
    /// keep signing with the old share until the activation is re-run.
    #[error(
        "refresh {refresh} staged on every node but not activated on: {}; they keep signing with the old share until `treasury dkg refresh --activate {refresh}` activates them",
        fmt_faults(.nodes)
    )]
    ActivationIncomplete {
        /// The refresh id.
        refresh: String,
        /// Every node not activated, with why.
        nodes: Vec<(String, NodeFault)>,
        /// The refreshed quorum file (current on the nodes that activated; the others listed as
        /// pending), to be saved in place of the old one.
        quorum: Box<super::quorum_file::QuorumFile>,
    },
    /// An activation named a refresh the quorum file does not record as its last one.
    #[error("unknown refresh id {id}: the quorum file's last refresh is {last}")]
    UnknownRefresh {
        /// The id asked for.
        id: String,
        /// The last refresh the file records (`none` when there was none).
        last: String,
    },
}

fn fmt_faults(faults: &[(String, NodeFault)]) -> String {
    faults.iter().map(|(n, f)| format!("{n}: {f}")).collect::<Vec<_>>().join("; ")
}

impl QuorumError {
    /// True when trying again later may succeed (nodes down or slow), false for policy or data errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            QuorumError::NotEnoughSigners { faults, .. } => {
                !faults.iter().any(|(_, f)| matches!(f, NodeFault::Refused(r) if r.is_policy_denial()))
            }
            QuorumError::Node { fault, .. } => fault.is_unavailable(),
            _ => false,
        }
    }

    /// True when a node's guard refused the operation itself.
    pub fn is_policy_denial(&self) -> bool {
        match self {
            QuorumError::Refused { refusal, .. } => refusal.is_policy_denial(),
            QuorumError::NotEnoughSigners { faults, .. } => {
                faults.iter().any(|(_, f)| matches!(f, NodeFault::Refused(r) if r.is_policy_denial()))
            }
            _ => false,
        }
    }

    /// The nodes (by URL) that misbehaved: invalid shares or answers not signed by their key.
    pub fn culprits(&self) -> Vec<String> {
        match self {
            QuorumError::NotEnoughSigners { faults, .. } => faults
                .iter()
                .filter(|(_, f)| matches!(f, NodeFault::BadShare | NodeFault::BadResponseSignature))
                .map(|(n, _)| n.clone())
                .collect(),
            QuorumError::Node { node, fault: NodeFault::BadShare | NodeFault::BadResponseSignature } => {
                vec![node.clone()]
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        QuorumError::Io { path: path.display().to_string(), source }
    }

    pub(crate) fn frost(e: frost_secp256k1::Error) -> Self {
        QuorumError::Frost(e)
    }
}
