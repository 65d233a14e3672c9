//! Reading headers and logs over JSON-RPC (the provider the pipeline reads with, HTTP by default).

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::client::BatchRequest;
use alloy::rpc::types::{Block, Filter};

use super::TriggerError;
use super::firing::BlockRef;

/// Headers asked for in one JSON-RPC batch while catching up.
const HEADER_BATCH: u64 = 100;

/// A block's reference and its parent's hash (to check the range read is one chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The block.
    pub block: BlockRef,
    /// Its parent's hash.
    pub parent_hash: B256,
}

fn rpc(call: impl Into<String>) -> impl FnOnce(alloy::transports::TransportError) -> TriggerError {
    let call = call.into();
    move |source| TriggerError::Rpc { call, source }
}

fn header_of(block: &Block) -> Header {
    Header {
        block: BlockRef {
            number: block.header.number,
            hash: block.header.hash,
            timestamp: block.header.timestamp,
        },
        parent_hash: block.header.parent_hash,
    }
}

/// The number of the chain's head.
pub(crate) async fn head_number(provider: &DynProvider) -> Result<u64, TriggerError> {
    provider.get_block_number().await.map_err(rpc("eth_blockNumber"))
}

/// The header at `number`, or `None` if the chain is shorter.
pub(crate) async fn header(provider: &DynProvider, number: u64) -> Result<Option<Header>, TriggerError> {
    let block = provider
        .get_block_by_number(BlockNumberOrTag::Number(number))
        .await
        .map_err(rpc(format!("eth_getBlockByNumber({number})")))?;
    Ok(block.as_ref().map(header_of))
}

/// The headers `from..=to`, in order, in batches of [`HEADER_BATCH`]; stops early (shorter result)
/// where the node has no block (the chain got shorter under us).
pub(crate) async fn headers(provider: &DynProvider, from: u64, to: u64) -> Result<Vec<Header>, TriggerError> {
    let mut out = Vec::with_capacity(usize::try_from(to.saturating_sub(from) + 1).unwrap_or(0));
    let mut start = from;
    while start <= to {
        let end = to.min(start + HEADER_BATCH - 1);
        let call = format!("eth_getBlockByNumber({start}..={end})");
        let mut batch = BatchRequest::new(provider.client());
        let mut waiters = Vec::new();
        for n in start..=end {
            let waiter = batch
                .add_call::<_, Option<Block>>("eth_getBlockByNumber", &(BlockNumberOrTag::Number(n), false))
                .map_err(rpc(call.clone()))?;
            waiters.push(waiter);
        }
        batch.send().await.map_err(rpc(call.clone()))?;
        for waiter in waiters {
            match waiter.await.map_err(rpc(call.clone()))? {
                Some(block) => out.push(header_of(&block)),
                None => return Ok(out),
            }
        }
        start = end + 1;
    }
    Ok(out)
}

/// A log as fetched: where it is and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawLog {
    /// Block number.
    pub block_number: u64,
    /// Block hash (checked against the header read for that number).
    pub block_hash: B256,
    /// Emitting contract.
    pub address: Address,
    /// First topic.
    pub topic0: B256,
    /// Emitting transaction.
    pub tx_hash: B256,
    /// Index in the block.
    pub log_index: u64,
}

/// The logs of `addresses` with first topic in `topics` over `from..=to`, one `eth_getLogs` per
/// `range` blocks; removed logs and logs missing their position are left out.
pub(crate) async fn logs(
    provider: &DynProvider,
    addresses: &[Address],
    topics: &[B256],
    from: u64,
    to: u64,
    range: u64,
) -> Result<Vec<RawLog>, TriggerError> {
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = to.min(start.saturating_add(range.max(1) - 1));
        let filter = Filter::new()
            .address(addresses.to_vec())
            .event_signature(topics.to_vec())
            .from_block(start)
            .to_block(end);
        let logs = provider.get_logs(&filter).await.map_err(rpc(format!("eth_getLogs({start}..={end})")))?;
        for log in logs {
            if log.removed {
                continue;
            }
            let (Some(block_number), Some(block_hash), Some(tx_hash), Some(log_index), Some(topic0)) = (
                log.block_number,
                log.block_hash,
                log.transaction_hash,
                log.log_index,
                log.topic0().copied(),
            ) else {
                continue;
            };
            out.push(RawLog { block_number, block_hash, address: log.address(), topic0, tx_hash, log_index });
        }
        start = end + 1;
    }
    Ok(out)
}
