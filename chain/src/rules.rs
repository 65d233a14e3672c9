//! The module's tier-1 vocabulary as pure functions over calldata, shared by every party that must
//! judge an operation the way `TreasuryModule` does (the signer nodes' guard, the root escalation
//! classifier, tests): which selectors move assets, what a Uniswap V2 swap sells and where its
//! output goes, and what an operation can make the Safe lose (its valued outflows).

use std::collections::BTreeMap;

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;

use crate::operation::{OP_CALL, Operation};

alloy::sol! {
    /// The Uniswap V2 router's nine swap functions (the module applies its swap conditions to each).
    #[allow(missing_docs)]
    interface IUniswapV2Swaps {
        function swapExactTokensForTokens(uint256 amountIn, uint256 amountOutMin, address[] path, address to, uint256 deadline);
        function swapTokensForExactTokens(uint256 amountOut, uint256 amountInMax, address[] path, address to, uint256 deadline);
        function swapExactTokensForTokensSupportingFeeOnTransferTokens(uint256 amountIn, uint256 amountOutMin, address[] path, address to, uint256 deadline);
        function swapTokensForExactETH(uint256 amountOut, uint256 amountInMax, address[] path, address to, uint256 deadline);
        function swapExactTokensForETH(uint256 amountIn, uint256 amountOutMin, address[] path, address to, uint256 deadline);
        function swapExactTokensForETHSupportingFeeOnTransferTokens(uint256 amountIn, uint256 amountOutMin, address[] path, address to, uint256 deadline);
        function swapExactETHForTokens(uint256 amountOutMin, address[] path, address to, uint256 deadline);
        function swapETHForExactTokens(uint256 amountOut, address[] path, address to, uint256 deadline);
        function swapExactETHForTokensSupportingFeeOnTransferTokens(uint256 amountOutMin, address[] path, address to, uint256 deadline);
    }
}

use IUniswapV2Swaps as S;

/// ERC-20 `transfer(address,uint256)`.
pub const TRANSFER: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// ERC-20 `approve(address,uint256)` (ERC-721 shares it).
pub const APPROVE: [u8; 4] = [0x09, 0x5e, 0xa7, 0xb3];
/// `increaseAllowance(address,uint256)`.
pub const INCREASE_ALLOWANCE: [u8; 4] = [0x39, 0x50, 0x93, 0x51];
/// `decreaseAllowance(address,uint256)`.
pub const DECREASE_ALLOWANCE: [u8; 4] = [0xa4, 0x57, 0xc2, 0xd7];
/// ERC-20/721 `transferFrom(address,address,uint256)`.
pub const TRANSFER_FROM: [u8; 4] = [0x23, 0xb8, 0x72, 0xdd];

/// Selectors of any token standard that move or expose an asset; the module refuses them at tier 1
/// on every target that is not a tracked ERC-20.
pub const ASSET_MOVING: [[u8; 4]; 11] = [
    TRANSFER,
    APPROVE,
    INCREASE_ALLOWANCE,
    TRANSFER_FROM,
    [0xa2, 0x2c, 0xb4, 0x65], // setApprovalForAll
    [0x42, 0x84, 0x2e, 0x0e], // ERC-721 safeTransferFrom(address,address,uint256)
    [0xb8, 0x8d, 0x4f, 0xde], // ERC-721 safeTransferFrom(address,address,uint256,bytes)
    [0xf2, 0x42, 0x43, 0x2a], // ERC-1155 safeTransferFrom
    [0x2e, 0xb2, 0xc2, 0xd6], // ERC-1155 safeBatchTransferFrom
    [0x9b, 0xd9, 0xbb, 0xc6], // ERC-777 send
    [0x95, 0x9b, 0x8c, 0x3f], // ERC-777 authorizeOperator
];

/// Whether `sel` moves or exposes a token of any standard.
pub fn moves_assets(sel: [u8; 4]) -> bool {
    ASSET_MOVING.contains(&sel)
}

/// A decoded Uniswap V2 swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    /// The input is the call's ETH value (path\[0\] is then WETH).
    pub eth_in: bool,
    /// The output is ETH (the last path element is then WETH).
    pub eth_out: bool,
    /// The pool path.
    pub path: Vec<Address>,
    /// Who receives the output.
    pub recipient: Address,
    /// The most of the input it can take (`amountIn` or `amountInMax`; 0 for ETH in: the value).
    pub max_in: U256,
}

