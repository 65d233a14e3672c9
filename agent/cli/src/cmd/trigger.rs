//! `treasury trigger NAME`: asks the running agent, through its HTTP API, to run a manual policy.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use treasury_agent::config::{ApiConfig, Config};
use treasury_agent::journal::ManualTrigger;

/// How often `--wait` asks the agent.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Arguments of `treasury trigger`.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The policy to run (its trigger must be `manual`).
    name: String,
    /// The agent's config file: its `[api]` section says where the agent listens and which
    /// environment variable holds the API token.
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// The agent API's base URL, when it is not `http://` + `api.listen` (a proxy, port 0).
    #[arg(long, value_name = "URL", env = "TREASURY_API_URL")]
    api: Option<String>,
    /// Wait up to SECS for the agent to handle the request, and print what came of it.
    #[arg(long, value_name = "SECS")]
    wait: Option<u64>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl TriggerArgs {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<()> {
        let api = Config::load_api(&self.config).map_err(anyhow::Error::new).map_err(|e| {
            e.context(super::ConfigProblem(format!("loading the [api] section of {}", self.config.display())))
        })?;
        let api = AgentApi::from_config(api.as_ref(), self.api.as_deref())
            .with_context(|| format!("reaching the agent of {}", self.config.display()))?;
        let request = api.queue(&self.name).await?;
        let request = match self.wait {
            None => request,
            Some(secs) => api.wait_handled(request.id, Duration::from_secs(secs)).await?,
        };
        self.print(&request)?;
        if let Some(secs) = self.wait
            && request.handled_at.is_none()
        {
            bail!("manual trigger #{} not handled within {secs} s (is the agent running?)", request.id);
        }
        Ok(())
    }

    fn print(&self, request: &ManualTrigger) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(request)?);
        } else {
            match &request.outcome {
                Some(outcome) => println!("manual trigger #{} ({}): {outcome}", request.id, request.policy),
                None => println!("manual trigger #{} queued for policy `{}`", request.id, request.policy),
            }
        }
        Ok(())
    }
}

/// The running agent's HTTP API, with its bearer token.
#[derive(Debug, Clone)]
pub struct AgentApi {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AgentApi {
    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API `config` describes (or at `base`), with the token from `api.token_env`.
    fn from_config(api: Option<&ApiConfig>, base: Option<&str>) -> anyhow::Result<Self> {
        let Some(api) = api else {
            bail!("the config has no [api] section: the agent takes manual triggers through its HTTP API");
        };
        let token = std::env::var(&api.token_env)
            .with_context(|| format!("set {} (api.token_env) to the agent API's token", api.token_env))?;
        let base = match base {
            Some(b) => b.to_string(),
            None => format!("http://{}", reachable(api.listen)),
        };
        Self::new(&base, token)
    }

    /// The API at `base` (e.g. `http://127.0.0.1:8080`) with the bearer `token`.
    pub fn new(base: &str, token: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), token, http })
    }

    /// Queues a run of the manual policy `name` (`POST /v1/policies/{name}/trigger`).
    pub async fn queue(&self, name: &str) -> anyhow::Result<ManualTrigger> {
        self.send(self.http.post(self.url(&format!("/v1/policies/{name}/trigger"))))
            .await
            .with_context(|| format!("queueing a run of `{name}`"))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request` with the token; the JSON answer, or the API's error message.
    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let response = request.bearer_auth(&self.token).send().await.with_context(|| {
            format!("the agent API at {} does not answer (is the agent running?)", self.base)
        })?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.context("the agent API answered no JSON")?;
        if !status.is_success() {
            let message = body["error"].as_str().unwrap_or("no error message");
            bail!("{message} (HTTP {status})");
        }
        serde_json::from_value(body).context("the agent API's answer has an unexpected shape")
    }

    /// The request `id` once handled, or as it stands after `timeout`.
    async fn wait_handled(&self, id: i64, timeout: Duration) -> anyhow::Result<ManualTrigger> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let request: ManualTrigger = self
                .send(self.http.get(self.url(&format!("/v1/triggers/{id}"))))
                .await
                .with_context(|| format!("reading manual trigger #{id}"))?;
            if request.handled_at.is_some() || tokio::time::Instant::now() >= deadline {
                return Ok(request);
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}

/// `listen` as a client reaches it: an unspecified address (0.0.0.0, ::) means this machine.
fn reachable(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        let loopback = if listen.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, listen.port())
    } else {
        listen
    }
}
