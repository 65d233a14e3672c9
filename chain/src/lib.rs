//! Chain access for treasury.
//!
//! # Layout
//! - [`operation`]: the `Operation` type and its EIP-712 digest, shared by agent and signers.
//! - [`admin`]: typed admin actions of the module and their encoding.
//! - [`sender`]: the keeper's transaction sender (nonces, fees, replacement, confirmation, reorgs).
//! - [`snapshot`]: the state of a Safe at one pinned block, as policies and guards read it.
//! - [`error`]: the crate's error type.
pub mod admin;
pub mod error;
pub mod operation;
pub mod sender;
pub mod snapshot;

pub use admin::AdminAction;
pub use error::ChainError;
pub use operation::{AdminOp, Call, Operation, admin_digest, operation_digest};
pub use snapshot::{AssetState, BudgetState, PriceReading, Snapshot};
