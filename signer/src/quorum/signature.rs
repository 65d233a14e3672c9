//! The signature and group key in the form `TreasuryModule` takes: R as (x, y), z; key as (x, parity).
use alloy::primitives::U256;
use k256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use k256::{AffinePoint, EncodedPoint};
use serde::{Deserialize, Serialize};

use super::error::QuorumError;

/// The secp256k1 group order n.
pub const SECP256K1_N: U256 = U256::from_limbs([
    0xBFD2_5E8C_D036_4141,
    0xBAAE_DCE6_AF48_A03B,
    0xFFFF_FFFF_FFFF_FFFE,
    0xFFFF_FFFF_FFFF_FFFF,
]);

/// A FROST (RFC 9591, secp256k1-SHA256) signature as `exec` takes it: `FrostSig{rX, rY, z}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrostSignature {
    /// R's x coordinate.
    pub r_x: U256,
    /// R's y coordinate.
    pub r_y: U256,
    /// The scalar z.
    pub z: U256,
}

impl FrostSignature {
    /// Converts a frost signature (R compressed ‖ z) to the module's form, decompressing R.
    pub fn from_frost(sig: &frost_secp256k1::Signature) -> Result<Self, QuorumError> {
        let bytes = sig.serialize().map_err(QuorumError::frost)?;
        if bytes.len() != 65 {
            return Err(QuorumError::Corrupt(format!("signature of {} bytes", bytes.len())));
        }
        let (x, y) = decompress(&bytes[..33])?;
        Ok(Self { r_x: x, r_y: y, z: U256::from_be_slice(&bytes[33..]) })
    }
}

fn decompress(sec1: &[u8]) -> Result<(U256, U256), QuorumError> {
    let ep = EncodedPoint::from_bytes(sec1).map_err(|_| QuorumError::Corrupt("SEC1 point".into()))?;
    let p: Option<AffinePoint> = AffinePoint::from_encoded_point(&ep).into();
    let p = p.ok_or_else(|| QuorumError::Corrupt("point not on secp256k1".into()))?;
    let u = p.to_encoded_point(false);
    let (Some(x), Some(y)) = (u.x(), u.y()) else {
        return Err(QuorumError::Corrupt("identity point".into()));
    };
    Ok((U256::from_be_slice(x), U256::from_be_slice(y)))
}

/// The FROST group public key in the module's form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKey {
    /// SEC1 compressed, hex (33 bytes).
    pub compressed: String,
    /// x coordinate.
    pub x: U256,
    /// Parity of y (0 even, 1 odd).
    pub parity: u8,
}

impl GroupKey {
    /// From a frost verifying key.
    pub fn from_verifying_key(vk: &frost_secp256k1::VerifyingKey) -> Result<Self, QuorumError> {
        let bytes = vk.serialize().map_err(QuorumError::frost)?;
        Self::from_compressed(&bytes)
    }

    /// From 33 SEC1 compressed bytes.
    pub fn from_compressed(bytes: &[u8]) -> Result<Self, QuorumError> {
        if bytes.len() != 33 || (bytes[0] != 2 && bytes[0] != 3) {
            return Err(QuorumError::Corrupt("group key is not SEC1 compressed".into()));
        }
        decompress(bytes)?;
        Ok(Self { compressed: hex::encode(bytes), x: U256::from_be_slice(&bytes[1..]), parity: bytes[0] - 2 })
    }

    /// True when the module can verify with this key: 0 < x < n (the ecrecover trick needs r < n).
    ///
    /// # Security
    /// A key failing this MUST be rejected at DKG time and DKG re-run: the module refuses it.
    pub fn usable_onchain(&self) -> bool {
        !self.x.is_zero() && self.x < SECP256K1_N
    }
}

use k256::elliptic_curve::PrimeField;
use k256::{ProjectivePoint, Scalar};
use sha2::{Digest, Sha256};

/// The RFC 9591 challenge H2 as the module computes it: expand_message_xmd(SHA-256), 48 bytes, mod n.
pub fn onchain_challenge(r: &[u8], pk: &[u8], msg: &[u8]) -> Scalar {
    let dst: &[u8] = b"FROST-secp256k1-SHA256-v1chal";
    let mut dstp = dst.to_vec();
    dstp.push(dst.len() as u8);
    let mut b0 = Sha256::new();
    b0.update([0u8; 64]);
    b0.update(r);
    b0.update(pk);
    b0.update(msg);
    b0.update([0x00, 0x30, 0x00]);
    b0.update(&dstp);
    let b0 = b0.finalize();
    let b1 = Sha256::new().chain_update(b0).chain_update([1u8]).chain_update(&dstp).finalize();
    let x: Vec<u8> = b0.iter().zip(b1.iter()).map(|(a, b)| a ^ b).collect();
    let b2 = Sha256::new().chain_update(&x).chain_update([2u8]).chain_update(&dstp).finalize();
    let mut wide = b1.to_vec();
    wide.extend_from_slice(&b2[..16]);
    let n = alloy::primitives::U512::from(SECP256K1_N);
    let c = alloy::primitives::U512::from_be_slice(&wide) % n;
    let c = U256::from(c).to_be_bytes::<32>();
    Scalar::from_repr(c.into()).unwrap()
}

