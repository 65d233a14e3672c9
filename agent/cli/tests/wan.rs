//! The coordinator across wide-area links (node processes behind latency-injecting proxies): it
//! signs with the t fastest nodes, and a node that stalls costs one more round trip, not a hang.

use std::time::Duration;

use treasury_devnet::nodes::{BENCH_MODULE, BENCH_TOKEN, bench_operation};
use treasury_devnet::wan::LinkProfile;
use treasury_devnet::wan_bench::WanQuorum;
use treasury_signer::quorum::NodeFault;

const EXE: &str = env!("CARGO_BIN_EXE_treasury");

/// The configured per-request timeout: far above any link here, so a deadline that only this
/// timeout bounded would show in the fault.
const TIMEOUT: Duration = Duration::from_secs(30);

fn links(rtts_ms: &[u64]) -> Vec<LinkProfile> {
    rtts_ms.iter().map(|ms| LinkProfile::rtt(Duration::from_millis(*ms))).collect()
}

#[tokio::test]
async fn signatures_use_the_fastest_nodes_and_a_stalled_one_is_dropped_by_its_own_deadline() {
    let q = WanQuorum::start(EXE.as_ref(), 3, &links(&[120, 2, 160, 2, 2]), TIMEOUT, 64).await.unwrap();
    // Each node listens in its own network namespace, at its namespace's address (CI runs as root).
    assert_eq!(q.namespaces.len(), 5, "the nodes run in network namespaces");
    for (p, ns) in q.procs.iter().zip(&q.namespaces) {
        assert!(p.url.starts_with(&format!("http://{}:", ns.addr())), "{} in {}", p.url, ns.name());
    }
    let sign = |nonce| {
        let c = q.coordinator.clone();
        async move { c.sign_detailed(&bench_operation(BENCH_TOKEN, nonce), 31337, BENCH_MODULE, None).await }
    };
    // The first signatures measure every node; after them only the three 2 ms nodes sign.
    for nonce in 0..6 {
        sign(nonce).await.unwrap();
    }
    let fast: Vec<&String> = [1, 3, 4].iter().map(|i| &q.urls[*i]).collect();
    for nonce in 6..12 {
        let outcome = sign(nonce).await.unwrap();
        let mut signers: Vec<&String> = outcome.signers.iter().collect();
        signers.sort();
        let mut want = fast.clone();
        want.sort();
        assert_eq!(signers, want, "signature {nonce} used the fastest nodes");
        assert!(outcome.excluded.is_empty(), "{:?}", outcome.excluded);
    }

    // One of the fast nodes stalls every answer for a minute: the signature still completes,
    // with that node dropped at a deadline derived from its 2 ms estimate, not at the 30 s timeout.
    let stalled = 3;
    q.links[stalled].set_profile(LinkProfile {
        stall_probability: 1.0,
        stall: Duration::from_secs(60),
        ..LinkProfile::rtt(Duration::from_millis(2))
    });
    let outcome = sign(100).await.unwrap();
    assert!(!outcome.signers.contains(&q.urls[stalled]), "{:?}", outcome.signers);
    let (url, fault) = outcome.excluded.first().expect("the stalled node is named");
    assert_eq!(url, &q.urls[stalled]);
    let NodeFault::TimedOut(deadline) = fault else { panic!("expected a timeout, got {fault}") };
    assert!(*deadline < Duration::from_secs(1), "deadline {deadline:?} comes from the node's estimate");
    // The next signature avoids it without waiting (it is marked down).
    let next = sign(101).await.unwrap();
    assert!(next.excluded.is_empty() && !next.signers.contains(&q.urls[stalled]), "{next:?}");
    q.stop().await;
}

