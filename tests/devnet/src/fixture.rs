//! A fresh anvil with a complete treasury deployed on it.

use crate::world::{DeployConfig, Deployment, deploy};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::DynProvider;
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use treasury_chain::contracts::TreasuryModule;
use treasury_chain::provider::connect_with_signer;
use treasury_chain::snapshot::{AssetSpec, SnapshotSpec};
use treasury_chain::{Operation, TIER_QUORUM, TIER_ROOT, operation_digest};

use crate::anvil::{Anvil, DEV_KEYS};
use crate::quorum::TestQuorum;

/// A running anvil with the demo treasury deployed: a 3-of-5 Safe, the module (2-of-3 FROST test
/// quorum, root = dev key 6), Uniswap V2 with liquidity, USDC and GOV with price feeds.
#[derive(Debug)]
pub struct TestChain {
    /// The anvil process (dropped last).
    pub anvil: Anvil,
    /// Provider sending from dev key 0, the deployer and keeper.
    pub keeper: DynProvider,
    /// The keeper's key.
    pub keeper_key: PrivateKeySigner,
    /// The Safe's five owners (dev keys 1–5), threshold 3.
    pub owners: Vec<PrivateKeySigner>,
    /// The root key (dev key 6), standing in for the HSM in chain-level tests.
    pub root: PrivateKeySigner,
    /// The FROST quorum whose group key the module trusts.
    pub quorum: TestQuorum,
    /// Addresses of everything deployed.
    pub deployment: Deployment,
}

impl TestChain {
    /// Starts anvil and deploys the demo treasury.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Like [`TestChain::start`], with extra anvil arguments (e.g. `--disable-code-size-limit`).
    pub async fn start_with(anvil_args: &[&str]) -> anyhow::Result<Self> {
        let anvil = if anvil_args.is_empty() { Anvil::start()? } else { Anvil::start_with(anvil_args)? };
        let keeper_key = dev_key(0);
        let keeper = connect_with_signer(anvil.url(), keeper_key.clone())?;
        let owners: Vec<_> = (1..=5).map(dev_key).collect();
        let root = dev_key(6);
        let quorum = TestQuorum::new(2, 3);
        let config = DeployConfig::demo(owners.clone(), 3, quorum.group_key(), root.address());
        let deployment = deploy(&keeper, keeper_key.address(), &config).await?;
        Ok(Self { anvil, keeper, keeper_key, owners, root, quorum, deployment })
    }

    /// What a snapshot of this treasury reads: ETH, then every deployed token, all with feeds.
    pub fn snapshot_spec(&self) -> SnapshotSpec {
        let d = &self.deployment;
        let mut assets = vec![AssetSpec {
            symbol: "ETH".into(),
            token: Address::ZERO,
            decimals: 18,
            feed: Some(d.eth_feed),
            max_price_age_secs: 3_600,
        }];
        assets.extend(d.tokens.iter().map(|t| AssetSpec {
            symbol: t.symbol.clone(),
            token: t.address,
            decimals: t.decimals,
            feed: Some(t.feed),
            max_price_age_secs: 3_600,
        }));
        SnapshotSpec { safe: d.safe, module: d.module, multicall3: d.multicall3, assets }
    }

    /// Signs `op` with the test quorum (and the root when `tier2`) and executes it through the module.
    pub async fn exec(&self, op: &Operation, tier2: bool) -> anyhow::Result<TransactionReceipt> {
        let d = &self.deployment;
        let tier = if tier2 { TIER_ROOT } else { TIER_QUORUM };
        let digest = operation_digest(op, tier, d.chain_id, d.module);
        let sig = self.quorum.sign(digest);
        let root_sig = if tier2 {
            Bytes::from(self.root.sign_hash_sync(&digest)?.as_bytes().to_vec())
        } else {
            Bytes::new()
        };
        self.exec_signed(op, sig, root_sig).await
    }

    /// Executes `op` through the module with signatures made elsewhere (a quorum, an HSM root);
    /// an empty `root_sig` means tier 1. A revert is an error.
    pub async fn exec_signed(
        &self,
        op: &Operation,
        frost: TreasuryModule::FrostSig,
        root_sig: Bytes,
    ) -> anyhow::Result<TransactionReceipt> {
        let module = TreasuryModule::new(self.deployment.module, &self.keeper);
        let calls = treasury_chain::contracts::exec_calls(op);
        let receipt =
            module.exec(calls, op.nonce, op.deadline, frost, root_sig).send().await?.get_receipt().await?;
        anyhow::ensure!(receipt.status(), "exec reverted (tx {})", receipt.transaction_hash);
        Ok(receipt)
    }

    /// The module's next nonce.
    pub async fn module_nonce(&self) -> anyhow::Result<U256> {
        Ok(TreasuryModule::new(self.deployment.module, &self.keeper).nonce().call().await?)
    }

    /// The Safe's owners that sign its transactions (first three).
    pub fn signing_owners(&self) -> &[PrivateKeySigner] {
        &self.owners[..3]
    }
}

/// Anvil dev key number `i`.
pub fn dev_key(i: usize) -> PrivateKeySigner {
    DEV_KEYS[i].parse().expect("valid dev key")
}

/// Writes `key` as an encrypted JSON keystore (Web3 Secret Storage) named `name` in `dir`.
pub fn write_keystore(
    dir: &std::path::Path,
    name: &str,
    key: &PrivateKeySigner,
    password: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let mut rng = rand::thread_rng();
    PrivateKeySigner::encrypt_keystore(dir, &mut rng, key.to_bytes(), password, Some(name))?;
    Ok(dir.join(name))
}