fn point_xy(x: U256, y: U256) -> Option<ProjectivePoint> {
    let ep = EncodedPoint::from_affine_coordinates(
        &x.to_be_bytes::<32>().into(),
        &y.to_be_bytes::<32>().into(),
        false,
    );
    Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&ep)).map(ProjectivePoint::from)
}

/// Verifies `sig` over `msg` exactly as `TreasuryModule` does: R from (x, y) on the curve,
/// c = H2(R ‖ PK ‖ msg) with the message not re-hashed, z·G == R + c·PK.
///
/// # Security
/// An off-chain mirror of the module's RFC 9591 check; callers MUST still rely on the module.
pub fn verify_module_form(sig: &FrostSignature, key: &GroupKey, msg: &[u8]) -> bool {
    let Some(r) = point_xy(sig.r_x, sig.r_y) else { return false };
    let Ok(pkb) = hex::decode(&key.compressed) else { return false };
    let Ok(ep) = EncodedPoint::from_bytes(&pkb) else { return false };
    let Some(pk) = Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&ep)) else { return false };
    let mut rc = vec![2 + (sig.r_y.bit(0) as u8)];
    rc.extend_from_slice(&sig.r_x.to_be_bytes::<32>());
    let c = onchain_challenge(&rc, &pkb, msg);
    let Some(z) = Option::<Scalar>::from(Scalar::from_repr(sig.z.to_be_bytes::<32>().into())) else {
        return false;
    };
    ProjectivePoint::GENERATOR * z == r + ProjectivePoint::from(pk) * c
}

