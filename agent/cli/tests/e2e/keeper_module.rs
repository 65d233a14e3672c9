//! Keeper jobs executed through the treasury module (issue 18, `execute = "module"`): the
//! perform is a tier-1 operation the three replaying signer nodes sign only after running the
//! job's check themselves, at the pinned block, through their own RPC endpoint. Chainlink's own
//! `UpkeepCounter` from npm `@chainlink/contracts`, the real `treasury run` and node processes.

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, Bytes, FixedBytes, U256};
use alloy::providers::Provider;
use alloy::sol_types::{SolCall, SolValue};
use treasury_agent::config::Config;
use treasury_agent::journal::keeper::RunState;
use treasury_chain::contracts::TreasuryModule;
use treasury_chain::contracts::automation::AutomationCompatibleInterface::performUpkeepCall;
use treasury_chain::operation::Operation;
use treasury_chain::{AdminAction, Call};
use treasury_devnet::keeper::{self as fixtures, IUpkeepCounter};
use treasury_devnet::world::configure_as_safe;
use treasury_policies::replay::{Decision, PinnedBlock};
use treasury_policies::upkeep::{KeeperDecision, derive};

use crate::keeper_jobs::{add_jobs, count, job, mine, performed_once_per_interval, runs, wait_for_cursor};
use crate::replay::{every, refusals};
use crate::support::AgentEnv;

const PERFORM: [u8; 4] = performUpkeepCall::SELECTOR;

/// Deploys Chainlink's `UpkeepCounter` (eligible at once, then every INTERVAL_SECS).
async fn counter(env: &AgentEnv) -> Address {
    let args = (U256::from(1_000_000_000u64), U256::from(treasury_devnet::keeper::INTERVAL_SECS))
        .abi_encode_params();
    fixtures::deploy(&env.chain.keeper, "UpkeepCounter", &args).await.unwrap()
}

/// Allows `performUpkeep` on `target` in tier 1 of the module (a Safe transaction).
async fn allow_on_chain(env: &AgentEnv, target: Address) {
    let action = AdminAction::SetCallAllowed { target, selector: FixedBytes(PERFORM), allowed: true };
    configure_as_safe(&env.chain.keeper, &env.chain.deployment, env.chain.signing_owners(), &action)
        .await
        .unwrap();
}

/// A `chainlink_upkeep` job on `target`, checked every block, performed through the module.
fn module_job(name: &str, target: Address) -> String {
    job(
        name,
        &format!("kind = \"chainlink_upkeep\"\ntarget = \"{target}\"\nexecute = \"module\""),
        200_000,
        r#"{ kind = "every_blocks", blocks = 1 }"#,
    )
}

/// What an honest agent asks for job `name` at the head, built with the functions the agent
/// and the nodes use: the check's perform at the head, at the module's nonce there.
async fn honest_perform(env: &AgentEnv, name: &str) -> (Operation, Decision) {
    let config = Config::load(&env.config).unwrap();
    let job = config.keeper.jobs.iter().find(|j| j.name == name).unwrap();
    let pipeline = env.pipeline().await.unwrap().with_keeper_jobs(&config.keeper.jobs);
    let provider = &env.chain.keeper;
    let head = provider.get_block_by_number(BlockNumberOrTag::Latest).await.unwrap().unwrap().header;
    let pinned = job.pinned().unwrap();
    let perform =
        derive(provider, config.chain.multicall3, &pinned, head.hash, head.timestamp, None).await.unwrap();
    let op = Operation {
        calls: vec![perform.module_call()],
        nonce: env.chain.module_nonce().await.unwrap(),
        deadline: U256::from(head.timestamp + 3600),
    };
    let decision = Decision {
        policy_hash: pipeline.policy_hash(),
        firings: Vec::new(),
        intents: Vec::new(),
        plan_block: PinnedBlock { number: head.number, hash: head.hash },
        history_from: None,
        history: Vec::new(),
        keeper: Some(KeeperDecision {
            job: name.into(),
            log_index: None,
            perform_data: perform.perform_data,
        }),
    };
    (op, decision)
}

fn with_perform_data(op: &Operation, target: Address, data: &Bytes) -> Operation {
    let call = performUpkeepCall { performData: data.clone() }.abi_encode();
    Operation { calls: vec![Call::new(target, U256::ZERO, call)], ..op.clone() }
}

