//! The signer-node probe runs as a task of its own: `/v1/status` and `treasury_signer_up` list
//! every configured node before any signature, a node that goes down is reported down, and one
//! that comes back is reported up again.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use crate::support::{AgentEnv, PolicySpec, get_json};

const IDLE: PolicySpec<'static> =
    PolicySpec { name: "idle", script: r#"alert("nothing to do");"#, trigger: r#"{ kind = "manual" }"# };
const TOKEN: &str = "probe-test-token";

struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn signers(api: &str) -> serde_json::Map<String, serde_json::Value> {
    let status = get_json(&format!("{api}/v1/status"), TOKEN).await;
    status["signers"].as_object().cloned().unwrap_or_default()
}

async fn metric(api: &str, node: &str) -> Option<f64> {
    let text = reqwest::Client::new()
        .get(format!("{api}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let label = format!("treasury_signer_up{{node=\"{node}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&label)).and_then(|v| v.trim().parse().ok())
}

/// Waits (up to a generous limit) until `check` holds of the status's signers.
async fn wait_for(
    api: &str,
    what: &str,
    check: impl Fn(&serde_json::Map<String, serde_json::Value>) -> bool,
) {
    let start = Instant::now();
    loop {
        let s = signers(api).await;
        if check(&s) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: signers {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configured_node_is_probed_and_a_node_down_is_reported_down_then_up() {
    let mut env = AgentEnv::start(&[IDLE]).await.unwrap();
    env.edit_config("[pipeline]\n", "[pipeline]\nsigner_probe_interval = \"200ms\"\n");
    env.serve_api();
    let config = env.config.display().to_string();
    let mut child = env
        .command(&["run", "--config", &config])
        .env("TEST_API_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let _agent = Agent(child);
    let api = stdout.next().unwrap().unwrap().trim_start_matches("api listening on ").to_string();
    let urls: Vec<String> = env.nodes.iter().map(|n| n.url.clone()).collect();

    // Nothing was signed: the nodes are listed because they were probed.
    wait_for(&api, "every node listed up", |s| {
        s.len() == urls.len() && s.values().all(|up| up == &serde_json::Value::Bool(true))
    })
    .await;
    assert_eq!(metric(&api, &urls[2]).await, Some(1.0));

    let down = urls[2].clone();
    env.nodes[2].kill().await;
    wait_for(&api, "the killed node reported down", |s| {
        s.get(&down) == Some(&serde_json::Value::Bool(false))
    })
    .await;
    assert_eq!(metric(&api, &down).await, Some(0.0));
    let others = signers(&api).await;
    assert!(urls[..2].iter().all(|u| others.get(u) == Some(&serde_json::Value::Bool(true))), "{others:?}");

    let rpc = env.chain.anvil.url().to_string();
    env.restart_node_with_rpc(2, &rpc).await.unwrap();
    wait_for(&api, "the node back up", |s| s.get(&down) == Some(&serde_json::Value::Bool(true))).await;
}
