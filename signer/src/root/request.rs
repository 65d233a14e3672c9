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
    /// What the requester says about it, for the approvers' page: not part of the digest, not
    /// checked by the guard, shown as the requester's claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<EscalationContext>,
}

/// The requester's account of an escalation: where it came from and why it needs the root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationContext {
    /// The intents the operation carries.
    #[serde(default)]
    pub intents: Vec<ContextIntent>,
    /// The block the operation was planned on.
    #[serde(default)]
    pub block: Option<ContextBlock>,
    /// USD prices at that block.
    #[serde(default)]
    pub prices: Vec<ContextPrice>,
    /// The module's budgets the operation exceeds.
    #[serde(default)]
    pub budgets: Vec<ContextBudget>,
    /// Why tier 1 does not suffice, in words.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// How the operation's simulation ended.
    #[serde(default)]
    pub simulation: Option<String>,
}

/// One intent of an escalated operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextIntent {
    /// The policy that produced it.
    pub policy: String,
    /// The firing (trigger) that ran the policy.
    pub trigger: String,
    /// Its idempotency key.
    pub key: String,
    /// The policy's memo.
    #[serde(default)]
    pub memo: Option<String>,
}

/// A pinned block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextBlock {
    /// Number.
    pub number: u64,
    /// Hash.
    pub hash: alloy::primitives::B256,
    /// Timestamp (unix seconds).
    pub timestamp: u64,
}

/// A token's USD price at the pinned block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextPrice {
    /// Token (the zero address for ETH).
    pub token: Address,
    /// Its decimals.
    pub decimals: u8,
    /// USD per whole token, 8 decimals.
    pub usd_e8: U256,
}

/// A module budget the operation exceeds, in the token's smallest unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextBudget {
    /// Token (the zero address for ETH).
    pub token: Address,
    /// Limit per window.
    pub limit: U256,
    /// Left in the current window.
    pub remaining: U256,
    /// What the operation moves.
    pub outflow: U256,
}

impl EscalationRequest {
    /// A request to co-sign an operation.
    pub fn operation(operation: Operation, chain_id: u64, module: Address) -> Self {
        Self { chain_id, module, payload: Payload::Operation { operation }, context: None }
    }

    /// A request to sign an admin operation.
    pub fn admin(admin: AdminOp, chain_id: u64, module: Address) -> Self {
        Self { chain_id, module, payload: Payload::Admin { admin }, context: None }
    }

    /// The same request with the requester's `context`.
    pub fn with_context(mut self, context: EscalationContext) -> Self {
        self.context = Some(context);
        self
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
