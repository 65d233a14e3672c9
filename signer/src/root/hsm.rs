//! The PKCS#11 session: open a module, log in to a token by label, find or generate a secp256k1 key,
//! and sign 32-byte digests with `CKM_ECDSA` into 65-byte Ethereum signatures.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use alloy::primitives::{Address, B256, Signature, U256};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use k256::ecdsa::VerifyingKey;

use super::error::{Result, RootError};
use super::pin::Pin;

/// DER encoding of the secp256k1 curve OID 1.3.132.0.10 (`CKA_EC_PARAMS`).
pub const SECP256K1_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

/// Where the root key lives: module, token label, key label and the user PIN.
#[derive(Debug, Clone)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`.so`), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Label of the token holding the key.
    pub token_label: String,
    /// Label of the key pair (`CKA_LABEL`).
    pub key_label: String,
    /// The token's user PIN.
    pub pin: Pin,
}

/// An open, logged-in session on the token with the root key found.
pub struct Hsm {
    session: Session,
    key: ObjectHandle,
    public: VerifyingKey,
    address: Address,
    key_label: String,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm").field("key_label", &self.key_label).field("address", &self.address).finish()
    }
}

/// The loaded modules of this process, initialised once each (`C_Initialize` is per process).
fn contexts() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    CONTEXTS.get_or_init(Default::default)
}

/// Loads and initialises the PKCS#11 module at `path` (once per process).
pub fn load_module(path: &Path) -> Result<Pkcs11> {
    let load_err = |source| RootError::ModuleLoad { path: path.to_owned(), source };
    let canonical =
        path.canonicalize().map_err(|source| RootError::ModuleMissing { path: path.to_owned(), source })?;
    let mut map = contexts().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = map.get(&canonical) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&canonical).map_err(load_err)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_err(e)),
    }
    map.insert(canonical, ctx.clone());
    Ok(ctx)
}

