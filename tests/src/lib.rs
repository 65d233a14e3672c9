//! End-to-end harness for treasury: anvil on a free port, the deployed fixture, teardown on drop.
//!
//! # Layout
//! - [`anvil`]: a private anvil process, killed and cleaned up on drop (also if the test process dies).
//! - [`fixture`]: anvil plus a complete treasury deployed on it.
//! - [`quorum`]: an in-process FROST quorum (trusted dealer) for chain-level tests.
pub mod anvil;
pub mod fixture;
pub mod quorum;

pub use anvil::Anvil;
pub use fixture::{TestChain, dev_key, write_keystore};
pub use quorum::TestQuorum;
