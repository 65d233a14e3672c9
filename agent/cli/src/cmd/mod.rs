//! One module per `treasury` subcommand.
pub mod config;
pub mod dev;
pub mod dkg;
pub mod intents;
pub mod policy;
pub mod root;
pub mod run;
pub mod signer;
pub mod status;
pub mod trigger;
