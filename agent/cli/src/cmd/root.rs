//! `treasury root …`: set up and run the HSM-backed root signer, and decide on its approval queue.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use treasury_signer::root::config::{HsmSection, ServiceConfig, new_token};
use treasury_signer::root::pin::{PIN_ENV, SO_PIN_ENV};
use treasury_signer::root::store::{RequestRecord, RequestState};
use treasury_signer::root::{Hsm, HsmConfig, RootClient, RootService, hsm};

/// `treasury root` subcommands.
#[derive(Debug, Subcommand)]
pub enum RootCmd {
    /// Create the token (if missing) and the secp256k1 key (if missing); print the root address.
    Init(InitArgs),
    /// Run the root service (HTTP API, approval queue, signing worker).
    Serve(ServeArgs),
    /// Print a new API bearer token (stdout) and the `[[clients]]` entry for the config (stderr).
    NewToken(NewTokenArgs),
    /// Hash an approver's password for the approvals page (Argon2id): prints the
    /// `password_hash = "…"` line of its `[[clients]]` entry. The password comes from
    /// TREASURY_APPROVER_PASSWORD, else a prompt on the terminal (asked twice).
    HashPassword,
    /// List pending requests.
    Pending(QueueArgs),
    /// Show one request and every decision on it.
    Show(IdArgs),
    /// Approve a pending request; the running service signs it.
    Approve(IdArgs),
    /// Reject a pending request.
    Reject(RejectArgs),
    /// Measure root signature latency through the service against the bare C_Sign.
    Bench(BenchArgs),
    /// Root-signed admin operations of the module: build, show, sign with the HSM key, send.
    Admin(Box<admin::AdminArgs>),
}

/// `treasury root bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    hsm: HsmArgs,
    /// Samples per measured path.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Where the key lives.
#[derive(Debug, Clone, Args)]
pub struct HsmArgs {
    /// The PKCS#11 module (shared library) of the HSM.
    #[arg(long, env = "TREASURY_HSM_MODULE", default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pkcs11_module: PathBuf,
    /// Token label.
    #[arg(long, default_value = "treasury-root")]
    token: String,
    /// Key label.
    #[arg(long, default_value = "root")]
    key: String,
    /// File holding the user PIN (else the TREASURY_HSM_PIN environment variable).
    #[arg(long)]
    pin_file: Option<PathBuf>,
}

impl HsmArgs {
    pub(crate) fn config(&self) -> anyhow::Result<HsmConfig> {
        let pin = crate::prompt::pin(self.pin_file.as_deref(), PIN_ENV, "user PIN")?;
        Ok(HsmConfig {
            module: self.pkcs11_module.clone(),
            token_label: self.token.clone(),
            key_label: self.key.clone(),
            pin,
        })
    }
}

