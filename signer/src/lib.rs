//! Signers for treasury operations: the FROST quorum and the HSM-backed root.
//!
//! # Layout
//! - [`quorum`]: FROST signer nodes (server), the coordinator (client), DKG, refresh, nonce store.
//! - [`root`]: the PKCS#11 root signer, its guard, approval queue and service.
pub mod quorum;
pub mod root;
pub mod serve;
