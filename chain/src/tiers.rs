//! The module's tiers as a caller sees them: the facts `TreasuryModule` reports about an
//! operation (allow-list entries, spenders, budgets, code at empty-calldata targets) and the tier
//! it needs, judged call by call with the module's own tier-1 rules (`TreasuryModule._checkTier1`).
use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{Address, FixedBytes, U256};
use alloy::providers::{DynProvider, Provider};
use serde::{Deserialize, Serialize};

use crate::contracts::TreasuryModule;
use crate::error::{ChainError, Result};
use crate::operation::{OP_CALL, Operation};
use crate::rules::{self, APPROVE, DECREASE_ALLOWANCE, INCREASE_ALLOWANCE, TRANSFER};

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
    /// The module's Safe (a tier-1 call may not target it; a swap must pay it).
    pub safe: Address,
    /// The module (a tier-1 call may not target it).
    pub module: Address,
}

impl ModuleFacts {
    /// Whether `asset` has a budget (`Address::ZERO` = ETH): only such assets move at tier 1.
    pub fn tracked(&self, asset: Address) -> bool {
        self.budgets.get(&asset).is_some_and(|b| b.period != 0)
    }
}

/// The module tier an operation needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    /// FROST alone suffices.
    One,
    /// FROST and root together; the reasons tier 1 does not suffice.
    Two(Vec<String>),
}

fn decode(data: &[u8]) -> Option<[u8; 4]> {
    data.get(..4).map(|s| s.try_into().expect("four bytes"))
}

/// The assets an operation may make the Safe lose, valued as the module's tier-1 rules do
/// ([`rules::valued_outflows`]); empty when a call cannot be valued (the module then measures it).
pub fn outflows(op: &Operation) -> BTreeMap<Address, U256> {
    rules::valued_outflows(op).unwrap_or_default()
}

