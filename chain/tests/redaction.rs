//! RPC URLs carry API keys (`https://mainnet.example/v3/KEY`): errors name the endpoint's host,
//! never its path, query or credentials.
use treasury_chain::provider::{chain_id, connect};

const SECRET: &str = "s3cr3tApiKey0123";

/// The error and every error it was caused by, as text.
fn whole_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(" / ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// Attack (issue 13 item 11): an RPC endpoint that is down makes the agent log and return its
/// error; whoever reads logs or API errors must not learn the provider's API key.
#[tokio::test]
async fn rpc_errors_do_not_reveal_the_urls_key() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let provider =
        connect(&format!("http://user:{SECRET}@127.0.0.1:{port}/v3/{SECRET}?key={SECRET}")).unwrap();
    let err = chain_id(&provider).await.expect_err("nothing listens there");
    let text = whole_chain(&err);
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("127.0.0.1"), "the host is still named: {text}");
    let bad = connect(&format!("https://rpc.example:notaport/v3/{SECRET}")).expect_err("not a URL");
    let text = whole_chain(&bad);
    assert!(!text.contains(SECRET), "{text}");
}
