//! `treasury policy check|test|simulate|diff|docs|definitions`: parse arguments, call the policies crate, print.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy::primitives::Address;
use anyhow::Context;
use clap::{Args, Subcommand};
use treasury_policies::fixture::run_fixture;
use treasury_policies::simulate::{Simulation, simulate};
use treasury_policies::{
    Book, CompiledPolicy, ModuleSnapshotSource, Period, PoliciesConfig, PolicyEngine, RpcSnapshotSource,
    Trigger,
};

/// `treasury policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Compile scripts and resolve token and address names; errors as file:line:col.
    Check(CheckArgs),
    /// Run a script against fixtures (snapshot, history, expected intents) and diff the result.
    Test(TestArgs),
    /// Run a script at every block of a range against a live RPC endpoint and print its intents.
    Simulate(SimulateArgs),
    /// Replay two versions of a policy over the same blocks (or fixtures) and show where their
    /// intents differ, with totals per token and recipient.
    Diff(DiffArgs),
    /// Print the script API's reference (Markdown), generated from the engine.
    Docs(DocsArgs),
    /// Print Rhai definitions of the script API for editors (`> treasury.d.rhai`).
    Definitions(DefinitionsArgs),
}

/// Arguments of `treasury policy diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The version running today.
    pub old: PathBuf,
    /// The proposed version.
    pub new: PathBuf,
    /// Config with the token table, address book and, optionally, this policy's trigger and period.
    #[arg(long)]
    pub config: PathBuf,
    /// Policy name in the config (default: the new script's file stem).
    #[arg(long)]
    pub policy: Option<String>,
    /// Fixtures to evaluate both versions on, instead of a chain.
    #[arg(long = "fixture", conflicts_with_all = ["rpc", "safe", "from", "to", "module"])]
    pub fixtures: Vec<PathBuf>,
    /// JSON-RPC endpoint to replay past blocks from.
    #[arg(long, env = "TREASURY_RPC_URL", required_unless_present = "fixtures")]
    pub rpc: Option<String>,
    /// The Safe whose balances the policy reads.
    #[arg(long, required_unless_present = "fixtures")]
    pub safe: Option<Address>,
    /// The Safe's treasury module (snapshots then carry budgets, for `budget_remaining()`).
    #[arg(long)]
    pub module: Option<Address>,
    /// Multicall3 on this chain (used with --module).
    #[arg(long, default_value_t = treasury_chain::contracts::CANONICAL_MULTICALL3)]
    pub multicall3: Address,
    /// First block (inclusive).
    #[arg(long, required_unless_present = "fixtures")]
    pub from: Option<u64>,
    /// Last block (inclusive; default: latest).
    #[arg(long)]
    pub to: Option<u64>,
    /// Only compare blocks where the policy's configured trigger fires.
    #[arg(long)]
    pub only_when_fired: bool,
    /// Print the comparison as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `treasury policy docs`.
#[derive(Debug, Args)]
pub struct DocsArgs {
    /// Instead of printing, compare with this file and fail when it differs from the engine.
    #[arg(long)]
    pub check: Option<PathBuf>,
}

/// Arguments of `treasury policy definitions`.
#[derive(Debug, Args)]
pub struct DefinitionsArgs {
    /// Config whose token symbols and address-book names the definitions list.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Arguments of `treasury policy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rhai scripts to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Config holding the token table and address book (without it, only syntax is checked).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Arguments of `treasury policy test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The Rhai script.
    pub file: PathBuf,
    /// Fixture files (TOML); repeat for several.
    #[arg(long = "fixture", required = true)]
    pub fixtures: Vec<PathBuf>,
    /// Config to use instead of the one each fixture names.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON report per fixture instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `treasury policy simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The Rhai script.
    pub file: PathBuf,
    /// Config with the token table (and feeds), address book and, optionally, this policy.
    #[arg(long)]
    pub config: PathBuf,
    /// JSON-RPC endpoint (http, https, ws, wss), e.g. an anvil fork.
    #[arg(long, env = "TREASURY_RPC_URL")]
    pub rpc: String,
    /// The Safe whose balances the policy reads.
    #[arg(long)]
    pub safe: Address,
    /// The Safe's treasury module: with it, snapshots also carry the module's nonce, pause flag and
    /// budgets (read in one Multicall3 call per block), so `budget_remaining()` works.
    #[arg(long)]
    pub module: Option<Address>,
    /// Multicall3 on this chain (used with --module).
    #[arg(long, default_value_t = treasury_chain::contracts::CANONICAL_MULTICALL3)]
    pub multicall3: Address,
    /// First block (inclusive).
    #[arg(long)]
    pub from: u64,
    /// Last block (inclusive; default: latest).
    #[arg(long)]
    pub to: Option<u64>,
    /// Policy name in the config (default: the script's file stem).
    #[arg(long)]
    pub policy: Option<String>,
    /// Only evaluate at blocks where the policy's configured trigger fires.
    #[arg(long)]
    pub only_when_fired: bool,
    /// Print JSON (one object per block, then `{"budget": [windows]}`) instead of text.
    #[arg(long)]
    pub json: bool,
}

