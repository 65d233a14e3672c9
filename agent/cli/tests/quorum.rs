//! The FROST quorum end to end, with every signer node a separate `treasury signer serve` process
//! on loopback: DKG, signing, refresh, and the faults a user relies on the quorum to survive.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use treasury_chain::operation::{Call, Operation, TIER_QUORUM, TIER_ROOT, operation_digest};
use treasury_devnet::nodes::{NodeProcess, bench_operation, init_nodes};
use treasury_devnet::ops::erc20_transfer;
use treasury_signer::quorum::client::NodeClient;
use treasury_signer::quorum::coordinator::{
    Coordinator, CoordinatorOptions, PinnedNode, run_dkg, run_refresh,
};
use treasury_signer::quorum::faults::SIGN_DELAYED_EVENT;
use treasury_signer::quorum::guard::{AllowEntry, Budget, GuardConfig};
use treasury_signer::quorum::identity::{IdentityKey, IdentityPublic};
use treasury_signer::quorum::node::FAULTS_ENV;
use treasury_signer::quorum::quorum_file::QuorumFile;
use treasury_signer::quorum::signature::verify_module_form;
use treasury_signer::quorum::wire::{CommitmentsRequest, CommitmentsResponse, SignRequest, SignResponse};
use treasury_signer::quorum::{NodeFault, RefusalCode};
use treasury_signer::root::escalation::FrostAuthorizer;

const EXE: &str = env!("CARGO_BIN_EXE_treasury");
const CHAIN: u64 = 31337;
/// Passphrases of the nodes and of the coordinator key in these tests.
const NPW: &str = "node passphrase for tests";
const CPW: &str = "coordinator passphrase for tests";

fn token() -> Address {
    Address::repeat_byte(0x70)
}
fn module() -> Address {
    Address::repeat_byte(0x4d)
}

fn transfer(amount: u64, nonce: u64) -> Operation {
    let deadline = treasury_signer::quorum::nonces::now() + 3600;
    erc20_transfer(token(), Address::repeat_byte(0xbe), U256::from(amount), nonce, deadline)
}

fn guard(root: Address) -> GuardConfig {
    GuardConfig {
        chain_id: CHAIN,
        module: module(),
        root: Some(root),
        period_secs: 86_400,
        allow: vec![AllowEntry { target: token(), selector: Some("0xa9059cbb".into()) }],
        spenders: vec![],
        budgets: vec![Budget { token: token(), amount: U256::from(1_000_000u64) }],
        max_deadline_secs: None,
    }
}

fn assert_valid(sig: &treasury_signer::quorum::FrostSignature, c: &Coordinator, op: &Operation) {
    assert_valid_at(sig, c, op, TIER_QUORUM);
}

/// The signature verifies over the digest of `op` at `tier`, as the module checks it.
fn assert_valid_at(sig: &treasury_signer::quorum::FrostSignature, c: &Coordinator, op: &Operation, tier: u8) {
    let digest = operation_digest(op, tier, CHAIN, module());
    assert!(
        verify_module_form(sig, c.group_key(), digest.as_slice()),
        "signature must verify as the module checks it"
    );
}

struct Quorum {
    _tmp: tempfile::TempDir,
    coord_key: IdentityKey,
    procs: Vec<NodeProcess>,
    quorum: QuorumFile,
}

/// Starts `n` node processes, node `i` with the test-only faults `spec` for each `(i, spec)` in
/// `faults` (fault injection is compiled into test builds of `treasury` only), and runs DKG.
async fn quorum(n: usize, t: u16, root: Address, faults: &[(usize, &str)]) -> Quorum {
    quorum_of(IdentityKey::generate(), n, t, root, faults).await
}

/// Like [`quorum`], with the nodes accepting `coord_key` as their coordinator.
async fn quorum_of(
    coord_key: IdentityKey,
    n: usize,
    t: u16,
    root: Address,
    faults: &[(usize, &str)],
) -> Quorum {
    let tmp = tempfile::tempdir().unwrap();
    let reports = init_nodes(tmp.path(), n, t, &coord_key, &guard(root), NPW).unwrap();
    let mut procs = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let spec = faults.iter().find(|(j, _)| *j == i).map(|(_, f)| *f);
        procs.push(spawn_node(&r.dir, spec).await);
    }
    let pinned: Vec<PinnedNode> = procs
        .iter()
        .zip(&reports)
        .map(|(p, r)| PinnedNode { url: p.url.clone(), fingerprint: r.fingerprint.clone() })
        .collect();
    let dkg = run_dkg(coord_key.clone(), "unused.key", &pinned, t, 5).await.unwrap();
    assert!(dkg.group_key.usable_onchain());
    Quorum { _tmp: tmp, coord_key, procs, quorum: dkg.quorum }
}

/// `treasury signer serve` on a free port for the node in `dir`, with test-only `faults` if any.
async fn spawn_node(dir: &str, faults: Option<&str>) -> NodeProcess {
    spawn_node_at(dir, "127.0.0.1:0", faults).await
}

