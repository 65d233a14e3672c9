//! The root's own guard, stricter than the quorum's: registered modules only, a recipient
//! allow-list, a maximum single amount and a per-period cap per asset. Pure: no I/O.
use std::collections::BTreeMap;

use alloy::primitives::{Address, FixedBytes, U256};
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};
use treasury_chain::operation::{AdminOp, OP_CALL, Operation};
use treasury_chain::{AdminAction, contracts::IERC20};

/// A rule of the root guard, named in every refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GuardRule {
    /// The (chain id, module) pair is not one the root serves.
    ModuleNotServed,
    /// The deadline is in the past or too far in the future.
    Deadline,
    /// The batch is empty.
    EmptyBatch,
    /// A call is a delegatecall.
    Delegatecall,
    /// A call is neither a transfer/approval nor in the allowed-call list.
    UnknownCall,
    /// Value moves in an asset the guard has no limits for.
    UnknownAsset,
    /// A recipient or spender is not on the allow-list.
    RecipientNotAllowed,
    /// One transfer or approval exceeds the asset's maximum single amount.
    MaxSingleAmount,
    /// The asset's cap for the rolling period would be exceeded.
    PeriodCap,
    /// The admin action is malformed or not allowed.
    AdminAction,
}

impl std::fmt::Display for GuardRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s =
            serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&s)
    }
}

/// A module the root signs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedModule {
    /// Chain id.
    pub chain_id: u64,
    /// Module address.
    pub module: Address,
}

/// Limits of one asset (`token = 0x0…0` for ETH), amounts in the asset's smallest unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetLimits {
    /// Token address, or the zero address for ETH.
    pub token: Address,
    /// Largest single transfer or approval.
    pub max_single: U256,
    /// Largest total over a rolling `period_secs`, counting every request not rejected or expired.
    pub period_cap: U256,
    /// Length of the rolling period, seconds.
    pub period_secs: u64,
    /// Requests whose total in this asset is at most this are approved without a human.
    #[serde(default)]
    pub auto_approve_max: Option<U256>,
}

/// A call allowed although it moves no value the guard can see (e.g. a keeper function).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedCall {
    /// Contract called.
    pub target: Address,
    /// Function selector.
    pub selector: FixedBytes<4>,
}

/// The guard's configuration (`[guard]` of the root service's config file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardConfig {
    /// Modules the root signs for.
    #[serde(default)]
    pub modules: Vec<ServedModule>,
    /// Recipients of transfers and spenders of approvals that are allowed.
    #[serde(default)]
    pub recipients: Vec<Address>,
    /// Per-asset limits; value in any other asset is refused.
    #[serde(default)]
    pub assets: Vec<AssetLimits>,
    /// Other calls allowed (no ETH value).
    #[serde(default)]
    pub allowed_calls: Vec<AllowedCall>,
    /// Longest allowed time between now and an operation's deadline, seconds (default one week).
    #[serde(default)]
    pub max_deadline_secs: Option<u64>,
}

/// One movement of value a call makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Asset (zero address = ETH).
    pub token: Address,
    /// Recipient, or spender for an approval.
    pub to: Address,
    /// Amount in the smallest unit.
    pub amount: U256,
    /// Whether this is an approval rather than a transfer.
    pub approval: bool,
}

/// What the guard concluded about an acceptable request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// Total per asset (transfers and approvals).
    pub totals: BTreeMap<Address, U256>,
    /// Whether the auto-approve rule covers it.
    pub auto_approve: bool,
}

/// A refusal: the rule and what broke it.
pub type Denial = (GuardRule, String);

const DEFAULT_MAX_DEADLINE: u64 = 7 * 24 * 3600;
const TRANSFER_FROM: [u8; 4] = [0x23, 0xb8, 0x72, 0xdd];
const INCREASE_ALLOWANCE: [u8; 4] = [0x39, 0x50, 0x93, 0x51];

