//! Sending transactions and turning failures into errors that name what was sent.

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::{Ethereum, TransactionBuilder};
use alloy::primitives::{Address, Bytes};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};

use crate::error::{ChainError, Result};

/// Sends a contract call and waits for its receipt; a revert is an error naming `what`.
pub async fn send_call<P: Provider<Ethereum>, D: CallDecoder>(
    what: &str,
    address: Address,
    call: CallBuilder<P, D, Ethereum>,
) -> Result<TransactionReceipt> {
    let receipt = call.send_sync().await.map_err(|e| ChainError::rpc(what, Some(address), e))?;
    ensure_success(what, receipt)
}

/// Deploys `code` (creation bytecode followed by encoded constructor arguments) and returns its address.
pub async fn deploy_code(provider: &DynProvider, what: &str, code: Bytes) -> Result<Address> {
    let tx = TransactionRequest::default().with_deploy_code(code);
    let receipt = provider
        .send_transaction_sync(tx)
        .await
        .map_err(|e| ChainError::rpc(format!("deploy {what}"), None, e))?;
    let receipt = ensure_success(&format!("deploy {what}"), receipt)?;
    receipt.contract_address.ok_or_else(|| ChainError::InvalidAnswer {
        call: format!("deploy {what}"),
        reason: "receipt has no contract address".into(),
    })
}

/// Sends a plain transaction (e.g. ETH transfer) and waits for its receipt.
pub async fn send_tx(
    provider: &DynProvider,
    what: &str,
    tx: TransactionRequest,
) -> Result<TransactionReceipt> {
    let to = tx.to.and_then(|k| k.to().copied());
    let receipt = provider.send_transaction_sync(tx).await.map_err(|e| ChainError::rpc(what, to, e))?;
    ensure_success(what, receipt)
}

fn ensure_success(what: &str, receipt: TransactionReceipt) -> Result<TransactionReceipt> {
    if receipt.status() {
        Ok(receipt)
    } else {
        Err(ChainError::Reverted { what: what.to_string(), tx_hash: receipt.transaction_hash })
    }
}
