//! `treasury run`: the autonomous operator — triggers, policies, quorum, root, keeper.
use std::path::PathBuf;

use clap::Args;
use tokio::sync::watch;
use treasury_agent::Agent;
use treasury_agent::fleet::{self, LaneEvent};
use treasury_agent::pipeline::runner::RunOptions;
use treasury_agent::replica::{self, ReplicaEvent};

/// Arguments of `treasury run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent's config file.
    #[arg(long, short, env = crate::cli::CONFIG_ENV)]
    config: PathBuf,
    /// Handle what is due now, finish every intent that can be finished, then exit.
    #[arg(long)]
    once: bool,
}

impl RunArgs {
    /// Runs the agent until SIGINT or SIGTERM (or, with `--once`, until the work due is done).
    pub async fn run(self) -> anyhow::Result<()> {
        let mut configs = treasury_agent::config::Config::load_all(&self.config)
            .map_err(anyhow::Error::new)
            .map_err(|e| e.context(super::ConfigProblem(format!("config {}", self.config.display()))))?;
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            let signal = super::shutdown_signal().await;
            tracing::info!(
                %signal,
                "stopping after the current step (every intent keeps its journaled state)"
            );
            let _ = stop.send(true);
        });
        let options = RunOptions { once: self.once };
        if configs.len() > 1 {
            return run_many(configs, options, shutdown).await;
        }
        let config = configs.remove(0);
        if config.journal.is_replicated() {
            // One replica of several on a shared journal: it acts only while it holds the lease.
            replica::run(&config, None, options, shutdown, |event| match event {
                // For scripts and tests: the role this process has now.
                ReplicaEvent::Leading { term } => println!("leading term {term}"),
                ReplicaEvent::Deposed { term } => println!("deposed from term {term}"),
            })
            .await?;
            return Ok(());
        }
        let agent = Agent::start(&config, None).await?;
        if let Some(addr) = agent.api_addr() {
            // The address actually bound, for scripts and tests.
            println!("api listening on http://{addr}");
        }
        agent.run(options, shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Several `[[treasury]]`: one lane each; the process fails if any lane failed, once all stopped.
async fn run_many(
    configs: Vec<treasury_agent::config::Config>,
    options: RunOptions,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // For scripts and tests: each lane's role and API address, named by treasury.
    let on_event = std::sync::Arc::new(|name: &str, event: LaneEvent| match event {
        LaneEvent::Running { api: Some(addr) } => println!("{name}: api listening on http://{addr}"),
        LaneEvent::Running { api: None } => println!("{name}: running"),
        LaneEvent::Replica(ReplicaEvent::Leading { term }) => println!("{name}: leading term {term}"),
        LaneEvent::Replica(ReplicaEvent::Deposed { term }) => println!("{name}: deposed from term {term}"),
    });
    let outcomes = fleet::run_all(configs, None, options, shutdown, on_event).await;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.result.as_ref().err().map(|e| format!("{}: {}", o.treasury, treasury_signer::error_chain(e)))
        })
        .collect();
    anyhow::ensure!(failed.is_empty(), "treasury lanes failed:\n  {}", failed.join("\n  "));
    tracing::info!("stopped");
    Ok(())
}
