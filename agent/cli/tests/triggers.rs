//! The trigger watcher against a real anvil: every_blocks and schedules, restart catch-up, redelivery
//! of unacknowledged firings, logs emitted while stopped, the catch-up bound, reorgs, manual
//! requests, WebSocket wake-ups with HTTP fallback, and `treasury trigger` as a process.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alloy::primitives::{Address, B256, I256};
use alloy::providers::{DynProvider, Provider};
use alloy::sol_types::SolConstructor;
use treasury_agent::journal::Journal;
use treasury_agent::trigger::{Cause, Firing, Transport, WatchOptions, Watcher};
use treasury_chain::contracts::PriceFeed;
use treasury_chain::failover::FailoverOptions;
use treasury_devnet::wan::{LatencyProxy, LinkProfile};
use treasury_devnet::{Anvil, dev_key};
use treasury_policies::{Period, PolicyEntry, Trigger};

const EVENT: &str = "AnswerUpdated(int256,uint256,uint256)";
const BIN: &str = env!("CARGO_BIN_EXE_treasury");

fn safe() -> Address {
    Address::repeat_byte(0x5a)
}

fn policy(name: &str, trigger: Trigger) -> PolicyEntry {
    PolicyEntry {
        name: name.into(),
        file: format!("{name}.rhai").into(),
        trigger,
        period: Period::Day,
        fixtures: vec![],
    }
}

fn every(name: &str, blocks: u64) -> PolicyEntry {
    policy(name, Trigger::EveryBlocks { blocks })
}

fn on_log(name: &str, address: Address) -> PolicyEntry {
    policy(name, Trigger::OnLog { address, event: EVENT.into() })
}

fn opts() -> WatchOptions {
    WatchOptions {
        ws_url: None,
        poll_interval: Duration::from_millis(20),
        max_catch_up_blocks: 10_000,
        log_range_blocks: 1000,
        ws_reconnect: Duration::from_millis(100),
    }
}

/// anvil, a provider on it, and a journal file that outlives watchers (restarts).
struct Env {
    anvil: Anvil,
    provider: DynProvider,
    _dir: tempfile::TempDir,
    journal_url: String,
}

impl Env {
    fn new() -> Self {
        let anvil = Anvil::start().unwrap();
        let provider = treasury_chain::provider::connect(anvil.url()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let journal_url = format!("sqlite://{}", dir.path().join("journal.db").display());
        Self { anvil, provider, _dir: dir, journal_url }
    }

    async fn journal(&self) -> Journal {
        Journal::open(&self.journal_url).await.unwrap()
    }

    async fn watcher(&self, policies: Vec<PolicyEntry>, opts: WatchOptions) -> Watcher {
        Watcher::new(self.provider.clone(), self.journal().await, safe(), policies, opts).await.unwrap()
    }

    async fn rpc<R: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        params: serde_json::Value,
    ) -> R {
        let value: serde_json::Value = self.provider.raw_request(method.into(), params).await.unwrap();
        serde_json::from_value(value).unwrap()
    }

    async fn mine(&self, blocks: u64) {
        let _: serde_json::Value = self.rpc("anvil_mine", serde_json::json!([format!("{blocks:#x}")])).await;
    }

    async fn mine_at(&self, timestamp: u64) {
        let _: serde_json::Value =
            self.rpc("evm_setNextBlockTimestamp", serde_json::json!([timestamp])).await;
        let _: serde_json::Value = self.rpc("evm_mine", serde_json::json!([])).await;
    }

    async fn head(&self) -> u64 {
        self.provider.get_block_number().await.unwrap()
    }

    async fn head_timestamp(&self) -> u64 {
        let b =
            self.provider.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().unwrap();
        b.header.timestamp
    }

    async fn hash_at(&self, n: u64) -> B256 {
        self.provider.get_block_by_number(n.into()).await.unwrap().unwrap().header.hash
    }

    /// A provider signing with the first dev key; a fresh one each time, so its nonce comes from
    /// the chain (also after `evm_revert`).
    fn signer(&self) -> DynProvider {
        treasury_chain::provider::connect_with_signer(self.anvil.url(), dev_key(0)).unwrap()
    }

