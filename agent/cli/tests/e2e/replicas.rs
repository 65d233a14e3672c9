//! Replicas of `treasury run` on one PostgreSQL journal (a private cluster per test): one leads
//! by lease, the other stands by. A leader killed with SIGKILL at each state an intent rests in is
//! replaced and every payment happens exactly once; a leader paused (SIGSTOP) past its lease and
//! woken (SIGCONT) after the standby took over can neither write nor send.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use treasury_agent::journal::{IntentFilter, IntentState};
use treasury_devnet::Postgres;

use crate::support::{AgentEnv, PolicySpec, numbered};

/// The lease's time to live in these tests: a standby takes over within about that.
const LEASE_TTL: &str = "2s";
/// How long a test waits for a replica to say something before it fails (not a timing assertion:
/// a liveness guard so a broken takeover fails instead of hanging).
const PATIENCE: Duration = Duration::from_secs(120);

/// The crash helper built from `agent/cli/examples/crash_at.rs`.
fn crash_helper() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    deps.parent().unwrap().parent().unwrap().join("examples/crash_at")
}

/// Points the set-up's journal at a fresh database of `cluster`, with a short lease.
fn use_postgres(env: &mut AgentEnv, cluster: &Postgres) {
    let url = cluster.create_database("treasury").unwrap();
    env.edit_config(
        &format!("url = \"{}\"", env.journal_url),
        &format!("url = \"{url}\"\nlease_ttl = \"{LEASE_TTL}\""),
    );
    env.journal_url = url;
}

