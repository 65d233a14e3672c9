//! Keeper jobs (issue 18): the upkeeps Chainlink Automation and Gelato used to run, run by the
//! agent itself with the pipeline's keeper account, journal and telemetry.
//!
//! Each round reads the head, works out what every job is due for since the keeper cursor (a tick
//! of `every_blocks` or `schedule` at the head, each matching log at its own block), runs all the
//! checks pinned to one block in one Multicall3 `aggregate3`, simulates each perform at that block
//! from the keeper with the job's gas limit, applies the caps, then claims the run in the journal
//! (`keeper_runs`, unique per job, work and perform hash) *before* anything is signed, and sends it
//! with the pipeline's sender (fee ceiling per job, bumping, reorgs), storing the signed
//! transaction before its broadcast. A restart resumes the runs left open from their stored
//! transaction; a second replica runs nothing until it holds the lease, and a deposed one cannot
//! claim (the journal's writes are fenced). A job with a run in flight is not checked again until
//! the run ends, so a check never sees the state its own pending perform is about to change.
//!
//! - [`check`]: check calldata, the batched `aggregate3`, decoding.
//! - [`metrics`]: the counters.
//! - `module`: performs through the treasury module (`execute = "module"`), signed by the quorum.

pub mod check;
pub mod metrics;
mod module;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, debug_span};
use treasury_chain::sender::{ObserverError, SendEvent, SendObserver, Sent, TxRequest};
use treasury_policies::Trigger;
use treasury_policies::upkeep::last_instant;

use crate::config::jobs::{AutomationConfig, Execute, KeeperJob};
use crate::journal::keeper::{KeeperRun, NewRun, RunState};
use crate::journal::{Alert, Cursor, Journal};
use crate::notify::Notification;
use crate::pipeline::Pipeline;
use check::{BlockRef, CheckOutcome, Work};

/// The journal cursor of the keeper jobs.
pub const CURSOR_SOURCE: &str = "keeper_jobs";

/// How far a restart that finds its cursor's block replaced rewinds (the watcher's bound too).
const MAX_REORG_DEPTH: u64 = 64;

/// How many of the newest runs a round reads to find the hot jobs.
const RECENT_RUNS: u32 = 64;

/// A job performed within this many blocks of the head is hot: its tick is checked, and its
/// perform sent, before the other checks' `aggregate3`.
const HOT_WITHIN_BLOCKS: u64 = 32;

/// At most this many hot jobs a round (the newest performs first).
const MAX_HOT: usize = 8;

/// How long a round waits for its hot jobs' performs to be confirmed or left waiting for a block
/// before it checks the others: a broadcast and a look for its receipt are a few RPC calls, and a
/// node that holds them longer does not hold the round back.
const HOT_SEND_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The jobs among `recent` (job, block of the run, newest first) performed within
/// [`HOT_WITHIN_BLOCKS`] of `head`, at most [`MAX_HOT`].
fn hot_jobs(recent: &[(String, u64)], head: u64) -> HashSet<String> {
    let mut hot = HashSet::new();
    for (job, block) in recent {
        if hot.len() == MAX_HOT {
            break;
        }
        if block + HOT_WITHIN_BLOCKS >= head {
            hot.insert(job.clone());
        }
    }
    hot
}

/// Called with a step name after the journal records it (`keeper_submitted`, `keeper_broadcast`,
/// `keeper_performed` once the perform's receipt is journaled); tests use it to kill the agent
/// there, the keeper bench to time a perform to its receipt.
pub type JobHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What can stop a keeper round; the runs keep their journaled state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    /// The journal failed (or this replica was fenced).
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// A chain read failed.
    #[error("keeper jobs: {0}")]
    Chain(String),
    /// A job cannot run as configured.
    #[error("keeper.job[{job}]: {reason}")]
    Config {
        /// The job.
        job: String,
        /// Why.
        reason: String,
    },
}

type Result<T, E = KeeperError> = std::result::Result<T, E>;

fn chain(what: &str, e: impl std::fmt::Display) -> KeeperError {
    KeeperError::Chain(format!("{what}: {e}"))
}

/// Per job: blocks to rest after a reverting check or perform (doubling), and the work it was due
/// for while busy.
#[derive(Debug, Default, Clone)]
struct JobState {
    rest_until: u64,
    rest_level: u32,
    pending: Option<String>,
    /// Whether its last due perform waited for the base fee to fall under its ceiling.
    fee_waiting: bool,
}

/// The head as a round reads it.
struct Head {
    block: BlockRef,
    /// The base fee of the block after it.
    next_base_fee: u128,
    /// Its parent's hash.
    parent: B256,
}

/// The runs in flight, by job.
type Busy = Arc<Mutex<HashMap<String, HashSet<i64>>>>;

