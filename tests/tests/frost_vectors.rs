//! The shared RFC 9591 FROST-secp256k1-SHA256 vectors verify through `FrostVerifierHarness` on anvil,
//! and every kind of tampering is rejected.

use std::path::PathBuf;

use alloy::primitives::{Bytes, U256};
use serde::Deserialize;
use treasury_chain::contracts::FrostVerifierHarness;
use treasury_chain::tx::deploy_code;
use treasury_devnet::quorum::secp256k1_order;
use treasury_devnet::{Anvil, TestQuorum, dev_key};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vector {
    msg: Bytes,
    pk_x: U256,
    pk_parity: u8,
    r_x: U256,
    r_y: U256,
    z: U256,
}

fn vectors_path() -> PathBuf {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/frost-secp256k1-sha256.jsonl");
    assert!(
        path.exists(),
        "test vectors missing at {} (the shared/ folder beside the checkout)",
        path.display()
    );
    path
}

fn load_vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(vectors_path()).unwrap();
    let vectors: Vec<Vector> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!vectors.is_empty(), "no vectors in the file");
    vectors
}

struct Harness {
    _anvil: Anvil,
    contract: FrostVerifierHarness::FrostVerifierHarnessInstance<alloy::providers::DynProvider>,
}

impl Harness {
    async fn start() -> Self {
        let anvil = Anvil::start().unwrap();
        let provider = treasury_chain::provider::connect_with_signer(anvil.url(), dev_key(0)).unwrap();
        let address = deploy_code(&provider, "FrostVerifierHarness", FrostVerifierHarness::BYTECODE.clone())
            .await
            .unwrap();
        Self { _anvil: anvil, contract: FrostVerifierHarness::new(address, provider) }
    }

    async fn verify(&self, v: &Vector) -> bool {
        self.contract.verify(v.pk_x, v.pk_parity, v.msg.clone(), v.r_x, v.r_y, v.z).call().await.unwrap()
    }
}

#[tokio::test]
async fn shared_vectors_verify_and_tampering_fails() {
    let harness = Harness::start().await;
    let n = secp256k1_order();
    for (i, v) in load_vectors().iter().enumerate() {
        assert!(harness.verify(v).await, "vector {i} must verify");

        let mut msg = v.msg.to_vec();
        match msg.first_mut() {
            Some(byte) => *byte ^= 1,
            None => msg.push(0),
        }
        assert!(
            !harness.verify(&Vector { msg: msg.into(), ..v.clone() }).await,
            "vector {i}: changed message accepted"
        );
        assert!(
            !harness.verify(&Vector { z: (v.z + U256::from(1)) % n, ..v.clone() }).await,
            "vector {i}: changed z accepted"
        );
        for z in [Some(n), v.z.checked_add(n)].into_iter().flatten() {
            assert!(!harness.verify(&Vector { z, ..v.clone() }).await, "vector {i}: z >= n accepted");
        }
        assert!(
            !harness.verify(&Vector { pk_parity: 1 - v.pk_parity, ..v.clone() }).await,
            "vector {i}: flipped parity accepted"
        );
        assert!(
            !harness.verify(&Vector { pk_parity: 2, ..v.clone() }).await,
            "vector {i}: parity 2 accepted"
        );
        assert!(
            !harness.verify(&Vector { pk_x: v.pk_x + U256::from(1), ..v.clone() }).await,
            "vector {i}: changed key accepted"
        );
        if let Some(pk_x) = v.pk_x.checked_add(n) {
            assert!(!harness.verify(&Vector { pk_x, ..v.clone() }).await, "vector {i}: key x >= n accepted");
        }
        assert!(
            !harness.verify(&Vector { r_y: v.r_y + U256::from(1), ..v.clone() }).await,
            "vector {i}: R off the curve accepted"
        );
    }
}

#[tokio::test]
async fn signatures_from_the_frost_crate_verify_on_chain() {
    let harness = Harness::start().await;
    let quorum = TestQuorum::new(3, 5);
    let key = quorum.group_key();
    for i in 0u8..4 {
        let digest = alloy::primitives::keccak256([i]);
        let sig = quorum.sign(digest);
        let v = Vector {
            msg: digest.to_vec().into(),
            pk_x: key.x,
            pk_parity: key.parity,
            r_x: sig.rX,
            r_y: sig.rY,
            z: sig.z,
        };
        assert!(harness.verify(&v).await, "fresh FROST signature {i} must verify on chain");
        let other = alloy::primitives::keccak256([i, 1]);
        assert!(!harness.verify(&Vector { msg: other.to_vec().into(), ..v.clone() }).await);
    }
}