impl PolicyCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            PolicyCmd::Check(args) => check(args),
            PolicyCmd::Test(args) => test(args),
            PolicyCmd::Simulate(args) => run_simulate(args).await,
            PolicyCmd::Diff(args) => run_diff(args).await,
            PolicyCmd::Docs(args) => docs(args),
            PolicyCmd::Definitions(args) => definitions(args),
        }
    }
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let files: Vec<&Path> = args.files.iter().map(PathBuf::as_path).collect();
    let problems = treasury_policies::check::check_files(&files, args.config.as_deref())
        .context("cannot check policies")?;
    for p in &problems {
        eprintln!("{p}");
    }
    anyhow::ensure!(problems.is_empty(), "{} problem(s) in {} file(s)", problems.len(), files.len());
    println!("{} file(s) ok", files.len());
    Ok(())
}

/// What `simulate` and `diff` share: the config, the policy's name, trigger and period as the
/// config sets them, and the engine and names to compile and run it with.
struct PolicyRun {
    cfg: PoliciesConfig,
    name: String,
    trigger: Trigger,
    period: Period,
    engine: PolicyEngine,
    book: Arc<Book>,
}

impl PolicyRun {
    /// Reads `config`; the policy is `policy`, else the stem of `script`.
    fn load(config: &Path, policy: Option<&str>, script: &Path) -> anyhow::Result<Self> {
        let cfg = PoliciesConfig::from_file(config).context("cannot read config")?;
        let stem = script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = policy.map_or(stem, str::to_owned);
        let entry = cfg.policy(&name);
        if entry.is_none() {
            // A policy not configured yet runs as manual, period day; a near miss is a typo.
            let names: Vec<String> = cfg.policies.iter().map(|p| p.name.clone()).collect();
            let hint = treasury_policies::view::suggest(&name, names.iter());
            anyhow::ensure!(
                hint.is_empty(),
                "{} has no policy `{name}`{hint} (name it with --policy)",
                config.display()
            );
            eprintln!("note: {} has no policy `{name}`: replayed as manual, period day", config.display());
        }
        let trigger = entry.map_or(Trigger::Manual, |e| e.trigger.clone());
        let period = entry.map_or(Period::default(), |e| e.period);
        let engine = PolicyEngine::new(cfg.limits);
        let book = Arc::new(Book::from_config(&cfg));
        Ok(Self { cfg, name, trigger, period, engine, book })
    }

    /// Compiles `file` as this policy.
    fn compile(&self, file: &Path) -> anyhow::Result<CompiledPolicy> {
        let source =
            std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        Ok(self.engine.compile(&self.name, file, &source, self.period, &self.book)?)
    }
}

/// The last block of a range: `to`, else the endpoint's latest; refuses one before `from`.
async fn range_end(rpc: &RpcSnapshotSource, from: u64, to: Option<u64>) -> anyhow::Result<u64> {
    let to = match to {
        Some(to) => to,
        None => rpc.latest_block().await?,
    };
    anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    Ok(to)
}

/// The module's snapshot source when `module` is given (budgets, nonce, pause flag).
async fn module_source(
    rpc_url: &str,
    safe: Address,
    module: Option<Address>,
    multicall3: Address,
    cfg: &PoliciesConfig,
) -> anyhow::Result<Option<ModuleSnapshotSource>> {
    let Some(module) = module else { return Ok(None) };
    let source = ModuleSnapshotSource::connect(rpc_url, safe, module, multicall3, cfg)
        .await
        .context("cannot connect to the RPC endpoint")?;
    Ok(Some(source))
}

