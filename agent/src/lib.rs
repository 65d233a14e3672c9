//! The treasury agent: the `treasury` command and the pipeline it runs.
//!
//! # Layout
//! - [`cli`]: the command tree; one file per command under [`cmd`].
//! - [`logging`]: `tracing` set-up shared by every command.
pub mod cli;
pub mod cmd;
pub mod logging;
