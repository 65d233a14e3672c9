//! `treasury run`: the autonomous operator — triggers, policies, quorum, root, keeper.
use std::path::PathBuf;

use clap::Args;
use tokio::sync::watch;
use treasury_agent::Agent;
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
        let config = super::load_agent_config(&self.config)?;
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
