//! The check every node runs before it signs: chain, module, tier, allow-lists, budgets.
//!
//! Pure functions over values: the node feeds them the structured operation, the digest it
//! rebuilt itself and the budget state it tracks; no I/O here.
use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{Address, B256, Signature, U256};
use serde::{Deserialize, Serialize};
use treasury_chain::operation::{OP_DELEGATECALL, Operation};
use treasury_chain::rules::{self, DECREASE_ALLOWANCE, INCREASE_ALLOWANCE};
pub use treasury_chain::rules::{APPROVE, TRANSFER};

use super::error::{Refusal, RefusalCode};

/// One allow-listed (target, selector) pair; `selector` `None` allows calls with empty calldata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowEntry {
    /// The called contract (or recipient of a plain value transfer).
    pub target: Address,
    /// The 4-byte selector as hex (`0xa9059cbb`), or absent for empty calldata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// A per-period budget of one token (`Address::ZERO` for the native coin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Token contract.
    pub token: Address,
    /// Maximum outflow per period, in the token's base units.
    pub amount: U256,
}

/// A node's guard configuration (`[guard]` in `node.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardConfig {
    /// The chain id this node signs for.
    pub chain_id: u64,
    /// The treasury module this node signs for.
    pub module: Address,
    /// The root signer's address; tier-2 operations need its signature over the same digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Address>,
    /// Budget period in seconds (default one day).
    #[serde(default = "default_period")]
    pub period_secs: u64,
    /// Allow-listed (target, selector) pairs for tier 1.
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
    /// Spenders ERC-20 approvals may name at tier 1.
    #[serde(default)]
    pub spenders: Vec<Address>,
    /// Per-token budgets tracked by this node.
    #[serde(default)]
    pub budgets: Vec<Budget>,
    /// Longest time between now and an operation's deadline this node signs for, seconds
    /// (default [`DEFAULT_MAX_DEADLINE_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deadline_secs: Option<u64>,
}

/// Default longest time to an operation's deadline a node signs for: one week.
pub const DEFAULT_MAX_DEADLINE_SECS: u64 = 7 * 86_400;

fn default_period() -> u64 {
    86_400
}

/// The tier an operation was accepted at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    /// FROST alone, within allow-lists and budgets.
    One,
    /// FROST and a root signature.
    Two,
}

/// Outflow of each token an operation causes, as the node computes it from calldata.
pub type Outflows = BTreeMap<Address, U256>;

/// What the node spent in the current period, rebuilt from its own ledger.
#[derive(Debug, Clone, Default)]
pub struct BudgetState {
    /// The period these figures belong to.
    pub period: u64,
    /// Spent per token.
    pub spent: BTreeMap<Address, U256>,
    /// Digests already counted (a retried signature of the same operation is not counted twice).
    pub counted: BTreeSet<B256>,
}

impl BudgetState {
    /// Moves forward to `period`, forgetting spending of earlier periods; never moves back (a
    /// late request that computed an older period does not reset the budget).
    pub fn roll(&mut self, period: u64) {
        if period > self.period {
            *self = BudgetState { period, ..Default::default() };
        }
    }

    /// Records a tier-1 operation's outflows (once per digest); true when this call counted them.
    pub fn record(&mut self, digest: B256, outflows: &Outflows) -> bool {
        let fresh = self.counted.insert(digest);
        if fresh {
            for (token, amount) in outflows {
                let e = self.spent.entry(*token).or_default();
                *e = e.saturating_add(*amount);
            }
        }
        fresh
    }
}

/// The outcome of a passed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The tier.
    pub tier: Tier,
    /// Outflows to count against budgets (empty at tier 2).
    pub outflows: Outflows,
}

fn selector_hex(sel: Option<[u8; 4]>) -> String {
    sel.map(|s| format!("0x{}", hex::encode(s))).unwrap_or_else(|| "(empty calldata)".into())
}

/// Outflows of `op` as the module's tier-1 rules value them ([`treasury_chain::rules::valued_outflows`]:
/// values, transfers, and per token the larger of its approvals and its swaps' inputs); `Err` for a
/// call that model cannot value.
pub fn outflows(op: &Operation) -> Result<Outflows, (usize, String)> {
    rules::valued_outflows(op)
}

/// How the guard treats an allow-listed call whose outflows it cannot value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valuing {
    /// Refused: every tier-1 outflow must be valued and counted by the node.
    Required,
    /// Accepted with no valued outflow (a keeper job's perform the node re-derived; the module
    /// measures what it moves).
    MeasuredOnChain,
}

