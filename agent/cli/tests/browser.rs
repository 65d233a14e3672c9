//! The approvals page in a real browser (headless Chromium over WebDriver): named approvers sign
//! in, see each escalation decoded, approve under the two-person rule; a wrong password and a
//! forged CSRF token are refused. And `treasury dev`'s escalation approved on the page, its
//! payment landing on anvil. Screenshots: `$CARGO_TARGET_TMPDIR/browser/<test>/`.
use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use fantoccini::Locator;
use treasury_chain::contracts::IERC20;
use treasury_chain::{Call, Operation};
use treasury_signer::root::request::{ContextBudget, ContextIntent, ContextPrice, EscalationContext};
use treasury_signer::root::store::RequestState;
use treasury_signer::root::{EscalationRequest, RootClient};

#[path = "common/softhsm.rs"]
mod softhsm;
use softhsm::{MODULE, SoftHsm, serve};

#[path = "common/browser.rs"]
mod browser;
use browser::Browser;

const PIN: &str = "424242";
const SO_PIN: &str = "87654321";
const CHAIN: u64 = 31337;
const ALICE_PW: &str = "alice-correct-horse";
const BOB_PW: &str = "bob-battery-staple";

fn module_addr() -> Address {
    Address::repeat_byte(0x4d)
}
fn usdc() -> Address {
    Address::repeat_byte(0xaa)
}
fn payee() -> Address {
    Address::repeat_byte(0x01)
}

/// `amount` micro-USDC to the payee, with the agent's account of it.
fn payment(micro: u64, nonce: u64) -> EscalationRequest {
    let data = IERC20::transferCall { to: payee(), amount: U256::from(micro) }.abi_encode();
    let deadline =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let op = Operation {
        calls: vec![Call::new(usdc(), U256::ZERO, data)],
        nonce: U256::from(nonce),
        deadline: U256::from(deadline),
    };
    let context = EscalationContext {
        intents: vec![ContextIntent {
            policy: "payroll".into(),
            trigger: "schedule@1801353600".into(),
            key: format!("payroll:{nonce}"),
            memo: Some("March salary".into()),
        }],
        prices: vec![ContextPrice { token: usdc(), decimals: 6, usd_e8: U256::from(100_000_000u64) }],
        budgets: vec![ContextBudget {
            token: usdc(),
            limit: U256::from(40_000_000u64),
            remaining: U256::from(10_000_000u64),
            outflow: U256::from(micro),
        }],
        reasons: vec!["outflow exceeds the remaining budget".into()],
        simulation: Some("every call succeeds at the latest block".into()),
        block: None,
    };
    EscalationRequest::operation(op, CHAIN, module_addr()).with_context(context)
}

