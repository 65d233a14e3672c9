//! The module's administration: typed admin actions and their encoding ([`actions`]), and the
//! client that plans, sends and applies them against a deployed module ([`client`]).
pub mod actions;
pub mod client;

pub use actions::AdminAction;
pub use client::{
    AdminOutcome, AdminPlan, Effect, ModuleAdmin, QueuedChange, change_id, describe, module_error,
};
