//! Chain access for treasury.
//!
//! # Layout
//! - [`operation`]: the `Operation` type and its EIP-712 digest, shared by agent and signers.
//! - [`snapshot`]: the state of a Safe at one pinned block, as policies and guards read it.
pub mod operation;
pub mod snapshot;

pub use operation::{AdminOp, Call, Operation, admin_digest, operation_digest};
pub use snapshot::{AssetState, BudgetState, PriceReading, Snapshot};
