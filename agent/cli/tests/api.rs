//! The agent's HTTP API over a real SQLite journal, on loopback, through reqwest: authentication,
//! every endpoint's JSON, filters, manual triggers, approvals, Prometheus metrics and OpenAPI.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use treasury_agent::api::{self, ApiState, ApiToken, StatusInfo};
use treasury_agent::journal::{
    IntentId, IntentState, Journal, NewIntent, NewTransaction, OperationRecord, TxState,
};
use treasury_agent::metrics::{Metrics, Stage};
use treasury_policies::{Period, PolicyEntry, Trigger};
use treasury_signer::root::RootClient;

const TOKEN: &str = "test-token-0123456789";

/// The intents the fixture journals, by role.
struct Ids {
    /// `payroll`, executed: proposed → … → confirmed, with an operation and a transaction.
    confirmed: IntentId,
    /// `payroll`, refused by the guard.
    rejected: IntentId,
    /// `grants`, just proposed.
    proposed: IntentId,
    /// `grants`, waiting for the root.
    awaiting: IntentId,
}

struct Fixture {
    base: String,
    http: reqwest::Client,
    journal: Journal,
    metrics: Arc<Metrics>,
    ids: Ids,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), api::ApiError>>,
    _dir: tempfile::TempDir,
}

fn intent(key: &str, policy: &str) -> NewIntent {
    NewIntent {
        idempotency_key: key.into(),
        policy: policy.into(),
        trigger: "schedule@2026-11-01T09:00:00Z".into(),
        kind: "pay".into(),
        payload: json!({ "to": "0x00000000000000000000000000000000000000a1", "amount": "1000" }),
        policy_version: None,
    }
}

async fn walk(journal: &Journal, id: IntentId, states: &[IntentState]) {
    for &to in states {
        journal.transition(id, to, json!({ "step": to.as_str() })).await.unwrap();
    }
}

async fn populate(journal: &Journal) -> Ids {
    use IntentState::*;
    let confirmed = journal.insert_intent(&intent("k1", "payroll")).await.unwrap().intent.id;
    let rejected = journal.insert_intent(&intent("k2", "payroll")).await.unwrap().intent.id;
    let proposed = journal.insert_intent(&intent("k3", "grants")).await.unwrap().intent.id;
    let awaiting = journal.insert_intent(&intent("k4", "grants")).await.unwrap().intent.id;

    walk(journal, confirmed, &[Guarded, Planned]).await;
    let op = OperationRecord {
        operation_id: "0xop1".into(),
        module_nonce: 7,
        operation: json!({ "calls": [], "nonce": 7, "deadline": 1_800_000_000u64 }),
        intents: vec![confirmed],
    };
    journal.record_operation(&op).await.unwrap();
    walk(journal, confirmed, &[Authorising, Signed]).await;
    let tx = NewTransaction {
        operation_id: "0xop1".into(),
        module_nonce: 7,
        signed_operation: json!({ "signatures": "0x" }),
        keeper_nonce: 3,
        tx_hash: "0xfeed".into(),
        raw_tx: "0x02f8".into(),
    };
    journal.record_transaction(&tx).await.unwrap();
    walk(journal, confirmed, &[Submitted, Confirmed]).await;
    journal.set_transaction_state("0xfeed", TxState::Confirmed, Some(1234)).await.unwrap();

    walk(journal, rejected, &[Rejected]).await;
    walk(journal, awaiting, &[Guarded, Planned, Authorising, AwaitingRoot]).await;
    Ids { confirmed, rejected, proposed, awaiting }
}

fn policies() -> Vec<PolicyEntry> {
    let entry = |name: &str, trigger| PolicyEntry {
        name: name.into(),
        file: PathBuf::from(format!("policies/{name}.rhai")),
        trigger,
        period: Period::Month,
        fixtures: vec![],
    };
    vec![
        entry("payroll", Trigger::Schedule { cron: "0 0 9 1 * *".into() }),
        entry("grants", Trigger::EveryBlocks { blocks: 100 }),
        entry("rebalance", Trigger::Manual),
    ]
}