/// The slot whose initialised token carries `label`.
pub fn find_token(ctx: &Pkcs11, label: &str) -> Result<Slot> {
    let slots = ctx.get_slots_with_initialized_token().map_err(|e| device("C_GetSlotList", e))?;
    for slot in slots {
        let info = ctx.get_token_info(slot).map_err(|e| device("C_GetTokenInfo", e))?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(RootError::TokenNotFound(label.to_owned()))
}

/// Initialises a fresh token labelled `label` in the first slot without one and sets its user PIN.
/// Returns `false` (and changes nothing) when a token with this label already exists.
///
/// # Security
/// The SO PIN and user PIN MUST come from the operator (environment or file), never from a config
/// file committed anywhere; neither is logged.
pub fn init_token(module: &Path, label: &str, so_pin: &Pin, user_pin: &Pin) -> Result<bool> {
    static INIT: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INIT.lock().unwrap_or_else(|p| p.into_inner());
    let ctx = load_module(module)?;
    if find_token(&ctx, label).is_ok() {
        return Ok(false);
    }
    let slots = ctx.get_all_slots().map_err(|e| device("C_GetSlotList", e))?;
    let mut free = None;
    for slot in slots {
        match ctx.get_token_info(slot) {
            Ok(info) if !info.token_initialized() => {
                free = Some(slot);
                break;
            }
            _ => {}
        }
    }
    let slot =
        free.ok_or_else(|| RootError::TokenNotFound(format!("{label} (and no free slot to create it)")))?;
    ctx.init_token(slot, &so_pin.auth_pin(), label).map_err(|e| pkcs11("C_InitToken", e))?;
    // The slot list changes after C_InitToken (SoftHSM adds a new empty slot): find it again.
    let slot = find_token(&ctx, label)?;
    let session = ctx.open_rw_session(slot).map_err(|e| device("C_OpenSession", e))?;
    session.login(UserType::So, Some(&so_pin.auth_pin())).map_err(login_error)?;
    session.init_pin(&user_pin.auth_pin()).map_err(|e| pkcs11("C_InitPIN", e))?;
    session.logout().map_err(|e| pkcs11("C_Logout", e))?;
    Ok(true)
}

impl Hsm {
    /// Opens the module, logs in to the token and finds the key; fails with
    /// [`RootError::KeyNotFound`] when the key does not exist.
    ///
    /// # Security
    /// The PIN MUST NOT be logged; errors name the token and key labels only.
    pub fn open(cfg: &HsmConfig) -> Result<Self> {
        let session = Self::login(cfg)?;
        match find_key_pair(&session, &cfg.key_label)? {
            Some((key, public)) => Ok(Self::from_parts(session, key, public, &cfg.key_label)),
            None => Err(RootError::KeyNotFound(cfg.key_label.clone())),
        }
    }

    /// Like [`Hsm::open`], but generates the key pair on the token when it does not exist yet.
    /// Returns whether the key was created.
    ///
    /// # Security
    /// The private key is generated on the token with `CKA_SENSITIVE` and without
    /// `CKA_EXTRACTABLE`: it MUST never leave the HSM.
    pub fn open_or_generate(cfg: &HsmConfig) -> Result<(Self, bool)> {
        let session = Self::login(cfg)?;
        if let Some((key, public)) = find_key_pair(&session, &cfg.key_label)? {
            return Ok((Self::from_parts(session, key, public, &cfg.key_label), false));
        }
        let label = cfg.key_label.as_bytes().to_vec();
        let id = alloy::primitives::keccak256(&label)[..8].to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(SECP256K1_PARAMS.to_vec()),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label),
            Attribute::Id(id),
        ];
        session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public_template, &private_template)
            .map_err(|e| pkcs11("C_GenerateKeyPair", e))?;
        match find_key_pair(&session, &cfg.key_label)? {
            Some((key, public)) => Ok((Self::from_parts(session, key, public, &cfg.key_label), true)),
            None => Err(RootError::KeyNotFound(cfg.key_label.clone())),
        }
    }

    fn login(cfg: &HsmConfig) -> Result<Session> {
        let ctx = load_module(&cfg.module)?;
        let slot = find_token(&ctx, &cfg.token_label)?;
        let session = ctx.open_rw_session(slot).map_err(|e| device("C_OpenSession", e))?;
        match session.login(UserType::User, Some(&cfg.pin.auth_pin())) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(login_error(e)),
        }
    }

    fn from_parts(session: Session, key: ObjectHandle, public: VerifyingKey, label: &str) -> Self {
        let address = Address::from_public_key(&public);
        Self { session, key, public, address, key_label: label.to_owned() }
    }

    /// The Ethereum address of the root key.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The root key's public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The bare `C_Sign(CKM_ECDSA)` over `digest`: 64 bytes r ‖ s as the HSM returns them (s may be high).
    ///
    /// # Security
    /// Signs `digest` exactly as supplied. Callers MUST have computed it themselves from the
    /// structured message (EIP-712); this is a primitive, not an authorisation.
    pub fn raw_sign(&self, digest: &B256) -> Result<[u8; 64]> {
        let out = self
            .session
            .sign(&Mechanism::Ecdsa, self.key, digest.as_slice())
            .map_err(|e| device("C_Sign", e))?;
        out.as_slice().try_into().map_err(|_| {
            RootError::Malformed(format!("CKM_ECDSA signature of {} bytes, expected 64", out.len()))
        })
    }

    /// Signs `digest` and returns the Ethereum signature: low s, recovery id found by trial.
    ///
    /// # Security
    /// Signs `digest` exactly as supplied: callers MUST rebuild it from the structured
    /// `Operation`/`AdminOp` (EIP-712) and MUST NOT accept a digest from elsewhere. The result is
    /// normalised to low s (EIP-2) and verified to recover this key's address before it is returned.
    pub fn sign_prehash(&self, digest: &B256) -> Result<Signature> {
        let raw = self.raw_sign(digest)?;
        to_ethereum_signature(&raw, digest, &self.public)
    }
}

