//! The bookkeeping export on the agent's API (`GET /v1/payments/export`): behind the token, CSV or
//! JSON, between two dates, the same rows as `treasury payments export`, and documented in the
//! OpenAPI document.

use std::sync::Arc;

use alloy::providers::Provider;
use reqwest::StatusCode;
use treasury_agent::api::{self, ApiState, ApiToken, StatusInfo};
use treasury_agent::config::Config;
use treasury_agent::export::PaymentsSource;

use crate::support::{AgentEnv, PolicySpec, QuorumSetup, get_json};

const PAY: PolicySpec<'static> =
    PolicySpec { name: "vendor", script: r#"pay("r6", "USDC", 321);"#, trigger: r#"{ kind = "manual" }"# };
const TOKEN: &str = "export-test-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_exports_executed_payments_as_csv_and_json_behind_its_token() {
    let env = AgentEnv::start_with(&[PAY], None, QuorumSetup::Library).await.unwrap();
    env.run_once();
    env.trigger("vendor").await;
    env.run_once();

    let config = Config::load(&env.config).unwrap();
    let provider = treasury_chain::provider::connect(config.chain.rpc_http.as_str()).unwrap();
    let head = provider.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().unwrap();
    let today = chrono::DateTime::from_timestamp(head.header.timestamp as i64, 0).unwrap().date_naive();
    let state = ApiState {
        journal: env.journal().await,
        policies: Vec::new(),
        metrics: Arc::new(treasury_agent::metrics::Metrics::new()),
        root: None,
        status: StatusInfo::from_config(&config, env.keeper),
        token: ApiToken::new(TOKEN).unwrap(),
        payments: Some(PaymentsSource::from_config(&config, provider).unwrap()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, state, std::future::pending()));
    let http = reqwest::Client::new();
    let get = |query: String, token: Option<&'static str>| {
        let mut req = http.get(format!("{base}/v1/payments/export?{query}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let range = format!("from={today}&to={today}");

    let anonymous = get(range.clone(), None).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = get(range.clone(), Some("not-the-token")).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let json = get(format!("{range}&format=json"), Some(TOKEN)).await.unwrap();
    assert_eq!(json.status(), StatusCode::OK);
    let rows: serde_json::Value = json.json().await.unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["policy"], "vendor");
    assert_eq!(rows[0]["recipient_name"], "r6");
    assert_eq!(rows[0]["token"], "USDC");
    assert_eq!(rows[0]["amount"], "321");
    assert!(rows[0]["tx_hash"].as_str().unwrap().starts_with("0x"));

    let csv = get(range.clone(), Some(TOKEN)).await.unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let cli = env.treasury(&["payments", "export", "--from", &today.to_string(), "--to", &today.to_string()]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert_eq!(csv, String::from_utf8(cli.stdout).unwrap(), "the API and the CLI export the same rows");
    assert_eq!(csv.lines().count(), 2, "a header and the payment: {csv}");

    let yesterday = today.pred_opt().unwrap();
    let before = get(format!("from={yesterday}&to={yesterday}&format=json"), Some(TOKEN)).await.unwrap();
    assert_eq!(
        before.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!([]),
        "nothing paid the day before"
    );

    for bad in [
        format!("{range}&format=xml"),
        format!("from=30/11/2026&to={today}"),
        format!("to={today}"),
        format!("from={today}&to={yesterday}"),
    ] {
        let r = get(bad.clone(), Some(TOKEN)).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    }

    let doc = get_json(&format!("{base}/openapi.json"), TOKEN).await;
    let op = &doc["paths"]["/v1/payments/export"]["get"];
    assert!(op["responses"]["200"]["content"]["text/csv"].is_object(), "{op}");
    assert!(op["responses"]["200"]["content"]["application/json"].is_object(), "{op}");
    assert!(op["responses"]["401"].is_object(), "documented behind the token");
    let params: Vec<&str> =
        op["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["from", "to", "format"]);
}
