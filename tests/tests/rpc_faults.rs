//! An RPC endpoint that is down, answers garbage, or points at the wrong contracts gives a clear
//! error naming the call and address, never a panic.

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use treasury_chain::ChainError;
use treasury_chain::snapshot::{AssetSpec, SnapshotSpec, read_snapshot};
use treasury_devnet::TestChain;

fn spec(module: Address, multicall3: Address, safe: Address) -> SnapshotSpec {
    SnapshotSpec {
        safe,
        module,
        multicall3,
        assets: vec![AssetSpec {
            symbol: "ETH".into(),
            token: Address::ZERO,
            decimals: 18,
            feed: None,
            max_price_age_secs: 60,
        }],
    }
}

/// Serves every HTTP request with `body` (status 200) until dropped.
async fn garbage_server(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn endpoint_down_is_a_retryable_error_naming_the_call() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener); // nothing listens there any more
    let provider = treasury_chain::provider::connect(&url).unwrap();
    let err = read_snapshot(
        &provider,
        &spec(Address::ZERO, Address::ZERO, Address::ZERO),
        BlockNumberOrTag::Latest,
    )
    .await
    .expect_err("a closed port cannot answer");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("eth_getBlockByNumber"), "error must name the call: {err}");
}

#[tokio::test]
async fn garbage_answers_are_errors_not_panics() {
    for body in [
        "this is not json",
        "{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":42}",
        "{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"number\":\"zz\"}}",
    ] {
        let url = garbage_server(body).await;
        let provider = treasury_chain::provider::connect(&url).unwrap();
        let result = read_snapshot(
            &provider,
            &spec(Address::ZERO, Address::ZERO, Address::ZERO),
            BlockNumberOrTag::Latest,
        )
        .await;
        let err = result.expect_err("garbage must not parse into a snapshot");
        assert!(
            err.to_string().contains("eth_getBlockByNumber"),
            "error must name the call for {body:?}: {err}"
        );
    }
}

#[tokio::test]
async fn wrong_contract_address_names_the_call_and_address() {
    let chain = TestChain::start().await.unwrap();
    let d = &chain.deployment;
    let bogus_module = Address::repeat_byte(0x5a);
    let err =
        read_snapshot(&chain.keeper, &spec(bogus_module, d.multicall3, d.safe), BlockNumberOrTag::Latest)
            .await
            .expect_err("an address without the module's code cannot answer its views");
    let text = err.to_string();
    assert!(matches!(err, ChainError::InvalidAnswer { .. }), "{text}");
    assert!(text.contains("TreasuryModule.nonce") && text.contains(&bogus_module.to_string()), "{text}");

    let err = read_snapshot(&chain.keeper, &spec(d.module, bogus_module, d.safe), BlockNumberOrTag::Latest)
        .await
        .expect_err("Multicall3 at the wrong address");
    assert!(err.to_string().contains("Multicall3"), "{err}");
}
