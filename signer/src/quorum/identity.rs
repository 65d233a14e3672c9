//! Node and coordinator identity keys (secp256k1 ECDSA), fingerprints, and end-to-end sealing.
//!
//! Every node and the coordinator hold an identity key. Nodes and coordinator pin each other's
//! keys (the node's fingerprint in the quorum file, the coordinator's public key in the node's
//! config); requests and answers are signed with them, and DKG round-2 packages are sealed between
//! nodes with a key agreed from them (ECDH + HKDF-SHA256 + ChaCha20-Poly1305).
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use k256::ecdsa::signature::{Signer, Verifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::QuorumError;

/// A secret identity key.
///
/// # Security
/// The key MUST NOT be logged or written in clear; it is stored only inside the node's encrypted
/// store. `Debug` prints the public fingerprint only; the inner key zeroizes on drop.
#[derive(Clone)]
pub struct IdentityKey {
    key: SigningKey,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey({})", self.public().fingerprint())
    }
}

/// A public identity key (33-byte SEC1 compressed).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IdentityPublic(VerifyingKey);

impl IdentityKey {
    /// A fresh random identity key.
    pub fn generate() -> Self {
        Self { key: SigningKey::random(&mut OsRng) }
    }

    /// The key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, QuorumError> {
        SigningKey::from_slice(bytes)
            .map(|key| Self { key })
            .map_err(|_| QuorumError::Corrupt("identity key bytes".into()))
    }

    /// The 32 secret bytes (zeroized when dropped).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.to_bytes().to_vec())
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublic {
        IdentityPublic(*self.key.verifying_key())
    }

    /// Signs `msg` (hashed with SHA-256 inside ECDSA) and returns the 64-byte signature.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let sig: Signature = self.key.sign(msg);
        sig.to_bytes().into()
    }

    /// A 32-byte symmetric key shared with `peer`, bound to `context`.
    ///
    /// # Security
    /// Both sides derive the same key from static ECDH; `context` MUST name the session and the
    /// direction (sender, recipient) so that a key is never reused across sessions or directions.
    pub fn shared_key(&self, peer: &IdentityPublic, context: &[u8]) -> Zeroizing<[u8; 32]> {
        let shared = k256::ecdh::diffie_hellman(self.key.as_nonzero_scalar(), peer.0.as_affine());
        let hk = shared.extract::<Sha256>(Some(b"treasury-quorum-e2e-v1"));
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(context, out.as_mut()).expect("32 bytes is a valid HKDF length");
        out
    }
}

impl IdentityPublic {
    /// Hex of the 33-byte compressed key.
    pub fn to_hex(&self) -> String {
        hex::encode(self.sec1())
    }

    /// The 33-byte SEC1 compressed key.
    pub fn sec1(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out.copy_from_slice(self.0.to_encoded_point(true).as_bytes());
        out
    }

    /// Parses the hex of a SEC1 key.
    pub fn from_hex(s: &str) -> Result<Self, QuorumError> {
        let bytes = hex::decode(s.trim_start_matches("0x"))
            .map_err(|e| QuorumError::Corrupt(format!("identity key hex: {e}")))?;
        VerifyingKey::from_sec1_bytes(&bytes)
            .map(Self)
            .map_err(|_| QuorumError::Corrupt("identity key is not a secp256k1 point".into()))
    }

    /// The fingerprint operators compare out of band: hex of the first 16 bytes of SHA-256(key).
    pub fn fingerprint(&self) -> String {
        let h = Sha256::digest(self.0.to_encoded_point(true).as_bytes());
        hex::encode(&h[..16])
    }

    /// True when `sig` (64 bytes) is this key's signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        Signature::from_slice(sig).is_ok_and(|s| self.0.verify(msg, &s).is_ok())
    }
}

/// Encrypts `plaintext` under `key` with a random nonce, bound to `aad`; returns nonce ‖ ciphertext.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
        .expect("chacha20poly1305 encryption cannot fail for in-memory buffers");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

/// Decrypts what [`seal`] produced; `None` when the key, `aad` or the data are wrong.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < 12 {
        return None;
    }
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let (nonce, ct) = sealed.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    cipher.decrypt(&Nonce::from(nonce), Payload { msg: ct, aad }).ok().map(Zeroizing::new)
}

/// SHA-256 over length-prefixed parts (so that part boundaries cannot be shifted).
pub fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdh_keys_agree_and_differ_by_context() {
        let a = IdentityKey::generate();
        let b = IdentityKey::generate();
        assert_eq!(*a.shared_key(&b.public(), b"s1"), *b.shared_key(&a.public(), b"s1"));
        assert_ne!(*a.shared_key(&b.public(), b"s1"), *a.shared_key(&b.public(), b"s2"));
    }

    #[test]
    fn sealed_data_opens_only_with_same_key_and_aad() {
        let k = [7u8; 32];
        let s = seal(&k, b"aad", b"secret");
        assert_eq!(open(&k, b"aad", &s).unwrap().as_slice(), b"secret");
        assert!(open(&k, b"other", &s).is_none());
        assert!(open(&[8u8; 32], b"aad", &s).is_none());
    }

    #[test]
    fn signatures_verify_only_under_signer_key() {
        let a = IdentityKey::generate();
        let sig = a.sign(b"m");
        assert!(a.public().verify(b"m", &sig));
        assert!(!a.public().verify(b"n", &sig));
        assert!(!IdentityKey::generate().public().verify(b"m", &sig));
        let back = IdentityPublic::from_hex(&a.public().to_hex()).unwrap();
        assert_eq!(back.fingerprint(), a.public().fingerprint());
    }
}
