//! Property tests (proptest) of the parts an attacker feeds directly: the nodes' and the root's
//! guards, the wire decoding of node requests, and quorum-file parsing.
use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use proptest::prelude::*;
use treasury_chain::contracts::IERC20;
use treasury_chain::operation::{Call, Operation, TIER_QUORUM, operation_digest};
use treasury_signer::quorum::guard::{
    AllowEntry, Budget, BudgetState, GuardConfig as NodeGuard, TRANSFER, Tier,
};
use treasury_signer::quorum::quorum_file::{QuorumFile, QuorumNode, RefreshRecord};
use treasury_signer::quorum::wire::{CommitmentsRequest, DkgRound1Request, SignRequest};
use treasury_signer::root::guard::{AllowedCall, AssetLimits, GuardConfig as RootGuard, ServedModule};

const CHAIN: u64 = 31337;
const NOW: u64 = 1_000_000;

fn token() -> Address {
    Address::repeat_byte(0x70)
}
fn module() -> Address {
    Address::repeat_byte(0x4d)
}
fn friend() -> Address {
    Address::repeat_byte(0x01)
}
fn keeper() -> Address {
    Address::repeat_byte(0x6b)
}

fn transfer_call(to: Address, amount: u64) -> Call {
    Call::new(token(), U256::ZERO, IERC20::transferCall { to, amount: U256::from(amount) }.abi_encode())
}

/// Calls of every shape the guards see: transfers, approvals, bare ETH, an allowed keeper call,
/// bare calls to contracts, garbage calldata, delegatecalls.
fn any_call() -> impl Strategy<Value = Call> {
    let who =
        prop_oneof![Just(friend()), Just(keeper()), Just(token()), any::<[u8; 20]>().prop_map(Address::from)];
    (0u8..8, who, 0u64..5_000, proptest::collection::vec(any::<u8>(), 0..80)).prop_map(
        |(kind, to, amount, junk)| match kind {
            0 => transfer_call(to, amount),
            1 => Call::new(
                token(),
                U256::ZERO,
                IERC20::approveCall { spender: to, amount: U256::from(amount) }.abi_encode(),
            ),
            2 => Call::new(to, U256::from(amount), Vec::<u8>::new()),
            3 => Call::new(keeper(), U256::ZERO, vec![0xde, 0xad, 0xbe, 0xef]),
            4 => Call::new(to, U256::ZERO, Vec::<u8>::new()),
            5 => Call::new(to, U256::from(amount), junk),
            6 => {
                let mut c = transfer_call(to, amount);
                c.operation = 1;
                c
            }
            _ => {
                let mut data = TRANSFER.to_vec();
                data.extend_from_slice(&junk);
                Call::new(token(), U256::ZERO, data)
            }
        },
    )
}

fn any_operation() -> impl Strategy<Value = Operation> {
    (proptest::collection::vec(any_call(), 0..5), any::<u64>(), 0u64..2 * 86_400).prop_map(
        |(calls, nonce, ttl)| Operation { calls, nonce: U256::from(nonce), deadline: U256::from(NOW + ttl) },
    )
}

fn node_guard() -> NodeGuard {
    serde_json::from_value(serde_json::json!({
        "chain_id": CHAIN,
        "module": module(),
        "allow": [AllowEntry { target: token(), selector: Some("0xa9059cbb".into()) }],
        "budgets": [Budget { token: token(), amount: U256::from(10_000) }],
    }))
    .unwrap()
}

