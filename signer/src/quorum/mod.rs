//! FROST signer quorum: nodes, coordinator, DKG and refresh (RFC 9591, FROST-secp256k1-SHA256).
//!
//! # Layout
//! - [`error`]: [`QuorumError`] and the reasoned [`Refusal`] a node answers with.
//! - `faults`: test-only fault injection (feature `fault-injection`, off by default).
//! - [`identity`]: node and coordinator identity keys, fingerprints, end-to-end sealing.
//! - [`store`]: a node's directory, its secrets sealed at rest under a passphrase.
//! - [`nonces`]: pre-generated nonces and the durable ledger of used ones.
//! - [`guard`]: what a node checks before it signs (chain, module, tier, allow-lists, budgets).
//! - [`auth`]: signed requests (coordinator → node) and signed answers (node → coordinator).
//! - [`dkg`]: DKG and refresh, node side.
//! - [`wire`]: the JSON bodies of the node's routes.
//! - [`node`]: the node's HTTP server (`treasury signer serve`).
//! - [`client`]: the coordinator's authenticated HTTP client for one node.
//! - [`coordinator`]: signing with t of n nodes, and driving DKG/refresh.
//! - [`replay`]: the pinned policy set, the signed-intent ledger, replaying a decision.
//! - `upkeep`: replaying a keeper job's perform through the module.
//! - [`chain_cache`]: what a replaying node keeps from its own RPC endpoint between requests.
//! - [`quorum_file`]: the quorum file DKG writes and the coordinator reads.
//! - [`signature`]: signature and group key in the form `TreasuryModule` takes.
pub mod auth;
mod batch;
pub mod chain_cache;
pub mod client;
pub mod coordinator;
pub mod dkg;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod guard;
mod history;
pub mod identity;
pub mod node;
pub mod nonces;
pub mod quorum_file;
pub mod replay;
pub mod signature;
pub mod store;
mod upkeep;
pub mod wire;

pub use coordinator::Coordinator;
pub use error::{NodeFault, QuorumError, Refusal, RefusalCode};
pub use signature::{FrostSignature, GroupKey};
