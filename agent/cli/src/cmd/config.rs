//! `treasury config check`: validates a configuration without moving funds.
use std::path::PathBuf;

use alloy::primitives::Address;
use alloy::providers::Provider;
use anyhow::bail;
use clap::{Args, Subcommand};

use treasury_agent::config::{Config, Problem};

/// `treasury config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Parse and validate a config file; with `--online`, also check it against the chain.
    Check(CheckArgs),
}

/// Arguments of `treasury config check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Also connect to the RPC endpoint: chain id, and code at the Safe, module, router and tokens.
    #[arg(long)]
    online: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl ConfigCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ConfigCmd::Check(args) => args.run().await,
        }
    }
}

impl CheckArgs {
    async fn run(self) -> anyhow::Result<()> {
        let problems = match Config::load(&self.config) {
            Ok(config) if self.online => online_problems(&config).await,
            Ok(_) => Vec::new(),
            Err(e) => e.problems(),
        };
        if self.json {
            let report = serde_json::json!({
                "config": self.config.display().to_string(),
                "ok": problems.is_empty(),
                "problems": problems,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else if problems.is_empty() {
            println!("{}: ok", self.config.display());
        } else {
            for p in &problems {
                println!("{p}");
            }
        }
        if !problems.is_empty() {
            bail!("{}: {} problem(s)", self.config.display(), problems.len());
        }
        Ok(())
    }
}

/// What the chain says about the configuration: the chain id, and code where contracts should be.
async fn online_problems(config: &Config) -> Vec<Problem> {
    let provider = match treasury_chain::provider::connect(config.chain.rpc_http.as_str()) {
        Ok(p) => p,
        Err(e) => return vec![Problem::new("chain.rpc_http", e.to_string())],
    };
    match provider.get_chain_id().await {
        Ok(id) if id == config.chain.chain_id => {}
        Ok(id) => {
            return vec![Problem::new(
                "chain.chain_id",
                format!("the endpoint reports chain id {id}, not {}", config.chain.chain_id),
            )];
        }
        Err(e) => return vec![Problem::new("chain.rpc_http", format!("unreachable: {e}"))],
    }
    let mut contracts = vec![
        ("safe.address".to_string(), config.safe.address),
        ("safe.module".to_string(), config.safe.module),
    ];
    if let Some(dex) = &config.dex {
        contracts.push(("dex.router".into(), dex.router));
    }
    for (symbol, token) in &config.policies.tokens {
        if token.address != Address::ZERO {
            contracts.push((format!("policies.tokens.{symbol}.address"), token.address));
        }
        if let Some(feed) = token.feed {
            contracts.push((format!("policies.tokens.{symbol}.feed"), feed));
        }
    }
    let mut problems = Vec::new();
    for (key, address) in contracts {
        match provider.get_code_at(address).await {
            Ok(code) if code.is_empty() => {
                problems.push(Problem::new(key, format!("no contract at {address}")));
            }
            Ok(_) => {}
            Err(e) => problems.push(Problem::new(key, format!("cannot read code: {e}"))),
        }
    }
    problems
}
