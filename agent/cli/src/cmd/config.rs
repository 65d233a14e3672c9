//! `treasury config check`: validates a configuration without moving funds.
use std::path::PathBuf;

use alloy::primitives::utils::format_ether;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::Signer;
use clap::{Args, Subcommand};
use treasury_chain::contracts::{ISafe, TreasuryModule};
use treasury_signer::quorum::quorum_file::QuorumFile;
use treasury_signer::root::RootClient;

use treasury_agent::config::{Config, Problem};
use treasury_agent::pipeline::{KeeperKey, keeper_key};

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
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// Also check against the chain: chain id; code at the Safe, module, Multicall3, router, tokens
    /// and feeds; the module enabled on the Safe and serving it; its group key the quorum file's;
    /// its root the root service's key; the keeper's key opening and holding gas money.
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
        let problems = match Config::load_all(&self.config) {
            Ok(configs) if self.online => {
                let several = configs.len() > 1;
                let mut all = Vec::new();
                for (i, config) in configs.iter().enumerate() {
                    let found = online_problems(config).await;
                    // With [[treasury]] sections, each problem names its treasury's key path.
                    all.extend(found.into_iter().map(|p| match several {
                        true => Problem::new(format!("treasury[{i}].{}", p.key), p.message),
                        false => p,
                    }));
                }
                all
            }
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
            return Err(anyhow::Error::msg(super::ConfigProblem(format!(
                "{}: {} problem(s)",
                self.config.display(),
                problems.len()
            ))));
        }
        Ok(())
    }
}

/// Each further `rpc_http` endpoint must answer and report the configured chain id.
async fn fallback_problems(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, url) in config.chain.rpc_fallbacks.iter().enumerate() {
        let key = format!("chain.rpc_http[{}]", i + 1);
        let answer = match treasury_chain::provider::connect(url.as_str()) {
            Ok(provider) => provider.get_chain_id().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(id) if id == config.chain.chain_id => {}
            Ok(id) => problems.push(Problem::new(
                key,
                format!("the endpoint reports chain id {id}, not {}", config.chain.chain_id),
            )),
            Err(e) => problems.push(Problem::new(key, format!("unreachable: {e}"))),
        }
    }
    problems
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
    let mut problems = fallback_problems(config).await;
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
    contracts.push(("chain.multicall3".into(), config.chain.multicall3));
    for (key, address) in contracts {
        match provider.get_code_at(address).await {
            Ok(code) if code.is_empty() => {
                problems.push(Problem::new(key, format!("no contract at {address}")));
            }
            Ok(_) => {}
            Err(e) => problems.push(Problem::new(key, format!("cannot read code: {e}"))),
        }
    }
    if problems.iter().any(|p| p.key == "safe.address" || p.key == "safe.module") {
        // The facts below are read from those two contracts.
        return problems;
    }
    problems.extend(module_problems(config, &provider).await);
    problems.extend(keeper_problems(config, &provider).await);
    problems
}

/// The module and the Safe agree with each other, with the quorum file and with the root service.
async fn module_problems(config: &Config, provider: &DynProvider) -> Vec<Problem> {
    let (safe, module) = (config.safe.address, config.safe.module);
    let mut problems = Vec::new();
    match ISafe::new(safe, provider).isModuleEnabled(module).call().await {
        Ok(true) => {}
        Ok(false) => problems.push(Problem::new(
            "safe.module",
            format!("{module} is not enabled on the Safe {safe} (its owners must call enableModule)"),
        )),
        Err(e) => problems.push(Problem::new("safe.address", format!("isModuleEnabled failed: {e}"))),
    }
    let m = TreasuryModule::new(module, provider);
    match m.safe().call().await {
        Ok(s) if s == safe => {}
        Ok(s) => {
            problems.push(Problem::new("safe.module", format!("the module serves the Safe {s}, not {safe}")))
        }
        Err(e) => {
            problems.push(Problem::new("safe.module", format!("not a TreasuryModule: safe() failed: {e}")))
        }
    }
    problems.extend(group_key_problem(config, &m).await);
    problems.extend(root_problem(config, &m).await);
    problems
}

/// The module's group key is the quorum file's.
async fn group_key_problem(
    config: &Config,
    module: &TreasuryModule::TreasuryModuleInstance<&DynProvider>,
) -> Option<Problem> {
    let path = &config.signing.quorum_file;
    let quorum = match QuorumFile::load(path) {
        Ok(q) => q,
        Err(e) => return Some(Problem::new("signing.quorum_file", format!("{}: {e}", path.display()))),
    };
    let (x, parity) = (quorum.group_key_x, quorum.group_key_parity);
    match module.groupKey().call().await {
        Ok(k) if k.x == x && k.parity == parity => None,
        Ok(k) => Some(Problem::new(
            "signing.quorum_file",
            format!(
                "the quorum's group key (x {:#x}, parity {}) is not the module's (x {:#x}, parity {}): register it, or name the right quorum file",
                x, parity, k.x, k.parity
            ),
        )),
        Err(e) => Some(Problem::new("safe.module", format!("groupKey() failed: {e}"))),
    }
}

/// The module's root is the key the root service signs with.
async fn root_problem(
    config: &Config,
    module: &TreasuryModule::TreasuryModuleInstance<&DynProvider>,
) -> Option<Problem> {
    let access = config.signing.root.as_ref()?;
    let token = std::env::var(&access.token_env).unwrap_or_default();
    let client = RootClient::new(access.url.as_str().trim_end_matches('/'), token);
    let served = match client.health().await {
        Ok(h) => h.address,
        Err(e) => return Some(Problem::new("signing.root_url", format!("root service unreachable: {e}"))),
    };
    let Some(served) = served else {
        return Some(Problem::new(
            "signing.root_url",
            "the root service does not know its key's address (HSM away and no hsm.address)",
        ));
    };
    match module.root().call().await {
        Ok(r) if r == served => None,
        Ok(r) => Some(Problem::new(
            "signing.root_url",
            format!("the root service signs as {served}, but the module's root is {r}"),
        )),
        Err(e) => Some(Problem::new("safe.module", format!("root() failed: {e}"))),
    }
}

/// The keeper's key opens and its account holds at least `pipeline.keeper_low_balance_eth`.
async fn keeper_problems(config: &Config, provider: &DynProvider) -> Option<Problem> {
    let keeper = match keeper_key(config) {
        Ok(KeeperKey::Local(k)) => k.address(),
        Ok(KeeperKey::Hsm(h)) => h.address(),
        Err(e) => return Some(Problem::new("keeper", format!("cannot open the keeper's key: {e}"))),
    };
    let threshold = config.pipeline.keeper_low_balance_wei;
    match provider.get_balance(keeper).await {
        Ok(b) if b >= U256::from(threshold) => None,
        Ok(b) => Some(Problem::new(
            "keeper",
            format!(
                "the keeper {keeper} holds {} ETH, under pipeline.keeper_low_balance_eth ({} ETH): send it gas money",
                format_ether(b),
                format_ether(U256::from(threshold))
            ),
        )),
        Err(e) => Some(Problem::new("keeper", format!("cannot read the keeper's balance: {e}"))),
    }
}
