//! End-to-end tests of `treasury run` on anvil, with signer nodes as processes and SoftHSM2:
//! one test binary (one link) for all of them; `replicas` runs two of them on a private PostgreSQL
//! cluster. `cargo test -p treasury-agent --test e2e [NAME]`.

mod support;

mod cli_quorum;
mod config_online;
mod crash;
mod escalation;
mod faults;
mod hsm_keeper;
mod keeper;
mod keeper_jobs;
mod keeper_module;
mod payments_api;
mod pipeline;
mod replay;
mod replicas;
mod service;
mod signer_probe;
mod treasuries;
