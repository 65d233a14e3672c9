//! Chain access for treasury.
//!
//! # Layout
//! - [`operation`]: the `Operation` type and its EIP-712 digest, shared by agent and signers.
//! - [`admin`]: typed admin actions of the module, their encoding, and the admin client
//!   (plan, send `admin(op, sig)`, apply queued changes, list what is queued).
//! - [`rules`]: the module's tier-1 vocabulary (asset-moving selectors, swaps, valued outflows).
//! - [`contracts`]: `sol!` bindings (own contracts from `chain/artifacts/`, third-party interfaces).
//! - [`tools`]: where the foundry tools and npm packages are found at run time.
//! - [`provider`]: connecting to an RPC endpoint.
//! - [`tx`]: sending transactions with errors that name what was sent.
//! - [`safe`]: Safe transactions signed by owners.
//! - [`txbuilder`]: Safe{Wallet} Transaction Builder batch files for the Safe's owners.
//! - [`sender`]: the keeper's transaction sender (nonces, fees, replacement, confirmation, reorgs).
//! - [`snapshot`]: the state of a Safe at one pinned block, read in one `eth_call`.
//! - [`error`]: the crate's error type.
pub mod admin;
pub mod contracts;
pub mod error;
pub mod failover;
pub mod operation;
pub mod provider;
pub mod redact;
pub mod rules;
pub mod safe;
pub mod sender;
pub mod snapshot;
pub mod tiers;
pub mod tools;
pub mod tx;
pub mod txbuilder;

pub use admin::AdminAction;
pub use error::ChainError;
pub use operation::{AdminOp, Call, Operation, TIER_QUORUM, TIER_ROOT, admin_digest, operation_digest};
pub use snapshot::{AssetState, BudgetState, PriceReading, Snapshot};
