//! Typed admin actions of the treasury module and their on-chain encoding `(uint8 action, bytes params)`.

use alloy::primitives::{Address, B256, Bytes, FixedBytes, U256};
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};

use crate::error::{ChainError, Result};

alloy::sol! {
    /// Parameter layouts of the admin actions (`abi.encode` of the arguments, no selector).
    #[allow(missing_docs)]
    interface AdminParams {
        function setGroupKey(uint256 x, uint8 parity);
        function setRoot(address root);
        function setBudget(address token, uint256 limit, uint64 period);
        function setCallAllowed(address target, bytes4 selector, bool allowed);
        function setSpenderAllowed(address spender, bool allowed);
        function setTimelock(uint64 delay);
        function cancel(bytes32 changeId);
    }
}

use AdminParams::{
    cancelCall, setBudgetCall, setCallAllowedCall, setGroupKeyCall, setRootCall, setSpenderAllowedCall,
    setTimelockCall,
};

/// A change to the module's settings, as the root (or for pause/cancel the quorum, or the Safe) makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AdminAction {
    /// Stop all execution (immediate).
    Pause,
    /// Resume execution (root or Safe only).
    Unpause,
    /// Replace the FROST group key (timelocked).
    SetGroupKey {
        /// x coordinate of the group public key.
        x: U256,
        /// Parity of its y coordinate (0 even, 1 odd).
        parity: u8,
    },
    /// Replace the root signer (timelocked).
    SetRoot {
        /// New root address.
        root: Address,
    },
    /// Set an asset's per-period outflow budget (`Address::ZERO` = ETH); raising it, shortening the
    /// period or tracking a new asset is timelocked; `limit` 0 with `period` 0 untracks (at once).
    /// A change never ends the current window early: the new period applies from the next one.
    SetBudget {
        /// Token, or `Address::ZERO` for ETH.
        token: Address,
        /// Maximum gross outflow per window, smallest unit.
        limit: U256,
        /// Period in seconds.
        period: u64,
    },
    /// Allow or forbid a (target, selector) pair in tier 1; allowing is timelocked.
    SetCallAllowed {
        /// Contract called.
        target: Address,
        /// Function selector.
        selector: FixedBytes<4>,
        /// Whether tier 1 may call it.
        allowed: bool,
    },
    /// Allow or forbid an ERC-20 approval spender in tier 1; allowing is timelocked.
    SetSpenderAllowed {
        /// Spender of approvals.
        spender: Address,
        /// Whether tier 1 may approve it.
        allowed: bool,
    },
    /// Set the timelock delay in seconds; lowering it is timelocked.
    SetTimelock {
        /// Delay in seconds.
        delay: u64,
    },
    /// Cancel a queued change.
    Cancel {
        /// The queued change's id.
        change_id: B256,
    },
}

impl AdminAction {
    /// The allow-list entries a Uniswap V2 `router` needs: its three swap functions and it as a
    /// token spender.
    pub fn router_allow_list(router: Address) -> Vec<AdminAction> {
        use crate::contracts::IUniswapV2Router02 as Router;
        let swaps = [
            Router::swapExactTokensForTokensCall::SELECTOR,
            Router::swapExactETHForTokensCall::SELECTOR,
            Router::swapExactTokensForETHCall::SELECTOR,
        ];
        let mut actions: Vec<AdminAction> = swaps
            .into_iter()
            .map(|selector| AdminAction::SetCallAllowed {
                target: router,
                selector: FixedBytes(selector),
                allowed: true,
            })
            .collect();
        actions.push(AdminAction::SetSpenderAllowed { spender: router, allowed: true });
        actions
    }

    /// The module's action code.
    pub fn code(&self) -> u8 {
        match self {
            Self::Pause => 0,
            Self::Unpause => 1,
            Self::SetGroupKey { .. } => 2,
            Self::SetRoot { .. } => 3,
            Self::SetBudget { .. } => 4,
            Self::SetCallAllowed { .. } => 5,
            Self::SetSpenderAllowed { .. } => 6,
            Self::SetTimelock { .. } => 7,
            Self::Cancel { .. } => 8,
        }
    }