    /// Deploys a PriceFeed (its `setAnswer` emits `AnswerUpdated`).
    async fn feed(&self) -> Address {
        let signer = self.signer();
        let args = PriceFeed::constructorCall {
            decimals_: 8,
            description_: "ETH / USD".into(),
            initialAnswer: I256::try_from(2_000_i64).unwrap(),
        };
        let mut code = PriceFeed::BYTECODE.to_vec();
        code.extend_from_slice(&args.abi_encode());
        treasury_chain::tx::deploy_code(&signer, "PriceFeed", code.into()).await.unwrap()
    }
}

/// Moves `feed` to `answer`: one transaction, one block, one `AnswerUpdated` log; returns the tx hash.
async fn set_answer(env: &Env, feed: Address, answer: i64) -> B256 {
    let signer = env.signer();
    let contract = PriceFeed::new(feed, &signer);
    let call = contract.setAnswer(I256::try_from(answer).unwrap());
    treasury_chain::tx::send_call("setAnswer", feed, call).await.unwrap().transaction_hash
}

/// One turn of the pipeline's loop with a pipeline that handles everything: poll, ack each, ack idle.
async fn drain(w: &mut Watcher) -> Vec<Firing> {
    let batch = w.poll().await.unwrap();
    for f in &batch {
        w.ack(f).await.unwrap();
    }
    w.ack_idle().await.unwrap();
    batch
}

fn labels(batch: &[Firing]) -> Vec<String> {
    batch.iter().map(Firing::label).collect()
}

fn every_blocks_at(batch: &[Firing]) -> Vec<u64> {
    batch.iter().filter(|f| f.cause == Cause::EveryBlocks).map(|f| f.block.number).collect()
}

#[tokio::test]
async fn every_blocks_fires_exactly_at_multiples_from_the_head() {
    let env = Env::new();
    env.mine(4).await;
    let start = env.head().await;
    let mut w = env.watcher(vec![every("gas", 3), every("sweep", 6)], opts()).await;
    assert_eq!(w.cursor().0, start, "first start begins at the head");
    assert!(drain(&mut w).await.is_empty(), "no history replayed");
    env.mine(13).await;
    let batch = drain(&mut w).await;
    let expected: Vec<u64> = (start + 1..=start + 13).filter(|n| n % 3 == 0).collect();
    assert_eq!(every_blocks_at(&batch), expected);
    for f in &batch {
        let want: Vec<String> =
            if f.block.number % 6 == 0 { vec!["gas".into(), "sweep".into()] } else { vec!["gas".into()] };
        assert_eq!(f.policies, want, "block {}", f.block.number);
        assert_eq!(f.block.hash, env.hash_at(f.block.number).await);
        assert_eq!(f.label(), format!("every_blocks@{}", f.block.number));
    }
    assert_eq!(w.cursor(), (start + 13, env.hash_at(start + 13).await));
    assert!(drain(&mut w).await.is_empty(), "nothing twice");
}

