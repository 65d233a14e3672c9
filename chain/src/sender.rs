//! Sending transactions from the keeper account: nonces, EIP-1559 fees, replacement, confirmation, reorgs.
//!
//! A [`Sender`] owns the keeper's nonce: it syncs with the chain's pending nonce when it starts and
//! again whenever the node answers "nonce too low", and fills gaps (nonces reserved but never
//! broadcast) with zero-value self-transfers so later transactions are not stuck behind them.
//!
//! Every step is reported to a [`SendObserver`] *before* it happens: the signed raw transaction and
//! its hash arrive as [`SendEvent::Signed`] before it is broadcast, so a journal can store it first
//! and [`Sender::resume`] can pick it up after a crash. A transaction not mined for
//! [`SenderConfig::bump_after_blocks`] blocks is replaced (same nonce, fees bumped by at least
//! [`MIN_BUMP_PERCENT`], up to the cap); a receipt that disappears or whose block is no longer
//! canonical is a reorg, after which the same signed payload is broadcast again.
//!
//! Transport: plain `eth_sendRawTransaction` followed at once by `eth_getTransactionReceipt`, then
//! polling. Over HTTP on anvil with automine this reaches the receipt in about a millisecond
//! (docs/PERFORMANCE.md); it works on any provider the caller builds.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::consensus::{SignableTransaction, Transaction, TxEip1559, TxEnvelope};
use alloy::eips::BlockNumberOrTag;
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::network::{TransactionBuilder, TxSigner};
use alloy::primitives::Signature;
use alloy::primitives::{Address, Bytes, TxHash, TxKind, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::state::StateOverride;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::transports::{RpcError, TransportErrorKind};
use tracing::Instrument;

/// The smallest fee increase, in percent, that nodes accept for a same-nonce replacement.
pub const MIN_BUMP_PERCENT: u128 = 10;

/// How many more times the receipt is looked for right after a broadcast, before the watch's
/// other checks (a few RPC calls each) and its first flush of the observer.
const QUICK_LOOKS: u32 = 4;

/// The pause before each of those looks: anvil mines a broadcast transaction within a few
/// milliseconds of answering it (keeper bench: `send.watch` 2.6 ms p50 with these looks).
const QUICK_LOOK_AFTER: Duration = Duration::from_micros(500);

/// Error from an observer; aborts the send before the step it was told about.
pub type ObserverError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong sending a transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SenderError {
    /// An RPC request failed (endpoint down, timeout, unexpected rejection).
    #[error("RPC call {call} failed: {source}")]
    Rpc {
        /// The RPC method.
        call: &'static str,
        /// The transport error.
        #[source]
        source: RpcError<TransportErrorKind>,
    },
    /// Gas estimation failed: the call would revert as it stands.
    #[error("the call to {to} would fail (eth_estimateGas): {source}")]
    WouldRevert {
        /// The call's target.
        to: Address,
        /// The node's answer, with the revert data if any.
        #[source]
        source: RpcError<TransportErrorKind>,
    },
    /// The observer refused an event; nothing after it was done.
    #[error("the observer failed")]
    Observer(#[source] ObserverError),
    /// Signing the transaction failed.
    #[error("signing the transaction failed")]
    Sign(#[from] alloy::signers::Error),
    /// A raw transaction handed to [`Sender::resume`] is not a signed EIP-1559 transaction of this keeper.
    #[error("invalid raw transaction: {0}")]
    InvalidRaw(String),
    /// The configuration cannot work (e.g. zero confirmations).
    #[error("invalid sender configuration: {0}")]
    InvalidConfig(String),
}

impl SenderError {
    /// Whether trying again later may succeed (endpoint down, timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Rpc { .. })
    }

    /// Whether the call itself is at fault (it would revert), so retrying unchanged is pointless.
    pub fn is_revert(&self) -> bool {
        matches!(self, Self::WouldRevert { .. })
    }
}

/// Result alias for the sender.
pub type Result<T, E = SenderError> = std::result::Result<T, E>;

/// How the sender prices, replaces and confirms transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// Blocks a transaction must be buried under, its own block included (at least 1).
    pub confirmations: u64,
    /// Blocks without inclusion after which the transaction is replaced with bumped fees.
    pub bump_after_blocks: u64,
    /// The highest `maxFeePerGas` ever offered, in wei.
    pub max_fee_per_gas: u128,
    /// Priority fee (tip) in wei; `None` asks the node (`eth_maxPriorityFeePerGas`).
    pub priority_fee_per_gas: Option<u128>,
    /// Percent added to estimated gas.
    pub gas_margin_percent: u64,
    /// Time between two looks at the chain while waiting.
    pub poll_interval: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            confirmations: 1,
            bump_after_blocks: 3,
            max_fee_per_gas: 200_000_000_000,
            priority_fee_per_gas: None,
            gas_margin_percent: 20,
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// A call for the keeper to send; gas is estimated when `gas_limit` is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxRequest {
    /// Target contract or account.
    pub to: Address,
    /// Wei sent along.
    pub value: U256,
    /// Calldata.
    pub data: Bytes,
    /// Gas limit, or `None` to estimate.
    pub gas_limit: Option<u64>,
    /// A lower fee cap for this call than the sender's own (a keeper job's ceiling), in wei.
    pub max_fee_per_gas: Option<u128>,
}

/// One step of a send, reported before it is taken (or, for observations, as it is seen).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendEvent {
    /// The local nonce was re-read from the chain (start, "nonce too low", or a nonce taken by another transaction).
    NonceResynced {
        /// The nonce the sender would have used, if it had one.
        previous: Option<u64>,
        /// The chain's pending nonce now in use.
        next: u64,
    },
    /// A transaction was signed and is about to be broadcast; store `raw` before it goes out.
    Signed {
        /// Keeper nonce.
        nonce: u64,
        /// Hash of the signed transaction.
        tx_hash: TxHash,
        /// EIP-2718 encoding, ready for `eth_sendRawTransaction` or [`Sender::resume`].
        raw: Bytes,
        /// Offered `maxFeePerGas`.
        max_fee_per_gas: u128,
        /// Offered `maxPriorityFeePerGas`.
        max_priority_fee_per_gas: u128,
        /// The earlier transaction of the same nonce it replaces, if any.
        replaces: Option<TxHash>,
    },
    /// The node accepted the transaction into its pool.
    Broadcast {
        /// Hash of the transaction.
        tx_hash: TxHash,
    },
    /// A replacement was due but the fees are already at the cap; the sender keeps waiting.
    FeeCapReached {
        /// The transaction still waiting.
        tx_hash: TxHash,
    },
    /// A receipt appeared.
    Included {
        /// Hash of the mined transaction.
        tx_hash: TxHash,
        /// Block it was mined in.
        block_number: u64,
        /// Hash of that block.
        block_hash: alloy::primitives::B256,
    },
    /// A receipt seen earlier is gone or its block is no longer canonical; the same payload is about to be broadcast again.
    Reorged {
        /// The transaction that was dropped.
        tx_hash: TxHash,
        /// The block it had been mined in.
        block_number: u64,
    },
    /// The transaction is buried under the configured confirmations.
    Confirmed {
        /// Hash of the confirmed transaction.
        tx_hash: TxHash,
        /// Its block.
        block_number: u64,
        /// Whether it succeeded (status 1) or reverted.
        success: bool,
    },
}

