//! `treasury keeper`: run one check of a keeper job without sending anything, and import jobs
//! from a Chainlink Automation registry or a Gelato resolver.
use std::path::PathBuf;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::sol_types::SolValue;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use treasury_agent::config::Config;
use treasury_agent::config::jobs::{GELATO_CHECKER, JobSection};
use treasury_agent::keeper::check::{self, BlockRef, CheckReport};
use treasury_chain::contracts::automation::IAutomationRegistryViews;
use treasury_policies::Trigger;

/// `treasury keeper …`.
#[derive(Debug, Subcommand)]
pub enum KeeperCmd {
    /// Run one job's check at a block and simulate its perform, without sending anything.
    Check(CheckArgs),
    /// Print the `[[keeper.job]]` for an existing upkeep (and with --write, add it to the config).
    #[command(subcommand)]
    Import(ImportCmd),
}

/// Arguments of `treasury keeper check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The job's name.
    job: String,
    /// The agent's config file.
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// The block to check at (default: the newest).
    #[arg(long, value_name = "N")]
    block: Option<u64>,
    /// Simulate the perform from this account (default: the keeper keystore's address, if it
    /// names one).
    #[arg(long, value_name = "ADDR")]
    from: Option<Address>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `treasury keeper import …`.
#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// An upkeep registered with a Chainlink Automation registry (2.1+ view functions).
    Chainlink(ChainlinkArgs),
    /// A Gelato resolver and the contract its payload goes to.
    Gelato(GelatoArgs),
}

/// What both imports share.
#[derive(Debug, Args)]
pub struct ImportCommon {
    /// The agent's config file (its RPC endpoint is used; with --write the job is appended).
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// The job's name (default: derived from the upkeep or resolver).
    #[arg(long)]
    name: Option<String>,
    /// Append the job to the config file (after checking the result still loads).
    #[arg(long)]
    write: bool,
}

/// Arguments of `treasury keeper import chainlink`.
#[derive(Debug, Args)]
pub struct ChainlinkArgs {
    #[command(flatten)]
    common: ImportCommon,
    /// The registry contract.
    #[arg(long, value_name = "ADDR")]
    registry: Address,
    /// The upkeep id (decimal or 0x hex).
    #[arg(long, value_name = "ID")]
    upkeep: U256,
}

/// Arguments of `treasury keeper import gelato`.
#[derive(Debug, Args)]
pub struct GelatoArgs {
    #[command(flatten)]
    common: ImportCommon,
    /// The resolver contract.
    #[arg(long, value_name = "ADDR")]
    resolver: Address,
    /// The contract the resolver's payload is sent to.
    #[arg(long, value_name = "ADDR")]
    target: Address,
    /// Calldata of the check (default: `checker()`).
    #[arg(long, value_name = "HEX")]
    checker_data: Option<alloy::primitives::Bytes>,
    /// Gas limit of the perform.
    #[arg(long, default_value_t = 500_000)]
    gas_limit: u64,
    /// Check every N blocks.
    #[arg(long, default_value_t = 1)]
    every_blocks: u64,
}

impl KeeperCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Check(args) => args.run().await,
            Self::Import(ImportCmd::Chainlink(args)) => args.run().await,
            Self::Import(ImportCmd::Gelato(args)) => args.run().await,
        }
    }
}

fn provider(config: &Config) -> anyhow::Result<DynProvider> {
    treasury_chain::provider::connect(config.chain.rpc_http.as_str())
        .with_context(|| format!("connecting to {}", config.chain.rpc_http))
}

/// The keeper's address as its keystore file names it (Web3 Secret Storage's `address`).
fn keystore_address(config: &Config) -> Option<Address> {
    let treasury_agent::config::KeeperKeyConfig::Keystore { path, .. } = &config.keeper.key else {
        return None;
    };
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["address"].as_str()?.trim_start_matches("0x").parse::<Address>().ok()
}

impl CheckArgs {
    async fn run(self) -> anyhow::Result<()> {
        let config = super::load_agent_config(&self.config)?;
        let Some(job) = config.keeper.jobs.iter().find(|j| j.name == self.job) else {
            let names: Vec<&str> = config.keeper.jobs.iter().map(|j| j.name.as_str()).collect();
            bail!("no keeper job `{}` in {} (jobs: {})", self.job, self.config.display(), names.join(", "));
        };
        let provider = provider(&config)?;
        let tag = self.block.map_or(BlockNumberOrTag::Latest, BlockNumberOrTag::Number);
        let block = provider
            .get_block_by_number(tag)
            .await
            .context("eth_getBlockByNumber")?
            .with_context(|| format!("block {tag} not found"))?;
        let block = BlockRef {
            number: block.header.number,
            hash: block.header.hash,
            timestamp: block.header.timestamp,
        };
        let from = self.from.or_else(|| keystore_address(&config)).unwrap_or(Address::ZERO);
        let reports = check::inspect(&provider, config.chain.multicall3, from, job, block)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("checking job `{}` at block {}", job.name, block.number))?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
            return Ok(());
        }
        if reports.is_empty() {
            println!("job {}: no matching log in block {}", job.name, block.number);
        }
        for r in &reports {
            print_report(r, from);
        }
        Ok(())
    }
}

