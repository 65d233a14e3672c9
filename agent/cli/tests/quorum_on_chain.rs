//! A signature from a real quorum (three `treasury signer serve` processes, DKG among them) executes
//! a payment through the treasury module on anvil, and the module refuses it when replayed or when
//! the quorum's key is not the one registered.

use std::path::Path;
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::state::StateOverridesBuilder;
use alloy::sol_types::SolCall;
use treasury_chain::contracts::{IERC20, MODULE_GROUP_KEY_X_SLOT, TreasuryModule, exec_calls};
use treasury_chain::{AdminAction, Call, Operation, operation_digest};
use treasury_devnet::nodes::{NodeProcess, init_nodes};
use treasury_devnet::world::configure_as_safe;
use treasury_signer::quorum::coordinator::{Coordinator, CoordinatorOptions, PinnedNode, run_dkg};
use treasury_signer::quorum::guard::{AllowEntry, Budget, GuardConfig};
use treasury_signer::quorum::signature::stand_in_signature;

/// Passphrase of the test's node directories.
const NODE_PASS: &str = "node passphrase for tests";
use treasury_devnet::TestChain;
use treasury_signer::quorum::identity::IdentityKey;

const EXE: &str = env!("CARGO_BIN_EXE_treasury");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_signature_executes_a_payment_through_the_module() {
    let chain = TestChain::start().await.unwrap();
    let d = chain.deployment.clone();
    let usdc = d.token("USDC").unwrap().address;

    // Three nodes guarding this chain and module, DKG 2-of-3 among them.
    let tmp = tempfile::tempdir().unwrap();
    let coordinator_key = IdentityKey::generate();
    let guard = GuardConfig {
        chain_id: d.chain_id,
        module: d.module,
        root: Some(chain.root.address()),
        period_secs: 86_400,
        allow: vec![AllowEntry { target: usdc, selector: Some("0xa9059cbb".into()) }],
        spenders: vec![],
        budgets: vec![Budget { token: usdc, amount: U256::from(10_000_000_000u64) }],
        max_deadline_secs: None,
    };
    let reports = init_nodes(tmp.path(), 3, 2, &coordinator_key, &guard, NODE_PASS).unwrap();
    let mut nodes = Vec::new();
    for r in &reports {
        nodes.push(NodeProcess::spawn(Path::new(EXE), Path::new(&r.dir), NODE_PASS).await.unwrap());
    }
    let pinned: Vec<PinnedNode> = nodes
        .iter()
        .zip(&reports)
        .map(|(p, r)| PinnedNode { url: p.url.clone(), fingerprint: r.fingerprint.clone() })
        .collect();
    let dkg = run_dkg(coordinator_key.clone(), "unused.key", &pinned, 2, 5).await.unwrap();
    let coordinator = Coordinator::new(
        dkg.quorum.clone(),
        coordinator_key,
        CoordinatorOptions { timeout: Duration::from_secs(5), refill: 8, ..Default::default() },
    )
    .unwrap();

    let recipient = Address::repeat_byte(0x61);
    let amount = U256::from(2_500_000_000u64); // 2,500 USDC
    let transfer = IERC20::transferCall { to: recipient, amount }.abi_encode();
    let module = TreasuryModule::new(d.module, chain.keeper.clone());
    let nonce = module.nonce().call().await.unwrap();
    let op = Operation {
        calls: vec![Call::new(usdc, U256::ZERO, transfer)],
        nonce,
        deadline: U256::from(treasury_signer::quorum::nonces::now() + 3600),
    };
    let sig = coordinator.sign(&op, d.chain_id, d.module, None).await.unwrap();
    let frost = TreasuryModule::FrostSig { rX: sig.r_x, rY: sig.r_y, z: sig.z };

    // Before the module knows the quorum's key, the signature is refused.
    let err = module
        .exec(exec_calls(&op), op.nonce, op.deadline, frost.clone(), Bytes::new())
        .call()
        .await
        .expect_err("a key the module does not hold must not authorise");
    assert!(matches!(
        err.as_decoded_interface_error::<TreasuryModule::TreasuryModuleErrors>(),
        Some(TreasuryModule::TreasuryModuleErrors::InvalidFrostSignature(_))
    ));

    // The Safe's owners register the DKG group key (immediate through the Safe itself).
    let key = dkg.group_key;
    configure_as_safe(
        &chain.keeper,
        &d,
        chain.signing_owners(),
        &AdminAction::SetGroupKey { x: key.x, parity: key.parity },
    )
    .await
    .unwrap();
    assert_eq!(module.groupKey().call().await.unwrap().x, key.x);

    // The lane estimates the exec's gas before the quorum signs (docs/ARCHITECTURE.md, "The exec's
    // gas limit"): a stand-in signature under a key written over the module's key slot for the
    // estimate only. The slot is the module's key, and the estimate plus the lane's bound for the
    // signature's calldata (96 bytes × 40 gas) covers the estimate of the real signed exec.
    let slot = B256::from(U256::from(MODULE_GROUP_KEY_X_SLOT));
    let stored = chain.keeper.get_storage_at(d.module, slot.into()).await.unwrap();
    assert_eq!(stored, key.x, "the override writes the module's group key x");
    let digest = operation_digest(&op, 1, d.chain_id, d.module);
    let (stand_in_x, stand_in) = stand_in_signature(digest.as_slice(), key.parity).unwrap();
    let stand_in = TreasuryModule::FrostSig { rX: stand_in.r_x, rY: stand_in.r_y, z: stand_in.z };
    let request = |sig| {
        module
            .exec(exec_calls(&op), op.nonce, op.deadline, sig, Bytes::new())
            .into_transaction_request()
            .with_from(chain.keeper_key.address())
    };
    let overrides =
        StateOverridesBuilder::default().with_state_diff(d.module, [(slot, B256::from(stand_in_x))]);
    let before_signature =
        chain.keeper.estimate_gas(request(stand_in)).overrides(overrides.build()).await.unwrap();
    let signed = chain.keeper.estimate_gas(request(frost.clone())).await.unwrap();
    assert!(before_signature + 96 * 40 >= signed, "stand-in {before_signature} vs signed {signed}");

    chain
        .exec_signed(&op, frost.clone(), Bytes::new())
        .await
        .expect("the quorum's signature must execute the payment");
    let token = IERC20::new(usdc, chain.keeper.clone());
    assert_eq!(token.balanceOf(recipient).call().await.unwrap(), amount);

    let replay = module.exec(exec_calls(&op), op.nonce, op.deadline, frost, Bytes::new()).call().await;
    assert!(replay.is_err(), "the same signed operation must not execute twice");
}
