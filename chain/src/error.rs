//! The one error type of `treasury-chain`.

use alloy::primitives::Address;

/// What went wrong talking to a chain, loading an artifact or deploying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// An RPC request failed or its answer could not be understood.
    #[error("RPC call {call}{} failed: {source}", at(*address))]
    Rpc {
        /// The RPC method or contract function called.
        call: String,
        /// The contract or account the call was about, if any.
        address: Option<Address>,
        /// The transport or decoding error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A transaction was mined but reverted.
    #[error("transaction {what} reverted (tx {tx_hash})")]
    Reverted {
        /// What the transaction was meant to do.
        what: String,
        /// Its hash.
        tx_hash: alloy::primitives::TxHash,
    },
    /// An RPC endpoint answered something that cannot be true.
    #[error("RPC endpoint gave an invalid answer to {call}: {reason}")]
    InvalidAnswer {
        /// The RPC method or contract function called.
        call: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// A compiled contract artifact is missing or malformed.
    #[error("contract artifact {path}: {reason}")]
    Artifact {
        /// Where the artifact was looked for.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A deployment or configuration file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The treasury module refused a call with one of its custom errors.
    #[error("the module refused {call}: {name}{detail}")]
    ModuleRevert {
        /// What was called (`admin`, `applyChange`).
        call: String,
        /// The custom error's name, e.g. `ChangeNotReady`.
        name: String,
        /// Its fields, as ` { field: value, … }` (may be empty).
        detail: String,
    },
    /// A signature meant to be the module root's does not recover to any address.
    #[error("the root signature does not recover to an address")]
    BadSignature(#[source] alloy::primitives::SignatureError),
    /// An admin op was signed by a key that is not the module's root.
    #[error("the signing key is {signer}, but the module's root is {root}")]
    WrongSigner {
        /// The address the signature recovers to.
        signer: Address,
        /// The module's registered root.
        root: Address,
    },
    /// The caller asked for something inconsistent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

fn at(address: Option<Address>) -> String {
    address.map(|a| format!(" at {a}")).unwrap_or_default()
}

impl ChainError {
    /// Wraps a transport or contract error with the call and address it concerns.
    pub fn rpc(
        call: impl Into<String>,
        address: Option<Address>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        // The transport's text names the endpoint URL, which may carry an API key.
        Self::Rpc { call: call.into(), address, source: Box::new(crate::redact::Redacted::of(&source)) }
    }

    /// Whether trying the same request again later may succeed (endpoint down, timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Rpc { .. })
    }
}

/// Result alias for this crate.
pub type Result<T, E = ChainError> = std::result::Result<T, E>;

/// Whether the node answered that the call reverts (revert data, or an "execution reverted"
/// message), as opposed to a transport failure or another refusal worth retrying.
pub fn is_revert(err: &alloy::transports::RpcError<alloy::transports::TransportErrorKind>) -> bool {
    err.as_error_resp()
        .is_some_and(|p| p.as_revert_data().is_some() || p.message.to_ascii_lowercase().contains("revert"))
}
