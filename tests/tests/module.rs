//! The treasury module on anvil, driven from Rust: the digest the signers compute is the module's,
//! a FROST-signed payment executes, a replay or a tampered operation does not, tier 2 needs the root,
//! and a snapshot reads what the chain holds.

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::sol_types::SolCall;
use treasury_chain::contracts::{IERC20, TreasuryModule, exec_calls};
use treasury_chain::snapshot::read_snapshot;
use treasury_chain::{
    AdminAction, AdminOp, Call, Operation, TIER_QUORUM, TIER_ROOT, admin_digest, operation_digest,
};
use treasury_devnet::TestChain;

fn transfer(token: Address, to: Address, amount: U256) -> Call {
    Call::new(token, U256::ZERO, IERC20::transferCall { to, amount }.abi_encode())
}

fn module(chain: &TestChain) -> TreasuryModule::TreasuryModuleInstance<alloy::providers::DynProvider> {
    TreasuryModule::new(chain.deployment.module, chain.keeper.clone())
}

async fn next_nonce(chain: &TestChain) -> U256 {
    module(chain).nonce().call().await.unwrap()
}

fn far_deadline() -> U256 {
    U256::from(u64::MAX)
}

#[tokio::test]
async fn rust_digest_equals_the_modules_digest() {
    let chain = TestChain::start().await.unwrap();
    let d = &chain.deployment;
    let usdc = d.token("USDC").unwrap().address;
    let op = Operation {
        calls: vec![
            transfer(usdc, Address::repeat_byte(0x11), U256::from(1_000_000u64)),
            Call {
                to: Address::repeat_byte(0x22),
                value: U256::from(7u64),
                data: Bytes::new(),
                operation: 1,
            },
        ],
        nonce: U256::from(42u64),
        deadline: U256::from(1_900_000_000u64),
    };
    for tier in [TIER_QUORUM, TIER_ROOT] {
        let on_chain = module(&chain)
            .operationDigest(exec_calls(&op), op.nonce, op.deadline, tier)
            .call()
            .await
            .unwrap();
        assert_eq!(on_chain, operation_digest(&op, tier, d.chain_id, d.module), "tier {tier}");
    }
    assert_ne!(
        operation_digest(&op, TIER_QUORUM, d.chain_id, d.module),
        operation_digest(&op, TIER_ROOT, d.chain_id, d.module),
        "the tier is signed"
    );

    let admin = AdminOp {
        action: AdminAction::Pause.code(),
        params: AdminAction::Pause.params(),
        nonce: U256::from(3u64),
        deadline: U256::from(1_900_000_000u64),
    };
    let module_admin = TreasuryModule::AdminOp {
        action: admin.action,
        params: admin.params.clone(),
        nonce: admin.nonce,
        deadline: admin.deadline,
    };
    let on_chain = module(&chain).adminDigest(module_admin).call().await.unwrap();
    assert_eq!(on_chain, admin_digest(&admin, d.chain_id, d.module));
    // A digest for another chain id or module must differ: both are bound into the domain.
    assert_ne!(on_chain, admin_digest(&admin, d.chain_id + 1, d.module));
    assert_ne!(on_chain, admin_digest(&admin, d.chain_id, Address::repeat_byte(1)));
}