/// The swap `data` encodes: `None` if its selector is not one of the nine swaps, `Some(Err)` if it
/// is but the arguments do not decode.
pub fn decode_swap(data: &[u8]) -> Option<Result<Swap, String>> {
    let sel: [u8; 4] = data.get(..4)?.try_into().ok()?;
    let bad = |e: alloy::sol_types::Error| format!("malformed swap: {e}");
    let five = |max_in: U256, path: Vec<Address>, to: Address, eth_out: bool| Swap {
        eth_in: false,
        eth_out,
        path,
        recipient: to,
        max_in,
    };
    let three = |path: Vec<Address>, to: Address| Swap {
        eth_in: true,
        eth_out: false,
        path,
        recipient: to,
        max_in: U256::ZERO,
    };
    Some(match sel {
        S::swapExactTokensForTokensCall::SELECTOR => S::swapExactTokensForTokensCall::abi_decode(data)
            .map(|c| five(c.amountIn, c.path, c.to, false))
            .map_err(bad),
        S::swapTokensForExactTokensCall::SELECTOR => S::swapTokensForExactTokensCall::abi_decode(data)
            .map(|c| five(c.amountInMax, c.path, c.to, false))
            .map_err(bad),
        S::swapExactTokensForTokensSupportingFeeOnTransferTokensCall::SELECTOR => {
            S::swapExactTokensForTokensSupportingFeeOnTransferTokensCall::abi_decode(data)
                .map(|c| five(c.amountIn, c.path, c.to, false))
                .map_err(bad)
        }
        S::swapTokensForExactETHCall::SELECTOR => S::swapTokensForExactETHCall::abi_decode(data)
            .map(|c| five(c.amountInMax, c.path, c.to, true))
            .map_err(bad),
        S::swapExactTokensForETHCall::SELECTOR => S::swapExactTokensForETHCall::abi_decode(data)
            .map(|c| five(c.amountIn, c.path, c.to, true))
            .map_err(bad),
        S::swapExactTokensForETHSupportingFeeOnTransferTokensCall::SELECTOR => {
            S::swapExactTokensForETHSupportingFeeOnTransferTokensCall::abi_decode(data)
                .map(|c| five(c.amountIn, c.path, c.to, true))
                .map_err(bad)
        }
        S::swapExactETHForTokensCall::SELECTOR => {
            S::swapExactETHForTokensCall::abi_decode(data).map(|c| three(c.path, c.to)).map_err(bad)
        }
        S::swapETHForExactTokensCall::SELECTOR => {
            S::swapETHForExactTokensCall::abi_decode(data).map(|c| three(c.path, c.to)).map_err(bad)
        }
        S::swapExactETHForTokensSupportingFeeOnTransferTokensCall::SELECTOR => {
            S::swapExactETHForTokensSupportingFeeOnTransferTokensCall::abi_decode(data)
                .map(|c| three(c.path, c.to))
                .map_err(bad)
        }
        _ => return None,
    })
}