/// Decodes the value flows of an operation's calls: ETH value, ERC-20 `transfer`, `transferFrom`,
/// `approve` and `increaseAllowance`. Calls that are none of these and not allowed are refused.
pub fn flows(op: &Operation, allowed_calls: &[AllowedCall]) -> Result<Vec<Flow>, Denial> {
    let mut out = Vec::new();
    for (i, call) in op.calls.iter().enumerate() {
        if call.operation != OP_CALL {
            return Err((GuardRule::Delegatecall, format!("call {i} to {} is a delegatecall", call.to)));
        }
        if !call.value.is_zero() {
            out.push(Flow { token: Address::ZERO, to: call.to, amount: call.value, approval: false });
        }
        let Some(sel) = call.selector() else {
            if call.data.is_empty() {
                continue;
            }
            return Err((GuardRule::UnknownCall, format!("call {i}: calldata of {} bytes", call.data.len())));
        };
        let bad = |e: alloy::sol_types::Error| {
            (GuardRule::UnknownCall, format!("call {i}: malformed calldata: {e}"))
        };
        let flow = if sel == IERC20::transferCall::SELECTOR {
            let c = IERC20::transferCall::abi_decode_validate(&call.data).map_err(bad)?;
            Flow { token: call.to, to: c.to, amount: c.amount, approval: false }
        } else if sel == TRANSFER_FROM {
            if call.data.len() != 4 + 96 {
                return Err((GuardRule::UnknownCall, format!("call {i}: malformed transferFrom")));
            }
            let to = Address::from_slice(&call.data[4 + 32 + 12..4 + 64]);
            Flow { token: call.to, to, amount: U256::from_be_slice(&call.data[4 + 64..]), approval: false }
        } else if sel == IERC20::approveCall::SELECTOR || sel == INCREASE_ALLOWANCE {
            let c = IERC20::approveCall::abi_decode_raw_validate(&call.data[4..]).map_err(bad)?;
            Flow { token: call.to, to: c.spender, amount: c.amount, approval: true }
        } else if allowed_calls.iter().any(|a| a.target == call.to && a.selector.0 == sel) {
            continue;
        } else {
            return Err((
                GuardRule::UnknownCall,
                format!("call {i}: {}.0x{} is not allowed", call.to, hex::encode(sel)),
            ));
        };
        out.push(flow);
    }
    Ok(out)
}

/// Whether everything `call` can move is decoded and valued by [`flows`]: a plain ETH payment,
/// or an ERC-20 transfer, transferFrom, approve or increaseAllowance.
fn is_valued(call: &treasury_chain::Call) -> bool {
    match call.selector() {
        None => call.data.is_empty() && !call.value.is_zero(),
        Some(sel) => {
            sel == IERC20::transferCall::SELECTOR
                || sel == TRANSFER_FROM
                || sel == IERC20::approveCall::SELECTOR
                || sel == INCREASE_ALLOWANCE
        }
    }
}

impl GuardConfig {
    fn served(&self, chain_id: u64, module: Address) -> Result<(), Denial> {
        if self.modules.iter().any(|m| m.chain_id == chain_id && m.module == module) {
            Ok(())
        } else {
            Err((GuardRule::ModuleNotServed, format!("module {module} on chain {chain_id}")))
        }
    }

    fn deadline(&self, deadline: U256, now: u64) -> Result<(), Denial> {
        let max = self.max_deadline_secs.unwrap_or(DEFAULT_MAX_DEADLINE);
        if deadline < U256::from(now) {
            return Err((GuardRule::Deadline, format!("deadline {deadline} has passed (now {now})")));
        }
        if deadline > U256::from(now.saturating_add(max)) {
            return Err((GuardRule::Deadline, format!("deadline {deadline} is more than {max}s away")));
        }
        Ok(())
    }

    /// The limits of `token`, if configured.
    pub fn asset(&self, token: Address) -> Option<&AssetLimits> {
        self.assets.iter().find(|a| a.token == token)
    }