#[tokio::test]
async fn schedule_fires_once_per_cron_instant() {
    let env = Env::new();
    let base = (env.head_timestamp().await / 100 + 2) * 100;
    env.mine_at(base + 1).await;
    let mut w =
        env.watcher(vec![policy("tick", Trigger::Schedule { cron: "*/10 * * * * *".into() })], opts()).await;
    // Instants every 10 s: 10 is reached at +10, 20 at +25, 30 at +30; +65 crosses 40, 50 and 60 at once.
    for offset in [5, 9, 10, 11, 25, 29, 30, 65, 66] {
        env.mine_at(base + offset).await;
    }
    let unacked = w.poll().await.unwrap();
    assert_eq!(w.poll().await.unwrap(), unacked, "the same ticks, with the same labels, until acked");
    let batch = drain(&mut w).await;
    assert_eq!(batch, unacked);
    let got: Vec<(u64, u64)> = batch
        .iter()
        .map(|f| match f.cause {
            Cause::Schedule { instant } => (f.block.timestamp - base, instant - base),
            ref other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, vec![(10, 10), (25, 20), (30, 30), (65, 40)]);
    assert!(batch.iter().all(|f| f.policies == vec!["tick".to_string()]));
    assert!(drain(&mut w).await.is_empty());
}

#[tokio::test]
async fn restart_delivers_every_firing_in_the_gap_exactly_once() {
    let env = Env::new();
    let policies = vec![every("gas", 2), every("slow", 5)];
    let mut w = env.watcher(policies.clone(), opts()).await;
    let start = w.cursor().0;
    env.mine(7).await;
    let before = drain(&mut w).await;
    drop(w);
    env.mine(23).await; // the agent is down for these
    let mut w = env.watcher(policies, opts()).await;
    assert_eq!(w.cursor().0, start + 7, "resumes from the journal's cursor");
    let after = drain(&mut w).await;
    let all: Vec<u64> = before.iter().chain(&after).map(|f| f.block.number).collect();
    let expected: Vec<u64> = (start + 1..=start + 30).filter(|n| n % 2 == 0 || n % 5 == 0).collect();
    assert_eq!(all, expected, "every multiple once, across the restart");
    let unique: BTreeSet<String> = labels(&before).into_iter().chain(labels(&after)).collect();
    assert_eq!(unique.len(), expected.len());
    assert!(drain(&mut w).await.is_empty());
}

#[tokio::test]
async fn unacknowledged_firings_are_delivered_again() {
    let env = Env::new();
    let feed = env.feed().await;
    let policies = vec![every("gas", 1), on_log("feed", feed)];
    let mut w = env.watcher(policies.clone(), opts()).await;
    let start = w.cursor().0;
    env.mine(2).await;
    let tx = set_answer(&env, feed, 2_100).await; // block start + 3: an every_blocks and a log firing
    env.mine(1).await;
    let first = w.poll().await.unwrap();
    assert_eq!(
        labels(&first),
        vec![
            format!("every_blocks@{}", start + 1),
            format!("every_blocks@{}", start + 2),
            format!("every_blocks@{}", start + 3),
            format!("log@{tx}:0"),
            format!("every_blocks@{}", start + 4),
        ]
    );
    // Polled again without acks (or a crash): the same firings.
    assert_eq!(w.poll().await.unwrap(), first);
    // Ack up to the every_blocks firing of start + 3, then crash: its block still has the log un-acked.
    for f in &first[..3] {
        w.ack(f).await.unwrap();
    }
    assert_eq!(w.cursor().0, start + 2, "not past a block with an un-acked firing");
    drop(w);
    let mut w = env.watcher(policies, opts()).await;
    let again = w.poll().await.unwrap();
    assert_eq!(
        again,
        first[2..].to_vec(),
        "the un-acked log is not lost (its block's tick repeats, same label)"
    );
    for f in &again {
        w.ack(f).await.unwrap();
    }
    w.ack_idle().await.unwrap();
    assert_eq!(w.cursor().0, start + 4);
    assert!(w.poll().await.unwrap().is_empty());
}

#[tokio::test]
async fn logs_emitted_while_stopped_fire_after_restart() {
    let env = Env::new();
    let feed = env.feed().await;
    let other = env.feed().await;
    let policies = vec![on_log("derisk", feed)];
    let w = env.watcher(policies.clone(), opts()).await;
    drop(w);
    let mut sent = Vec::new();
    for answer in [1_900, 1_800, 1_700] {
        sent.push(set_answer(&env, feed, answer).await);
        set_answer(&env, other, answer).await; // same event, another contract: not watched
        env.mine(2).await;
    }
    // Small eth_getLogs ranges: the logs span several requests.
    let mut w = env.watcher(policies, WatchOptions { log_range_blocks: 2, ..opts() }).await;
    let batch = drain(&mut w).await;
    let got: Vec<B256> = batch
        .iter()
        .map(|f| match f.cause {
            Cause::Log { tx_hash, log_index, address } => {
                assert_eq!((log_index, address), (0, feed));
                assert_eq!(f.policies, vec!["derisk".to_string()]);
                tx_hash
            }
            ref other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, sent);
    assert!(drain(&mut w).await.is_empty());
}

#[tokio::test]
async fn catch_up_is_bounded_and_the_gap_reported() {
    let env = Env::new();
    let policies = vec![every("gas", 1)];
    let w = env.watcher(policies.clone(), opts()).await;
    let start = w.cursor().0;
    drop(w);
    env.mine(20).await;
    let mut w = env.watcher(policies, WatchOptions { max_catch_up_blocks: 5, ..opts() }).await;
    let batch = w.poll().await.unwrap();
    let head = start + 20;
    assert_eq!(batch[0].cause, Cause::Gap { from: start + 1, to: head - 5 });
    assert!(batch[0].policies.is_empty());
    assert_eq!(batch[0].block.number, head - 5);
    assert_eq!(every_blocks_at(&batch[1..]), (head - 4..=head).collect::<Vec<_>>());
    assert_eq!(batch.len(), 6);
    // Crash before acking the gap: it is reported again.
    drop(w);
    let mut w = env.watcher(vec![every("gas", 1)], WatchOptions { max_catch_up_blocks: 5, ..opts() }).await;
    assert_eq!(drain(&mut w).await, batch);
    assert_eq!(w.cursor().0, head);
}

#[tokio::test]
async fn reorg_rewinds_to_the_fork_and_re_examines() {
    let env = Env::new();
    let feed = env.feed().await;
    let policies = vec![on_log("derisk", feed), every("gas", 1)];
    let mut w = env.watcher(policies.clone(), opts()).await;
    let fork = w.cursor().0;
    let snapshot: serde_json::Value = env.rpc("evm_snapshot", serde_json::json!([])).await;
    let old_tx = set_answer(&env, feed, 1_000).await;
    env.mine(2).await;
    let before = drain(&mut w).await;
    assert!(labels(&before).contains(&format!("log@{old_tx}:0")));
    let old_cursor = w.cursor();
    assert_eq!(old_cursor.0, fork + 3);

    // Another branch from the fork: a different log, and one block longer.
    let reverted: bool = env.rpc("evm_revert", serde_json::json!([snapshot])).await;
    assert!(reverted);
    let new_tx = set_answer(&env, feed, 3_000).await;
    env.mine(3).await;
    assert_ne!(env.hash_at(fork + 3).await, old_cursor.1);
    let after = drain(&mut w).await;
    let mut want: Vec<String> = (fork + 1..=fork + 4).map(|n| format!("every_blocks@{n}")).collect();
    want.insert(1, format!("log@{new_tx}:0"));
    assert_eq!(labels(&after), want, "re-examined from the fork point, the new branch's log fired");
    for f in &after {
        assert_eq!(f.block.hash, env.hash_at(f.block.number).await, "firings carry the new branch's hashes");
    }
    assert_eq!(w.cursor(), (fork + 4, env.hash_at(fork + 4).await));
    assert!(drain(&mut w).await.is_empty());
}

#[tokio::test]
async fn reorg_across_a_restart_rewinds_and_loses_nothing() {
    let env = Env::new();
    let feed = env.feed().await;
    let policies = vec![on_log("derisk", feed)];
    let mut w = env.watcher(policies.clone(), opts()).await;
    let snapshot: serde_json::Value = env.rpc("evm_snapshot", serde_json::json!([])).await;
    let old_tx = set_answer(&env, feed, 1_000).await;
    env.mine(1).await;
    assert_eq!(drain(&mut w).await.len(), 1);
    drop(w);
    let _: bool = env.rpc("evm_revert", serde_json::json!([snapshot])).await;
    let new_tx = set_answer(&env, feed, 3_000).await;
    env.mine(2).await;
    // The new watcher knows only the cursor's hash: it rewinds a fixed depth (here to genesis) and
    // re-examines, so the feed's deployment log is delivered again (deduplicated downstream by label).
    let mut w = env.watcher(policies, opts()).await;
    let got = labels(&drain(&mut w).await);
    assert_eq!(got.last(), Some(&format!("log@{new_tx}:0")), "{got:?}");
    assert!(!got.contains(&format!("log@{old_tx}:0")), "{got:?}");
    assert_eq!(got.len(), 2, "the deployment's log and the new branch's: {got:?}");
    assert_eq!(w.cursor(), (env.head().await, env.hash_at(env.head().await).await));
}

#[tokio::test]
async fn manual_requests_fire_once_and_bad_ones_are_refused_with_a_reason() {
    let env = Env::new();
    let journal = env.journal().await;
    let mut w = env.watcher(vec![policy("dca", Trigger::Manual), every("gas", 1_000_000)], opts()).await;
    let ok = journal.request_manual_trigger("dca", "test").await.unwrap();
    let unknown = journal.request_manual_trigger("nope", "test").await.unwrap();
    let not_manual = journal.request_manual_trigger("gas", "test").await.unwrap();
    let batch = w.poll().await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].cause, Cause::Manual { request_id: ok.id });
    assert_eq!(batch[0].policies, vec!["dca".to_string()]);
    assert_eq!(batch[0].block.number, env.head().await);
    assert_eq!(batch[0].label(), format!("manual#{}", ok.id));
    let refused = journal.manual_trigger(unknown.id).await.unwrap().unwrap();
    assert!(refused.handled_at.is_some());
    assert!(refused.outcome.as_deref().unwrap().contains("no policy named `nope`"), "{refused:?}");
    let refused = journal.manual_trigger(not_manual.id).await.unwrap().unwrap();
    assert!(refused.outcome.as_deref().unwrap().contains("`gas` is triggered by every_blocks, not manual"));
    // Not acked: delivered again; acked: handled with its outcome, never again.
    assert_eq!(w.poll().await.unwrap(), batch);
    w.ack_with_outcome(&batch[0], "2 intents journaled").await.unwrap();
    let handled = journal.manual_trigger(ok.id).await.unwrap().unwrap();
    assert_eq!(handled.outcome.as_deref(), Some("2 intents journaled"));
    assert!(handled.handled_at.is_some());
    assert!(w.poll().await.unwrap().is_empty());
}