/// What the Safe's tier-1 exec of `op` can lose, per asset (`Address::ZERO` = ETH): the sum of call
/// values; per token, its transfers (and `transferFrom`s) plus the larger of what the operation
/// approves (`approve`, `increaseAllowance`) and what its swaps may sell — an approval and the swap
/// that uses it are one outflow, while an approval alone or a swap on a standing approval each
/// counts. `Err((index, why))` for a call this model cannot value (a generic call, a DELEGATECALL):
/// such an operation cannot be bounded by anyone but the module's own measurement.
pub fn valued_outflows(op: &Operation) -> Result<BTreeMap<Address, U256>, (usize, String)> {
    let mut direct: BTreeMap<Address, U256> = BTreeMap::new();
    let mut approved: BTreeMap<Address, U256> = BTreeMap::new();
    let mut sold: BTreeMap<Address, U256> = BTreeMap::new();
    let add = |m: &mut BTreeMap<Address, U256>, k: Address, v: U256| {
        let e = m.entry(k).or_default();
        *e = e.saturating_add(v);
    };
    for (i, c) in op.calls.iter().enumerate() {
        if c.operation != OP_CALL {
            return Err((i, "a delegatecall cannot be valued".into()));
        }
        if !c.value.is_zero() {
            add(&mut direct, Address::ZERO, c.value);
        }
        if c.data.is_empty() {
            continue;
        }
        let word = |k: usize| c.data.get(4 + 32 * k..4 + 32 * (k + 1)).map(U256::from_be_slice);
        let sel: [u8; 4] = match c.data.get(..4) {
            Some(s) => s.try_into().expect("four bytes"),
            None => return Err((i, "calldata shorter than a selector".into())),
        };
        match sel {
            TRANSFER => add(&mut direct, c.to, word(1).ok_or((i, "malformed transfer".to_string()))?),
            TRANSFER_FROM => {
                add(&mut direct, c.to, word(2).ok_or((i, "malformed transferFrom".to_string()))?)
            }
            APPROVE | INCREASE_ALLOWANCE => {
                add(&mut approved, c.to, word(1).ok_or((i, "malformed approval".to_string()))?)
            }
            DECREASE_ALLOWANCE => {}
            _ => match decode_swap(&c.data) {
                Some(Ok(s)) if !s.eth_in => {
                    add(&mut sold, s.path.first().copied().unwrap_or_default(), s.max_in)
                }
                Some(Ok(_)) => {} // ETH in: the value, counted above
                Some(Err(e)) => return Err((i, e)),
                None => {
                    return Err((i, format!("{}.0x{} cannot be valued", c.to, alloy::hex::encode(sel))));
                }
            },
        }
    }
    for (token, a) in approved {
        let s = sold.remove(&token).unwrap_or_default();
        add(&mut direct, token, a.max(s));
    }
    for (token, s) in sold {
        add(&mut direct, token, s);
    }
    Ok(direct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::Call;

    fn token(b: u8) -> Address {
        Address::repeat_byte(b)
    }

    fn op(calls: Vec<Call>) -> Operation {
        Operation { calls, nonce: U256::ZERO, deadline: U256::MAX }
    }

    fn approve(t: Address, amount: u64) -> Call {
        let mut d = APPROVE.to_vec();
        d.extend_from_slice(&[0u8; 12]);
        d.extend_from_slice(token(9).as_slice());
        d.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
        Call::new(t, U256::ZERO, d)
    }

    fn swap(sell: Address, buy: Address, amount: u64) -> Call {
        let data = S::swapExactTokensForTokensCall {
            amountIn: U256::from(amount),
            amountOutMin: U256::ZERO,
            path: vec![sell, buy],
            to: token(7),
            deadline: U256::MAX,
        }
        .abi_encode();
        Call::new(token(9), U256::ZERO, data)
    }

    #[test]
    fn an_approval_and_its_swap_are_one_outflow_each_alone_counts() {
        let o = valued_outflows(&op(vec![approve(token(1), 100), swap(token(1), token(2), 100)])).unwrap();
        assert_eq!(o.get(&token(1)), Some(&U256::from(100)));
        assert_eq!(o.get(&token(2)), None, "the bought token is an inflow");
        let o = valued_outflows(&op(vec![approve(token(1), 500)])).unwrap();
        assert_eq!(o.get(&token(1)), Some(&U256::from(500)), "an approval alone counts");
        let o = valued_outflows(&op(vec![swap(token(1), token(2), 300)])).unwrap();
        assert_eq!(o.get(&token(1)), Some(&U256::from(300)), "a swap on a standing approval counts");
    }

    #[test]
    fn generic_calls_and_delegatecalls_cannot_be_valued() {
        let generic = Call::new(token(3), U256::ZERO, vec![0x12, 0x34, 0x56, 0x78]);
        assert!(valued_outflows(&op(vec![generic])).is_err());
        let mut d = approve(token(1), 1);
        d.operation = 1;
        assert!(valued_outflows(&op(vec![d])).is_err());
    }

    #[test]
    fn swaps_decode_with_their_recipient_and_input() {
        let s = decode_swap(&swap(token(1), token(2), 5).data).unwrap().unwrap();
        assert_eq!((s.recipient, s.max_in, s.eth_in, s.eth_out), (token(7), U256::from(5), false, false));
        assert!(decode_swap(&TRANSFER).is_none());
        assert!(decode_swap(&S::swapExactETHForTokensCall::SELECTOR).unwrap().is_err());
    }
}
