//! Keeper jobs as both sides see them: what a job checks and performs ([`JobKind`]), the jobs a
//! signer node pins to sign their performs through the module ([`PinnedJob`]), the keeper
//! decision a sign request carries ([`KeeperDecision`]), and the derivation the agent and the
//! node run alike: the check at a pinned block, through one Multicall3 `aggregate3`, and the
//! perform call it gives ([`derive`]).

use alloy::eips::BlockId;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::sol_types::{SolCall, SolValue};
use serde::{Deserialize, Serialize};
use treasury_chain::contracts::IMulticall3;

use crate::config::Trigger;
use treasury_chain::contracts::automation::{
    AutomationCompatibleInterface, ILogAutomation, Log as AutomationLog,
};

/// What a job checks and what it performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobKind {
    /// Chainlink Automation: `checkUpkeep(checkData)` (or `checkLog(log, checkData)` for a log
    /// trigger) then `performUpkeep(performData)` on `target`.
    ChainlinkUpkeep {
        /// The upkeep contract.
        target: Address,
        /// Its `checkData`.
        check_data: Bytes,
    },
    /// Gelato: `resolver.call(checker_data)` returns `(bool canExec, bytes execPayload)`, and the
    /// payload is sent to `target`.
    GelatoResolver {
        /// The resolver.
        resolver: Address,
        /// Calldata of the check (`checker()` by default).
        checker_data: Bytes,
        /// Where the payload goes.
        target: Address,
    },
    /// A fixed call, on the trigger alone.
    Call {
        /// The contract called.
        target: Address,
        /// The calldata.
        data: Bytes,
    },
}

impl JobKind {
    /// The kind's name as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ChainlinkUpkeep { .. } => "chainlink_upkeep",
            Self::GelatoResolver { .. } => "gelato_resolver",
            Self::Call { .. } => "call",
        }
    }

    /// The check call (`None` for a `call` job, which has no check); `log` with its block's
    /// `timestamp` for a log-triggered upkeep.
    pub fn check_call(&self, log: Option<&Log>, timestamp: u64) -> Option<(Address, Bytes)> {
        match self {
            Self::ChainlinkUpkeep { target, check_data } => Some(match log {
                Some(log) => (
                    *target,
                    ILogAutomation::checkLogCall {
                        log: automation_log(log, timestamp),
                        checkData: check_data.clone(),
                    }
                    .abi_encode()
                    .into(),
                ),
                None => (
                    *target,
                    AutomationCompatibleInterface::checkUpkeepCall { checkData: check_data.clone() }
                        .abi_encode()
                        .into(),
                ),
            }),
            Self::GelatoResolver { resolver, checker_data, .. } => Some((*resolver, checker_data.clone())),
            Self::Call { .. } => None,
        }
    }

    /// What a check's return data means: `Ok(None)` nothing to do, `Ok(Some(perform))` the
    /// perform, `Err` an answer that does not decode. A `call` job's (absent) check always performs.
    pub fn decode_answer(&self, data: &[u8]) -> Result<Option<Perform>, String> {
        match self {
            Self::Call { target, data } => {
                Ok(Some(Perform { target: *target, calldata: data.clone(), perform_data: data.clone() }))
            }
            Self::ChainlinkUpkeep { target, .. } => match <(bool, Bytes)>::abi_decode_params(data) {
                Ok((false, _)) => Ok(None),
                Ok((true, perform_data)) => Ok(Some(Perform {
                    target: *target,
                    calldata: AutomationCompatibleInterface::performUpkeepCall {
                        performData: perform_data.clone(),
                    }
                    .abi_encode()
                    .into(),
                    perform_data,
                })),
                Err(e) => Err(format!("check answer is not (bool upkeepNeeded, bytes performData): {e}")),
            },
            Self::GelatoResolver { target, .. } => match <(bool, Bytes)>::abi_decode_params(data) {
                Ok((false, _)) => Ok(None),
                Ok((true, payload)) => {
                    Ok(Some(Perform { target: *target, calldata: payload.clone(), perform_data: payload }))
                }
                Err(e) => Err(format!("resolver answer is not (bool canExec, bytes execPayload): {e}")),
            },
        }
    }
}

