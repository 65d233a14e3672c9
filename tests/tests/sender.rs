//! The keeper's sender against a real anvil: confirmations, replacement, reorgs, nonce resync, resume.

use std::time::{Duration, Instant};

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Decodable2718;
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, TxHash, U256, address};
use alloy::providers::{DynProvider, Provider, ProviderBuilder, WsConnect};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use treasury_chain::sender::{
    ObserverError, SendEvent, SendObserver, Sender, SenderConfig, SenderError, TxRequest,
};
use treasury_devnet::Anvil;

const KEEPER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const RECIPIENT: Address = address!("0x00000000000000000000000000000000000000a1");
const GWEI: u128 = 1_000_000_000;

fn provider(anvil: &Anvil) -> DynProvider {
    ProviderBuilder::new().connect_http(anvil.url().parse().unwrap()).erased()
}

fn keeper() -> PrivateKeySigner {
    KEEPER_KEY.parse().unwrap()
}

fn config(confirmations: u64) -> SenderConfig {
    SenderConfig {
        confirmations,
        bump_after_blocks: 2,
        max_fee_per_gas: 1_000 * GWEI,
        priority_fee_per_gas: Some(GWEI),
        poll_interval: Duration::from_millis(10),
        ..SenderConfig::default()
    }
}

fn transfer(wei: u64) -> TxRequest {
    TxRequest { to: RECIPIENT, value: U256::from(wei), ..TxRequest::default() }
}

async fn rpc(provider: &DynProvider, method: &'static str, params: serde_json::Value) {
    let _: serde_json::Value = provider.raw_request(method.into(), params).await.unwrap();
}

/// Mines a block every 20 ms (after `before_each`) until `fut` completes.
async fn mine_while<T>(
    provider: &DynProvider,
    fut: impl Future<Output = T>,
    before_each: serde_json::Value,
) -> T {
    tokio::pin!(fut);
    for _ in 0..3_000 {
        tokio::select! {
            out = &mut fut => return out,
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                if !before_each.is_null() {
                    rpc(provider, "anvil_setNextBlockBaseFeePerGas", before_each.clone()).await;
                }
                rpc(provider, "evm_mine", serde_json::json!([])).await;
            }
        }
    }
    panic!("the send did not finish within 3000 blocks");
}

/// Waits for the first event matching `pred`, keeping every event seen in `log`.
async fn wait_for(
    rx: &mut UnboundedReceiver<SendEvent>,
    log: &mut Vec<SendEvent>,
    pred: impl Fn(&SendEvent) -> bool,
) -> SendEvent {
    loop {
        let event = rx.recv().await.expect("sender still running");
        log.push(event.clone());
        if pred(&event) {
            return event;
        }
    }
}

