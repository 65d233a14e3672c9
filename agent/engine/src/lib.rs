//! The treasury agent's engine: triggers, the policies' pipeline, the journal and the HTTP API,
//! run by the `treasury` command (`agent/cli`).
//!
//! # Layout
//! - [`api`]: the agent's HTTP API (status, intents, policies, approvals, OpenAPI, metrics).
//! - [`agent`]: the running agent ([`Agent`]): pipeline, watcher and API started from a config.
//! - [`config`]: the agent's TOML configuration and its validation.
//! - [`export`]: executed payments and swaps for bookkeeping (CSV or JSON).
//! - [`fleet`]: several treasuries in one process, one lane each.
//! - [`journal`]: the durable record of intents and their state transitions (SQLite by default,
//!   PostgreSQL for replicas).
//! - [`keeper`]: keeper jobs (Chainlink upkeeps, Gelato resolvers, fixed calls) run by the agent.
//! - [`logging`]: `tracing` set-up shared by every command.
//! - [`metrics`]: stage latencies and gauges in Prometheus text.
//! - [`notify`]: webhooks (JSON, Slack, Discord) with retries, never blocking the pipeline.
//! - [`pipeline`]: firing → intents → operation → authorised → submitted → confirmed, resumable.
//! - [`plan`]: intents to the calls the Safe makes (transfers, approvals, router swaps).
//! - [`replica`]: `treasury run` on a shared PostgreSQL journal: one leader per treasury by lease.
//! - [`trigger`]: the gap-free watcher turning blocks, logs and manual requests into firings.
pub mod agent;
pub mod api;
pub mod config;
pub mod export;
pub mod fleet;
pub mod journal;
pub mod keeper;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod plan;
pub mod replica;
pub mod shared;
pub mod trigger;

pub use agent::{Agent, AgentError};