async fn run_diff(args: DiffArgs) -> anyhow::Result<()> {
    use treasury_policies::diff::{RangeDiff, diff_fixtures, diff_range};
    let p = PolicyRun::load(&args.config, args.policy.as_deref(), &args.new)?;
    let (old, new) = (p.compile(&args.old)?, p.compile(&args.new)?);
    let diff = if args.fixtures.is_empty() {
        let (rpc_url, safe, from) = match (&args.rpc, args.safe, args.from) {
            (Some(r), Some(s), Some(f)) => (r, s, f),
            _ => anyhow::bail!("give --rpc, --safe and --from, or --fixture"),
        };
        let rpc = RpcSnapshotSource::connect(rpc_url, safe, p.cfg.clone()).await?;
        let to = range_end(&rpc, from, args.to).await?;
        let sim =
            Simulation { policy: &new, trigger: &p.trigger, only_when_fired: args.only_when_fired, from, to };
        let run = RangeDiff { old: &old, new: &new, sim: &sim };
        match module_source(rpc_url, safe, args.module, args.multicall3, &p.cfg).await? {
            Some(source) => diff_range(&p.engine, &p.book, &source, run).await,
            None => diff_range(&p.engine, &p.book, &rpc, run).await,
        }
        .context("replay failed")?
    } else {
        let fixtures: Vec<&Path> = args.fixtures.iter().map(PathBuf::as_path).collect();
        diff_fixtures(&p.engine, &p.book, &old, &new, p.trigger.kind(), &fixtures)
            .context("cannot run the fixtures")?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diff).context("cannot encode the comparison")?);
    } else {
        println!("{diff}");
    }
    Ok(())
}

fn docs(args: DocsArgs) -> anyhow::Result<()> {
    let engine = PolicyEngine::new(treasury_policies::Limits::default());
    let reference = treasury_policies::reference::markdown(&engine).context("cannot build the reference")?;
    let Some(file) = args.check else {
        print!("{reference}");
        return Ok(());
    };
    let written =
        std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    if written != reference {
        let line = written.lines().zip(reference.lines()).position(|(a, b)| a != b);
        let at = line.unwrap_or_else(|| written.lines().count().min(reference.lines().count())) + 1;
        anyhow::bail!(
            "{} differs from the engine's reference from line {at}: regenerate it with `treasury policy docs > {}`",
            file.display(),
            file.display()
        );
    }
    println!("{} matches the engine", file.display());
    Ok(())
}

fn definitions(args: DefinitionsArgs) -> anyhow::Result<()> {
    let engine = PolicyEngine::new(treasury_policies::Limits::default());
    let book = match &args.config {
        Some(path) => {
            Some(Book::from_config(&PoliciesConfig::from_file(path).context("cannot read the config")?))
        }
        None => None,
    };
    print!("{}", treasury_policies::reference::definitions(&engine, book.as_ref()));
    Ok(())
}

fn test(args: TestArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for fixture in &args.fixtures {
        let report = run_fixture(&args.file, fixture, args.config.as_deref())
            .with_context(|| format!("cannot run fixture {}", fixture.display()))?;
        if args.json {
            println!("{}", serde_json::to_string(&report).context("cannot encode report")?);
        } else {
            print!("{report}");
        }
        failed += usize::from(!report.passed);
    }
    anyhow::ensure!(failed == 0, "{failed} of {} fixture(s) failed", args.fixtures.len());
    Ok(())
}

async fn run_simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let p = PolicyRun::load(&args.config, args.policy.as_deref(), &args.file)?;
    let compiled = p.compile(&args.file)?;
    let rpc = RpcSnapshotSource::connect(&args.rpc, args.safe, p.cfg.clone()).await?;
    let to = range_end(&rpc, args.from, args.to).await?;
    let module_source = module_source(&args.rpc, args.safe, args.module, args.multicall3, &p.cfg).await?;
    let sim = Simulation {
        policy: &compiled,
        trigger: &p.trigger,
        only_when_fired: args.only_when_fired,
        from: args.from,
        to,
    };
    let blocks = match &module_source {
        Some(source) => simulate(&p.engine, &p.book, source, sim).await,
        None => simulate(&p.engine, &p.book, &rpc, sim).await,
    }
    .context("simulation failed")?;
    for b in &blocks {
        if args.json {
            println!("{}", serde_json::to_string(b).context("cannot encode block")?);
            continue;
        }
        if let Some(e) = &b.error {
            println!("block {}: error: {e}", b.block);
        }
        for intent in &b.intents {
            println!("block {}: {intent}", b.block);
        }
        if b.duplicates > 0 {
            println!("block {}: {} repeat(s) of earlier intents (same key)", b.block, b.duplicates);
        }
        for c in b.budget.iter().filter(|c| c.tier == 2) {
            let why = c.reason.as_deref().unwrap_or("over the tier-1 budget");
            println!("block {}: needs the root: {} {}: {why} [{}]", b.block, c.amount, c.token, c.key);
        }
    }
    // Per budget window of each asset: what tier 1 would use and what would need the root.
    let windows = treasury_policies::budget::windows(blocks.iter().flat_map(|b| &b.budget));
    if args.json {
        let summary = serde_json::json!({ "budget": windows });
        println!("{}", serde_json::to_string(&summary).context("cannot encode the budget")?);
    } else {
        for w in &windows {
            println!("budget {w}");
        }
    }
    let total: usize = blocks.iter().map(|b| b.intents.len()).sum();
    eprintln!("{} block(s), {total} intent(s)", blocks.len());
    Ok(())
}
