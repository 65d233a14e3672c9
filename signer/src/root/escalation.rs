//! The escalation path: classify an operation against the module's tiers (`treasury_chain::tiers`,
//! read from chain), get the FROST signature and, for tier 2, the root's, and return what `exec` takes.
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, Bytes};
use alloy::providers::DynProvider;
use serde::{Deserialize, Serialize};
use treasury_chain::Operation;
use treasury_chain::tiers::{Tier, classify, read_facts};

use super::client::RootClient;
use super::error::{Result, RootError};
use super::request::EscalationRequest;
use super::store::RequestRecord;
use crate::quorum::FrostSignature;
use crate::quorum::coordinator::Coordinator;

/// The FROST side of an authorisation; the quorum coordinator implements it.
#[async_trait::async_trait]
pub trait FrostAuthorizer: Send + Sync {
    /// The quorum's signature over `operation_digest(op, TIER_ROOT, chain_id, module)`; `root_sig` is the
    /// root's signature of the same digest, which nodes require for a tier-2 operation.
    async fn sign_operation(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        root_sig: Option<&[u8]>,
    ) -> Result<FrostSignature>;
}

/// The escalation path's FROST side: the quorum signs, with the root's signature for tier 2.
#[async_trait::async_trait]
impl FrostAuthorizer for Coordinator {
    async fn sign_operation(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        root_sig: Option<&[u8]>,
    ) -> Result<FrostSignature> {
        Ok(self.sign(op, chain_id, module, root_sig).await?)
    }
}

/// What `exec(calls, nonce, deadline, frostSig, rootSig)` takes besides the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorisation {
    /// 1 or 2.
    pub tier: u8,
    /// The quorum's signature.
    pub frost: FrostSignature,
    /// Empty for tier 1; the root's 65-byte signature for tier 2.
    pub root_sig: Bytes,
    /// The root request id (tier 2), for the journal.
    pub root_request: Option<String>,
}

/// The helper the agent calls to authorise an operation.
#[derive(Clone)]
pub struct Escalator {
    /// The root service.
    pub root: RootClient,
    /// The quorum.
    pub frost: Arc<dyn FrostAuthorizer>,
    /// Chain access for reading the module's tiers.
    pub provider: DynProvider,
    /// Chain id.
    pub chain_id: u64,
    /// Module address.
    pub module: Address,
    /// How often to poll the root service while a request waits.
    pub poll: Duration,
}

impl std::fmt::Debug for Escalator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escalator")
            .field("chain_id", &self.chain_id)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

impl Escalator {
    /// The tier `op` needs, read from the module now.
    pub async fn tier(&self, op: &Operation) -> Result<Tier> {
        let facts = read_facts(&self.provider, self.module, op).await.map_err(RootError::Chain)?;
        Ok(classify(op, &facts))
    }

    /// Queues `op` with the root service (idempotent: a resubmission after a restart returns the
    /// same request). The agent records the returned id in its journal.
    pub async fn submit_to_root(&self, op: &Operation) -> Result<RequestRecord> {
        self.root.submit(&EscalationRequest::operation(op.clone(), self.chain_id, self.module)).await
    }

    /// Authorises `op`: FROST alone for tier 1; for tier 2 the root request is queued (a guard
    /// refusal fails fast), this waits for the approval and the root's signature, then the quorum
    /// signs with it (nodes refuse tier 2 without it, and a rejected operation never holds a FROST
    /// signature).
    pub async fn authorise(&self, op: &Operation) -> Result<Authorisation> {
        match self.tier(op).await? {
            Tier::One => {
                let frost = self.frost.sign_operation(op, self.chain_id, self.module, None).await?;
                Ok(Authorisation { tier: 1, frost, root_sig: Bytes::new(), root_request: None })
            }
            Tier::Two(reasons) => {
                tracing::info!(?reasons, "escalating to the root signer");
                let rec = self.submit_to_root(op).await?;
                let root_sig = self.root.wait_signed(&rec.id, self.poll).await?;
                let frost =
                    self.frost.sign_operation(op, self.chain_id, self.module, Some(&root_sig)).await?;
                Ok(Authorisation { tier: 2, frost, root_sig, root_request: Some(rec.id) })
            }
        }
    }
}
