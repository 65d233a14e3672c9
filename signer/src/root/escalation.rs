//! The escalation path the agent calls: classify an operation against the module's tiers (read
//! from chain), get the FROST signature and, for tier 2, the root's, and return what `exec` takes.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, Bytes, FixedBytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};
use treasury_chain::Operation;
use treasury_chain::contracts::IERC20;
use treasury_chain::operation::OP_CALL;

use super::client::RootClient;
use super::error::{Result, RootError};
use super::request::EscalationRequest;
use super::store::RequestRecord;
use crate::quorum::FrostSignature;

alloy::sol! {
    /// The module's views the classification reads.
    #[sol(rpc)]
    interface IModuleTiers {
        function isCallAllowed(address target, bytes4 selector) external view returns (bool);
        function isSpenderAllowed(address spender) external view returns (bool);
        function budget(address token) external view returns (uint256 limit, uint64 period, uint256 spent, uint256 remaining);
    }
}

const INCREASE_ALLOWANCE: [u8; 4] = [0x39, 0x50, 0x93, 0x51];

/// The FROST side of an authorisation; the quorum coordinator implements it.
#[async_trait::async_trait]
pub trait FrostAuthorizer: Send + Sync {
    /// The quorum's signature over `operation_digest(op, chain_id, module)`; `root_sig` is the
    /// root's signature of the same digest, which nodes require for a tier-2 operation.
    async fn sign_operation(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        root_sig: Option<&[u8]>,
    ) -> Result<FrostSignature>;
}

/// A tracked asset's budget as the module reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetView {
    /// Limit per period.
    pub limit: U256,
    /// Period, seconds (0 = untracked).
    pub period: u64,
    /// Spent in the current period.
    pub spent: U256,
    /// Remaining in the current period.
    pub remaining: U256,
}

/// What the module says about the calls of one operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleFacts {
    /// `isCallAllowed(target, selector)`.
    pub call_allowed: BTreeMap<(Address, [u8; 4]), bool>,
    /// `isSpenderAllowed(spender)`.
    pub spender_allowed: BTreeMap<Address, bool>,
    /// `budget(asset)` of every asset the operation moves.
    pub budgets: BTreeMap<Address, BudgetView>,
    /// Targets of empty-calldata calls that have code (not plain ETH to an EOA).
    pub has_code: BTreeSet<Address>,
}

/// The module tier an operation needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    /// FROST alone suffices.
    One,
    /// FROST and root together; the reasons tier 1 does not suffice.
    Two(Vec<String>),
}

/// The selector and (for approvals) spender, or (for transfers) amount, of a call.
fn decode(data: &[u8]) -> Option<[u8; 4]> {
    data.get(..4).map(|s| s.try_into().expect("four bytes"))
}

/// The assets whose outflow an operation may cause, with the amounts seen in ETH value and ERC-20 transfers.
pub fn outflows(op: &Operation) -> BTreeMap<Address, U256> {
    let mut out: BTreeMap<Address, U256> = BTreeMap::new();
    for c in &op.calls {
        if !c.value.is_zero() {
            let e = out.entry(Address::ZERO).or_default();
            *e = e.saturating_add(c.value);
        }
        if decode(&c.data) == Some(IERC20::transferCall::SELECTOR)
            && let Ok(t) = IERC20::transferCall::abi_decode_validate(&c.data)
        {
            let e = out.entry(c.to).or_default();
            *e = e.saturating_add(t.amount);
        }
    }
    out
}

/// Classifies `op` the way `TreasuryModule._execTier1` would judge it. Pure.
pub fn classify(op: &Operation, facts: &ModuleFacts) -> Tier {
    let mut reasons = Vec::new();
    for (i, c) in op.calls.iter().enumerate() {
        if c.operation != OP_CALL {
            reasons.push(format!("call {i} is a delegatecall"));
            continue;
        }
        if c.data.is_empty() && !facts.has_code.contains(&c.to) {
            continue;
        }
        let sel = decode(&c.data).unwrap_or([0; 4]);
        if sel == IERC20::approveCall::SELECTOR || sel == INCREASE_ALLOWANCE {
            let spender = (c.data.len() >= 36).then(|| Address::from_slice(&c.data[16..36]));
            match spender {
                Some(s) if facts.spender_allowed.get(&s).copied().unwrap_or(false) => {}
                Some(s) => reasons.push(format!("call {i}: spender {s} is not allow-listed")),
                None => reasons.push(format!("call {i}: malformed approval")),
            }
        } else if !facts.call_allowed.get(&(c.to, sel)).copied().unwrap_or(false) {
            reasons.push(format!("call {i}: {}.0x{} is not allow-listed", c.to, hex::encode(sel)));
        }
    }
    for (asset, amount) in outflows(op) {
        if let Some(b) = facts.budgets.get(&asset)
            && b.period != 0
            && amount > b.remaining
        {
            reasons.push(format!("outflow {amount} of {asset} exceeds the remaining budget {}", b.remaining));
        }
    }
    if reasons.is_empty() { Tier::One } else { Tier::Two(reasons) }
}

