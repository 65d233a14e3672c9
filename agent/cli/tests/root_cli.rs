//! `treasury root` as a process: init against SoftHSM2 checked by `pkcs11-tool`, the service over
//! HTTP with its guard, approvals from the CLI and the API, expiry, and the HSM unplugged.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alloy::primitives::{Address, U256, keccak256};
use alloy::sol_types::SolCall;
use treasury_chain::contracts::IERC20;
use treasury_chain::{Call, Operation, TIER_ROOT, operation_digest};
use treasury_signer::root::guard::GuardRule;
use treasury_signer::root::store::RequestState;
use treasury_signer::root::{EscalationRequest, RootClient, RootError};

#[path = "common/softhsm.rs"]
mod softhsm;
use softhsm::{MODULE, Service, SoftHsm, serve};

const PIN: &str = "424242";
const SO_PIN: &str = "87654321";
const CHAIN: u64 = 31337;

fn module_addr() -> Address {
    Address::repeat_byte(0x4d)
}
fn usdc() -> Address {
    Address::repeat_byte(0xaa)
}
fn alice() -> Address {
    Address::repeat_byte(0x01)
}

/// A private SoftHSM2 and working directory.
struct Env {
    hsm: SoftHsm,
}

impl Env {
    fn new() -> Self {
        Self { hsm: SoftHsm::new() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.hsm.command(PIN, SO_PIN, args)
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
        let out = self.cmd(args).envs(envs.iter().copied()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn init(&self) -> Address {
        let (ok, out, err) = self.run(&["root", "init", "--token", "root-token", "--key", "root", "--json"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["address"].as_str().unwrap().parse().unwrap()
    }

    fn token(&self, name: &str, role: &str) -> (String, String) {
        let (ok, out, err) = self.run(&["root", "new-token", "--name", name, "--role", role]);
        assert!(ok, "{err}");
        (out.trim().to_owned(), err)
    }

    /// Writes a service config and returns (path, requester token, approver token).
    fn config(&self, module: &Path, address: Address, ttl: u64) -> (PathBuf, String, String) {
        let (agent, agent_entry) = self.token("agent", "requester");
        let (alice_tok, alice_entry) = self.token("alice", "approver");
        let text = format!(
            r#"db = "{db}"
approval_ttl_secs = {ttl}
retry_interval_ms = 50

[hsm]
module = "{module}"
token = "root-token"
key = "root"
address = "{address}"

[guard]
recipients = ["{alice}"]

[[guard.modules]]
chain_id = {CHAIN}
module = "{m}"

[[guard.assets]]
token = "{usdc}"
max_single = "1000"
period_cap = "100000"
period_secs = 86400
auto_approve_max = "10"

{agent_entry}
{alice_entry}
"#,
            db = self.hsm.path().join("queue.sqlite").display(),
            module = module.display(),
            alice = alice(),
            m = module_addr(),
            usdc = usdc(),
        );
        let path = self.hsm.path().join("root.toml");
        std::fs::write(&path, text).unwrap();
        (path, agent, alice_tok)
    }

    fn serve(&self, config: &Path) -> Service {
        serve(self.cmd(&["root", "serve", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"]))
    }
}

fn pay(amount: u64, nonce: u64) -> Operation {
    let data = IERC20::transferCall { to: alice(), amount: U256::from(amount) }.abi_encode();
    let deadline =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    Operation {
        calls: vec![Call::new(usdc(), U256::ZERO, data)],
        nonce: U256::from(nonce),
        deadline: U256::from(deadline),
    }
}

fn request(op: &Operation) -> EscalationRequest {
    EscalationRequest::operation(op.clone(), CHAIN, module_addr())
}

fn recovers(sig: &[u8], op: &Operation, root: Address) {
    assert_eq!(sig.len(), 65);
    assert!(sig[64] == 27 || sig[64] == 28);
    let s = alloy::primitives::Signature::from_raw(sig).unwrap();
    assert_eq!(
        s.recover_address_from_prehash(&operation_digest(op, TIER_ROOT, CHAIN, module_addr())).unwrap(),
        root
    );
}

/// `pkcs11-tool` (OpenSC), an independent PKCS#11 client, logged in to the test's root token.
fn pkcs11_tool(env: &Env) -> Command {
    let mut cmd = Command::new("pkcs11-tool");
    cmd.env("SOFTHSM2_CONF", &env.hsm.conf).args([
        "--module",
        MODULE,
        "--token-label",
        "root-token",
        "--login",
        "--pin",
        PIN,
    ]);
    cmd
}

#[test]
fn init_creates_a_key_that_pkcs11_tool_sees_with_the_same_address() {
    let env = Env::new();
    let address = env.init();
    assert_eq!(env.init(), address, "a second init finds the same key");

    let der = env.hsm.path().join("pub.der");
    let out = pkcs11_tool(&env)
        .args(["--read-object", "--type", "pubkey", "--label", "root", "-o"])
        .arg(&der)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spki = std::fs::read(&der).unwrap();
    let point = &spki[spki.len() - 65..];
    assert_eq!(point[0], 0x04, "uncompressed point at the end of the SubjectPublicKeyInfo");
    assert_eq!(Address::from_slice(&keccak256(&point[1..])[12..]), address);

    let list = pkcs11_tool(&env).args(["--list-objects", "--type", "privkey"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("label:      root") && text.contains("EC"), "{text}");
    assert!(text.contains("sign"), "the private key can sign: {text}");
}

#[test]
fn init_names_a_wrong_pin_and_a_non_pkcs11_module() {
    let env = Env::new();
    env.init();
    let out = env
        .cmd(&["root", "init", "--token", "root-token", "--key", "root"])
        .env("TREASURY_HSM_PIN", "111111")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the PIN"), "{err}");
    assert!(!err.contains("111111"), "the PIN is never printed: {err}");

    let fake = env.hsm.path().join("fake.so");
    std::fs::write(&fake, "not a library").unwrap();
    let (ok, _, err) =
        env.run(&["root", "init", "--pkcs11-module", fake.to_str().unwrap(), "--token", "root-token"]);
    assert!(!ok && err.contains("cannot load PKCS#11 module"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_guards_queues_and_signs_after_approval() {
    let env = Env::new();
    let root = env.init();
    let (config, agent_tok, alice_tok) = env.config(Path::new(MODULE), root, 3600);
    let svc = env.serve(&config);
    let agent = RootClient::new(&svc.url, &agent_tok);
    let alice_c = RootClient::new(&svc.url, &alice_tok);

    // Over the maximum single amount: refused, rule named.
    let err = agent.submit(&request(&pay(5000, 1))).await.unwrap_err();
    assert_eq!(err.guard_rule(), Some(GuardRule::MaxSingleAmount), "{err}");
    // No token: refused.
    assert!(matches!(
        RootClient::new(&svc.url, "nope").submit(&request(&pay(5, 1))).await,
        Err(RootError::Unauthorized(_))
    ));

    // Under the auto-approve amount: signed at once.
    let small = pay(5, 2);
    let rec = agent.submit(&request(&small)).await.unwrap();
    assert_eq!(rec.state, RequestState::Signed);
    recovers(&rec.signature.unwrap(), &small, root);

    // Above it: pending until a human approves (from the CLI).
    let big = pay(500, 3);
    let rec = agent.submit(&request(&big)).await.unwrap();
    assert_eq!(rec.state, RequestState::Pending);
    assert_eq!(agent.submit(&request(&big)).await.unwrap().id, rec.id, "resubmission is idempotent");
    assert!(
        matches!(agent.approve(&rec.id).await, Err(RootError::Unauthorized(_))),
        "a requester cannot approve"
    );
    let (ok, out, err) = env.run_with(
        &["root", "pending", "--url", &svc.url, "--json"],
        &[("TREASURY_APPROVER_TOKEN", &alice_tok)],
    );
    assert!(ok, "{err}");
    assert!(out.contains(&rec.id));
    // Without a token, and with the requester's token: refused, nothing recorded.
    let approve = ["root", "approve", &rec.id, "--url", &svc.url];
    let (ok, _, err) = env.run(&approve);
    assert!(!ok && err.contains("TREASURY_APPROVER_TOKEN"), "{err}");
    let (ok, _, err) = env.run_with(&approve, &[("TREASURY_APPROVER_TOKEN", &agent_tok)]);
    assert!(!ok && err.contains("agent may not"), "{err}");
    let (ok, _, err) = env.run_with(&approve, &[("TREASURY_APPROVER_TOKEN", &alice_tok)]);
    assert!(ok, "{err}");
    let sig =
        tokio::time::timeout(Duration::from_secs(30), agent.wait_signed(&rec.id, Duration::from_millis(20)))
            .await
            .unwrap()
            .unwrap();
    recovers(&sig, &big, root);
    let decisions = alice_c.decisions(&rec.id).await.unwrap();
    let actions: Vec<(&str, &str)> = decisions.iter().map(|d| (d.action.as_str(), d.by.as_str())).collect();
    assert_eq!(actions, [("queued", "agent"), ("approve", "alice"), ("sign", "root service")]);
    assert!(decisions.iter().all(|d| d.at > 0));

    // Rejected over HTTP: the requester learns who and why; a later approval is refused.
    let other = pay(600, 4);
    let rec = agent.submit(&request(&other)).await.unwrap();
    let listed = alice_c.list(Some(RequestState::Pending)).await.unwrap();
    assert!(listed.iter().any(|r| r.id == rec.id));
    alice_c.reject(&rec.id, "not in the plan").await.unwrap();
    match agent.wait_signed(&rec.id, Duration::from_millis(20)).await {
        Err(RootError::Rejected { by, reason }) => {
            assert_eq!((by.as_str(), reason.as_str()), ("alice", "not in the plan"))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(alice_c.approve(&rec.id).await, Err(RootError::NotPending { .. })));
    assert!(matches!(alice_c.approve("0000000000000000").await, Err(RootError::UnknownRequest(_))));
    let (ok, _, err) = env.run_with(
        &["root", "approve", "0000000000000000", "--url", &svc.url],
        &[("TREASURY_APPROVER_TOKEN", &alice_tok)],
    );
    assert!(!ok && err.contains("unknown request"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_after_expiry_is_refused() {
    let env = Env::new();
    let root = env.init();
    let (config, agent_tok, alice_tok) = env.config(Path::new(MODULE), root, 1);
    let svc = env.serve(&config);
    let agent = RootClient::new(&svc.url, &agent_tok);
    let rec = agent.submit(&request(&pay(500, 1))).await.unwrap();
    assert_eq!(rec.state, RequestState::Pending);
    // The approval window is one second (whole seconds): wait it out.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = RootClient::new(&svc.url, &alice_tok).approve(&rec.id).await.unwrap_err();
    assert!(matches!(err, RootError::Expired(_)), "{err:?}");
    assert!(matches!(
        agent.wait_signed(&rec.id, Duration::from_millis(20)).await,
        Err(RootError::Expired(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_wait_while_the_hsm_is_unplugged_and_survive_a_restart() {
    let env = Env::new();
    let root = env.init();
    // The service loads the module through a link that does not exist yet: the HSM is unplugged.
    let link = env.hsm.path().join("hsm.so");
    let (config, agent_tok, alice_tok) = env.config(&link, root, 3600);
    let (small, big) = (pay(5, 1), pay(500, 2));
    let (small_id, big_id) = {
        let svc = env.serve(&config);
        let agent = RootClient::new(&svc.url, &agent_tok);
        let health = agent.health().await.unwrap();
        assert_eq!((health.address, health.hsm_connected), (Some(root), false));
        let a = agent.submit(&request(&small)).await.unwrap();
        assert_eq!(a.state, RequestState::Approved, "auto-approved, waiting for the HSM");
        let b = agent.submit(&request(&big)).await.unwrap();
        let b = RootClient::new(&svc.url, &alice_tok).approve(&b.id).await.unwrap();
        assert_eq!(b.state, RequestState::Approved);
        (a.id, b.id)
        // The service is killed here.
    };
    let svc = env.serve(&config);
    let agent = RootClient::new(&svc.url, &agent_tok);
    for id in [&small_id, &big_id] {
        assert_eq!(
            agent.get(id).await.unwrap().state,
            RequestState::Approved,
            "still queued after the restart"
        );
    }
    std::os::unix::fs::symlink(MODULE, &link).unwrap();
    let wait = |id: String| {
        let agent = agent.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), agent.wait_signed(&id, Duration::from_millis(20)))
                .await
                .unwrap()
                .unwrap()
        }
    };
    recovers(&wait(small_id).await, &small, root);
    recovers(&wait(big_id).await, &big, root);
    assert!(agent.health().await.unwrap().hsm_connected);
}

/// Waits until request `id` has left the `pending` and `approved` states, and returns it.
async fn settled(client: &RootClient, id: &str) -> treasury_signer::root::store::RequestRecord {
    let wait = async {
        loop {
            let rec = client.get(id).await.unwrap();
            if !matches!(rec.state, RequestState::Pending | RequestState::Approved) {
                return rec;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("the worker decides the request")
}

/// Attack (issue 13 item 7): the agent's user can write the root's queue file. It marks its own
/// pending request approved "by bob" (as the old CLI did, unauthenticated), and rewrites another
/// pending row into a payment the guard refuses (digest kept consistent), marked approved. The
/// root signs neither.
#[tokio::test(flavor = "multi_thread")]
async fn a_writable_queue_file_yields_no_root_signature() {
    let env = Env::new();
    let root = env.init();
    let (config, agent_tok, _alice_tok) = env.config(Path::new(MODULE), root, 3600);
    let svc = env.serve(&config);
    let agent = RootClient::new(&svc.url, &agent_tok);
    let db = env.hsm.path().join("queue.sqlite");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();

    // 1. An approval written straight into the file.
    let forged = agent.submit(&request(&pay(500, 1))).await.unwrap();
    assert_eq!(forged.state, RequestState::Pending);
    let file = treasury_signer::root::store::Store::open(&db).await.unwrap();
    file.approve(&forged.id, "bob", now).unwrap();

    // 2. A pending row rewritten to pay a stranger (the guard refuses that recipient), approved.
    let row = agent.submit(&request(&pay(600, 2))).await.unwrap();
    let mut evil = pay(600, 2);
    evil.calls[0] = Call::new(
        usdc(),
        U256::ZERO,
        IERC20::transferCall { to: Address::repeat_byte(0xee), amount: U256::from(600) }.abi_encode(),
    );
    let evil = request(&evil);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("UPDATE requests SET body = ?, digest = ? WHERE id = ?")
        .bind(serde_json::to_string(&evil).unwrap())
        .bind(evil.digest().to_string())
        .bind(&row.id)
        .execute(&pool)
        .await
        .unwrap();
    file.approve(&row.id, "bob", now).unwrap();

    // 3. A request above the auto-approve amount marked approved by the auto-approve rule.
    let above = agent.submit(&request(&pay(700, 3))).await.unwrap();
    file.approve(&above.id, treasury_signer::root::service::AUTO_APPROVER, now).unwrap();

    for id in [&forged.id, &row.id, &above.id] {
        let rec = settled(&agent, id).await;
        assert_ne!(rec.state, RequestState::Signed, "request {id} must not be signed: {rec:?}");
        assert!(rec.signature.is_none());
        assert_eq!(rec.state, RequestState::Rejected, "{rec:?}");
        assert!(rec.reason.as_deref().unwrap_or_default().starts_with("refused at signing"), "{rec:?}");
    }
    // A small payment still signs at once: the service is not wedged by the refusals.
    let small = agent.submit(&request(&pay(5, 4))).await.unwrap();
    assert_eq!(small.state, RequestState::Signed);
}

/// Attack (issue 13 item 11): a client holding a token posts a body far larger than any request
/// to make the service buffer it. The service refuses it unread (413) and keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_is_refused_and_the_service_keeps_serving() {
    let env = Env::new();
    let root = env.init();
    let (config, agent_tok, _) = env.config(Path::new(MODULE), root, 3600);
    let svc = env.serve(&config);
    // Only the headers announcing 1.5 MiB are sent: the answer comes before any of the body is
    // read (sending the body too would race the service closing the connection after its 413).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = svc.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {agent_tok}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        1536 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut answer))
        .await
        .expect("the service answers before reading the body")
        .unwrap();
    let status_line = String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_string();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    let rec = RootClient::new(&svc.url, &agent_tok).submit(&request(&pay(5, 1))).await.unwrap();
    assert_eq!(rec.state, RequestState::Signed, "{rec:?}");
}

/// Issue 17: systemd stops the service with SIGTERM. It finishes what is under way and exits 0
/// (it died by the signal); what it queued and signed is all there after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_service_cleanly_and_its_queue_survives() {
    let env = Env::new();
    let root = env.init();
    let (config, agent_tok, alice_tok) = env.config(Path::new(MODULE), root, 3600);
    let svc = env.serve(&config);
    let agent = RootClient::new(&svc.url, &agent_tok);
    let waiting = agent.submit(&request(&pay(500, 1))).await.unwrap();
    let approved = agent.submit(&request(&pay(600, 2))).await.unwrap();
    RootClient::new(&svc.url, &alice_tok).approve(&approved.id).await.unwrap();
    let signed = settled(&agent, &approved.id).await;
    assert_eq!(signed.state, RequestState::Signed);

    let status = svc.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM ends the service cleanly: {status:?}");

    let svc = env.serve(&config);
    let agent = RootClient::new(&svc.url, &agent_tok);
    assert_eq!(agent.get(&waiting.id).await.unwrap().state, RequestState::Pending);
    let after = agent.get(&approved.id).await.unwrap();
    assert_eq!(after.state, RequestState::Signed);
    assert_eq!(after.signature, signed.signature);
}

/// Issue 17: the root service serves Prometheus metrics on its own listener
/// (`--metrics-listen`): the queue's depth, its decisions and the HSM's signing latency.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_serves_its_queue_decisions_and_hsm_latency_as_metrics() {
    let env = Env::new();
    let root = env.init();
    let (config, agent_tok, _) = env.config(Path::new(MODULE), root, 3600);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{port}");
    let svc = serve(env.cmd(&[
        "root",
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &metrics,
    ]));
    let agent = RootClient::new(&svc.url, &agent_tok);
    assert_eq!(
        agent.submit(&request(&pay(5, 1))).await.unwrap().state,
        RequestState::Signed,
        "auto-approved"
    );
    assert_eq!(agent.submit(&request(&pay(500, 2))).await.unwrap().state, RequestState::Pending);
    assert!(agent.submit(&request(&pay(5000, 3))).await.is_err(), "over the maximum single amount");

    let text = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap().text().await.unwrap();
    for line in [
        "treasury_root_queue_depth 1\n",
        "treasury_root_decisions_total{decision=\"auto_approved\"} 1\n",
        "treasury_root_decisions_total{decision=\"refused\"} 1\n",
        "treasury_root_decisions_total{decision=\"signed\"} 1\n",
        "treasury_root_decisions_total{decision=\"approved\"} 0\n",
        "treasury_root_hsm_sign_duration_seconds_count 1\n",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
}
