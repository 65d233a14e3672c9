//! JSON bodies of the node's HTTP routes (all binary values hex-encoded).
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /v1/identity` | — | [`IdentityInfo`] |
//! | `POST /v1/commitments` | [`CommitmentsRequest`] | [`CommitmentsResponse`] |
//! | `POST /v1/sign` | [`SignRequest`] | [`SignResponse`] |
//! | `POST /v1/dkg/round1` | [`DkgRound1Request`] | [`DkgRound1Response`] |
//! | `POST /v1/dkg/round2` | [`DkgRound2Request`] | [`DkgRound2Response`] |
//! | `POST /v1/dkg/finish` | [`DkgFinishRequest`] | [`DkgFinishResponse`] |
//! | `POST /v1/dkg/commit` | [`DkgCommitRequest`] | [`DkgCommitResponse`] |
//! | `POST /v1/dkg/activate` | [`DkgActivateRequest`] | `{}` |
//! | `POST /v1/dkg/abort` | [`DkgAbortRequest`] | `{}` |
//!
//! A refusal answers with a 4xx status and [`RefusalBody`].
use std::collections::BTreeMap;

use alloy::primitives::{Address, Bytes};
use serde::{Deserialize, Serialize};
use treasury_chain::operation::Operation;

use super::error::Refusal;

/// A node's public identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityInfo {
    /// Identity key, compressed hex.
    pub identity_key: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// FROST identifier (hex), once DKG has run.
    pub identifier: Option<String>,
    /// Group key (compressed hex), once DKG has run.
    pub group_key: Option<String>,
    /// Unused nonces held.
    pub unused_nonces: usize,
}

/// Ask for `count` fresh commitments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitmentsRequest {
    /// How many.
    pub count: u32,
}

/// One commitment's public half.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitmentEntry {
    /// Its id.
    pub id: String,
    /// Serialized `SigningCommitments`, hex.
    pub commitments: String,
}

/// Fresh commitments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitmentsResponse {
    /// The node's FROST identifier, hex.
    pub identifier: String,
    /// The commitments.
    pub commitments: Vec<CommitmentEntry>,
}

/// Sign an operation: the structured operation, never a bare hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignRequest {
    /// The operation.
    pub operation: Operation,
    /// Chain id of the EIP-712 domain.
    pub chain_id: u64,
    /// Module address of the EIP-712 domain.
    pub module: Address,
    /// Root signature (65 bytes) for tier 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_signature: Option<Bytes>,
    /// Serialized FROST `SigningPackage`, hex; its message must be the operation's digest.
    pub signing_package: String,
    /// The decision that produced the operation (firings, intents, plan block), which a node
    /// with replay required re-derives before it signs a tier-1 operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<treasury_policies::replay::Decision>,
}

/// A signature share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignResponse {
    /// Serialized `SignatureShare`, hex.
    pub share: String,
}

/// A refusal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusalBody {
    /// Why.
    pub refusal: Refusal,
}

/// One DKG participant as the coordinator announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// FROST identifier, hex.
    pub identifier: String,
    /// Identity key, compressed hex.
    pub identity_key: String,
}

/// Start a DKG (or refresh) session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgRound1Request {
    /// Session id.
    pub session: String,
    /// Threshold t.
    pub threshold: u16,
    /// Every participant.
    pub roster: Vec<RosterEntry>,
    /// Refresh an existing share (group key unchanged) instead of a new key.
    pub refresh: bool,
}

/// A signed round-1 package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRound1 {
    /// Serialized round-1 package, hex.
    pub package: String,
    /// The sender's identity signature over session, roster and package.
    pub signature: String,
}

/// A node's round-1 answer.
pub type DkgRound1Response = SignedRound1;

/// Round 2: every participant's signed round-1 package.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgRound2Request {
    /// Session id.
    pub session: String,
    /// Sender identifier (hex) → its signed package.
    pub round1: BTreeMap<String, SignedRound1>,
}

/// Round-2 packages, each sealed for its recipient.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgRound2Response {
    /// Recipient identifier (hex) → sealed package, hex.
    pub sealed: BTreeMap<String, String>,
}

/// Finish: the sealed round-2 packages addressed to this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgFinishRequest {
    /// Session id.
    pub session: String,
    /// Sender identifier (hex) → sealed package, hex.
    pub sealed: BTreeMap<String, String>,
}

/// A node's result, signed: the coordinator compares them across nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgFinishResponse {
    /// Group key, compressed hex.
    pub group_key: String,
    /// Serialized `PublicKeyPackage`, hex.
    pub public_key_package: String,
    /// Hash of the roster and round-1 set this node saw, hex.
    pub transcript: String,
    /// Identity signature over (session, transcript, group key, public key package).
    pub confirmation: String,
}

/// Commit the new share once every node confirmed the same result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgCommitRequest {
    /// Session id.
    pub session: String,
    /// Identifier (hex) → that node's confirmation signature.
    pub confirmations: BTreeMap<String, String>,
}

/// Commit result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgCommitResponse {
    /// Group key now held.
    pub group_key: String,
    /// The node's attestation of the group key and roster (see `quorum_file::attestation_message`).
    #[serde(default)]
    pub attestation: String,
}

/// Make a refresh's staged share current (phase 2 of the refresh commit).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgActivateRequest {
    /// Session id.
    pub session: String,
}

/// Abandon a session (e.g. a group key with x ≥ n).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgAbortRequest {
    /// Session id.
    pub session: String,
}