#[tokio::test]
async fn websocket_wakes_the_watcher_on_a_new_head() {
    let env = Env::new();
    let ws =
        WatchOptions { ws_url: Some(env.anvil.ws_url()), poll_interval: Duration::from_secs(3600), ..opts() };
    let mut w = env.watcher(vec![every("gas", 1)], ws).await;
    assert_eq!(w.transport(), Transport::Ws);
    let start = w.cursor().0;
    // With an hour between polls, only the subscription can end this wait (the guard only stops a hang).
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(w.wait_for_new_block(), env.mine(1));
    })
    .await;
    assert!(waited.is_ok(), "no wake-up from the WebSocket");
    assert_eq!(every_blocks_at(&drain(&mut w).await), vec![start + 1]);
}

#[tokio::test]
async fn dead_websocket_falls_back_to_http_polling() {
    let env = Env::new();
    let dead = WatchOptions { ws_url: Some("ws://127.0.0.1:1".into()), ..opts() };
    let mut w = env.watcher(vec![every("gas", 1)], dead).await;
    assert_eq!(w.transport(), Transport::Http);
    let start = w.cursor().0;
    env.mine(2).await;
    w.wait_for_new_block().await;
    assert_eq!(every_blocks_at(&drain(&mut w).await), vec![start + 1, start + 2]);
}

