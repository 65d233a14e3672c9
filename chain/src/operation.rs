//! The `Operation` a treasury module executes and its EIP-712 digest.
//!
//! This is the one definition of what signers sign: the agent builds an [`Operation`], every FROST
//! node and the root signer rebuild the digest from it with [`operation_digest`], and
//! `TreasuryModule.sol` recomputes the same digest on chain.

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};

alloy::sol! {
    /// One call the Safe makes; `operation` is 0 for CALL and 1 for DELEGATECALL.
    #[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    struct Call {
        address to;
        uint256 value;
        bytes data;
        uint8 operation;
    }

    /// A batch of calls authorised together under one module nonce and deadline.
    #[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    struct Operation {
        Call[] calls;
        uint256 nonce;
        uint256 deadline;
    }

    /// A root-signed (or, for pause and cancel, quorum-signed) change of the module's settings.
    #[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    struct AdminOp {
        uint8 action;
        bytes params;
        uint256 nonce;
        uint256 deadline;
    }
}

/// EIP-712 domain name of the treasury module.
pub const DOMAIN_NAME: &str = "TreasuryModule";
/// EIP-712 domain version of the treasury module.
pub const DOMAIN_VERSION: &str = "1";

/// Value of [`Call::operation`] for a plain call.
pub const OP_CALL: u8 = 0;
/// Value of [`Call::operation`] for a delegatecall (tier 2 only).
pub const OP_DELEGATECALL: u8 = 1;

/// The EIP-712 domain of the module at `module` on chain `chain_id`.
pub fn domain(chain_id: u64, module: Address) -> Eip712Domain {
    eip712_domain! {
        name: DOMAIN_NAME,
        version: DOMAIN_VERSION,
        chain_id: chain_id,
        verifying_contract: module,
    }
}

/// Tier of an operation signed by the FROST quorum alone (restricted, charged to the budgets).
pub const TIER_QUORUM: u8 = 1;
/// Tier of an operation signed by the quorum and the root (unrestricted).
pub const TIER_ROOT: u8 = 2;

/// The struct the module hashes: the operation and the tier it is authorised at.
mod signed {
    alloy::sol! {
        struct Call {
            address to;
            uint256 value;
            bytes data;
            uint8 operation;
        }

        struct Operation {
            Call[] calls;
            uint256 nonce;
            uint256 deadline;
            uint8 tier;
        }
    }
}

/// The EIP-712 digest of `op` at `tier` ([`TIER_QUORUM`] or [`TIER_ROOT`]) for the module at
/// `module` on chain `chain_id`.
///
/// # Security
/// Signers MUST compute this themselves from the structured operation and MUST NOT sign a digest
/// handed to them. The digest binds chain id, module address, every call, nonce, deadline and the
/// tier (EIP-712, `\x19\x01 ‖ domainSeparator ‖ hashStruct(Operation)` with
/// `Operation(Call[] calls,uint256 nonce,uint256 deadline,uint8 tier)`): a tier-2 signature is
/// useless without the root's, so stripping the root signature cannot turn it into tier 1.
pub fn operation_digest(op: &Operation, tier: u8, chain_id: u64, module: Address) -> B256 {
    let calls = op
        .calls
        .iter()
        .map(|c| signed::Call { to: c.to, value: c.value, data: c.data.clone(), operation: c.operation })
        .collect();
    let typed = signed::Operation { calls, nonce: op.nonce, deadline: op.deadline, tier };
    typed.eip712_signing_hash(&domain(chain_id, module))
}

/// The EIP-712 digest of an admin operation, under the same domain as [`operation_digest`].
pub fn admin_digest(op: &AdminOp, chain_id: u64, module: Address) -> B256 {
    op.eip712_signing_hash(&domain(chain_id, module))
}

impl Call {
    /// A plain call to `to` with `value` wei and calldata `data`.
    pub fn new(to: Address, value: U256, data: impl Into<Bytes>) -> Self {
        Self { to, value, data: data.into(), operation: OP_CALL }
    }

    /// The 4-byte selector of the calldata, or `None` when it is shorter than four bytes.
    pub fn selector(&self) -> Option<[u8; 4]> {
        self.data.get(..4).map(|s| s.try_into().expect("four bytes"))
    }
}
