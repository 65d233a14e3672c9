//! Keeper jobs (issue 18) on anvil with real contracts: Chainlink's own example upkeeps from npm
//! `@chainlink/contracts` (`UpkeepCounter`, `UpkeepReverter`) and test upkeeps written against
//! its `AutomationCompatible` / `ILogAutomation` interfaces, plus a Gelato-style resolver; the
//! agent is the real `treasury run` (and the `crash_at` example for the kill -9).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolValue;
use treasury_agent::journal::Journal;
use treasury_agent::journal::keeper::{KeeperRun, RunState};
use treasury_devnet::keeper::{
    self as fixtures, ILogTriggeredCounter, IResolverCounter, ITestUpkeep, IUpkeepCounter,
};

use crate::support::AgentEnv;

fn crash_helper() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    deps.parent().unwrap().parent().unwrap().join("examples/crash_at")
}

/// Appends `[[keeper.job]]` tables (and anything else under `[keeper]`) to the agent's config.
pub(crate) fn add_jobs(env: &AgentEnv, toml: &str) {
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push('\n');
    text.push_str(toml);
    std::fs::write(&env.config, text).unwrap();
}

pub(crate) fn job(name: &str, kind_fields: &str, gas_limit: u64, trigger: &str) -> String {
    format!(
        "\n[[keeper.job]]\nname = \"{name}\"\n{kind_fields}\ngas_limit = {gas_limit}\ntrigger = {trigger}\n"
    )
}

pub(crate) async fn runs(journal: &Journal, job: &str) -> Vec<KeeperRun> {
    journal.keeper_runs(Some(job), 1000).await.unwrap()
}

pub(crate) fn count(runs: &[KeeperRun], state: RunState) -> usize {
    runs.iter().filter(|r| r.state == state).count()
}

/// Moves anvil's clock by `secs` and mines a block there.
pub(crate) async fn advance(env: &AgentEnv, secs: u64) {
    let p = &env.chain.keeper;
    let _: serde_json::Value = p.raw_request("evm_increaseTime".into(), (secs,)).await.unwrap();
    let _: serde_json::Value = p.raw_request("evm_mine".into(), ()).await.unwrap();
}

pub(crate) async fn mine(env: &AgentEnv, blocks: u64) {
    let _: serde_json::Value =
        env.chain.keeper.raw_request("anvil_mine".into(), (U256::from(blocks),)).await.unwrap();
}

/// The counter upkeep at `counter`, performed once so far, is not performed again within its
/// interval however often the agent looks, then once in each of the next two intervals.
pub(crate) async fn performed_once_per_interval(env: &AgentEnv, counter: Address) {
    let upkeep = IUpkeepCounter::new(counter, env.chain.keeper.clone());
    env.run_once();
    mine(env, 3).await;
    env.run_once();
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(1), "not due again within the interval");
    for n in 2..=3u64 {
        advance(env, treasury_devnet::keeper::INTERVAL_SECS + 1).await;
        env.run_once();
        env.run_once();
        assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(n), "one perform per interval");
    }
}