/// Signs `count` operations, `parallel` at a time (module nonces from `first`); returns every
/// outcome, in no particular order, or panics naming the first signature lost.
async fn sign_many(
    q: &WanQuorum,
    first: u64,
    count: u64,
    parallel: u64,
) -> Vec<treasury_signer::quorum::coordinator::SignOutcome> {
    let mut tasks = Vec::new();
    for w in 0..parallel {
        let c = q.coordinator.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for nonce in (first + w..first + count).step_by(parallel as usize) {
                let op = bench_operation(BENCH_TOKEN, nonce);
                match c.sign_detailed(&op, 31337, BENCH_MODULE, None).await {
                    Ok(o) => out.push(o),
                    Err(e) => panic!("signature {nonce} lost: {e}"),
                }
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_is_routed_around_after_one_failed_attempt() {
    let q = WanQuorum::start(EXE.as_ref(), 3, &links(&[5, 10, 15, 40, 60]), TIMEOUT, 16).await.unwrap();
    let mut q = q;
    for out in sign_many(&q, 0, 8, 1).await {
        assert!(out.excluded.is_empty(), "{:?}", out.excluded);
    }
    // The fastest node's process dies: the next signature fails over to the next fastest once.
    q.procs[0].kill().await;
    let out = sign_many(&q, 100, 1, 1).await.remove(0);
    assert!(!out.signers.contains(&q.urls[0]), "{:?}", out.signers);
    if let Some((url, fault)) = out.excluded.first() {
        assert_eq!(url, &q.urls[0]);
        assert!(fault.is_unavailable(), "down, not {fault}");
    }
    // From then on it is skipped without costing a signature anything.
    for out in sign_many(&q, 200, 10, 1).await {
        assert!(!out.signers.contains(&q.urls[0]) && out.excluded.is_empty(), "{out:?}");
    }
    q.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_turns_slow_stops_being_chosen_without_a_signature_failing() {
    let q = WanQuorum::start(EXE.as_ref(), 3, &links(&[2, 2, 2, 2, 2]), TIMEOUT, 16).await.unwrap();
    sign_many(&q, 0, 10, 1).await;
    // Node 1's link goes from 2 ms to 150 ms round trip.
    q.links[1].set_profile(LinkProfile::rtt(Duration::from_millis(150)));
    let outs = sign_many(&q, 100, 30, 1).await;
    // It signs at most a few more times (slowly, each raising its estimate), then never.
    let last: Vec<_> = outs.iter().skip(10).collect();
    for out in &last {
        assert!(!out.signers.contains(&q.urls[1]), "the slow node signs no more: {:?}", out.signers);
    }
    q.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_cost_retries_never_signatures() {
    let q = WanQuorum::start(EXE.as_ref(), 3, &links(&[3, 3, 3, 3, 3]), TIMEOUT, 16).await.unwrap();
    sign_many(&q, 0, 5, 1).await;
    // Every connection of two nodes is reset on its first chunk, and 2 % of the others' chunks.
    for (i, link) in q.links.iter().enumerate() {
        let reset_probability = if i < 2 { 1.0 } else { 0.02 };
        link.set_profile(LinkProfile { reset_probability, ..link.profile() });
    }
    let outs = sign_many(&q, 100, 40, 2).await;
    assert_eq!(outs.len(), 40);
    let excluded: Vec<_> = outs.iter().flat_map(|o| o.excluded.iter()).collect();
    assert!(
        excluded.iter().all(|(_, f)| matches!(f, NodeFault::Unreachable(_))),
        "only connection failures: {excluded:?}"
    );
    for out in &outs {
        assert!(!out.signers.contains(&q.urls[0]) && !out.signers.contains(&q.urls[1]), "{out:?}");
    }
    q.stop().await;
}

/// Issue 19's goal of zero signatures lost: a long run over links with jitter, stalled packets
/// and reset connections on every node, signatures two at a time, commitments topped up in the
/// background as they run out (only 8 are fetched ahead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_signatures_over_jitter_stalls_and_resets_lose_none() {
    let profile = |ms: u64| LinkProfile {
        one_way: Duration::from_millis(ms) / 2,
        jitter: Duration::from_millis(4),
        stall_probability: 0.005,
        stall: Duration::from_millis(300),
        reset_probability: 0.005,
        down: false,
    };
    let links: Vec<LinkProfile> = [2, 4, 6, 8, 10].into_iter().map(profile).collect();
    let q = WanQuorum::start(EXE.as_ref(), 3, &links, TIMEOUT, 8).await.unwrap();
    let outs = sign_many(&q, 0, 1000, 2).await;
    assert_eq!(outs.len(), 1000, "every signature completed");
    let retried = outs.iter().filter(|o| !o.excluded.is_empty()).count();
    assert!(retried > 0, "the faults injected made some signatures retry");
    q.stop().await;
}

/// A node whose link stays down costs one signature one failed attempt, then none: it is not
/// tried again because time passed (the earlier coordinator skipped it for 10 s, then let the
/// next signature find out again), only once the keeper's probe gets an answer; and it is chosen
/// again once its link is back, without any signature failing over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stays_down_is_tried_once_and_back_once_it_answers() {
    let q = WanQuorum::start(EXE.as_ref(), 3, &links(&[5, 10, 15, 40, 60]), TIMEOUT, 64).await.unwrap();
    for out in sign_many(&q, 0, 6, 1).await {
        assert!(out.excluded.is_empty(), "{:?}", out.excluded);
    }
    q.links[0].set_profile(LinkProfile { down: true, ..q.links[0].profile() });
    let first = sign_many(&q, 100, 1, 1).await.remove(0);
    assert!(!first.signers.contains(&q.urls[0]), "{first:?}");
    // Signatures for longer than the old 10 s: none tries the node again.
    let started = std::time::Instant::now();
    let mut nonce = 200;
    while started.elapsed() < Duration::from_secs(12) {
        let out = sign_many(&q, nonce, 1, 1).await.remove(0);
        assert!(out.excluded.is_empty(), "signature {nonce} tried the node that is down: {:?}", out.excluded);
        assert!(!out.signers.contains(&q.urls[0]), "{out:?}");
        nonce += 1;
    }
    // The link comes back: the node signs again (the keeper's probe saw it answer), and no
    // signature on the way lost an attempt.
    q.links[0].set_profile(LinkProfile { down: false, ..q.links[0].profile() });
    let back = std::time::Instant::now();
    loop {
        let out = sign_many(&q, nonce, 1, 1).await.remove(0);
        assert!(out.excluded.is_empty(), "{:?}", out.excluded);
        nonce += 1;
        if out.signers.contains(&q.urls[0]) {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(60), "the node never signed again");
    }
    q.stop().await;
}