/// Receives every [`SendEvent`] before the step it describes; an error aborts the send.
pub trait SendObserver: Send {
    /// Records `event` (e.g. in the journal).
    fn observe(
        &mut self,
        event: &SendEvent,
    ) -> impl Future<Output = std::result::Result<(), ObserverError>> + Send;

    /// Called before the sender waits for the chain (between two polls of a transaction not yet
    /// settled): an observer that holds back records of observations (a broadcast, an inclusion)
    /// to write them with the next one writes them now. Nothing is held back by default.
    fn flush(&mut self) -> impl Future<Output = std::result::Result<(), ObserverError>> + Send {
        async { Ok(()) }
    }
}

/// An observer that ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ignore;

impl SendObserver for Ignore {
    async fn observe(&mut self, _: &SendEvent) -> std::result::Result<(), ObserverError> {
        Ok(())
    }
}

impl SendObserver for Vec<SendEvent> {
    async fn observe(&mut self, event: &SendEvent) -> std::result::Result<(), ObserverError> {
        self.push(event.clone());
        Ok(())
    }
}

impl SendObserver for tokio::sync::mpsc::UnboundedSender<SendEvent> {
    async fn observe(&mut self, event: &SendEvent) -> std::result::Result<(), ObserverError> {
        self.send(event.clone()).map_err(|e| Box::new(e) as ObserverError)
    }
}

/// A transaction buried under the configured confirmations.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Its receipt (check `status()`: a mined transaction may have reverted).
    pub receipt: TransactionReceipt,
    /// The keeper nonce it used.
    pub nonce: u64,
    /// Every transaction hash signed for this send, oldest first (replacements, re-signs).
    pub attempts: Vec<TxHash>,
}