fn status_info() -> StatusInfo {
    StatusInfo {
        chain_id: 31337,
        safe: Address::repeat_byte(0x11),
        module: Address::repeat_byte(0x22),
        keeper: Address::repeat_byte(0x33),
        version: "9.9.9".into(),
    }
}

async fn start(root: Option<RootClient>) -> Fixture {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let journal =
        Journal::open(&format!("sqlite://{}", dir.path().join("journal.db").display())).await.unwrap();
    let ids = populate(&journal).await;
    let metrics = Arc::new(Metrics::new());
    let state = ApiState {
        journal: journal.clone(),
        policies: policies(),
        metrics: metrics.clone(),
        root,
        status: status_info(),
        token: ApiToken::new(TOKEN).unwrap(),
        payments: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    Fixture { base, http, journal, metrics, ids, stop: Some(stop), server, _dir: dir }
}

impl Fixture {
    async fn call(&self, method: &str, path: &str, token: Option<&str>) -> (StatusCode, reqwest::Response) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(url),
            "POST" => self.http.post(url),
            "DELETE" => self.http.delete(url),
            other => panic!("method {other}"),
        };
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp)
    }

    /// An authenticated request answered with JSON.
    async fn json(&self, method: &str, path: &str) -> (StatusCode, Value) {
        let (status, resp) = self.call(method, path, Some(TOKEN)).await;
        let content_type = resp.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
        assert!(content_type.starts_with("application/json"), "{method} {path}: {content_type}");
        (status, resp.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.json("GET", path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.server.await.unwrap().unwrap();
    }
}

/// A concrete path for each route template.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1").replace("{name}", "rebalance")
}

