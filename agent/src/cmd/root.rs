//! `treasury root …`: set up and run the HSM-backed root signer, and decide on its approval queue.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use treasury_signer::root::config::{HsmSection, ServiceConfig, new_token};
use treasury_signer::root::pin::{PIN_ENV, SO_PIN_ENV};
use treasury_signer::root::service::now;
use treasury_signer::root::store::{RequestRecord, RequestState, Store};
use treasury_signer::root::{Hsm, HsmConfig, Pin, RootService, hsm};

/// `treasury root` subcommands.
#[derive(Debug, Subcommand)]
pub enum RootCmd {
    /// Create the token (if missing) and the secp256k1 key (if missing); print the root address.
    Init(InitArgs),
    /// Run the root service (HTTP API, approval queue, signing worker).
    Serve(ServeArgs),
    /// Print a new API bearer token (stdout) and the `[[clients]]` entry for the config (stderr).
    NewToken(NewTokenArgs),
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
#[derive(Debug, Args)]
pub struct HsmArgs {
    /// PKCS#11 module.
    #[arg(long, env = "TREASURY_HSM_MODULE", default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    module: PathBuf,
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
    fn config(&self) -> anyhow::Result<HsmConfig> {
        let pin = Pin::resolve(self.pin_file.as_deref(), PIN_ENV).context("reading the user PIN")?;
        Ok(HsmConfig {
            module: self.module.clone(),
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

/// The queue of a config file.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Config file of the service whose queue to use.
    #[arg(long)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One request of the queue.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Request id.
    id: String,
    #[command(flatten)]
    queue: QueueArgs,
    /// Who decides (recorded); defaults to $USER.
    #[arg(long = "as")]
    by: Option<String>,
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
            Self::Pending(a) => {
                let store = open_store(&a.config).await?;
                let list = store.list(Some(RequestState::Pending)).await?;
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
                let store = open_store(&a.queue.config).await?;
                let rec = store.get(&a.id).await?;
                let decisions = store.decisions(&a.id).await?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"request": rec, "decisions": decisions})
                    )?
                );
                Ok(())
            }
            Self::Approve(a) => {
                let store = open_store(&a.queue.config).await?;
                let by = who(a.by);
                let rec =
                    store.approve(&a.id, &by, now()).await.with_context(|| format!("approving {}", a.id))?;
                print_decision(&rec, a.queue.json)
            }
            Self::Bench(a) => bench(a).await,
            Self::Reject(a) => {
                let store = open_store(&a.id.queue.config).await?;
                let by = who(a.id.by);
                let rec = store
                    .reject(&a.id.id, &by, &a.reason, now())
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
        let so = Pin::resolve(a.so_pin_file.as_deref(), SO_PIN_ENV)
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
    let mut config = ServiceConfig::load(&a.config)?;
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
    println!("listening on http://{local}");
    treasury_signer::root::http::serve(svc, listener).await.context("serving")?;
    Ok(())
}

async fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let section = HsmSection {
        module: a.hsm.module.clone(),
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
        ] {
            println!("{name:<34} {:>6} {:>10.0} {:>10.0} {:>10.0}", s.n, s.p50_us, s.p99_us, s.mean_us);
        }
    }
    Ok(())
}

async fn open_store(config: &std::path::Path) -> anyhow::Result<Store> {
    let cfg = ServiceConfig::load(config)?;
    Store::open(&cfg.db).await.with_context(|| format!("opening {}", cfg.db.display()))
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "operator".into())
}

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
        println!("{} {} by {}", rec.id, rec.state, rec.decided_by.as_deref().unwrap_or("?"));
    }
    Ok(())
}