/// The keeper's transaction sender over one provider and one local key.
pub struct Sender {
    provider: DynProvider,
    signer: Arc<dyn TxSigner<Signature> + Send + Sync>,
    chain_id: u64,
    config: SenderConfig,
    nonces: Mutex<Nonces>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("keeper", &self.signer.address())
            .field("chain_id", &self.chain_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The local view of the keeper's nonces.
#[derive(Debug, Default)]
struct Nonces {
    /// Next nonce to hand out; `None` until synced with the chain.
    next: Option<u64>,
    /// Nonces handed out but never broadcast, below `next`: they must be filled.
    gaps: BTreeSet<u64>,
}

impl Nonces {
    fn reserve(&mut self) -> Option<u64> {
        let n = self.next?;
        self.next = Some(n + 1);
        Some(n)
    }

    /// Returns an unbroadcast nonce: rolled back if it was the last one, else remembered as a gap.
    fn unused(&mut self, n: u64) {
        if self.next == Some(n + 1) {
            self.next = Some(n);
        } else {
            self.gaps.insert(n);
        }
    }

    /// Adopts the chain's pending nonce; everything below it is used.
    fn resync(&mut self, pending: u64) -> Option<u64> {
        let previous = self.next;
        self.next = Some(pending);
        self.gaps.clear();
        previous
    }
}

/// What the node said when it refused a raw transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NonceTooLow,
    AlreadyKnown,
    Underpriced,
    Other,
}

fn refusal(err: &RpcError<TransportErrorKind>) -> Refusal {
    let Some(payload) = err.as_error_resp() else { return Refusal::Other };
    let msg = payload.message.to_ascii_lowercase();
    if msg.contains("nonce too low") || msg.contains("nonce is too low") {
        Refusal::NonceTooLow
    } else if msg.contains("already known") || msg.contains("already imported") {
        Refusal::AlreadyKnown
    } else if msg.contains("underpriced") {
        Refusal::Underpriced
    } else {
        Refusal::Other
    }
}

fn rpc(call: &'static str) -> impl FnOnce(RpcError<TransportErrorKind>) -> SenderError {
    move |source| SenderError::Rpc { call, source }
}

/// `value` increased by [`MIN_BUMP_PERCENT`], rounded up.
pub fn bumped(value: u128) -> u128 {
    value + (value * MIN_BUMP_PERCENT).div_ceil(100).max(1)
}

/// How a watch of one nonce ended.
enum Watch {
    Confirmed(Box<TransactionReceipt>),
    /// The nonce was used by a transaction that is none of ours.
    NonceTaken,
}

/// The transactions signed for one nonce.
struct Attempts {
    txs: Vec<TxEnvelope>,
    /// The highest max fee per gas these attempts may offer.
    cap: u128,
    /// Block number when the newest one was broadcast.
    broadcast_at: u64,
    /// The receipt looked for right after the broadcast, for the watch's first look.
    first_receipt: Option<TransactionReceipt>,
}

impl Attempts {
    fn latest(&self) -> &TxEnvelope {
        self.txs.last().expect("at least one attempt")
    }

    fn hashes(&self) -> Vec<TxHash> {
        self.txs.iter().map(|t| *t.tx_hash()).collect()
    }
}

impl Sender {
    /// A sender for `signer` (a local key, or an HSM key behind `TxSigner`) over `provider`; reads
    /// the chain id and syncs the nonce with the chain.
    pub async fn new(
        provider: DynProvider,
        signer: impl TxSigner<Signature> + Send + Sync + 'static,
        config: SenderConfig,
    ) -> Result<Self> {
        let signer: Arc<dyn TxSigner<Signature> + Send + Sync> = Arc::new(signer);
        if config.confirmations == 0 {
            return Err(SenderError::InvalidConfig("confirmations must be at least 1".into()));
        }
        if config.bump_after_blocks == 0 {
            return Err(SenderError::InvalidConfig("bump_after_blocks must be at least 1".into()));
        }
        let chain_id = provider.get_chain_id().await.map_err(rpc("eth_chainId"))?;
        let sender = Self { provider, signer, chain_id, config, nonces: Mutex::new(Nonces::default()) };
        let pending = sender.chain_nonce(true).await?;
        sender.nonces.lock().expect("nonce lock").resync(pending);
        Ok(sender)
    }

    /// The keeper's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The chain id transactions are signed for.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The configuration in force.
    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// The nonce the next send will use, as the sender sees it.
    pub fn next_nonce(&self) -> Option<u64> {
        self.nonces.lock().expect("nonce lock").next
    }

    /// Sends `request` and waits until it is confirmed, replacing it when stuck and resending it after a reorg.
    pub async fn send(&self, request: &TxRequest, observer: &mut impl SendObserver) -> Result<Sent> {
        self.send_with_fees(request, None, observer).await
    }

