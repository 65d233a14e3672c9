//! The running agent: the pipeline, its trigger watcher and (if configured) the HTTP API,
//! started from a [`Config`] and run until shut down.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, ApiError, ApiState, ApiToken, StatusInfo};
use crate::config::Config;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::notify::{Notifier, NotifyError};
use crate::pipeline::runner::{self, RunOptions};
use crate::pipeline::{Pipeline, PipelineError, TransitionHook};
use crate::shared::Shared;
use crate::trigger::{TriggerError, WatchOptions, Watcher};

/// How long the last steps' webhooks may take to go out once the agent stops.
const WEBHOOK_DRAIN: Duration = Duration::from_secs(10);

/// What can stop the agent from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The webhooks could not start.
    #[error("starting the webhooks")]
    Notify(#[source] NotifyError),
    /// The pipeline could not connect (chain, journal, quorum, root, keeper).
    #[error("starting the pipeline")]
    Start(#[source] PipelineError),
    /// The trigger watcher could not start.
    #[error("starting the trigger watcher")]
    Watcher(#[source] TriggerError),
    /// The HTTP API could not be set up.
    #[error("setting up the HTTP API")]
    Api(#[source] ApiError),
    /// The HTTP API could not listen on its address.
    #[error("api.listen: cannot listen on {listen}")]
    Listen {
        /// The configured address.
        listen: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A pipeline step failed; every intent keeps its journaled state.
    #[error(transparent)]
    Run(PipelineError),
    /// The keeper jobs could not start or stopped (fenced).
    #[error("keeper jobs")]
    Keeper(#[source] crate::keeper::KeeperError),
}

/// An agent started from its config, not yet running.
pub struct Agent {
    pipeline: Arc<Pipeline>,
    watcher: Watcher,
    api: Option<(TcpListener, ApiState)>,
    jobs: Option<crate::keeper::JobRunner>,
}

impl Agent {
    /// Connects the pipeline, the watcher and the API listener of `config`; `hook` sees every
    /// committed transition.
    pub async fn start(config: &Config, hook: Option<TransitionHook>) -> Result<Self, AgentError> {
        let journal = Journal::open(&config.journal.url).await.map_err(|e| AgentError::Start(e.into()))?;
        Self::start_with(config, journal, hook).await
    }

    /// Like [`Agent::start`], on an already opened journal (a replica's fenced handle).
    pub async fn start_with(
        config: &Config,
        journal: Journal,
        hook: Option<TransitionHook>,
    ) -> Result<Self, AgentError> {
        Self::start_shared(config, journal, hook, &Shared::default()).await
    }

    /// Like [`Agent::start_with`], sharing with the other lanes of the process what `shared`
    /// holds (RPC provider, quorum coordinator, root client, keeper key).
    pub async fn start_shared(
        config: &Config,
        journal: Journal,
        hook: Option<TransitionHook>,
        shared: &Shared,
    ) -> Result<Self, AgentError> {
        let metrics = Arc::new(Metrics::new());
        let notifier = Notifier::spawn(&config.notify, metrics.clone()).map_err(AgentError::Notify)?;
        let mut pipeline = Pipeline::connect_shared(config, journal, shared)
            .await
            .map_err(AgentError::Start)?
            .with_telemetry(metrics.clone(), notifier);
        if let Some(hook) = hook {
            pipeline = pipeline.with_transition_hook(hook);
        }
        let watcher = Watcher::new(
            pipeline.provider().clone(),
            pipeline.journal().clone(),
            pipeline.safe(),
            pipeline.policies().entries().cloned().collect(),
            WatchOptions::from_config(config),
        )
        .await
        .map_err(AgentError::Watcher)?;
        let api = match &config.api {
            None => None,
            Some(api) => {
                let state = ApiState {
                    journal: pipeline.journal().clone(),
                    policies: pipeline.policies().entries().cloned().collect(),
                    metrics,
                    root: pipeline.root().cloned(),
                    status: StatusInfo::from_config(config, pipeline.keeper()),
                    token: ApiToken::from_env(&api.token_env).map_err(AgentError::Api)?,
                    payments: crate::export::PaymentsSource::from_config(config, pipeline.provider().clone())
                        .ok(),
                };
                let listener = TcpListener::bind(&api.listen)
                    .await
                    .map_err(|source| AgentError::Listen { listen: api.listen, source })?;
                Some((listener, state))
            }
        };
        tracing::info!(
            safe = %pipeline.safe(),
            module = %pipeline.module(),
            keeper = %pipeline.keeper(),
            chain_id = pipeline.chain_id(),
            "treasury agent running"
        );
        let pipeline = Arc::new(pipeline);
        let jobs = match config.keeper.jobs.is_empty() {
            true => None,
            false => Some(
                crate::keeper::JobRunner::new(
                    pipeline.clone(),
                    config.keeper.jobs.clone(),
                    config.keeper.automation.clone(),
                    config.chain.multicall3,
                )
                .map_err(AgentError::Keeper)?,
            ),
        };
        Ok(Self { pipeline, watcher, api, jobs })
    }

    /// Calls `hook` after each journaled step of a keeper job's perform (crash tests).
    pub fn with_job_hook(mut self, hook: crate::keeper::JobHook) -> Self {
        self.jobs = self.jobs.map(|j| j.with_hook(hook));
        self
    }

    /// The address the HTTP API listens on (port 0 in the config picks one), if it has one.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Runs until `shutdown` turns true (or, with `options.once`, until the work due is done),
    /// then gives queued webhooks a moment to go out.
    pub async fn run(self, options: RunOptions, shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
        if let Some((listener, state)) = self.api {
            let mut stopped = shutdown.clone();
            tokio::spawn(async move {
                let until = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = api::serve(listener, state, until).await {
                    tracing::error!(error = %treasury_signer::error_chain(&e), "HTTP API stopped");
                }
            });
        }
        let notifier = self.pipeline.notifier().clone();
        let jobs = self.jobs.map(|jobs| tokio::spawn(jobs.run(options.once, shutdown.clone())));
        let outcome = runner::run(self.pipeline, self.watcher, options, shutdown).await;
        if let Some(jobs) = jobs {
            let jobs = if options.once {
                jobs.await
            } else {
                jobs.abort();
                Ok(Ok(()))
            };
            if let Ok(Err(e)) = jobs
                && outcome.is_ok()
            {
                return Err(AgentError::Keeper(e));
            }
        }
        if !notifier.drain(WEBHOOK_DRAIN).await {
            tracing::warn!("some webhook notifications were not delivered before exit");
        }
        outcome.map_err(AgentError::Run)
    }
}