/// The keeper jobs of one agent.
pub struct JobRunner {
    pipeline: Arc<Pipeline>,
    jobs: Arc<Vec<KeeperJob>>,
    settings: AutomationConfig,
    multicall3: Address,
    hook: Option<JobHook>,
    busy: Busy,
    states: HashMap<String, JobState>,
    sends: JoinSet<()>,
    low_balance: bool,
    /// This round's log work whose perform waits for the base fee to fall under its job's
    /// ceiling; its earliest block is journaled as where the next round starts reading logs.
    fee_deferred: Vec<Work>,
    /// Jobs whose perform through the module the nodes refused since the last round.
    refused: Arc<Mutex<Vec<String>>>,
    /// For each keeper-account send started this round: resolves once it is confirmed or waits
    /// for a block (or has ended).
    hot_sends: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner").field("jobs", &self.jobs.len()).finish_non_exhaustive()
    }
}

impl JobRunner {
    /// A runner for `jobs` on `pipeline`'s provider, journal, sender and (for jobs executed
    /// through the module) quorum; a module-executed job must be pinned in the pipeline's bundle
    /// ([`Pipeline::with_keeper_jobs`]).
    pub fn new(
        pipeline: Arc<Pipeline>,
        jobs: Vec<KeeperJob>,
        settings: AutomationConfig,
        multicall3: Address,
    ) -> Result<Self> {
        let pinned = pipeline.keeper_jobs();
        if let Some(job) = jobs.iter().find(|j| j.pinned().is_some_and(|p| !pinned.contains(&p))) {
            return Err(KeeperError::Config {
                job: job.name.clone(),
                reason: "execute = \"module\", but the pipeline's policy bundle does not pin the job (Pipeline::with_keeper_jobs)".into(),
            });
        }
        Ok(Self {
            pipeline,
            jobs: Arc::new(jobs),
            settings,
            multicall3,
            hook: None,
            busy: Arc::default(),
            states: HashMap::new(),
            sends: JoinSet::new(),
            low_balance: false,
            fee_deferred: Vec::new(),
            refused: Arc::default(),
            hot_sends: Vec::new(),
        })
    }

    /// Calls `hook` after each journaled step of a perform.
    pub fn with_hook(mut self, hook: JobHook) -> Self {
        self.hook = Some(hook);
        self
    }

    fn journal(&self) -> &Journal {
        self.pipeline.journal()
    }