    /// The `(maxFeePerGas, maxPriorityFeePerGas)` [`Sender::send`] would offer for `request` now
    /// (twice the latest base fee plus the tip, within the request's cap): for a caller that
    /// reads them while it waits for something else and hands them to [`Sender::send_with_fees`].
    pub async fn fees_for(&self, request: &TxRequest) -> Result<(u128, u128)> {
        self.fees(self.cap_for(request)).await
    }

    /// [`Sender::send`] with the fees of the first attempt read beforehand by
    /// [`Sender::fees_for`] (`None`: read them now). Replacements read the fees again.
    pub async fn send_with_fees(
        &self,
        request: &TxRequest,
        fees: Option<(u128, u128)>,
        observer: &mut impl SendObserver,
    ) -> Result<Sent> {
        self.fill_gaps(observer).await?;
        let cap = self.cap_for(request);
        let fees = fees.map(|(max_fee, tip)| (max_fee.min(cap), tip.min(max_fee.min(cap))));
        let (gas_limit, mut fees) = match (request.gas_limit, fees) {
            (Some(gas), fees) => (gas, fees),
            (None, Some(fees)) => {
                let estimate =
                    self.estimate_gas(request).instrument(tracing::debug_span!("send.estimate_gas"));
                (estimate.await?, Some(fees))
            }
            (None, None) => {
                // The fees are read while the gas is estimated (both from the latest block).
                let fees = self.fees(cap).instrument(tracing::debug_span!("send.fees"));
                let estimate =
                    self.estimate_gas(request).instrument(tracing::debug_span!("send.estimate_gas"));
                let (gas, fees) = tokio::join!(estimate, fees);
                (gas?, fees.ok())
            }
        };
        let mut all_attempts = Vec::new();
        loop {
            let (tx, attempts) = self.sign_and_broadcast(request, gas_limit, fees.take(), observer).await?;
            let nonce = tx.nonce();
            let mut attempts = attempts;
            let result =
                self.watch(&mut attempts, observer).instrument(tracing::debug_span!("send.watch")).await;
            all_attempts.extend(attempts.hashes());
            match result? {
                Watch::Confirmed(receipt) => {
                    return Ok(Sent { receipt: *receipt, nonce, attempts: all_attempts });
                }
                // None of our transactions can be mined any more: the same call under a fresh nonce
                // is safe (the module's own nonce prevents a double execution).
                Watch::NonceTaken => {
                    self.adopt_chain_nonce(Some(nonce), observer).await?;
                }
            }
        }
    }

    /// Continues a send from a signed raw transaction stored before a crash: broadcasts it again if
    /// needed, then replaces, confirms and handles reorgs as [`Sender::send`] does.
    pub async fn resume(&self, raw: &[u8], observer: &mut impl SendObserver) -> Result<Sent> {
        self.resume_capped(raw, None, observer).await
    }

    /// [`Sender::resume`] with a fee cap lower than the sender's for the replacements (a keeper
    /// job's ceiling).
    pub async fn resume_capped(
        &self,
        raw: &[u8],
        max_fee_per_gas: Option<u128>,
        observer: &mut impl SendObserver,
    ) -> Result<Sent> {
        let tx =
            TxEnvelope::decode_2718(&mut &raw[..]).map_err(|e| SenderError::InvalidRaw(e.to_string()))?;
        let signed =
            tx.as_eip1559().ok_or_else(|| SenderError::InvalidRaw("not an EIP-1559 transaction".into()))?;
        let from = signed
            .signature()
            .recover_address_from_prehash(&signed.signature_hash())
            .map_err(|e| SenderError::InvalidRaw(e.to_string()))?;
        if from != self.address() || signed.tx().chain_id != self.chain_id {
            return Err(SenderError::InvalidRaw(format!(
                "signed by {from} for chain {}, not by keeper {} for chain {}",
                signed.tx().chain_id,
                self.address(),
                self.chain_id
            )));
        }
        let nonce = tx.nonce();
        self.broadcast_tolerant(&tx).await?;
        let broadcast_at = self.block_number().await?;
        let cap = self.cap_for(&TxRequest { max_fee_per_gas, ..TxRequest::default() });
        let mut attempts = Attempts { txs: vec![tx], broadcast_at, cap, first_receipt: None };
        {
            let mut nonces = self.nonces.lock().expect("nonce lock");
            if nonces.next.is_none_or(|n| n <= nonce) {
                nonces.next = Some(nonce + 1);
            }
        }
        match self.watch(&mut attempts, observer).await? {
            Watch::Confirmed(receipt) => Ok(Sent { receipt: *receipt, nonce, attempts: attempts.hashes() }),
            Watch::NonceTaken => Err(SenderError::InvalidRaw(format!(
                "nonce {nonce} was used by another transaction; send the call again"
            ))),
        }
    }

