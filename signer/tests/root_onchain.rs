//! Tier 2 on anvil with the root key in SoftHSM2: a payment over the tier-1 budget reverts with the
//! FROST signature alone and executes once the HSM root signs the same digest.

mod root_support;

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolCall;
use root_support::token;
use treasury_chain::contracts::{IERC20, TreasuryModule};
use treasury_chain::{AdminAction, Call, Operation, TIER_QUORUM, TIER_ROOT, operation_digest};
use treasury_devnet::TestChain;
use treasury_devnet::softhsm::in_own_process;
use treasury_devnet::world::configure_as_safe;
use treasury_signer::root::Hsm;

#[tokio::test]
async fn tier_two_payment_needs_the_hsm_root_signature() {
    if !in_own_process() {
        return;
    }
    let (hsm, _) = Hsm::open_or_generate(&token("onchain", "root")).unwrap();
    let chain = TestChain::start().await.unwrap();
    let d = chain.deployment.clone();
    // The Safe's owners make the HSM key the module's root (immediate through the Safe itself).
    configure_as_safe(
        &chain.keeper,
        &d,
        chain.signing_owners(),
        &AdminAction::SetRoot { root: hsm.address() },
    )
    .await
    .unwrap();
    let module = TreasuryModule::new(d.module, chain.keeper.clone());
    assert_eq!(module.root().call().await.unwrap(), hsm.address());

    // 30,000 GOV is over the demo's 20,000 GOV daily tier-1 budget.
    let gov = d.token("GOV").unwrap().address;
    let recipient = Address::repeat_byte(0x3c);
    let amount = U256::from(30_000u64) * U256::from(10u64).pow(U256::from(18));
    let transfer = IERC20::transferCall { to: recipient, amount }.abi_encode();
    let op = Operation {
        calls: vec![Call::new(gov, U256::ZERO, transfer)],
        nonce: module.nonce().call().await.unwrap(),
        deadline: U256::from(u64::MAX),
    };
    let digest1 = operation_digest(&op, TIER_QUORUM, d.chain_id, d.module);
    let frost1 = chain.quorum.sign(digest1);
    // tier 2: the tier is signed, so the quorum signs the tier-2 digest the root signs too
    let digest = operation_digest(&op, TIER_ROOT, d.chain_id, d.module);
    let frost = chain.quorum.sign(digest);
    let calls = treasury_chain::contracts::exec_calls(&op);

    let err = module
        .exec(calls.clone(), op.nonce, op.deadline, frost1, Bytes::new())
        .call()
        .await
        .expect_err("FROST alone must not move more than the budget");
    assert!(matches!(
        err.as_decoded_interface_error::<TreasuryModule::TreasuryModuleErrors>(),
        Some(TreasuryModule::TreasuryModuleErrors::BudgetExceeded(_))
    ));

    // A root signature by any other key is refused.
    let wrong = chain.root.clone();
    let wrong_sig = alloy::signers::SignerSync::sign_hash_sync(&wrong, &digest).unwrap();
    let err = module
        .exec(calls.clone(), op.nonce, op.deadline, frost.clone(), Bytes::from(wrong_sig.as_bytes().to_vec()))
        .call()
        .await
        .expect_err("only the registered root may authorise tier 2");
    assert!(matches!(
        err.as_decoded_interface_error::<TreasuryModule::TreasuryModuleErrors>(),
        Some(TreasuryModule::TreasuryModuleErrors::InvalidRootSignature(_))
    ));

    let root_sig = hsm.sign_prehash(&digest).unwrap();
    chain
        .exec_signed(&op, frost, Bytes::from(root_sig.as_bytes().to_vec()))
        .await
        .expect("FROST and the HSM root together execute the payment");
    let token = IERC20::new(gov, chain.keeper.clone());
    assert_eq!(token.balanceOf(recipient).call().await.unwrap(), amount);
}