/// Turns a raw `r ‖ s` ECDSA signature into a 65-byte Ethereum signature of `public` over `digest`:
/// s normalised to the lower half of the order (EIP-2), y parity read off the nonce point.
///
/// The nonce point `R = (z/s)·G + (r/s)·Q` is computed once (one double-scalar multiplication, as in
/// ECDSA verification): `R.x mod n == r` verifies the signature against the known public key, and the
/// parity of `R.y` is the recovery id (flipped when s is negated). This replaces trying both
/// parities with public-key recovery (up to two recoveries and address hashes).
///
/// # Security
/// MUST return an error rather than a signature that does not recover to `public`: a signature that
/// does not verify against `public` is refused.
pub fn to_ethereum_signature(raw: &[u8; 64], digest: &B256, public: &VerifyingKey) -> Result<Signature> {
    use k256::elliptic_curve::ops::{LinearCombination, Reduce};
    use k256::elliptic_curve::point::AffineCoordinates;
    use k256::{FieldBytes, ProjectivePoint, Scalar};

    let bad = || RootError::Malformed("signature does not verify against the key".into());
    let bytes = |b: &[u8]| FieldBytes::from(<[u8; 32]>::try_from(b).expect("32 bytes"));
    let scalar = |b: &[u8]| {
        Option::<Scalar>::from(k256::elliptic_curve::PrimeField::from_repr(bytes(b)))
            .filter(|v: &Scalar| !bool::from(v.is_zero()))
    };
    let (r, s) = (scalar(&raw[..32]).ok_or_else(bad)?, scalar(&raw[32..]).ok_or_else(bad)?);
    let z = <Scalar as Reduce<k256::U256>>::reduce_bytes(&bytes(digest.as_slice()));
    let s_inv = Option::<Scalar>::from(s.invert()).ok_or_else(bad)?;
    let q = ProjectivePoint::from(*public.as_affine());
    let big_r =
        ProjectivePoint::lincomb(&ProjectivePoint::GENERATOR, &(z * s_inv), &q, &(r * s_inv)).to_affine();
    if big_r == k256::AffinePoint::IDENTITY || <Scalar as Reduce<k256::U256>>::reduce_bytes(&big_r.x()) != r {
        return Err(bad());
    }
    // `normalized_s` negates a high s and flips the parity with it (negating s negates R).
    let odd = bool::from(big_r.y_is_odd());
    Ok(Signature::new(U256::from_be_slice(&raw[..32]), U256::from_be_slice(&raw[32..]), odd).normalized_s())
}

fn find_key_pair(session: &Session, label: &str) -> Result<Option<(ObjectHandle, VerifyingKey)>> {
    let by = |class| {
        [
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC),
            Attribute::Label(label.as_bytes().to_vec()),
        ]
    };
    let privs =
        session.find_objects(&by(ObjectClass::PRIVATE_KEY)).map_err(|e| device("C_FindObjects", e))?;
    let pubs = session.find_objects(&by(ObjectClass::PUBLIC_KEY)).map_err(|e| device("C_FindObjects", e))?;
    match (privs.len(), pubs.len()) {
        (0, _) | (_, 0) => return Ok(None),
        (1, 1) => {}
        (n, m) => return Err(RootError::AmbiguousKey(n.max(m), label.to_owned())),
    }
    let attrs = session
        .get_attributes(pubs[0], &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| device("C_GetAttributeValue", e))?;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcParams(p) if p != SECP256K1_PARAMS => {
                return Err(RootError::Malformed(format!("key {label:?} is not on secp256k1")));
            }
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let point = point.ok_or_else(|| RootError::Malformed("public key without CKA_EC_POINT".into()))?;
    Ok(Some((privs[0], parse_ec_point(&point)?)))
}

