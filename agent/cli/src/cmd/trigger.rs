//! `treasury trigger NAME`: queues a run of a manual policy for the running agent.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use treasury_policies::Trigger;

use treasury_agent::config::Config;
use treasury_agent::journal::{Journal, ManualTrigger};

/// How often `--wait` looks at the journal.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Arguments of `treasury trigger`.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The policy to run (its trigger must be `manual`).
    name: String,
    /// The agent's config file (its journal receives the request).
    #[arg(long, short)]
    config: PathBuf,
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
        let config =
            Config::load(&self.config).with_context(|| format!("loading {}", self.config.display()))?;
        match config.policies.policy(&self.name) {
            None => bail!("no policy named `{}` in {}", self.name, self.config.display()),
            Some(p) if p.trigger != Trigger::Manual => bail!(
                "policy `{}` is triggered by {}, not manual: only manual policies can be triggered by hand",
                self.name,
                p.trigger.kind()
            ),
            Some(_) => {}
        }
        let journal = Journal::open(&config.journal.url)
            .await
            .with_context(|| format!("opening the journal {}", config.journal.url))?;
        let request =
            journal.request_manual_trigger(&self.name, "cli").await.context("queueing the manual trigger")?;
        let request = match self.wait {
            None => request,
            Some(secs) => wait_handled(&journal, request.id, Duration::from_secs(secs)).await?,
        };
        journal.close().await;
        self.print(&request)?;
        if self.wait.is_some() && request.handled_at.is_none() {
            bail!(
                "manual trigger #{} not handled within {} s (is the agent running?)",
                request.id,
                self.wait.unwrap_or(0)
            );
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

/// The request `id` once handled, or as it stands after `timeout`.
async fn wait_handled(journal: &Journal, id: i64, timeout: Duration) -> anyhow::Result<ManualTrigger> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let request = journal
            .manual_trigger(id)
            .await
            .context("reading the manual trigger")?
            .with_context(|| format!("manual trigger #{id} vanished from the journal"))?;
        if request.handled_at.is_some() || tokio::time::Instant::now() >= deadline {
            return Ok(request);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}