/// A running replica whose stdout and stderr lines are collected.
struct Replica {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Replica {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("replica starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            BufReader::new(out).lines().map_while(Result::ok).for_each(|l| {
                let _ = tx.send(l);
            })
        });
        std::thread::spawn(move || {
            BufReader::new(err).lines().map_while(Result::ok).for_each(|l| {
                let _ = tx2.send(l);
            })
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a line containing `needle`; returns it.
    fn expect_line(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} (exit: {:?}); output so far:\n{}",
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The term in its `leading term N` line.
    fn leading_term(&mut self) -> i64 {
        let line = self.expect_line("leading term ");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Waits for the exit, collecting the rest of the output.
    fn wait(&mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        status
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn helper_command(env: &AgentEnv, var: &str, state: &str) -> Command {
    let helper = crash_helper();
    assert!(
        helper.is_file(),
        "crash helper not built at {} (cargo build -p treasury --example crash_at)",
        helper.display()
    );
    let mut cmd = Command::new(helper);
    cmd.arg(&env.config)
        .env(var, state)
        .env("TREASURY_COORDINATOR_PASSPHRASE", "coordinator-pass")
        .env("TREASURY_KEEPER_PASSWORD", "keeper-pass")
        .env("RUST_LOG", "info")
        .current_dir(env.dir.path());
    cmd
}

fn standby(env: &AgentEnv) -> Replica {
    let config = env.config.display().to_string();
    Replica::spawn(env.command(&["run", "--once", "--config", &config]))
}

async fn keeper_tx_count(env: &AgentEnv) -> u64 {
    env.chain.keeper.get_transaction_count(env.keeper).await.unwrap()
}

/// The states an intent rests in between two commits (see `crash.rs`).
const STATES: [&str; 3] = ["guarded", "authorising", "submitted"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_by_the_standby_and_each_payment_happens_once() {
    let scripts: Vec<String> =
        (0..STATES.len()).map(|i| format!(r#"pay("r{i}", "USDC", {});"#, 10 + i)).collect();
    let names: Vec<String> = STATES.iter().map(|s| format!("failover-{s}")).collect();
    let policies: Vec<PolicySpec<'_>> = names
        .iter()
        .zip(&scripts)
        .map(|(name, script)| PolicySpec { name, script, trigger: r#"{ kind = "manual" }"# })
        .collect();
    let mut env = AgentEnv::start(&policies).await.unwrap();
    let cluster = Postgres::start().unwrap();
    use_postgres(&mut env, &cluster);
    let journal = env.journal().await;

    for (i, state) in STATES.iter().enumerate() {
        let nonce_before = env.chain.module_nonce().await.unwrap();
        env.trigger(&names[i]).await;
        let mut leader = Replica::spawn(helper_command(&env, "TREASURY_CRASH_AT", state));
        let term = leader.leading_term();
        let mut follower = standby(&env);
        let status = leader.wait();
        assert_eq!(status.signal(), Some(9), "{state}: the leader dies by SIGKILL:\n{}", leader.output());
        let policy = names[i].clone();
        let filter = IntentFilter { policy: Some(policy), ..Default::default() };
        let left = journal.list(&filter).await.unwrap();
        assert_eq!(left.len(), 1, "{state}: one intent journaled before the kill");
        assert_eq!(left[0].state.as_str(), *state, "{state}: killed right after entering it");

        assert_eq!(follower.leading_term(), term + 1, "{state}: the standby takes the next term");
        let status = follower.wait();
        assert!(status.success(), "{state}: the standby finishes:\n{}", follower.output());
        let done = journal.list(&filter).await.unwrap();
        assert_eq!(done.len(), 1, "{state}: still one intent after the takeover");
        assert_eq!(done[0].state, IntentState::Confirmed, "{state}: the standby finished it");
        let expected = U256::from(10 + i as u64) * U256::from(1_000_000u64);
        assert_eq!(env.balance("USDC", numbered(i)).await, expected, "{state}: paid exactly once");
        assert_eq!(
            env.chain.module_nonce().await.unwrap(),
            nonce_before + U256::from(1),
            "{state}: one operation"
        );
        let op = journal.operation_of(done[0].id).await.unwrap().unwrap();
        assert_eq!(op.module_nonce, u64::try_from(nonce_before).unwrap(), "{state}: planned once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_that_wakes_after_the_takeover_can_neither_write_nor_send() {
    let policies = [PolicySpec {
        name: "paused",
        script: r#"pay("r5", "USDC", 25);"#,
        trigger: r#"{ kind = "manual" }"#,
    }];
    let mut env = AgentEnv::start(&policies).await.unwrap();
    let cluster = Postgres::start().unwrap();
    use_postgres(&mut env, &cluster);
    let journal = env.journal().await;
    let recipient: Address = numbered(5);
    let (nonce_before, keeper_before) =
        (env.chain.module_nonce().await.unwrap(), keeper_tx_count(&env).await);
    env.trigger("paused").await;

    // The leader holds its step right after committing `authorising` (its next move would be to
    // sign and send) and the whole process is stopped there: lane and lease renewal alike.
    let resume = env.dir.path().join("resume");
    let mut cmd = helper_command(&env, "TREASURY_PAUSE_AT", "authorising");
    cmd.env("TREASURY_RESUME_FILE", &resume);
    let mut leader = Replica::spawn(cmd);
    let term = leader.leading_term();
    leader.expect_line("paused after entering authorising");
    leader.signal("STOP");
    let mut follower = standby(&env);
    assert_eq!(follower.leading_term(), term + 1, "the standby takes over from the paused leader");
    assert!(follower.wait().success(), "the standby finishes:\n{}", follower.output());
    let intent = journal.list(&IntentFilter::default()).await.unwrap().remove(0);
    assert_eq!(intent.state, IntentState::Confirmed);
    let (_, events_before) = journal.intent(intent.id).await.unwrap().unwrap();

    leader.signal("CONT");
    std::fs::write(&resume, "").unwrap();
    leader.expect_line(&format!("deposed from term {term}"));
    let status = leader.wait();
    let output = leader.output();
    assert!(status.success(), "the deposed leader exits:\n{output}");
    // Which comes first after SIGCONT is a race: the held step's write (refused by the fence,
    // "write refused") or the lease renewal finding the agent deposed and stopping it before it
    // writes. Either way it must neither write nor send, which the chain and the journal show.
    assert_eq!(env.balance("USDC", recipient).await, U256::from(25_000_000u64), "paid exactly once");
    assert_eq!(env.chain.module_nonce().await.unwrap(), nonce_before + U256::from(1), "one operation");
    assert_eq!(keeper_tx_count(&env).await, keeper_before + 1, "the woken leader sent no transaction");
    let op = journal.operation_of(intent.id).await.unwrap().unwrap();
    assert_eq!(
        journal.transactions(&op.operation_id).await.unwrap().len(),
        1,
        "one keeper transaction journaled"
    );
    let (_, events_after) = journal.intent(intent.id).await.unwrap().unwrap();
    assert_eq!(events_after, events_before, "the woken leader wrote no event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_and_doubles_nothing_and_the_replica_resumes() {
    // Three triggers of three payments each: three operations, one after the other.
    let scripts: Vec<String> = (0..3)
        .map(|t| {
            (0..3).map(|k| format!(r#"pay("r{}", "USDC", {});"#, t * 2 + k % 2, 1 + t * 3 + k)).collect()
        })
        .collect();
    let names = ["load-a", "load-b", "load-c"];
    let policies: Vec<PolicySpec<'_>> = names
        .iter()
        .zip(&scripts)
        .map(|(name, script)| PolicySpec { name, script, trigger: r#"{ kind = "manual" }"# })
        .collect();
    let mut env = AgentEnv::start(&policies).await.unwrap();
    let mut cluster = Postgres::start().unwrap();
    use_postgres(&mut env, &cluster);
    let nonce_before = env.chain.module_nonce().await.unwrap();
    let mut paid_before = Vec::new();
    for i in 0..6 {
        paid_before.push(env.balance("USDC", numbered(i)).await);
    }
    for name in names {
        env.trigger(name).await;
    }

    let config = env.config.display().to_string();
    let mut replica = Replica::spawn(env.command(&["run", "--config", &config]));
    assert_eq!(replica.leading_term(), 1);
    // Mid-scenario the database goes away (immediate shutdown, as a crash) until the replica
    // notices it cannot keep its lease, then comes back on the same data.
    cluster.stop();
    replica.expect_line("deposed from term 1");
    cluster.start_again().unwrap();
    replica.expect_line("leading term 2");

    // Every intent reaches its outcome on the restarted database.
    let journal = env.journal().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    let intents = loop {
        let intents = journal.list(&IntentFilter::default()).await.unwrap();
        if intents.len() == 9 && intents.iter().all(|i| i.state == IntentState::Confirmed) {
            break intents;
        }
        assert!(
            std::time::Instant::now() < deadline && replica.child.try_wait().unwrap().is_none(),
            "not all confirmed: {intents:?}\n{}",
            replica.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    replica.signal("TERM");
    assert!(replica.wait().success(), "the replica stops cleanly:\n{}", replica.output());

    // Nothing lost, nothing doubled: each payment once, one operation per trigger.
    assert_eq!(intents.len(), 9);
    for (i, before) in paid_before.iter().enumerate() {
        let t = i / 2;
        let expected: u64 = (0..3).filter(|k| t * 2 + k % 2 == i).map(|k| 1 + t as u64 * 3 + k as u64).sum();
        let got = env.balance("USDC", numbered(i)).await - *before;
        assert_eq!(got, U256::from(expected * 1_000_000), "recipient r{i}");
    }
    let mut operations = Vec::new();
    for intent in &intents {
        let op = journal.operation_of(intent.id).await.unwrap().map(|op| op.operation_id);
        operations.push(format!("{} -> {op:?}", intent.idempotency_key));
    }
    assert_eq!(
        env.chain.module_nonce().await.unwrap(),
        nonce_before + U256::from(3),
        "three operations: {operations:#?}\n{}",
        replica.output()
    );
}

/// Moves anvil's clock by `secs` (0: none) and mines a block.
async fn mine_after(env: &AgentEnv, secs: u64) {
    let p = &env.chain.keeper;
    if secs > 0 {
        let _: serde_json::Value = p.raw_request("evm_increaseTime".into(), (secs,)).await.unwrap();
    }
    let _: serde_json::Value = p.raw_request("evm_mine".into(), ()).await.unwrap();
}

/// The keeper jobs' runs of `job`, oldest first.
async fn job_runs(
    journal: &treasury_agent::journal::Journal,
    job: &str,
) -> Vec<treasury_agent::journal::keeper::KeeperRun> {
    let mut runs = journal.keeper_runs(Some(job), 1000).await.unwrap();
    runs.sort_by_key(|r| r.id);
    runs
}

/// Waits until the upkeep's counter reads `n` and every run of the job has ended, mining a block
/// now and then; fails past [`PATIENCE`] (or when `leader` exits) with its output.
async fn wait_for_count(
    env: &AgentEnv,
    journal: &treasury_agent::journal::Journal,
    upkeep: &treasury_devnet::keeper::IUpkeepCounter::IUpkeepCounterInstance<alloy::providers::DynProvider>,
    n: u64,
    leader: &mut Replica,
) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let count = upkeep.counter().call().await.unwrap();
        let runs = job_runs(journal, "counter").await;
        if count == U256::from(n) && runs.iter().all(|r| r.state.is_final()) {
            return;
        }
        assert!(count <= U256::from(n), "performed more than once: {count} > {n}: {runs:?}");
        while let Ok(line) = leader.lines.try_recv() {
            leader.seen.push(line);
        }
        assert!(
            std::time::Instant::now() < deadline && leader.child.try_wait().unwrap().is_none(),
            "counter {count}, expected {n}: {runs:?}\n{}",
            leader.output()
        );
        mine_after(env, 0).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the keeper jobs' cursor in the journal reached the head.
async fn wait_for_keeper_cursor(
    env: &AgentEnv,
    journal: &treasury_agent::journal::Journal,
    leader: &mut Replica,
) {
    let head = env.chain.keeper.get_block_number().await.unwrap();
    let key = env.keeper.to_string().to_lowercase();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let cursor = journal.cursor(treasury_agent::keeper::CURSOR_SOURCE, &key).await.unwrap();
        if cursor.is_some_and(|c| c.block_number >= head) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "keeper cursor not at {head}:\n{}", leader.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_perform_a_counter_upkeep_once_per_interval_across_sigkills_of_the_leader() {
    use treasury_agent::journal::keeper::RunState;
    use treasury_devnet::keeper::{self as fixtures, IUpkeepCounter};

    let mut env = AgentEnv::start(&[]).await.unwrap();
    let cluster = Postgres::start().unwrap();
    use_postgres(&mut env, &cluster);
    let p = env.chain.keeper.clone();
    // Chainlink's UpkeepCounter: eligible at once, then every INTERVAL_SECS.
    let counter =
        fixtures::deploy_counter(&p, 1_000_000_000, treasury_devnet::keeper::INTERVAL_SECS).await.unwrap();
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str(&format!(
        "\n[[keeper.job]]\nname = \"counter\"\nkind = \"chainlink_upkeep\"\ntarget = \"{counter}\"\ngas_limit = 200000\ntrigger = {{ kind = \"every_blocks\", blocks = 1 }}\n"
    ));
    std::fs::write(&env.config, text).unwrap();
    let upkeep = IUpkeepCounter::new(counter, p.clone());
    let journal = env.journal().await;
    let config = env.config.display().to_string();
    let replica = || Replica::spawn(env.command(&["run", "--config", &config]));

    let mut a = replica();
    let term = a.leading_term();
    let mut b = replica();
    wait_for_count(&env, &journal, &upkeep, 1, &mut a).await;
    // More blocks within the interval: neither replica performs again.
    for _ in 0..3 {
        mine_after(&env, 0).await;
    }
    wait_for_keeper_cursor(&env, &journal, &mut a).await;
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(1), "once within the interval");

    // The leader dies between two intervals; the standby takes over and performs the next one.
    a.signal("KILL");
    assert_eq!(a.wait().signal(), Some(9));
    assert_eq!(b.leading_term(), term + 1, "the standby takes the next term");
    mine_after(&env, treasury_devnet::keeper::INTERVAL_SECS + 1).await;
    wait_for_count(&env, &journal, &upkeep, 2, &mut b).await;

    // A new standby; the leader dies as soon as the third interval's run is claimed (before or
    // after its transaction went out, whichever the kill lands on): it is performed once.
    let mut c = replica();
    c.expect_line("standing by");
    let claimed = job_runs(&journal, "counter").await.len();
    mine_after(&env, treasury_devnet::keeper::INTERVAL_SECS + 1).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while job_runs(&journal, "counter").await.len() == claimed {
        assert!(std::time::Instant::now() < deadline, "no third run claimed:\n{}", b.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.signal("KILL");
    assert_eq!(b.wait().signal(), Some(9));
    assert_eq!(c.leading_term(), term + 2);
    wait_for_count(&env, &journal, &upkeep, 3, &mut c).await;
    for _ in 0..3 {
        mine_after(&env, 0).await;
    }
    wait_for_keeper_cursor(&env, &journal, &mut c).await;
    assert_eq!(upkeep.counter().call().await.unwrap(), U256::from(3), "once per interval");
    let runs = job_runs(&journal, "counter").await;
    let confirmed = runs.iter().filter(|r| r.state == RunState::Confirmed).count();
    assert_eq!(confirmed, 3, "one confirmed run per interval: {runs:?}");
}