/// A perform a check asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Perform {
    /// Where it goes.
    pub target: Address,
    /// Its calldata.
    pub calldata: Bytes,
    /// The `performData` (Chainlink) or the payload (Gelato).
    pub perform_data: Bytes,
}

impl Perform {
    /// keccak256 of target and calldata: the third part of a run's exactly-once key.
    pub fn hash(&self) -> B256 {
        perform_hash(self.target, &self.calldata)
    }

    /// The module call that carries it (a plain call, no value).
    pub fn module_call(&self) -> treasury_chain::Call {
        treasury_chain::Call::new(self.target, U256::ZERO, self.calldata.to_vec())
    }
}

/// keccak256 of a perform's target and calldata.
pub fn perform_hash(target: Address, calldata: &[u8]) -> B256 {
    let mut bytes = target.to_vec();
    bytes.extend_from_slice(calldata);
    keccak256(bytes)
}

/// The log as Chainlink's `checkLog` receives it.
fn automation_log(log: &Log, timestamp: u64) -> AutomationLog {
    AutomationLog {
        index: U256::from(log.log_index.unwrap_or_default()),
        timestamp: U256::from(log.block_timestamp.unwrap_or(timestamp)),
        txHash: log.transaction_hash.unwrap_or_default(),
        blockNumber: U256::from(log.block_number.unwrap_or_default()),
        blockHash: log.block_hash.unwrap_or_default(),
        source: log.address(),
        topics: log.topics().to_vec(),
        data: log.data().data.clone(),
    }
}

/// Runs `calls` in one `aggregate3` (each allowed to fail) at `block`, as a simulation from the
/// zero address (Chainlink's `cannotExecute` checks refuse any other origin); per call its return
/// data or its revert data.
pub async fn aggregate(
    provider: &DynProvider,
    multicall3: Address,
    block: B256,
    calls: &[(Address, Bytes)],
) -> Result<Vec<Result<Bytes, Bytes>>, String> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let call3: Vec<IMulticall3::Call3> = calls
        .iter()
        .map(|(target, data)| IMulticall3::Call3 {
            target: *target,
            allowFailure: true,
            callData: data.clone(),
        })
        .collect();
    let request = TransactionRequest::default()
        .from(Address::ZERO)
        .to(multicall3)
        .input(IMulticall3::aggregate3Call { calls: call3 }.abi_encode().into());
    let out = provider
        .call(request)
        .block(BlockId::hash(block))
        .await
        .map_err(|e| format!("aggregate3 of {} check(s) at block {block}: {e}", calls.len()))?;
    let results = IMulticall3::aggregate3Call::abi_decode_returns(&out)
        .map_err(|e| format!("aggregate3 answer does not decode: {e}"))?;
    Ok(results.into_iter().map(|r| if r.success { Ok(r.returnData) } else { Err(r.returnData) }).collect())
}

/// A job whose performs the signer nodes sign through the module (`execute = "module"`), as
/// pinned in the policy bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedJob {
    /// The job's name.
    pub name: String,
    /// What it checks and performs.
    pub job: JobKind,
    /// For a log-triggered upkeep: the emitting contract and the event's topic0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<(Address, B256)>,
    /// When the job is due: the node signs a perform only at a block where it is (a bundle
    /// pinned before jobs carried their trigger reads as `manual`: never due, until re-pinned).
    #[serde(default = "never_due")]
    pub trigger: Trigger,
}

fn never_due() -> Trigger {
    Trigger::Manual
}

/// The block a perform is asked at, as the due check reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueBlock {
    /// Its number.
    pub number: u64,
    /// Its timestamp.
    pub timestamp: u64,
    /// Its parent's timestamp (needed for a `schedule` trigger only).
    pub parent_timestamp: Option<u64>,
}

