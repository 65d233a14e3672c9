//! A JSON-RPC endpoint in front of anvil that lies as a hijacked or compromised node would: in
//! every Multicall3 `aggregate3` answer, each ERC-20 `balanceOf` result is doubled. Everything
//! else is passed through unchanged.
#![allow(dead_code, unreachable_pub)]

use alloy::primitives::{Bytes, U256};
use alloy::sol_types::SolCall;
use axum::body::Bytes as Body;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::Value;
use treasury_chain::contracts::{IERC20, IMulticall3};

/// A running lying endpoint; dropped, it stops.
pub struct LyingRpc {
    /// Its URL (`http://127.0.0.1:PORT`).
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LyingRpc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Upstream {
    url: String,
    http: reqwest::Client,
}

impl LyingRpc {
    /// Starts the endpoint, forwarding to `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the lying RPC");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let state = Upstream { url: upstream.to_string(), http: reqwest::Client::new() };
        let app = axum::Router::new().route("/", axum::routing::post(forward)).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, task }
    }
}

async fn forward(State(up): State<Upstream>, body: Body) -> axum::response::Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer =
        up.http.post(&up.url).header("content-type", "application/json").body(body.to_vec()).send().await;
    let mut answer: Value = match answer {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => return axum::http::StatusCode::BAD_GATEWAY.into_response(),
    };
    match (&request, &mut answer) {
        (Value::Array(reqs), Value::Array(answers)) => {
            for a in answers.iter_mut() {
                if let Some(r) = reqs.iter().find(|r| r["id"] == a["id"]) {
                    lie(r, a);
                }
            }
        }
        (r, a) => lie(r, a),
    }
    axum::Json(answer).into_response()
}

/// Doubles the `balanceOf` results in the answer `a` to the `eth_call` request `r` of `aggregate3`.
fn lie(r: &Value, a: &mut Value) {
    if r["method"] != "eth_call" {
        return;
    }
    let tx = &r["params"][0];
    let input = tx.get("input").or_else(|| tx.get("data")).and_then(Value::as_str).unwrap_or_default();
    let Ok(input) = input.parse::<Bytes>() else { return };
    let Ok(call) = IMulticall3::aggregate3Call::abi_decode(&input) else { return };
    let Some(Ok(raw)) = a["result"].as_str().map(|s| s.parse::<Bytes>()) else { return };
    let Ok(mut results) = IMulticall3::aggregate3Call::abi_decode_returns(&raw) else { return };
    for (probe, result) in call.calls.iter().zip(results.iter_mut()) {
        if probe.callData.starts_with(&IERC20::balanceOfCall::SELECTOR)
            && let Ok(balance) = IERC20::balanceOfCall::abi_decode_returns(&result.returnData)
        {
            let doubled = balance.saturating_mul(U256::from(2));
            result.returnData = IERC20::balanceOfCall::abi_encode_returns(&doubled).into();
        }
    }
    let encoded = IMulticall3::aggregate3Call::abi_encode_returns(&results);
    a["result"] = Value::String(format!("0x{}", alloy::primitives::hex::encode(encoded)));
}