/// `treasury signer serve` for the node in `dir` on `listen`.
async fn spawn_node_at(dir: &str, listen: &str, faults: Option<&str>) -> NodeProcess {
    let mut cmd = tokio::process::Command::new(EXE);
    cmd.args(["signer", "serve", "--dir", dir, "--listen", listen]).env("TREASURY_SIGNER_PASSPHRASE", NPW);
    if let Some(f) = faults {
        cmd.env(FAULTS_ENV, f);
    }
    NodeProcess::from_command(cmd, Path::new(dir)).await.unwrap()
}

fn coordinator(q: &Quorum) -> Coordinator {
    let opts = CoordinatorOptions { timeout: Duration::from_secs(3), refill: 16, ..Default::default() };
    Coordinator::new(q.quorum.clone(), q.coord_key.clone(), opts).unwrap()
}

/// A coordinator for `q` whose requests time out after `timeout` only: signers rotate and no
/// per-node deadline applies, for tests of how a node that breaks or stalls is excluded.
fn coordinator_with(q: &Quorum, timeout: Duration) -> Coordinator {
    let opts = CoordinatorOptions { timeout, refill: 16, by_latency: false };
    Coordinator::new(q.quorum.clone(), q.coord_key.clone(), opts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_completes_with_n_minus_t_nodes_killed_mid_signing() {
    // Nodes 0 and 3 hold every signing request (they never answer on their own), so the kill -9
    // below lands while a request is in flight, which each node reports before it is killed.
    let hold = "sign-delay-ms=3600000";
    let mut q = quorum(5, 3, Address::ZERO, &[(0, hold), (3, hold)]).await;
    // A timeout far beyond the test: the killed nodes are excluded because their connections
    // break, not because the coordinator gave up on them.
    let c = std::sync::Arc::new(coordinator_with(&q, Duration::from_secs(3600)));
    assert!(c.preprocess(8).await.is_empty());
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let op = transfer(1, i);
            (c.sign_detailed(&op, CHAIN, module(), None).await, op)
        }));
    }
    let killed = [q.quorum.nodes[0].url.clone(), q.quorum.nodes[3].url.clone()];
    for i in [0, 3] {
        let held = q.procs[i].wait_for_line(SIGN_DELAYED_EVENT).await;
        assert!(held.is_some(), "node {i} received a signing request and holds it");
        q.procs[i].kill().await;
    }
    let mut named = std::collections::HashSet::new();
    for t in tasks {
        let (res, op) = t.await.unwrap();
        let out = res.expect("3 of the 5 nodes remain: every signature completes");
        assert_valid(&out.signature, &c, &op);
        for (url, fault) in out.excluded {
            assert!(killed.contains(&url), "only killed nodes are excluded, not {url}");
            assert!(matches!(fault, NodeFault::Unreachable(_)), "{url}: connection lost, got {fault}");
            named.insert(url);
        }
    }
    assert_eq!(named.len(), 2, "both nodes killed mid-request were excluded from a signature");
    // and after: still fine, using the three survivors only
    let op = transfer(1, 99);
    let out = c.sign_detailed(&op, CHAIN, module(), None).await.unwrap();
    assert_valid(&out.signature, &c, &op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_is_excluded_as_timed_out_and_the_signature_completes() {
    // Node 2 accepts the connection and the request but answers an hour later.
    let q = quorum(4, 3, Address::ZERO, &[(2, "sign-delay-ms=3600000")]).await;
    let timeout = Duration::from_secs(5);
    let c = coordinator_with(&q, timeout);
    assert!(c.preprocess(8).await.is_empty(), "commitments are not delayed");
    let slow = q.quorum.nodes[2].url.clone();
    let mut named = false;
    // Signers are chosen by measured round trip: the slow node, unmeasured at signing, is asked
    // once the others' sign round trips are known (within a few signatures).
    for i in 0..10u64 {
        let op = transfer(1, i);
        let out = c.sign_detailed(&op, CHAIN, module(), None).await.expect("three prompt nodes remain");
        assert_valid(&out.signature, &c, &op);
        for (url, fault) in &out.excluded {
            assert_eq!(url, &slow, "only the slow node is excluded");
            assert!(
                matches!(fault, NodeFault::TimedOut(d) if *d <= timeout),
                "reported as timed out: {fault}"
            );
            named = true;
        }
    }
    assert!(named, "the slow node was asked at least once and reported as timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sending_a_corrupt_share_is_named_and_excluded() {
    let q = quorum(4, 3, Address::ZERO, &[(1, "corrupt-shares")]).await;
    let c = coordinator(&q);
    let bad_url = q.quorum.nodes[1].url.clone();
    let mut named = false;
    for i in 0..4u64 {
        let op = transfer(1, i);
        let out = c.sign_detailed(&op, CHAIN, module(), None).await.expect("three honest nodes remain");
        assert_valid(&out.signature, &c, &op);
        for (url, fault) in &out.excluded {
            assert_eq!(url, &bad_url, "only the corrupt node is excluded");
            assert_eq!(fault, &NodeFault::BadShare);
            named = true;
        }
    }
    assert!(named, "the corrupt node took part in at least one attempt and was named");
}

async fn commitments(client: &NodeClient, url: &str, key: &IdentityPublic, n: u32) -> CommitmentsResponse {
    client
        .post(url, key, "/v1/commitments", &CommitmentsRequest { count: n }, Duration::from_secs(5))
        .await
        .unwrap()
}

fn package(entries: &[(&str, &str)], msg: &[u8]) -> String {
    use frost_secp256k1 as frost;
    let map = entries
        .iter()
        .map(|(id, c)| {
            (
                frost::Identifier::deserialize(&hex::decode(id).unwrap()).unwrap(),
                frost::round1::SigningCommitments::deserialize(&hex::decode(c).unwrap()).unwrap(),
            )
        })
        .collect();
    hex::encode(frost::SigningPackage::new(map, msg).serialize().unwrap())
}

async fn sign_raw(
    client: &NodeClient,
    url: &str,
    key: &IdentityPublic,
    req: &SignRequest,
) -> Result<SignResponse, NodeFault> {
    client.post(url, key, "/v1/sign", req, Duration::from_secs(5)).await
}

fn refused(r: Result<SignResponse, NodeFault>) -> (RefusalCode, String) {
    match r {
        Err(NodeFault::Refused(r)) => (r.code, r.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_bad_requests_with_reasons_and_survive_restart() {
    let root = PrivateKeySigner::random();
    let mut q = quorum(3, 2, root.address(), &[]).await;
    let client = NodeClient::new(q.coord_key.clone());
    let (a, b) = (q.quorum.nodes[0].clone(), q.quorum.nodes[1].clone());
    let (ka, kb) = (
        IdentityPublic::from_hex(&a.identity_key).unwrap(),
        IdentityPublic::from_hex(&b.identity_key).unwrap(),
    );
    let ca = commitments(&client, &a.url, &ka, 4).await;
    let cb = commitments(&client, &b.url, &kb, 4).await;
    let op = transfer(5, 1);
    let digest = operation_digest(&op, TIER_QUORUM, CHAIN, module());
    let pkg = |i: usize, msg: &[u8]| {
        package(
            &[
                (&ca.identifier, &ca.commitments[i].commitments),
                (&cb.identifier, &cb.commitments[i].commitments),
            ],
            msg,
        )
    };
    let req = |op: &Operation, chain_id: u64, module: Address, signing_package: String| SignRequest {
        operation: op.clone(),
        chain_id,
        module,
        root_signature: None,
        signing_package,
        decision: None,
    };

    // a valid request is answered; the same package replayed is refused (commitment used)
    let good = req(&op, CHAIN, module(), pkg(0, digest.as_slice()));
    sign_raw(&client, &a.url, &ka, &good).await.expect("valid request signs");
    assert_eq!(refused(sign_raw(&client, &a.url, &ka, &good).await).0, RefusalCode::UsedCommitment);
    // the used commitment under another operation: still refused
    let op2 = transfer(5, 2);
    let reuse =
        req(&op2, CHAIN, module(), pkg(0, operation_digest(&op2, TIER_QUORUM, CHAIN, module()).as_slice()));
    assert_eq!(refused(sign_raw(&client, &a.url, &ka, &reuse).await).0, RefusalCode::UsedCommitment);
    // another node's commitment placed under this node's identifier
    let stolen = package(
        &[(&ca.identifier, &cb.commitments[1].commitments), (&cb.identifier, &cb.commitments[2].commitments)],
        digest.as_slice(),
    );
    assert_eq!(
        refused(sign_raw(&client, &a.url, &ka, &req(&op, CHAIN, module(), stolen)).await).0,
        RefusalCode::UnknownCommitment
    );
    // the signing package's message is not this operation's digest
    let (code, reason) = refused(
        sign_raw(&client, &a.url, &ka, &req(&op, CHAIN, module(), pkg(1, B256::repeat_byte(7).as_slice())))
            .await,
    );
    assert_eq!(code, RefusalCode::DigestMismatch, "{reason}");
    // wrong chain id, wrong module (package message matches what the coordinator claims)
    let p = pkg(2, operation_digest(&op, TIER_QUORUM, 1, module()).as_slice());
    assert_eq!(
        refused(sign_raw(&client, &a.url, &ka, &req(&op, 1, module(), p)).await).0,
        RefusalCode::WrongChain
    );
    let other = Address::repeat_byte(0x99);
    let p = pkg(3, operation_digest(&op, TIER_QUORUM, CHAIN, other).as_slice());
    assert_eq!(
        refused(sign_raw(&client, &a.url, &ka, &req(&op, CHAIN, other, p)).await).0,
        RefusalCode::WrongModule
    );

    // over budget and not allow-listed: refused through the coordinator with the guard's reason
    let c = coordinator(&q);
    let big = transfer(2_000_000, 3);
    let err = c.sign(&big, CHAIN, module(), None).await.unwrap_err();
    assert!(err.is_policy_denial(), "{err}");
    assert!(err.to_string().contains("exceeds the budget"), "{err}");
    // the same through the escalation path's FrostAuthorizer: a policy denial, not a retryable fault
    let frost: &dyn FrostAuthorizer = &c;
    let err = frost.sign_operation(&big, CHAIN, module(), None).await.unwrap_err();
    assert!(err.is_policy_denial() && !err.is_retryable(), "{err}");
    let small = transfer(1, 5);
    let sig = frost.sign_operation(&small, CHAIN, module(), None).await.expect("tier 1 signs");
    assert_valid(&sig, &c, &small);
    let stranger = Operation {
        calls: vec![Call::new(Address::repeat_byte(0x12), U256::from(1), Vec::new())],
        ..transfer(1, 4)
    };
    assert!(
        c.sign(&stranger, CHAIN, module(), None).await.unwrap_err().to_string().contains("not allow-listed")
    );
    // tier 2: with the root's signature over the same digest it signs; a signature over another digest does not
    let d = operation_digest(&stranger, TIER_ROOT, CHAIN, module());
    let wrong = root.sign_hash_sync(&B256::repeat_byte(1)).unwrap().as_bytes();
    assert!(c.sign(&stranger, CHAIN, module(), Some(&wrong)).await.is_err());
    let rs = root.sign_hash_sync(&d).unwrap().as_bytes();
    let sig = c.sign(&stranger, CHAIN, module(), Some(&rs)).await.expect("tier 2 with the root signature");
    assert_valid_at(&sig, &c, &stranger, TIER_ROOT);

    // unauthenticated: no header, and a header from a key that is not the configured coordinator
    let http = reqwest::Client::new();
    let r = http.post(format!("{}/v1/sign", a.url)).json(&good).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let intruder = NodeClient::new(IdentityKey::generate());
    let fresh = req(&op, CHAIN, module(), pkg(1, digest.as_slice()));
    assert_eq!(refused(sign_raw(&intruder, &a.url, &ka, &fresh).await).0, RefusalCode::Unauthenticated);

    // refusals are recorded by the node
    let log = std::fs::read_to_string(PathBuf::from(&q.procs[0].dir).join("refusals.jsonl")).unwrap();
    for code in [
        "used_commitment",
        "unknown_commitment",
        "digest_mismatch",
        "wrong_chain",
        "wrong_module",
        "unauthenticated",
    ] {
        assert!(log.contains(code), "refusal {code} recorded");
    }

    // kill -9 and restart node a: the share survives; no nonce made before the restart signs
    // again, used or not (a restored backup or a cloned directory revives none)
    q.procs[0].kill().await;
    let restarted = spawn_node(&q.procs[0].dir.display().to_string(), None).await;
    assert_eq!(refused(sign_raw(&client, &restarted.url, &ka, &good).await).0, RefusalCode::UsedCommitment);
    let unused = req(&op, CHAIN, module(), pkg(1, digest.as_slice()));
    assert_eq!(refused(sign_raw(&client, &restarted.url, &ka, &unused).await).0, RefusalCode::UsedCommitment);
    // fresh commitments from the restarted node sign
    let fresh_a = commitments(&client, &restarted.url, &ka, 1).await;
    let fresh_b = commitments(&client, &b.url, &kb, 1).await;
    let pkg_fresh = package(
        &[
            (&fresh_a.identifier, &fresh_a.commitments[0].commitments),
            (&fresh_b.identifier, &fresh_b.commitments[0].commitments),
        ],
        digest.as_slice(),
    );
    sign_raw(&client, &restarted.url, &ka, &req(&op, CHAIN, module(), pkg_fresh))
        .await
        .expect("a nonce made after the restart signs");
    // a second process on the same directory is refused
    let out = Command::new(EXE)
        .args(["signer", "serve", "--dir", &q.procs[0].dir.display().to_string(), "--listen", "127.0.0.1:0"])
        .env("TREASURY_SIGNER_PASSPHRASE", NPW)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another signer process"));
    q.procs[0] = restarted;
}

/// Kills the node processes it holds when dropped, so a failing test leaves no process behind.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The quorum commands with relative file names (`--out coord.key`, `--dir node1`, `--out
/// quorum.toml`), DKG refresh and a wrong passphrase; the README's whole walk-through runs in
/// `tests/readme.rs`.
#[test]
fn cli_dkg_refresh_and_wrong_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out =
            Command::new(EXE).current_dir(tmp.path()).args(args).envs(envs.iter().copied()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let key_file = tmp.path().join("coord.key");
    let (ok, out, err) = run(
        &["signer", "coordinator-key", "--out", "coord.key"],
        &[("TREASURY_COORDINATOR_PASSPHRASE", CPW)],
    );
    assert!(ok, "{err}");
    let coord: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let coord_pub = coord["coordinator_key"].as_str().unwrap().to_string();
    let module_s = module().to_string();
    let allow = format!("{}:0xa9059cbb", token());
    // Nodes sign a tier-1 outflow only of an asset they budget themselves.
    let budget = format!("{}:1000000", token());
    let mut nodes = Vec::new();
    let mut children = Children(Vec::new());
    for i in 0..3 {
        let name = format!("node{}", i + 1);
        let dir = tmp.path().join(&name);
        let (ok, out, err) = run(
            &[
                "signer",
                "init",
                "--dir",
                &name,
                "--coordinator",
                &coord_pub,
                "--chain-id",
                "31337",
                "--module",
                &module_s,
                "--allow",
                &allow,
                "--budget",
                &budget,
                "--replay",
                "off",
            ],
            &[("TREASURY_SIGNER_PASSPHRASE", NPW)],
        );
        assert!(ok, "{err}");
        let rep: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let mut child = std::process::Command::new(EXE)
            .current_dir(tmp.path())
            .args(["signer", "serve", "--dir", &name, "--listen", "127.0.0.1:0"])
            .env("TREASURY_SIGNER_PASSPHRASE", NPW)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        nodes.push((
            format!("http://{}#{}", v["listening"].as_str().unwrap(), rep["fingerprint"].as_str().unwrap()),
            dir,
        ));
        children.0.push(child);
    }
    // each operator pins the roster (threshold and the fingerprints confirmed out of band)
    let fingerprints: Vec<String> =
        nodes.iter().map(|(s, _)| s.split('#').nth(1).unwrap().to_string()).collect();
    for i in 0..3 {
        let name = format!("node{}", i + 1);
        let mut args = vec!["signer", "pin", "--dir", name.as_str(), "--threshold", "2"];
        for f in &fingerprints {
            args.extend(["--peer", f.as_str()]);
        }
        let (ok, _, err) = run(&args, &[("TREASURY_SIGNER_PASSPHRASE", NPW)]);
        assert!(ok, "{err}");
    }
    let quorum_path = tmp.path().join("quorum.toml");
    let mut args =
        vec!["dkg", "--threshold", "2", "--coordinator-key", "coord.key", "--out", "quorum.toml", "--json"];
    for (s, _) in &nodes {
        args.extend(["--signer", s.as_str()]);
    }
    // a wrong pinned fingerprint is caught before anything is sent
    let tampered = format!("{}#{}", nodes[0].0.split('#').next().unwrap(), "00".repeat(16));
    let pos = args.iter().position(|a| *a == nodes[0].0.as_str()).unwrap();
    let mut bad = args.clone();
    bad[pos] = &tampered;
    let (ok, _, err) = run(&bad, &[("TREASURY_COORDINATOR_PASSPHRASE", CPW)]);
    assert!(!ok && err.contains("not the pinned"), "{err}");
    let (ok, out, err) = run(&args, &[("TREASURY_COORDINATOR_PASSPHRASE", CPW)]);
    assert!(ok, "{err}");
    let dkg: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let q = QuorumFile::load(&quorum_path).unwrap();
    assert_eq!(dkg["group_key"].as_str().unwrap(), q.group_key);
    q.verify_attestations(&fingerprints).expect("every node attests the group key and roster");
    assert!(q.verify_attestations(&fingerprints[..2]).is_err(), "a node the operator did not pin is refused");
    assert_eq!(q.group_key_parity as u64, dkg["group_key_parity"].as_u64().unwrap());
    let (ok, out, err) = run(
        &["dkg", "refresh", "--quorum", "quorum.toml", "--json"],
        &[("TREASURY_COORDINATOR_PASSPHRASE", CPW)],
    );
    assert!(ok, "{err}");
    let refreshed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(refreshed["group_key"], dkg["group_key"], "refresh keeps the group key");
    let q2 = QuorumFile::load(&quorum_path).unwrap();
    assert_ne!(q2.public_key_package, q.public_key_package, "refresh rotates the shares");
    q2.verify_attestations(&fingerprints).expect("the nodes attest again after refresh");
    // the refreshed quorum signs, verified as the module verifies
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = treasury_signer::quorum::store::open_coordinator_key(
        &key_file,
        &treasury_signer::quorum::store::Passphrase::new(CPW),
    )
    .unwrap();
    let c = Coordinator::new(q2, key, CoordinatorOptions::default()).unwrap();
    let op = bench_operation(token(), 1);
    let sig = rt.block_on(c.sign(&op, CHAIN, module(), None)).unwrap();
    assert_valid(&sig, &c, &op);
    // wrong passphrase: clear error, store untouched
    drop(children);
    let secrets = nodes[0].1.join("secrets.enc");
    let before = std::fs::read(&secrets).unwrap();
    let (ok, _, err) = run(
        &["signer", "serve", "--dir", nodes[0].1.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[("TREASURY_SIGNER_PASSPHRASE", "not the node passphrase")],
    );
    assert!(!ok);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert_eq!(before, std::fs::read(&secrets).unwrap());
}

/// Attack (issue 13 item 10): a refresh whose commit fails on one node (its disk fails, or a
/// coordinator stops half-way) must not leave the nodes on different share generations: the
/// quorum still signs with the shares of its quorum file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_fails_part_way_leaves_every_node_on_the_old_shares() {
    let q = quorum(3, 2, Address::ZERO, &[(2, "refuse-refresh-commit")]).await;
    let err =
        run_refresh(q.coord_key.clone(), &q.quorum).await.expect_err("node 2 refuses the refresh commit");
    assert!(err.to_string().contains("refresh commit refused"), "{err}");
    // The coordinator keeps the old quorum file: every pair of nodes still signs under it.
    every_pair_signs(&q.quorum, &q.coord_key, 100).await;
}

/// A request as a man in the middle between coordinator and node saw it.
#[derive(Clone)]
struct Intercepted {
    path: String,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
}

/// A man in the middle in front of one node: it records every request, and delivers the first two
/// `/v1/sign` requests in swapped order (the first is held until the second has been answered).
struct Mitm {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Intercepted>>>,
    /// Arrival indices of the `/v1/sign` requests, in the order they were delivered.
    delivered: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

#[derive(Clone)]
struct MitmState {
    node: String,
    http: reqwest::Client,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Intercepted>>>,
    delivered: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    signs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    second_answered: std::sync::Arc<tokio::sync::Notify>,
}

async fn mitm(node: &str) -> Mitm {
    let state = MitmState {
        node: node.to_string(),
        http: reqwest::Client::new(),
        seen: Default::default(),
        delivered: Default::default(),
        signs: Default::default(),
        second_answered: Default::default(),
    };
    let (seen, delivered) = (state.seen.clone(), state.delivered.clone());
    let app = axum::Router::new().fallback(relay).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Mitm { url, seen, delivered }
}

/// `headers` without those that describe one hop (host, length, connection), which the next hop sets.
fn hop_free(headers: &axum::http::HeaderMap) -> axum::http::HeaderMap {
    let mut h = headers.clone();
    for name in [
        axum::http::header::HOST,
        axum::http::header::CONTENT_LENGTH,
        axum::http::header::TRANSFER_ENCODING,
        axum::http::header::CONNECTION,
    ] {
        h.remove(name);
    }
    h
}

async fn relay(
    axum::extract::State(s): axum::extract::State<MitmState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, axum::http::HeaderMap, axum::body::Bytes) {
    let path = uri.path().to_string();
    s.seen.lock().unwrap().push(Intercepted {
        path: path.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let sign_index = (path == "/v1/sign").then(|| s.signs.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    if sign_index == Some(0) {
        s.second_answered.notified().await;
    }
    if let Some(i) = sign_index {
        s.delivered.lock().unwrap().push(i);
    }
    let forwarded = hop_free(&headers);
    let res = s
        .http
        .request(method, format!("{}{}", s.node, path))
        .headers(forwarded)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let headers = hop_free(res.headers());
    let body = res.bytes().await.unwrap();
    if sign_index == Some(1) {
        s.second_answered.notify_one();
    }
    (status, headers, body)
}

/// Compromise matrix, network attacker between coordinator and nodes: it delivers two signing
/// requests to a node in swapped order, then replays every request it recorded. Both signatures
/// complete and verify, every replay is refused as such, and the quorum keeps signing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_attacker_reordering_and_replaying_requests_gets_nothing_and_the_quorum_completes() {
    let mut q = quorum(3, 3, Address::ZERO, &[]).await;
    let node0 = q.quorum.nodes[0].url.clone();
    let attacker = mitm(&node0).await;
    q.quorum.nodes[0].url = attacker.url.clone();
    let c = coordinator(&q);

    // Every signature needs all three nodes, so both go through the man in the middle.
    let (op_a, op_b) = (transfer(1, 1), transfer(2, 2));
    let (a, b) = tokio::join!(c.sign(&op_a, CHAIN, module(), None), c.sign(&op_b, CHAIN, module(), None));
    assert_valid(&a.expect("the first signing completes although delivered second"), &c, &op_a);
    assert_valid(&b.expect("the second signing completes"), &c, &op_b);
    assert_eq!(*attacker.delivered.lock().unwrap(), vec![1, 0], "the two sign requests were swapped");

    // Replays of everything recorded, straight to the node: refused as replays.
    let recorded = attacker.seen.lock().unwrap().clone();
    assert!(recorded.iter().filter(|r| r.path == "/v1/sign").count() >= 2, "signing went through");
    let http = reqwest::Client::new();
    for r in recorded.iter().filter(|r| r.path != "/v1/health") {
        let headers = hop_free(&r.headers);
        let method = if r.path == "/v1/identity" { reqwest::Method::GET } else { reqwest::Method::POST };
        let res = http
            .request(method, format!("{node0}{}", r.path))
            .headers(headers)
            .body(r.body.clone())
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(!status.is_success() && text.contains("replayed"), "replay of {}: {status} {text}", r.path);
    }

    // The quorum still signs, through the same node.
    let op_c = transfer(3, 3);
    assert_valid(&c.sign(&op_c, CHAIN, module(), None).await.expect("the quorum still signs"), &c, &op_c);
}

/// Compromise matrix, one malicious node: in DKG it sends one peer a round-2 share meant for
/// another (not the one its round-1 commitment promises that peer). DKG fails, the refusal names
/// the equivocating node's identifier, and no node keeps a share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_equivocating_in_dkg_is_named_and_no_node_keeps_a_share() {
    let tmp = tempfile::tempdir().unwrap();
    let coord_key = IdentityKey::generate();
    let reports = init_nodes(tmp.path(), 3, 2, &coord_key, &guard(Address::ZERO), NPW).unwrap();
    let mut procs = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        procs.push(spawn_node(&r.dir, (i == 2).then_some("dkg-equivocate")).await);
    }
    let pinned: Vec<PinnedNode> = procs
        .iter()
        .zip(&reports)
        .map(|(p, r)| PinnedNode { url: p.url.clone(), fingerprint: r.fingerprint.clone() })
        .collect();
    let Err(err) = run_dkg(coord_key.clone(), "unused.key", &pinned, 2, 5).await else {
        panic!("DKG with an equivocating node completed");
    };
    let culprit =
        treasury_signer::quorum::dkg::identifier_hex(&frost_secp256k1::Identifier::try_from(3u16).unwrap());
    let text = format!("{err:#}");
    assert!(text.contains(&format!("round-2 share from {culprit}")), "{text}");
    let client = NodeClient::new(coord_key);
    for p in &procs {
        let info = client.identity(&p.url, Duration::from_secs(10)).await.unwrap();
        assert_eq!(info.group_key, None, "{} kept a share", p.url);
    }
}

/// A refresh whose activation fails on one node (refused once, as a node briefly unreachable):
/// the coordinator retries that node, the refresh completes, and every pair of nodes signs under
/// the refreshed quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_activation_failing_once_is_retried_and_completes() {
    let q = quorum(3, 2, Address::ZERO, &[(2, "refuse-activate-once")]).await;
    let refreshed = run_refresh(q.coord_key.clone(), &q.quorum).await.expect("activation is retried");
    assert_eq!(refreshed.quorum.group_key, q.quorum.group_key);
    every_pair_signs(&refreshed.quorum, &q.coord_key, 200).await;
}

/// A node that goes down between staging and activation (it exits as its activation arrives):
/// `treasury dkg refresh` names it and saves the refreshed quorum file with it pending; then
/// `treasury dkg refresh --activate ID` refuses an unknown id, names the node while it is still
/// down, activates it once it is up again, and succeeds again as a no-op. Afterwards every pair
/// of nodes signs with the new shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_at_refresh_activation_is_activated_later_by_the_command() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("coord.key");
    let pass = treasury_signer::quorum::store::Passphrase::new(CPW);
    treasury_signer::quorum::store::create_coordinator_key(&key_file, &pass).unwrap();
    let coord_key = treasury_signer::quorum::store::open_coordinator_key(&key_file, &pass).unwrap();
    let mut q = quorum_of(coord_key, 3, 2, Address::ZERO, &[(2, "exit-at-activate")]).await;
    let quorum_path = keys.path().join("quorum.toml");
    let mut file = q.quorum.clone();
    file.coordinator_key = key_file.display().to_string();
    file.save(&quorum_path).unwrap();
    let down = file.nodes[2].url.clone();
    let dkg = |args: &[&str]| {
        let out = Command::new(EXE)
            .arg("dkg")
            .args(args)
            .args(["--quorum", quorum_path.to_str().unwrap()])
            .env("TREASURY_COORDINATOR_PASSPHRASE", CPW)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let (ok, _, err) = tokio::task::block_in_place(|| dkg(&["refresh"]));
    assert!(!ok, "the refresh cannot activate the node that went down");
    let refreshed = QuorumFile::load(&quorum_path).unwrap();
    let record = refreshed.refresh.clone().expect("the refresh is recorded");
    assert_eq!(record.pending, vec![down.clone()], "{err}");
    assert!(err.contains(&down) && err.contains(&format!("--activate {}", record.id)), "{err}");
    assert_ne!(
        refreshed.public_key_package, file.public_key_package,
        "the activated nodes' new shares are kept"
    );
    assert!(q.procs[2].wait_for_line("never printed").await.is_none(), "node 2 exited");

    let (ok, _, err) = tokio::task::block_in_place(|| dkg(&["refresh", "--activate", "00ff"]));
    assert!(!ok && err.contains("unknown refresh id 00ff") && err.contains(&record.id), "{err}");
    let (ok, _, err) = tokio::task::block_in_place(|| dkg(&["refresh", "--activate", &record.id]));
    assert!(!ok && err.contains(&down) && err.contains("not activated on"), "{err}");
    assert_eq!(QuorumFile::load(&quorum_path).unwrap().refresh.unwrap().pending, vec![down.clone()]);

    let dir = q.procs[2].dir.display().to_string();
    q.procs[2] = spawn_node_at(&dir, down.trim_start_matches("http://"), None).await;
    let (ok, out, err) =
        tokio::task::block_in_place(|| dkg(&["refresh", "--activate", &record.id, "--json"]));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["activated"], serde_json::json!([down]), "{out}");
    let (ok, out, err) =
        tokio::task::block_in_place(|| dkg(&["refresh", "--activate", &record.id, "--json"]));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "already active on every node", "{out}");

    let done = QuorumFile::load(&quorum_path).unwrap();
    assert!(done.refresh.as_ref().is_some_and(|r| r.id == record.id && r.pending.is_empty()));
    every_pair_signs(&done, &q.coord_key, 300).await;
}

/// Each pair of a 3-node `quorum` signs (module nonces from `first_nonce`), verified as the module
/// verifies.
async fn every_pair_signs(quorum: &QuorumFile, coord_key: &IdentityKey, first_nonce: u64) {
    for skip in 0..3 {
        let mut only = quorum.clone();
        only.nodes.remove(skip);
        let c = Coordinator::new(
            only,
            coord_key.clone(),
            CoordinatorOptions { timeout: Duration::from_secs(5), refill: 4, ..Default::default() },
        )
        .unwrap();
        let op = transfer(1, first_nonce + skip as u64);
        let sig =
            c.sign(&op, CHAIN, module(), None).await.unwrap_or_else(|e| panic!("nodes without {skip}: {e}"));
        assert_valid(&sig, &c, &op);
    }
}

/// Issue 17: systemd stops a node with SIGTERM. A signing request in flight at that moment is
/// answered (a valid share, its nonce erased) before the node exits, and the exit is clean (0),
/// not a death by signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_signing_request_in_flight_finish_then_exits_zero() {
    // 2-of-2: node 0 takes part in every signature, and holds each request 1.5 s first.
    let mut q = quorum(2, 2, Address::ZERO, &[(0, "sign-delay-ms=1500")]).await;
    let c = std::sync::Arc::new(coordinator_with(&q, Duration::from_secs(3600)));
    let op = transfer(1, 0);
    let signing = {
        let (c, op) = (c.clone(), op.clone());
        tokio::spawn(async move { c.sign_detailed(&op, CHAIN, module(), None).await })
    };
    assert!(q.procs[0].wait_for_line(SIGN_DELAYED_EVENT).await.is_some(), "node 0 holds the request");
    let status = q.procs[0].terminate().await.unwrap();
    let out = signing.await.unwrap().expect("the request in flight is answered before the node exits");
    assert_valid(&out.signature, &c, &op);
    assert!(out.excluded.is_empty(), "{:?}", out.excluded);
    assert_eq!(status.code(), Some(0), "SIGTERM ends the node cleanly: {status:?}");
}

/// Issue 17: a node serves Prometheus metrics on its own listener (`--metrics-listen`): the
/// signatures it answered, its refusals by route and reason, and the nonces it has left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_its_signatures_refusals_and_nonces_as_metrics() {
    use tokio::io::AsyncBufReadExt;
    let mut q = quorum(2, 2, Address::ZERO, &[]).await;
    // Restart node 1 at the same address with a metrics listener.
    let dir = q.procs[1].dir.clone();
    let listen = q.procs[1].url.trim_start_matches("http://").to_string();
    q.procs[1].kill().await;
    let mut child = tokio::process::Command::new(EXE)
        .args(["signer", "serve", "--dir", dir.to_str().unwrap(), "--listen", &listen])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("TREASURY_SIGNER_PASSPHRASE", NPW)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    let metrics_url = format!("http://{}/metrics", first["metrics"].as_str().expect("the metrics address"));

    let c = coordinator(&q);
    let op = transfer(1, 0);
    assert_valid(&c.sign_detailed(&op, CHAIN, module(), None).await.unwrap().signature, &c, &op);
    let over_budget = transfer(2_000_000, 1);
    assert!(c.sign_detailed(&over_budget, CHAIN, module(), None).await.is_err(), "over the nodes' budget");

    // The coordinator gives up at the first refusal; this node's may still be on its way.
    let mut text = String::new();
    for _ in 0..200 {
        text = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
        if text.contains(r#"route="/v1/sign""#) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(text.contains("treasury_node_signatures_total 1\n"), "{text}");
    let refusal = text
        .lines()
        .find(|l| l.starts_with("treasury_node_refusals_total{") && l.contains(r#"route="/v1/sign""#))
        .unwrap_or_else(|| panic!("a refusal on /v1/sign: {text}"));
    assert!(refusal.ends_with(" 1"), "{refusal}");
    let left = text.lines().find(|l| l.starts_with("treasury_node_nonces_left ")).expect("nonces left");
    let left: i64 = left.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(left > 0, "the coordinator's refill left nonces: {text}");
    assert!(text.contains("treasury_node_sign_duration_seconds_count 1\n"), "{text}");
}
