//! `treasury module deploy|batch`: put the treasury module on an existing Safe.
//!
//! `deploy` creates the module (the FROST verifier is a library compiled into it) from the
//! deployer's keystore with the `[module]` settings of the agent's config. `batch` writes the Safe
//! transaction the Safe's owners sign as a Safe{Wallet} Transaction Builder file: the group key,
//! the root, the budgets and the allow-list applied by the Safe (`configure`), then
//! `enableModule`. The group key is usually not known when the module is deployed (the signer
//! nodes need the module's address before DKG): the module is then deployed with a placeholder key
//! nobody can sign for, and the batch written once DKG has run registers the real one.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, Bytes, FixedBytes, U256, keccak256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolConstructor};
use anyhow::{Context, bail, ensure};
use clap::{ArgGroup, Args, Subcommand};
use rust_decimal::Decimal;
use serde::Deserialize;
use treasury_chain::AdminAction;
use treasury_chain::contracts::{IERC20, ISafe, TreasuryModule};
use treasury_chain::txbuilder::{BatchFile, enable_module_batch};
use treasury_signer::quorum::signature::GroupKey;

use super::ConfigProblem;

/// `treasury module` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModuleCmd {
    /// Deploy the treasury module for the config's Safe with its `[module]` settings (and, given
    /// the group key, write the Safe's batch that enables it).
    Deploy(DeployArgs),
    /// Write the Safe{Wallet} Transaction Builder batch that registers the group key and the root,
    /// sets the budgets and allow-list and enables the module on the Safe.
    Batch(BatchArgs),
}

/// The group key to register, from a quorum file (attested by its nodes) or given raw.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Quorum file (from `treasury dkg`) holding the group key; every node's attestation in it is
    /// checked against `--node-fingerprint`.
    #[arg(long)]
    quorum_file: Option<PathBuf>,
    /// Fingerprint of a quorum node, as its operator confirmed it to you out of band; repeat for
    /// every node.
    #[arg(long = "node-fingerprint", requires = "quorum_file")]
    node_fingerprints: Vec<String>,
    /// x coordinate of the group key (hex), with --parity and --unattested.
    #[arg(long, requires_all = ["parity", "unattested"], conflicts_with = "quorum_file")]
    x: Option<U256>,
    /// Parity of its y coordinate (0 even, 1 odd).
    #[arg(long, requires = "x")]
    parity: Option<u8>,
    /// Register --x/--parity although no node attests it (whoever gave it could hold every share).
    #[arg(long, requires = "x")]
    unattested: bool,
}

impl KeyArgs {
    /// The group key, when one was given.
    fn group_key(&self) -> anyhow::Result<Option<(U256, u8)>> {
        let action = match (&self.quorum_file, self.x, self.parity) {
            (Some(f), _, _) => super::root::admin::quorum_group_key(f, &self.node_fingerprints)?,
            (None, Some(x), Some(p)) => super::root::admin::group_key(x, p)?,
            _ => return Ok(None),
        };
        match action {
            AdminAction::SetGroupKey { x, parity } => Ok(Some((x, parity))),
            other => bail!("not a group key: {other:?}"),
        }
    }
}

/// Arguments of `treasury module deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The agent's config file (its `[chain]`, `[safe] address`, `[dex]`, token list and `[module]`).
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// The deploying account's encrypted JSON keystore (it pays the deployment's gas).
    #[arg(long, value_name = "FILE")]
    from_keystore: PathBuf,
    /// Environment variable holding the keystore's password.
    #[arg(long, value_name = "VAR", default_value = "TREASURY_DEPLOYER_PASSWORD")]
    password_env: String,
    #[command(flatten)]
    key: KeyArgs,
    /// Where to write the Safe's batch (needs the group key: --quorum-file or --x).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Set `safe.module` in the config file to the deployed module.
    #[arg(long)]
    write: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `treasury module batch`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("gk").required(true).args(["quorum_file", "x"])))]