impl GuardConfig {
    /// Checks `op` before signing.
    ///
    /// # Security
    /// `digest` MUST be the EIP-712 digest the node computed itself from `op` with
    /// `operation_digest(op, tier, chain_id, module)` (tier 2 when a root signature comes with it); this check MUST pass before a FROST
    /// (RFC 9591) signature share is produced. A root signature, when given, MUST recover the
    /// configured root address over that same digest, else the operation is refused.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        digest: B256,
        root_signature: Option<&[u8]>,
        budget: &BudgetState,
        now_unix: u64,
    ) -> Result<Approved, Refusal> {
        self.check_as(op, chain_id, module, digest, root_signature, budget, now_unix, Valuing::Required)
    }

    /// [`GuardConfig::check`], with how a call the outflow model cannot value is treated.
    ///
    /// # Security
    /// [`Valuing::MeasuredOnChain`] only for an operation the node derived itself as a keeper
    /// job's perform (one allow-listed call that is no transfer or approval): its outflows are
    /// then left to the module's own measurement against its on-chain budgets.
    #[allow(clippy::too_many_arguments)]
    pub fn check_as(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        digest: B256,
        root_signature: Option<&[u8]>,
        budget: &BudgetState,
        now_unix: u64,
        valuing: Valuing,
    ) -> Result<Approved, Refusal> {
        if chain_id != self.chain_id {
            return Err(Refusal::new(
                RefusalCode::WrongChain,
                format!("chain id {chain_id} is not the chain this node serves ({})", self.chain_id),
            ));
        }
        if module != self.module {
            return Err(Refusal::new(
                RefusalCode::WrongModule,
                format!("module {module} is not the module this node serves ({})", self.module),
            ));
        }
        if op.deadline < U256::from(now_unix) {
            return Err(Refusal::new(RefusalCode::Expired, format!("deadline {} has passed", op.deadline)));
        }
        // A signature must not outlive a coordinator key rotation by more than this.
        let max = self.max_deadline_secs.unwrap_or(DEFAULT_MAX_DEADLINE_SECS);
        if op.deadline > U256::from(now_unix.saturating_add(max)) {
            return Err(Refusal::new(
                RefusalCode::DeadlineTooFar,
                format!("deadline {} is more than {max}s from now ({now_unix})", op.deadline),
            ));
        }
        if op.calls.is_empty() {
            return Err(Refusal::new(RefusalCode::BadRequest, "operation has no calls"));
        }
        if let Some(sig) = root_signature.filter(|s| !s.is_empty()) {
            let root = self.root.ok_or_else(|| {
                Refusal::new(
                    RefusalCode::RootSignatureRequired,
                    "tier 2 requested but this node has no root configured",
                )
            })?;
            let recovered =
                Signature::from_raw(sig).ok().and_then(|s| s.recover_address_from_prehash(&digest).ok());
            return match recovered {
                Some(a) if a == root => Ok(Approved { tier: Tier::Two, outflows: Outflows::new() }),
                Some(a) => Err(Refusal::new(
                    RefusalCode::RootSignatureRequired,
                    format!("root signature recovers {a}, not the configured root {root}"),
                )),
                None => Err(Refusal::new(RefusalCode::RootSignatureRequired, "root signature is malformed")),
            };
        }
        let flows = self.check_tier1(op, valuing)?;
        // What moves an asset this node keeps no budget for would be signed without being counted.
        if let Some((asset, amount)) = flows.iter().find(|(a, v)| !v.is_zero() && !self.budgeted(**a)) {
            return Err(Refusal::new(
                RefusalCode::NotAllowed,
                format!(
                    "asset {asset}: an outflow of {amount} at tier 1, but this node has no budget for it (tier 2 needs the root signature)"
                ),
            ));
        }
        let period = now_unix / self.period_secs.max(1);
        for b in &self.budgets {
            let Some(amount) = flows.get(&b.token) else { continue };
            // An operation already counted (a coordinator retry) is not a new spend.
            let already = if budget.period == period && !budget.counted.contains(&digest) {
                budget.spent.get(&b.token).copied().unwrap_or_default()
            } else {
                U256::ZERO
            };
            if already.saturating_add(*amount) > b.amount {
                return Err(Refusal::new(
                    RefusalCode::OverBudget,
                    format!(
                        "token {}: {} spent this period + {} requested exceeds the budget {} (tier 2 needs the root signature)",
                        b.token, already, amount, b.amount
                    ),
                ));
            }
        }
        Ok(Approved { tier: Tier::One, outflows: flows })
    }

    /// The module's tier-1 rules, as far as a node can judge them without chain access (it knows
    /// neither the Safe's address nor which assets the module tracks: a swap's recipient and the
    /// tracking of what moves are left to the module), and the operation's valued outflows. A call
    /// the outflow model cannot value is refused.
    fn check_tier1(&self, op: &Operation, valuing: Valuing) -> Result<Outflows, Refusal> {
        let refuse = |i: usize, why: String| {
            Err(Refusal::new(
                RefusalCode::NotAllowed,
                format!("call {i}: {why} (tier 2 needs the root signature)"),
            ))
        };
        for (i, call) in op.calls.iter().enumerate() {
            if call.operation == OP_DELEGATECALL {
                return refuse(i, "delegatecall".into());
            }
            if call.to == self.module {
                return refuse(i, "a call to the module itself".into());
            }
            let sel = call.selector();
            if sel.is_none() && !call.data.is_empty() {
                return refuse(i, "calldata shorter than a selector".into());
            }
            if sel == Some([0; 4]) {
                return refuse(i, "selector 0x00000000 (it stands for empty calldata only)".into());
            }
            let approval = sel == Some(APPROVE) || sel == Some(INCREASE_ALLOWANCE);
            // a budgeted token's approvals follow the spender rule alone, as on chain
            let own = self.budgeted(call.to) && (approval || sel == Some(DECREASE_ALLOWANCE));
            if !own && !self.allows(call.to, sel) {
                return refuse(
                    i,
                    format!("target {} selector {} is not allow-listed", call.to, selector_hex(sel)),
                );
            }
            if approval && !self.approval_allowed(sel.expect("a selector"), &call.data) {
                return refuse(i, "approval to a spender that is not allow-listed".into());
            }
            if let Some(swap) = rules::decode_swap(&call.data) {
                let swap =
                    swap.map_err(|e| Refusal::new(RefusalCode::NotAllowed, format!("call {i}: {e}")))?;
                if let Err(why) = self.swap_allowed(&swap) {
                    return refuse(i, why);
                }
            }
        }
        match (outflows(op), valuing) {
            (Ok(flows), _) => Ok(flows),
            (Err(_), Valuing::MeasuredOnChain) if op.calls.iter().all(|c| c.value.is_zero()) => {
                Ok(Outflows::new())
            }
            (Err((i, why)), _) => refuse(i, format!("{why} at tier 1")),
        }
    }

    fn budgeted(&self, asset: Address) -> bool {
        self.budgets.iter().any(|b| b.token == asset)
    }

    fn allows(&self, target: Address, sel: Option<[u8; 4]>) -> bool {
        let want = sel.map(|s| format!("0x{}", hex::encode(s)));
        self.allow
            .iter()
            .any(|e| e.target == target && e.selector.as_deref().map(str::to_ascii_lowercase) == want)
    }

    /// `approve(x, a)`: x allow-listed or a == 0; `increaseAllowance(x, a)`: x allow-listed.
    fn approval_allowed(&self, sel: [u8; 4], data: &[u8]) -> bool {
        if data.len() < 68 {
            return false;
        }
        let spender = Address::from_slice(&data[16..36]);
        let zero = U256::from_be_slice(&data[36..68]).is_zero();
        self.spenders.contains(&spender) || (sel == APPROVE && zero)
    }

    /// A swap joins two different assets; an asset this node budgets must not be bought with one it
    /// does not (the module refuses swaps between untracked assets; the node only knows its budgets).
    fn swap_allowed(&self, swap: &rules::Swap) -> Result<(), String> {
        match (swap.path.first(), swap.path.last()) {
            (Some(f), Some(l)) if swap.path.len() >= 2 && f != l => Ok(()),
            _ => Err("swap path must join two different assets".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use alloy::sol_types::SolCall;
    use treasury_chain::operation::{Call, TIER_QUORUM, TIER_ROOT, operation_digest};

    fn transfer(token: Address, to: Address, amount: u64) -> Call {
        let mut data = TRANSFER.to_vec();
        data.extend_from_slice(&[0u8; 12]);
        data.extend_from_slice(to.as_slice());
        data.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
        Call::new(token, U256::ZERO, data)
    }

    fn setup() -> (GuardConfig, Address, Address) {
        let token = Address::repeat_byte(0x11);
        let module = Address::repeat_byte(0x22);
        let cfg = GuardConfig {
            chain_id: 31337,
            module,
            root: None,
            period_secs: 100,
            allow: vec![AllowEntry { target: token, selector: Some("0xa9059cbb".into()) }],
            spenders: vec![],
            budgets: vec![Budget { token, amount: U256::from(1000) }],
            max_deadline_secs: None,
        };
        (cfg, token, module)
    }

    fn op(calls: Vec<Call>) -> Operation {
        Operation { calls, nonce: U256::from(1), deadline: U256::from(10_000) }
    }

    #[test]
    fn budget_is_enforced_per_period_and_retries_are_not_double_counted() {
        let (cfg, token, module) = setup();
        let o = op(vec![transfer(token, Address::repeat_byte(3), 600)]);
        let d = operation_digest(&o, TIER_QUORUM, 31337, module);
        let mut st = BudgetState::default();
        st.roll(10);
        let ok = cfg.check(&o, 31337, module, d, None, &st, 1000).unwrap();
        assert_eq!(ok.outflows[&token], U256::from(600));
        assert!(st.record(d, &ok.outflows), "first count");
        // the same operation again (a coordinator retry) is not a new spend
        assert!(cfg.check(&o, 31337, module, d, None, &st, 1000).is_ok());
        assert!(!st.record(d, &ok.outflows), "a retry is not counted twice");
        let o2 = op(vec![transfer(token, Address::repeat_byte(3), 600)]);
        let o2 = Operation { nonce: U256::from(2), ..o2 };
        let d2 = operation_digest(&o2, TIER_QUORUM, 31337, module);
        let err = cfg.check(&o2, 31337, module, d2, None, &st, 1000).unwrap_err();
        assert_eq!(err.code, RefusalCode::OverBudget);
        // next period: budget is fresh
        assert!(cfg.check(&o2, 31337, module, d2, None, &st, 1100).is_ok());
    }

    #[test]
    fn wrong_chain_module_target_and_delegatecall_are_refused_with_reason() {
        let (cfg, token, module) = setup();
        let o = op(vec![transfer(token, Address::repeat_byte(3), 1)]);
        let d = operation_digest(&o, TIER_QUORUM, 31337, module);
        let st = BudgetState::default();
        assert_eq!(cfg.check(&o, 1, module, d, None, &st, 0).unwrap_err().code, RefusalCode::WrongChain);
        assert_eq!(
            cfg.check(&o, 31337, Address::repeat_byte(9), d, None, &st, 0).unwrap_err().code,
            RefusalCode::WrongModule
        );
        let other = op(vec![transfer(Address::repeat_byte(0x44), Address::repeat_byte(3), 1)]);
        let e = cfg.check(&other, 31337, module, d, None, &st, 0).unwrap_err();
        assert_eq!(e.code, RefusalCode::NotAllowed);
        assert!(e.reason.contains("not allow-listed"), "{}", e.reason);
        let mut dc = transfer(token, Address::repeat_byte(3), 1);
        dc.operation = OP_DELEGATECALL;
        assert_eq!(
            cfg.check(&op(vec![dc]), 31337, module, d, None, &st, 0).unwrap_err().code,
            RefusalCode::NotAllowed
        );
    }

    #[test]
    fn tier_two_needs_the_configured_root_over_the_same_digest() {
        let (mut cfg, _, module) = setup();
        let root = PrivateKeySigner::random();
        cfg.root = Some(root.address());
        let o = op(vec![Call::new(Address::repeat_byte(0x55), U256::from(5), Vec::new())]);
        let d = operation_digest(&o, TIER_ROOT, 31337, module);
        let st = BudgetState::default();
        assert_eq!(cfg.check(&o, 31337, module, d, None, &st, 0).unwrap_err().code, RefusalCode::NotAllowed);
        let good = root.sign_hash_sync(&d).unwrap().as_bytes();
        assert_eq!(cfg.check(&o, 31337, module, d, Some(&good), &st, 0).unwrap().tier, Tier::Two);
        let other_digest = root.sign_hash_sync(&B256::repeat_byte(1)).unwrap().as_bytes();
        assert_eq!(
            cfg.check(&o, 31337, module, d, Some(&other_digest), &st, 0).unwrap_err().code,
            RefusalCode::RootSignatureRequired
        );
        let stranger = PrivateKeySigner::random().sign_hash_sync(&d).unwrap().as_bytes();
        assert_eq!(
            cfg.check(&o, 31337, module, d, Some(&stranger), &st, 0).unwrap_err().code,
            RefusalCode::RootSignatureRequired
        );
    }

    fn call(to: Address, sel: [u8; 4], spender: Address, amount: u64) -> Call {
        let mut data = sel.to_vec();
        data.extend_from_slice(&[0u8; 12]);
        data.extend_from_slice(spender.as_slice());
        data.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
        Call::new(to, U256::ZERO, data)
    }

    #[test]
    fn approvals_count_as_outflow_and_follow_the_modules_rules() {
        let (mut cfg, token, module) = setup();
        let router = Address::repeat_byte(0x77);
        let st = BudgetState::default();
        let check = |cfg: &GuardConfig, calls: Vec<Call>| {
            let o = op(calls);
            cfg.check(&o, 31337, module, operation_digest(&o, TIER_QUORUM, 31337, module), None, &st, 0)
        };
        // an approval to a spender not allow-listed is refused, approve(x, 0) always passes
        assert!(check(&cfg, vec![call(token, APPROVE, router, 5)]).is_err());
        assert!(check(&cfg, vec![call(token, APPROVE, router, 0)]).is_ok());
        cfg.spenders.push(router);
        // an approval is an outflow the budget bounds
        let ok = check(&cfg, vec![call(token, APPROVE, router, 900)]).unwrap();
        assert_eq!(ok.outflows[&token], U256::from(900));
        assert_eq!(
            check(&cfg, vec![call(token, APPROVE, router, 1001)]).unwrap_err().code,
            RefusalCode::OverBudget
        );
        // a token this node does not budget: no outflow of it at tier 1, even allow-listed
        let other = Address::repeat_byte(0x44);
        cfg.allow.push(AllowEntry { target: other, selector: Some("0xa9059cbb".into()) });
        assert!(check(&cfg, vec![call(other, TRANSFER, router, 1)]).is_err());
        assert!(check(&cfg, vec![call(other, APPROVE, router, 1)]).is_err());
    }

    #[test]
    fn an_outflow_in_an_asset_without_a_node_budget_is_refused_at_tier_one() {
        // The module tracks what the root tracked; a node whose budgets do not name an asset must
        // not sign its outflow unbounded (it would sign more than it accounts for).
        let (mut cfg, token, module) = setup();
        let other = Address::repeat_byte(0x44);
        let router = Address::repeat_byte(0x77);
        let keeper = Address::repeat_byte(0x55);
        cfg.allow.push(AllowEntry { target: other, selector: Some("0xa9059cbb".into()) });
        cfg.allow.push(AllowEntry { target: keeper, selector: None });
        cfg.allow.push(AllowEntry { target: router, selector: Some("0x38ed1739".into()) });
        let st = BudgetState::default();
        let check = |cfg: &GuardConfig, calls: Vec<Call>| {
            let o = op(calls);
            cfg.check(&o, 31337, module, operation_digest(&o, TIER_QUORUM, 31337, module), None, &st, 0)
        };
        let sell_other = Call::new(
            router,
            U256::ZERO,
            rules::IUniswapV2Swaps::swapExactTokensForTokensCall {
                amountIn: U256::from(1_000_000u64),
                amountOutMin: U256::ZERO,
                path: vec![other, token],
                to: Address::repeat_byte(0x99),
                deadline: U256::MAX,
            }
            .abi_encode(),
        );
        for calls in [
            vec![transfer(other, Address::repeat_byte(3), 1_000_000)],
            vec![Call::new(keeper, U256::from(1_000_000u64), Vec::new())],
            vec![sell_other],
        ] {
            let e = check(&cfg, calls).unwrap_err();
            assert_eq!(e.code, RefusalCode::NotAllowed, "{}", e.reason);
            assert!(e.reason.contains("no budget"), "{}", e.reason);
        }
        // a budgeted asset still passes, and so does revoking an allowance on an unbudgeted one
        assert!(check(&cfg, vec![transfer(token, Address::repeat_byte(3), 10)]).is_ok());
        cfg.allow.push(AllowEntry { target: other, selector: Some("0x095ea7b3".into()) });
        assert!(check(&cfg, vec![call(other, APPROVE, router, 0)]).is_ok());
    }

    #[test]
    fn calls_the_model_cannot_value_and_selector_zero_are_refused() {
        let (mut cfg, _, module) = setup();
        let target = Address::repeat_byte(0x66);
        cfg.allow.push(AllowEntry { target, selector: Some("0x12345678".into()) });
        cfg.allow.push(AllowEntry { target, selector: Some("0x00000000".into()) });
        let st = BudgetState::default();
        for data in [vec![0x12, 0x34, 0x56, 0x78], vec![0, 0, 0, 0, 1], vec![0]] {
            let o = op(vec![Call::new(target, U256::ZERO, data)]);
            let d = operation_digest(&o, TIER_QUORUM, 31337, module);
            assert_eq!(
                cfg.check(&o, 31337, module, d, None, &st, 0).unwrap_err().code,
                RefusalCode::NotAllowed
            );
        }
    }
}