async fn keeper_nonce(env: &AgentEnv) -> u64 {
    env.chain.keeper.get_transaction_count(env.keeper).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_upkeep_is_performed_once_per_interval_across_a_kill_9() {
    let env = AgentEnv::start(&[]).await.unwrap();
    // Chainlink's UpkeepCounter: eligible at once, then every INTERVAL_SECS.
    let counter =
        fixtures::deploy_counter(&env.chain.keeper, 1_000_000_000, treasury_devnet::keeper::INTERVAL_SECS)
            .await
            .unwrap();
    add_jobs(
        &env,
        &job(
            "counter",
            &format!("kind = \"chainlink_upkeep\"\ntarget = \"{counter}\"\ncheck_data = \"0x\""),
            200_000,
            r#"{ kind = "every_blocks", blocks = 1 }"#,
        ),
    );
    let upkeep = IUpkeepCounter::new(counter, env.chain.keeper.clone());
    let helper = crash_helper();
    assert!(helper.is_file(), "crash helper not built (cargo build -p treasury --example crash_at)");

    let out = Command::new(&helper)
        .arg(&env.config)
        .env("TREASURY_CRASH_AT", "keeper_broadcast")
        .env("TREASURY_COORDINATOR_PASSPHRASE", "coordinator-pass")
        .env("TREASURY_KEEPER_PASSWORD", "keeper-pass")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("SIGKILL after keeper step keeper_broadcast"),
        "{stderr}"
    );
    let journal = env.journal().await;
    let left = runs(&journal, "counter").await;
    assert_eq!(left.len(), 1, "one run claimed before the kill: {left:?}");
    assert_eq!(left[0].state, RunState::Submitted, "killed after the broadcast, before confirmation");

    env.run_once();
    assert_eq!(
        upkeep.counter().call().await.unwrap(),
        U256::from(1),
        "performed exactly once across the kill"
    );
    let after = runs(&journal, "counter").await;
    assert_eq!(count(&after, RunState::Confirmed), 1, "{after:?}");
    assert_eq!(after.len(), 1, "the restart resumed the run, it did not claim another: {after:?}");

    performed_once_per_interval(&env, counter).await;
    let all = runs(&journal, "counter").await;
    assert_eq!(count(&all, RunState::Confirmed), 3, "{all:?}");
    assert!(all.iter().all(|r| r.gas_used.is_some_and(|g| g > 21_000) || r.state != RunState::Confirmed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_checks_and_performs_and_the_gas_cap_are_skipped_with_their_reason_without_a_retry_storm() {
    let env = AgentEnv::start(&[]).await.unwrap();
    let p = &env.chain.keeper;
    // Chainlink's UpkeepReverter: its check (behind `cannotExecute`) reverts "!working".
    let reverter = fixtures::deploy(p, "UpkeepReverter", &[]).await.unwrap();
    let bad_perform = fixtures::deploy(p, "RevertingPerformUpkeep", &[]).await.unwrap();
    // 40 fresh storage slots: about 900k gas, against a gas limit of 150k.
    let hungry = fixtures::deploy(p, "GasHungryUpkeep", &U256::from(40).abi_encode()).await.unwrap();
    let every = r#"{ kind = "every_blocks", blocks = 1 }"#;
    let upkeep = |target: Address| format!("kind = \"chainlink_upkeep\"\ntarget = \"{target}\"");
    add_jobs(
        &env,
        &[
            job("bad-check", &upkeep(reverter), 200_000, every),
            job("bad-perform", &upkeep(bad_perform), 200_000, every),
            job("hungry", &upkeep(hungry), 150_000, every),
        ]
        .concat(),
    );
    let nonce_before = keeper_nonce(&env).await;
    // The journal is opened (and migrated) before the agent starts: two processes migrating one
    // new SQLite file at once make one of them fail.
    let journal = env.journal().await;
    let mut agent = env.spawn_run(&[]);
    let start = env.chain.keeper.get_block_number().await.unwrap();
    // Let the agent see 40 blocks, one at a time.
    for _ in 0..40 {
        mine(&env, 1).await;
        wait_for_cursor(&journal, &env, env.chain.keeper.get_block_number().await.unwrap()).await;
    }
    agent.kill().unwrap();
    let _ = agent.wait();

    let bad_check = runs(&journal, "bad-check").await;
    assert!(!bad_check.is_empty(), "the reverting check is journaled");
    assert!(bad_check.iter().all(|r| r.state == RunState::Skipped), "{bad_check:?}");
    assert!(
        bad_check[0].reason.as_deref().unwrap_or_default().contains("!working"),
        "the check's own revert reason is journaled: {:?}",
        bad_check[0].reason
    );
    let bad_perform_runs = runs(&journal, "bad-perform").await;
    assert!(
        bad_perform_runs[0].reason.as_deref().unwrap_or_default().contains("perform broken"),
        "{bad_perform_runs:?}"
    );
    let hungry_runs = runs(&journal, "hungry").await;
    assert!(
        hungry_runs[0].reason.as_deref().unwrap_or_default().contains("above the job's gas_limit 150000"),
        "{hungry_runs:?}"
    );
    // Backing off 4, 8, 16, 32 blocks: over 40 blocks each job is tried at most 5 times, not 40.
    for (name, rows) in
        [("bad-check", &bad_check), ("bad-perform", &bad_perform_runs), ("hungry", &hungry_runs)]
    {
        assert!(rows.len() <= 5, "{name}: {} skips over 40 blocks since {start}: a retry storm", rows.len());
        assert!(rows.iter().all(|r| r.state == RunState::Skipped), "{name}: {rows:?}");
    }
    assert_eq!(keeper_nonce(&env).await, nonce_before, "nothing was sent");
    assert_eq!(ITestUpkeep::new(hungry, p.clone()).performed().call().await.unwrap(), U256::ZERO);
}

/// Waits until the agent's keeper cursor reached `block` (the agent is a separate process; up to
/// two minutes, as the whole e2e suite shares two cores).
pub(crate) async fn wait_for_cursor(journal: &Journal, env: &AgentEnv, block: u64) {
    let key = env.keeper.to_string().to_lowercase();
    for _ in 0..2400 {
        let cursor = journal.cursor(treasury_agent::keeper::CURSOR_SOURCE, &key).await.unwrap();
        if cursor.is_some_and(|c| c.block_number >= block) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(env.dir.path().join("agent.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    panic!(
        "the agent's keeper cursor did not reach block {block}; the agent's log ends:\n{}",
        tail.join("\n")
    );
}

/// Waits until `job` has `n` runs in a final state, mining a block now and then so that sent
/// performs reach their confirmations.
async fn wait_for_final(env: &AgentEnv, journal: &Journal, job: &str, n: usize) -> Vec<KeeperRun> {
    for i in 0..2400 {
        let all = runs(journal, job).await;
        if all.iter().filter(|r| r.state.is_final()).count() >= n {
            return all;
        }
        if i % 4 == 3 {
            mine(env, 1).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{job}: fewer than {n} runs ended: {:?}", runs(journal, job).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_upkeep_performs_once_per_log_and_not_for_a_log_a_reorg_removed() {
    let env = AgentEnv::start(&[]).await.unwrap();
    env.edit_config("confirmations = 1", "confirmations = 2");
    let p = env.chain.keeper.clone();
    let counter = fixtures::deploy(&p, "LogTriggeredCounter", &[]).await.unwrap();
    add_jobs(
        &env,
        &job(
            "pings",
            &format!("kind = \"chainlink_upkeep\"\ntarget = \"{counter}\""),
            200_000,
            &format!(r#"{{ kind = "on_log", address = "{counter}", event = "Ping(uint256)" }}"#),
        ),
    );
    let c = ILogTriggeredCounter::new(counter, p.clone());
    let journal = env.journal().await;
    let mut agent = env.spawn_run(&[]);
    wait_for_cursor(&journal, &env, p.get_block_number().await.unwrap()).await;

    // Two logs, two performs; more blocks bring no third.
    c.ping().send().await.unwrap().get_receipt().await.unwrap();
    c.ping().send().await.unwrap().get_receipt().await.unwrap();
    wait_for_final(&env, &journal, "pings", 2).await;
    mine(&env, 3).await;
    wait_for_cursor(&journal, &env, p.get_block_number().await.unwrap()).await;
    assert_eq!(c.performed().call().await.unwrap(), U256::from(2));
    let two = runs(&journal, "pings").await;
    assert_eq!(count(&two, RunState::Confirmed), 2, "{two:?}");

    // A log whose block a reorg removes while its perform waits for confirmation: dropped, never
    // sent again.
    let snapshot: U256 = p.raw_request("evm_snapshot".into(), ()).await.unwrap();
    c.ping().send().await.unwrap().get_receipt().await.unwrap();
    for _ in 0..2400 {
        if c.performed().call().await.unwrap() == U256::from(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.performed().call().await.unwrap(), U256::from(3), "the third log's perform was mined");
    let reverted: bool = p.raw_request("evm_revert".into(), (snapshot,)).await.unwrap();
    assert!(reverted);
    // Enough blocks past the perform's old height that the sender either sees the reorg or
    // replaces the vanished transaction: both stop at the missing log.
    mine(&env, 8).await;
    let after = wait_for_final(&env, &journal, "pings", 3).await;
    let dropped: Vec<&KeeperRun> = after.iter().filter(|r| r.state == RunState::Dropped).collect();
    assert_eq!(dropped.len(), 1, "the reorged log's run is dropped: {after:?}");
    assert!(dropped[0].reason.as_deref().unwrap_or_default().contains("reorged away"), "{dropped:?}");
    mine(&env, 3).await;
    wait_for_cursor(&journal, &env, p.get_block_number().await.unwrap()).await;
    assert_eq!(c.performed().call().await.unwrap(), U256::from(2), "no perform for the removed log");

    // A new log after the reorg is performed once (from a fresh provider: the old one cached
    // the deployer's nonce from before the revert).
    let fresh =
        treasury_chain::provider::connect_with_signer(env.chain.anvil.url(), treasury_devnet::dev_key(0))
            .unwrap();
    ILogTriggeredCounter::new(counter, fresh).ping().send().await.unwrap().get_receipt().await.unwrap();
    let last = wait_for_final(&env, &journal, "pings", 4).await;
    mine(&env, 3).await;
    wait_for_cursor(&journal, &env, p.get_block_number().await.unwrap()).await;
    agent.kill().unwrap();
    let _ = agent.wait();
    assert_eq!(c.performed().call().await.unwrap(), U256::from(3));
    assert_eq!(count(&last, RunState::Confirmed), 3, "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gelato_resolver_job_sends_its_payload_once_per_interval() {
    let env = AgentEnv::start(&[]).await.unwrap();
    let p = &env.chain.keeper;
    let counter = fixtures::deploy(p, "ResolverCounter", &[]).await.unwrap();
    let resolver = fixtures::deploy(
        p,
        "GelatoStyleResolver",
        &(counter, U256::from(treasury_devnet::keeper::INTERVAL_SECS)).abi_encode_params(),
    )
    .await
    .unwrap();
    add_jobs(
        &env,
        &job(
            "resolver",
            &format!("kind = \"gelato_resolver\"\nresolver = \"{resolver}\"\ntarget = \"{counter}\""),
            150_000,
            r#"{ kind = "every_blocks", blocks = 1 }"#,
        ),
    );
    let c = IResolverCounter::new(counter, p.clone());
    env.run_once();
    env.run_once();
    assert_eq!(c.count().call().await.unwrap(), U256::from(1));
    advance(&env, treasury_devnet::keeper::INTERVAL_SECS + 1).await;
    env.run_once();
    assert_eq!(c.count().call().await.unwrap(), U256::from(2));
    let journal = env.journal().await;
    assert_eq!(count(&runs(&journal, "resolver").await, RunState::Confirmed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_check_shows_the_decoded_check_and_simulated_perform_and_imports_print_their_jobs() {
    let env = AgentEnv::start(&[]).await.unwrap();
    let p = &env.chain.keeper;
    let counter =
        fixtures::deploy_counter(p, 1_000_000_000, treasury_devnet::keeper::INTERVAL_SECS).await.unwrap();
    let reverter = fixtures::deploy(p, "UpkeepReverter", &[]).await.unwrap();
    let every = r#"{ kind = "every_blocks", blocks = 1 }"#;
    add_jobs(
        &env,
        &[
            job(
                "counter",
                &format!("kind = \"chainlink_upkeep\"\ntarget = \"{counter}\"\ncheck_data = \"0xbeef\""),
                200_000,
                every,
            ),
            job("broken", &format!("kind = \"chainlink_upkeep\"\ntarget = \"{reverter}\""), 200_000, every),
        ]
        .concat(),
    );
    let nonce = keeper_nonce(&env).await;
    let out = env.treasury(&["keeper", "check", "counter", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports[0]["outcome"], "needed", "{reports}");
    assert_eq!(reports[0]["perform_data"], "0xbeef", "UpkeepCounter echoes its checkData: {reports}");
    assert!(reports[0]["simulated_gas"].as_u64().unwrap() > 21_000, "{reports}");
    let out = env.treasury(&["keeper", "check", "broken"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("failed") && text.contains("!working"), "{text}");
    assert_eq!(keeper_nonce(&env).await, nonce, "keeper check sends nothing");
    assert_eq!(IUpkeepCounter::new(counter, p.clone()).counter().call().await.unwrap(), U256::ZERO);

    // A registry exposing Chainlink's 2.1+ views: one conditional upkeep, one log upkeep.
    let registry = fixtures::deploy(p, "UpkeepRegistryViews", &[]).await.unwrap();
    let views = fixtures::IUpkeepRegistryViews::new(registry, p.clone());
    views
        .registerConditional(U256::from(7), counter, 300_000, vec![0xbe, 0xef].into())
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let topic0 = alloy::primitives::keccak256("Ping(uint256)");
    views
        .registerLog(U256::from(8), counter, 250_000, reverter, topic0)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let registry_s = registry.to_string();
    let out = env.treasury(&[
        "keeper",
        "import",
        "chainlink",
        "--registry",
        &registry_s,
        "--upkeep",
        "7",
        "--write",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let toml_text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(toml_text.contains("[[keeper.job]]") && toml_text.contains("name = \"upkeep-7\""), "{toml_text}");
    assert!(toml_text.contains(&format!("target = \"{counter}\"")), "{toml_text}");
    assert!(
        toml_text.contains("check_data = \"0xbeef\"") && toml_text.contains("gas_limit = 300000"),
        "{toml_text}"
    );
    let out = env.treasury(&["keeper", "import", "chainlink", "--registry", &registry_s, "--upkeep", "8"]);
    let log_job = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(log_job.contains("kind = \"on_log\"") && log_job.contains(&format!("{topic0}")), "{log_job}");
    // The written job loads and checks like any other.
    let out = env.treasury(&["keeper", "check", "upkeep-7", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(written[0]["perform_data"], "0xbeef");

    let rc = fixtures::deploy(p, "ResolverCounter", &[]).await.unwrap();
    let resolver =
        fixtures::deploy(p, "GelatoStyleResolver", &(rc, U256::from(60)).abi_encode_params()).await.unwrap();
    let out = env.treasury(&[
        "keeper",
        "import",
        "gelato",
        "--resolver",
        &resolver.to_string(),
        "--target",
        &rc.to_string(),
        "--name",
        "resolver",
    ]);
    let gelato = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        gelato.contains("kind = \"gelato_resolver\"") && gelato.contains("checker_data = \"0xcf5303cf\""),
        "{gelato}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perform_that_could_overrun_the_spending_cap_is_skipped() {
    let env = AgentEnv::start(&[]).await.unwrap();
    let p = &env.chain.keeper;
    let counter =
        fixtures::deploy_counter(p, 1_000_000_000, treasury_devnet::keeper::INTERVAL_SECS).await.unwrap();
    // Worst case 100,000 gas x 10 gwei = 0.001 ETH, above the job's cap of 0.0005 ETH per day.
    add_jobs(
        &env,
        &format!(
            "{}max_fee_gwei = 10\nspend_cap_eth = \"0.0005\"\n",
            job(
                "capped",
                &format!("kind = \"chainlink_upkeep\"\ntarget = \"{counter}\""),
                100_000,
                r#"{ kind = "every_blocks", blocks = 1 }"#
            )
        ),
    );
    let nonce = keeper_nonce(&env).await;
    env.run_once();
    let journal = env.journal().await;
    let rows = runs(&journal, "capped").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].state, RunState::Skipped);
    assert!(rows[0].reason.as_deref().unwrap_or_default().contains("spending cap of job capped"), "{rows:?}");
    assert_eq!(keeper_nonce(&env).await, nonce, "nothing sent");
    assert_eq!(IUpkeepCounter::new(counter, p.clone()).counter().call().await.unwrap(), U256::ZERO);
    // The same job with room under its cap performs.
    env.edit_config("spend_cap_eth = \"0.0005\"", "spend_cap_eth = \"0.002\"");
    mine(&env, 1).await;
    env.run_once();
    assert_eq!(IUpkeepCounter::new(counter, p.clone()).counter().call().await.unwrap(), U256::from(1));
}

/// A local webhook receiver for the agent's notifications: every JSON body, in arrival order.
struct Hooks {
    url: String,
    bodies: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
}

impl Hooks {
    async fn start() -> Self {
        let (tx, bodies) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let _ = tx.send(body);
                async { axum::http::StatusCode::OK }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, bodies }
    }

    /// Everything delivered so far (`treasury run --once` drains its webhooks before it exits).
    fn received(&mut self) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| self.bodies.try_recv().ok()).collect()
    }
}

async fn set_balance(env: &AgentEnv, who: Address, wei: u128) {
    let _: serde_json::Value =
        env.chain.keeper.raw_request("anvil_setBalance".into(), (who, U256::from(wei))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_balance_below_the_next_performs_worst_case_is_alerted_by_webhook() {
    let env = AgentEnv::start(&[]).await.unwrap();
    let p = &env.chain.keeper;
    let counter =
        fixtures::deploy_counter(p, 1_000_000_000, treasury_devnet::keeper::INTERVAL_SECS).await.unwrap();
    let mut hooks = Hooks::start().await;
    // The pipeline's own low-balance threshold is set far below the jobs' so that only the
    // jobs' alert can fire: 200,000 gas x 10 gwei x 50 performs = 0.1 ETH.
    env.edit_config(
        "poll_interval = \"100ms\"",
        "poll_interval = \"100ms\"\nkeeper_low_balance_eth = \"0.001\"",
    );
    add_jobs(
        &env,
        &format!(
            "{}max_fee_gwei = 10\n\n[keeper.automation]\nlow_balance_performs = 50\n\n[[notify.webhook]]\nurl = \"{}\"\nevents = [\"keeper_low\"]\n",
            job(
                "counter",
                &format!("kind = \"chainlink_upkeep\"\ntarget = \"{counter}\""),
                200_000,
                r#"{ kind = "every_blocks", blocks = 1 }"#
            ),
            hooks.url
        ),
    );
    const THRESHOLD: u128 = 100_000_000_000_000_000;
    set_balance(&env, env.keeper, 10 * THRESHOLD).await;
    env.run_once();
    assert_eq!(IUpkeepCounter::new(counter, p.clone()).counter().call().await.unwrap(), U256::from(1));
    assert_eq!(
        hooks.received(),
        Vec::<serde_json::Value>::new(),
        "no alert while the balance covers 50 performs"
    );

    set_balance(&env, env.keeper, THRESHOLD / 2).await;
    mine(&env, 1).await;
    env.run_once();
    let got = hooks.received();
    assert_eq!(got.len(), 1, "one alert: {got:?}");
    assert_eq!(got[0]["event"], "keeper_low", "{got:?}");
    assert_eq!(got[0]["keeper"].as_str().unwrap().to_lowercase(), env.keeper.to_string().to_lowercase());
    assert_eq!(got[0]["threshold_wei"], THRESHOLD.to_string(), "gas_limit x fee ceiling x performs: {got:?}");
    let balance: u128 = got[0]["balance_wei"].as_str().unwrap().parse().unwrap();
    assert!(balance <= THRESHOLD / 2, "{got:?}");
}

async fn next_base_fee(env: &AgentEnv) -> u128 {
    use alloy::eips::eip1559::BaseFeeParams;
    let head =
        env.chain.keeper.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().unwrap();
    u128::from(head.header.next_block_base_fee(BaseFeeParams::ethereum()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_its_fee_ceiling_a_job_sends_nothing_and_blocks_no_other_job_then_performs_once_the_fee_falls()
{
    let env = AgentEnv::start(&[]).await.unwrap();
    let p = &env.chain.keeper;
    let deploy_counter = || async {
        fixtures::deploy_counter(p, 1_000_000_000, treasury_devnet::keeper::INTERVAL_SECS).await.unwrap()
    };
    let (thrifty, urgent) = (deploy_counter().await, deploy_counter().await);
    let every = r#"{ kind = "every_blocks", blocks = 1 }"#;
    let upkeep = |target: Address| format!("kind = \"chainlink_upkeep\"\ntarget = \"{target}\"");
    add_jobs(
        &env,
        &format!(
            "{}max_fee_gwei = 5\n{}max_fee_gwei = 100\n",
            job("thrifty", &upkeep(thrifty), 200_000, every),
            job("urgent", &upkeep(urgent), 200_000, every)
        ),
    );
    const GWEI: u128 = 1_000_000_000;
    let _: serde_json::Value =
        p.raw_request("anvil_setNextBlockBaseFeePerGas".into(), (U256::from(40 * GWEI),)).await.unwrap();
    mine(&env, 1).await;
    assert!(next_base_fee(&env).await > 5 * GWEI);
    let nonce = keeper_nonce(&env).await;
    env.run_once();
    let count_of =
        |c: Address| async move { IUpkeepCounter::new(c, p.clone()).counter().call().await.unwrap() };
    assert_eq!(count_of(thrifty).await, U256::ZERO, "not performed above its ceiling");
    assert_eq!(count_of(urgent).await, U256::from(1), "the other job performs");
    assert_eq!(keeper_nonce(&env).await, nonce + 1, "one transaction only: the urgent job's");
    let journal = env.journal().await;
    assert!(
        runs(&journal, "thrifty").await.iter().all(|r| r.state.is_final()),
        "no run of the thrifty job left waiting on the keeper's nonce"
    );
    // Still above: more rounds send nothing for it and leave the keeper's nonce free.
    mine(&env, 1).await;
    env.run_once();
    assert_eq!(count_of(thrifty).await, U256::ZERO);
    assert_eq!(keeper_nonce(&env).await, nonce + 1);

    // Empty blocks bring the base fee down (12.5% each) under the ceiling.
    while next_base_fee(&env).await >= 4 * GWEI {
        mine(&env, 1).await;
    }
    env.run_once();
    assert_eq!(count_of(thrifty).await, U256::from(1), "performed once the fee fell under its ceiling");
    assert_eq!(count_of(urgent).await, U256::from(1), "within its interval");
    let rows = runs(&journal, "thrifty").await;
    assert_eq!(count(&rows, RunState::Confirmed), 1, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_waiting_on_the_fee_ceiling_is_performed_once_after_a_restart() {
    let env = AgentEnv::start(&[]).await.unwrap();
    let p = env.chain.keeper.clone();
    let counter = fixtures::deploy(&p, "LogTriggeredCounter", &[]).await.unwrap();
    let on_ping = format!(r#"{{ kind = "on_log", address = "{counter}", event = "Ping(uint256)" }}"#);
    let upkeep = format!("kind = \"chainlink_upkeep\"\ntarget = \"{counter}\"");
    add_jobs(&env, &format!("{}max_fee_gwei = 5\n", job("pings", &upkeep, 200_000, &on_ping)));
    env.run_once();
    let c = ILogTriggeredCounter::new(counter, p.clone());
    c.ping().send().await.unwrap().get_receipt().await.unwrap();
    const GWEI: u128 = 1_000_000_000;
    let _: serde_json::Value =
        p.raw_request("anvil_setNextBlockBaseFeePerGas".into(), (U256::from(40 * GWEI),)).await.unwrap();
    mine(&env, 1).await;
    assert!(next_base_fee(&env).await > 5 * GWEI);
    // Each `run --once` is a new process: the log read above the ceiling must survive it.
    env.run_once();
    mine(&env, 1).await;
    env.run_once();
    assert_eq!(c.performed().call().await.unwrap(), U256::ZERO, "not performed above its ceiling");
    while next_base_fee(&env).await >= 4 * GWEI {
        mine(&env, 1).await;
    }
    env.run_once();
    assert_eq!(c.performed().call().await.unwrap(), U256::from(1), "performed once the fee fell");
    mine(&env, 2).await;
    env.run_once();
    assert_eq!(c.performed().call().await.unwrap(), U256::from(1), "and not again");
    let journal = env.journal().await;
    assert_eq!(count(&runs(&journal, "pings").await, RunState::Confirmed), 1);
}
