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
    let out = hsm
        .command(PIN, SO_PIN, &["root", "init", "--token", "root-token", "--key", "root", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root: Address = v["address"].as_str().unwrap().parse().unwrap();
    let (agent_tok, agent_hash) = treasury_signer::root::config::new_token();
    let (alice_tok, alice_hash) = treasury_signer::root::config::new_token();
    let config = write_config(&hsm, root, &agent_hash, &alice_hash);
    let svc = serve(hsm.command(
        PIN,
        SO_PIN,
        &["root", "serve", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    ));
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
    let text = b.text_with("Wrong name or password").await;
    assert!(text.contains("Wrong name or password"), "{text}");
    assert!(!text.contains(&small.id), "{text}");
    b.shot("wrong-password").await;

    // Signed in: both requests decoded with the root's book and the agent's account.
    b.sign_in(&svc.url, "alice", ALICE_PW).await;
    let text = b.text_with("Waiting for approval").await;
    assert!(text.contains("Signed in as alice") && text.contains("Waiting for approval (2)"), "{text}");
    let card =
        b.client.find(Locator::Css(&format!("#request-{}", small.id))).await.unwrap().text().await.unwrap();
    for want in [
        "transfer",
        "50 USDC",
        "$50.00",
        "payroll-alice",
        "policy payroll",
        "March salary",
        "exceeds it by 40 USDC",
        "every call succeeds",
        "0 of 1",
    ] {
        assert!(card.contains(want), "{want:?} missing from the card:\n{card}");
    }
    let card =
        b.client.find(Locator::Css(&format!("#request-{}", big.id))).await.unwrap().text().await.unwrap();
    assert!(card.contains("600 USDC") && card.contains("$600.00") && card.contains("0 of 2"), "{card}");
    b.shot("pending").await;

    // A forged CSRF token: refused, the request stays pending.
    let script = format!(
        "document.querySelector('#approve-{}').form.querySelector('input[name=csrf]').value = 'forged'",
        small.id
    );
    b.client.execute(&script, vec![]).await.unwrap();
    b.click(&format!("#approve-{}", small.id)).await;
    let text = b.text_with("CSRF token does not match").await;
    assert!(text.contains("CSRF token does not match"), "{text}");
    b.shot("forged-csrf").await;
    assert_eq!(state(&agent, &small.id).await, RequestState::Pending);

    // Approved: one approver suffices below 100 USDC; the HSM signs.
    b.client.goto(&format!("{}/approvals", svc.url)).await.unwrap();
    b.click(&format!("#approve-{}", small.id)).await;
    let want = format!("You approved request {}", small.id);
    assert!(b.text_with(&want).await.contains(&want));
    signed(&agent, &small.id).await;

    // Above 100 USDC: alice's approval is one of two.
    b.click(&format!("#approve-{}", big.id)).await;
    let text = b.text_with("1 of 2 approvals").await;
    assert!(text.contains("1 of 2 approvals"), "{text}");
    assert_eq!(state(&agent, &big.id).await, RequestState::Pending);
    // The CLI goes through the same rule: alice again is refused.
    let alice_cli = RootClient::new(&svc.url, alice_tok.as_str());
    assert!(alice_cli.approve(&big.id).await.is_err(), "the same approver does not count twice");
    b.shot("one-of-two").await;

    // bob signs in and approves: two of two, signed.
    b.click("#logout").await;
    b.text_with("Sign in").await;
    assert!(b.client.current_url().await.unwrap().path().ends_with("/approvals/login"));
    b.sign_in(&svc.url, "bob", BOB_PW).await;
    b.text_with("Signed in as bob").await;
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

/// `treasury dev` as a user runs it without a terminal: its escalated GOV grant is approved on the
/// approvals page with the printed credentials, and the grant lands on anvil; the dashboard shows
/// the treasury and the confirmed intents.
#[tokio::test(flavor = "multi_thread")]
async fn the_dev_escalation_is_approved_on_the_page_and_the_grant_lands_on_anvil() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_treasury"))
        .args(["dev", "--json", "--state-dir"])
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let next_line = |log: &mut Vec<String>| -> String {
        let line = lines
            .recv_timeout(Duration::from_secs(600))
            .unwrap_or_else(|_| panic!("treasury dev went quiet; its output:\n{}", log.join("\n")));
        log.push(line.clone());
        line
    };
    let (mut page, mut password, mut dashboard) = (None, None, None);
    while page.is_none() || password.is_none() || dashboard.is_none() {
        let line = next_line(&mut log);
        if let Some(url) = line.strip_prefix("approvals page: ") {
            page = Some(url.trim().trim_end_matches("/approvals").to_owned());
        } else if let Some(pw) = line.trim().strip_prefix("approver dev-operator password ") {
            password = Some(pw.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("dashboard: ") {
            dashboard =
                Some(rest.split_whitespace().next().unwrap().trim_end_matches("/dashboard").to_owned());
        }
    }
    let (page, password, dashboard) = (page.unwrap(), password.unwrap(), dashboard.unwrap());

    // The grant waits for the root: sign in and find it on the page.
    let mut b = Browser::start("dev").await;
    b.sign_in(&page, "dev-operator", &password).await;
    assert!(b.text_with("Signed in as dev-operator").await.contains("Signed in as dev-operator"));
    let card = loop {
        if let Ok(card) = b.client.find(Locator::Css("div[id^=request-]")).await {
            break card.text().await.unwrap();
        }
        let line = next_line(&mut log);
        assert!(!line.contains("✗"), "treasury dev failed:\n{}", log.join("\n"));
        b.client.goto(&format!("{page}/approvals")).await.unwrap();
    };
    for want in [
        "transfer",
        "30000 GOV",
        "grantee",
        "policy gov_grant",
        "community grant",
        "GOV budget",
        "exceeds it by",
        "every call succeeds",
        "0 of 1",
    ] {
        assert!(card.contains(want), "{want:?} missing from the card:\n{card}");
    }
    b.shot("escalation").await;
    let id =
        b.client.find(Locator::Css("div[id^=request-]")).await.unwrap().attr("id").await.unwrap().unwrap();
    b.click(&format!("#approve-{}", id.trim_start_matches("request-"))).await;
    let text = b.text_with("You approved request").await;
    assert!(text.contains("You approved request"), "{text}");

    // The scenario goes on to its end (the grant confirmed), then waits for Ctrl-C.
    loop {
        let line = next_line(&mut log);
        assert!(!line.contains("✗"), "treasury dev failed:\n{}", log.join("\n"));
        if line.contains("scenario done") {
            break;
        }
    }

    // The dashboard, signed in with the API token from env.sh.
    let env = std::fs::read_to_string(state.join("env.sh")).unwrap();
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("export TREASURY_API_TOKEN="))
        .expect("env.sh names the API token")
        .to_owned();
    b.client.goto(&format!("{dashboard}/dashboard")).await.unwrap();
    assert!(b.client.current_url().await.unwrap().path().ends_with("/dashboard/login"));
    b.fill("#token", "not-the-token").await;
    b.click("#sign-in").await;
    assert!(b.text_with("Wrong token").await.contains("Wrong token"));
    b.fill("#token", &token).await;
    b.click("#sign-in").await;
    let text = b.text_with("Balances and weights").await;
    for want in ["Balances and weights", "GOV", "USDC", "Budgets (current window)", "root", "HSM connected"] {
        assert!(text.contains(want), "{want:?} missing from the dashboard:\n{text}");
    }
    let intents = b.client.find(Locator::Css("#intents")).await.unwrap().text().await.unwrap();
    assert!(intents.contains("gov_grant") && intents.contains("30000 GOV →"), "{intents}");
    assert!(!intents.contains("awaiting_root") && intents.contains("confirmed"), "{intents}");
    b.shot("dashboard").await;
    b.close().await;

    // Bookkeeping: every executed payment and swap, with names, USD values, fees and hashes.
    let export = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_treasury"))
            .args([
                "payments",
                "export",
                "--from",
                "2000-01-01",
                "--to",
                "2100-12-31",
                "--format",
                format,
                "--config",
            ])
            .arg(state.join("treasury.toml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let rows: serde_json::Value = serde_json::from_str(&export("json")).unwrap();
    let rows = rows.as_array().unwrap();
    let grant = rows.iter().find(|r| r["policy"] == "gov_grant").expect("the grant is exported");
    assert_eq!(grant["recipient_name"], "grantee", "{grant}");
    assert_eq!((grant["token"].as_str(), grant["amount"].as_str()), (Some("GOV"), Some("30000")), "{grant}");
    assert!(grant["usd_value"].as_str().is_some_and(|v| !v.starts_with('0')), "{grant}");
    assert!(grant["fee_eth"].as_str().is_some_and(|v| v != "0"), "{grant}");
    assert_eq!(rows.iter().filter(|r| r["kind"] == "swap").count(), 1, "the rebalance's swap: {rows:?}");
    assert_eq!(rows.iter().filter(|r| r["policy"] == "payroll").count(), 2);
    let csv = export("csv");
    assert!(csv.starts_with(
        "date,treasury,policy,kind,recipient_name,recipient_address,token,amount,usd_value,fee_eth,tx_hash\n"
    ));
    assert_eq!(csv.lines().count(), rows.len() + 1, "{csv}");
    assert!(csv.contains(",gov_grant,pay,grantee,"), "{csv}");
    let none: serde_json::Value = serde_json::from_str(&{
        let out = Command::new(env!("CARGO_BIN_EXE_treasury"))
            .args([
                "payments",
                "export",
                "--from",
                "2000-01-01",
                "--to",
                "2000-01-31",
                "--format",
                "json",
                "--config",
            ])
            .arg(state.join("treasury.toml"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    })
    .unwrap();
    assert_eq!(none, serde_json::json!([]), "nothing executed in January 2000");

    // Ctrl-C: the summary shows the grant paid on anvil.
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("summary is not JSON ({e}):\n{}\n{}", String::from_utf8_lossy(&out.stdout), log.join("\n"))
    });
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["balances"]["grantee"]["GOV"], "30000", "{summary}");
    let grant = summary["intents"].as_array().unwrap().iter().find(|i| i["policy"] == "gov_grant").unwrap();
    let states: Vec<&str> = grant["states"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(states.contains(&"awaiting_root") && states.last() == Some(&"confirmed"), "{states:?}");
}