    /// Re-reads the pending nonce from the chain, adopts it and reports a change.
    pub async fn resync(&self, observer: &mut impl SendObserver) -> Result<u64> {
        let previous = self.next_nonce();
        self.adopt_chain_nonce(previous, observer).await
    }

    /// Adopts the chain's pending nonce, reporting it unless it equals `previous` (the nonce the sender
    /// would have used, or the one the node just refused).
    async fn adopt_chain_nonce(
        &self,
        previous: Option<u64>,
        observer: &mut impl SendObserver,
    ) -> Result<u64> {
        let pending = self.chain_nonce(true).await?;
        self.nonces.lock().expect("nonce lock").resync(pending);
        if previous != Some(pending) {
            observer
                .observe(&SendEvent::NonceResynced { previous, next: pending })
                .await
                .map_err(SenderError::Observer)?;
        }
        Ok(pending)
    }

    /// Reserves a nonce, signs, reports [`SendEvent::Signed`] and broadcasts; resyncs on "nonce too low".
    /// `fees` read just before are used for the first attempt.
    async fn sign_and_broadcast(
        &self,
        request: &TxRequest,
        gas_limit: u64,
        mut fees: Option<(u128, u128)>,
        observer: &mut impl SendObserver,
    ) -> Result<(TxEnvelope, Attempts)> {
        loop {
            let nonce = self.reserve().await?;
            let read = async {
                match fees.take() {
                    Some(fees) => Ok(fees),
                    None => {
                        self.fees(self.cap_for(request)).instrument(tracing::debug_span!("send.fees")).await
                    }
                }
            };
            let (max_fee, tip) = match read.await {
                Ok(fees) => fees,
                Err(e) => {
                    self.nonces.lock().expect("nonce lock").unused(nonce);
                    return Err(e);
                }
            };
            let unsigned = TxEip1559 {
                chain_id: self.chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: tip,
                to: TxKind::Call(request.to),
                value: request.value,
                input: request.data.clone(),
                access_list: Default::default(),
            };
            let tx = match self.sign(unsigned).instrument(tracing::debug_span!("send.sign")).await {
                Ok(tx) => tx,
                Err(e) => {
                    self.nonces.lock().expect("nonce lock").unused(nonce);
                    return Err(e);
                }
            };
            let announced =
                self.announce(&tx, None, observer).instrument(tracing::debug_span!("send.journal"));
            if let Err(e) = announced.await {
                self.nonces.lock().expect("nonce lock").unused(nonce);
                return Err(e);
            }
            let raw = tx.encoded_2718();
            let broadcast = self.provider.send_raw_transaction(&raw);
            match broadcast.instrument(tracing::debug_span!("send.broadcast")).await {
                Ok(_) => {}
                Err(e) if refusal(&e) == Refusal::NonceTooLow => {
                    self.adopt_chain_nonce(Some(nonce), observer).await?;
                    continue;
                }
                Err(e) if refusal(&e) == Refusal::AlreadyKnown => {}
                Err(e) => {
                    self.nonces.lock().expect("nonce lock").unused(nonce);
                    return Err(SenderError::Rpc { call: "eth_sendRawTransaction", source: e });
                }
            }
            // The broadcast is reported while the head is read and the receipt first looked for
            // (on a chain that mines at once it is already there).
            let broadcast = SendEvent::Broadcast { tx_hash: *tx.tx_hash() };
            let receipt = async {
                self.provider
                    .get_transaction_receipt(*tx.tx_hash())
                    .await
                    .map_err(rpc("eth_getTransactionReceipt"))
            };
            let (observed, broadcast_at, receipt) =
                tokio::join!(observer.observe(&broadcast), self.block_number(), receipt);
            observed.map_err(SenderError::Observer)?;
            let broadcast_at = broadcast_at?;
            let attempts = Attempts {
                txs: vec![tx.clone()],
                broadcast_at,
                cap: self.cap_for(request),
                first_receipt: receipt?,
            };
            return Ok((tx, attempts));
        }
    }