/// A TCP relay to anvil that can be cut (a WebSocket dropped while HTTP keeps working, or the
/// endpoint down for a while) and restarted on the same address.
struct Relay {
    addr: String,
    url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: &str, bind: &str) -> Self {
        let target = target.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let url = format!("ws://{addr}");
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(conn);
            }
        });
        Self { addr, url, tasks: vec![accept], conns }
    }

    /// Closes the listener and every relayed connection.
    fn cut(&mut self) {
        for t in self.tasks.drain(..).chain(self.conns.lock().unwrap().drain(..)) {
            t.abort();
        }
    }
}

#[tokio::test]
async fn dropped_websocket_falls_back_to_http_polling() {
    let env = Env::new();
    let mut relay = Relay::start(env.anvil.url(), "127.0.0.1:0").await;
    let ws = WatchOptions { ws_url: Some(relay.url.clone()), ..opts() };
    let mut w = env.watcher(vec![every("gas", 1)], ws).await;
    assert_eq!(w.transport(), Transport::Ws);
    let start = w.cursor().0;
    relay.cut();
    let mut polls = 0;
    while w.transport() == Transport::Ws {
        polls += 1;
        assert!(polls < 600, "the dropped WebSocket was never noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.mine(3).await;
    w.wait_for_new_block().await;
    assert_eq!(every_blocks_at(&drain(&mut w).await), vec![start + 1, start + 2, start + 3]);

    // The endpoint comes back: the watcher subscribes again.
    let _relay = Relay::start(env.anvil.url(), &relay.addr).await;
    let mut polls = 0;
    while w.transport() == Transport::Http {
        polls += 1;
        assert!(polls < 600, "the WebSocket was never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.mine(1).await;
    w.wait_for_new_block().await;
    assert_eq!(every_blocks_at(&drain(&mut w).await), vec![start + 4]);
}

#[tokio::test]
async fn endpoint_down_for_a_while_loses_no_block() {
    let env = Env::new();
    let mut relay = Relay::start(env.anvil.url(), "127.0.0.1:0").await;
    let via_relay = treasury_chain::provider::connect(&format!("http://{}", relay.addr)).unwrap();
    let mut w =
        Watcher::new(via_relay, env.journal().await, safe(), vec![every("gas", 1)], opts()).await.unwrap();
    let start = w.cursor().0;
    env.mine(2).await;
    assert_eq!(every_blocks_at(&drain(&mut w).await), vec![start + 1, start + 2]);
    relay.cut();
    env.mine(3).await; // mined while the watcher cannot reach the endpoint
    let err = w.poll().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(w.cursor().0, start + 2);
    let _back = Relay::start(env.anvil.url(), &relay.addr).await;
    env.mine(1).await;
    let mut attempts = 0;
    let batch = loop {
        match w.poll().await {
            Ok(batch) => break batch,
            Err(e) => {
                attempts += 1;
                assert!(attempts < 100 && e.is_retryable(), "{e}");
                w.wait_for_new_block().await;
            }
        }
    };
    for f in &batch {
        w.ack(f).await.unwrap();
    }
    w.ack_idle().await.unwrap();
    assert_eq!(every_blocks_at(&batch), (start + 3..=start + 6).collect::<Vec<_>>());
}

/// Two endpoints in front of one anvil, each behind a proxy that can go down.
async fn two_endpoints(env: &Env) -> (LatencyProxy, LatencyProxy, DynProvider) {
    let upstream = env.anvil.url().trim_start_matches("http://").parse().unwrap();
    let a = LatencyProxy::start(upstream, LinkProfile::rtt(Duration::ZERO)).await.unwrap();
    let b = LatencyProxy::start(upstream, LinkProfile::rtt(Duration::ZERO)).await.unwrap();
    let urls = [a.url().parse().unwrap(), b.url().parse().unwrap()];
    let options = FailoverOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        ..FailoverOptions::default()
    };
    (a, b, treasury_chain::provider::connect_endpoints_with(&urls, options).unwrap())
}

fn down(proxy: &LatencyProxy, down: bool) {
    proxy.set_profile(LinkProfile { down, ..proxy.profile() });
}

#[tokio::test]
async fn one_endpoint_of_two_down_leaves_no_gap_in_triggers() {
    let env = Env::new();
    let (a, b, provider) = two_endpoints(&env).await;
    let mut w =
        Watcher::new(provider, env.journal().await, safe(), vec![every("gas", 1)], opts()).await.unwrap();
    let start = w.cursor().0;
    let mut fired = Vec::new();
    env.mine(2).await;
    fired.extend(every_blocks_at(&drain(&mut w).await));
    // The endpoint in use goes down: every poll still succeeds, through the other one.
    down(&a, true);
    for _ in 0..3 {
        env.mine(1).await;
        fired.extend(every_blocks_at(&drain(&mut w).await));
    }
    // It comes back and the other one goes down.
    down(&a, false);
    down(&b, true);
    for _ in 0..3 {
        env.mine(1).await;
        fired.extend(every_blocks_at(&drain(&mut w).await));
    }
    assert_eq!(fired, (start + 1..=start + 8).collect::<Vec<_>>(), "every block fired once, in order");
    assert_eq!(w.cursor().0, start + 8);
}

/// The agent API's token in the CLI tests (the config names this variable).
const API_TOKEN: &str = "trigger-test-token";

/// The agent's HTTP API over `journal` with the policies of [`write_config`], on a free port.
async fn serve_api(journal: Journal) -> std::net::SocketAddr {
    use treasury_agent::api::{self, ApiState, ApiToken, StatusInfo};
    let state = ApiState {
        journal,
        policies: vec![policy("dca", Trigger::Manual), every("gas", 10)],
        metrics: std::sync::Arc::new(treasury_agent::metrics::Metrics::new()),
        root: None,
        status: StatusInfo {
            chain_id: 31337,
            safe: safe(),
            module: Address::repeat_byte(0x4d),
            keeper: Address::ZERO,
            version: "test".into(),
        },
        token: ApiToken::new(API_TOKEN).unwrap(),
        payments: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::serve(listener, state, std::future::pending()));
    addr
}

/// A config whose journal is `journal_url` and whose agent API listens on `api`, with a manual
/// policy `dca` and an every_blocks `gas`, naming files that do not exist.
fn write_config(dir: &Path, journal_url: &str, api: std::net::SocketAddr) -> PathBuf {
    // None of the files it names exist: `treasury trigger` runs where the agent's keystore,
    // quorum file and policies are not (a keeper's machine) and reads only `[api]`.
    let text = format!(
        r#"
[chain]
rpc_http = "http://127.0.0.1:8545"
chain_id = 31337
[safe]
address = "0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
module = "0x4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d"
[signing]
quorum_file = "quorum.json"
[journal]
url = "{journal_url}"
[keeper]
pkcs11_label = "keeper"
pkcs11_token = "keeper-token"
[api]
listen = "{api}"
token_env = "TREASURY_TEST_API_TOKEN"
[[policies.policy]]
name = "dca"
file = "dca.rhai"
trigger = {{ kind = "manual" }}
[[policies.policy]]
name = "gas"
file = "gas.rhai"
trigger = {{ kind = "every_blocks", blocks = 10 }}
"#
    );
    let path = dir.join("treasury.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).env("TREASURY_TEST_API_TOKEN", API_TOKEN).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Multi-threaded: the API this test serves keeps answering while the CLI runs (a blocking wait).
#[tokio::test(flavor = "multi_thread")]
async fn cli_queues_a_manual_trigger_and_waits_for_its_outcome() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let api = serve_api(env.journal().await).await;
    let config = write_config(dir.path(), &env.journal_url, api);
    let config = config.to_str().unwrap();

    let (ok, out, err) = run(&["trigger", "dca", "--config", config, "--json"]);
    assert!(ok, "{err}");
    let queued: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = queued["id"].as_i64().unwrap();
    assert_eq!(queued["policy"], "dca");
    assert!(queued["handled_at"].is_null());
    let open = env.journal().await.open_manual_triggers().await.unwrap();
    assert_eq!(open.iter().map(|t| (t.id, t.requested_by.as_str())).collect::<Vec<_>>(), vec![(id, "api")]);

    let (ok, _, err) = run(&["trigger", "nope", "--config", config]);
    assert!(!ok);
    assert!(err.contains("unknown policy `nope` (HTTP 404 Not Found)"), "{err}");
    let (ok, _, err) = run(&["trigger", "gas", "--config", config]);
    assert!(!ok);
    assert!(err.contains("`gas` is triggered by every_blocks, not manually"), "{err}");
    // A wrong token is refused by the agent, and the refusal says so.
    let out = Command::new(BIN)
        .args(["trigger", "dca", "--config", config])
        .env("TREASURY_TEST_API_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nobody handles it: --wait gives up and says so.
    let (ok, out, err) = run(&["trigger", "dca", "--config", config, "--wait", "1"]);
    assert!(!ok);
    assert!(out.contains("queued for policy `dca`"), "{out}");
    assert!(err.contains("not handled within 1 s"), "{err}");

    // A watcher handles the requests while `--wait` waits.
    let child = std::process::Command::new(BIN)
        .args(["trigger", "dca", "--config", config, "--wait", "120", "--json"])
        .env("TREASURY_TEST_API_TOKEN", API_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = env.watcher(vec![policy("dca", Trigger::Manual), every("gas", 10)], opts()).await;
    let mut handled = BTreeSet::new();
    let mut rounds = 0;
    while handled.len() < 3 {
        rounds += 1;
        assert!(rounds < 6000, "the waiting request never appeared");
        for f in w.poll().await.unwrap() {
            if let Cause::Manual { request_id } = f.cause {
                w.ack_with_outcome(&f, &format!("ran {}", f.label())).await.unwrap();
                handled.insert(request_id);
            }
        }
        w.wait_for_new_block().await;
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let waited_id = done["id"].as_i64().unwrap();
    assert!(handled.contains(&waited_id) && handled.contains(&id));
    assert_eq!(done["outcome"], format!("ran manual#{waited_id}"));
    assert!(done["handled_at"].is_i64());
}
