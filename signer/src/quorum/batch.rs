//! A replaying node's one round of reads per signature, sent to its own endpoint as one JSON-RPC
//! batch (one HTTP request): block headers by number, the module's `Executed` logs from a block
//! on, and the finalized block. Each answer is checked by its reader as if it came alone.
use std::collections::{BTreeMap, BTreeSet};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::B256;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::client::{BatchRequest, Waiter};
use alloy::rpc::types::{Block, Filter, Log};

use super::chain_cache::HeaderFacts;

/// What one round asks.
#[derive(Debug, Default)]
pub(crate) struct Asked {
    /// Block headers, by number.
    pub headers: BTreeSet<u64>,
    /// Logs matching this filter.
    pub logs: Option<Filter>,
    /// The finalized block.
    pub finalized: bool,
}

/// A block's hash and the facts the node checks.
pub(crate) type HeaderAnswer = Result<(B256, HeaderFacts), String>;

/// What the endpoint answered, per request (an error names what went wrong, without context).
#[derive(Debug, Default)]
pub(crate) struct Answers {
    /// Headers by number.
    pub headers: BTreeMap<u64, HeaderAnswer>,
    /// The logs, when asked.
    pub logs: Option<Result<Vec<Log>, String>>,
    /// The finalized block's number and hash, when asked and the endpoint names one.
    pub finalized: Option<(u64, B256)>,
}

impl Answers {
    /// The answer for block `number`'s header (an error when it was not asked).
    pub(crate) fn header(&self, number: u64) -> HeaderAnswer {
        self.headers.get(&number).cloned().unwrap_or_else(|| Err("not read".into()))
    }
}

type BlockWaiter = Waiter<Option<Block>>;

/// Sends `asked` as one batch and returns each answer; a failed batch fails every answer.
pub(crate) async fn send(provider: &DynProvider, asked: &Asked) -> Answers {
    let mut batch = BatchRequest::new(provider.client());
    let by_number = |batch: &mut BatchRequest<'_>, tag: BlockNumberOrTag| {
        batch.add_call::<_, Option<Block>>("eth_getBlockByNumber", &(tag, false)).map_err(|e| e.to_string())
    };
    let headers: Vec<(u64, Result<BlockWaiter, String>)> =
        asked.headers.iter().map(|n| (*n, by_number(&mut batch, BlockNumberOrTag::Number(*n)))).collect();
    let logs = asked
        .logs
        .as_ref()
        .map(|f| batch.add_call::<_, Vec<Log>>("eth_getLogs", &(f.clone(),)).map_err(|e| e.to_string()));
    let finalized = asked.finalized.then(|| by_number(&mut batch, BlockNumberOrTag::Finalized));
    let sent = batch.send().await.map_err(|e| e.to_string());
    let mut out = Answers::default();
    for (n, waiter) in headers {
        let answer = match answer(&sent, waiter).await {
            Ok(Some(b)) => Ok((b.header.hash, facts(&b))),
            Ok(None) => Err("no such block".into()),
            Err(e) => Err(e),
        };
        out.headers.insert(n, answer);
    }
    if let Some(w) = logs {
        out.logs = Some(answer(&sent, w).await);
    }
    if let Some(w) = finalized
        && let Ok(Some(b)) = answer(&sent, w).await
    {
        out.finalized = Some((b.header.number, b.header.hash));
    }
    out
}

/// One request's answer once the batch `sent` came back.
async fn answer<T>(sent: &Result<(), String>, waiter: Result<Waiter<T>, String>) -> Result<T, String>
where
    Waiter<T>: std::future::Future<Output = Result<T, alloy::transports::TransportError>>,
{
    sent.clone()?;
    waiter?.await.map_err(|e| e.to_string())
}

fn facts(b: &Block) -> HeaderFacts {
    HeaderFacts { number: b.header.number, timestamp: b.header.timestamp, parent: b.header.parent_hash }
}
