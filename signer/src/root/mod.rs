//! The HSM-backed root signer (PKCS#11), its guard and approval queue.
//!
//! # Layout
//! - [`error`]: [`RootError`], classifying itself (retryable, policy denial).
//! - [`guard`]: the root's stricter guard (modules, recipients, single and per-period limits).
//! - [`pin`]: the token PIN from the environment or a file, redacted and zeroized.
//! - [`hsm`]: PKCS#11 sessions: load a module, log in by token label, find or generate the
//!   secp256k1 key, `CKM_ECDSA` into low-s 65-byte Ethereum signatures.
//! - [`signer`]: the reconnecting [`RootKey`] and the alloy `Signer`/`TxSigner` [`HsmSigner`].
//! - [`request`]: what a requester sends: the structured operation or admin op, never a hash.
//! - [`store`]: the durable approval queue (SQLite) and its decision log.
//! - [`config`]: the service's config file and client credentials.
//! - [`service`]: guard, queue, approvals, signing worker.
//! - [`http`]: the authenticated HTTP API; [`client`]: its client.
//! - [`approvals`]: a request decoded for its approvers; [`page`]: the approvals page.
//! - [`bench`]: latency through the service against the bare `C_Sign`.
//! - [`escalation`]: tier classification from chain and the FROST + root authorisation the agent calls.
pub mod approvals;
pub mod bench;
pub mod client;
pub mod config;
pub mod error;
pub mod escalation;
pub mod guard;
pub mod hsm;
pub mod http;
pub mod page;
pub mod pin;
pub mod request;
pub mod service;
pub mod signer;
pub mod store;

pub use client::RootClient;
pub use error::RootError;
pub use hsm::{Hsm, HsmConfig};
pub use pin::Pin;
pub use request::EscalationRequest;
pub use service::RootService;
pub use signer::{HsmSigner, RootKey};