/// The root service's config: two approvers with page passwords, above 100 USDC two of them.
fn write_config(hsm: &SoftHsm, root: Address, agent_hash: &str, alice_hash: &str) -> std::path::PathBuf {
    let hash = |pw: &str| treasury_signer::root::page::hash_password(pw).unwrap();
    let text = format!(
        r#"db = "{db}"
approval_ttl_secs = 3600
retry_interval_ms = 50

[hsm]
module = "{module}"
token = "root-token"
key = "root"
address = "{root}"

[guard]
recipients = ["{payee}"]

[[guard.modules]]
chain_id = {CHAIN}
module = "{m}"

[[guard.assets]]
token = "{usdc}"
max_single = "1000000000"
period_cap = "100000000000"
period_secs = 86400

[approvals]
[[approvals.rules]]
token = "{usdc}"
above = "100000000"
approvers = 2

[book.tokens.USDC]
address = "{usdc}"
decimals = 6

[book.names]
payroll-alice = "{payee}"

[[clients]]
name = "agent"
role = "requester"
token_sha256 = "{agent_hash}"

[[clients]]
name = "alice"
role = "approver"
token_sha256 = "{alice_hash}"
password_hash = "{alice_pw}"

[[clients]]
name = "bob"
role = "approver"
password_hash = "{bob_pw}"
"#,
        db = hsm.path().join("queue.sqlite").display(),
        module = Path::new(MODULE).display(),
        payee = payee(),
        m = module_addr(),
        usdc = usdc(),
        alice_pw = hash(ALICE_PW),
        bob_pw = hash(BOB_PW),
    );
    let path = hsm.path().join("root.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn state(client: &RootClient, id: &str) -> RequestState {
    client.get(id).await.unwrap().state
}

/// Waits (bounded) until request `id` is signed.
async fn signed(client: &RootClient, id: &str) {
    tokio::time::timeout(Duration::from_secs(60), client.wait_signed(id, Duration::from_millis(50)))
        .await
        .unwrap_or_else(|_| panic!("request {id} not signed"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn approvers_sign_in_see_the_decoded_request_and_the_two_person_rule_holds() {
    let hsm = SoftHsm::new();
    let out = hsm.command(PIN, SO_PIN, &["root", "init", "--token", "root-token", "--key", "root", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root: Address = v["address"].as_str().unwrap().parse().unwrap();
    let (agent_tok, agent_hash) = treasury_signer::root::config::new_token();
    let (alice_tok, alice_hash) = treasury_signer::root::config::new_token();
    let config = write_config(&hsm, root, &agent_hash, &alice_hash);
    let svc = serve(hsm.command(PIN, SO_PIN, &["root", "serve", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"]));
    let agent = RootClient::new(&svc.url, agent_tok.as_str());
    let small = agent.submit(&payment(50_000_000, 1)).await.unwrap();
    let big = agent.submit(&payment(600_000_000, 2)).await.unwrap();
    assert_eq!((small.state, big.state), (RequestState::Pending, RequestState::Pending));

    let mut b = Browser::start("approvals").await;
    // Signed out: the page sends the visitor to sign in.
    b.client.goto(&format!("{}/approvals", svc.url)).await.unwrap();
    assert!(b.client.current_url().await.unwrap().path().ends_with("/approvals/login"));

    // A wrong password is refused; nothing is shown.
    b.sign_in(&svc.url, "alice", "alice-wrong-horse").await;
    let text = b.text().await;
    assert!(text.contains("Wrong name or password"), "{text}");
    assert!(!text.contains(&small.id), "{text}");
    b.shot("wrong-password").await;

    // Signed in: both requests decoded with the root's book and the agent's account.
    b.sign_in(&svc.url, "alice", ALICE_PW).await;
    let text = b.text().await;
    assert!(text.contains("Signed in as alice") && text.contains("Waiting for approval (2)"), "{text}");
    let card = b.client.find(Locator::Css(&format!("#request-{}", small.id))).await.unwrap().text().await.unwrap();
    for want in ["transfer", "50 USDC", "$50.00", "payroll-alice", "policy payroll", "March salary",
                 "exceeds it by 40 USDC", "every call succeeds", "0 of 1"] {
        assert!(card.contains(want), "{want:?} missing from the card:\n{card}");
    }
    let card = b.client.find(Locator::Css(&format!("#request-{}", big.id))).await.unwrap().text().await.unwrap();
    assert!(card.contains("600 USDC") && card.contains("$600.00") && card.contains("0 of 2"), "{card}");
    b.shot("pending").await;

    // A forged CSRF token: refused, the request stays pending.
    let script = format!(
        "document.querySelector('#approve-{}').form.querySelector('input[name=csrf]').value = 'forged'",
        small.id
    );
    b.client.execute(&script, vec![]).await.unwrap();
    b.click(&format!("#approve-{}", small.id)).await;
    let text = b.text().await;
    assert!(text.contains("CSRF token does not match"), "{text}");
    b.shot("forged-csrf").await;
    assert_eq!(state(&agent, &small.id).await, RequestState::Pending);

    // Approved: one approver suffices below 100 USDC; the HSM signs.
    b.client.goto(&format!("{}/approvals", svc.url)).await.unwrap();
    b.click(&format!("#approve-{}", small.id)).await;
    assert!(b.text().await.contains(&format!("You approved request {}", small.id)));
    signed(&agent, &small.id).await;

    // Above 100 USDC: alice's approval is one of two.
    b.click(&format!("#approve-{}", big.id)).await;
    let text = b.text().await;
    assert!(text.contains("1 of 2 approvals"), "{text}");
    assert_eq!(state(&agent, &big.id).await, RequestState::Pending);
    // The CLI goes through the same rule: alice again is refused.
    let alice_cli = RootClient::new(&svc.url, alice_tok.as_str());
    assert!(alice_cli.approve(&big.id).await.is_err(), "the same approver does not count twice");
    b.shot("one-of-two").await;

    // bob signs in and approves: two of two, signed.
    b.click("#logout").await;
    assert!(b.client.current_url().await.unwrap().path().ends_with("/approvals/login"));
    b.sign_in(&svc.url, "bob", BOB_PW).await;
    b.click(&format!("#approve-{}", big.id)).await;
    signed(&agent, &big.id).await;
    b.client.goto(&format!("{}/approvals", svc.url)).await.unwrap();
    let audit = b.client.find(Locator::Css("#audit")).await.unwrap().text().await.unwrap();
    for want in ["approve alice", "approve bob", "sign root service"] {
        assert!(audit.contains(want), "{want:?} missing from the audit log:\n{audit}");
    }
    b.shot("two-of-two").await;
    b.close().await;
}