impl PinnedJob {
    /// The period of the job a perform at `block` belongs to: `Ok(None)` for a job due at every
    /// block or on each log (its block or log is its period), `Ok(Some(period))` for a tick of
    /// `every_blocks` (`every@N`) or a cron instant (`schedule@T`), `Err` why the job is not due
    /// at that block.
    pub fn period_at(&self, block: DueBlock) -> Result<Option<String>, String> {
        let not_due =
            |why: String| format!("keeper job {} is not due at block {}: {why}", self.name, block.number);
        match &self.trigger {
            Trigger::EveryBlocks { blocks: 0 } => Err(not_due("its interval is 0 blocks".into())),
            Trigger::EveryBlocks { blocks: 1 } => Ok(None),
            Trigger::EveryBlocks { blocks } => {
                if block.number.is_multiple_of(*blocks) {
                    Ok(Some(format!("every@{}", block.number)))
                } else {
                    let next = block.number - block.number % blocks + blocks;
                    Err(not_due(format!("it runs every {blocks} blocks (next at block {next})")))
                }
            }
            Trigger::Schedule { cron } => {
                let parent =
                    block.parent_timestamp.ok_or_else(|| not_due("its parent block is unknown".into()))?;
                match last_instant(cron, parent, block.timestamp) {
                    Some(instant) => Ok(Some(format!("schedule@{instant}"))),
                    None => Err(not_due(format!(
                        "its schedule `{cron}` has no instant in ({parent}, {}], the time since the previous block",
                        block.timestamp
                    ))),
                }
            }
            Trigger::OnLog { .. } => Ok(None),
            Trigger::Manual => Err(not_due("a manual trigger is never due through the module".into())),
        }
    }
}

/// The newest instant of cron expression `cron` in `(after, until]`, unix seconds.
pub fn last_instant(cron: &str, after: u64, until: u64) -> Option<u64> {
    use std::str::FromStr;
    let schedule = cron::Schedule::from_str(cron).ok()?;
    let start = chrono::DateTime::from_timestamp(i64::try_from(after).ok()?, 0)?;
    let mut last = None;
    for t in schedule.after(&start) {
        let t = u64::try_from(t.timestamp()).ok()?;
        if t > until {
            break;
        }
        last = Some(t);
    }
    last
}

/// What a keeper job's sign request carries besides the operation: which job, and what its
/// check answered at the decision's block (`Decision::plan_block`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperDecision {
    /// The job's name.
    pub job: String,
    /// The index (in its block) of the log a log-triggered upkeep was checked with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    /// The check's result: the `performData` (Chainlink) or payload (Gelato) it returned.
    pub perform_data: Bytes,
}

impl KeeperDecision {
    /// The exactly-once key of this perform: job, block (or log) and perform hash; for a job due
    /// once per `period` (a tick of `every_blocks`, a cron instant), job and period: one perform
    /// per period.
    pub fn ledger_key(&self, block: B256, perform: &Perform, period: Option<&str>) -> String {
        match (period, self.log_index) {
            (Some(period), _) => format!("keeper:{}:{period}", self.job),
            (None, Some(i)) => format!("keeper:{}:log:{block}:{i}:{}", self.job, perform.hash()),
            (None, None) => format!("keeper:{}:block:{block}:{}", self.job, perform.hash()),
        }
    }
}

