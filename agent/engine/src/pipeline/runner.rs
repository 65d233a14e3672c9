//! The run loop of `treasury run`: the trigger watcher feeds intake, the lane works through the
//! journal, each in its own task so a long wait in one (root approval, confirmations) never
//! stalls the other.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::intake::FiringInput;
use super::lane::LaneStep;
use super::{Pipeline, Result};
use crate::journal::Alert;
use crate::trigger::{Cause, Firing, Watcher};

/// How `treasury run` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunOptions {
    /// Handle what is due now (one poll of the triggers), finish every intent that can be
    /// finished, and return; without it, run until shut down.
    pub once: bool,
}

/// Runs the pipeline until `shutdown` turns true (or, with `once`, until the work due is done).
pub async fn run(
    pipeline: Arc<Pipeline>,
    mut watcher: Watcher,
    options: RunOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let recovered = pipeline.recover().await?;
    if recovered > 0 {
        tracing::info!(intents = recovered, "guarded intents a crash left proposed");
    }
    let wake_lane = Arc::new(Notify::new());
    let (intake_done_tx, intake_done) = watch::channel(false);
    let intake = {
        let pipeline = pipeline.clone();
        let wake_lane = wake_lane.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let failure = match intake_round(&pipeline, &mut watcher).await {
                    Ok(n) => {
                        if n > 0 {
                            wake_lane.notify_one();
                        }
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %treasury_signer::error_chain(&e), "trigger round failed; retrying from the cursor");
                        Some(e)
                    }
                };
                if options.once {
                    let _ = intake_done_tx.send(true);
                    wake_lane.notify_one();
                    return failure;
                }
                tokio::select! {
                    _ = watcher.wait_for_new_block() => {}
                    _ = shutdown.changed() => return None,
                }
            }
        })
    };
    let probe = tokio::spawn(probe_signers(pipeline.clone(), shutdown.clone()));
    let lane = run_lane(&pipeline, &wake_lane, options, intake_done, &mut shutdown).await;
    probe.abort();
    if options.once {
        // The round's outcome decides the exit status: a failed trigger round is a failed run.
        if let Ok(Some(failure)) = intake.await {
            return Err(failure);
        }
    } else {
        intake.abort();
    }
    lane
}

/// One poll of the watcher: every firing goes through intake and is then acknowledged.
async fn intake_round(pipeline: &Pipeline, watcher: &mut Watcher) -> Result<usize> {
    let firings = watcher.poll().await.map_err(|e| super::PipelineError::chain("trigger watcher", e))?;
    let mut created = 0;
    for firing in &firings {
        let outcome = handle_firing(pipeline, firing).await?;
        created += outcome.0;
        watcher
            .ack_with_outcome(firing, &outcome.1)
            .await
            .map_err(|e| super::PipelineError::chain("trigger cursor", e))?;
    }
    watcher.ack_idle().await.map_err(|e| super::PipelineError::chain("trigger cursor", e))?;
    pipeline.metrics().set_last_block(watcher.cursor().0);
    Ok(created)
}

/// Runs a firing's policies; returns the number of intents created and a one-line outcome.
async fn handle_firing(pipeline: &Pipeline, firing: &Firing) -> Result<(usize, String)> {
    if let Cause::Gap { from, to } = firing.cause {
        let message =
            format!("blocks {from}..={to} were skipped: catch-up is bounded by pipeline.max_catch_up_blocks");
        tracing::error!(%message);
        let alert = Alert {
            idempotency_key: format!("agent:{}", firing.label()),
            policy: "agent".into(),
            trigger: firing.label(),
            message,
        };
        pipeline.journal().record_alert(&alert).await?;
        return Ok((0, "gap recorded".into()));
    }
    let input = FiringInput {
        block: firing.block.number,
        policies: firing.policies.clone(),
        trigger: firing.label(),
    };
    let report = pipeline.intake(&input).await?;
    tracing::info!(
        trigger = %input.trigger,
        block = input.block,
        created = report.created.len(),
        duplicates = report.duplicates,
        rejected = report.rejected,
        policy_errors = report.policy_errors.len(),
        "firing handled"
    );
    let outcome = format!(
        "{} intent(s) created, {} already journaled, {} rejected, {} policy error(s)",
        report.created.len(),
        report.duplicates,
        report.rejected,
        report.policy_errors.len()
    );
    Ok((report.created.len(), outcome))
}

async fn run_lane(
    pipeline: &Pipeline,
    wake: &Notify,
    options: RunOptions,
    mut intake_done: watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let poll = pipeline.settings().poll_interval;
    let mut backoff = poll;
    let mut keeper = KeeperWatch::default();
    loop {
        keeper.check(pipeline).await;
        if *shutdown.borrow() {
            return Ok(());
        }
        let pause = match pipeline.step().await {
            Ok(LaneStep::Progressed) => {
                backoff = poll;
                continue;
            }
            Ok(LaneStep::Idle) => {
                if options.once && *intake_done.borrow() && pipeline.step().await? == LaneStep::Idle {
                    return Ok(());
                }
                poll
            }
            Ok(LaneStep::Waiting(what)) => {
                tracing::info!(%what, "waiting");
                poll
            }
            Err(e) => {
                tracing::warn!(error = %treasury_signer::error_chain(&e), retry_in_ms = backoff.as_millis() as u64, "lane step failed; the intent keeps its state");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                backoff
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = intake_done.changed(), if options.once && !*intake_done.borrow() => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Probes every configured signer node every `pipeline.signer_probe_interval`, on a task of its
/// own (a node that does not answer costs this task its timeout, never the lane), so the status
/// and the `treasury_signer_up` gauge list each one, not only those that took part in a signature.
async fn probe_signers(pipeline: Arc<Pipeline>, mut shutdown: watch::Receiver<bool>) {
    let every = pipeline.settings().signer_probe_interval;
    let mut was_up = std::collections::HashMap::new();
    loop {
        for (node, up) in pipeline.coordinator().probe().await {
            if was_up.insert(node.clone(), up) != Some(up) {
                if up {
                    tracing::info!(%node, "signer node answers under its pinned identity");
                } else {
                    tracing::warn!(%node, "signer node does not answer under its pinned identity");
                }
            }
            pipeline.metrics().set_signer_up(&node, up);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Reads the keeper's balance now and then; tells once when it falls under the threshold.
#[derive(Debug, Default)]
struct KeeperWatch {
    last: Option<std::time::Instant>,
    low: bool,
}

impl KeeperWatch {
    const EVERY: Duration = Duration::from_secs(30);

    async fn check(&mut self, pipeline: &Pipeline) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        let keeper = pipeline.keeper();
        let Ok(balance) = alloy::providers::Provider::get_balance(pipeline.provider(), keeper).await else {
            return;
        };
        let wei = u128::try_from(balance).unwrap_or(u128::MAX);
        pipeline.metrics().set_keeper_balance(keeper, wei);
        let threshold = pipeline.settings().keeper_low_balance_wei;
        let low = wei < threshold;
        if low && !self.low {
            tracing::warn!(%keeper, balance_wei = wei, threshold_wei = threshold, "keeper balance low");
            pipeline.notifier().notify(crate::notify::Notification::KeeperBalanceLow {
                keeper,
                balance_wei: wei,
                threshold_wei: threshold,
            });
        }
        self.low = low;
    }
}
