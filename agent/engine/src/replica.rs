//! A replica of the agent on a shared PostgreSQL journal: it waits for the treasury's lease, runs
//! the agent on a journal handle fenced by that lease while renewing it, and goes back to waiting
//! when the lease is lost.
//!
//! The agent started after each takeover is a fresh one: it resumes every pending intent from the
//! journal where it stood (as after a kill -9) and its keeper sender reads the keeper's nonce from
//! the chain, so nothing the previous holder did is assumed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::{Agent, AgentError};
use crate::config::Config;
use crate::journal::{Journal, Lease};
use crate::pipeline::runner::RunOptions;
use crate::pipeline::{PipelineError, TransitionHook};
use crate::shared::Shared;

/// The lease name of the treasury a config serves: `CHAIN_ID:MODULE`.
pub fn treasury_id(config: &Config) -> String {
    format!("{}:{:#x}", config.chain.chain_id, config.safe.module)
}

/// What a replica reports as it changes role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaEvent {
    /// It took the lease and starts acting.
    Leading {
        /// The lease's term.
        term: i64,
    },
    /// It lost the lease (taken over, or not renewed in time) and stops acting.
    Deposed {
        /// The term it held.
        term: i64,
    },
}

/// Runs a replica until `shutdown` turns true: standby until it holds the lease, then the agent
/// (fenced by the lease) until the lease is lost or the replica is shut down; on shutdown the
/// lease is released so a standby takes over at once. `on_event` sees each change of role.
pub async fn run(
    config: &Config,
    hook: Option<TransitionHook>,
    options: RunOptions,
    shutdown: watch::Receiver<bool>,
    on_event: impl Fn(ReplicaEvent) + Send + Sync,
) -> Result<(), AgentError> {
    run_shared(config, hook, options, shutdown, on_event, &Shared::default()).await
}

/// Like [`run`], the agent after each takeover taking from `shared` what the process's lanes
/// share.
pub async fn run_shared(
    config: &Config,
    hook: Option<TransitionHook>,
    options: RunOptions,
    mut shutdown: watch::Receiver<bool>,
    on_event: impl Fn(ReplicaEvent) + Send + Sync,
    shared: &Shared,
) -> Result<(), AgentError> {
    let journal = Journal::open(&config.journal.url).await.map_err(|e| AgentError::Start(e.into()))?;
    let treasury = treasury_id(config);
    let (ttl, replica) = (config.journal.lease_ttl, config.journal.replica.as_str());
    loop {
        let Some(lease) = wait_for_lease(&journal, &treasury, replica, ttl, &mut shutdown).await else {
            return Ok(());
        };
        tracing::info!(%treasury, replica, term = lease.term, "took the lease: this replica leads");
        on_event(ReplicaEvent::Leading { term: lease.term });
        let (stop, stopped) = watch::channel(false);
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = tokio::spawn(keep_lease(
            journal.clone(),
            lease.clone(),
            ttl,
            shutdown.clone(),
            stop,
            lost.clone(),
        ));
        let agent = Agent::start_shared(config, journal.fenced(lease.clone()), hook.clone(), shared).await;
        let outcome = match agent {
            Ok(agent) => agent.run(options, stopped).await,
            Err(e) => Err(e),
        };
        renewal.abort();
        // However the agent stopped (even `--once` with nothing left to do), a term that moved on
        // means this replica was deposed.
        let moved_on = match journal.fenced(lease.clone()).check_fence().await {
            Ok(()) => false,
            Err(e) if e.is_fenced() => true,
            Err(e) => {
                // Cannot tell: behave as deposed (stand by, leave the lease alone).
                tracing::warn!(error = %treasury_signer::error_chain(&e), "cannot read the lease after the agent stopped");
                true
            }
        };
        tracing::info!(moved_on, outcome = ?outcome.as_ref().err(), "agent stopped");
        let deposed = moved_on || lost.load(Ordering::SeqCst) || outcome.as_ref().is_err_and(is_fenced);
        if deposed {
            tracing::warn!(%treasury, replica, term = lease.term, "lost the lease: standing by");
            on_event(ReplicaEvent::Deposed { term: lease.term });
            if *shutdown.borrow() || options.once {
                // The new leader carries the work on.
                return Ok(());
            }
            continue;
        }
        // Shut down, done (`--once`) or failed: let a standby take over at once.
        let _ = journal.release_lease(&lease).await;
        if outcome.is_err() || *shutdown.borrow() || options.once {
            return outcome;
        }
    }
}

/// Polls for the lease every quarter of its time to live; `None` when shut down first.
async fn wait_for_lease(
    journal: &Journal,
    treasury: &str,
    replica: &str,
    ttl: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Lease> {
    let mut logged = false;
    loop {
        if *shutdown.borrow() {
            return None;
        }
        match journal.try_acquire_lease(treasury, replica, ttl).await {
            Ok(Some(lease)) => return Some(lease),
            Ok(None) if !logged => {
                logged = true;
                tracing::info!(treasury, replica, "another replica holds the lease: standing by");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %treasury_signer::error_chain(&e), "cannot read the lease; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 4) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Renews the lease every third of its time to live; stops the agent (`stop`) once it is taken
/// over, or once a whole time to live passed since the last renewal that succeeded (by this
/// process's monotonic clock: the lease may have expired and been taken in the meantime); then
/// `lost` is set.
async fn keep_lease(
    journal: Journal,
    mut lease: Lease,
    ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    lost: Arc<AtomicBool>,
) {
    let mut renewed_at = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = shutdown.wait_for(|s| *s) => {
                let _ = stop.send(true);
                return;
            }
        }
        let attempt = Instant::now();
        match journal.renew_lease(&lease, ttl).await {
            Ok(renewed) => {
                lease = renewed;
                renewed_at = attempt;
            }
            Err(e) if e.is_fenced() => {
                tracing::warn!(error = %treasury_signer::error_chain(&e), "lease taken over");
                lost.store(true, Ordering::SeqCst);
                let _ = stop.send(true);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %treasury_signer::error_chain(&e), "cannot renew the lease");
                if renewed_at.elapsed() >= ttl {
                    lost.store(true, Ordering::SeqCst);
                    let _ = stop.send(true);
                    return;
                }
            }
        }
    }
}

fn is_fenced(e: &AgentError) -> bool {
    matches!(e, AgentError::Run(PipelineError::Journal(j)) | AgentError::Start(PipelineError::Journal(j)) if j.is_fenced())
}