/// Parses `CKA_EC_POINT`: a DER OCTET STRING wrapping a SEC1 point, or (some modules) the bare point.
pub fn parse_ec_point(bytes: &[u8]) -> Result<VerifyingKey> {
    let unwrapped = match bytes {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => Some(rest),
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => Some(rest),
        _ => None,
    };
    unwrapped
        .and_then(|p| VerifyingKey::from_sec1_bytes(p).ok())
        .or_else(|| VerifyingKey::from_sec1_bytes(bytes).ok())
        .ok_or_else(|| RootError::Malformed("CKA_EC_POINT is not a secp256k1 point".into()))
}

fn login_error(e: CkError) -> RootError {
    match e {
        CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _) => {
            RootError::WrongPin
        }
        CkError::Pkcs11(RvError::PinLocked, _) => RootError::PinLocked,
        other => device("C_Login", other),
    }
}

/// Classifies a PKCS#11 failure: device-level ones mean the HSM is unavailable (retryable).
fn device(op: &'static str, e: CkError) -> RootError {
    match e {
        CkError::Pkcs11(
            RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::CryptokiNotInitialized
            | RvError::UserNotLoggedIn,
            _,
        ) => RootError::HsmUnavailable { op, source: e },
        other => pkcs11(op, other),
    }
}

fn pkcs11(op: &'static str, e: CkError) -> RootError {
    RootError::Pkcs11 { op, source: e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;

    #[test]
    fn a_high_s_signature_is_normalised_and_recovers() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let digest = B256::repeat_byte(0x42);
        let (sig, _) = key.sign_prehash_recoverable(digest.as_slice()).unwrap();
        let low: [u8; 64] = sig.to_bytes().into();
        let n = alloy::primitives::U256::from_be_slice(
            &hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141").unwrap(),
        );
        let s = U256::from_be_slice(&low[32..]);
        let mut high = low;
        high[32..].copy_from_slice(&(n - s).to_be_bytes::<32>());
        for raw in [low, high] {
            let out = to_ethereum_signature(&raw, &digest, key.verifying_key()).unwrap();
            assert!(out.s() <= n >> 1, "s must be low");
            assert_eq!(out.recover_address_from_prehash(&digest).unwrap(), Address::from_private_key(&key));
            let bytes = out.as_bytes();
            assert!(bytes[64] == 27 || bytes[64] == 28);
        }
    }

    #[test]
    fn both_parities_low_and_high_s_recover_to_the_key() {
        let key = SigningKey::from_slice(&[11u8; 32]).unwrap();
        let n = U256::from_be_slice(
            &hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141").unwrap(),
        );
        let mut parities = std::collections::BTreeSet::new();
        for i in 0u64..64 {
            let digest = alloy::primitives::keccak256(i.to_be_bytes());
            let (sig, _) = key.sign_prehash_recoverable(digest.as_slice()).unwrap();
            let low: [u8; 64] = sig.to_bytes().into();
            let mut high = low;
            high[32..].copy_from_slice(&(n - U256::from_be_slice(&low[32..])).to_be_bytes::<32>());
            for raw in [low, high] {
                let out = to_ethereum_signature(&raw, &digest, key.verifying_key()).unwrap();
                assert_eq!(
                    out.recover_address_from_prehash(&digest).unwrap(),
                    Address::from_private_key(&key)
                );
                assert!(out.s() <= n >> 1);
                parities.insert(out.v());
            }
        }
        assert_eq!(parities.len(), 2, "both recovery ids were exercised");
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let other = SigningKey::from_slice(&[8u8; 32]).unwrap();
        let digest = B256::repeat_byte(1);
        let (sig, _) = other.sign_prehash_recoverable(digest.as_slice()).unwrap();
        let raw: [u8; 64] = sig.to_bytes().into();
        assert!(matches!(
            to_ethereum_signature(&raw, &digest, key.verifying_key()),
            Err(RootError::Malformed(_))
        ));
    }

    #[test]
    fn ec_point_accepts_der_wrapped_and_bare() {
        let key = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let bare = point.as_bytes().to_vec();
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&bare);
        assert_eq!(parse_ec_point(&der).unwrap(), *key.verifying_key());
        assert_eq!(parse_ec_point(&bare).unwrap(), *key.verifying_key());
    }
}
