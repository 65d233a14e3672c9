//! A job's check as calldata, many checks in one Multicall3 `aggregate3` at a pinned block, and
//! what each answer means.

use alloy::eips::BlockId;
use alloy::primitives::{Address, B256, Bytes, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Log, TransactionRequest};

use crate::config::jobs::KeeperJob;
use crate::pipeline::simulate::{reason_of_rpc_error, revert_reason};

/// A block a check is pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Its number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
    /// Its timestamp (unix seconds).
    pub timestamp: u64,
}

/// One thing a job is due for: a tick of its trigger, or one matching log.
#[derive(Debug, Clone)]
pub struct Work {
    /// Index of the job in the runner's list.
    pub job: usize,
    /// Its journal key: `block:N`, `every@N`, `schedule@T` or `log:BLOCKHASH:INDEX`.
    pub key: String,
    /// The block the check is pinned to.
    pub block: BlockRef,
    /// The log, for a log-triggered upkeep.
    pub log: Option<Log>,
}

/// What a check said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Nothing to do.
    NotNeeded,
    /// Perform `calldata` on `target`.
    Needed {
        /// Where the perform goes.
        target: Address,
        /// The perform calldata.
        calldata: Bytes,
        /// The `performData` (Chainlink) or the payload (Gelato), for display.
        perform_data: Bytes,
    },
    /// The check reverted or answered something that does not decode.
    Failed(String),
}

/// The check call of `work` (`None` for a `call` job, which has no check).
pub fn check_call(job: &KeeperJob, work: &Work) -> Option<(Address, Bytes)> {
    job.kind.check_call(work.log.as_ref(), work.block.timestamp)
}

/// What the check's answer (`Ok` the return data, `Err` the revert data) means for `job`.
pub fn decode(job: &KeeperJob, answer: Result<&[u8], &[u8]>) -> CheckOutcome {
    let data = match answer {
        Ok(data) => data,
        Err(revert) => return CheckOutcome::Failed(format!("check {}", revert_reason(revert))),
    };
    match job.kind.decode_answer(data) {
        Ok(None) => CheckOutcome::NotNeeded,
        Ok(Some(p)) => {
            CheckOutcome::Needed { target: p.target, calldata: p.calldata, perform_data: p.perform_data }
        }
        Err(reason) => CheckOutcome::Failed(reason),
    }
}

pub use treasury_policies::upkeep::aggregate;

/// keccak256 of a perform's calldata, hex: the third part of a run's exactly-once key.
pub fn perform_hash(target: Address, calldata: &[u8]) -> String {
    treasury_policies::upkeep::perform_hash(target, calldata).to_string()
}

/// The key of a reverting check: its reason's hash, so one reason is journaled once per work.
pub fn failed_check_hash(reason: &str) -> String {
    format!("check:{}", &keccak256(reason.as_bytes()).to_string()[2..18])
}

/// Simulates a perform from `from` at `block` under the job's gas limit: `Ok(gas)` the gas it
/// would use, `Err(reason)` why it would fail (a revert, or more gas than the limit); the outer
/// error is a transport failure.
pub async fn simulate_perform(
    provider: &DynProvider,
    from: Address,
    job: &KeeperJob,
    block: B256,
    target: Address,
    calldata: &Bytes,
) -> Result<Result<u64, String>, String> {
    match perform_would_succeed(provider, from, job, block, target, calldata).await? {
        Ok(()) => {
            let request = perform_request(from, target, calldata);
            Ok(Ok(provider.estimate_gas(request).block(BlockId::hash(block)).await.unwrap_or(job.gas_limit)))
        }
        Err(reason) => Ok(Err(reason)),
    }
}

/// The perform as a call from `from`.
fn perform_request(from: Address, target: Address, calldata: &Bytes) -> TransactionRequest {
    TransactionRequest::default().from(from).to(target).input(calldata.clone().into())
}

