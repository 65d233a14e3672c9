//! What the lanes of one process share (issue 16: 1,000 treasuries in one process): one RPC
//! provider per chain and set of endpoints, one quorum coordinator (its HTTP client, node
//! connections and nonce pool) per quorum file, one root-service client per service and token,
//! and each keeper keystore decrypted once. A lane alone gets a [`Shared`] of its own, so a single
//! treasury behaves as before.
//!
//! Each entry is made by the first lane that asks and handed to the others as it is; lanes that
//! ask at the same time wait for that one (a keystore or coordinator key is decrypted once, not
//! once per lane: each costs a memory-hard key derivation).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use reqwest::Url;
use tokio::sync::OnceCell;
use treasury_signer::quorum::Coordinator;
use treasury_signer::root::RootClient;

/// Values made once per key, the first caller making them while the others wait.
struct Once<K, V>(Mutex<HashMap<K, Arc<OnceCell<V>>>>);

impl<K, V> Default for Once<K, V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Eq + Hash, V: Clone> Once<K, V> {
    async fn get_or_try_init<E, Fut>(&self, key: K, make: impl FnOnce() -> Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().clone();
        cell.get_or_try_init(make).await.cloned()
    }
}

/// The resources the lanes of one process share; see the module documentation.
#[derive(Default)]
pub struct Shared {
    providers: Once<(u64, Vec<Url>), DynProvider>,
    coordinators: Once<(PathBuf, [u8; 32]), Arc<Coordinator>>,
    keystores: Once<(PathBuf, [u8; 32]), PrivateKeySigner>,
    roots: Once<(String, [u8; 32]), RootClient>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// A secret's digest, to key a cache entry without keeping the secret in the key.
fn digest(secret: &str) -> [u8; 32] {
    alloy::primitives::keccak256(secret.as_bytes()).0
}

impl Shared {
    /// The provider of `chain_id` behind `endpoints`, connected (and checked) by `connect` once.
    pub async fn provider<E, Fut>(
        &self,
        chain_id: u64,
        endpoints: Vec<Url>,
        connect: impl FnOnce() -> Fut,
    ) -> Result<DynProvider, E>
    where
        Fut: Future<Output = Result<DynProvider, E>>,
    {
        self.providers.get_or_try_init((chain_id, endpoints), connect).await
    }

    /// The coordinator of the quorum file `path` (its key opened with `passphrase`), made by
    /// `open` once.
    pub async fn coordinator<E>(
        &self,
        path: PathBuf,
        passphrase: &str,
        open: impl FnOnce() -> Result<Coordinator, E>,
    ) -> Result<Arc<Coordinator>, E> {
        let key = (path, digest(passphrase));
        self.coordinators.get_or_try_init(key, || async { open().map(Arc::new) }).await
    }

    /// The keeper key of the keystore `path` decrypted with `password`, by `decrypt` once.
    pub async fn keystore<E>(
        &self,
        path: PathBuf,
        password: &str,
        decrypt: impl FnOnce() -> Result<PrivateKeySigner, E>,
    ) -> Result<PrivateKeySigner, E> {
        let key = (path, digest(password));
        self.keystores.get_or_try_init(key, || async { decrypt() }).await
    }

    /// The client of the root service at `url` with the bearer `token`.
    pub async fn root(&self, url: String, token: String) -> RootClient {
        let key = (url.clone(), digest(&token));
        let made = self
            .roots
            .get_or_try_init(key, || async { Ok::<_, std::convert::Infallible>(RootClient::new(url, token)) })
            .await;
        match made {
            Ok(client) => client,
            Err(never) => match never {},
        }
    }
}