pub struct BatchArgs {
    /// The agent's config file.
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// The deployed module (default: the config's `safe.module`).
    #[arg(long)]
    module_address: Option<Address>,
    #[command(flatten)]
    key: KeyArgs,
    /// Where to write the batch file.
    #[arg(long, value_name = "FILE", default_value = "enable-module.json")]
    out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl ModuleCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Deploy(a) => deploy(a).await,
            Self::Batch(a) => batch(a).await,
        }
    }
}

/// What `treasury module` reads of the agent's config (leniently: the module may not exist yet).
#[derive(Debug, Deserialize)]
struct DeployFile {
    chain: ChainPart,
    safe: SafePart,
    #[serde(default)]
    dex: Option<DexPart>,
    #[serde(default)]
    policies: PoliciesPart,
    module: Option<ModuleSection>,
}

#[derive(Debug, Deserialize)]
struct ChainPart {
    rpc_http: RpcList,
    chain_id: u64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RpcList {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct SafePart {
    address: Address,
    #[serde(default)]
    module: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DexPart {
    router: Address,
}

#[derive(Debug, Default, Deserialize)]
struct PoliciesPart {
    #[serde(default)]
    tokens: BTreeMap<String, TokenPart>,
}

#[derive(Debug, Deserialize)]
struct TokenPart {
    address: Address,
    decimals: u8,
}

/// The `[module]` section: the settings the module is deployed and enabled with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleSection {
    root: Address,
    #[serde(default = "default_timelock", with = "humantime_serde")]
    timelock: Duration,
    multisend_call_only: Address,
    #[serde(default)]
    budgets: BTreeMap<String, BudgetPart>,
    #[serde(default)]
    allow_calls: Vec<AllowCallPart>,
    #[serde(default)]
    allow_spenders: Vec<Address>,
}

fn default_timelock() -> Duration {
    Duration::from_secs(48 * 3600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetPart {
    limit: String,
    #[serde(with = "humantime_serde")]
    period: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowCallPart {
    target: Address,
    signature: String,
}

/// The config's settings, resolved.
struct Settings {
    rpc: String,
    chain_id: u64,
    safe: Address,
    configured_module: Option<Address>,
    root: Address,
    timelock_secs: u64,
    multisend_call_only: Address,
    /// Budgets, then the allow-list, as the Safe applies them.
    actions: Vec<AdminAction>,
}

fn config_problem(path: &Path, what: String) -> anyhow::Error {
    anyhow::Error::msg(what).context(ConfigProblem(format!("config {}", path.display())))
}

fn read_settings(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(|e| e.context(ConfigProblem(format!("config {}", path.display()))))?;
    let file: DeployFile = toml::from_str(&text).map_err(|e| config_problem(path, e.to_string()))?;
    let Some(m) = file.module else {
        return Err(config_problem(
            path,
            "no [module] section: give root, multisend_call_only, timelock and budgets \
             (see config/example.toml)"
                .into(),
        ));
    };
    let rpc = match file.chain.rpc_http {
        RpcList::One(u) => u,
        RpcList::Many(list) => {
            list.into_iter().next().ok_or_else(|| config_problem(path, "chain.rpc_http is empty".into()))?
        }
    };
    let configured_module = match file.safe.module.as_deref() {
        None | Some("") => None,
        Some(text) => {
            Some(text.parse().map_err(|e| config_problem(path, format!("safe.module {text:?}: {e}")))?)
        }
    };
    let mut actions = Vec::new();
    let mut budgeted = Vec::new();
    for (symbol, b) in &m.budgets {
        let (token, decimals) = if symbol == "ETH" {
            (Address::ZERO, 18)
        } else {
            let t = file.policies.tokens.get(symbol).ok_or_else(|| {
                config_problem(
                    path,
                    format!("module.budgets.{symbol}: no token {symbol} in [policies.tokens]"),
                )
            })?;
            (t.address, t.decimals)
        };
        let limit = units(&b.limit, decimals)
            .map_err(|e| config_problem(path, format!("module.budgets.{symbol}.limit: {e}")))?;
        let period = b.period.as_secs();
        if period == 0 {
            return Err(config_problem(path, format!("module.budgets.{symbol}.period: must be at least 1s")));
        }
        actions.push(AdminAction::SetBudget { token, limit, period });
        if token != Address::ZERO {
            budgeted.push(token);
        }
    }
    for token in budgeted {
        let selector = FixedBytes(IERC20::transferCall::SELECTOR);
        actions.push(AdminAction::SetCallAllowed { target: token, selector, allowed: true });
    }
    if let Some(dex) = &file.dex {
        actions.extend(AdminAction::router_allow_list(dex.router));
    }
    for c in &m.allow_calls {
        let sig: String = c.signature.chars().filter(|c| !c.is_whitespace()).collect();
        let selector = FixedBytes::from_slice(&keccak256(sig.as_bytes())[..4]);
        actions.push(AdminAction::SetCallAllowed { target: c.target, selector, allowed: true });
    }
    for spender in &m.allow_spenders {
        actions.push(AdminAction::SetSpenderAllowed { spender: *spender, allowed: true });
    }
    let timelock_secs = m.timelock.as_secs();
    if timelock_secs > u64::from(u32::MAX) {
        return Err(config_problem(path, "module.timelock: at most 2^32 - 1 seconds".into()));
    }
    Ok(Settings {
        rpc,
        chain_id: file.chain.chain_id,
        safe: file.safe.address,
        configured_module,
        root: m.root,
        timelock_secs,
        multisend_call_only: m.multisend_call_only,
        actions,
    })
}

/// `text` whole units of a token with `decimals`, in its smallest unit.
fn units(text: &str, decimals: u8) -> anyhow::Result<U256> {
    let d: Decimal =
        text.trim().replace('_', "").parse().with_context(|| format!("{text:?} is not a decimal number"))?;
    ensure!(d.is_sign_positive() && !d.is_zero(), "{text:?} must be above zero");
    ensure!(d.scale() <= u32::from(decimals), "{text:?} has more than the token's {decimals} decimals");
    let mantissa = U256::from(d.mantissa().unsigned_abs());
    let scale = U256::from(10u64).pow(U256::from(u32::from(decimals) - d.scale()));
    Ok(mantissa * scale)
}

/// The placeholder group key a module is deployed with before DKG: the first valid key whose x is
/// `keccak256("treasury.module.placeholder-group-key" ‖ i)`. Its discrete log is unknown to anyone,
/// so nobody can sign for it; the Safe's batch replaces it before enabling the module.
pub fn placeholder_group_key() -> (U256, u8) {
    for i in 0u32.. {
        let x = keccak256([b"treasury.module.placeholder-group-key".as_slice(), &i.to_be_bytes()].concat());
        let mut compressed = vec![2u8];
        compressed.extend_from_slice(x.as_slice());
        if let Ok(key) = GroupKey::from_compressed(&compressed)
            && key.usable_onchain()
        {
            return (key.x, key.parity);
        }
    }
    unreachable!("about half of all x are on the curve")
}

async fn connect(s: &Settings) -> anyhow::Result<DynProvider> {
    let provider = treasury_chain::provider::connect(&s.rpc)?;
    let chain_id = provider.get_chain_id().await.context("eth_chainId")?;
    ensure!(
        chain_id == s.chain_id,
        "the endpoint serves chain {chain_id}, the config says chain.chain_id = {}",
        s.chain_id
    );
    let safe_code = provider.get_code_at(s.safe).await.context("eth_getCode of the Safe")?;
    ensure!(!safe_code.is_empty(), "no contract at safe.address {} on chain {chain_id}", s.safe);
    if s.multisend_call_only != Address::ZERO {
        let code =
            provider.get_code_at(s.multisend_call_only).await.context("eth_getCode of MultiSendCallOnly")?;
        ensure!(
            !code.is_empty(),
            "no contract at module.multisend_call_only {} (the Safe's MultiSendCallOnly; the zero address refuses batches)",
            s.multisend_call_only
        );
    }
    Ok(provider)
}

async fn deploy(a: DeployArgs) -> anyhow::Result<()> {
    let s = read_settings(&a.config)?;
    let known_key = a.key.group_key()?;
    if a.out.is_some() && known_key.is_none() {
        bail!("--out writes the Safe's batch, which registers the group key: give --quorum-file (or --x)");
    }
    let reader = connect(&s).await?;
    let password = std::env::var(&a.password_env).with_context(|| {
        format!("the deployer keystore's password: environment variable {}", a.password_env)
    })?;
    let key = PrivateKeySigner::decrypt_keystore(&a.from_keystore, password.as_bytes())
        .with_context(|| format!("decrypting the keystore {}", a.from_keystore.display()))?;
    let deployer = key.address();
    let url = s
        .rpc
        .parse()
        .with_context(|| format!("RPC URL {:?}", treasury_chain::redact::redact_urls(&s.rpc)))?;
    let sender = ProviderBuilder::new().wallet(EthereumWallet::from(key)).connect_http(url).erased();
    let (x, parity) = known_key.unwrap_or_else(placeholder_group_key);
    let args = TreasuryModule::constructorCall {
        safe_: s.safe,
        groupKeyX: x,
        groupKeyParity: parity,
        root_: s.root,
        timelockDelay_: s.timelock_secs,
        multiSendCallOnly_: s.multisend_call_only,
    };
    let mut code = TreasuryModule::BYTECODE.to_vec();
    code.extend_from_slice(&args.abi_encode());
    let module = treasury_chain::tx::deploy_code(&sender, "TreasuryModule", Bytes::from(code))
        .await
        .with_context(|| format!("deploying the module from {deployer}"))?;
    let on_chain = TreasuryModule::new(module, &reader).safe().call().await.context("module.safe()")?;
    ensure!(on_chain == s.safe, "the deployed module serves {on_chain}, not the Safe {}", s.safe);
    if a.write {
        set_module_in_config(&a.config, module)?;
    }
    let written = match (&a.out, known_key) {
        (Some(out), Some(key)) => Some(write_batch(&s, module, key, out)?),
        _ => None,
    };
    if a.json {
        let v = serde_json::json!({
            "module": module,
            "safe": s.safe,
            "chain_id": s.chain_id,
            "deployer": deployer,
            "root": s.root,
            "timelock_secs": s.timelock_secs,
            "multisend_call_only": s.multisend_call_only,
            "group_key": { "x": x, "parity": parity, "placeholder": known_key.is_none() },
            "batch": written.as_ref().map(|(p, _)| p.display().to_string()),
        });
        println!("{v}");
        return Ok(());
    }
    println!("module    {module} (Safe {}, chain {})", s.safe, s.chain_id);
    println!("root      {}", s.root);
    println!("timelock  {} s", s.timelock_secs);
    if known_key.is_none() {
        println!("group key a placeholder nobody can sign for (the module is not enabled yet)");
        println!(
            "next      set safe.module = \"{module}\" in {}, initialise the signer nodes with",
            a.config.display()
        );
        println!(
            "          --module {module}, run DKG, then: treasury module batch --quorum-file quorum.toml …"
        );
    }
    if let Some((path, file)) = written {
        print_batch(&path, &file);
    }
    Ok(())
}

async fn batch(a: BatchArgs) -> anyhow::Result<()> {
    let s = read_settings(&a.config)?;
    let module = a.module_address.or(s.configured_module).ok_or_else(|| {
        config_problem(&a.config, "no module: set safe.module or pass --module-address".into())
    })?;
    let key = a.key.group_key()?.context("the group key: give --quorum-file or --x")?;
    let reader = connect(&s).await?;
    let code = reader.get_code_at(module).await.context("eth_getCode of the module")?;
    ensure!(!code.is_empty(), "no contract at the module address {module}");
    let on_chain = TreasuryModule::new(module, &reader).safe().call().await.context("module.safe()")?;
    ensure!(
        on_chain == s.safe,
        "the module at {module} serves the Safe {on_chain}, not safe.address {}",
        s.safe
    );
    let enabled =
        ISafe::new(s.safe, &reader).isModuleEnabled(module).call().await.context("Safe.isModuleEnabled")?;
    if enabled {
        eprintln!("note: the module is already enabled on the Safe; the batch's enableModule would revert");
    }
    let (path, file) = write_batch(&s, module, key, &a.out)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "batch": path.display().to_string(), "module": module, "file": file })
        );
    } else {
        print_batch(&path, &file);
    }
    Ok(())
}

/// Sets `module = "…"` in the config's `[safe]` section (replacing the line there, or adding it
/// after the header), leaving the rest of the file as it is.
fn set_module_in_config(path: &Path, module: Address) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let updated =
        with_module(&text, module).ok_or_else(|| config_problem(path, "no [safe] section".into()))?;
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

fn with_module(text: &str, module: Address) -> Option<String> {
    let line = format!("module = \"{module}\"");
    let mut out: Vec<String> = Vec::new();
    let (mut in_safe, mut done) = (false, false);
    for l in text.lines() {
        let trimmed = l.trim_start();
        if trimmed.starts_with('[') {
            if in_safe && !done {
                out.push(line.clone());
                done = true;
            }
            in_safe = trimmed.trim_end() == "[safe]";
        } else if in_safe && !done && trimmed.split('=').next().is_some_and(|k| k.trim() == "module") {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_string());
    }
    if in_safe && !done {
        out.push(line);
        done = true;
    }
    done.then(|| out.join("\n") + "\n")
}

fn write_batch(
    s: &Settings,
    module: Address,
    (x, parity): (U256, u8),
    out: &Path,
) -> anyhow::Result<(PathBuf, BatchFile)> {
    let mut actions = vec![AdminAction::SetGroupKey { x, parity }, AdminAction::SetRoot { root: s.root }];
    actions.extend(s.actions.iter().cloned());
    let file = enable_module_batch(s.chain_id, s.safe, module, &actions, now_ms());
    write_json(out, &file)?;
    Ok((out.to_path_buf(), file))
}

/// Writes a batch file as the Transaction Builder does (pretty JSON).
pub fn write_json(out: &Path, file: &BatchFile) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(file)?;
    std::fs::write(out, text + "\n").with_context(|| format!("writing {}", out.display()))
}