/// [`simulate_perform`] without the gas estimate of a perform that succeeds (one `eth_call`
/// then): what the runner needs before it claims a run.
pub async fn perform_would_succeed(
    provider: &DynProvider,
    from: Address,
    job: &KeeperJob,
    block: B256,
    target: Address,
    calldata: &Bytes,
) -> Result<Result<(), String>, String> {
    let request = perform_request(from, target, calldata);
    let at = BlockId::hash(block);
    match provider.call(request.clone().gas_limit(job.gas_limit)).block(at).await {
        Ok(_) => Ok(Ok(())),
        Err(e) if e.as_error_resp().is_none() => Err(format!("eth_call (perform simulation): {e}")),
        Err(e) => {
            let reason = reason_of_rpc_error(&e);
            // Out of gas under the job's limit, or a revert whatever the gas?
            if let Ok(needed) = provider.estimate_gas(request).block(at).await
                && needed > job.gas_limit
            {
                return Ok(Err(format!(
                    "perform needs {needed} gas, above the job's gas_limit {}",
                    job.gas_limit
                )));
            }
            Ok(Err(format!("perform would fail: {reason}")))
        }
    }
}

/// One check of a job, run by `treasury keeper check` (nothing is sent or journaled).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The job.
    pub job: String,
    /// The work checked (`block:N`, `log:HASH:INDEX`).
    pub work: String,
    /// The block the check was pinned to.
    pub block: u64,
    /// `not_needed`, `needed` or `failed`.
    pub outcome: &'static str,
    /// Why the check failed.
    pub reason: Option<String>,
    /// Where the perform goes.
    pub target: Option<Address>,
    /// The decoded `performData` (Chainlink) or payload (Gelato).
    pub perform_data: Option<Bytes>,
    /// The perform calldata.
    pub calldata: Option<Bytes>,
    /// The perform's simulation at the same block: the gas it would use.
    pub simulated_gas: Option<u64>,
    /// Why the simulated perform fails.
    pub simulation_error: Option<String>,
}

/// Runs `job`'s check at `block` (for a log trigger: once per matching log in that block) and
/// simulates the perform where work is needed, from `from`.
pub async fn inspect(
    provider: &DynProvider,
    multicall3: Address,
    from: Address,
    job: &KeeperJob,
    block: BlockRef,
) -> Result<Vec<CheckReport>, String> {
    let work: Vec<Work> = match &job.trigger {
        treasury_policies::Trigger::OnLog { address, .. } => {
            let topic0 = job.topic0().ok_or("on_log trigger without a valid event")?;
            let filter = alloy::rpc::types::Filter::new()
                .address(*address)
                .event_signature(topic0)
                .at_block_hash(block.hash);
            let logs = provider.get_logs(&filter).await.map_err(|e| format!("eth_getLogs: {e}"))?;
            logs.into_iter()
                .map(|log| Work {
                    job: 0,
                    key: format!("log:{}:{}", block.hash, log.log_index.unwrap_or_default()),
                    block,
                    log: Some(log),
                })
                .collect()
        }
        _ => vec![Work { job: 0, key: format!("block:{}", block.number), block, log: None }],
    };
    let calls: Vec<(Address, Bytes)> = work.iter().filter_map(|w| check_call(job, w)).collect();
    let mut answers = aggregate(provider, multicall3, block.hash, &calls).await?.into_iter();
    let mut out = Vec::new();
    for w in work {
        let outcome = match check_call(job, &w) {
            None => decode(job, Ok(&[])),
            Some(_) => match answers.next() {
                Some(Ok(data)) => decode(job, Ok(&data)),
                Some(Err(revert)) => decode(job, Err(&revert)),
                None => return Err("aggregate3 answered fewer results than checks".into()),
            },
        };
        let mut report = CheckReport {
            job: job.name.clone(),
            work: w.key.clone(),
            block: block.number,
            outcome: "not_needed",
            reason: None,
            target: None,
            perform_data: None,
            calldata: None,
            simulated_gas: None,
            simulation_error: None,
        };
        match outcome {
            CheckOutcome::NotNeeded => {}
            CheckOutcome::Failed(reason) => {
                report.outcome = "failed";
                report.reason = Some(reason);
            }
            CheckOutcome::Needed { target, calldata, perform_data } => {
                report.outcome = "needed";
                match simulate_perform(provider, from, job, block.hash, target, &calldata).await? {
                    Ok(gas) => report.simulated_gas = Some(gas),
                    Err(reason) => report.simulation_error = Some(reason),
                }
                report.target = Some(target);
                report.perform_data = Some(perform_data);
                report.calldata = Some(calldata);
            }
        }
        out.push(report);
    }
    Ok(out)
}
