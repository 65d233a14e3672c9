//! The `treasury` command tree.
use clap::{Parser, Subcommand};

use crate::cmd;

/// Environment variable standing for `--config` (the agent's config file) in every command
/// that reads it.
pub const CONFIG_ENV: &str = "TREASURY_CONFIG";

/// Autonomous operator of a Safe treasury, authorised by a FROST quorum and an HSM root key.
#[derive(Debug, Parser)]
#[command(name = "treasury", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug); `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines as `text` (coloured only on a terminal, never under NO_COLOR) or `json`.
    #[arg(long, global = true, default_value = "text", env = "TREASURY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: treasury_agent::logging::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `treasury` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check, test and simulate Rhai policy scripts.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCmd),
    /// Run or set up a FROST signer node.
    #[command(subcommand)]
    Signer(cmd::signer::SignerCmd),
    /// Run distributed key generation (or share refresh) across signer nodes.
    Dkg(cmd::dkg::DkgArgs),
    /// Run or set up the HSM-backed root signer and its approvals.
    #[command(subcommand)]
    Root(cmd::root::RootCmd),
    /// Check an agent configuration file.
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
    /// Run the agent: watch the chain, run policies, authorise and execute what they decide.
    Run(cmd::run::RunArgs),
    /// Show the agent's state: intents by state, trigger cursor, alerts, chain.
    Status(cmd::status::StatusArgs),
    /// List intents or show one with its history.
    #[command(subcommand)]
    Intents(cmd::intents::IntentsCmd),
    /// Queue a run of a manual policy for the running agent.
    Trigger(cmd::trigger::TriggerArgs),
    /// Keeper jobs: check one without sending, import from Chainlink Automation or Gelato.
    #[command(subcommand)]
    Keeper(cmd::keeper::KeeperCmd),
    /// Deploy the treasury module onto an existing Safe and write the Safe's batch enabling it.
    #[command(subcommand)]
    Module(cmd::module::ModuleCmd),
    /// Executed payments and swaps for bookkeeping.
    #[command(subcommand)]
    Payments(cmd::payments::PaymentsCmd),
    /// The whole system locally (anvil, HSM root, signer quorum, agent) with a live demo scenario.
    Dev(cmd::dev::DevArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(cmd::completions::CompletionsArgs),
}

impl Command {
    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Policy(cmd) => cmd.run().await,
            Command::Signer(cmd) => cmd.run().await,
            Command::Dkg(args) => args.run().await,
            Command::Root(cmd) => cmd.run().await,
            Command::Config(cmd) => cmd.run().await,
            Command::Run(args) => args.run().await,
            Command::Status(args) => args.run().await,
            Command::Intents(cmd) => cmd.run().await,
            Command::Trigger(args) => args.run().await,
            Command::Keeper(cmd) => cmd.run().await,
            Command::Module(cmd) => cmd.run().await,
            Command::Payments(cmd) => cmd.run().await,
            Command::Dev(args) => args.run().await,
            Command::Completions(args) => args.run(),
        }
    }

    /// Whether this is a long-running service, whose info lines are shown by default.
    pub fn is_service(&self) -> bool {
        matches!(
            self,
            Command::Run(_)
                | Command::Signer(cmd::signer::SignerCmd::Serve(_))
                | Command::Root(cmd::root::RootCmd::Serve(_))
        )
    }
}
