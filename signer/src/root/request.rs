//! What a requester asks the root to sign: the structured operation, never a hash.
use alloy::primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};
use treasury_chain::{AdminOp, Operation, TIER_ROOT, admin_digest, operation_digest};

/// The structured message to sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    /// A batch for `exec` (tier 2: the root co-signs with the quorum).
    Operation {
        /// The batch.
        operation: Operation,
    },
    /// A settings change for `admin`.
    Admin {
        /// The change.
        admin: AdminOp,
    },
}

/// An escalation request: the payload and the domain (chain id, module) it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationRequest {
    /// Chain id of the EIP-712 domain.
    pub chain_id: u64,
    /// Module address (EIP-712 verifying contract).
    pub module: Address,
    /// What to sign.
    #[serde(flatten)]
    pub payload: Payload,
}

impl EscalationRequest {
    /// A request to co-sign an operation.
    pub fn operation(operation: Operation, chain_id: u64, module: Address) -> Self {
        Self { chain_id, module, payload: Payload::Operation { operation } }
    }

    /// A request to sign an admin operation.
    pub fn admin(admin: AdminOp, chain_id: u64, module: Address) -> Self {
        Self { chain_id, module, payload: Payload::Admin { admin } }
    }

    /// The EIP-712 digest, rebuilt here from the structured payload.
    ///
    /// # Security
    /// This is the only digest the root signs for a request: it MUST be computed from the payload
    /// with the shared `treasury_chain` definitions (EIP-712), never taken from the requester.
    pub fn digest(&self) -> B256 {
        match &self.payload {
            Payload::Operation { operation } => {
                operation_digest(operation, TIER_ROOT, self.chain_id, self.module)
            }
            Payload::Admin { admin } => admin_digest(admin, self.chain_id, self.module),
        }
    }

    /// The payload's deadline.
    pub fn deadline(&self) -> U256 {
        match &self.payload {
            Payload::Operation { operation } => operation.deadline,
            Payload::Admin { admin } => admin.deadline,
        }
    }

    /// `"operation"` or `"admin"`.
    pub fn kind(&self) -> &'static str {
        match self.payload {
            Payload::Operation { .. } => "operation",
            Payload::Admin { .. } => "admin",
        }
    }
}
