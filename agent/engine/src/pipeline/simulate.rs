//! Simulation before signing, and revert reasons in words.
//!
//! An operation is simulated as the Safe would run it: an `eth_call` from the module to the Safe's
//! `execTransactionFromModuleReturnData`, with the batch packed for MultiSendCallOnly (called by
//! DELEGATECALL, as the module does). Signatures and tiers are not part of the simulation: the
//! module's tier rules are checked from chain reads, and the final `exec` is estimated before
//! it is sent.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::{SolCall, SolError, SolInterface};
use alloy::transports::{RpcError, TransportErrorKind};
use treasury_chain::Operation;
use treasury_chain::contracts::{IMultiSend, ISafe, TreasuryModule};

/// How a simulation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Simulation {
    /// Every call succeeded.
    Ok,
    /// A call reverted, with the reason in words.
    Reverts(String),
}

/// Simulates the calls of `op` as the Safe at `safe` run by the module at `module`.
pub async fn simulate(
    provider: &DynProvider,
    safe: Address,
    module: Address,
    op: &Operation,
) -> Result<Simulation, String> {
    let (to, value, data, operation) = match op.calls.as_slice() {
        [] => return Ok(Simulation::Ok),
        [one] => (one.to, one.value, one.data.clone(), one.operation),
        many => {
            let multisend = multisend_of(provider, module).await?;
            let packed = IMultiSend::multiSendCall { transactions: pack(many) }.abi_encode();
            (multisend, U256::ZERO, Bytes::from(packed), 1)
        }
    };
    let call = ISafe::execTransactionFromModuleReturnDataCall { to, value, data, operation };
    let tx = TransactionRequest::default().with_from(module).with_to(safe).with_input(call.abi_encode());
    let out = match provider.call(tx).await {
        Ok(out) => out,
        Err(e) => {
            // Only a revert fails the operation; an endpoint down or a refusal such as a rate
            // limit is a fault to retry.
            return if treasury_chain::error::is_revert(&e) {
                Ok(Simulation::Reverts(reason_of_rpc_error(&e)))
            } else {
                Err(format!("eth_call: {e}"))
            };
        }
    };
    let ret = ISafe::execTransactionFromModuleReturnDataCall::abi_decode_returns(&out)
        .map_err(|e| format!("decode simulation result: {e}"))?;
    Ok(if ret.success { Simulation::Ok } else { Simulation::Reverts(revert_reason(&ret.returnData)) })
}

async fn multisend_of(provider: &DynProvider, module: Address) -> Result<Address, String> {
    let call = TreasuryModule::multiSendCallOnlyCall {}.abi_encode();
    let tx = TransactionRequest::default().with_to(module).with_input(call);
    let out = provider.call(tx).await.map_err(|e| format!("multiSendCallOnly(): {e}"))?;
    let addr = TreasuryModule::multiSendCallOnlyCall::abi_decode_returns(&out)
        .map_err(|e| format!("multiSendCallOnly(): {e}"))?;
    if addr == Address::ZERO {
        return Err("the module has no MultiSendCallOnly: batches cannot be simulated".into());
    }
    Ok(addr)
}

/// MultiSend's packed encoding: `operation ‖ to ‖ value ‖ data length ‖ data` per call.
fn pack(calls: &[treasury_chain::Call]) -> Bytes {
    let mut out = Vec::new();
    for c in calls {
        out.push(c.operation);
        out.extend_from_slice(c.to.as_slice());
        out.extend_from_slice(&c.value.to_be_bytes::<32>());
        out.extend_from_slice(&U256::from(c.data.len()).to_be_bytes::<32>());
        out.extend_from_slice(&c.data);
    }
    out.into()
}

/// The revert in an RPC error, in words (the error itself when the node gave no revert).
pub fn reason_of_rpc_error(err: &RpcError<TransportErrorKind>) -> String {
    match err.as_error_resp() {
        Some(payload) => match payload.as_revert_data() {
            Some(data) => revert_reason(&data),
            None => payload.message.to_string(),
        },
        None => err.to_string(),
    }
}

/// Revert data in words: the module's custom errors by name, `Error(string)` by its message.
pub fn revert_reason(data: &[u8]) -> String {
    if let Ok(err) = TreasuryModule::TreasuryModuleErrors::abi_decode(data) {
        return match err {
            TreasuryModule::TreasuryModuleErrors::CallFailed(inner) => {
                format!("CallFailed(index {}): {}", inner.index, revert_reason(&inner.reason))
            }
            other => format!("{other:?}"),
        };
    }
    if let Ok(msg) = alloy::sol_types::Revert::abi_decode(data) {
        return format!("reverted: {}", msg.reason);
    }
    if data.is_empty() {
        "reverted without a reason".into()
    } else {
        format!("reverted with data 0x{}", hex::encode(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_errors_and_strings_are_named() {
        let e = TreasuryModule::BudgetExceeded {
            token: Address::ZERO,
            outflow: U256::from(5),
            remaining: U256::from(1),
        };
        assert!(revert_reason(&e.abi_encode()).starts_with("BudgetExceeded"));
        let inner = alloy::sol_types::Revert::from("ERC20: transfer amount exceeds balance").abi_encode();
        let wrapped = TreasuryModule::CallFailed { index: U256::from(1), reason: inner.into() }.abi_encode();
        let reason = revert_reason(&wrapped);
        assert!(reason.contains("index 1") && reason.contains("exceeds balance"), "{reason}");
        assert_eq!(revert_reason(&[]), "reverted without a reason");
    }

    #[test]
    fn multisend_packing_matches_the_safe_layout() {
        let call = treasury_chain::Call::new(Address::repeat_byte(7), U256::from(3), vec![0xaa, 0xbb]);
        let packed = pack(&[call]);
        assert_eq!(packed.len(), 1 + 20 + 32 + 32 + 2);
        assert_eq!(packed[0], 0);
        assert_eq!(&packed[1..21], Address::repeat_byte(7).as_slice());
        assert_eq!(U256::from_be_slice(&packed[21..53]), U256::from(3));
        assert_eq!(U256::from_be_slice(&packed[53..85]), U256::from(2));
        assert_eq!(&packed[85..], &[0xaa, 0xbb]);
    }
}
