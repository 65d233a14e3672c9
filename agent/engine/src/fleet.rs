//! Several treasuries in one process (`[[treasury]]`): one lane each — its own pipeline, watcher,
//! journal and (on PostgreSQL) lease — run side by side, so a treasury waiting on its chain, its
//! quorum or its root never holds up another.

use std::sync::Arc;

use tokio::sync::watch;

use crate::agent::{Agent, AgentError};
use crate::config::Config;
use crate::journal::Journal;
use crate::pipeline::TransitionHook;
use crate::pipeline::runner::RunOptions;
use crate::replica::{self, ReplicaEvent};
use crate::shared::Shared;

/// What a lane reports, with the treasury it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneEvent {
    /// The lane's agent is running; its API listens here, if it has one.
    Running {
        /// The address the API bound.
        api: Option<std::net::SocketAddr>,
    },
    /// A change of role of a replica.
    Replica(ReplicaEvent),
}

/// Gives each treasury (by name) its transition hook, if any.
pub type HookFor = Arc<dyn Fn(&str) -> Option<TransitionHook> + Send + Sync>;

/// Sees each lane's events, with the treasury's name.
pub type OnLaneEvent = Arc<dyn Fn(&str, LaneEvent) + Send + Sync>;

/// How one treasury's lane ended.
#[derive(Debug)]
pub struct LaneOutcome {
    /// The treasury's name.
    pub treasury: String,
    /// How its agent (or replica) stopped.
    pub result: Result<(), AgentError>,
}

/// Runs one lane per config until `shutdown` (or, with `options.once`, until each lane's work due
/// is done); a lane that fails is logged and the others go on. `hook` (given the treasury's name)
/// sees every committed transition, `on_event` every lane's events.
pub async fn run_all(
    configs: Vec<Config>,
    hook: Option<HookFor>,
    options: RunOptions,
    shutdown: watch::Receiver<bool>,
    on_event: OnLaneEvent,
) -> Vec<LaneOutcome> {
    let shared = Arc::new(Shared::default());
    let mut lanes = tokio::task::JoinSet::new();
    for config in configs {
        let hook = hook.as_ref().and_then(|h| h(&config.name));
        let (shutdown, on_event, shared) = (shutdown.clone(), on_event.clone(), shared.clone());
        lanes.spawn(async move {
            let name = config.name.clone();
            let result = run_lane(&config, hook, options, shutdown, &*on_event, &shared).await;
            if let Err(e) = &result {
                tracing::error!(treasury = %name, error = %treasury_signer::error_chain(e), "treasury lane stopped");
            }
            LaneOutcome { treasury: name, result }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = lanes.join_next().await {
        match done {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => tracing::error!(error = %e, "a treasury lane panicked"),
        }
    }
    outcomes
}

/// One treasury: a replica on a shared journal, or the agent alone on its own; what the lanes of
/// the process share comes from `shared`.
pub async fn run_lane(
    config: &Config,
    hook: Option<TransitionHook>,
    options: RunOptions,
    shutdown: watch::Receiver<bool>,
    on_event: &(dyn Fn(&str, LaneEvent) + Send + Sync),
    shared: &Shared,
) -> Result<(), AgentError> {
    let name = config.name.as_str();
    if config.journal.is_replicated() {
        let on_replica = |e| on_event(name, LaneEvent::Replica(e));
        return Box::pin(replica::run_shared(config, hook, options, shutdown, on_replica, shared)).await;
    }
    // The start-up futures are boxed, so freed once started: a spawned lane's task otherwise keeps
    // room for the largest future it awaits for as long as it runs (1,000 lanes, issue 16).
    let journal =
        Box::pin(Journal::open(&config.journal.url)).await.map_err(|e| AgentError::Start(e.into()))?;
    let agent = Box::pin(Agent::start_shared(config, journal, hook, shared)).await?;
    on_event(name, LaneEvent::Running { api: agent.api_addr() });
    agent.run(options, shutdown).await
}