    /// Waits for one of the attempts to be confirmed, bumping when stuck and resending after a reorg.
    /// Right after the first broadcast the receipt is looked for [`QUICK_LOOKS`] times more before
    /// anything else (the nonce, a bump) is checked or the observer is flushed.
    async fn watch(&self, attempts: &mut Attempts, observer: &mut impl SendObserver) -> Result<Watch> {
        let nonce = attempts.latest().nonce();
        // The receipt seen last time, to notice when it disappears.
        let mut seen: Option<(TxHash, u64, alloy::primitives::B256)> = None;
        let mut unknown_polls = 0;
        let mut polls: u32 = 0;
        let mut quick_looks = 0;
        let mut ever_seen = false;
        loop {
            let receipt = match attempts.first_receipt.take() {
                Some(receipt) => Some(receipt),
                None => self.find_receipt(attempts).await?,
            };
            // Right after the first broadcast a node that mines at once (anvil) may not have the
            // receipt yet: look again within a millisecond, checking nothing else and holding
            // nothing up. Not after a receipt was seen (a reorg is handled as before).
            if receipt.is_none() && !ever_seen && quick_looks < QUICK_LOOKS {
                quick_looks += 1;
                tokio::time::sleep(QUICK_LOOK_AFTER).await;
                continue;
            }
            match receipt {
                Some(receipt) => {
                    let block_number = receipt.block_number.unwrap_or_default();
                    let block_hash = receipt.block_hash.unwrap_or_default();
                    let here = (receipt.transaction_hash, block_number, block_hash);
                    // The inclusion is reported while the chain is asked whether it is settled.
                    let included = SendEvent::Included { tx_hash: here.0, block_number, block_hash };
                    let report =
                        async { if seen != Some(here) { observer.observe(&included).await } else { Ok(()) } };
                    let (reported, settled) = tokio::join!(report, self.settled(block_number, block_hash));
                    reported.map_err(SenderError::Observer)?;
                    seen = Some(here);
                    ever_seen = true;
                    if settled? {
                        observer
                            .observe(&SendEvent::Confirmed {
                                tx_hash: here.0,
                                block_number,
                                success: receipt.status(),
                            })
                            .await
                            .map_err(SenderError::Observer)?;
                        return Ok(Watch::Confirmed(Box::new(receipt)));
                    }
                }
                None => {
                    if let Some((tx_hash, block_number, _)) = seen.take() {
                        observer
                            .observe(&SendEvent::Reorged { tx_hash, block_number })
                            .await
                            .map_err(SenderError::Observer)?;
                        self.broadcast_tolerant(attempts.latest()).await?;
                        attempts.broadcast_at = self.block_number().await?;
                    } else if self.chain_nonce(false).await? > nonce {
                        // The nonce is used but no receipt of ours: either the node has not indexed
                        // it yet, or another transaction took the nonce. Only when the node knows
                        // none of our transactions, twice in a row, is it taken.
                        if self.knows_any(attempts).await? {
                            unknown_polls = 0;
                        } else {
                            unknown_polls += 1;
                            if unknown_polls >= 2 {
                                return Ok(Watch::NonceTaken);
                            }
                        }
                    } else {
                        self.maybe_bump(attempts, observer).await?;
                    }
                }
            }
            // Before waiting: whatever the observer held back is written now.
            observer.flush().await.map_err(SenderError::Observer)?;
            // Look again soon at first (anvil and fast chains mine within milliseconds), then back off.
            polls += 1;
            let backoff = Duration::from_millis(1 << polls.min(16));
            tokio::time::sleep(backoff.min(self.config.poll_interval)).await;
        }
    }

    /// Replaces the newest attempt with bumped fees once it has waited `bump_after_blocks`.
    async fn maybe_bump(&self, attempts: &mut Attempts, observer: &mut impl SendObserver) -> Result<()> {
        let head = self.block_number().await?;
        if head < attempts.broadcast_at + self.config.bump_after_blocks {
            return Ok(());
        }
        let previous = attempts.latest();
        let Some(old) = previous.as_eip1559().map(|s| s.tx().clone()) else {
            return Ok(());
        };
        let (market_fee, market_tip) = self.fees(attempts.cap).await?;
        let max_fee = bumped(old.max_fee_per_gas).max(market_fee);
        let tip = bumped(old.max_priority_fee_per_gas).max(market_tip);
        let cap = attempts.cap;
        if max_fee > cap || tip > cap {
            observer
                .observe(&SendEvent::FeeCapReached { tx_hash: *previous.tx_hash() })
                .await
                .map_err(SenderError::Observer)?;
            attempts.broadcast_at = head;
            return Ok(());
        }
        let replaces = *previous.tx_hash();
        let replacement =
            self.sign(TxEip1559 { max_fee_per_gas: max_fee, max_priority_fee_per_gas: tip, ..old }).await?;
        self.announce(&replacement, Some(replaces), observer).await?;
        match self.provider.send_raw_transaction(&replacement.encoded_2718()).await {
            Ok(_) => {}
            Err(e) if matches!(refusal(&e), Refusal::AlreadyKnown | Refusal::NonceTooLow) => {}
            Err(e) => return Err(SenderError::Rpc { call: "eth_sendRawTransaction", source: e }),
        }
        observer
            .observe(&SendEvent::Broadcast { tx_hash: *replacement.tx_hash() })
            .await
            .map_err(SenderError::Observer)?;
        attempts.txs.push(replacement);
        attempts.broadcast_at = head;
        Ok(())
    }