/// Unix milliseconds now (the batch's `createdAt`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn print_batch(path: &Path, file: &BatchFile) {
    println!(
        "batch     {} ({} transactions, checksum {})",
        path.display(),
        file.transactions.len(),
        file.meta.checksum.as_deref().unwrap_or("")
    );
    if let Some(d) = &file.meta.description {
        println!("          {d}");
    }
    println!(
        "then      the Safe's owners import it in Safe{{Wallet}}'s Transaction Builder, check it and sign it"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_amounts_become_smallest_units_exactly() {
        assert_eq!(units("50000", 6).unwrap(), U256::from(50_000_000_000u64));
        assert_eq!(units("1.5", 18).unwrap(), U256::from(1_500_000_000_000_000_000u128));
        assert!(units("0.0000001", 6).is_err());
        assert!(units("-1", 6).is_err());
        assert!(units("ten", 6).is_err());
    }

    #[test]
    fn write_sets_the_module_in_the_safe_section_only() {
        let m = Address::repeat_byte(0x22);
        let text = "[chain]\nchain_id = 1\n\n[safe]\naddress = \"0x11\"\n\n[module]\nroot = \"0x33\"\n";
        let out = with_module(text, m).unwrap();
        let parsed: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(parsed["safe"]["module"].as_str().unwrap(), m.to_string());
        assert!(parsed["module"].get("module").is_none());
        let again = with_module(&out, Address::repeat_byte(0x44)).unwrap();
        let parsed: toml::Value = toml::from_str(&again).unwrap();
        assert_eq!(parsed["safe"]["module"].as_str().unwrap(), Address::repeat_byte(0x44).to_string());
        assert!(with_module("[chain]\n", m).is_none());
    }

    #[test]
    fn the_placeholder_key_is_a_valid_key_other_than_the_generator() {
        let (x, parity) = placeholder_group_key();
        assert!(super::super::root::admin::group_key(x, parity).is_ok());
        let generator_x =
            U256::from_str_radix("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798", 16)
                .unwrap();
        assert_ne!(x, generator_x);
    }
}
