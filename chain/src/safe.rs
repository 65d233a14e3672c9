//! Safe transactions signed by the Safe's owners (used to enable and configure the module).

use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::DynProvider;
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;

use alloy::sol_types::{Eip712Domain, SolStruct};

use crate::contracts::{self, ISafe};
use crate::error::{ChainError, Result};
use crate::tx::send_call;

/// One Safe transaction: a call (operation 0) or delegatecall (1) made by the Safe itself.
#[derive(Debug, Clone)]
pub struct SafeTx {
    /// Target of the call.
    pub to: Address,
    /// Wei sent along.
    pub value: U256,
    /// Calldata.
    pub data: Bytes,
    /// 0 = CALL, 1 = DELEGATECALL.
    pub operation: u8,
}

/// Signs `tx` with `owners` (at least the Safe's threshold) and executes it from `provider`'s account.
///
/// Signatures are ECDSA over the Safe's own transaction hash, ordered by owner address as Safe requires.
pub async fn exec_as_owners(
    provider: &DynProvider,
    safe: Address,
    owners: &[PrivateKeySigner],
    tx: &SafeTx,
) -> Result<TransactionReceipt> {
    let contract = ISafe::new(safe, provider);
    let nonce = contract.nonce().call().await.map_err(|e| ChainError::rpc("Safe.nonce", Some(safe), e))?;
    let chain_id = crate::provider::chain_id(provider).await?;
    let signed = contracts::SafeTx {
        to: tx.to,
        value: tx.value,
        data: tx.data.clone(),
        operation: tx.operation,
        safeTxGas: U256::ZERO,
        baseGas: U256::ZERO,
        gasPrice: U256::ZERO,
        gasToken: Address::ZERO,
        refundReceiver: Address::ZERO,
        nonce,
    };
    let domain = Eip712Domain {
        chain_id: Some(U256::from(chain_id)),
        verifying_contract: Some(safe),
        ..Eip712Domain::default()
    };
    let signatures = owner_signatures(owners, signed.eip712_signing_hash(&domain))?;
    let call = contract.execTransaction(
        signed.to,
        signed.value,
        signed.data,
        signed.operation,
        signed.safeTxGas,
        signed.baseGas,
        signed.gasPrice,
        signed.gasToken,
        signed.refundReceiver,
        signatures,
    );
    send_call("Safe.execTransaction", safe, call).await
}

/// Concatenated 65-byte owner signatures over `hash`, sorted by owner address (Safe's rule).
pub fn owner_signatures(owners: &[PrivateKeySigner], hash: alloy::primitives::B256) -> Result<Bytes> {
    let mut sorted: Vec<&PrivateKeySigner> = owners.iter().collect();
    sorted.sort_by_key(|s| s.address());
    let mut out = Vec::with_capacity(65 * sorted.len());
    for owner in sorted {
        let sig = owner
            .sign_hash_sync(&hash)
            .map_err(|e| ChainError::InvalidInput(format!("owner {} cannot sign: {e}", owner.address())))?;
        out.extend_from_slice(&sig.as_bytes());
    }
    Ok(out.into())
}