/// Attack, with the agent host's coordinator key against the node processes: performs of a
/// module-executed upkeep that its check did not produce — the `performData` changed (in the
/// decision and the call alike), the call changed under an honest decision, a job the nodes
/// never pinned — and the honest perform asked a second time once signed. Every node refuses,
/// naming why; the upkeep is performed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perform_its_check_did_not_produce_is_refused_by_every_node() {
    let mut env = AgentEnv::start(&[]).await.unwrap();
    let target = counter(&env).await;
    allow_on_chain(&env, target).await;
    add_jobs(&env, &module_job("counter", target));
    env.repin_with_allowed(&[(target, PERFORM)]).await.unwrap();
    let (op, honest) = honest_perform(&env, "counter").await;

    let forged_data = Bytes::from_static(&[0xde, 0xad]);
    let mut forged = honest.clone();
    forged.keeper.as_mut().unwrap().perform_data = forged_data.clone();
    let forged_op = with_perform_data(&op, target, &forged_data);
    every(&refusals(&env, &forged_op, &forged).await, "performData");

    every(&refusals(&env, &forged_op, &honest).await, "the operation differs");

    let mut unpinned = honest.clone();
    unpinned.keeper.as_mut().unwrap().job = "drain".into();
    every(&refusals(&env, &op, &unpinned).await, "keeper job drain is not among");

    let d = &env.chain.deployment;
    let coordinator = env.coordinator().unwrap();
    let signed = coordinator.sign_decided(&op, d.chain_id, d.module, None, Some(&honest)).await.unwrap();
    let frost = signed.signature;
    let sig = TreasuryModule::FrostSig { rX: frost.r_x, rY: frost.r_y, z: frost.z };
    env.chain.exec_signed(&op, sig, Default::default()).await.unwrap();
    let upkeep = IUpkeepCounter::new(target, env.chain.keeper.clone());
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(1), "the honest perform executed");

    // The same perform (same job, block and performData) under another deadline: signed once.
    let again = Operation { deadline: op.deadline + U256::from(1), ..op.clone() };
    every(&refusals(&env, &again, &honest).await, "already signed");
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(1), "performed once");
}

/// A job of `name` on `target`, through the module, with the trigger `trigger` (TOML).
fn module_job_on(name: &str, target: Address, trigger: &str) -> String {
    job(
        name,
        &format!("kind = \"chainlink_upkeep\"\ntarget = \"{target}\"\nexecute = \"module\""),
        200_000,
        trigger,
    )
}

/// Mines until the head's number is (`on`) or is not (`!on`) a multiple of `n`.
async fn mine_until_multiple(env: &AgentEnv, n: u64, on: bool) {
    while (env.chain.keeper.get_block_number().await.unwrap() % n == 0) != on {
        mine(env, 1).await;
    }
}

/// Attack, with the agent host's coordinator key against the node processes: performs of
/// module jobs whose check always answers "needed" (Chainlink's `UpkeepCounter` with no
/// interval) asked at blocks where their trigger is not due — an `every_blocks = 10` job off its
/// schedule, a yearly cron job in December, a log-triggered job at a block holding no matching
/// log. Every node refuses, naming the job and why; the every-10-blocks job's perform at its
/// tick is signed, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perform_asked_at_a_block_where_the_job_is_not_due_is_refused_by_every_node() {
    let mut env = AgentEnv::start(&[]).await.unwrap();
    let args = (U256::from(1_000_000_000u64), U256::ZERO).abi_encode_params();
    let target = fixtures::deploy(&env.chain.keeper, "UpkeepCounter", &args).await.unwrap();
    allow_on_chain(&env, target).await;
    let log_trigger = format!(
        r#"{{ kind = "on_log", address = "{target}", event = "PerformingUpkeep(address,uint256,uint256,uint256,uint256)" }}"#
    );
    let jobs = [
        module_job_on("tenth", target, r#"{ kind = "every_blocks", blocks = 10 }"#),
        module_job_on("new-year", target, r#"{ kind = "schedule", cron = "0 0 0 1 1 *" }"#),
        module_job_on("on-perform", target, &log_trigger),
    ];
    add_jobs(&env, &jobs.concat());
    env.repin_with_allowed(&[(target, PERFORM)]).await.unwrap();

    mine_until_multiple(&env, 10, false).await;
    let (op, off_schedule) = honest_perform(&env, "tenth").await;
    let why = refusals(&env, &op, &off_schedule).await;
    every(&why, "keeper job tenth is not due at block");
    every(&why, "every 10 blocks");

    let (op, december) = honest_perform(&env, "new-year").await;
    every(&refusals(&env, &op, &december).await, "keeper job new-year is not due at block");

    let (op, _) = honest_perform(&env, "tenth").await;
    let mut no_log = off_schedule.clone();
    let keeper = no_log.keeper.as_mut().unwrap();
    (keeper.job, keeper.log_index) = ("on-perform".into(), Some(0));
    every(&refusals(&env, &op, &no_log).await, "matching job on-perform's trigger");

    mine_until_multiple(&env, 10, true).await;
    let (op, tick) = honest_perform(&env, "tenth").await;
    let d = &env.chain.deployment;
    let coordinator = env.coordinator().unwrap();
    let signed = coordinator.sign_decided(&op, d.chain_id, d.module, None, Some(&tick)).await.unwrap();
    let frost = signed.signature;
    let sig = TreasuryModule::FrostSig { rX: frost.r_x, rY: frost.r_y, z: frost.z };
    env.chain.exec_signed(&op, sig, Default::default()).await.unwrap();
    let upkeep = IUpkeepCounter::new(target, env.chain.keeper.clone());
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(1), "performed at its tick");

    // The next blocks of the same period: not due, however eligible the upkeep says it is.
    let (op, same_period) = honest_perform(&env, "tenth").await;
    every(&refusals(&env, &op, &same_period).await, "keeper job tenth is not due at block");
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(1), "performed once in its period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_listed_job_through_the_module_is_performed_once_per_interval() {
    let mut env = AgentEnv::start(&[]).await.unwrap();
    let target = counter(&env).await;
    allow_on_chain(&env, target).await;
    add_jobs(&env, &module_job("counter", target));
    env.repin_with_allowed(&[(target, PERFORM)]).await.unwrap();
    let upkeep = IUpkeepCounter::new(target, env.chain.keeper.clone());
    let nonce = env.chain.module_nonce().await.unwrap();

    env.run_once();
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(1), "performed");
    assert_eq!(env.chain.module_nonce().await.unwrap(), nonce + U256::from(1), "by the module, in tier 1");
    let journal = env.journal().await;
    let after = runs(&journal, "counter").await;
    assert_eq!((after.len(), count(&after, RunState::Confirmed)), (1, 1), "{after:?}");

    performed_once_per_interval(&env, target).await;
    let all = runs(&journal, "counter").await;
    assert_eq!((all.len(), count(&all, RunState::Confirmed)), (3, 3), "{all:?}");
    assert_eq!(env.chain.module_nonce().await.unwrap(), nonce + U256::from(3));
}

