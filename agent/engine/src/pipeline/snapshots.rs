//! One reader of snapshots per chain, shared by every treasury lane of the process on that chain:
//! lanes asking for the same block within a short window are read together, in as few Multicall3
//! calls as fit (`treasury_chain::snapshot::read_snapshots`). A chain served by one lane reads at
//! once, without the window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::providers::DynProvider;
use reqwest::Url;
use tokio::sync::oneshot;
use treasury_chain::ChainError;
use treasury_chain::snapshot::{Snapshot, SnapshotSpec, read_snapshot, read_snapshots};

/// How long the first lane asking for a block waits for the other lanes of its chain.
pub const GATHER_WINDOW: Duration = Duration::from_millis(15);

type Waiter = (SnapshotSpec, oneshot::Sender<Result<Snapshot, String>>);

/// The shared reader of one chain (one set of endpoints).
pub struct ChainSnapshots {
    provider: DynProvider,
    window: Duration,
    pending: Mutex<HashMap<u64, Vec<Waiter>>>,
}

/// A lane's handle on its chain's reader; the chain's lanes are counted by their handles.
#[derive(Clone)]
pub struct SnapshotReader {
    chain: Arc<ChainSnapshots>,
}

/// The readers of this process, by chain id and endpoints (two devnets may share a chain id).
type Registry = Mutex<HashMap<(u64, Vec<Url>), Weak<ChainSnapshots>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl SnapshotReader {
    /// The reader of the chain `chain_id` behind `endpoints`, shared with the other lanes on it.
    pub fn for_chain(chain_id: u64, endpoints: Vec<Url>, provider: &DynProvider) -> Self {
        Self::shared(chain_id, endpoints, provider, GATHER_WINDOW)
    }

    fn shared(chain_id: u64, endpoints: Vec<Url>, provider: &DynProvider, window: Duration) -> Self {
        let mut all = registry().lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, chain| chain.strong_count() > 0);
        let key = (chain_id, endpoints);
        if let Some(chain) = all.get(&key).and_then(Weak::upgrade) {
            return Self { chain };
        }
        let chain =
            Arc::new(ChainSnapshots { provider: provider.clone(), window, pending: Mutex::default() });
        all.insert(key, Arc::downgrade(&chain));
        Self { chain }
    }

    /// How many lanes share this chain's reader.
    pub fn lanes(&self) -> usize {
        Arc::strong_count(&self.chain)
    }

    /// `spec`'s snapshot at `block`, read together with the other lanes' asking for that block.
    pub async fn read(&self, spec: &SnapshotSpec, block: u64) -> Result<Snapshot, String> {
        if self.lanes() <= 1 {
            return read_snapshot(&self.chain.provider, spec, BlockNumberOrTag::Number(block))
                .await
                .map_err(|e| treasury_signer::error_chain(&e));
        }
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut pending = self.chain.pending.lock().unwrap_or_else(|p| p.into_inner());
            let waiters = pending.entry(block).or_default();
            waiters.push((spec.clone(), tx));
            waiters.len() == 1
        };
        if first {
            let chain = self.chain.clone();
            tokio::spawn(async move {
                tokio::time::sleep(chain.window).await;
                let waiters = chain.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&block);
                let Some(waiters) = waiters else { return };
                let specs: Vec<SnapshotSpec> = waiters.iter().map(|(s, _)| s.clone()).collect();
                let read = read_snapshots(&chain.provider, &specs, BlockNumberOrTag::Number(block)).await;
                deliver(waiters, read);
            });
        }
        rx.await.map_err(|_| "the snapshot reader stopped".to_string())?
    }
}

fn deliver(waiters: Vec<Waiter>, read: Result<Vec<Snapshot>, ChainError>) {
    match read {
        Ok(snapshots) => {
            for ((_, tx), snapshot) in waiters.into_iter().zip(snapshots) {
                let _ = tx.send(Ok(snapshot));
            }
        }
        Err(e) => {
            let message = treasury_signer::error_chain(&e);
            for (_, tx) in waiters {
                let _ = tx.send(Err(message.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::Address;
    use alloy::providers::Provider;
    use treasury_devnet::TestChain;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_on_one_chain_share_a_reader_and_each_gets_its_own_snapshot() {
        let chain = TestChain::start().await.unwrap();
        let url: Url = chain.anvil.url().parse().unwrap();
        let provider = treasury_chain::provider::connect(chain.anvil.url()).unwrap();
        let a = SnapshotReader::for_chain(31337, vec![url.clone()], &provider);
        assert_eq!(a.lanes(), 1, "alone on its chain");
        let b = SnapshotReader::for_chain(31337, vec![url.clone()], &provider);
        let other = SnapshotReader::for_chain(31337, vec!["http://127.0.0.1:1".parse().unwrap()], &provider);
        assert_eq!((a.lanes(), b.lanes(), other.lanes()), (2, 2, 1), "another endpoint is another chain");
        let spec_a = chain.snapshot_spec();
        let mut spec_b = spec_a.clone();
        spec_b.safe = Address::with_last_byte(0x42);
        let block = provider.get_block_number().await.unwrap();
        let (got_a, got_b) = tokio::join!(a.read(&spec_a, block), b.read(&spec_b, block));
        for (spec, got) in [(&spec_a, got_a.unwrap()), (&spec_b, got_b.unwrap())] {
            let alone = read_snapshot(&provider, spec, BlockNumberOrTag::Number(block)).await.unwrap();
            assert_eq!(got, alone);
        }
        drop(b);
        assert_eq!(a.lanes(), 1, "a lane gone no longer counts");
    }
}