fn ids_of(list: &Value) -> Vec<i64> {
    list.as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn every_route_but_health_needs_the_token() {
    let f = start(None).await;
    for (method, path) in api::routes() {
        let (method, path) = (method.as_str(), concrete(&path));
        if api::PUBLIC_ROUTES.contains(&path.as_str()) {
            let (status, _) = f.call(method, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{method} {path} is public");
            continue;
        }
        for token in [None, Some("wrong-token"), Some(""), Some(&TOKEN[..TOKEN.len() - 1])] {
            let (status, resp) = f.call(method, &path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}");
            assert_eq!(resp.headers()[reqwest::header::WWW_AUTHENTICATE], "Bearer");
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("bearer token"), "{body}");
        }
    }
    // A wrong scheme is no token at all.
    let resp = f.http.get(format!("{}/v1/status", f.base)).basic_auth("x", Some(TOKEN)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Nothing was queued by the refused trigger calls.
    assert!(f.journal.open_manual_triggers().await.unwrap().is_empty());
    let health = f.get("/health").await;
    assert_eq!(health, json!({ "status": "ok", "version": "9.9.9" }));
    f.stop().await;
}

#[tokio::test]
async fn status_reports_identity_gauges_and_intents_by_state() {
    let f = start(None).await;
    f.metrics.set_last_block(4321);
    f.metrics.set_keeper_balance(Address::repeat_byte(0x33), 123_000_000_000_000_000_000_000);
    f.metrics.set_signer_up("node-1", true);
    f.metrics.set_signer_up("node-2", false);
    f.journal.request_manual_trigger("rebalance", "cli").await.unwrap();
    let s = f.get("/v1/status").await;
    assert_eq!(s["chain_id"], 31337);
    assert_eq!(s["safe"].as_str().unwrap().parse::<Address>().unwrap(), Address::repeat_byte(0x11));
    assert_eq!(s["module"].as_str().unwrap().parse::<Address>().unwrap(), Address::repeat_byte(0x22));
    assert_eq!(s["keeper"].as_str().unwrap().parse::<Address>().unwrap(), Address::repeat_byte(0x33));
    assert_eq!(s["version"], "9.9.9");
    assert_eq!(s["last_block"], 4321);
    assert_eq!(s["keeper_balance_wei"], "123000000000000000000000");
    assert_eq!(s["signers"], json!({ "node-1": true, "node-2": false }));
    assert_eq!(s["root_configured"], false);
    assert_eq!(s["open_manual_triggers"], 1);
    let intents = s["intents"].as_object().unwrap();
    assert_eq!(intents.len(), IntentState::ALL.len());
    assert_eq!(s["intents"]["confirmed"], 1);
    assert_eq!(s["intents"]["rejected"], 1);
    assert_eq!(s["intents"]["proposed"], 1);
    assert_eq!(s["intents"]["awaiting_root"], 1);
    assert_eq!(s["intents"]["submitted"], 0);
    f.stop().await;
}

#[tokio::test]
async fn intents_list_with_filters_and_show_with_history() {
    let f = start(None).await;
    let Ids { confirmed, rejected, proposed, awaiting } = f.ids;
    let all = f.get("/v1/intents").await;
    assert_eq!(
        ids_of(&all["intents"]),
        vec![awaiting.0, proposed.0, rejected.0, confirmed.0],
        "newest first"
    );
    let first = &all["intents"][3];
    assert_eq!(first["idempotency_key"], "k1");
    assert_eq!(first["policy"], "payroll");
    assert_eq!(first["kind"], "pay");
    assert_eq!(first["state"], "confirmed");
    assert_eq!(first["payload"]["amount"], "1000");
    assert_eq!(first["trigger"], "schedule@2026-11-01T09:00:00Z");

    assert_eq!(ids_of(&f.get("/v1/intents?state=confirmed").await["intents"]), vec![confirmed.0]);
    assert_eq!(ids_of(&f.get("/v1/intents?policy=grants").await["intents"]), vec![awaiting.0, proposed.0]);
    assert_eq!(ids_of(&f.get("/v1/intents?policy=grants&state=proposed").await["intents"]), vec![proposed.0]);
    assert_eq!(ids_of(&f.get("/v1/intents?limit=2").await["intents"]), vec![awaiting.0, proposed.0]);
    assert!(f.get("/v1/intents?policy=nobody").await["intents"].as_array().unwrap().is_empty());

    for bad in ["state=done", "limit=0", "limit=100000", "limit=x", "colour=red"] {
        let (status, body) = f.json("GET", &format!("/v1/intents?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }

    let shown = f.get(&format!("/v1/intents/{confirmed}")).await;
    assert_eq!(shown["intent"]["id"], confirmed.0);
    assert_eq!(shown["intent"]["state"], "confirmed");
    let events = shown["events"].as_array().unwrap();
    let path: Vec<&str> = events.iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(path, ["proposed", "guarded", "planned", "authorising", "signed", "submitted", "confirmed"]);
    assert_eq!(events[0]["from"], Value::Null);
    assert_eq!(events[1]["from"], "proposed");
    assert_eq!(events[2]["detail"], json!({ "step": "planned" }));
    assert_eq!(shown["operation"]["operation_id"], "0xop1");
    assert_eq!(shown["operation"]["module_nonce"], 7);
    assert_eq!(shown["operation"]["intents"], json!([confirmed.0]));
    let txs = shown["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0]["tx"]["tx_hash"], "0xfeed");
    assert_eq!(txs[0]["tx"]["keeper_nonce"], 3);
    assert_eq!(txs[0]["state"], "confirmed");
    assert_eq!(txs[0]["block_number"], 1234);

    let bare = f.get(&format!("/v1/intents/{proposed}")).await;
    assert_eq!(bare["operation"], Value::Null);
    assert_eq!(bare["transactions"], json!([]));
    assert_eq!(bare["events"].as_array().unwrap().len(), 1);

    let (status, body) = f.json("GET", "/v1/intents/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "intent 999 not found");
    let (status, body) = f.json("GET", "/v1/intents/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    f.stop().await;
}

#[tokio::test]
async fn policies_and_manual_triggers() {
    let f = start(None).await;
    let list = f.get("/v1/policies").await;
    let policies = list["policies"].as_array().unwrap();
    let names: Vec<&str> = policies.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["payroll", "grants", "rebalance"]);
    assert_eq!(policies[0]["trigger"], json!({ "kind": "schedule", "cron": "0 0 9 1 * *" }));
    assert_eq!(policies[0]["period"], "month");
    assert_eq!(policies[0]["file"], "policies/payroll.rhai");
    assert_eq!(
        policies.iter().map(|p| p["manual"].as_bool().unwrap()).collect::<Vec<_>>(),
        [false, false, true]
    );

    let (status, body) = f.json("POST", "/v1/policies/rebalance/trigger").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["policy"], "rebalance");
    assert_eq!(body["requested_by"], "api");
    assert_eq!(body["handled_at"], Value::Null);
    let open = f.journal.open_manual_triggers().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, body["id"].as_i64().unwrap());
    assert_eq!((open[0].policy.as_str(), open[0].requested_by.as_str()), ("rebalance", "api"));

    let (status, body) = f.json("POST", "/v1/policies/payroll/trigger").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "policy `payroll` is triggered by schedule, not manually");
    let (status, body) = f.json("POST", "/v1/policies/nope/trigger").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown policy `nope`");
    let (status, body) = f.json("GET", "/v1/policies/rebalance/trigger").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(f.journal.open_manual_triggers().await.unwrap().len(), 1, "refusals queue nothing");

    let (status, body) = f.json("GET", "/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no route GET /v1/nothing-here");
    f.stop().await;
}

/// A real root service (its HSM absent: nothing is signed) on loopback with two clients: the
/// agent and ops, requesters, and alice, an approver. Returns its URL and the three tokens.
async fn real_root(dir: &std::path::Path) -> (String, String, String, String) {
    use treasury_signer::root::config::{ServiceConfig, new_token};
    let pin = dir.join("pin");
    std::fs::write(&pin, "1234").unwrap();
    let (agent_token, agent_hash) = new_token();
    let (alice_token, alice_hash) = new_token();
    let (ops_token, ops_hash) = new_token();
    let text = format!(
        r#"
        db = {db:?}
        approval_ttl_secs = 3600
        retry_interval_ms = 1000
        [hsm]
        module = {absent:?}
        token = "t"
        key = "k"
        pin_file = {pin:?}
        [guard]
        recipients = ["{recipient}"]
        [[guard.modules]]
        chain_id = 31337
        module = "{module}"
        [[guard.assets]]
        token = "{eth}"
        max_single = "1000"
        period_cap = "1000"
        period_secs = 86400
        [[clients]]
        name = "agent"
        role = "requester"
        token_sha256 = "{agent_hash}"
        [[clients]]
        name = "alice"
        role = "approver"
        token_sha256 = "{alice_hash}"
        [[clients]]
        name = "ops"
        role = "requester"
        token_sha256 = "{ops_hash}"
        "#,
        db = dir.join("queue.sqlite"),
        absent = dir.join("absent.so"),
        recipient = Address::repeat_byte(0xa1),
        module = root_module(),
        eth = Address::ZERO,
    );
    let mut config: ServiceConfig = toml::from_str(&text).unwrap();
    config.listen = ([127, 0, 0, 1], 0).into();
    let svc = treasury_signer::root::RootService::open(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(treasury_signer::root::http::serve(svc, listener));
    (base, agent_token.to_string(), alice_token.to_string(), ops_token.to_string())
}

fn root_module() -> Address {
    Address::repeat_byte(0x22)
}

/// A payment of `wei` the root's guard accepts but does not auto-approve.
fn root_payment(wei: u64, nonce: u64) -> treasury_signer::root::EscalationRequest {
    use alloy::primitives::U256;
    use treasury_chain::{Call, Operation};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let op = Operation {
        calls: vec![Call::new(Address::repeat_byte(0xa1), U256::from(wei), Vec::<u8>::new())],
        nonce: U256::from(nonce),
        deadline: U256::from(now + 600),
    };
    treasury_signer::root::EscalationRequest::operation(op, 31337, root_module())
}

#[tokio::test]
async fn approvals_need_a_reachable_root() {
    let f = start(None).await;
    let (status, body) = f.json("GET", "/v1/approvals").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].as_str().unwrap().contains("root signer not configured"), "{body}");
    f.stop().await;

    // A closed port: the root is down.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let f = start(Some(RootClient::new(dead, "root-token"))).await;
    let (status, body) = f.json("GET", "/v1/approvals").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["error"].as_str().unwrap().starts_with("root signer unavailable"), "{body}");
    f.stop().await;

    // Against the real root service, holding only a requester token (issue 13 item 9).
    let dir = tempfile::tempdir().unwrap();
    let (root, agent_token, alice_token, ops_token) = real_root(dir.path()).await;
    let agent_root = RootClient::new(root.clone(), agent_token.clone());
    let mine = agent_root.submit(&root_payment(10, 1)).await.unwrap();
    RootClient::new(root.clone(), ops_token).submit(&root_payment(20, 2)).await.unwrap();
    let f = start(Some(RootClient::new(root.clone(), agent_token))).await;
    let body = f.get("/v1/approvals").await;
    let listed: Vec<&str> =
        body["approvals"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [mine.id.as_str()], "{body}");
    assert_eq!(ids_of(&body["awaiting_root"]), vec![f.ids.awaiting.0]);
    assert_eq!(f.get("/v1/status").await["root_configured"], true);
    f.stop().await;
    // The agent's token lists only what it asked for (an approver sees every request), and it
    // still cannot approve.
    let alice = RootClient::new(root.clone(), alice_token);
    assert_eq!(alice.list(None).await.unwrap().len(), 2);
    let err = agent_root.approve(&mine.id).await.expect_err("a requester cannot approve");
    assert!(err.to_string().contains("may not"), "{err}");
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_match_the_journal() {
    let f = start(None).await;
    f.metrics.observe_stage(Stage::Sign, Duration::from_millis(30));
    f.metrics.observe_stage(Stage::Sign, Duration::from_secs(2));
    f.metrics.set_last_block(99);
    f.metrics.set_keeper_balance(Address::repeat_byte(0x33), 7_000_000_000_000_000);
    f.metrics.set_signer_up("node-1", true);
    f.metrics.inc_intents_created("payroll");
    f.metrics.inc_policy_errors("grants");
    // One more transition after start: the gauge is read from the journal at scrape time.
    f.journal.transition(f.ids.proposed, IntentState::Guarded, Value::Null).await.unwrap();

    let (status, resp) = f.call("GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let content_type = resp.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    let text = resp.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();

    let by_state = f.journal.count_by_state().await.unwrap();
    assert_eq!(by_state[&IntentState::Guarded], 1);
    let mut seen = HashMap::new();
    for s in scrape.samples.iter().filter(|s| s.metric == "treasury_intents") {
        let prometheus_parse::Value::Gauge(v) = s.value else { panic!("{s:?} is not a gauge") };
        seen.insert(s.labels.get("state").unwrap().to_string(), v);
    }
    assert_eq!(seen.len(), IntentState::ALL.len());
    for (state, n) in &by_state {
        assert_eq!(seen[state.as_str()], *n as f64, "{state}");
    }

    let one = |metric: &str| {
        let found: Vec<_> = scrape.samples.iter().filter(|s| s.metric == metric).collect();
        assert_eq!(found.len(), 1, "{metric}: {found:?}");
        found[0].clone()
    };
    assert_eq!(one("treasury_last_block").value, prometheus_parse::Value::Gauge(99.0));
    let balance = one("treasury_keeper_balance_wei");
    assert_eq!(balance.value, prometheus_parse::Value::Gauge(7e15));
    assert_eq!(balance.labels.get("keeper").unwrap().parse::<Address>().unwrap(), Address::repeat_byte(0x33));
    assert_eq!(one("treasury_signer_up").value, prometheus_parse::Value::Gauge(1.0));
    // OpenMetrics declares a counter's family without `_total` (this parser then calls its
    // samples untyped; Prometheus does not).
    assert!(text.contains("# TYPE treasury_intents_created counter\n"), "{text}");
    assert_eq!(one("treasury_intents_created_total").value, prometheus_parse::Value::Untyped(1.0));
    assert_eq!(one("treasury_policy_errors_total").labels.get("policy"), Some("grants"));

    let sign = scrape
        .samples
        .iter()
        .find(|s| s.metric == "treasury_stage_duration_seconds" && s.labels.get("stage") == Some("sign"))
        .expect("sign histogram");
    let prometheus_parse::Value::Histogram(buckets) = &sign.value else { panic!("{sign:?}") };
    let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
    assert_eq!((at(0.025), at(0.05), at(1.0), at(2.5), at(f64::INFINITY)), (0.0, 1.0, 1.0, 2.0, 2.0));
    let count = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "treasury_stage_duration_seconds_count" && s.labels.get("stage") == Some("sign")
        })
        .expect("sign count");
    assert_eq!(count.value, prometheus_parse::Value::Untyped(2.0));
    f.stop().await;
}

/// `schema` with the document's components beside it, so that its `#/components/...` refs resolve.
fn with_components(schema: &Value, doc: &Value) -> Value {
    let mut schema = schema.clone();
    if let Some(object) = schema.as_object_mut() {
        object.insert("components".into(), doc["components"].clone());
    } else {
        schema = json!({ "allOf": [schema], "components": doc["components"] });
    }
    schema
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let f = start(None).await;
    let (status, resp) = f.call("GET", "/openapi.json", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let text = resp.text().await.unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let version = spec.validate_version().unwrap();
    assert_eq!((version.major, version.minor), (3, 1));
    assert_eq!(spec.info.version, "9.9.9");
    let routes = api::routes();
    assert_eq!(spec.operations().count(), routes.len());
    for (method, path) in &routes {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let op =
            spec.operation(&m, path).unwrap_or_else(|| panic!("{method} {path} missing from /openapi.json"));
        // Every `{param}` of the path is declared as a path parameter.
        let params = op.parameters(&spec).unwrap();
        for name in path.split('/').filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}')) {
            assert!(
                params.iter().any(|p| p.name == name && p.location == oas3::spec::ParameterIn::Path),
                "{method} {path}: path parameter {name} undeclared"
            );
        }
        // Every response schema resolves (no dangling $ref).
        let responses = op.responses(&spec);
        for (code, response) in &responses {
            for media in response.content.values() {
                media.schema(&spec).unwrap_or_else(|e| panic!("{method} {path} {code}: {e}"));
            }
        }
        // The route is served by its handler (not the fallback), its answer is documented, and
        // the JSON it answers with matches the documented schema.
        let (status, resp) = f.call(method, &concrete(path), Some(TOKEN)).await;
        assert!(
            responses.contains_key(status.as_str()),
            "{method} {path} answered {status}, documented {:?}",
            responses.keys().collect::<Vec<_>>()
        );
        let content_type = resp.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
        let documented = &doc["paths"][path][method.to_lowercase()]["responses"][status.as_str()]["content"];
        if content_type.starts_with("application/json") {
            let body: Value = resp.json().await.unwrap();
            let schema = with_components(&documented["application/json"]["schema"], &doc);
            let validator = jsonschema::validator_for(&schema).expect("the documented schema compiles");
            let errors: Vec<String> =
                validator.iter_errors(&body).map(|e| format!("{e} at {}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{method} {path} {status}: {errors:?}\n{body:#}");
        } else {
            let media = content_type.split(';').next().unwrap();
            assert!(documented.get(media).is_some(), "{method} {path}: {content_type} undocumented");
        }
        // So is the 401 of a request without a token (except the public routes).
        if !api::PUBLIC_ROUTES.contains(&path.as_str()) {
            assert!(responses.contains_key("401"), "{method} {path} does not document 401");
        }
        // No method but the documented ones is served on the path: the others are refused.
        let served: Vec<&String> = routes.iter().filter(|(_, p)| p == path).map(|(m, _)| m).collect();
        for other in ["GET", "POST", "DELETE"].into_iter().filter(|m| !served.iter().any(|s| s == m)) {
            let (status, _) = f.call(other, &concrete(path), Some(TOKEN)).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{other} {path} is served but undocumented");
        }
    }
    f.stop().await;
}

/// A route's answer that drifted from its documented schema fails the check above: here, a
/// status whose `intents` counts are strings, and an intent list missing its `intents`.
#[tokio::test]
async fn the_schema_check_catches_a_drifted_answer() {
    let doc = serde_json::to_value(api::openapi::document("9.9.9")).unwrap();
    let schema_of = |path: &str| {
        let schema = &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        jsonschema::validator_for(&with_components(schema, &doc)).unwrap()
    };
    let f = start(None).await;
    let mut status = f.get("/v1/status").await;
    assert!(schema_of("/v1/status").is_valid(&status));
    status["intents"]["confirmed"] = json!("1");
    assert!(!schema_of("/v1/status").is_valid(&status));
    let list = f.get("/v1/intents").await;
    assert!(schema_of("/v1/intents").is_valid(&list));
    assert!(!schema_of("/v1/intents").is_valid(&json!({ "items": list["intents"] })));
    let mut one = f.get(&format!("/v1/intents/{}", f.ids.confirmed.0)).await;
    assert!(schema_of("/v1/intents/{id}").is_valid(&one));
    one["intent"]["state"] = json!("teleported");
    assert!(!schema_of("/v1/intents/{id}").is_valid(&one));
    f.stop().await;
}

/// Everything logged by any test of this binary: one global subscriber, installed by [`start`]
/// (a per-test subscriber would race with the callsite cache of tests running in parallel).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

#[tokio::test]
async fn requests_are_logged_without_tokens() {
    let f = start(None).await;
    let (status, _) = f.json("GET", "/v1/intents/424242").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = f.call("GET", "/v1/intents/434343", Some("not-the-token-4242")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    f.stop().await;
    let text = String::from_utf8(logs().0.lock().unwrap().clone()).unwrap();
    let line = |needles: &[&str]| text.lines().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(line(&["HTTP API request{method=GET path=/v1/intents/424242}", "status=404"]), "{text}");
    assert!(line(&["HTTP API request refused method=GET path=/v1/intents/434343"]), "{text}");
    // Neither the token nor any wrong one presented by the tests of this file was logged.
    for secret in [TOKEN, "not-the-token-4242", "wrong-token"] {
        assert!(!text.contains(secret), "{secret} was logged");
    }
}

#[tokio::test]
async fn a_journal_failure_is_a_json_500_and_health_still_answers() {
    let f = start(None).await;
    f.journal.close().await;
    for path in ["/v1/intents", "/v1/status", "/metrics", "/v1/intents/1"] {
        let (status, body) = f.json("GET", path).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().starts_with("journal: "), "{path}: {body}");
    }
    assert_eq!(f.get("/health").await["status"], "ok");
    f.stop().await;
}

/// A client holding the token announces a body far above any request (1.5 MiB) to make the agent
/// buffer it: refused unread with 413, nothing queued, and the API keeps serving.
#[tokio::test]
async fn an_oversized_body_is_refused_and_the_api_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = start(None).await;
    let addr = f.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Only the headers: the answer comes before any of the body is read (a body written after
    // it would race the server closing the connection).
    let head = format!(
        "POST /v1/policies/rebalance/trigger HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        1536 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut answer))
        .await
        .expect("the API answers before reading the body")
        .unwrap();
    let status_line = String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_string();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    assert!(f.journal.open_manual_triggers().await.unwrap().is_empty(), "nothing queued");
    let (status, queued) = f.json("POST", "/v1/policies/rebalance/trigger").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    f.stop().await;
}
