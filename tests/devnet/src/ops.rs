//! Operations the tests ask signers to sign.
use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use treasury_chain::contracts::IERC20;
use treasury_chain::{Call, Operation};

/// One ERC-20 `transfer` of `amount` of `token` to `to`, with module nonce `nonce`, valid until
/// the unix time `deadline`.
pub fn erc20_transfer(token: Address, to: Address, amount: U256, nonce: u64, deadline: u64) -> Operation {
    let data = IERC20::transferCall { to, amount }.abi_encode();
    Operation {
        calls: vec![Call::new(token, U256::ZERO, data)],
        nonce: U256::from(nonce),
        deadline: U256::from(deadline),
    }
}
