//! The Escalator's tier classification against a real module on anvil: every operation is classified
//! from the module's views (`read_facts`, `Escalator::tier`) and the verdict is checked against what
//! the module itself does with the FROST signature alone (tier 1 executes, tier 2 reverts).
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolCall;
use treasury_chain::contracts::TreasuryModule::{self, TreasuryModuleErrors};
use treasury_chain::contracts::{AggregatorV3Interface, IERC20, exec_calls};
use treasury_chain::tiers::{Tier, classify, read_facts};
use treasury_chain::{Call, Operation, TIER_QUORUM, TIER_ROOT, operation_digest};
use treasury_devnet::TestChain;
use treasury_signer::quorum::FrostSignature;
use treasury_signer::root::RootClient;
use treasury_signer::root::escalation::{Escalator, FrostAuthorizer};

/// The test chain's quorum as the Escalator's FROST side.
struct Quorum(Arc<TestChain>);

#[async_trait::async_trait]
impl FrostAuthorizer for Quorum {
    async fn sign_operation(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        root_sig: Option<&[u8]>,
    ) -> treasury_signer::root::error::Result<FrostSignature> {
        let tier = if root_sig.is_some() { TIER_ROOT } else { TIER_QUORUM };
        let s = self.0.quorum.sign(operation_digest(op, tier, chain_id, module));
        Ok(FrostSignature { r_x: s.rX, r_y: s.rY, z: s.z })
    }
}

fn e18(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

fn e6(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000u64)
}

/// What the module does with `op` signed by the quorum alone: `None` if it would execute.
async fn module_verdict(chain: &TestChain, op: &Operation) -> Option<TreasuryModuleErrors> {
    let d = &chain.deployment;
    let sig = chain.quorum.sign(operation_digest(op, TIER_QUORUM, d.chain_id, d.module));
    let module = TreasuryModule::new(d.module, chain.keeper.clone());
    match module.exec(exec_calls(op), op.nonce, op.deadline, sig, Bytes::new()).call().await {
        Ok(_) => None,
        Err(e) => Some(e.as_decoded_interface_error::<TreasuryModuleErrors>().expect("a module error")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tiers_read_from_anvil_agree_with_the_module() {
    let chain = Arc::new(TestChain::start().await.unwrap());
    let d = chain.deployment.clone();
    let usdc = d.token("USDC").unwrap().address;
    let bob = Address::repeat_byte(0xb0);
    let nonce = chain.module_nonce().await.unwrap();
    let op = |calls: Vec<Call>| Operation { calls, nonce, deadline: U256::from(u64::MAX) };
    let pay =
        |amount: U256| Call::new(usdc, U256::ZERO, IERC20::transferCall { to: bob, amount }.abi_encode());
    let approve = |spender: Address| {
        Call::new(usdc, U256::ZERO, IERC20::approveCall { spender, amount: e6(1) }.abi_encode())
    };

    // (operation, the reason tier 1 does not suffice — None for tier 1, the module error expected)
    let cases: Vec<(&str, Operation, Option<&str>)> = vec![
        ("100 USDC, within the 50,000/day budget", op(vec![pay(e6(100))]), None),
        (
            "1 ETH to an EOA, within the 5 ETH/day budget",
            op(vec![Call::new(bob, e18(1), Bytes::new())]),
            None,
        ),
        ("approve the allow-listed router", op(vec![approve(d.router)]), None),
        ("60,000 USDC, over the budget", op(vec![pay(e6(60_000))]), Some("exceeds the remaining budget")),
        ("6 ETH, over the ETH budget", op(vec![Call::new(bob, e18(6), Bytes::new())]), Some("exceeds")),
        (
            "a call to an unlisted target",
            op(vec![Call::new(d.eth_feed, U256::ZERO, AggregatorV3Interface::decimalsCall {}.abi_encode())]),
            Some("is not allow-listed"),
        ),
        (
            "ETH to a contract (WETH)",
            op(vec![Call::new(d.weth, e18(1), Bytes::new())]),
            Some("is not allow-listed"),
        ),
        ("approve an unlisted spender", op(vec![approve(bob)]), Some("spender")),
    ];

    for (what, op, reason) in &cases {
        let facts = read_facts(&chain.keeper, d.module, op).await.unwrap();
        let tier = classify(op, &facts);
        let verdict = module_verdict(&chain, op).await;
        match reason {
            None => {
                assert_eq!(tier, Tier::One, "{what}");
                assert!(verdict.is_none(), "{what}: the module refuses tier 1: {verdict:?}");
            }
            Some(r) => {
                let Tier::Two(reasons) = &tier else { panic!("{what}: classified tier 1") };
                assert!(reasons.iter().any(|x| x.contains(r)), "{what}: {reasons:?}");
                assert!(
                    matches!(
                        verdict,
                        Some(
                            TreasuryModuleErrors::BudgetExceeded(_)
                                | TreasuryModuleErrors::CallNotAllowed(_)
                                | TreasuryModuleErrors::SpenderNotAllowed(_)
                        )
                    ),
                    "{what}: FROST alone must not pass: {verdict:?}"
                );
            }
        }
    }

    // The Escalator itself: tier from chain, and a tier-1 authorisation that the module executes.
    let escalator = Escalator {
        root: RootClient::new("http://127.0.0.1:9", "unused"),
        frost: Arc::new(Quorum(chain.clone())),
        provider: chain.keeper.clone(),
        chain_id: d.chain_id,
        module: d.module,
        poll: Duration::from_millis(10),
    };
    let over = &cases[3].1;
    assert!(matches!(escalator.tier(over).await.unwrap(), Tier::Two(_)));
    let small = &cases[0].1;
    let auth = escalator.authorise(small).await.unwrap();
    assert_eq!((auth.tier, auth.root_sig.len(), auth.root_request.clone()), (1, 0, None));
    let frost = TreasuryModule::FrostSig { rX: auth.frost.r_x, rY: auth.frost.r_y, z: auth.frost.z };
    chain.exec_signed(small, frost, auth.root_sig).await.unwrap();
    let token = IERC20::new(usdc, chain.keeper.clone());
    assert_eq!(token.balanceOf(bob).call().await.unwrap(), e6(100));

    // Spending moves the budget: the same 49,950 USDC that fitted before no longer does.
    let rest = op(vec![pay(e6(49_950))]);
    let rest = Operation { nonce: chain.module_nonce().await.unwrap(), ..rest };
    assert!(matches!(escalator.tier(&rest).await.unwrap(), Tier::Two(r) if r[0].contains("budget")));
}