/// Re-derives the perform of `job` at `block` (whose hash the caller checked) through
/// `provider`: the log by its index (for a log trigger), the check through `multicall3`, the
/// answer decoded. `Err` names why there is no perform.
pub async fn derive(
    provider: &DynProvider,
    multicall3: Address,
    job: &PinnedJob,
    block: B256,
    timestamp: u64,
    log_index: Option<u64>,
) -> Result<Perform, String> {
    let log = match (&job.log, log_index) {
        (None, None) => None,
        (Some((address, topic0)), Some(index)) => {
            let filter = Filter::new().address(*address).event_signature(*topic0).at_block_hash(block);
            let logs = provider.get_logs(&filter).await.map_err(|e| format!("eth_getLogs: {e}"))?;
            let found = logs.into_iter().find(|l| l.log_index == Some(index));
            Some(found.ok_or_else(|| {
                format!("block {block} holds no log {index} matching job {}'s trigger", job.name)
            })?)
        }
        (None, Some(_)) => {
            return Err(format!("job {} is not log-triggered, the request names a log", job.name));
        }
        (Some(_), None) => {
            return Err(format!("job {} is log-triggered, the request names no log", job.name));
        }
    };
    let answer = match job.job.check_call(log.as_ref(), timestamp) {
        None => Bytes::new(),
        Some(call) => match aggregate(provider, multicall3, block, &[call]).await?.pop() {
            Some(Ok(data)) => data,
            Some(Err(revert)) => {
                return Err(format!("the check reverts at block {block} (0x{})", alloy::hex::encode(revert)));
            }
            None => return Err("aggregate3 answered no result".into()),
        },
    };
    job.job
        .decode_answer(&answer)?
        .ok_or_else(|| format!("the check at block {block} says no perform is needed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(trigger: Trigger) -> PinnedJob {
        PinnedJob {
            name: "j".into(),
            job: JobKind::Call { target: Address::repeat_byte(1), data: Bytes::new() },
            log: None,
            trigger,
        }
    }

    fn at(number: u64, timestamp: u64, parent: u64) -> DueBlock {
        DueBlock { number, timestamp, parent_timestamp: Some(parent) }
    }

    #[test]
    fn every_n_blocks_is_due_at_its_ticks_only_and_one_tick_is_one_period() {
        let j = job(Trigger::EveryBlocks { blocks: 10 });
        assert_eq!(j.period_at(at(120, 0, 0)), Ok(Some("every@120".into())));
        let off = j.period_at(at(123, 0, 0)).unwrap_err();
        assert!(
            off.contains("keeper job j is not due at block 123") && off.contains("next at block 130"),
            "{off}"
        );
        assert_eq!(job(Trigger::EveryBlocks { blocks: 1 }).period_at(at(123, 0, 0)), Ok(None));
        // two performs of one tick (another block hash, other performData) share one key
        let d = KeeperDecision { job: "j".into(), log_index: None, perform_data: Bytes::new() };
        let p = |data: &'static [u8]| Perform {
            target: Address::ZERO,
            calldata: Bytes::from_static(data),
            perform_data: Bytes::new(),
        };
        let a = d.ledger_key(B256::repeat_byte(1), &p(b"a"), Some("every@120"));
        assert_eq!(a, d.ledger_key(B256::repeat_byte(2), &p(b"b"), Some("every@120")));
        assert_ne!(
            d.ledger_key(B256::repeat_byte(1), &p(b"a"), None),
            d.ledger_key(B256::repeat_byte(1), &p(b"b"), None)
        );
    }

    #[test]
    fn a_job_pinned_without_its_trigger_is_never_due() {
        let old = r#"{"name":"j","job":{"kind":"call","target":"0x0101010101010101010101010101010101010101","data":"0x"}}"#;
        let j: PinnedJob = serde_json::from_str(old).unwrap();
        let err = j.period_at(at(10, 0, 0)).unwrap_err();
        assert!(err.contains("keeper job j is not due at block 10"), "{err}");
    }

    #[test]
    fn a_schedule_is_due_at_the_first_block_at_or_after_its_instant() {
        let j = job(Trigger::Schedule { cron: "0 0 * * * *".into() }); // hourly
        let hour = 1_796_000_400; // a whole hour (unix seconds)
        assert_eq!(hour % 3600, 0);
        assert_eq!(j.period_at(at(7, hour + 5, hour - 7)), Ok(Some(format!("schedule@{hour}"))));
        assert_eq!(j.period_at(at(7, hour, hour - 12)), Ok(Some(format!("schedule@{hour}"))));
        let late = j.period_at(at(8, hour + 17, hour + 5)).unwrap_err();
        assert!(
            late.contains("keeper job j is not due at block 8") && late.contains("0 0 * * * *"),
            "{late}"
        );
        let unknown = DueBlock { number: 7, timestamp: hour + 5, parent_timestamp: None };
        assert!(j.period_at(unknown).is_err());
    }
}