    /// Checks an operation. `spent(token, period_secs)` is what the root already committed to in
    /// that asset over the last `period_secs` (requests not rejected or expired).
    pub fn check_operation(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        now: u64,
        spent: impl Fn(Address, u64) -> U256,
    ) -> Result<Assessment, Denial> {
        self.served(chain_id, module)?;
        self.deadline(op.deadline, now)?;
        if op.calls.is_empty() {
            return Err((GuardRule::EmptyBatch, "no calls".into()));
        }
        let flows = flows(op, &self.allowed_calls)?;
        let mut totals: BTreeMap<Address, U256> = BTreeMap::new();
        for f in &flows {
            let limits = self.asset(f.token).ok_or_else(|| {
                (GuardRule::UnknownAsset, format!("asset {} has no limits configured", f.token))
            })?;
            if !self.recipients.contains(&f.to) {
                let what = if f.approval { "spender" } else { "recipient" };
                return Err((
                    GuardRule::RecipientNotAllowed,
                    format!("{what} {} is not on the allow-list", f.to),
                ));
            }
            if f.amount > limits.max_single {
                return Err((
                    GuardRule::MaxSingleAmount,
                    format!(
                        "{} of {} exceeds the maximum single amount {}",
                        f.amount, f.token, limits.max_single
                    ),
                ));
            }
            let t = totals.entry(f.token).or_default();
            *t = t.saturating_add(f.amount);
        }
        let mut auto = !totals.is_empty();
        for (token, total) in &totals {
            let limits = self.asset(*token).expect("checked above");
            let already = spent(*token, limits.period_secs);
            if already.saturating_add(*total) > limits.period_cap {
                return Err((
                    GuardRule::PeriodCap,
                    format!(
                        "{total} of {token} on top of {already} in the last {}s exceeds the cap {}",
                        limits.period_secs, limits.period_cap
                    ),
                ));
            }
            auto &= limits.auto_approve_max.is_some_and(|m| *total <= m);
        }
        // Value the guard cannot see (an allowed call, a bare call to a contract) is a human's
        // decision, however small the rest of the batch.
        auto &= op.calls.iter().all(is_valued);
        Ok(Assessment { totals, auto_approve: auto })
    }