/// An `every_blocks = 5` job through the module, its tick reached only after it (the agent was
/// not running at the tick): the agent pins the perform to the tick's own block, where the nodes
/// find it due, and it is performed once for that tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_job_tick_caught_up_after_its_block_is_performed_once() {
    let mut env = AgentEnv::start(&[]).await.unwrap();
    let args = (U256::from(1_000_000_000u64), U256::ZERO).abi_encode_params();
    let target = fixtures::deploy(&env.chain.keeper, "UpkeepCounter", &args).await.unwrap();
    allow_on_chain(&env, target).await;
    add_jobs(&env, &module_job_on("fifth", target, r#"{ kind = "every_blocks", blocks = 5 }"#));
    env.repin_with_allowed(&[(target, PERFORM)]).await.unwrap();
    mine_until_multiple(&env, 5, true).await;
    mine(&env, 1).await;
    env.run_once();
    let upkeep = IUpkeepCounter::new(target, env.chain.keeper.clone());
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::ZERO, "no tick since the first look");

    mine(&env, 6).await; // past the next tick, which the agent did not see at its block
    env.run_once();
    env.run_once();
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(1), "the tick caught up, once");
    let all = runs(&env.journal().await, "fifth").await;
    assert_eq!((all.len(), count(&all, RunState::Confirmed)), (1, 1), "{all:?}");
    assert_eq!(all[0].block_number % 5, 0, "pinned to the tick's block: {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_target_is_not_allow_listed_is_skipped_with_its_reason_without_a_retry_storm() {
    let mut env = AgentEnv::start(&[]).await.unwrap();
    let target = counter(&env).await;
    add_jobs(&env, &module_job("stranger", target));
    env.repin_with_allowed(&[]).await.unwrap();
    let nonce = env.chain.module_nonce().await.unwrap();
    let journal = env.journal().await;
    let mut agent = env.spawn_run(&[]);
    for _ in 0..24 {
        mine(&env, 1).await;
        wait_for_cursor(&journal, &env, env.chain.keeper.get_block_number().await.unwrap()).await;
    }
    agent.kill().unwrap();
    let _ = agent.wait();

    let rows = runs(&journal, "stranger").await;
    assert!(!rows.is_empty() && rows.iter().all(|r| r.state == RunState::Skipped), "{rows:?}");
    let reason = rows[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("not a tier-1 call") && reason.contains("allow-list"), "{reason}");
    // Backing off 4, 8, 16 blocks: over 24 blocks at most 4 tries, not 24.
    assert!(rows.len() <= 4, "{} skips over 24 blocks: a retry storm", rows.len());
    assert_eq!(env.chain.module_nonce().await.unwrap(), nonce, "nothing executed");
    assert_eq!(
        IUpkeepCounter::new(target, env.chain.keeper.clone()).counter().call().await.unwrap(),
        U256::ZERO
    );
}
