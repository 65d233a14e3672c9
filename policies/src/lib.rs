//! Rhai policies: the language treasury managers write, its sandbox and its test tools.
//!
//! A policy is a Rhai script run at one pinned block. It reads a [`SnapshotView`] (balances,
//! prices, budgets, block time, what it already paid) and returns [`Intent`]s: pay, swap
//! (rebalance becomes swaps) and alert, each with an idempotency key.
//!
//! # Layout
//! - [`budget`]: the tier-1 budget a replay uses per window, and what would escalate.
//! - [`check`]: `policy check`: compile and resolve names without running.
//! - [`config`]: the policies section of the agent's config: tokens, addresses, policies, triggers,
//!   limits.
//! - [`view`]: what a script reads: names from config, a snapshot in decimal units, history.
//! - [`api`] (private): the functions registered for scripts.
//! - [`intent`]: what a script returns.
//! - [`rebalance`] (private): target weights to swaps.
//! - [`engine`]: compile once, evaluate in the sandbox (`engine::sandbox`: limits, error mapping).
//! - [`loader`]: policies from config, hot reload that keeps the last good version.
//! - [`fixture`]: fixture files and the `policy test` harness.
//! - [`examples`]: the example policies, embedded.
//! - [`reference`]: the script API's reference and Rhai definitions, generated from the engine.
//! - [`diff`]: two versions of a policy over the same blocks or fixtures, and where they differ.
//! - [`simulate`]: replay a policy over a block range from a [`SnapshotSource`].
//! - [`plan`]: intents into the calls the Safe makes (deterministic; the agent and every
//!   replaying signer node run this one implementation).
//! - [`replay`]: a signer node's check that an operation is what the pinned policies produce.
//! - [`money`], [`period`]: decimal units and UTC calendar periods.
mod api;
pub mod budget;
pub mod check;
pub mod config;
pub mod diff;
pub mod engine;
pub mod error;
pub mod examples;
pub mod fixture;
pub mod intent;
pub mod loader;
pub mod money;
pub mod period;
pub mod plan;
mod rebalance;
pub mod reference;
pub mod replay;
pub mod simulate;
pub mod upkeep;
pub mod view;

pub use config::{Limits, PoliciesConfig, PolicyEntry, TokenEntry, Trigger};
pub use engine::{CompiledPolicy, PolicyEngine, Run};
pub use error::{Limit, Location, PolicyError, Result};
pub use intent::{Action, Intent};
pub use loader::{Outcome, PolicySet, ReloadReport};
pub use period::Period;
pub use simulate::{ModuleSnapshotSource, RpcSnapshotSource, SnapshotSource};
pub use view::{Book, Payment, SnapshotView};