/// Classifies `op` the way `TreasuryModule._checkTier1` would judge it (the module's tier-1 rules,
/// call by call, then the budgets against the valued outflows). Pure.
pub fn classify(op: &Operation, facts: &ModuleFacts) -> Tier {
    let mut reasons = Vec::new();
    for (i, c) in op.calls.iter().enumerate() {
        if let Some(why) = tier1_refusal(c, facts) {
            reasons.push(format!("call {i}: {why}"));
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

/// Why the module refuses `c` at tier 1, if it does.
fn tier1_refusal(c: &crate::operation::Call, facts: &ModuleFacts) -> Option<String> {
    if c.operation != OP_CALL {
        return Some("is a delegatecall".into());
    }
    if c.to == facts.safe || c.to == facts.module {
        return Some("targets the Safe or the module".into());
    }
    if !c.value.is_zero() && !facts.tracked(Address::ZERO) {
        return Some("carries ETH while ETH has no budget".into());
    }
    let allowed = |sel: [u8; 4]| facts.call_allowed.get(&(c.to, sel)).copied().unwrap_or(false);
    if c.data.is_empty() {
        let ok = !facts.has_code.contains(&c.to) || allowed([0; 4]);
        return (!ok).then(|| format!("{} (empty calldata, has code) is not allow-listed", c.to));
    }
    let sel = match decode(&c.data) {
        Some(s) if s != [0; 4] => s,
        _ => return Some("calldata of 1-3 bytes or selector 0x00000000".into()),
    };
    if facts.tracked(c.to) {
        if sel == TRANSFER {
            return (!allowed(sel)).then(|| format!("{}.transfer is not allow-listed", c.to));
        }
        if sel == APPROVE || sel == INCREASE_ALLOWANCE {
            let spender = (c.data.len() >= 68).then(|| Address::from_slice(&c.data[16..36]));
            let zero = c.data.len() >= 68 && U256::from_be_slice(&c.data[36..68]).is_zero();
            return match spender {
                Some(s) if facts.spender_allowed.get(&s).copied().unwrap_or(false) => None,
                Some(_) if sel == APPROVE && zero => None,
                Some(s) => Some(format!("spender {s} is not allow-listed")),
                None => Some("malformed approval".into()),
            };
        }
        if sel == DECREASE_ALLOWANCE {
            return None;
        }
    } else if rules::moves_assets(sel) {
        return Some(format!("{} has no budget: its tokens cannot move at tier 1", c.to));
    }
    if !allowed(sel) {
        return Some(format!("{}.0x{} is not allow-listed", c.to, alloy::hex::encode(sel)));
    }
    match rules::decode_swap(&c.data) {
        Some(Ok(s)) => swap_refusal(&s, facts),
        Some(Err(e)) => Some(e),
        None => None,
    }
}

/// The module's swap conditions: the Safe receives; the path joins a tracked asset (or ETH in) to
/// a different tracked one (or ETH out, ETH tracked).
fn swap_refusal(s: &rules::Swap, facts: &ModuleFacts) -> Option<String> {
    if s.recipient != facts.safe {
        return Some(format!("swap pays {}, not the Safe", s.recipient));
    }
    let (first, last) = match (s.path.first(), s.path.last()) {
        (Some(f), Some(l)) if s.path.len() >= 2 && f != l => (*f, *l),
        _ => return Some("swap path must join two different assets".into()),
    };
    if !s.eth_in && !facts.tracked(first) {
        return Some(format!("swap sells {first}, which has no budget"));
    }
    let out = if s.eth_out { Address::ZERO } else { last };
    (!facts.tracked(out)).then(|| format!("swap buys {out}, which has no budget"))
}

/// The assets whose budgets `classify` reads: ETH, every call target, every swap's path ends.
fn assets_of(op: &Operation) -> BTreeSet<Address> {
    let mut out = BTreeSet::from([Address::ZERO]);
    for c in &op.calls {
        out.insert(c.to);
        if let Some(Ok(s)) = rules::decode_swap(&c.data) {
            out.extend(s.path.first().copied());
            out.extend(s.path.last().copied());
        }
    }
    out
}

/// Reads the facts `classify` needs from the module at `module`.
pub async fn read_facts(provider: &DynProvider, module: Address, op: &Operation) -> Result<ModuleFacts> {
    use futures::future::try_join_all;
    let m = &TreasuryModule::new(module, provider.clone());
    let call = |what: &'static str| move |e: alloy::contract::Error| ChainError::rpc(what, Some(module), e);
    let selector = |c: &crate::operation::Call| decode(&c.data).unwrap_or([0; 4]);
    let plain: BTreeSet<Address> = op.calls.iter().filter(|c| c.data.is_empty()).map(|c| c.to).collect();
    let targets: BTreeSet<(Address, [u8; 4])> = op.calls.iter().map(|c| (c.to, selector(c))).collect();
    let spenders: BTreeSet<Address> = op
        .calls
        .iter()
        .filter(|c| matches!(selector(c), APPROVE | INCREASE_ALLOWANCE) && c.data.len() >= 36)
        .map(|c| Address::from_slice(&c.data[16..36]))
        .collect();
    // Every read is independent of the others: all go out at once.
    let safe = async { m.safe().call().await.map_err(call("TreasuryModule.safe")) };
    let codes = try_join_all(plain.into_iter().map(|to| async move {
        let code = provider.get_code_at(to).await.map_err(|e| ChainError::rpc("eth_getCode", Some(to), e))?;
        Ok::<_, ChainError>((to, !code.is_empty()))
    }));
    let spenders_allowed = try_join_all(spenders.into_iter().map(|s| async move {
        let allowed = m.isSpenderAllowed(s).call().await.map_err(call("TreasuryModule.isSpenderAllowed"))?;
        Ok::<_, ChainError>((s, allowed))
    }));
    let calls_allowed = try_join_all(targets.into_iter().map(|(to, sel)| async move {
        let allowed = m
            .isCallAllowed(to, FixedBytes(sel))
            .call()
            .await
            .map_err(call("TreasuryModule.isCallAllowed"))?;
        Ok::<_, ChainError>(((to, sel), allowed))
    }));
    let budgets = try_join_all(assets_of(op).into_iter().map(|asset| async move {
        let b = m.budget(asset).call().await.map_err(call("TreasuryModule.budget"))?;
        let view = BudgetView { limit: b.limit, period: b.period, spent: b.spent, remaining: b.remaining };
        Ok::<_, ChainError>((asset, view))
    }));
    let (safe, codes, spenders_allowed, calls_allowed, budgets) =
        futures::try_join!(safe, codes, spenders_allowed, calls_allowed, budgets)?;
    Ok(ModuleFacts {
        module,
        safe,
        has_code: codes.into_iter().filter(|(_, has)| *has).map(|(to, _)| to).collect(),
        spender_allowed: spenders_allowed.into_iter().collect(),
        call_allowed: calls_allowed.into_iter().collect(),
        budgets: budgets.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::IERC20;
    use crate::operation::Call;
    use alloy::sol_types::SolCall;

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
    fn eth_to_an_eoa_needs_no_allow_list_but_needs_and_counts_against_the_eth_budget() {
        let op = Operation {
            calls: vec![Call::new(Address::repeat_byte(3), U256::from(50), Vec::<u8>::new())],
            nonce: U256::ZERO,
            deadline: U256::MAX,
        };
        let mut f = ModuleFacts::default();
        assert!(
            matches!(classify(&op, &f), Tier::Two(r) if r[0].contains("ETH has no budget")),
            "ETH without a budget cannot move at tier 1"
        );
        f.budgets.insert(
            Address::ZERO,
            BudgetView { limit: U256::from(100), period: 60, spent: U256::ZERO, remaining: U256::from(100) },
        );
        assert_eq!(classify(&op, &f), Tier::One);
        f.budgets.get_mut(&Address::ZERO).unwrap().remaining = U256::from(10);
        assert!(matches!(classify(&op, &f), Tier::Two(_)));
    }

    #[test]
    fn swaps_follow_the_modules_conditions() {
        let safe = Address::repeat_byte(0x5a);
        let router = Address::repeat_byte(0x88);
        let other = Address::repeat_byte(0xbb);
        let swap = |path: Vec<Address>, to: Address| {
            let data = crate::rules::IUniswapV2Swaps::swapExactTokensForTokensCall {
                amountIn: U256::from(10),
                amountOutMin: U256::ZERO,
                path,
                to,
                deadline: U256::MAX,
            }
            .abi_encode();
            Operation {
                calls: vec![Call::new(router, U256::ZERO, data)],
                nonce: U256::ZERO,
                deadline: U256::MAX,
            }
        };
        let mut f = facts(100);
        f.safe = safe;
        f.call_allowed.insert((router, [0x38, 0xed, 0x17, 0x39]), true);
        f.budgets.insert(
            other,
            BudgetView { limit: U256::from(1), period: 60, spent: U256::ZERO, remaining: U256::from(1) },
        );
        assert_eq!(classify(&swap(vec![token(), other], safe), &f), Tier::One);
        assert!(
            matches!(classify(&swap(vec![token(), other], Address::repeat_byte(1)), &f), Tier::Two(r) if r[0].contains("not the Safe"))
        );
        let untracked = Address::repeat_byte(0xcc);
        assert!(
            matches!(classify(&swap(vec![untracked, other], safe), &f), Tier::Two(r) if r[0].contains("no budget"))
        );
        assert!(
            matches!(classify(&swap(vec![token(), untracked], safe), &f), Tier::Two(r) if r[0].contains("no budget"))
        );
    }

    #[test]
    fn an_untracked_token_cannot_be_approved_and_approve_zero_always_passes() {
        let untracked = Address::repeat_byte(0xcc);
        let spender = Address::repeat_byte(5);
        let approve = |t: Address, amount: u64| Operation {
            calls: vec![Call::new(
                t,
                U256::ZERO,
                IERC20::approveCall { spender, amount: U256::from(amount) }.abi_encode(),
            )],
            nonce: U256::ZERO,
            deadline: U256::MAX,
        };
        let mut f = facts(100);
        f.spender_allowed.insert(spender, true);
        assert!(matches!(classify(&approve(untracked, 1), &f), Tier::Two(r) if r[0].contains("no budget")));
        assert_eq!(classify(&approve(token(), 1), &f), Tier::One);
        f.spender_allowed.insert(spender, false);
        assert_eq!(classify(&approve(token(), 0), &f), Tier::One);
    }
}