#[tokio::test]
async fn frost_signed_payment_executes_once_and_snapshot_sees_it() {
    let chain = TestChain::start().await.unwrap();
    let d = chain.deployment.clone();
    let usdc = d.token("USDC").unwrap();
    let recipient = Address::repeat_byte(0x42);
    let amount = U256::from(1_234u64) * U256::from(1_000_000u64);
    let op = Operation {
        calls: vec![transfer(usdc.address, recipient, amount)],
        nonce: next_nonce(&chain).await,
        deadline: far_deadline(),
    };
    let sig = chain.quorum.sign(operation_digest(&op, TIER_QUORUM, d.chain_id, d.module));

    let spec = chain.snapshot_spec();
    let before = read_snapshot(&chain.keeper, &spec, BlockNumberOrTag::Latest).await.unwrap();

    chain.exec_signed(&op, sig.clone(), Bytes::new()).await.expect("tier-1 payment must execute");

    let token = IERC20::new(usdc.address, chain.keeper.clone());
    assert_eq!(token.balanceOf(recipient).call().await.unwrap(), amount);

    // The same signed operation cannot run twice.
    let replay = module(&chain).exec(exec_calls(&op), op.nonce, op.deadline, sig, Bytes::new()).call().await;
    let err = replay.expect_err("replay must revert");
    assert!(
        matches!(
            err.as_decoded_interface_error::<TreasuryModule::TreasuryModuleErrors>(),
            Some(TreasuryModule::TreasuryModuleErrors::BadNonce(_))
        ),
        "replay must fail with BadNonce, got {err:?}"
    );

    let after = read_snapshot(&chain.keeper, &spec, BlockNumberOrTag::Latest).await.unwrap();
    assert!(after.block_number > before.block_number);
    assert_eq!(after.module_nonce, before.module_nonce + U256::from(1));
    let (usdc_before, usdc_after) = (before.asset("USDC").unwrap(), after.asset("USDC").unwrap());
    assert_eq!(usdc_before.balance - usdc_after.balance, amount);
    let (b0, b1) = (usdc_before.budget.clone().unwrap(), usdc_after.budget.clone().unwrap());
    assert_eq!(b0.remaining - b1.remaining, amount, "the payment must be charged to the budget");
    let price = usdc_after.price.clone().unwrap();
    assert_eq!(price.decimals, 8);
    assert!(!price.stale);
    assert_eq!(after.asset("ETH").unwrap().balance, before.asset("ETH").unwrap().balance);
}

#[tokio::test]
async fn tampered_operation_is_rejected_and_tier_two_needs_the_root() {
    let chain = TestChain::start().await.unwrap();
    let d = chain.deployment.clone();
    let usdc = d.token("USDC").unwrap().address;
    let nonce = next_nonce(&chain).await;
    let op = Operation {
        calls: vec![transfer(usdc, Address::repeat_byte(7), U256::from(5u64))],
        nonce,
        deadline: far_deadline(),
    };
    let sig = chain.quorum.sign(operation_digest(&op, TIER_QUORUM, d.chain_id, d.module));

    let mut tampered = op.clone();
    tampered.calls[0] = transfer(usdc, Address::repeat_byte(7), U256::from(5_000_000u64));
    let err = module(&chain)
        .exec(exec_calls(&tampered), nonce, op.deadline, sig, Bytes::new())
        .call()
        .await
        .expect_err("a changed amount must not verify");
    assert!(matches!(
        err.as_decoded_interface_error::<TreasuryModule::TreasuryModuleErrors>(),
        Some(TreasuryModule::TreasuryModuleErrors::InvalidFrostSignature(_))
    ));

    // An approval on an asset without a budget (WETH) needs the root as well.
    let stray = Call::new(
        d.weth,
        U256::ZERO,
        IERC20::approveCall { spender: Address::repeat_byte(9), amount: U256::from(1u64) }.abi_encode(),
    );
    let op = Operation { calls: vec![stray], nonce, deadline: far_deadline() };
    let sig1 = chain.quorum.sign(operation_digest(&op, TIER_QUORUM, d.chain_id, d.module));
    let err = module(&chain)
        .exec(exec_calls(&op), nonce, op.deadline, sig1, Bytes::new())
        .call()
        .await
        .expect_err("tier 1 must refuse an approval on an untracked asset");
    assert!(matches!(
        err.as_decoded_interface_error::<TreasuryModule::TreasuryModuleErrors>(),
        Some(TreasuryModule::TreasuryModuleErrors::CallNotAllowed(_))
    ));
    let digest = operation_digest(&op, TIER_ROOT, d.chain_id, d.module);
    let sig = chain.quorum.sign(digest);
    // Stripping the root signature from a tier-2 operation leaves a FROST signature over the
    // tier-2 digest: useless at tier 1.
    let err = module(&chain)
        .exec(exec_calls(&op), nonce, op.deadline, sig.clone(), Bytes::new())
        .call()
        .await
        .expect_err("a stripped tier-2 operation must not run as tier 1");
    assert!(matches!(
        err.as_decoded_interface_error::<TreasuryModule::TreasuryModuleErrors>(),
        Some(TreasuryModule::TreasuryModuleErrors::InvalidFrostSignature(_))
    ));
    let root_sig = chain.root.sign_hash_sync(&digest).unwrap();
    chain
        .exec_signed(&op, sig, Bytes::from(root_sig.as_bytes().to_vec()))
        .await
        .expect("FROST and root together authorise tier 2");
}