fn print_report(r: &CheckReport, from: Address) {
    println!("job {} at block {} ({}): {}", r.job, r.block, r.work, r.outcome);
    if let Some(reason) = &r.reason {
        println!("  check failed: {reason}");
    }
    if let (Some(target), Some(data)) = (r.target, &r.perform_data) {
        println!("  perform: {target} with data {data}");
        match (&r.simulated_gas, &r.simulation_error) {
            (Some(gas), _) => println!("  simulated from {from}: ok, about {gas} gas"),
            (_, Some(e)) => println!("  simulated from {from}: {e}"),
            _ => {}
        }
    }
}

impl ImportCommon {
    /// Prints `job` as TOML and, with `--write`, appends it to the config once the result loads.
    fn emit(&self, job: &JobSection) -> anyhow::Result<()> {
        #[derive(serde::Serialize)]
        struct Wrap<'a> {
            keeper: Keeper<'a>,
        }
        #[derive(serde::Serialize)]
        struct Keeper<'a> {
            job: [&'a JobSection; 1],
        }
        let text = toml::to_string(&Wrap { keeper: Keeper { job: [job] } })?;
        let text = text.replace("[keeper]\n", "");
        print!("{text}");
        if self.write {
            let mut whole = std::fs::read_to_string(&self.config)
                .with_context(|| format!("reading {}", self.config.display()))?;
            whole.push('\n');
            whole.push_str(&text);
            let base = self.config.parent().map(PathBuf::from).unwrap_or_default();
            Config::from_toml(&whole, &base)
                .map_err(anyhow::Error::new)
                .context("the config with this job")?;
            std::fs::write(&self.config, whole)
                .with_context(|| format!("writing {}", self.config.display()))?;
            eprintln!("added job `{}` to {}", job.name, self.config.display());
        }
        Ok(())
    }
}

impl ChainlinkArgs {
    async fn run(self) -> anyhow::Result<()> {
        let config = super::load_agent_config(&self.common.config)?;
        let provider = provider(&config)?;
        let registry = IAutomationRegistryViews::new(self.registry, &provider);
        let info = registry
            .getUpkeep(self.upkeep)
            .call()
            .await
            .with_context(|| format!("getUpkeep({}) on registry {}", self.upkeep, self.registry))?;
        // Registries before 2.1 have no trigger types: every upkeep there is conditional.
        let trigger_type = registry.getTriggerType(self.upkeep).call().await.unwrap_or(0);
        let trigger = match trigger_type {
            0 => Trigger::EveryBlocks { blocks: 1 },
            1 => {
                let raw = registry
                    .getUpkeepTriggerConfig(self.upkeep)
                    .call()
                    .await
                    .with_context(|| format!("getUpkeepTriggerConfig({})", self.upkeep))?;
                let log = IAutomationRegistryViews::LogTriggerConfig::abi_decode(&raw)
                    .context("the upkeep's trigger config is not a LogTriggerConfig")?;
                if log.filterSelector != 0 {
                    eprintln!(
                        "note: the upkeep also filters on topics 1-3 (selector {}); the job filters on topic0 only and its checkLog decides",
                        log.filterSelector
                    );
                }
                Trigger::OnLog { address: log.contractAddress, event: log.topic0.to_string() }
            }
            other => bail!("upkeep {} has trigger type {other}, which treasury does not run", self.upkeep),
        };
        if info.paused {
            eprintln!("note: upkeep {} is paused in the registry", self.upkeep);
        }
        let name = self.common.name.clone().unwrap_or_else(|| format!("upkeep-{}", short(self.upkeep)));
        let job = JobSection {
            name,
            kind: "chainlink_upkeep".into(),
            target: Some(info.target.to_string()),
            check_data: Some(info.checkData.to_string()),
            resolver: None,
            checker_data: None,
            data: None,
            gas_limit: u64::from(info.performGas).max(21_000),
            trigger,
            execute: "keeper".into(),
            max_fee_gwei: None,
            spend_cap_eth: None,
        };
        self.common.emit(&job)
    }
}

/// An upkeep id short enough for a job name (its last 8 decimal digits).
fn short(id: U256) -> String {
    let text = id.to_string();
    text[text.len().saturating_sub(8)..].to_string()
}

impl GelatoArgs {
    async fn run(self) -> anyhow::Result<()> {
        let config = super::load_agent_config(&self.common.config)?;
        let provider = provider(&config)?;
        if provider.get_code_at(self.resolver).await.context("eth_getCode")?.is_empty() {
            bail!("no contract at resolver {}", self.resolver);
        }
        let checker_data = self
            .checker_data
            .clone()
            .unwrap_or_else(|| alloy::primitives::Bytes::copy_from_slice(&GELATO_CHECKER));
        let name = self
            .common
            .name
            .clone()
            .unwrap_or_else(|| format!("gelato-{}", &self.resolver.to_string()[2..10]));
        let job = JobSection {
            name,
            kind: "gelato_resolver".into(),
            target: Some(self.target.to_string()),
            check_data: None,
            resolver: Some(self.resolver.to_string()),
            checker_data: Some(checker_data.to_string()),
            data: None,
            gas_limit: self.gas_limit,
            trigger: Trigger::EveryBlocks { blocks: self.every_blocks.max(1) },
            execute: "keeper".into(),
            max_fee_gwei: None,
            spend_cap_eth: None,
        };
        self.common.emit(&job)
    }
}