/// `treasury root init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    hsm: HsmArgs,
    /// File holding the SO PIN, used only to create a missing token (else TREASURY_HSM_SO_PIN).
    #[arg(long)]
    so_pin_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `treasury root serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Listen address, overriding the config's (`127.0.0.1:0` picks a free port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Also serve Prometheus metrics at GET /metrics on this address (e.g. 127.0.0.1:9410;
    /// unauthenticated, so keep it where only the scraper reaches it).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// `treasury root new-token`.
#[derive(Debug, Args)]
pub struct NewTokenArgs {
    /// Client name, recorded with its decisions.
    #[arg(long)]
    name: String,
    /// `requester` or `approver`.
    #[arg(long, value_parser = ["requester", "approver"])]
    role: String,
}

/// The running root service whose queue to use, as an approver.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The root service's base URL.
    #[arg(long, env = ROOT_URL_ENV, value_name = "URL")]
    url: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl QueueArgs {
    /// A client of the service with the approver's token.
    fn client(&self) -> anyhow::Result<RootClient> {
        Ok(RootClient::new(self.url.trim_end_matches('/'), approver_token()?))
    }
}

/// Environment variable holding the password `treasury root hash-password` hashes.
pub const APPROVER_PASSWORD_ENV: &str = "TREASURY_APPROVER_PASSWORD";

/// Environment variable holding the root service's URL for `treasury root pending|show|approve|reject`.
pub const ROOT_URL_ENV: &str = "TREASURY_ROOT_URL";

/// One request of the queue.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Request id.
    id: String,
    #[command(flatten)]
    queue: QueueArgs,
}

/// `treasury root reject`.
#[derive(Debug, Args)]
pub struct RejectArgs {
    #[command(flatten)]
    id: IdArgs,
    /// Why (recorded).
    #[arg(long)]
    reason: String,
}

impl RootCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Init(a) => init(a),
            Self::Serve(a) => serve(a).await,
            Self::NewToken(a) => {
                let (token, hash) = new_token();
                println!("{}", token.as_str());
                eprintln!("[[clients]]\nname = {:?}\nrole = {:?}\ntoken_sha256 = {hash:?}", a.name, a.role);
                Ok(())
            }
            Self::HashPassword => {
                let password =
                    crate::prompt::secret_or_prompt(APPROVER_PASSWORD_ENV, "New approver password", true)?;
                if password.chars().count() < 12 {
                    anyhow::bail!("an approver's password needs at least 12 characters");
                }
                let hash = treasury_signer::root::page::hash_password(&password)
                    .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
                println!("password_hash = {hash:?}");
                Ok(())
            }
            Self::Pending(a) => {
                let list = a
                    .client()?
                    .list(Some(RequestState::Pending))
                    .await
                    .context("listing pending requests")?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else if list.is_empty() {
                    println!("no pending requests");
                } else {
                    println!(
                        "{:<16}  {:<9}  {:<10}  {:<12}  totals",
                        "id", "kind", "requester", "expires_at"
                    );
                    for r in &list {
                        println!("{}", row(r));
                    }
                }
                Ok(())
            }
            Self::Show(a) => {
                let client = a.queue.client()?;
                let rec = client.get(&a.id).await.with_context(|| format!("reading request {}", a.id))?;
                let decisions = client
                    .decisions(&a.id)
                    .await
                    .with_context(|| format!("reading decisions on {}", a.id))?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"request": rec, "decisions": decisions})
                    )?
                );
                Ok(())
            }
            Self::Approve(a) => {
                let rec =
                    a.queue.client()?.approve(&a.id).await.with_context(|| format!("approving {}", a.id))?;
                print_decision(&rec, a.queue.json)
            }
            Self::Bench(a) => bench(a).await,
            Self::Admin(a) => admin::run(*a).await,
            Self::Reject(a) => {
                let rec =
                    a.id.queue
                        .client()?
                        .reject(&a.id.id, &a.reason)
                        .await
                        .with_context(|| format!("rejecting {}", a.id.id))?;
                print_decision(&rec, a.id.queue.json)
            }
        }
    }
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    let cfg = a.hsm.config()?;
    let created_token = if hsm::find_token(&hsm::load_module(&cfg.module)?, &cfg.token_label).is_ok() {
        false
    } else {
        let so = crate::prompt::pin(a.so_pin_file.as_deref(), SO_PIN_ENV, "SO PIN")
            .context("creating the token needs the SO PIN")?;
        hsm::init_token(&cfg.module, &cfg.token_label, &so, &cfg.pin).context("creating the token")?
    };
    let (h, created_key) = Hsm::open_or_generate(&cfg).context("opening the root key")?;
    let public = hex::encode(h.public_key().to_encoded_point(false).as_bytes());
    if a.json {
        let out = serde_json::json!({
            "address": h.address(),
            "public_key": format!("0x{public}"),
            "token": cfg.token_label,
            "key": cfg.key_label,
            "created_token": created_token,
            "created_key": created_key,
        });
        println!("{out}");
    } else {
        eprintln!(
            "token {:?} {}, key {:?} {}",
            cfg.token_label,
            if created_token { "created" } else { "found" },
            cfg.key_label,
            if created_key { "generated" } else { "found" }
        );
        println!("{}", h.address());
    }
    Ok(())
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServiceConfig::load(&a.config)
        .map_err(anyhow::Error::new)
        .map_err(|e| e.context(super::ConfigProblem(format!("root config {}", a.config.display()))))?;
    if let Some(l) = a.listen {
        config.listen = l;
    }
    let listen = config.listen;
    let svc = RootService::open(config).await.context("starting the root service")?;
    match svc.key().connect() {
        Ok(addr) => tracing::info!(%addr, "root key available"),
        Err(e) => tracing::warn!(error = %e, "HSM not available yet; requests will wait for it"),
    }
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(listen) = a.metrics_listen {
        let svc = svc.clone();
        let mut stopped = stopped.clone();
        let until = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let render = move || {
            let svc = svc.clone();
            async move { svc.render_metrics().await }
        };
        let bound = treasury_signer::metrics::serve_metrics(listen, render, until)
            .await
            .with_context(|| format!("binding the metrics listener {listen}"))?;
        eprintln!("metrics on http://{bound}/metrics");
    }
    // The first line on stdout is the address, for scripts and tests.
    println!("listening on http://{local}");
    let shutdown = async move {
        let signal = super::shutdown_signal().await;
        tracing::info!(%signal, "stopping: finishing the requests in flight and the signing pass");
        let _ = stop.send(true);
    };
    treasury_signer::root::http::serve_until(svc, listener, shutdown).await.context("serving")?;
    tracing::info!("stopped");
    Ok(())
}

async fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let section = HsmSection {
        module: a.hsm.pkcs11_module.clone(),
        token: a.hsm.token.clone(),
        key: a.hsm.key.clone(),
        pin_file: a.hsm.pin_file.clone(),
        address: None,
    };
    let dir = std::env::temp_dir().join(format!("treasury-root-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let report = treasury_signer::root::bench::run(section, &dir, a.samples).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report.context("running the benchmark")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{:<34} {:>6} {:>10} {:>10} {:>10}", "path", "n", "p50 µs", "p99 µs", "mean µs");
        for (name, s) in [
            ("bare C_Sign (CKM_ECDSA)", &report.bare_c_sign),
            ("C_Sign + low-s + recovery id", &report.sign_and_recover),
            ("service (HTTP, guard, SQLite, HSM)", &report.service),
            ("service, commits not flushed", &report.service_without_flush),
        ] {
            println!("{name:<34} {:>6} {:>10.0} {:>10.0} {:>10.0}", s.n, s.p50_us, s.p99_us, s.mean_us);
        }
    }
    Ok(())
}

/// The approver's bearer token: decisions are recorded under the name it authenticates.
fn approver_token() -> anyhow::Result<String> {
    std::env::var(APPROVER_TOKEN_ENV).map_err(|_| {
        anyhow::anyhow!(
            "set {APPROVER_TOKEN_ENV} to your approver token (`treasury root new-token --role approver`): \
             decisions are recorded under the name it authenticates"
        )
    })
}

/// Environment variable holding an approver's bearer token for `treasury root approve|reject`.
pub const APPROVER_TOKEN_ENV: &str = "TREASURY_APPROVER_TOKEN";

fn row(r: &RequestRecord) -> String {
    let totals: Vec<String> = r.totals.iter().map(|(t, v)| format!("{v}@{t}")).collect();
    format!(
        "{:<16}  {:<9}  {:<10}  {:<12}  {}",
        r.id,
        r.request.kind(),
        r.requester,
        r.expires_at,
        totals.join(",")
    )
}

fn print_decision(rec: &RequestRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(rec)?);
    } else {
        match (rec.state, rec.decided_by.as_deref()) {
            (RequestState::Pending, _) => {
                println!("{} approval recorded; it waits for another approver", rec.id)
            }
            (state, by) => println!("{} {state} by {}", rec.id, by.unwrap_or("?")),
        }
    }
    Ok(())
}

/// `treasury root admin …`: root-signed changes of the module's settings.
///
/// The flow: read the module's admin nonce and current settings, build the `AdminOp` with a
/// deadline, show it, sign its EIP-712 digest (rebuilt here) with the HSM root key, simulate, send
/// `admin(op, sig)`, and report from the events whether it applied or was queued (with its eta).
///
/// The transaction is sent by the HSM root key itself by default (its address needs a little ETH
/// for gas): the operator's workstation then holds no second hot key, and one PIN unlocks both the
/// admin signature and the transaction signature. `--from-keystore FILE` sends from another account
/// instead (an encrypted JSON keystore, e.g. the agent's keeper, its password in the environment
/// variable named by `--password-env`), for when the root address should not hold ETH. The admin op
/// is authorised by the root signature alone, whoever sends it; `apply` needs no root signature.
pub mod admin {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use alloy::network::EthereumWallet;
    use alloy::primitives::{Address, B256, FixedBytes, U256, keccak256};
    use alloy::providers::{DynProvider, Provider, ProviderBuilder};
    use alloy::signers::Signer;
    use alloy::signers::local::PrivateKeySigner;
    use anyhow::{Context, bail};
    use clap::{ArgGroup, Args, Subcommand};
    use treasury_chain::AdminAction;
    use treasury_chain::admin::{AdminOutcome, AdminPlan, Effect, ModuleAdmin, QueuedChange};
    use treasury_devnet::world::Deployment;
    use treasury_signer::quorum::quorum_file::QuorumFile;
    use treasury_signer::quorum::signature::GroupKey;
    use treasury_signer::root::{HsmSigner, RootKey};

    use super::HsmArgs;

    /// `treasury root admin [OPTIONS] <ACTION>`.
    #[derive(Debug, Args)]
    #[command(group(ArgGroup::new("target").required(true).args(["module_address", "deployment"])))]
    pub struct AdminArgs {
        #[command(flatten)]
        hsm: HsmArgs,
        /// JSON-RPC endpoint.
        #[arg(long, env = "TREASURY_RPC_URL")]
        rpc: String,
        /// The treasury module's address.
        #[arg(long)]
        module_address: Option<Address>,
        /// Deployment file (JSON) naming the module, instead of --module-address.
        #[arg(long)]
        deployment: Option<PathBuf>,
        /// Send the transaction from this encrypted JSON keystore's account instead of from the
        /// HSM root key.
        #[arg(long, value_name = "FILE")]
        from_keystore: Option<PathBuf>,
        /// Environment variable holding the keystore's password.
        #[arg(long, value_name = "VAR", default_value = "TREASURY_KEEPER_PASSWORD")]
        password_env: String,
        /// Seconds the signed admin op stays valid (its deadline past the chain's time).
        #[arg(long, default_value_t = 900)]
        ttl: u64,
        /// First block to scan for queued changes (`apply`, `pending-changes`).
        #[arg(long, default_value_t = 0)]
        from_block: u64,
        /// Show the op and its digest, sign nothing, send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Sign nothing: write the change as a Safe{Wallet} Transaction Builder batch for the
        /// Safe's owners (`configure` on the module, applied at once: the Safe is not held to the
        /// timelock), e.g. when the root key is lost or a change must not wait.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["dry_run", "from_keystore"])]
        safe_batch: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// What to change.
        #[command(subcommand)]
        action: AdminCmd,
    }

    /// The admin actions.
    #[derive(Debug, Subcommand)]
    pub enum AdminCmd {
        /// Stop all execution (immediate).
        Pause,
        /// Resume execution (immediate).
        Unpause,
        /// Rotate the FROST group key (timelocked).
        #[command(group(ArgGroup::new("key").required(true).args(["x", "quorum_file"])))]
        SetGroupKey {
            /// x coordinate of the new group key (hex).
            #[arg(long, requires = "parity")]
            x: Option<U256>,
            /// Parity of its y coordinate (0 even, 1 odd).
            #[arg(long, requires = "x")]
            parity: Option<u8>,
            /// Quorum file (from `treasury dkg`) holding the new group key; every node's
            /// attestation in it is checked against `--node-fingerprint`.
            #[arg(long)]
            quorum_file: Option<PathBuf>,
            /// Fingerprint of a quorum node, as its operator confirmed it to you out of band;
            /// repeat for every node.
            #[arg(long = "node-fingerprint", requires = "quorum_file")]
            node_fingerprints: Vec<String>,
            /// Register `--x/--parity` although no node attests it: whoever gave you the key could
            /// hold every share of it alone (a compromised coordinator can).
            #[arg(long, requires = "x")]
            unattested: bool,
        },
        /// Replace the root key (timelocked).
        SetRoot {
            /// The new root address.
            #[arg(long)]
            address: Address,
        },
        /// Set an asset's per-period outflow budget (raising it is timelocked, lowering immediate).
        SetBudget {
            /// Token address, or `ETH`.
            #[arg(long, value_parser = parse_asset)]
            token: Address,
            /// Maximum gross outflow per budget window, in the token's smallest unit (0 with period 0 untracks).
            #[arg(long)]
            limit: U256,
            /// Period in seconds.
            #[arg(long)]
            period: u64,
        },
        /// Allow a (target, selector) pair in tier 1 (timelocked).
        AllowCall(CallArgs),
        /// Forbid a (target, selector) pair in tier 1 (immediate).
        DisallowCall(CallArgs),
        /// Allow an ERC-20 approval spender in tier 1 (timelocked).
        AllowSpender(SpenderArgs),
        /// Forbid an ERC-20 approval spender in tier 1 (immediate).
        DisallowSpender(SpenderArgs),
        /// Set the timelock delay (lowering it is timelocked, raising immediate).
        SetTimelock {
            /// Delay in seconds.
            #[arg(long)]
            delay: u64,
        },
        /// Cancel a queued change (immediate).
        Cancel {
            /// The queued change's id.
            #[arg(long)]
            id: B256,
        },
        /// Apply a queued change once its timelock has passed (`applyChange`).
        Apply {
            /// The queued change's id.
            #[arg(long)]
            id: B256,
        },
        /// List queued changes and their eta.
        PendingChanges,
    }

    /// A (target, selector) pair.
    #[derive(Debug, Args)]
    #[command(group(ArgGroup::new("sel").required(true).args(["selector", "signature"])))]
    pub struct CallArgs {
        /// Contract called.
        #[arg(long)]
        target: Address,
        /// 4-byte selector, e.g. 0xa9059cbb.
        #[arg(long)]
        selector: Option<FixedBytes<4>>,
        /// Function signature, e.g. `transfer(address,uint256)`.
        #[arg(long)]
        signature: Option<String>,
    }

    impl CallArgs {
        fn selector(&self) -> FixedBytes<4> {
            match (&self.selector, &self.signature) {
                (Some(s), _) => *s,
                (None, Some(sig)) => {
                    let sig: String = sig.chars().filter(|c| !c.is_whitespace()).collect();
                    FixedBytes::from_slice(&keccak256(sig.as_bytes())[..4])
                }
                (None, None) => unreachable!("clap requires one of --selector and --signature"),
            }
        }
    }

    /// An approval spender.
    #[derive(Debug, Args)]
    pub struct SpenderArgs {
        /// The spender.
        #[arg(long)]
        spender: Address,
    }

    fn parse_asset(s: &str) -> Result<Address, String> {
        if s.eq_ignore_ascii_case("eth") { Ok(Address::ZERO) } else { s.parse().map_err(|e| format!("{e}")) }
    }

    /// A group key checked to be a curve point the module can verify with.
    pub(crate) fn group_key(x: U256, parity: u8) -> anyhow::Result<AdminAction> {
        if parity > 1 {
            bail!("--parity must be 0 (even y) or 1 (odd y), not {parity}");
        }
        let mut compressed = vec![2 + parity];
        compressed.extend_from_slice(&x.to_be_bytes::<32>());
        let key = GroupKey::from_compressed(&compressed).context("the group key is not a secp256k1 point")?;
        if !key.usable_onchain() {
            bail!("group key x must be below the curve order (the module refuses it)");
        }
        Ok(AdminAction::SetGroupKey { x, parity })
    }

    /// The group key of a quorum file whose nodes' attestations check out against `pinned`.
    pub(crate) fn quorum_group_key(path: &std::path::Path, pinned: &[String]) -> anyhow::Result<AdminAction> {
        let q = QuorumFile::load(path).with_context(|| format!("reading {}", path.display()))?;
        q.verify_attestations(pinned)
            .with_context(|| format!("{}: the nodes' attestations do not check out", path.display()))?;
        let bytes = hex::decode(q.group_key.trim_start_matches("0x"))
            .with_context(|| format!("{}: group_key is not hex", path.display()))?;
        let key =
            GroupKey::from_compressed(&bytes).with_context(|| format!("{}: group_key", path.display()))?;
        if key.x != q.group_key_x || key.parity != q.group_key_parity {
            bail!("{}: group_key_x/group_key_parity disagree with group_key", path.display());
        }
        group_key(key.x, key.parity)
    }

    impl AdminCmd {
        /// The change, for the actions that sign one.
        fn action(&self) -> anyhow::Result<Option<AdminAction>> {
            Ok(Some(match self {
                Self::Pause => AdminAction::Pause,
                Self::Unpause => AdminAction::Unpause,
                Self::SetGroupKey { x: Some(_), unattested: false, .. } => bail!(
                    "--x/--parity is a raw key no node attests: whoever produced it (a compromised \
                     coordinator, say) may hold every share alone. Register the quorum file with \
                     --quorum-file and --node-fingerprint, or pass --unattested to take that risk"
                ),
                Self::SetGroupKey { x: Some(x), parity: Some(p), unattested: true, .. } => group_key(*x, *p)?,
                Self::SetGroupKey { quorum_file: Some(f), node_fingerprints, .. } => {
                    quorum_group_key(f, node_fingerprints)?
                }
                Self::SetGroupKey { .. } => bail!("give --x and --parity, or --quorum-file"),
                Self::SetRoot { address } => AdminAction::SetRoot { root: *address },
                Self::SetBudget { token, limit, period } => {
                    AdminAction::SetBudget { token: *token, limit: *limit, period: *period }
                }
                Self::AllowCall(c) => {
                    AdminAction::SetCallAllowed { target: c.target, selector: c.selector(), allowed: true }
                }
                Self::DisallowCall(c) => {
                    AdminAction::SetCallAllowed { target: c.target, selector: c.selector(), allowed: false }
                }
                Self::AllowSpender(s) => AdminAction::SetSpenderAllowed { spender: s.spender, allowed: true },
                Self::DisallowSpender(s) => {
                    AdminAction::SetSpenderAllowed { spender: s.spender, allowed: false }
                }
                Self::SetTimelock { delay } => AdminAction::SetTimelock { delay: *delay },
                Self::Cancel { id } => AdminAction::Cancel { change_id: *id },
                Self::Apply { .. } | Self::PendingChanges => return Ok(None),
            }))
        }
    }

    /// Runs `treasury root admin`.
    pub async fn run(a: AdminArgs) -> anyhow::Result<()> {
        let module = match (&a.module_address, &a.deployment) {
            (Some(m), _) => *m,
            (None, Some(f)) => {
                Deployment::read(f).with_context(|| format!("reading {}", f.display()))?.module
            }
            (None, None) => bail!("give --module-address or --deployment"),
        };
        let reader = treasury_chain::provider::connect(&a.rpc)?;
        let admin = ModuleAdmin::connect(reader, module)
            .await
            .with_context(|| format!("connecting to the module at {module}"))?;
        let now = admin.chain_time().await?;
        match &a.action {
            AdminCmd::PendingChanges | AdminCmd::Apply { .. } if a.safe_batch.is_some() => {
                bail!(
                    "--safe-batch writes a change for the Safe's owners; pending-changes and apply have none"
                )
            }
            AdminCmd::PendingChanges => {
                let list = admin.queued_changes(a.from_block).await.context("listing queued changes")?;
                if a.json {
                    println!("{}", serde_json::json!({ "now": now, "queued": list }));
                } else if list.is_empty() {
                    println!("no queued changes");
                } else {
                    for c in &list {
                        println!("{}", queued_line(c, now));
                    }
                }
                return Ok(());
            }
            AdminCmd::Apply { id } => {
                let change = admin.find_queued(*id, a.from_block).await?;
                if !a.json {
                    println!("{}", queued_line(&change, now));
                }
                if a.dry_run {
                    return Ok(());
                }
                let (sender, from) = sender(&a, &admin, None).await?;
                let outcome =
                    admin.apply(&sender, &change).await.with_context(|| format!("applying change {id}"))?;
                return report(&a, None, &outcome, from, now);
            }
            _ => {}
        }
        let action = a.action.action()?.expect("a signing action");
        if let Some(out) = &a.safe_batch {
            return write_safe_batch(&admin, action, out, a.json).await;
        }
        let plan = admin.plan(action, a.ttl).await.context("reading the module")?;
        if !a.json || a.dry_run {
            show(&plan, a.json);
        }
        if a.dry_run {
            return Ok(());
        }
        let cfg = a.hsm.config()?;
        let key = Arc::new(RootKey::new(cfg, None));
        let signing = key.clone();
        let digest = plan.digest;
        let sig = tokio::task::spawn_blocking(move || signing.sign_digest(&digest))
            .await?
            .context("signing the admin op with the HSM root key")?;
        let (sender, from) = sender(&a, &admin, Some(key)).await?;
        let outcome = admin.send(&sender, &plan, &sig).await.context("sending admin()")?;
        report(&a, Some(&plan), &outcome, from, now)
    }

    /// Writes `action` as the Safe's Transaction Builder batch (`configure` on the module).
    async fn write_safe_batch(
        admin: &ModuleAdmin,
        action: AdminAction,
        out: &Path,
        json: bool,
    ) -> anyhow::Result<()> {
        let safe = admin.safe().await.context("reading the module's Safe")?;
        let file = treasury_chain::txbuilder::configure_batch(
            admin.chain_id(),
            safe,
            admin.module(),
            std::slice::from_ref(&action),
            crate::cmd::module::now_ms(),
        );
        crate::cmd::module::write_json(out, &file)?;
        if json {
            println!(
                "{}",
                serde_json::json!({ "batch": out.display().to_string(), "safe": safe, "file": file })
            );
        } else {
            println!("action    {}", treasury_chain::admin::describe(&action));
            println!(
                "batch     {} for the Safe {safe} (checksum {})",
                out.display(),
                file.meta.checksum.as_deref().unwrap_or("")
            );
            println!(
                "then      the Safe's owners import it in Safe{{Wallet}}'s Transaction Builder and sign it"
            );
        }
        Ok(())
    }

    /// The provider that sends, and its address.
    async fn sender(
        a: &AdminArgs,
        admin: &ModuleAdmin,
        key: Option<Arc<RootKey>>,
    ) -> anyhow::Result<(DynProvider, Address)> {
        let url: alloy::transports::http::reqwest::Url = a
            .rpc
            .parse()
            .with_context(|| format!("RPC URL {:?}", treasury_chain::redact::redact_urls(&a.rpc)))?;
        let wallet = match &a.from_keystore {
            Some(file) => {
                let var = &a.password_env;
                let password = std::env::var(var)
                    .with_context(|| format!("the keystore password: environment variable {var}"))?;
                let key = PrivateKeySigner::decrypt_keystore(file, password.as_bytes())
                    .with_context(|| format!("decrypting the keystore {}", file.display()))?;
                key.with_chain_id(Some(admin.chain_id()))
            }
            None => {
                let key = match key {
                    Some(k) => k,
                    None => Arc::new(RootKey::new(a.hsm.config()?, None)),
                };
                let signer = HsmSigner::from_key(key).context("opening the HSM root key to send")?;
                let signer = signer.with_chain_id(Some(admin.chain_id()));
                let from = Signer::address(&signer);
                let provider = ProviderBuilder::new().wallet(EthereumWallet::from(signer)).connect_http(url);
                return Ok((provider.erased(), from));
            }
        };
        let from = wallet.address();
        Ok((ProviderBuilder::new().wallet(EthereumWallet::from(wallet)).connect_http(url).erased(), from))
    }

    fn show(plan: &AdminPlan, json: bool) {
        if json {
            println!("{}", serde_json::json!({ "plan": plan }));
            return;
        }
        println!("module    {} (chain {})", plan.module, plan.chain_id);
        println!("action    {}", plan.summary);
        println!("now       {}", plan.current);
        match plan.effect {
            Effect::Immediate => println!("effect    applies at once"),
            Effect::Timelocked { delay_secs } => {
                println!("effect    widening: queued, applicable after the {} timelock", span(delay_secs))
            }
        }
        println!("admin op  action={} nonce={} deadline={}", plan.op.action, plan.op.nonce, plan.op.deadline);
        println!("params    {}", plan.op.params);
        println!("digest    {}", plan.digest);
        println!("root      {}", plan.root);
    }

    fn report(
        a: &AdminArgs,
        plan: Option<&AdminPlan>,
        outcome: &AdminOutcome,
        from: Address,
        now: u64,
    ) -> anyhow::Result<()> {
        if a.json {
            let status = if outcome.queued.is_some() { "queued" } else { "applied" };
            println!(
                "{}",
                serde_json::json!({ "plan": plan, "from": from, "status": status, "outcome": outcome })
            );
            return Ok(());
        }
        println!("sent      {} from {from} (block {})", outcome.tx_hash, outcome.block.unwrap_or_default());
        for applied in &outcome.applied {
            println!("applied   {}", treasury_chain::admin::describe(applied));
        }
        if let Some(q) = &outcome.queued {
            println!("queued    {}", queued_line(q, now));
            println!("then      treasury root admin … apply --id {}", q.id);
        }
        Ok(())
    }

    fn queued_line(c: &QueuedChange, now: u64) -> String {
        let when = if c.eta <= now { "ready".to_string() } else { format!("in {}", span(c.eta - now)) };
        format!("{}  eta {} ({when})  nonce {}  {}", c.id, c.eta, c.nonce, c.summary)
    }

    /// `2d 3h 4m 5s`, leaving out leading zero units.
    fn span(secs: u64) -> String {
        let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
        let mut out = String::new();
        for (v, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
            if v != 0 || !out.is_empty() || unit == "s" {
                out.push_str(&format!("{v}{unit} "));
            }
        }
        out.trim_end().to_string()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn spans_read_naturally() {
            assert_eq!(span(0), "0s");
            assert_eq!(span(172_800), "2d 0h 0m 0s");
            assert_eq!(span(3_661), "1h 1m 1s");
        }

        #[test]
        fn a_signature_gives_its_selector_and_a_bad_group_key_is_refused() {
            let c = CallArgs {
                target: Address::ZERO,
                selector: None,
                signature: Some("transfer(address, uint256)".into()),
            };
            assert_eq!(c.selector(), FixedBytes([0xa9, 0x05, 0x9c, 0xbb]));
            assert!(group_key(U256::ZERO, 0).is_err());
            assert!(group_key(U256::from(1), 2).is_err());
        }
    }
}
