//! `treasury run`: the autonomous operator — triggers, policies, quorum, root, keeper.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

use crate::api::{self, ApiState, ApiToken, StatusInfo};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::pipeline::runner::{RunOptions, run};
use crate::pipeline::{Pipeline, TransitionHook};
use crate::trigger::{WatchOptions, Watcher};

/// Arguments of `treasury run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent's config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Handle what is due now, finish every intent that can be finished, then exit.
    #[arg(long)]
    once: bool,
}

impl RunArgs {
    /// Runs the agent until Ctrl-C (or, with `--once`, until the work due is done).
    pub async fn run(self) -> anyhow::Result<()> {
        run_agent(&self.config, RunOptions { once: self.once }, None).await
    }
}

/// Runs the agent of the config at `path`; `hook` sees every committed transition.
pub async fn run_agent(path: &Path, options: RunOptions, hook: Option<TransitionHook>) -> anyhow::Result<()> {
    {
        let config = Config::load(path).with_context(|| format!("config {}", path.display()))?;
        let metrics = Arc::new(Metrics::new());
        let notifier = Notifier::spawn(&config.notify, metrics.clone()).context("starting the webhooks")?;
        let mut pipeline = Pipeline::connect(&config)
            .await
            .context("starting the pipeline")?
            .with_telemetry(metrics.clone(), notifier);
        if let Some(hook) = hook {
            pipeline = pipeline.with_transition_hook(hook);
        }
        let watcher = Watcher::new(
            pipeline.provider().clone(),
            pipeline.journal().clone(),
            pipeline.safe(),
            pipeline.policies().entries().cloned().collect(),
            WatchOptions::from_config(&config),
        )
        .await
        .context("starting the trigger watcher")?;
        tracing::info!(
            safe = %pipeline.safe(),
            module = %pipeline.module(),
            keeper = %pipeline.keeper(),
            chain_id = pipeline.chain_id(),
            "treasury agent running"
        );
        let (stop, shutdown) = watch::channel(false);
        if let Some(api) = &config.api {
            let state = ApiState {
                journal: pipeline.journal().clone(),
                policies: pipeline.policies().entries().cloned().collect(),
                metrics,
                root: pipeline.root().cloned(),
                status: StatusInfo::from_config(&config, pipeline.keeper())?,
                token: ApiToken::from_env(&api.token_env)?,
            };
            let listener = tokio::net::TcpListener::bind(&api.listen)
                .await
                .with_context(|| format!("api.listen: cannot listen on {}", api.listen))?;
            // The address actually bound (port 0 picks one), for scripts and tests.
            println!("api listening on http://{}", listener.local_addr()?);
            let mut stopped = shutdown.clone();
            tokio::spawn(async move {
                let until = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = api::serve(listener, state, until).await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            });
        }
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!(
                    "Ctrl-C: stopping after the current step (every intent keeps its journaled state)"
                );
                let _ = stop.send(true);
            }
        });
        let notifier = pipeline.notifier().clone();
        let outcome = run(Arc::new(pipeline), watcher, options, shutdown).await;
        // Webhooks of the last steps still queued: give them a moment, never block the exit long.
        if !notifier.drain(std::time::Duration::from_secs(10)).await {
            tracing::warn!("some webhook notifications were not delivered before exit");
        }
        outcome?;
        Ok(())
    }
}