    /// Runs rounds until `shutdown` turns true (with `once`: one round, then waits for its sends).
    pub async fn run(mut self, once: bool, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let poll = self.pipeline.settings().poll_interval;
        loop {
            let outcome = self.round().await;
            if once {
                outcome?;
                while self.sends.join_next().await.is_some() {}
                // Runs a crash left open were resumed in this round; their outcome is final now.
                return Ok(());
            }
            if let Err(e) = outcome {
                if let KeeperError::Journal(j) = &e
                    && j.is_fenced()
                {
                    return Err(e);
                }
                tracing::warn!(error = %treasury_signer::error_chain(&e), "keeper round failed; retrying");
            }
            while self.sends.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        self.sends.abort_all();
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One round: resume open runs, find due work since the cursor, check, perform, move the cursor.
    pub async fn round(&mut self) -> Result<()> {
        let cursor_key = self.pipeline.keeper().to_string().to_lowercase();
        let logs_key = format!("{cursor_key}#logs");
        // The runs in flight before the open runs are read: one that ends meanwhile is not
        // resumed as if a crash had left it open.
        let in_flight: HashSet<i64> =
            self.busy.lock().expect("busy lock").values().flatten().copied().collect();
        // The head (one RPC), the two cursors, the open runs and the recent performs (journal)
        // are read together.
        let reads = async {
            tokio::try_join!(
                self.head(),
                async { Ok(self.journal().cursor(CURSOR_SOURCE, &cursor_key).await?) },
                async { Ok(self.journal().cursor(CURSOR_SOURCE, &logs_key).await?) },
                async { Ok(self.journal().open_keeper_runs().await?) },
                async { Ok(self.journal().recent_keeper_performs(RECENT_RUNS).await?) },
            )
        };
        let (head, cursor, logs_cursor, open, recent) = reads.instrument(debug_span!("keeper.read")).await?;
        self.resume_open(open, &in_flight).await?;
        let Head { block: head, next_base_fee, parent } = head;
        let hot = hot_jobs(&recent, head.number);
        self.rest_refused(head.number);
        let from = match cursor {
            None => head.number,
            Some(c) => self.resume_point(&c, head, parent).await?,
        };
        let logs_from = logs_cursor.map_or(from, |c| c.block_number.min(from));
        if from <= head.number {
            let logs_from = self.bound_catch_up(logs_from, head.number).await?;
            let work = self
                .due_work(from.max(logs_from), logs_from, head)
                .instrument(debug_span!("keeper.due"))
                .await?;
            self.check_and_perform(work, head, next_base_fee, &hot).await?;
        }
        // Logs waiting on the fee ceiling are read again from their block next round (after a
        // restart too): the cursor of logs stays at the earliest of them.
        let waiting = std::mem::take(&mut self.fee_deferred);
        let next_logs = waiting.iter().map(|w| w.block.number).min().unwrap_or(head.number + 1);
        let logs_cursor = Cursor { block_number: next_logs, block_hash: String::new() };
        let cursor = Cursor { block_number: head.number, block_hash: head.hash.to_string() };
        // One write, not waiting for the disk: a cursor lost to a power cut only makes the next
        // round look at some blocks again, where the runs' claims refuse anything done twice.
        self.journal()
            .set_cursors_relaxed(CURSOR_SOURCE, &[(&logs_key, &logs_cursor), (&cursor_key, &cursor)])
            .await?;
        self.watch_balance().await;
        Ok(())
    }

    /// The first block to examine after `cursor`; after a reorg that replaced the cursor's block,
    /// an earlier one (logs seen again are journaled under their block hash, so none is run twice).
    async fn resume_point(&self, cursor: &Cursor, head: BlockRef, parent: B256) -> Result<u64> {
        // The usual case needs no read: the cursor is the head's parent (or the head itself).
        let known = (cursor.block_number + 1 == head.number)
            .then_some(parent)
            .or_else(|| (cursor.block_number == head.number).then_some(head.hash));
        if known.is_some_and(|h| h.to_string() == cursor.block_hash) {
            return Ok(cursor.block_number + 1);
        }
        let at = self.pipeline.provider().get_block_by_number(cursor.block_number.into()).await;
        let canonical = at.ok().flatten().map(|b| b.header.hash.to_string());
        if canonical.as_deref() == Some(cursor.block_hash.as_str()) {
            return Ok(cursor.block_number + 1);
        }
        let back = cursor.block_number.saturating_sub(MAX_REORG_DEPTH).max(1);
        tracing::warn!(
            cursor = cursor.block_number,
            from = back,
            "keeper cursor's block was replaced: re-examining"
        );
        Ok(back)
    }

    /// Skips what lies beyond `max_catch_up_blocks` behind the head, with an alert naming the jobs
    /// and the blocks.
    async fn bound_catch_up(&self, from: u64, head: u64) -> Result<u64> {
        let max = self.settings.max_catch_up_blocks;
        if head - from < max {
            return Ok(from);
        }
        let resume = head + 1 - max;
        let names: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
        let message = format!(
            "keeper jobs {} skipped blocks {from}..={} (catch-up is bounded by keeper.automation.max_catch_up_blocks = {max})",
            names.join(", "),
            resume - 1
        );
        tracing::error!(%message);
        let alert = Alert {
            idempotency_key: format!("keeper:gap@{from}-{}", resume - 1),
            policy: "keeper".into(),
            trigger: format!("gap@{from}-{}", resume - 1),
            message: message.clone(),
        };
        if self.journal().record_alert(&alert).await? {
            self.pipeline.notifier().notify(Notification::Alert { policy: "keeper".into(), message });
        }
        Ok(resume)
    }

    async fn block_at(&self, tag: BlockNumberOrTag) -> Result<BlockRef> {
        let block = self
            .pipeline
            .provider()
            .get_block_by_number(tag)
            .await
            .map_err(|e| chain("eth_getBlockByNumber", e))?
            .ok_or_else(|| KeeperError::Chain(format!("block {tag} not found")))?;
        Ok(BlockRef {
            number: block.header.number,
            hash: block.header.hash,
            timestamp: block.header.timestamp,
        })
    }

    /// Every job's due work: block and schedule ticks over `from..=head` at the head (checked
    /// once, at the newest state), each matching log over `logs_from..=head` at its block (logs
    /// already performed are refused by their journal claim).
    async fn due_work(&mut self, from: u64, logs_from: u64, head: BlockRef) -> Result<Vec<Work>> {
        let schedules = self.jobs.iter().any(|j| matches!(j.trigger, Trigger::Schedule { .. }));
        let prev_ts = if from == 0 || !schedules {
            0
        } else {
            self.block_at(BlockNumberOrTag::Number(from - 1)).await?.timestamp
        };
        let busy: HashSet<String> = self.busy.lock().expect("busy lock").keys().cloned().collect();
        let mut work = Vec::new();
        for (i, job) in self.jobs.iter().enumerate() {
            let tick = match &job.trigger {
                Trigger::EveryBlocks { blocks: 1 } => Some(format!("block:{}", head.number)),
                Trigger::EveryBlocks { blocks } => {
                    let m = head.number - head.number % blocks;
                    (m >= from).then(|| format!("every@{m}"))
                }
                Trigger::Schedule { cron } => {
                    last_instant(cron, prev_ts, head.timestamp).map(|t| format!("schedule@{t}"))
                }
                Trigger::OnLog { .. } | Trigger::Manual => None,
            };
            let state = self.states.entry(job.name.clone()).or_default();
            let key = match tick {
                Some(k) => Some(k),
                None => state.pending.take(),
            };
            let Some(key) = key else { continue };
            if busy.contains(&job.name) {
                state.pending = Some(key);
                continue;
            }
            if head.number < state.rest_until {
                continue;
            }
            work.push(Work { job: i, key, block: head, log: None });
        }
        self.pin_module_ticks(&mut work, head).await?;
        work.extend(self.log_work(logs_from, head.number).await?);
        Ok(work)
    }

    /// Each log matching a log-triggered job in `from..=to`, pinned to its own block.
    async fn log_work(&self, from: u64, to: u64) -> Result<Vec<Work>> {
        let mut out = Vec::new();
        for (i, job) in self.jobs.iter().enumerate() {
            let Trigger::OnLog { address, .. } = &job.trigger else { continue };
            let Some(topic0) = job.topic0() else { continue };
            let filter =
                Filter::new().address(*address).event_signature(topic0).from_block(from).to_block(to);
            let logs =
                self.pipeline.provider().get_logs(&filter).await.map_err(|e| chain("eth_getLogs", e))?;
            for log in logs {
                let (Some(number), Some(hash), Some(index)) =
                    (log.block_number, log.block_hash, log.log_index)
                else {
                    continue;
                };
                let timestamp = match log.block_timestamp {
                    Some(t) => t,
                    None => self.block_at(BlockNumberOrTag::Number(number)).await?.timestamp,
                };
                let block = BlockRef { number, hash, timestamp };
                out.push(Work { job: i, key: format!("log:{hash}:{index}"), block, log: Some(log) });
            }
        }
        Ok(out)
    }

    /// Runs the checks (one `aggregate3` per block), then each needed perform. At the head, the
    /// ticks of `hot` jobs (performed lately) are checked first on their own, and the other checks
    /// wait until the hot performs are confirmed or wait for a block: the node then spends its time
    /// on the due work's simulation, transaction and receipt rather than on 1,000 checks that
    /// mostly find nothing to do.
    async fn check_and_perform(
        &mut self,
        work: Vec<Work>,
        head: BlockRef,
        next_base_fee: u128,
        hot: &HashSet<String>,
    ) -> Result<()> {
        // Sends of earlier rounds (and resumed ones) are not waited for.
        self.hot_sends.clear();
        let mut by_block: BTreeMap<(u64, B256), Vec<Work>> = BTreeMap::new();
        for w in work {
            by_block.entry((w.block.number, w.block.hash)).or_default().push(w);
        }
        for ((_, hash), items) in by_block {
            let (fast, rest): (Vec<Work>, Vec<Work>) = items
                .into_iter()
                .partition(|w| hash == head.hash && w.log.is_none() && hot.contains(&self.jobs[w.job].name));
            if !fast.is_empty() {
                let outcomes =
                    self.check_all(hash, &fast).instrument(debug_span!("keeper.hot_check")).await?;
                self.act_on(fast, outcomes, head, next_base_fee).await?;
                if !rest.is_empty() {
                    self.hot_sends_at_rest().instrument(debug_span!("keeper.hot_wait")).await;
                }
            }
            if !rest.is_empty() {
                let outcomes = self.check_all(hash, &rest).instrument(debug_span!("keeper.check")).await?;
                self.act_on(rest, outcomes, head, next_base_fee).await?;
            }
        }
        Ok(())
    }

    /// Waits (at most [`HOT_SEND_WAIT`]) until the keeper-account sends started this round are
    /// confirmed, wait for a block, or have ended.
    async fn hot_sends_at_rest(&mut self) {
        let deadline = tokio::time::Instant::now() + HOT_SEND_WAIT;
        for told in self.hot_sends.drain(..) {
            let _ = tokio::time::timeout_at(deadline, told).await;
        }
    }

    /// Acts on each item's check outcome: skips a failed check, waits for the fee, or performs.
    async fn act_on(
        &mut self,
        items: Vec<Work>,
        outcomes: Vec<CheckOutcome>,
        head: BlockRef,
        next_base_fee: u128,
    ) -> Result<()> {
        for (w, outcome) in items.into_iter().zip(outcomes) {
            let job = self.jobs[w.job].clone();
            match outcome {
                CheckOutcome::NotNeeded => {}
                CheckOutcome::Failed(reason) => {
                    let hash = check::failed_check_hash(&reason);
                    self.skip(&job, &w, Address::ZERO, Bytes::new(), hash, &reason, head).await?;
                }
                CheckOutcome::Needed { .. } if job.max_fee_per_gas < next_base_fee => {
                    self.wait_for_fee(&job, w, next_base_fee);
                }
                CheckOutcome::Needed { target, calldata, .. } => {
                    self.states.entry(job.name.clone()).or_default().fee_waiting = false;
                    self.perform(&job, w, target, calldata, head).await?;
                }
            }
        }
        Ok(())
    }

    /// The head, and the base fee of the block after it: a perform whose fee ceiling is under
    /// that could not be mined.
    async fn head(&self) -> Result<Head> {
        let head = self
            .pipeline
            .provider()
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| chain("eth_getBlockByNumber", e))?
            .ok_or_else(|| KeeperError::Chain("latest block not found".into()))?;
        let params = alloy::eips::eip1559::BaseFeeParams::ethereum();
        let next_base_fee = head.header.next_block_base_fee(params).map_or(0, u128::from);
        let parent = head.header.parent_hash;
        let block =
            BlockRef { number: head.header.number, hash: head.header.hash, timestamp: head.header.timestamp };
        Ok(Head { block, next_base_fee, parent })
    }

    /// Keeps `work` for a later round instead of signing a transaction that could not be mined
    /// and would hold the keeper's nonce (every other job's perform waits behind it). Nothing is
    /// journaled: the run is claimed once the base fee is under the job's ceiling.
    fn wait_for_fee(&mut self, job: &KeeperJob, work: Work, next_base_fee: u128) {
        let state = self.states.entry(job.name.clone()).or_default();
        if !state.fee_waiting {
            tracing::warn!(
                job = %job.name,
                work = %work.key,
                base_fee_wei = next_base_fee,
                ceiling_wei = job.max_fee_per_gas,
                "keeper job due but the base fee is above its fee ceiling: waiting"
            );
        }
        state.fee_waiting = true;
        self.pipeline.metrics().jobs.inc_fee_waits(&job.name);
        if work.log.is_some() {
            self.fee_deferred.push(work);
        } else {
            state.pending = Some(work.key);
        }
    }

    /// The outcome of every item's check, in order; items of `call` jobs need no check.
    pub(crate) async fn check_all(&self, block: B256, items: &[Work]) -> Result<Vec<CheckOutcome>> {
        let (calls, plain): (Vec<usize>, Vec<(Address, Bytes)>) = items
            .iter()
            .enumerate()
            .filter_map(|(i, w)| check::check_call(&self.jobs[w.job], w).map(|c| (i, c)))
            .unzip();
        let answers = check::aggregate(self.pipeline.provider(), self.multicall3, block, &plain)
            .await
            .map_err(KeeperError::Chain)?;
        let mut by_item: HashMap<usize, Result<Bytes, Bytes>> = calls.into_iter().zip(answers).collect();
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let job = &self.jobs[w.job];
                self.pipeline.metrics().jobs.inc_checks(&job.name, 1);
                match by_item.remove(&i) {
                    Some(Ok(data)) => check::decode(job, Ok(&data)),
                    Some(Err(revert)) => check::decode(job, Err(&revert)),
                    None => check::decode(job, Ok(&[])),
                }
            })
            .collect())
    }

    /// Journals a skipped run (once per job, work and key) and rests the job.
    #[allow(clippy::too_many_arguments)]
    async fn skip(
        &mut self,
        job: &KeeperJob,
        work: &Work,
        target: Address,
        calldata: Bytes,
        perform_hash: String,
        reason: &str,
        head: BlockRef,
    ) -> Result<()> {
        let run = self.new_run(job, work, target, &calldata, perform_hash, head);
        let new = self.journal().claim_keeper_run(&run, RunState::Skipped, Some(reason)).await?.is_some();
        if new {
            tracing::warn!(job = %job.name, work = %work.key, %reason, "keeper job skipped");
            self.pipeline.metrics().jobs.inc_skipped(&job.name);
            self.pipeline
                .notifier()
                .notify(Notification::JobSkipped { job: job.name.clone(), reason: reason.into() });
        }
        if work.log.is_none() {
            self.rest(&job.name, head.number);
        }
        Ok(())
    }

    /// Rests job `name` from block `head` on, twice as long as the last time.
    fn rest(&mut self, name: &str, head: u64) {
        let base = self.settings.revert_backoff_blocks;
        let state = self.states.entry(name.to_string()).or_default();
        state.rest_until = head + base * (1 << state.rest_level.min(6));
        state.rest_level += 1;
    }

    fn new_run(
        &self,
        job: &KeeperJob,
        work: &Work,
        target: Address,
        calldata: &[u8],
        perform_hash: String,
        head: BlockRef,
    ) -> NewRun {
        NewRun {
            job: job.name.clone(),
            work_key: work.key.clone(),
            perform_hash,
            block_number: work.block.number,
            block_hash: work.block.hash.to_string(),
            target: target.to_string(),
            calldata: alloy::hex::encode_prefixed(calldata),
            spent_wei: u64::try_from(job.worst_case_wei()).unwrap_or(u64::MAX),
            period: self.period(head.timestamp),
        }
    }

    fn period(&self, timestamp: u64) -> i64 {
        (timestamp / self.settings.spend_period.as_secs().max(1)) as i64
    }

    /// Simulates the perform at the check's block, applies the caps, claims the run and sends it.
    async fn perform(
        &mut self,
        job: &KeeperJob,
        work: Work,
        target: Address,
        calldata: Bytes,
        head: BlockRef,
    ) -> Result<()> {
        if job.execute == Execute::Module {
            return self.perform_through_module(job, work, target, calldata, head).await;
        }
        let hash = check::perform_hash(target, &calldata);
        let request = TxRequest {
            to: target,
            data: calldata.clone(),
            gas_limit: Some(job.gas_limit),
            max_fee_per_gas: Some(job.max_fee_per_gas),
            ..TxRequest::default()
        };
        // The fees are read while the perform is simulated; a failed read is read again at the send.
        let both = async {
            tokio::join!(
                self.simulate(job, &work, target, &calldata),
                self.pipeline.sender().fees_for(&request)
            )
        };
        let (simulated, fees) = both.instrument(debug_span!("keeper.simulate")).await;
        if let Err(reason) = simulated? {
            return self.skip(job, &work, target, calldata, hash, &reason, head).await;
        }
        let claim = self.claim_run(job, &work, target, &calldata, hash, head);
        let Some(id) = claim.instrument(debug_span!("keeper.claim")).await? else {
            return Ok(());
        };
        self.spawn_send(
            job.clone(),
            id,
            Dispatch::New { request, fees: fees.ok() },
            work.log.as_ref().and_then(|l| l.block_hash.zip(l.block_number)),
        );
        Ok(())
    }

    /// `Err(reason)` when the perform would fail at the check's block with the job's gas limit.
    async fn simulate(
        &self,
        job: &KeeperJob,
        work: &Work,
        target: Address,
        calldata: &Bytes,
    ) -> Result<std::result::Result<(), String>> {
        let provider = self.pipeline.provider();
        check::perform_would_succeed(provider, self.pipeline.keeper(), job, work.block.hash, target, calldata)
            .await
            .map_err(KeeperError::Chain)
    }

    /// Claims the run of `job` for `work` in the journal, unless the job's spending cap is reached
    /// (then the run is skipped with its reason) or the run is journaled already: `None` then.
    async fn claim_run(
        &mut self,
        job: &KeeperJob,
        work: &Work,
        target: Address,
        calldata: &Bytes,
        perform_hash: String,
        head: BlockRef,
    ) -> Result<Option<i64>> {
        if let Some(reason) = self.over_cap(job, head).await? {
            self.skip(job, work, target, calldata.clone(), perform_hash, &reason, head).await?;
            return Ok(None);
        }
        let run = self.new_run(job, work, target, calldata, perform_hash, head);
        let Some(id) = self.journal().claim_keeper_run(&run, RunState::Sending, None).await? else {
            tracing::debug!(job = %job.name, work = %work.key, "already journaled: not performed again");
            return Ok(None);
        };
        if let Some(state) = self.states.get_mut(&job.name) {
            state.rest_level = 0;
        }
        Ok(Some(id))
    }

    /// Why the job's or the keeper's spending cap leaves no room for one more perform (at its
    /// worst case), if it does not.
    async fn over_cap(&self, job: &KeeperJob, head: BlockRef) -> Result<Option<String>> {
        let period = self.period(head.timestamp);
        let worst = job.worst_case_wei();
        if let Some(cap) = job.spend_cap_wei {
            let spent = self.journal().keeper_spent(Some(&job.name), period).await?;
            if spent + worst > cap {
                return Ok(Some(format!(
                    "spending cap of job {}: {spent} wei spent this period, the next perform may cost {worst}, cap {cap}",
                    job.name
                )));
            }
        }
        if let Some(cap) = self.settings.spend_cap_wei {
            let spent = self.journal().keeper_spent(None, period).await?;
            if spent + worst > cap {
                return Ok(Some(format!(
                    "keeper spending cap (keeper.automation.spend_cap_eth): {spent} wei spent this period, the next perform may cost {worst}, cap {cap}"
                )));
            }
        }
        Ok(None)
    }

    /// Resumes runs a crash (or a failed send) left open: `submitted` ones from their stored
    /// transaction; `sending` ones signed nothing, so they are dropped and checked again.
    async fn resume_open(&mut self, open: Vec<KeeperRun>, in_flight: &HashSet<i64>) -> Result<()> {
        for run in open {
            if in_flight.contains(&run.id) {
                continue;
            }
            let Some(job) = self.jobs.iter().find(|j| j.name == run.job).cloned() else {
                self.journal()
                    .finish_keeper_run(run.id, RunState::Dropped, Some("job no longer configured"), None, 0)
                    .await?;
                continue;
            };
            match run.raw_tx.as_deref().map(alloy::hex::decode) {
                Some(Ok(raw)) => {
                    // A perform through the module holds the module's nonce until it is mined.
                    let lock = match job.execute {
                        Execute::Keeper => None,
                        Execute::Module => match self.pipeline.module_nonce_lock().clone().try_lock_owned() {
                            Ok(lock) => Some(lock),
                            Err(_) => continue,
                        },
                    };
                    tracing::info!(job = %run.job, run = run.id, "resuming a submitted perform");
                    let log = log_anchor(&run);
                    self.spawn_send_locked(job, run.id, Dispatch::Resume(raw.into()), log, lock);
                }
                _ => {
                    self.journal()
                        .finish_keeper_run(
                            run.id,
                            RunState::Dropped,
                            Some("nothing was signed before the agent stopped; checked again"),
                            None,
                            0,
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }

    fn spawn_send(&mut self, job: KeeperJob, id: i64, send: Dispatch, log: Option<(B256, u64)>) {
        self.spawn_send_locked(job, id, send, log, None);
    }

    /// [`JobRunner::spawn_send`], the task holding `lock` (the module's nonce) until it ends.
    fn spawn_send_locked(
        &mut self,
        job: KeeperJob,
        id: i64,
        send: Dispatch,
        log: Option<(B256, u64)>,
        lock: module::NonceLock,
    ) {
        self.busy.lock().expect("busy lock").entry(job.name.clone()).or_default().insert(id);
        let at_rest = matches!(send, Dispatch::New { .. }).then(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.hot_sends.push(rx);
            tx
        });
        let ctx = SendTask {
            pipeline: self.pipeline.clone(),
            job,
            id,
            log,
            hook: self.hook.clone(),
            busy: self.busy.clone(),
            refused: self.refused.clone(),
            at_rest: Mutex::new(at_rest),
            _nonce: lock,
        };
        self.sends.spawn(ctx.run(send));
    }

    /// Alerts once when the balance covers fewer performs than `low_balance_performs`.
    async fn watch_balance(&mut self) {
        let worst = self.jobs.iter().map(KeeperJob::worst_case_wei).max().unwrap_or(0);
        let threshold = worst.saturating_mul(u128::from(self.settings.low_balance_performs));
        if threshold == 0 {
            return;
        }
        let keeper = self.pipeline.keeper();
        let Ok(balance) = self.pipeline.provider().get_balance(keeper).await else { return };
        let wei = u128::try_from(balance).unwrap_or(u128::MAX);
        let low = wei < threshold;
        if low && !self.low_balance {
            tracing::warn!(%keeper, balance_wei = wei, threshold_wei = threshold, "keeper balance covers fewer than keeper.automation.low_balance_performs performs");
            self.pipeline.notifier().notify(Notification::KeeperBalanceLow {
                keeper,
                balance_wei: wei,
                threshold_wei: threshold,
            });
        }
        self.low_balance = low;
    }
}

/// The block (hash, number) of a log-triggered run's log, from its work key.
fn log_anchor(run: &KeeperRun) -> Option<(B256, u64)> {
    let rest = run.work_key.strip_prefix("log:")?;
    let (hash, _) = rest.split_once(':')?;
    Some((hash.parse().ok()?, run.block_number))
}

/// A send to start or resume.
enum Dispatch {
    /// A new transaction, with the fees of its first attempt when they were read beforehand.
    New {
        request: TxRequest,
        fees: Option<(u128, u128)>,
    },
    Resume(Bytes),
    /// A perform through the module: signed by the quorum first.
    Module(Box<module::ModuleSend>),
}

/// One perform's send, from claim to confirmation, in its own task.
struct SendTask {
    pipeline: Arc<Pipeline>,
    job: KeeperJob,
    id: i64,
    log: Option<(B256, u64)>,
    hook: Option<JobHook>,
    busy: Busy,
    refused: Arc<Mutex<Vec<String>>>,
    /// Told when the perform is first confirmed or waits for a block (dropped if it ends first).
    at_rest: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The module's nonce, held by a perform through the module until it ends.
    _nonce: module::NonceLock,
}

impl SendTask {
    async fn run(self, send: Dispatch) {
        let send = match send {
            Dispatch::Module(m) => match self.sign_module(&m).await {
                Ok(request) => Some(Dispatch::New { request, fees: None }),
                Err(why) => {
                    if let Err(e) = self.end_unsigned(why).await {
                        tracing::warn!(job = %self.job.name, run = self.id, error = %treasury_signer::error_chain(&e), "keeper run left open; checked again next round");
                    }
                    None
                }
            },
            other => Some(other),
        };
        if let Some(send) = send {
            let outcome = self.send(send).await;
            if let Err(e) = self.finish(outcome).instrument(debug_span!("keeper.finish")).await {
                tracing::warn!(job = %self.job.name, run = self.id, error = %treasury_signer::error_chain(&e), "keeper run left open; resumed next round");
            }
        }
        let mut busy = self.busy.lock().expect("busy lock");
        if let Some(runs) = busy.get_mut(&self.job.name) {
            runs.remove(&self.id);
            if runs.is_empty() {
                busy.remove(&self.job.name);
            }
        }
    }

    async fn send(&self, send: Dispatch) -> std::result::Result<Sent, treasury_chain::sender::SenderError> {
        let mut observer = RunObserver { task: self };
        let sender = self.pipeline.sender();
        match send {
            Dispatch::New { request, fees } => sender.send_with_fees(&request, fees, &mut observer).await,
            Dispatch::Resume(raw) => {
                sender.resume_capped(&raw, Some(self.job.max_fee_per_gas), &mut observer).await
            }
            Dispatch::Module(_) => unreachable!("signed into a new send first"),
        }
    }

    async fn finish(
        &self,
        outcome: std::result::Result<Sent, treasury_chain::sender::SenderError>,
    ) -> Result<()> {
        let journal = self.pipeline.journal();
        match outcome {
            Ok(sent) => {
                let success = sent.receipt.status();
                let gas = sent.receipt.gas_used;
                let spent = u128::from(gas).saturating_mul(sent.receipt.effective_gas_price);
                let state = if success { RunState::Confirmed } else { RunState::Reverted };
                let reason = (!success).then_some("the perform reverted on chain");
                journal
                    .finish_keeper_run(
                        self.id,
                        state,
                        reason,
                        Some(gas),
                        u64::try_from(spent).unwrap_or(u64::MAX),
                    )
                    .await?;
                if let Some(hook) = &self.hook {
                    hook("keeper_performed");
                }
                let tx_hash = sent.receipt.transaction_hash.to_string();
                let block = sent.receipt.block_number.unwrap_or_default();
                tracing::info!(job = %self.job.name, %tx_hash, block, success, gas, "keeper job performed");
                self.pipeline.metrics().jobs.inc_performs(&self.job.name, success, gas);
                self.pipeline.notifier().notify(Notification::JobPerformed {
                    job: self.job.name.clone(),
                    tx_hash,
                    block,
                    success,
                });
                Ok(())
            }
            Err(treasury_chain::sender::SenderError::Observer(e))
                if e.to_string().starts_with(LOG_REORGED) =>
            {
                journal.finish_keeper_run(self.id, RunState::Dropped, Some(&e.to_string()), None, 0).await?;
                // The dropped transaction's nonce is free again on chain.
                let _ = self.pipeline.sender().resync(&mut treasury_chain::sender::Ignore).await;
                Ok(())
            }
            Err(treasury_chain::sender::SenderError::InvalidRaw(reason)) => {
                journal.finish_keeper_run(self.id, RunState::Dropped, Some(&reason), None, 0).await?;
                Ok(())
            }
            Err(e) => {
                Err(KeeperError::Chain(format!("sending the perform: {}", treasury_signer::error_chain(&e))))
            }
        }
    }
}

const LOG_REORGED: &str = "the triggering log was reorged away";

impl SendTask {
    /// Tells the round (once) that this send no longer keeps the node busy.
    fn tell_at_rest(&self) {
        if let Some(told) = self.at_rest.lock().expect("at_rest lock").take() {
            let _ = told.send(());
        }
    }

    /// For a log-triggered run: an error (which stops the send before the step) when the log's
    /// block is no longer on the chain.
    async fn ensure_log_canonical(&self) -> std::result::Result<(), ObserverError> {
        let Some((hash, number)) = self.log else { return Ok(()) };
        let canonical = self
            .pipeline
            .provider()
            .get_block_by_number(number.into())
            .await
            .map_err(|e| Box::new(e) as ObserverError)?
            .map(|b| b.header.hash);
        if canonical == Some(hash) {
            Ok(())
        } else {
            Err(format!("{LOG_REORGED} (block {number} {hash}); not sent again").into())
        }
    }
}

/// Journals a run's transactions before they go out, and stops a log-triggered run whose log a
/// reorg removed.
struct RunObserver<'a> {
    task: &'a SendTask,
}

impl SendObserver for RunObserver<'_> {
    async fn observe(&mut self, event: &SendEvent) -> std::result::Result<(), ObserverError> {
        let task = self.task;
        match event {
            SendEvent::Signed { tx_hash, raw, .. } => {
                // Before every signature (first send or replacement): the log must still be there.
                task.ensure_log_canonical().await?;
                task.pipeline
                    .journal()
                    .keeper_run_signed(task.id, &tx_hash.to_string(), &alloy::hex::encode_prefixed(raw))
                    .await?;
                if let Some(hook) = &task.hook {
                    hook("keeper_submitted");
                }
            }
            SendEvent::Broadcast { .. } => {
                if let Some(hook) = &task.hook {
                    hook("keeper_broadcast");
                }
            }
            SendEvent::Reorged { .. } => task.ensure_log_canonical().await?,
            SendEvent::Confirmed { .. } => task.tell_at_rest(),
            _ => {}
        }
        Ok(())
    }

    /// The sender is about to wait for the chain.
    async fn flush(&mut self) -> std::result::Result<(), ObserverError> {
        self.task.tell_at_rest();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_jobs_are_those_performed_near_the_head_newest_first_and_bounded() {
        let recent: Vec<(String, u64)> =
            (0..20).map(|i| (format!("job{i}"), 1_000 - i)).chain([("old".to_string(), 900)]).collect();
        let hot = hot_jobs(&recent, 1_000);
        assert_eq!(hot.len(), MAX_HOT);
        assert!((0..MAX_HOT).all(|i| hot.contains(&format!("job{i}"))), "{hot:?}");
        assert!(hot_jobs(&[("old".to_string(), 900)], 1_000).is_empty(), "performed too long ago");
        assert!(hot_jobs(&[], 1_000).is_empty());
    }
}
