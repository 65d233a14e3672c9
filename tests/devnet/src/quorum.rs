//! A FROST-secp256k1 quorum made by a trusted dealer, for tests that need real RFC 9591 signatures
//! without running signer nodes (those are tested in the signer crate).

use std::collections::BTreeMap;

use crate::world::GroupKey;
use alloy::primitives::{B256, U256};
use frost_secp256k1 as frost;
use treasury_chain::contracts::TreasuryModule::FrostSig;

/// Test quorum of `n` key shares with threshold `t`, all held in this process.
pub struct TestQuorum {
    key_packages: BTreeMap<frost::Identifier, frost::keys::KeyPackage>,
    public: frost::keys::PublicKeyPackage,
    threshold: usize,
}

impl std::fmt::Debug for TestQuorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestQuorum").field("threshold", &self.threshold).finish_non_exhaustive()
    }
}

impl TestQuorum {
    /// Deals a fresh `t`-of-`n` key whose x coordinate is below the curve order (as the module requires).
    pub fn new(t: u16, n: u16) -> Self {
        let mut rng = rand::thread_rng();
        loop {
            let (shares, public) =
                frost::keys::generate_with_dealer(n, t, frost::keys::IdentifierList::Default, &mut rng)
                    .expect("valid t and n");
            let quorum = Self {
                key_packages: shares
                    .into_iter()
                    .map(|(id, share)| (id, frost::keys::KeyPackage::try_from(share).expect("valid share")))
                    .collect(),
                public,
                threshold: t as usize,
            };
            if quorum.group_key().x < secp256k1_order() {
                return quorum;
            }
        }
    }

    /// The group key as the module stores it.
    pub fn group_key(&self) -> GroupKey {
        let compressed = self.public.verifying_key().serialize().expect("serialisable key");
        GroupKey { x: U256::from_be_slice(&compressed[1..33]), parity: compressed[0] - 2 }
    }

    /// Signs `digest` with the first `t` shares and returns the signature as `exec` takes it.
    pub fn sign(&self, digest: B256) -> FrostSig {
        let mut rng = rand::thread_rng();
        let signers: Vec<_> = self.key_packages.iter().take(self.threshold).collect();
        let mut nonces = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        for (id, key) in &signers {
            let (n, c) = frost::round1::commit(key.signing_share(), &mut rng);
            nonces.insert(**id, n);
            commitments.insert(**id, c);
        }
        let package = frost::SigningPackage::new(commitments, digest.as_slice());
        let shares = signers
            .iter()
            .map(|(id, key)| (**id, frost::round2::sign(&package, &nonces[*id], key).expect("share")))
            .collect();
        let signature = frost::aggregate(&package, &shares, &self.public).expect("aggregate");
        frost_sig(&signature)
    }
}

/// Converts a FROST signature to the module's (R.x, R.y, z) form.
pub fn frost_sig(signature: &frost::Signature) -> FrostSig {
    use k256::elliptic_curve::sec1::ToEncodedPoint;
    let r = signature.R().to_affine().to_encoded_point(false);
    let z = signature.z().to_bytes();
    FrostSig {
        rX: U256::from_be_slice(r.x().expect("affine x")),
        rY: U256::from_be_slice(r.y().expect("affine y")),
        z: U256::from_be_slice(&z),
    }
}

/// The order n of secp256k1.
pub fn secp256k1_order() -> U256 {
    U256::from_str_radix("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16).expect("hex")
}