#[tokio::test]
async fn snapshot_flags_a_stale_price_and_the_deployment_file_round_trips() {
    let chain = TestChain::start().await.unwrap();
    let d = chain.deployment.clone();
    let spec = chain.snapshot_spec();
    let fresh = read_snapshot(&chain.keeper, &spec, BlockNumberOrTag::Latest).await.unwrap();
    let gov = fresh.asset("GOV").unwrap().price.clone().unwrap();
    assert!(!gov.stale);

    // The feed last updated two hours before the block: older than the one-hour bound.
    let feed = treasury_chain::contracts::PriceFeed::new(d.token("GOV").unwrap().feed, chain.keeper.clone());
    let old = U256::from(fresh.timestamp - 7_200);
    feed.setAnswerAt(gov.answer, old).send().await.unwrap().get_receipt().await.unwrap();
    let later = read_snapshot(&chain.keeper, &spec, BlockNumberOrTag::Latest).await.unwrap();
    let gov = later.asset("GOV").unwrap().price.clone().unwrap();
    assert!(gov.stale, "a price older than max_price_age_secs must be flagged stale");
    assert!(gov.age_secs >= 7_200);
    assert!(!later.asset("USDC").unwrap().price.clone().unwrap().stale, "other feeds stay fresh");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployment.json");
    d.write(&path).unwrap();
    assert_eq!(treasury_devnet::Deployment::read(&path).unwrap(), d);
    let missing = treasury_devnet::Deployment::read(&dir.path().join("nope.json")).unwrap_err();
    assert!(missing.to_string().contains("nope.json"), "{missing}");
}

#[tokio::test]
async fn many_treasuries_read_together_see_what_each_reads_alone() {
    use treasury_chain::snapshot::{MAX_CALLS_PER_AGGREGATE, read_snapshots};
    let chain = TestChain::start().await.unwrap();
    let spec = chain.snapshot_spec();
    // Enough treasuries (the same module, other holders) to need several aggregate calls.
    let per_spec = 2 + spec.assets.len() * 4;
    let count = MAX_CALLS_PER_AGGREGATE / per_spec * 2 + 3;
    let specs: Vec<_> = (0..count)
        .map(|i| {
            let mut s = spec.clone();
            if i > 0 {
                s.safe = Address::with_last_byte(i as u8);
            }
            s
        })
        .collect();
    let block = BlockNumberOrTag::Number(chain.keeper.get_block_number().await.unwrap());
    let together = read_snapshots(&chain.keeper, &specs, block).await.unwrap();
    assert_eq!(together.len(), count);
    for i in [0, 1, count / 2, count - 1] {
        let alone = read_snapshot(&chain.keeper, &specs[i], block).await.unwrap();
        assert_eq!(together[i], alone, "treasury {i}");
    }
    assert!(together[0].assets.iter().any(|a| !a.balance.is_zero()), "the deployed Safe holds funds");
}