    /// Sends zero-value self-transfers at nonces that were reserved but never broadcast.
    async fn fill_gaps(&self, observer: &mut impl SendObserver) -> Result<()> {
        let gaps: Vec<u64> =
            std::mem::take(&mut self.nonces.lock().expect("nonce lock").gaps).into_iter().collect();
        if gaps.is_empty() {
            return Ok(());
        }
        let mined = self.chain_nonce(true).await?;
        for nonce in gaps.into_iter().filter(|&n| n >= mined) {
            let (max_fee, tip) = self.fees(self.config.max_fee_per_gas).await?;
            let filler = self
                .sign(TxEip1559 {
                    chain_id: self.chain_id,
                    nonce,
                    gas_limit: 21_000,
                    max_fee_per_gas: max_fee,
                    max_priority_fee_per_gas: tip,
                    to: TxKind::Call(self.address()),
                    value: U256::ZERO,
                    input: Bytes::new(),
                    access_list: Default::default(),
                })
                .await?;
            self.announce(&filler, None, observer).await?;
            self.broadcast_tolerant(&filler).await?;
        }
        Ok(())
    }

    async fn reserve(&self) -> Result<u64> {
        if let Some(n) = self.nonces.lock().expect("nonce lock").reserve() {
            return Ok(n);
        }
        let pending = self.chain_nonce(true).await?;
        let mut nonces = self.nonces.lock().expect("nonce lock");
        if nonces.next.is_none() {
            nonces.resync(pending);
        }
        Ok(nonces.reserve().expect("nonce synced"))
    }

    async fn sign(&self, mut tx: TxEip1559) -> Result<TxEnvelope> {
        let signature = self.signer.sign_transaction(&mut tx).await?;
        Ok(TxEnvelope::from(tx.into_signed(signature)))
    }

    async fn announce(
        &self,
        tx: &TxEnvelope,
        replaces: Option<TxHash>,
        observer: &mut impl SendObserver,
    ) -> Result<()> {
        let event = SendEvent::Signed {
            nonce: tx.nonce(),
            tx_hash: *tx.tx_hash(),
            raw: tx.encoded_2718().into(),
            max_fee_per_gas: tx.max_fee_per_gas(),
            max_priority_fee_per_gas: tx.max_priority_fee_per_gas().unwrap_or_default(),
            replaces,
        };
        observer.observe(&event).await.map_err(SenderError::Observer)
    }

    /// Broadcasts, treating "already known" and "nonce too low" (mined meanwhile) as success.
    async fn broadcast_tolerant(&self, tx: &TxEnvelope) -> Result<()> {
        match self.provider.send_raw_transaction(&tx.encoded_2718()).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(refusal(&e), Refusal::AlreadyKnown | Refusal::NonceTooLow) => Ok(()),
            Err(e) => Err(SenderError::Rpc { call: "eth_sendRawTransaction", source: e }),
        }
    }

    /// The receipt of whichever attempt was mined, newest first.
    async fn find_receipt(&self, attempts: &Attempts) -> Result<Option<TransactionReceipt>> {
        for tx in attempts.txs.iter().rev() {
            let receipt = self
                .provider
                .get_transaction_receipt(*tx.tx_hash())
                .await
                .map_err(rpc("eth_getTransactionReceipt"))?;
            if receipt.is_some() {
                return Ok(receipt);
            }
        }
        Ok(None)
    }