/// A signature of `msg` in the module's form under a throwaway key whose y parity is `parity`,
/// with that key's x coordinate: a stand-in for the quorum's signature when the gas of an `exec`
/// is estimated before the quorum has signed, with the module's key slot overridden by this x in
/// the estimate (never sent on chain). The module's check of any valid signature runs the same
/// code at the same cost, so only the signature's calldata can differ. Deterministic in `msg`;
/// `None` in the negligible case that a derived scalar or the key is out of range.
pub fn stand_in_signature(msg: &[u8], parity: u8) -> Option<(U256, FrostSignature)> {
    let derive = |tag: &[u8]| -> Option<Scalar> {
        let h: [u8; 32] = Sha256::new()
            .chain_update(b"treasury: gas estimate stand-in ")
            .chain_update(tag)
            .chain_update(msg)
            .finalize()
            .into();
        let s = Option::<Scalar>::from(Scalar::from_repr(h.into()))?;
        (!bool::from(s.is_zero())).then_some(s)
    };
    let compressed = |p: ProjectivePoint| AffinePoint::from(p).to_encoded_point(true).as_bytes().to_vec();
    let mut sk = derive(b"key")?;
    let mut pk = compressed(ProjectivePoint::GENERATOR * sk);
    if pk[0] - 2 != parity {
        sk = -sk;
        pk = compressed(ProjectivePoint::GENERATOR * sk);
    }
    let key = GroupKey::from_compressed(&pk).ok()?;
    if !key.usable_onchain() {
        return None;
    }
    let k = derive(b"nonce")?;
    let r = AffinePoint::from(ProjectivePoint::GENERATOR * k).to_encoded_point(false);
    let (Some(rx), Some(ry)) = (r.x(), r.y()) else { return None };
    let (r_x, r_y) = (U256::from_be_slice(rx), U256::from_be_slice(ry));
    let mut rc = vec![2 + (r_y.bit(0) as u8)];
    rc.extend_from_slice(rx);
    let z = k + onchain_challenge(&rc, &pk, msg) * sk;
    Some((key.x, FrostSignature { r_x, r_y, z: U256::from_be_slice(&z.to_repr()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    use k256::FieldElement;

    #[test]
    fn a_stand_in_signature_verifies_under_its_key_of_the_asked_parity() {
        let msg = [7u8; 32];
        for parity in [0u8, 1] {
            let (x, sig) = stand_in_signature(&msg, parity).expect("in range");
            let mut compressed = vec![2 + parity];
            compressed.extend_from_slice(&x.to_be_bytes::<32>());
            let key = GroupKey::from_compressed(&compressed).unwrap();
            assert!(verify_module_form(&sig, &key, &msg), "parity {parity}");
            assert!(!verify_module_form(&sig, &key, &[8u8; 32]), "bound to its message");
        }
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Vector {
        msg: String,
        pk_x: String,
        pk_parity: u8,
        pk_compressed: String,
        r_x: String,
        r_y: String,
        z: String,
        c: String,
    }

    fn u(s: &str) -> U256 {
        s.parse().unwrap()
    }

    #[test]
    fn shared_vectors_verify_in_module_form_and_fail_when_altered() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/vectors/frost-secp256k1-sha256.jsonl"
        ))
        .expect("../shared/vectors beside the repository");
        let mut count = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Vector = serde_json::from_str(line).unwrap();
            let key = GroupKey::from_compressed(&hex::decode(&v.pk_compressed).unwrap()).unwrap();
            assert_eq!(key.x, u(&v.pk_x));
            assert_eq!(key.parity, v.pk_parity);
            let msg = hex::decode(v.msg.trim_start_matches("0x")).unwrap();
            let sig = FrostSignature { r_x: u(&v.r_x), r_y: u(&v.r_y), z: u(&v.z) };
            let mut rc = vec![2 + (sig.r_y.bit(0) as u8)];
            rc.extend_from_slice(&sig.r_x.to_be_bytes::<32>());
            let c = onchain_challenge(&rc, &hex::decode(&v.pk_compressed).unwrap(), &msg);
            assert_eq!(U256::from_be_slice(&c.to_bytes()), u(&v.c));
            assert!(verify_module_form(&sig, &key, &msg));
            let bad_z = FrostSignature { z: sig.z ^ U256::from(1), ..sig };
            assert!(!verify_module_form(&bad_z, &key, &msg));
            let mut other = msg.clone();
            other.push(0);
            assert!(!verify_module_form(&sig, &key, &other));
            let off_curve = FrostSignature { r_y: sig.r_y ^ U256::from(2), ..sig };
            assert!(!verify_module_form(&off_curve, &key, &msg));
            count += 1;
        }
        assert!(count > 0);
    }

    #[test]
    fn frost_signature_converts_to_module_form() {
        let (shares, pkp) = frost_secp256k1::keys::generate_with_dealer(
            3,
            2,
            frost_secp256k1::keys::IdentifierList::Default,
            rand_core::OsRng,
        )
        .unwrap();
        let kps: Vec<_> = shares
            .into_values()
            .take(2)
            .map(|s| frost_secp256k1::keys::KeyPackage::try_from(s).unwrap())
            .collect();
        let msg = [9u8; 32];
        let mut nonces = std::collections::BTreeMap::new();
        let mut comms = std::collections::BTreeMap::new();
        for kp in &kps {
            let (n, c) = frost_secp256k1::round1::commit(kp.signing_share(), &mut rand_core::OsRng);
            nonces.insert(*kp.identifier(), n);
            comms.insert(*kp.identifier(), c);
        }
        let pkg = frost_secp256k1::SigningPackage::new(comms, &msg);
        let shares: std::collections::BTreeMap<_, _> = kps
            .iter()
            .map(|kp| {
                (*kp.identifier(), frost_secp256k1::round2::sign(&pkg, &nonces[kp.identifier()], kp).unwrap())
            })
            .collect();
        let sig = frost_secp256k1::aggregate(&pkg, &shares, &pkp).unwrap();
        let key = GroupKey::from_verifying_key(pkp.verifying_key()).unwrap();
        let form = FrostSignature::from_frost(&sig).unwrap();
        assert!(verify_module_form(&form, &key, &msg));
        assert!(!verify_module_form(&form, &key, &[8u8; 32]));
    }

    #[test]
    fn group_key_with_x_at_or_above_n_is_unusable() {
        // Find a curve point whose x is in [n, p): x = n + k for small k with x³+7 a square.
        let mut k = 0u64;
        let key = loop {
            let x = SECP256K1_N + U256::from(k);
            let fx = FieldElement::from_bytes(&x.to_be_bytes::<32>().into()).unwrap();
            let rhs = fx * fx * fx + FieldElement::from(7u64);
            if bool::from(rhs.sqrt().is_some()) {
                let mut c = vec![2u8];
                c.extend_from_slice(&x.to_be_bytes::<32>());
                break GroupKey::from_compressed(&c).unwrap();
            }
            k += 1;
        };
        assert!(key.x >= SECP256K1_N);
        assert!(!key.usable_onchain());
        let g = GroupKey::from_compressed(
            ProjectivePoint::GENERATOR.to_affine().to_encoded_point(true).as_bytes(),
        )
        .unwrap();
        assert!(g.usable_onchain());
    }
}
