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