fn signed_hashes(events: &[SendEvent]) -> Vec<TxHash> {
    events
        .iter()
        .filter_map(|e| match e {
            SendEvent::Signed { tx_hash, .. } => Some(*tx_hash),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_gas_limit_is_checked_at_exactly_that_limit_with_the_overrides_applied() {
    let anvil = Anvil::start().unwrap();
    let provider = provider(&anvil);
    let sender = Sender::new(provider.clone(), keeper(), config(1)).await.unwrap();
    let pay = transfer(1);
    // A plain transfer needs exactly its intrinsic 21,000 gas.
    assert!(sender.succeeds_with_gas(&pay, None, 21_000).await);
    assert!(!sender.succeeds_with_gas(&pay, None, 20_999).await, "one gas short must fail");
    // With the recipient's code overridden by `REVERT`, no limit succeeds.
    let reverts = alloy::rpc::types::state::StateOverridesBuilder::default()
        .with_code(RECIPIENT, alloy::primitives::Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xfd]))
        .build();
    assert!(!sender.succeeds_with_gas(&pay, Some(reverts), 100_000).await);
    assert_eq!(provider.get_block_number().await.unwrap(), 0, "a check sends nothing");
}

#[tokio::test]
async fn send_waits_for_confirmations_and_reports_each_step_first() {
    let anvil = Anvil::start().unwrap();
    let provider = provider(&anvil);
    let sender = Sender::new(provider.clone(), keeper(), config(3)).await.unwrap();
    let mut events = Vec::new();

    let sent = mine_while(&provider, sender.send(&transfer(12_345), &mut events), serde_json::Value::Null)
        .await
        .unwrap();

    assert!(sent.receipt.status());
    assert_eq!(sent.nonce, 0);
    let mined_in = sent.receipt.block_number.unwrap();
    assert!(provider.get_block_number().await.unwrap() >= mined_in + 2, "buried under 3 blocks");
    assert_eq!(provider.get_balance(RECIPIENT).await.unwrap(), U256::from(12_345));
    // The journal sees the raw transaction before it is broadcast, and it is exactly what was mined.
    let SendEvent::Signed { raw, tx_hash, .. } = &events[0] else {
        panic!("first event must be Signed, got {events:?}")
    };
    assert_eq!(*tx_hash, sent.receipt.transaction_hash);
    let decoded = TxEnvelope::decode_2718(&mut raw.as_ref()).unwrap();
    assert_eq!(*decoded.tx_hash(), *tx_hash);
    assert!(matches!(events[1], SendEvent::Broadcast { tx_hash: h } if h == *tx_hash));
    assert!(matches!(events.last(), Some(SendEvent::Confirmed { success: true, .. })));
    assert_eq!(sender.next_nonce(), Some(1));
}

#[tokio::test]
async fn stuck_transaction_is_replaced_with_bumped_fees_and_same_nonce() {
    let anvil = Anvil::start().unwrap();
    let provider = provider(&anvil);
    rpc(&provider, "evm_setAutomine", serde_json::json!([false])).await;
    let sender = Sender::new(provider.clone(), keeper(), config(2)).await.unwrap();
    let (tx, mut rx) = unbounded_channel();
    let task = tokio::spawn({
        let mut tx = tx;
        async move { sender.send(&transfer(7), &mut tx).await }
    });
    let mut log = Vec::new();
    wait_for(&mut rx, &mut log, |e| matches!(e, SendEvent::Broadcast { .. })).await;

    // Blocks whose base fee is far above the offered max fee: the transaction cannot be included.
    let high_base_fee = serde_json::json!([format!("{:#x}", 100 * GWEI)]);
    let sent = mine_while(&provider, task, high_base_fee).await.unwrap().unwrap();
    while let Ok(e) = rx.try_recv() {
        log.push(e);
    }

    let signed: Vec<_> = log
        .iter()
        .filter_map(|e| match e {
            SendEvent::Signed {
                nonce, tx_hash, max_fee_per_gas, max_priority_fee_per_gas, replaces, ..
            } => Some((*nonce, *tx_hash, *max_fee_per_gas, *max_priority_fee_per_gas, *replaces)),
            _ => None,
        })
        .collect();
    assert!(signed.len() >= 2, "a replacement was signed: {log:?}");
    let (first, second) = (signed[0], signed[1]);
    assert_eq!(first.0, second.0, "replacement keeps the nonce");
    assert_eq!(second.4, Some(first.1), "replacement names what it replaces");
    assert!(second.2 * 100 >= first.2 * 110, "max fee bumped ≥ 10%");
    assert!(second.3 * 100 >= first.3 * 110, "tip bumped ≥ 10%");
    assert!(signed.iter().all(|s| s.2 <= 1_000 * GWEI), "never above the cap");
    assert_eq!(sent.receipt.transaction_hash, signed.last().unwrap().1);
    assert!(provider.get_transaction_receipt(first.1).await.unwrap().is_none());
    assert_eq!(provider.get_balance(RECIPIENT).await.unwrap(), U256::from(7), "paid once");
}

#[tokio::test]
async fn reorg_that_drops_the_transaction_leads_to_resubmission_of_the_same_payload() {
    let anvil = Anvil::start().unwrap();
    let provider = provider(&anvil);
    rpc(&provider, "evm_setAutomine", serde_json::json!([false])).await;
    // No fee bump while the dropped transaction waits to be mined again (blocks come every 20 ms
    // below): a bump would sign a new payload, which is another test's subject.
    let config = SenderConfig { bump_after_blocks: 1_000, ..config(3) };
    let sender = Sender::new(provider.clone(), keeper(), config).await.unwrap();
    let (tx, mut rx) = unbounded_channel();
    let task = tokio::spawn({
        let mut tx = tx;
        async move { sender.send(&transfer(99), &mut tx).await }
    });
    let mut log = Vec::new();
    wait_for(&mut rx, &mut log, |e| matches!(e, SendEvent::Broadcast { .. })).await;
    rpc(&provider, "evm_mine", serde_json::json!([])).await;
    let SendEvent::Included { tx_hash, block_hash: first_block, block_number } =
        wait_for(&mut rx, &mut log, |e| matches!(e, SendEvent::Included { .. })).await
    else {
        unreachable!()
    };

    // Replace the block that holds the transaction with an empty one.
    rpc(&provider, "anvil_reorg", serde_json::json!([1, []])).await;
    let reorged = wait_for(&mut rx, &mut log, |e| matches!(e, SendEvent::Reorged { .. })).await;
    assert_eq!(reorged, SendEvent::Reorged { tx_hash, block_number });

    let sent = mine_while(&provider, task, serde_json::Value::Null).await.unwrap().unwrap();
    assert_eq!(sent.receipt.transaction_hash, tx_hash, "the same signed payload was mined again");
    assert_ne!(sent.receipt.block_hash.unwrap(), first_block);
    assert_eq!(signed_hashes(&log), vec![tx_hash], "nothing was re-signed");
    let keeper_nonce = provider.get_transaction_count(keeper().address()).await.unwrap();
    assert_eq!(keeper_nonce, 1, "executed exactly once");
    assert_eq!(provider.get_balance(RECIPIENT).await.unwrap(), U256::from(99));
}

#[tokio::test]
async fn nonce_is_resynced_after_an_external_transaction_from_the_same_key() {
    let anvil = Anvil::start().unwrap();
    let provider = provider(&anvil);
    let sender = Sender::new(provider.clone(), keeper(), config(1)).await.unwrap();
    assert_eq!(sender.next_nonce(), Some(0));

    // Someone else uses the keeper key behind the sender's back.
    let external = treasury_chain::provider::connect_with_signer(anvil.url(), keeper()).unwrap();
    let tx = TransactionRequest::default().with_to(RECIPIENT).with_value(U256::from(1));
    external.send_transaction_sync(tx).await.unwrap();

    let mut events = Vec::new();
    let sent = sender.send(&transfer(2), &mut events).await.unwrap();

    assert_eq!(sent.nonce, 1);
    assert!(events.contains(&SendEvent::NonceResynced { previous: Some(0), next: 1 }), "{events:?}");
    let signed = signed_hashes(&events);
    assert_eq!(signed.len(), 2, "signed with the stale nonce, then with the fresh one");
    assert!(provider.get_transaction_receipt(signed[0]).await.unwrap().is_none());
    assert_eq!(provider.get_balance(RECIPIENT).await.unwrap(), U256::from(3));
    assert_eq!(sender.next_nonce(), Some(2));
}

/// An observer that stores what it is told, then fails at the first broadcast: a crash after the
/// journal write, before the transaction left.
struct CrashBeforeBroadcast(Vec<SendEvent>);

impl SendObserver for CrashBeforeBroadcast {
    async fn observe(&mut self, event: &SendEvent) -> Result<(), ObserverError> {
        self.0.push(event.clone());
        match event {
            SendEvent::Signed { .. } => Err("killed".into()),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn resume_from_the_journaled_raw_transaction_after_a_crash() {
    let anvil = Anvil::start().unwrap();
    let provider = provider(&anvil);
    let first = Sender::new(provider.clone(), keeper(), config(1)).await.unwrap();
    let mut crash = CrashBeforeBroadcast(Vec::new());
    let err = first.send(&transfer(5), &mut crash).await.unwrap_err();
    assert!(matches!(err, SenderError::Observer(_)));
    let SendEvent::Signed { raw, tx_hash, .. } = crash.0[0].clone() else { unreachable!() };
    assert_eq!(provider.get_balance(RECIPIENT).await.unwrap(), U256::ZERO, "nothing left before the crash");

    let restarted = Sender::new(provider.clone(), keeper(), config(1)).await.unwrap();
    let sent = restarted.resume(&raw, &mut Vec::new()).await.unwrap();
    assert_eq!(sent.receipt.transaction_hash, tx_hash);
    assert_eq!(provider.get_balance(RECIPIENT).await.unwrap(), U256::from(5));
    // Resuming again (a second crash after broadcast) does not pay twice.
    let again = restarted.resume(&raw, &mut Vec::new()).await.unwrap();
    assert_eq!(again.receipt.transaction_hash, tx_hash);
    assert_eq!(provider.get_balance(RECIPIENT).await.unwrap(), U256::from(5));
    // A raw transaction signed by another key is refused.
    let other: PrivateKeySigner =
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d".parse().unwrap();
    let foreign = Sender::new(provider.clone(), other, config(1)).await.unwrap();
    assert!(matches!(foreign.resume(&raw, &mut Vec::new()).await, Err(SenderError::InvalidRaw(_))));
}

#[tokio::test]
async fn call_that_would_revert_is_refused_before_signing() {
    let anvil = Anvil::start().unwrap();
    let provider = provider(&anvil);
    let sender = Sender::new(provider.clone(), keeper(), config(1)).await.unwrap();
    // A contract whose code is `revert(0, 0)`: estimation fails, nothing is signed, the nonce is untouched.
    let reverter = address!("0x00000000000000000000000000000000000000bb");
    rpc(&provider, "anvil_setCode", serde_json::json!([reverter, "0x60006000fd"])).await;
    let request = TxRequest { to: reverter, ..transfer(0) };
    let mut events = Vec::new();
    let err = sender.send(&request, &mut events).await.unwrap_err();
    assert!(err.is_revert(), "{err}");
    assert!(events.is_empty());
    assert_eq!(sender.next_nonce(), Some(0));
}

#[tokio::test]
async fn an_endpoint_down_at_estimation_is_retryable_not_a_revert() {
    let mut anvil = Anvil::start().unwrap();
    let sender = Sender::new(provider(&anvil), keeper(), config(1)).await.unwrap();
    anvil.kill();
    let mut events = Vec::new();
    let err = sender.send(&transfer(1), &mut events).await.unwrap_err();
    assert!(err.is_retryable() && !err.is_revert(), "{err}");
    assert!(events.is_empty(), "nothing signed");
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

async fn time_sends(sender: &Sender, n: usize) -> Vec<Duration> {
    let request = TxRequest { gas_limit: Some(21_000), ..transfer(1) };
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let sent = sender.send(&request, &mut treasury_chain::sender::Ignore).await.unwrap();
        samples.push(start.elapsed());
        assert_eq!(sent.nonce, i as u64, "consecutive nonces, no gaps");
    }
    samples.sort();
    samples
}

/// Measures send-to-confirmed latency on anvil with automine (printed; see docs/PERFORMANCE.md).
#[tokio::test]
async fn latency_to_receipt_over_http_and_ws() {
    const N: usize = 200;
    let anvil = Anvil::start().unwrap();
    let http = Sender::new(provider(&anvil), keeper(), config(1)).await.unwrap();
    let http_samples = time_sends(&http, N).await;

    let ws_url = anvil.ws_url();
    let ws_provider = ProviderBuilder::new().connect_ws(WsConnect::new(ws_url)).await.unwrap().erased();
    let other: PrivateKeySigner =
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a".parse().unwrap();
    let ws = Sender::new(ws_provider, other, config(1)).await.unwrap();
    let ws_samples = time_sends(&ws, N).await;

    for (name, s) in [("http", &http_samples), ("ws", &ws_samples)] {
        println!(
            "sender {name}: n={N} p50={:?} p90={:?} p99={:?} max={:?}",
            percentile(s, 50),
            percentile(s, 90),
            percentile(s, 99),
            s[s.len() - 1]
        );
    }
    let provider = provider(&anvil);
    assert_eq!(provider.get_balance(RECIPIENT).await.unwrap(), U256::from(2 * N));
}