/// Reads the facts `classify` needs from the module at `module`.
pub async fn read_facts(provider: &DynProvider, module: Address, op: &Operation) -> Result<ModuleFacts> {
    let m = IModuleTiers::new(module, provider.clone());
    let chain = |e: alloy::contract::Error| RootError::Chain(e.to_string());
    let mut facts = ModuleFacts::default();
    for c in &op.calls {
        if c.data.is_empty() {
            let code = provider.get_code_at(c.to).await.map_err(|e| RootError::Chain(e.to_string()))?;
            if !code.is_empty() {
                facts.has_code.insert(c.to);
            }
        }
        let sel = decode(&c.data).unwrap_or([0; 4]);
        if (sel == IERC20::approveCall::SELECTOR || sel == INCREASE_ALLOWANCE) && c.data.len() >= 36 {
            let s = Address::from_slice(&c.data[16..36]);
            let allowed = m.isSpenderAllowed(s).call().await.map_err(chain)?;
            facts.spender_allowed.insert(s, allowed);
        } else {
            let allowed = m.isCallAllowed(c.to, FixedBytes(sel)).call().await.map_err(chain)?;
            facts.call_allowed.insert((c.to, sel), allowed);
        }
    }
    for asset in outflows(op).keys() {
        let b = m.budget(*asset).call().await.map_err(chain)?;
        facts.budgets.insert(
            *asset,
            BudgetView { limit: b.limit, period: b.period, spent: b.spent, remaining: b.remaining },
        );
    }
    Ok(facts)
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
        Ok(classify(op, &read_facts(&self.provider, self.module, op).await?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use treasury_chain::Call;

    fn token() -> Address {
        Address::repeat_byte(0xaa)
    }

    fn pay(amount: u64) -> Operation {
        let data =
            IERC20::transferCall { to: Address::repeat_byte(1), amount: U256::from(amount) }.abi_encode();
        Operation {
            calls: vec![Call::new(token(), U256::ZERO, data)],
            nonce: U256::ZERO,
            deadline: U256::MAX,
        }
    }

    fn facts(remaining: u64) -> ModuleFacts {
        let mut f = ModuleFacts::default();
        f.call_allowed.insert((token(), IERC20::transferCall::SELECTOR), true);
        f.budgets.insert(
            token(),
            BudgetView {
                limit: U256::from(100),
                period: 86_400,
                spent: U256::ZERO,
                remaining: U256::from(remaining),
            },
        );
        f
    }

    #[test]
    fn within_budget_and_allow_list_is_tier_one() {
        assert_eq!(classify(&pay(100), &facts(100)), Tier::One);
    }

    #[test]
    fn over_budget_unlisted_or_delegatecall_is_tier_two() {
        assert!(matches!(classify(&pay(101), &facts(100)), Tier::Two(r) if r[0].contains("budget")));
        let mut f = facts(100);
        f.call_allowed.clear();
        assert!(matches!(classify(&pay(1), &f), Tier::Two(r) if r[0].contains("not allow-listed")));
        let mut op = pay(1);
        op.calls[0].operation = 1;
        assert!(matches!(classify(&op, &facts(100)), Tier::Two(r) if r[0].contains("delegatecall")));
        let approve =
            IERC20::approveCall { spender: Address::repeat_byte(5), amount: U256::from(1) }.abi_encode();
        let op = Operation {
            calls: vec![Call::new(token(), U256::ZERO, approve)],
            nonce: U256::ZERO,
            deadline: U256::MAX,
        };
        assert!(matches!(classify(&op, &facts(100)), Tier::Two(r) if r[0].contains("spender")));
    }

    #[test]
    fn eth_to_an_eoa_needs_no_allow_list_but_counts_against_the_budget() {
        let op = Operation {
            calls: vec![Call::new(Address::repeat_byte(3), U256::from(50), Vec::<u8>::new())],
            nonce: U256::ZERO,
            deadline: U256::MAX,
        };
        let mut f = ModuleFacts::default();
        assert_eq!(classify(&op, &f), Tier::One);
        f.budgets.insert(
            Address::ZERO,
            BudgetView { limit: U256::from(10), period: 60, spent: U256::ZERO, remaining: U256::from(10) },
        );
        assert!(matches!(classify(&op, &f), Tier::Two(_)));
    }
}
