//! The PKCS#11 root signer against a real SoftHSM2 token.
mod root_support;

use alloy::consensus::{SignableTransaction, TxEip1559};
use alloy::network::TxSigner;
use alloy::primitives::{Address, B256, TxKind, U256, keccak256};
use alloy::signers::Signer;
use root_support::token;
use treasury_chain::operation::domain;
use treasury_chain::{Call, Operation};
use treasury_devnet::softhsm::in_own_process;
use treasury_signer::root::hsm::to_ethereum_signature;
use treasury_signer::root::{Hsm, HsmConfig, HsmSigner, Pin, RootError, RootKey};

const HALF_N: U256 = U256::from_limbs([
    0xDFE9_2F46_681B_20A0,
    0x5D57_6E73_57A4_501D,
    0xFFFF_FFFF_FFFF_FFFF,
    0x7FFF_FFFF_FFFF_FFFF,
]);

fn op() -> Operation {
    Operation {
        calls: vec![Call::new(Address::repeat_byte(2), U256::from(5), vec![0xde, 0xad])],
        nonce: U256::from(3),
        deadline: U256::from(1_900_000_000u64),
    }
}

#[test]
fn generates_once_then_finds_the_key_and_signs_recoverable_low_s() {
    if !in_own_process() {
        return;
    }
    let cfg = token("gen", "root");
    let (hsm, created) = Hsm::open_or_generate(&cfg).unwrap();
    assert!(created);
    let address = hsm.address();
    drop(hsm);
    let (again, created) = Hsm::open_or_generate(&cfg).unwrap();
    assert!(!created, "the existing key is reused");
    assert_eq!(again.address(), address);
    for i in 0..8u8 {
        let digest = keccak256([i]);
        let sig = again.sign_prehash(&digest).unwrap();
        assert!(sig.s() <= HALF_N);
        let bytes = sig.as_bytes();
        assert!(bytes[64] == 27 || bytes[64] == 28);
        assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), address);
    }
}

#[test]
fn high_s_from_the_hsm_is_normalised() {
    if !in_own_process() {
        return;
    }
    let cfg = token("highs", "root");
    let (hsm, _) = Hsm::open_or_generate(&cfg).unwrap();
    // About half of raw ECDSA signatures have a high s; 128 tries all low is 2^-128.
    let (digest, raw) = (0..128u32)
        .map(|i| {
            let d = keccak256(i.to_be_bytes());
            (d, hsm.raw_sign(&d).unwrap())
        })
        .find(|(_, raw)| U256::from_be_slice(&raw[32..]) > HALF_N)
        .expect("SoftHSM produced a high-s signature");
    let sig = to_ethereum_signature(&raw, &digest, hsm.public_key()).unwrap();
    assert!(sig.s() <= HALF_N);
    assert_eq!(sig.r(), U256::from_be_slice(&raw[..32]));
    assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), hsm.address());
}

#[tokio::test]
async fn the_alloy_signer_signs_eip712_operations_and_transactions() {
    if !in_own_process() {
        return;
    }
    let cfg = token("alloy", "root");
    Hsm::open_or_generate(&cfg).unwrap();
    let signer = HsmSigner::connect(cfg).unwrap().with_chain_id(Some(31337));
    let module = Address::repeat_byte(0x4d);
    let sig = signer.sign_typed_data(&op(), &domain(31337, module)).await.unwrap();
    // the EIP-712 hash of the typed data signed (the module's own digest adds the tier:
    // treasury_chain::operation_digest)
    let digest = alloy::sol_types::SolStruct::eip712_signing_hash(&op(), &domain(31337, module));
    assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), Signer::address(&signer));

    let mut tx = TxEip1559 {
        chain_id: 31337,
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 2,
        max_priority_fee_per_gas: 1,
        to: TxKind::Call(Address::repeat_byte(9)),
        value: U256::from(1),
        ..Default::default()
    };
    let sig = signer.sign_transaction(&mut tx).await.unwrap();
    assert_eq!(sig.recover_address_from_prehash(&tx.signature_hash()).unwrap(), TxSigner::address(&signer));
}

#[test]
fn a_wrong_pin_is_refused() {
    if !in_own_process() {
        return;
    }
    let cfg = token("pin", "root");
    Hsm::open_or_generate(&cfg).unwrap();
    // A separate module session logs in afresh only after logout; use a second token so no session is logged in.
    let cfg2 = token("pin2", "root");
    let bad = HsmConfig { pin: Pin::new("000000"), ..cfg2 };
    assert!(matches!(Hsm::open(&bad), Err(RootError::WrongPin)), "{:?}", Hsm::open(&bad));
}

#[test]
fn missing_token_and_key_labels_are_named() {
    if !in_own_process() {
        return;
    }
    let cfg = token("labels", "root");
    Hsm::open_or_generate(&cfg).unwrap();
    let no_token = HsmConfig { token_label: "no-such-token".into(), ..cfg.clone() };
    assert!(matches!(Hsm::open(&no_token), Err(RootError::TokenNotFound(l)) if l == "no-such-token"));
    let no_key = HsmConfig { key_label: "no-such-key".into(), ..cfg };
    assert!(matches!(Hsm::open(&no_key), Err(RootError::KeyNotFound(l)) if l == "no-such-key"));
}

#[test]
fn a_file_that_is_not_a_pkcs11_module_is_refused() {
    if !in_own_process() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("not-a-module.so");
    std::fs::write(&text, "hello").unwrap();
    let libz = std::path::PathBuf::from("/usr/lib/x86_64-linux-gnu/libz.so.1");
    for path in [text, dir.path().join("missing.so"), libz] {
        let cfg = HsmConfig {
            module: path.clone(),
            token_label: "x".into(),
            key_label: "y".into(),
            pin: Pin::new("1"),
        };
        match Hsm::open(&cfg) {
            Err(RootError::ModuleLoad { path: p, .. } | RootError::ModuleMissing { path: p, .. }) => {
                assert_eq!(p, path)
            }
            other => panic!("{}: {other:?}", path.display()),
        }
    }
}

#[test]
fn the_root_key_reconnects_after_its_session_is_dropped() {
    if !in_own_process() {
        return;
    }
    let cfg = token("reconnect", "root");
    let (hsm, _) = Hsm::open_or_generate(&cfg).unwrap();
    let address = hsm.address();
    drop(hsm);
    let key = RootKey::new(cfg.clone(), Some(address));
    let d = B256::repeat_byte(1);
    assert_eq!(key.sign_digest(&d).unwrap().recover_address_from_prehash(&d).unwrap(), address);
    // A pinned address that does not match is refused.
    let wrong = RootKey::new(cfg, Some(Address::repeat_byte(1)));
    assert!(matches!(wrong.sign_digest(&d), Err(RootError::Config(_))));
}