    /// Checks an admin operation: served module, deadline, a well-formed action. Never auto-approved.
    pub fn check_admin(
        &self,
        op: &AdminOp,
        chain_id: u64,
        module: Address,
        now: u64,
    ) -> Result<Assessment, Denial> {
        self.served(chain_id, module)?;
        self.deadline(op.deadline, now)?;
        AdminAction::decode(op.action, &op.params).map_err(|e| (GuardRule::AdminAction, e.to_string()))?;
        Ok(Assessment::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use treasury_chain::Call;

    const NOW: u64 = 1_000_000;

    fn usdc() -> Address {
        Address::repeat_byte(0xaa)
    }
    fn alice() -> Address {
        Address::repeat_byte(0x01)
    }
    fn module() -> Address {
        Address::repeat_byte(0x4d)
    }

    fn config() -> GuardConfig {
        GuardConfig {
            modules: vec![ServedModule { chain_id: 1, module: module() }],
            recipients: vec![alice()],
            assets: vec![AssetLimits {
                token: usdc(),
                max_single: U256::from(1000),
                period_cap: U256::from(1500),
                period_secs: 86_400,
                auto_approve_max: Some(U256::from(100)),
            }],
            allowed_calls: vec![],
            max_deadline_secs: None,
        }
    }

    fn pay(to: Address, amount: u64) -> Operation {
        let data = IERC20::transferCall { to, amount: U256::from(amount) }.abi_encode();
        Operation {
            calls: vec![Call::new(usdc(), U256::ZERO, data)],
            nonce: U256::ZERO,
            deadline: U256::from(NOW + 60),
        }
    }

    fn rule(r: Result<Assessment, Denial>) -> GuardRule {
        r.unwrap_err().0
    }

    #[test]
    fn an_allowed_payment_passes_and_small_ones_are_auto_approved() {
        let g = config();
        let a = g.check_operation(&pay(alice(), 500), 1, module(), NOW, |_, _| U256::ZERO).unwrap();
        assert_eq!(a.totals[&usdc()], U256::from(500));
        assert!(!a.auto_approve);
        assert!(
            g.check_operation(&pay(alice(), 100), 1, module(), NOW, |_, _| U256::ZERO).unwrap().auto_approve
        );
    }

    #[test]
    fn each_rule_refuses_and_is_named() {
        let g = config();
        let z = |_, _| U256::ZERO;
        assert_eq!(
            rule(g.check_operation(&pay(alice(), 1001), 1, module(), NOW, z)),
            GuardRule::MaxSingleAmount
        );
        assert_eq!(
            rule(g.check_operation(&pay(Address::repeat_byte(9), 1), 1, module(), NOW, z)),
            GuardRule::RecipientNotAllowed
        );
        assert_eq!(
            rule(g.check_operation(&pay(alice(), 600), 1, module(), NOW, |_, _| U256::from(1000))),
            GuardRule::PeriodCap
        );
        assert_eq!(
            rule(g.check_operation(&pay(alice(), 1), 2, module(), NOW, z)),
            GuardRule::ModuleNotServed
        );
        assert_eq!(rule(g.check_operation(&pay(alice(), 1), 1, module(), NOW + 61, z)), GuardRule::Deadline);
        let mut eth = pay(alice(), 1);
        eth.calls[0] = Call::new(alice(), U256::from(1), Vec::<u8>::new());
        assert_eq!(rule(g.check_operation(&eth, 1, module(), NOW, z)), GuardRule::UnknownAsset);
        let mut dc = pay(alice(), 1);
        dc.calls[0].operation = 1;
        assert_eq!(rule(g.check_operation(&dc, 1, module(), NOW, z)), GuardRule::Delegatecall);
        let mut other = pay(alice(), 1);
        other.calls[0].data = vec![1u8, 2, 3, 4].into();
        assert_eq!(rule(g.check_operation(&other, 1, module(), NOW, z)), GuardRule::UnknownCall);
        let approve =
            IERC20::approveCall { spender: Address::repeat_byte(7), amount: U256::from(1) }.abi_encode();
        let mut ap = pay(alice(), 1);
        ap.calls[0].data = approve.into();
        assert_eq!(rule(g.check_operation(&ap, 1, module(), NOW, z)), GuardRule::RecipientNotAllowed);
    }

    #[test]
    fn amounts_add_up_across_calls_of_one_batch() {
        let g = config();
        let mut op = pay(alice(), 800);
        op.calls.push(op.calls[0].clone());
        assert_eq!(rule(g.check_operation(&op, 1, module(), NOW, |_, _| U256::ZERO)), GuardRule::PeriodCap);
    }

    #[test]
    fn rule_names_are_snake_case() {
        assert_eq!(GuardRule::MaxSingleAmount.to_string(), "max_single_amount");
    }

    /// Attack (issue 13 item 6): an allowed call the guard cannot value (a keeper function, or a
    /// bare call to a contract) rides along with a 1-wei transfer that turns on auto-approve.
    /// Auto-approve needs every call decoded and valued.
    #[test]
    fn dust_does_not_make_an_unvalued_call_auto_approved() {
        let keeper = Address::repeat_byte(0x6b);
        let mut g = config();
        g.allowed_calls.push(AllowedCall { target: keeper, selector: FixedBytes([0xde, 0xad, 0xbe, 0xef]) });
        let mut op = pay(alice(), 1);
        assert!(g.check_operation(&op, 1, module(), NOW, |_, _| U256::ZERO).unwrap().auto_approve);
        op.calls.push(Call::new(keeper, U256::ZERO, vec![0xde, 0xad, 0xbe, 0xef]));
        let a = g.check_operation(&op, 1, module(), NOW, |_, _| U256::ZERO).unwrap();
        assert!(!a.auto_approve, "an allowed but unvalued call needs a human");
        let mut bare = pay(alice(), 1);
        bare.calls.push(Call::new(keeper, U256::ZERO, Vec::<u8>::new()));
        let a = g.check_operation(&bare, 1, module(), NOW, |_, _| U256::ZERO).unwrap();
        assert!(!a.auto_approve, "a call moving nothing the guard can see needs a human");
    }
}
