//! Connecting to an RPC endpoint, read-only or with a local signing wallet.

use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;

use alloy::rpc::client::RpcClient;

use crate::error::{ChainError, Result};
use crate::failover::{FailoverOptions, FailoverTransport};

/// A read-only provider for the HTTP JSON-RPC endpoint at `url`.
pub fn connect(url: &str) -> Result<DynProvider> {
    let url = parse_url(url)?;
    Ok(ProviderBuilder::new().connect_http(url).erased())
}

/// A read-only provider for one chain behind several HTTP endpoints: one at a time, moving on
/// when one fails (see [`crate::failover`]).
pub fn connect_endpoints(urls: &[alloy::transports::http::reqwest::Url]) -> Result<DynProvider> {
    connect_endpoints_with(urls, FailoverOptions::default())
}

/// Like [`connect_endpoints`], with the given timeouts and retries.
pub fn connect_endpoints_with(
    urls: &[alloy::transports::http::reqwest::Url],
    options: FailoverOptions,
) -> Result<DynProvider> {
    if urls.is_empty() {
        return Err(ChainError::InvalidInput("no RPC endpoint given".into()));
    }
    let transport = FailoverTransport::new(urls, options)
        .map_err(|e| ChainError::InvalidInput(format!("building the HTTP client: {e}")))?;
    let local = urls.iter().all(|u| alloy::transports::utils::guess_local_url(u.as_str()));
    let client = RpcClient::new(transport, local);
    Ok(ProviderBuilder::new().connect_client(client).erased())
}

/// A provider for `url` that signs and sends transactions from `signer`, filling nonce, gas and fees.
pub fn connect_with_signer(url: &str, signer: PrivateKeySigner) -> Result<DynProvider> {
    let url = parse_url(url)?;
    let wallet = EthereumWallet::from(signer);
    Ok(ProviderBuilder::new().wallet(wallet).connect_http(url).erased())
}

fn parse_url(url: &str) -> Result<alloy::transports::http::reqwest::Url> {
    url.parse()
        .map_err(|e| ChainError::InvalidInput(format!("RPC URL {:?}: {e}", crate::redact::redact_urls(url))))
}

/// The chain id the endpoint reports.
pub async fn chain_id(provider: &DynProvider) -> Result<u64> {
    provider.get_chain_id().await.map_err(|e| ChainError::rpc("eth_chainId", None, e))
}