    /// Whether the node knows (pool or chain) any of the attempts.
    async fn knows_any(&self, attempts: &Attempts) -> Result<bool> {
        for tx in &attempts.txs {
            let known = self
                .provider
                .get_transaction_by_hash(*tx.tx_hash())
                .await
                .map_err(rpc("eth_getTransactionByHash"))?;
            if known.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a receipt in block `number` with `hash` is buried under the configured
    /// confirmations in the canonical chain. At one confirmation its own block suffices: the head
    /// is not read.
    async fn settled(&self, number: u64, hash: alloy::primitives::B256) -> Result<bool> {
        let buried = self.config.confirmations == 1
            || self.block_number().await? + 1 >= number + self.config.confirmations;
        Ok(buried && self.is_canonical(number, hash).await?)
    }

    async fn is_canonical(&self, number: u64, hash: alloy::primitives::B256) -> Result<bool> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(rpc("eth_getBlockByNumber"))?;
        Ok(block.is_some_and(|b| b.header.hash == hash))
    }

    async fn block_number(&self) -> Result<u64> {
        self.provider.get_block_number().await.map_err(rpc("eth_blockNumber"))
    }

    async fn chain_nonce(&self, pending: bool) -> Result<u64> {
        let call = self.provider.get_transaction_count(self.address());
        let call = if pending { call.pending() } else { call.latest() };
        call.await.map_err(rpc("eth_getTransactionCount"))
    }

    async fn estimate_gas(&self, request: &TxRequest) -> Result<u64> {
        self.estimate_gas_with(request, None, 0).await
    }

    /// The gas limit [`Sender::send`] would give `request` (the node's estimate plus the
    /// configured margin), estimated with `overrides` applied to the state and `extra` gas added
    /// to the estimate before the margin. A caller uses it to estimate a call whose exact
    /// calldata is not known yet, with state that makes a stand-in part (a signature) pass the
    /// same checks, `extra` bounding what the stand-in's calldata can cost less than the real one's.
    pub async fn estimate_gas_with(
        &self,
        request: &TxRequest,
        overrides: Option<StateOverride>,
        extra: u64,
    ) -> Result<u64> {
        let tx = self.call_of(request);
        // Only a revert condemns the call; a transport error (endpoint down, timeout) or another
        // refusal (rate limit, keeper out of funds) is retryable.
        let gas = self.provider.estimate_gas(tx).overrides_opt(overrides).await.map_err(|source| {
            if crate::error::is_revert(&source) {
                SenderError::WouldRevert { to: request.to, source }
            } else {
                SenderError::Rpc { call: "eth_estimateGas", source }
            }
        })?;
        let gas = gas.saturating_add(extra);
        Ok(gas.saturating_add(gas.saturating_mul(self.config.gas_margin_percent) / 100))
    }

    /// Whether `request` (from the keeper, under `overrides`) succeeds with exactly `gas` as its
    /// gas limit at the latest block: one execution, where an estimate searches for the least
    /// gas that succeeds. `false` when it fails (out of gas, a revert) or the endpoint cannot
    /// tell (an estimate then reports why).
    pub async fn succeeds_with_gas(
        &self,
        request: &TxRequest,
        overrides: Option<StateOverride>,
        gas: u64,
    ) -> bool {
        let tx = self.call_of(request).with_gas_limit(gas);
        self.provider.call(tx).overrides_opt(overrides).await.is_ok()
    }

    /// `request` as a call from the keeper, for estimating or checking it.
    fn call_of(&self, request: &TxRequest) -> TransactionRequest {
        TransactionRequest::default()
            .with_from(self.address())
            .with_to(request.to)
            .with_value(request.value)
            .with_input(request.data.clone())
    }

    /// `(maxFeePerGas, maxPriorityFeePerGas)`: twice the latest base fee plus the tip, within the cap.
    /// The fee cap of `request`: its own when lower than the sender's.
    fn cap_for(&self, request: &TxRequest) -> u128 {
        request.max_fee_per_gas.map_or(self.config.max_fee_per_gas, |c| c.min(self.config.max_fee_per_gas))
    }

    async fn fees(&self, cap: u128) -> Result<(u128, u128)> {
        // The tip and the latest block are asked for together.
        let (tip, block) = tokio::try_join!(
            async {
                match self.config.priority_fee_per_gas {
                    Some(tip) => Ok(tip),
                    None => self
                        .provider
                        .get_max_priority_fee_per_gas()
                        .await
                        .map_err(rpc("eth_maxPriorityFeePerGas")),
                }
            },
            async {
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Latest)
                    .await
                    .map_err(rpc("eth_getBlockByNumber"))
            }
        )?;
        let base = block.and_then(|b| b.header.base_fee_per_gas).unwrap_or_default() as u128;
        let max_fee = (2 * base + tip).min(cap);
        Ok((max_fee, tip.min(max_fee)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_is_at_least_ten_percent_and_rounds_up() {
        assert_eq!(bumped(100), 110);
        assert_eq!(bumped(101), 112);
        assert_eq!(bumped(1), 2);
        assert!(bumped(3_000_000_001) * 100 >= 3_000_000_001 * 110);
    }

    #[test]
    fn unused_nonce_rolls_back_or_becomes_a_gap() {
        let mut n = Nonces::default();
        assert_eq!(n.reserve(), None, "no nonce before the first sync");
        n.resync(5);
        assert_eq!(n.reserve(), Some(5));
        assert_eq!(n.reserve(), Some(6));
        n.unused(6);
        assert_eq!(n.next, Some(6), "the last nonce is simply handed out again");
        assert_eq!(n.reserve(), Some(6));
        assert_eq!(n.reserve(), Some(7));
        n.unused(6);
        assert_eq!(n.gaps.iter().copied().collect::<Vec<_>>(), vec![6]);
        assert_eq!(n.resync(9), Some(8));
        assert!(n.gaps.is_empty(), "a resync adopts the chain's view");
    }
}
