//! The root key as a signer: reconnects to the HSM after it went away, and implements alloy's
//! `Signer` and `TxSigner` so the same key signs EIP-712 data and transactions.
use std::sync::{Arc, Mutex};

use alloy::consensus::SignableTransaction;
use alloy::network::TxSigner;
use alloy::primitives::{Address, B256, ChainId, Signature};
use alloy::signers::Signer;

use super::error::{Result, RootError};
use super::hsm::{Hsm, HsmConfig};

/// The root key behind a session that is reopened on demand: if the HSM disappears (module
/// unloadable, token removed), signing fails with a retryable error and the next call reconnects.
pub struct RootKey {
    cfg: HsmConfig,
    session: Mutex<Option<Hsm>>,
    address: Mutex<Option<Address>>,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootKey")
            .field("module", &self.cfg.module)
            .field("token", &self.cfg.token_label)
            .field("key", &self.cfg.key_label)
            .finish_non_exhaustive()
    }
}

impl RootKey {
    /// A root key that connects lazily; `expected` pins the address the key must have.
    pub fn new(cfg: HsmConfig, expected: Option<Address>) -> Self {
        Self { cfg, session: Mutex::new(None), address: Mutex::new(expected) }
    }

    /// Connects now and returns the key's address.
    pub fn connect(&self) -> Result<Address> {
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure(&mut guard).map(|h| h.address())
    }

    /// The address, when known (configured or seen on a previous connection).
    pub fn known_address(&self) -> Option<Address> {
        *self.address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a session is currently open.
    pub fn is_connected(&self) -> bool {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn ensure<'a>(&self, slot: &'a mut Option<Hsm>) -> Result<&'a Hsm> {
        if slot.is_none() {
            let hsm = Hsm::open(&self.cfg)?;
            let mut known = self.address.lock().unwrap_or_else(|p| p.into_inner());
            match *known {
                Some(a) if a != hsm.address() => {
                    return Err(RootError::Config(format!(
                        "key {:?} has address {}, expected {a}",
                        self.cfg.key_label,
                        hsm.address()
                    )));
                }
                _ => *known = Some(hsm.address()),
            }
            *slot = Some(hsm);
        }
        Ok(slot.as_ref().expect("just set"))
    }

    /// Signs a 32-byte digest (low s, v 27/28 in `as_bytes`), reconnecting first if needed.
    ///
    /// # Security
    /// Signs `digest` exactly as supplied. Callers MUST rebuild it from the structured message
    /// (EIP-712 `operation_digest`/`admin_digest`) and MUST NOT sign a digest received from a peer.
    pub fn sign_digest(&self, digest: &B256) -> Result<Signature> {
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.ensure(&mut guard).and_then(|h| h.sign_prehash(digest));
        if let Err(e) = &result
            && !matches!(e, RootError::WrongPin | RootError::PinLocked)
        {
            // Drop the session: the next call reopens it (the HSM may have gone and come back).
            *guard = None;
        }
        result
    }

    /// The bare `C_Sign` (no normalisation, no recovery): for measuring the HSM alone.
    ///
    /// # Security
    /// Signs `digest` exactly as supplied; see [`RootKey::sign_digest`].
    pub fn raw_sign(&self, digest: &B256) -> Result<[u8; 64]> {
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure(&mut guard).and_then(|h| h.raw_sign(digest))
    }
}

/// The HSM root key as an alloy signer (EIP-191 messages, EIP-712 typed data, transactions).
#[derive(Debug, Clone)]
pub struct HsmSigner {
    key: Arc<RootKey>,
    address: Address,
    chain_id: Option<ChainId>,
}

impl HsmSigner {
    /// Connects to the HSM and finds the key.
    pub fn connect(cfg: HsmConfig) -> Result<Self> {
        Self::from_key(Arc::new(RootKey::new(cfg, None)))
    }

    /// Wraps an existing root key, connecting to learn its address.
    pub fn from_key(key: Arc<RootKey>) -> Result<Self> {
        let address = key.connect()?;
        Ok(Self { key, address, chain_id: None })
    }

    /// The underlying root key.
    pub fn key(&self) -> &Arc<RootKey> {
        &self.key
    }
}

#[async_trait::async_trait]
impl Signer for HsmSigner {
    async fn sign_hash(&self, hash: &B256) -> alloy::signers::Result<Signature> {
        let key = self.key.clone();
        let hash = *hash;
        tokio::task::spawn_blocking(move || key.sign_digest(&hash))
            .await
            .map_err(alloy::signers::Error::other)?
            .map_err(alloy::signers::Error::other)
    }

    fn address(&self) -> Address {
        self.address
    }

    fn chain_id(&self) -> Option<ChainId> {
        self.chain_id
    }

    fn set_chain_id(&mut self, chain_id: Option<ChainId>) {
        self.chain_id = chain_id;
    }
}

#[async_trait::async_trait]
impl TxSigner<Signature> for HsmSigner {
    fn address(&self) -> Address {
        self.address
    }

    async fn sign_transaction(
        &self,
        tx: &mut dyn SignableTransaction<Signature>,
    ) -> alloy::signers::Result<Signature> {
        if let Some(chain_id) = self.chain_id
            && !tx.set_chain_id_checked(chain_id)
        {
            return Err(alloy::signers::Error::TransactionChainIdMismatch {
                signer: chain_id,
                tx: tx.chain_id().unwrap_or_default(),
            });
        }
        self.sign_hash(&tx.signature_hash()).await
    }
}