fn root_guard() -> RootGuard {
    RootGuard {
        modules: vec![ServedModule { chain_id: CHAIN, module: module() }],
        recipients: vec![friend()],
        assets: vec![
            AssetLimits {
                token: token(),
                max_single: U256::from(3_000),
                period_cap: U256::from(10_000),
                period_secs: 86_400,
                auto_approve_max: Some(U256::from(500)),
            },
            AssetLimits {
                token: Address::ZERO,
                max_single: U256::from(3_000),
                period_cap: U256::from(10_000),
                period_secs: 86_400,
                auto_approve_max: Some(U256::from(500)),
            },
        ],
        allowed_calls: vec![AllowedCall { target: keeper(), selector: [0xde, 0xad, 0xbe, 0xef].into() }],
        max_deadline_secs: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the sequence of tier-1 requests, the outflow a node signs in one period never
    /// exceeds its budget, and it never signs tier 1 outside its allow-list (but for revoking an
    /// approval, `approve(x, 0)`, which the guard always allows).
    #[test]
    fn the_node_guard_never_signs_past_its_budget_or_allow_list(ops in proptest::collection::vec(any_operation(), 1..12)) {
        let g = node_guard();
        let mut st = BudgetState::default();
        st.roll(NOW / g.period_secs);
        for op in &ops {
            let d = operation_digest(op, TIER_QUORUM, CHAIN, module());
            if let Ok(a) = g.check(op, CHAIN, module(), d, None, &st, NOW) {
                prop_assert_eq!(a.tier, Tier::One);
                for c in &op.calls {
                    // A transfer of the allow-listed token, or an approval of 0 (revoking moves nothing).
                    let revoke = c.data.starts_with(&IERC20::approveCall::SELECTOR)
                        && c.data.len() >= 68
                        && U256::from_be_slice(&c.data[36..68]).is_zero();
                    prop_assert!(c.to == token() && c.operation == 0 && (c.data.starts_with(&TRANSFER) || revoke), "{c:?}");
                }
                st.record(d, &a.outflows);
            }
        }
        prop_assert!(st.spent.get(&token()).copied().unwrap_or_default() <= U256::from(10_000));
    }

    /// The root guard accepts only served, allow-listed, bounded flows, and auto-approves only
    /// batches whose every call is valued and whose totals are under the auto-approve amount.
    #[test]
    fn the_root_guard_auto_approves_only_what_it_valued(op in any_operation(), spent in 0u64..12_000) {
        let g = root_guard();
        if let Ok(a) = g.check_operation(&op, CHAIN, module(), NOW, |_, _| U256::from(spent)) {
            let flows = treasury_signer::root::guard::flows(&op, &g.allowed_calls).unwrap();
            for f in &flows {
                prop_assert!(f.to == friend() && f.amount <= U256::from(3_000), "{f:?}");
            }
            for total in a.totals.values() {
                prop_assert!(U256::from(spent) + *total <= U256::from(10_000));
            }
            if a.auto_approve {
                prop_assert!(a.totals.values().all(|t| *t <= U256::from(500)));
                for c in &op.calls {
                    let bare_eth = c.data.is_empty() && !c.value.is_zero();
                    let erc20 = c.to == token() && c.data.len() >= 4;
                    prop_assert!(bare_eth || erc20, "auto-approved an unvalued call {c:?}");
                }
            }
        }
    }

    /// Arbitrary bytes never make the node's request decoding panic, and what decodes re-encodes
    /// to the same request.
    #[test]
    fn node_request_decoding_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(r) = serde_json::from_slice::<SignRequest>(&bytes) {
            let again: SignRequest = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
            prop_assert_eq!(again.operation, r.operation);
            prop_assert_eq!(again.signing_package, r.signing_package);
        }
        let _ = serde_json::from_slice::<CommitmentsRequest>(&bytes);
        let _ = serde_json::from_slice::<DkgRound1Request>(&bytes);
        let _ = frost_secp256k1::SigningPackage::deserialize(&bytes);
    }

    /// A signing request carrying an arbitrary operation survives the wire unchanged (the digest
    /// the node rebuilds is the coordinator's).
    #[test]
    fn a_sign_request_round_trips_with_its_digest(op in any_operation(), pkg in "[0-9a-f]{0,64}") {
        let req = SignRequest { operation: op.clone(), chain_id: CHAIN, module: module(), root_signature: None, signing_package: pkg, decision: None };
        let back: SignRequest = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
        prop_assert_eq!(operation_digest(&back.operation, TIER_QUORUM, back.chain_id, back.module), operation_digest(&op, TIER_QUORUM, CHAIN, module()));
    }

    /// Quorum files: arbitrary text never panics the parser; a file written is read back equal.
    #[test]
    fn quorum_files_parse_safely_and_round_trip(
        text in ".{0,300}",
        threshold in any::<u16>(),
        url in "[ -~]{0,40}",
        hexes in proptest::collection::vec("[0-9a-f]{0,66}", 4),
        x in any::<[u8; 32]>(),
        parity in 0u8..2,
        refreshed in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quorum.toml");
        std::fs::write(&path, &text).unwrap();
        let _ = QuorumFile::load(&path);
        let q = QuorumFile {
            threshold,
            coordinator_key: "coord.key".into(),
            group_key: hexes[0].clone(),
            group_key_x: U256::from_be_bytes(x),
            group_key_parity: parity,
            public_key_package: hexes[1].clone(),
            refresh: refreshed.then(|| RefreshRecord { id: hexes[3].clone(), pending: vec![url.clone()] }),
            nodes: vec![QuorumNode { url, identifier: hexes[2].clone(), identity_key: hexes[3].clone(), fingerprint: hexes[0].clone(), attestation: hexes[1].clone() }],
        };
        std::fs::remove_file(&path).unwrap();
        q.save(&path).unwrap();
        prop_assert_eq!(QuorumFile::load(&path).unwrap(), q);
    }
}

#[test]
fn the_generators_cover_accepted_operations() {
    // Guards against properties that hold only because nothing is ever accepted.
    let op = Operation {
        calls: vec![transfer_call(friend(), 100)],
        nonce: U256::ZERO,
        deadline: U256::from(NOW + 60),
    };
    let d = operation_digest(&op, TIER_QUORUM, CHAIN, module());
    assert!(node_guard().check(&op, CHAIN, module(), d, None, &BudgetState::default(), NOW).is_ok());
    assert!(root_guard().check_operation(&op, CHAIN, module(), NOW, |_, _| U256::ZERO).unwrap().auto_approve);
}