    /// The ABI-encoded parameters (`abi.encode` of the action's arguments).
    pub fn params(&self) -> Bytes {
        let raw = match self {
            Self::Pause | Self::Unpause => Vec::new(),
            Self::SetGroupKey { x, parity } => raw(setGroupKeyCall { x: *x, parity: *parity }),
            Self::SetRoot { root } => raw(setRootCall { root: *root }),
            Self::SetBudget { token, limit, period } => {
                raw(setBudgetCall { token: *token, limit: *limit, period: *period })
            }
            Self::SetCallAllowed { target, selector, allowed } => {
                raw(setCallAllowedCall { target: *target, selector: *selector, allowed: *allowed })
            }
            Self::SetSpenderAllowed { spender, allowed } => {
                raw(setSpenderAllowedCall { spender: *spender, allowed: *allowed })
            }
            Self::SetTimelock { delay } => raw(setTimelockCall { delay: *delay }),
            Self::Cancel { change_id } => raw(cancelCall { changeId: *change_id }),
        };
        raw.into()
    }

    /// Decodes an action from its code and parameters, rejecting unknown codes and malformed params.
    pub fn decode(code: u8, params: &[u8]) -> Result<Self> {
        let bad = |e: alloy::sol_types::Error| {
            ChainError::InvalidInput(format!("admin action {code}: bad params: {e}"))
        };
        Ok(match code {
            0 | 1 if !params.is_empty() => {
                return Err(ChainError::InvalidInput(format!("admin action {code} takes no params")));
            }
            0 => Self::Pause,
            1 => Self::Unpause,
            2 => {
                let p = setGroupKeyCall::abi_decode_raw_validate(params).map_err(bad)?;
                Self::SetGroupKey { x: p.x, parity: p.parity }
            }
            3 => Self::SetRoot { root: setRootCall::abi_decode_raw_validate(params).map_err(bad)?.root },
            4 => {
                let p = setBudgetCall::abi_decode_raw_validate(params).map_err(bad)?;
                Self::SetBudget { token: p.token, limit: p.limit, period: p.period }
            }
            5 => {
                let p = setCallAllowedCall::abi_decode_raw_validate(params).map_err(bad)?;
                Self::SetCallAllowed { target: p.target, selector: p.selector, allowed: p.allowed }
            }
            6 => {
                let p = setSpenderAllowedCall::abi_decode_raw_validate(params).map_err(bad)?;
                Self::SetSpenderAllowed { spender: p.spender, allowed: p.allowed }
            }
            7 => Self::SetTimelock {
                delay: setTimelockCall::abi_decode_raw_validate(params).map_err(bad)?.delay,
            },
            8 => {
                Self::Cancel { change_id: cancelCall::abi_decode_raw_validate(params).map_err(bad)?.changeId }
            }
            other => {
                return Err(ChainError::InvalidInput(format!("unknown admin action {other}")));
            }
        })
    }

    /// Whether the quorum alone (FROST) may authorise this action: only pause and cancel.
    pub fn quorum_may_sign(&self) -> bool {
        matches!(self, Self::Pause | Self::Cancel { .. })
    }
}

fn raw(call: impl SolCall) -> Vec<u8> {
    let mut out = Vec::new();
    call.abi_encode_raw(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_through_its_encoding() {
        let actions = [
            AdminAction::Pause,
            AdminAction::Unpause,
            AdminAction::SetGroupKey { x: U256::from(7), parity: 1 },
            AdminAction::SetRoot { root: Address::repeat_byte(3) },
            AdminAction::SetBudget { token: Address::repeat_byte(4), limit: U256::from(10), period: 86_400 },
            AdminAction::SetCallAllowed {
                target: Address::repeat_byte(5),
                selector: FixedBytes([0xa9, 0x05, 0x9c, 0xbb]),
                allowed: true,
            },
            AdminAction::SetSpenderAllowed { spender: Address::repeat_byte(6), allowed: false },
            AdminAction::SetTimelock { delay: 172_800 },
            AdminAction::Cancel { change_id: B256::repeat_byte(9) },
        ];
        for action in actions {
            let decoded = AdminAction::decode(action.code(), &action.params()).unwrap();
            assert_eq!(decoded, action);
        }
    }

    #[test]
    fn unknown_codes_and_truncated_params_are_rejected() {
        assert!(AdminAction::decode(9, &[]).is_err());
        assert!(AdminAction::decode(0, &[1]).is_err());
        let params = AdminAction::SetRoot { root: Address::repeat_byte(1) }.params();
        assert!(AdminAction::decode(3, &params[..31]).is_err());
    }
}
