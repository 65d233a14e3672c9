//! One module per `treasury` subcommand.
pub mod config;
pub mod dkg;
pub mod policy;
pub mod root;
pub mod signer;
pub mod trigger;
