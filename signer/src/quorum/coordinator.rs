//! The coordinator: signs an operation with t of n nodes, and drives DKG and refresh.
//!
//! Signing is one round trip per node: commitments are fetched ahead of time in batches
//! ([`Coordinator::preprocess`]), so a signature needs only `POST /v1/sign` to t nodes in
//! parallel. The shares are aggregated and the signature verified under the group key; if it does
//! not verify, each share is checked with `verify_signature_share` to name the culprits. A node
//! that is down, slow (timeout), refuses, or sends a bad share is excluded and the signature is
//! retried with fresh commitments over the remaining nodes. Concurrent `sign` calls share no lock held across I/O.
//!
//! Commitments are kept topped up per node in the background (a node's pool falling under half a
//! refill batch starts a fetch that no signature waits for, sent just behind a sign request to that
//! node rather than in front of the next), and an idle connection to each node
//! is kept warm by a health request, so a signature never pays a fetch or a TCP handshake.
//!
//! Signers are chosen by a moving estimate of each node's round trip (the t fastest healthy
//! nodes), and while a spare node remains each sign request has a deadline derived from its node's
//! estimate: a node that stalls costs one more round trip to the next fastest, not the configured
//! timeout.
//! A node that failed is marked down and chosen only when too few others are left, until it
//! answers again: the keeper probes it in the background (a commitments fetch), so a node that
//! stays down costs one signature one failed attempt, not one every few seconds.
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use frost_secp256k1::keys::PublicKeyPackage;
use frost_secp256k1::round1::SigningCommitments;
use frost_secp256k1::round2::SignatureShare;
use frost_secp256k1::{CheaterDetection, Identifier};
use treasury_chain::operation::{Operation, TIER_QUORUM, TIER_ROOT, operation_digest};

use super::client::NodeClient;
use super::dkg::{identifier_hex, parse_identifier};
use super::error::{NodeFault, QuorumError, RefusalCode};
use super::identity::{IdentityKey, IdentityPublic};
use super::quorum_file::{QuorumFile, QuorumNode, RefreshRecord};
use super::signature::{FrostSignature, GroupKey};
use super::store::{COORDINATOR_PASSPHRASE_ENV, Passphrase, open_coordinator_key};
use super::wire::*;

/// Weight of the newest round trip in a node's moving estimate.
const RTT_WEIGHT: f64 = 0.2;

/// Round trips shorter than this rank equal when choosing signers.
const NEAR: Duration = Duration::from_millis(5);

/// A sign request may take this many times a node's estimated round trip (plus [`DEADLINE_SLACK`])
/// before the node is dropped from the signature and the next fastest asked instead.
const DEADLINE_FACTOR: u32 = 4;

/// Added to every per-node deadline: the node's own work (a signature share and an `fdatasync`,
/// whose tail on a busy disk reaches tens of milliseconds) must not get a healthy node dropped.
const DEADLINE_SLACK: Duration = Duration::from_millis(250);

/// A connection to a node idle this long gets a health request (nodes close connections idle for
/// 10 s; reopening one would cost a signature a TCP handshake, one more round trip).
const WARM_AFTER: Duration = Duration::from_secs(4);

/// A pool left low by a signature is topped up this long after its sign request was sent, so the
/// fetch reaches the node behind that request (the node makes the batch while the signature's
/// other answers are still on their way), not in front of the next signature's request: a node
/// makes a batch under its nonce lock, and a sign request arriving meanwhile waits for it.
const TOP_UP_BEHIND: Duration = Duration::from_millis(5);

/// How often the keeper looks at every node's connection and commitment pool.
const KEEPER_TICK: Duration = Duration::from_secs(1);

/// Rounds in which the nodes a signature lost to a transient fault (a reset connection, a
/// timeout) are asked again when too few others remain, before the signature fails.
const READMIT_ROUNDS: u32 = 2;

struct Slot {
    node: QuorumNode,
    id: Identifier,
    key: IdentityPublic,
    pool: Mutex<VecDeque<(String, SigningCommitments)>>,
    /// The node failed to answer and has not answered since: chosen only when too few others are
    /// left, until the keeper's probe (or any request) gets an answer again.
    down: AtomicBool,
    refill: tokio::sync::Mutex<()>,
    /// Moving estimate of a sign round trip to this node (none before the first).
    rtt: Mutex<Option<Duration>>,
    /// A background fetch of commitments is running.
    topping_up: AtomicBool,
    /// A keep-warm health request, or the probe of a node marked down, is running.
    warming: AtomicBool,
    /// When a request to this node last completed.
    last_used: Mutex<Instant>,
}

impl Slot {
    fn healthy(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }
    fn mark_down(&self) {
        self.down.store(true, Ordering::Release);
    }
    fn mark_up(&self) {
        self.down.store(false, Ordering::Release);
    }
    /// The estimated round trip as a rank: nodes under [`NEAR`] rank equal (on a LAN the
    /// difference is noise, and the rotation spreads the load), farther ones by 25 % steps. An
    /// unmeasured node ranks first, so it gets measured.
    fn rank(&self) -> u32 {
        let rtt = self.rtt.lock().expect("rtt lock").unwrap_or(Duration::ZERO);
        if rtt < NEAR {
            return 0;
        }
        1 + ((rtt.as_secs_f64() / NEAR.as_secs_f64()).ln() / 1.25f64.ln()) as u32
    }
    fn pooled(&self) -> usize {
        self.pool.lock().expect("pool lock").len()
    }
    /// The pool holds under half a refill batch: time to top it up.
    fn pool_low(&self, opts: CoordinatorOptions) -> bool {
        self.pooled() < (opts.refill / 2).max(1) as usize
    }
    fn used_now(&self) {
        *self.last_used.lock().expect("last-used lock") = Instant::now();
    }
    fn idle_for(&self) -> Duration {
        self.last_used.lock().expect("last-used lock").elapsed()
    }
    fn observe(&self, took: Duration) {
        let mut rtt = self.rtt.lock().expect("rtt lock");
        *rtt = Some(match *rtt {
            Some(old) => old.mul_f64(1.0 - RTT_WEIGHT) + took.mul_f64(RTT_WEIGHT),
            None => took,
        });
    }
    /// How long a sign request to this node may take: a multiple of its estimate, capped by the
    /// configured timeout (which also applies while it is unmeasured).
    fn deadline(&self, cap: Duration) -> Duration {
        match *self.rtt.lock().expect("rtt lock") {
            Some(rtt) => (rtt * DEADLINE_FACTOR + DEADLINE_SLACK).min(cap),
            None => cap,
        }
    }
}

/// Coordinator settings.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorOptions {
    /// Per-request timeout (a slower node is treated as down).
    pub timeout: Duration,
    /// Commitments fetched per node at a time: in the background when its pool falls under half
    /// of this, while signing only when it is empty.
    pub refill: u32,
    /// Choose signers by measured round trip and hold each to a deadline from its own estimate
    /// (the default); off, signers rotate and only `timeout` bounds a request.
    pub by_latency: bool,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(5), refill: 64, by_latency: true }
    }
}

/// Signs operations with the quorum.
pub struct Coordinator {
    client: NodeClient,
    slots: Arc<[Slot]>,
    pkp: PublicKeyPackage,
    group_key: GroupKey,
    threshold: usize,
    opts: CoordinatorOptions,
    next: AtomicUsize,
    /// The background task keeping connections warm and pools topped up.
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            k.abort();
        }
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("group_key", &self.group_key.compressed)
            .field("threshold", &self.threshold)
            .field("nodes", &self.slots.len())
            .finish()
    }
}

impl Coordinator {
    /// Loads a quorum file; the coordinator key's passphrase comes from `TREASURY_COORDINATOR_PASSPHRASE`.
    pub fn from_quorum_file(path: &Path) -> Result<Self, QuorumError> {
        let quorum = QuorumFile::load(path)?;
        let pass = Passphrase::from_env(COORDINATOR_PASSPHRASE_ENV)?;
        let key = open_coordinator_key(&quorum.coordinator_key_path(path), &pass)?;
        Self::new(quorum, key, CoordinatorOptions::default())
    }

    /// A coordinator for `quorum` signing requests with `key`.
    pub fn new(quorum: QuorumFile, key: IdentityKey, opts: CoordinatorOptions) -> Result<Self, QuorumError> {
        let pkp = quorum.public_key_package()?;
        let group_key = GroupKey::from_verifying_key(pkp.verifying_key())?;
        if group_key.compressed != quorum.group_key {
            return Err(QuorumError::Config("group key does not match the public key package".into()));
        }
        let mut slots = Vec::new();
        for n in &quorum.nodes {
            let key = IdentityPublic::from_hex(&n.identity_key)?;
            if key.fingerprint() != n.fingerprint {
                return Err(QuorumError::Config(format!(
                    "{}: identity key does not match its pinned fingerprint",
                    n.url
                )));
            }
            let id = parse_identifier(&n.identifier).map_err(|r| QuorumError::Config(r.reason))?;
            if !pkp.verifying_shares().contains_key(&id) {
                return Err(QuorumError::Config(format!(
                    "{}: identifier not in the public key package",
                    n.url
                )));
            }
            slots.push(Slot {
                node: n.clone(),
                id,
                key,
                pool: Mutex::new(VecDeque::new()),
                down: AtomicBool::new(false),
                refill: tokio::sync::Mutex::new(()),
                rtt: Mutex::new(None),
                topping_up: AtomicBool::new(false),
                warming: AtomicBool::new(false),
                last_used: Mutex::new(Instant::now()),
            });
        }
        let threshold = usize::from(quorum.threshold);
        if slots.len() < threshold {
            return Err(QuorumError::Config("fewer nodes than the threshold".into()));
        }
        let coordinator = Self {
            client: NodeClient::new(key),
            slots: slots.into(),
            pkp,
            group_key,
            threshold,
            opts,
            next: AtomicUsize::new(0),
            keeper: Mutex::new(None),
        };
        coordinator.start_keeper();
        Ok(coordinator)
    }

    /// Starts the keeper (once, and only inside a tokio runtime; otherwise at the first
    /// `preprocess` or `sign`).
    fn start_keeper(&self) {
        let mut keeper = self.keeper.lock().expect("keeper lock");
        if keeper.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (slots, client, opts) = (Arc::downgrade(&self.slots), self.client.clone(), self.opts);
        *keeper = Some(runtime.spawn(keep(slots, client, opts)));
    }

    /// The group key.
    pub fn group_key(&self) -> &GroupKey {
        &self.group_key
    }

    /// Every configured node's URL and whether it answers now, authenticated under its pinned
    /// identity key (the URL of a node that answers with another identity counts as down).
    pub async fn probe(&self) -> Vec<(String, bool)> {
        let probes = self.slots.iter().map(|slot| async move {
            let answer = self.client.identity(&slot.node.url, self.opts.timeout).await;
            let up = answer.is_ok_and(|info| info.fingerprint == slot.node.fingerprint);
            (slot.node.url.clone(), up)
        });
        futures::future::join_all(probes).await
    }

    /// Fetches `per_node` commitments from every reachable node ahead of signing.
    pub async fn preprocess(&self, per_node: u32) -> Vec<(String, NodeFault)> {
        self.start_keeper();
        let timeout = self.opts.timeout;
        let futs =
            self.slots.iter().map(|s| async move { (s, fetch(&self.client, s, per_node, timeout).await) });
        let mut faults = Vec::new();
        for (s, r) in futures::future::join_all(futs).await {
            if let Err(f) = r {
                s.mark_down();
                faults.push((s.node.url.clone(), f));
            }
        }
        faults
    }

    /// A commitment of node `i` from its pool (topped up in the background once its sign request
    /// is sent, see [`TOP_UP_BEHIND`]); only an empty pool is fetched into while the signature
    /// waits (or waits for the fetch running).
    async fn take_commitment(&self, i: usize) -> Result<(String, SigningCommitments), NodeFault> {
        let s = &self.slots[i];
        let popped = s.pool.lock().expect("pool lock").pop_front();
        if let Some(c) = popped {
            return Ok(c);
        }
        let _guard = s.refill.lock().await;
        if let Some(c) = s.pool.lock().expect("pool lock").pop_front() {
            return Ok(c);
        }
        fetch(&self.client, s, self.opts.refill, self.opts.timeout).await?;
        s.pool
            .lock()
            .expect("pool lock")
            .pop_front()
            .ok_or_else(|| NodeFault::Malformed("no commitments".into()))
    }

    /// Signs `op` for `module` on `chain_id` and returns what `TreasuryModule.exec` takes.
    ///
    /// `root_signature` (65 bytes) makes it a tier-2 request: nodes then require it to recover
    /// their configured root address over the same EIP-712 digest.
    ///
    /// # Security
    /// The nodes rebuild the EIP-712 digest from `op` themselves; the coordinator only relays. The
    /// aggregate MUST verify under the group key before it is returned; when it does not, every
    /// share is checked with `verify_signature_share` and each culprit is excluded and named
    /// (RFC 9591 §5.3 cheater detection), so an invalid share is never part of a returned signature.
    pub async fn sign(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        root_signature: Option<&[u8]>,
    ) -> Result<FrostSignature, QuorumError> {
        self.sign_detailed(op, chain_id, module, root_signature).await.map(|o| o.signature)
    }

    /// Like [`Coordinator::sign`], also naming the nodes excluded on the way and why.
    pub async fn sign_detailed(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        root_signature: Option<&[u8]>,
    ) -> Result<SignOutcome, QuorumError> {
        self.sign_decided(op, chain_id, module, root_signature, None).await
    }

    /// Like [`Coordinator::sign_detailed`], sending `decision` (the firings and intents that
    /// produced `op`) for nodes that replay it before signing.
    pub async fn sign_decided(
        &self,
        op: &Operation,
        chain_id: u64,
        module: Address,
        root_signature: Option<&[u8]>,
        decision: Option<&treasury_policies::replay::Decision>,
    ) -> Result<SignOutcome, QuorumError> {
        let tier = if root_signature.is_some_and(|s| !s.is_empty()) { TIER_ROOT } else { TIER_QUORUM };
        let digest = operation_digest(op, tier, chain_id, module);
        self.start_keeper();
        let mut excluded: HashSet<usize> = HashSet::new();
        // Excluded for a fault that may pass (a reset connection, a timeout): asked again, in a
        // later round, rather than fail the signature.
        let mut transient: HashSet<usize> = HashSet::new();
        let mut readmitted = 0;
        let mut faults: Vec<(String, NodeFault)> = Vec::new();
        let mut got = 0;
        let n = self.slots.len();
        loop {
            if n - excluded.len() < self.threshold
                && readmitted < READMIT_ROUNDS
                && n - excluded.len() + transient.len() >= self.threshold
            {
                readmitted += 1;
                for i in transient.drain() {
                    excluded.remove(&i);
                }
            }
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let mut order: Vec<usize> =
                (0..n).map(|i| (start + i) % n).filter(|i| !excluded.contains(i)).collect();
            // Healthy nodes first, nodes recently down last (they may be back); among them the
            // fastest by measured round trip, so a signature waits for the t-th fastest node (the
            // stable sort keeps the rotation among equals).
            let by_latency = self.opts.by_latency;
            order.sort_by_key(|i| {
                (!self.slots[*i].healthy(), if by_latency { self.slots[*i].rank() } else { 0 })
            });
            if order.len() < self.threshold {
                return Err(QuorumError::NotEnoughSigners { needed: self.threshold, got, faults });
            }
            // With no node to retry with, a slow answer is still better than none: the per-node
            // deadlines apply only while a spare node remains.
            let spare = self.opts.by_latency && order.len() > self.threshold;
            // pick t nodes that can give a commitment
            let mut chosen: Vec<(usize, String, SigningCommitments)> = Vec::new();
            let mut idx = 0;
            while chosen.len() < self.threshold && idx < order.len() {
                let want = self.threshold - chosen.len();
                let batch: Vec<usize> = order[idx..(idx + want).min(order.len())].to_vec();
                idx += batch.len();
                let res = futures::future::join_all(batch.iter().map(|i| self.take_commitment(*i))).await;
                for (i, r) in batch.into_iter().zip(res) {
                    match r {
                        Ok((cid, c)) => chosen.push((i, cid, c)),
                        Err(f) => {
                            // A node that cannot hand out commitments is skipped for a while.
                            self.slots[i].mark_down();
                            if f.is_unavailable() {
                                transient.insert(i);
                            }
                            excluded.insert(i);
                            faults.push((self.slots[i].node.url.clone(), f));
                        }
                    }
                }
            }
            if chosen.len() < self.threshold {
                // Every node left failed to hand out a commitment: next round, or fail.
                got = 0;
                continue;
            }
            let commitments: BTreeMap<Identifier, SigningCommitments> =
                chosen.iter().map(|(i, _, c)| (self.slots[*i].id, *c)).collect();
            let package = frost_secp256k1::SigningPackage::new(commitments, digest.as_slice());
            let pkg_hex = hex::encode(package.serialize().map_err(QuorumError::frost)?);
            let req = SignRequest {
                operation: op.clone(),
                chain_id,
                module,
                root_signature: root_signature.map(|b| b.to_vec().into()),
                signing_package: pkg_hex,
                decision: decision.cloned(),
            };
            // Each request runs as its own task: when one fails, this commitment set cannot
            // complete, so the next round starts at once while the others finish in the background
            // (their connections stay usable and their round trips still teach the estimates).
            let req = Arc::new(req);
            let mut pending: futures::stream::FuturesUnordered<_> = chosen
                .iter()
                .enumerate()
                .map(|(pos, (i, _, _))| {
                    let (slots, client, req, i) =
                        (Arc::clone(&self.slots), self.client.clone(), Arc::clone(&req), *i);
                    // Only a node that can be replaced is held to its own estimate.
                    let deadline =
                        if spare { slots[i].deadline(self.opts.timeout) } else { self.opts.timeout };
                    let task =
                        tokio::spawn(async move { ask_to_sign(&slots[i], &client, &req, deadline).await });
                    async move {
                        let answer = task.await.unwrap_or_else(|e| {
                            Err(NodeFault::Unreachable(format!("signing task ended: {e}")))
                        });
                        (pos, answer)
                    }
                })
                .collect();
            // Pools left low are topped up behind these requests, not in front of them.
            for (i, _, _) in &chosen {
                top_up(&self.slots, *i, &self.client, self.opts, TOP_UP_BEHIND);
            }
            let mut answers: Vec<Option<Result<SignatureShare, NodeFault>>> =
                chosen.iter().map(|_| None).collect();
            while let Some((pos, answer)) = futures::StreamExt::next(&mut pending).await {
                let failed = answer.is_err();
                answers[pos] = Some(answer);
                if failed {
                    break;
                }
            }
            // A node that failed is excluded from the next round; one still answering is not.
            let mut shares: BTreeMap<Identifier, (usize, SignatureShare)> = BTreeMap::new();
            for ((i, _, _), answer) in chosen.iter().zip(answers) {
                match answer {
                    None => {}
                    Some(Ok(share)) => {
                        shares.insert(self.slots[*i].id, (*i, share));
                    }
                    Some(Err(f)) => {
                        if f.is_unavailable() {
                            transient.insert(*i);
                        }
                        self.exclude(*i, f, &mut excluded, &mut faults)
                    }
                }
            }
            got = shares.len();
            if shares.len() == self.threshold {
                let plain: BTreeMap<Identifier, SignatureShare> =
                    shares.iter().map(|(id, (_, share))| (*id, *share)).collect();
                // Aggregates and verifies the signature under the group key; only when that fails
                // are the shares verified one by one, naming every culprit (RFC 9591 §5.3).
                match frost_secp256k1::aggregate_custom(
                    &package,
                    &plain,
                    &self.pkp,
                    CheaterDetection::AllCheaters,
                ) {
                    Ok(sig) => {
                        return Ok(SignOutcome {
                            signature: FrostSignature::from_frost(&sig)?,
                            signers: shares.values().map(|(i, _)| self.slots[*i].node.url.clone()).collect(),
                            excluded: faults,
                        });
                    }
                    Err(frost_core::Error::InvalidSignatureShare { culprits }) => {
                        for id in culprits {
                            if let Some((i, _)) = shares.get(&id) {
                                self.exclude(*i, NodeFault::BadShare, &mut excluded, &mut faults);
                                got -= 1;
                            }
                        }
                    }
                    Err(e) => return Err(QuorumError::frost(e)),
                }
            } else {
                // The attempt failed anyway: still name the nodes whose shares were invalid.
                for (id, (i, share)) in &shares {
                    let valid = self.pkp.verifying_shares().get(id).is_some_and(|vs| {
                        frost_core::verify_signature_share(*id, vs, share, &package, self.pkp.verifying_key())
                            .is_ok()
                    });
                    if !valid {
                        self.exclude(*i, NodeFault::BadShare, &mut excluded, &mut faults);
                        got -= 1;
                    }
                }
            }
        }
    }

    /// Excludes node `i` from this signature for `fault`; a node down or too slow is also skipped
    /// by the next signatures for a while.
    fn exclude(
        &self,
        i: usize,
        fault: NodeFault,
        excluded: &mut HashSet<usize>,
        faults: &mut Vec<(String, NodeFault)>,
    ) {
        let s = &self.slots[i];
        if fault.is_unavailable() {
            s.mark_down();
        }
        if let NodeFault::Refused(r) = &fault
            && matches!(r.code, RefusalCode::UnknownCommitment | RefusalCode::UsedCommitment)
        {
            // The node restarted (its nonces die with it): the next signature fetches fresh ones.
            s.pool.lock().expect("pool lock").clear();
        }
        tracing::warn!(node = %s.node.url, %fault, "node excluded from this signature");
        excluded.insert(i);
        faults.push((s.node.url.clone(), fault));
    }
}

/// Fetches `count` commitments from node `s` into its pool.
async fn fetch(client: &NodeClient, s: &Slot, count: u32, timeout: Duration) -> Result<(), NodeFault> {
    let mut left = count;
    while left > 0 {
        let batch = left.min(super::node::MAX_COMMITMENTS_PER_REQUEST);
        let sent = Instant::now();
        let resp: CommitmentsResponse = client
            .post(&s.node.url, &s.key, "/v1/commitments", &CommitmentsRequest { count: batch }, timeout)
            .await?;
        s.used_now();
        s.mark_up();
        if resp.identifier != s.node.identifier {
            return Err(NodeFault::Malformed("commitments for another identifier".into()));
        }
        // A first estimate of the node's round trip, before it ever signs.
        if s.rtt.lock().expect("rtt lock").is_none() {
            s.observe(sent.elapsed());
        }
        let mut parsed = Vec::with_capacity(resp.commitments.len());
        for c in resp.commitments {
            let bytes = hex::decode(&c.commitments).map_err(|e| NodeFault::Malformed(e.to_string()))?;
            let sc =
                SigningCommitments::deserialize(&bytes).map_err(|e| NodeFault::Malformed(e.to_string()))?;
            parsed.push((c.id, sc));
        }
        s.pool.lock().expect("pool lock").extend(parsed);
        left -= batch;
    }
    Ok(())
}

/// One sign request to node `s`, its share parsed; the round trip moves the node's estimate.
async fn ask_to_sign(
    s: &Slot,
    client: &NodeClient,
    req: &SignRequest,
    deadline: Duration,
) -> Result<SignatureShare, NodeFault> {
    let sent = Instant::now();
    let busy_before = s.topping_up.load(Ordering::Acquire);
    let r: Result<SignResponse, NodeFault> =
        client.post(&s.node.url, &s.key, "/v1/sign", req, deadline).await;
    if !matches!(r, Err(NodeFault::Unreachable(_))) {
        s.used_now();
    }
    // An answer (a share or a refusal) shows the node is up again.
    if matches!(r, Ok(_) | Err(NodeFault::Refused(_))) {
        s.mark_up();
    }
    // A node making a batch of nonces for us answers late: that says nothing of its link, so such
    // a round trip does not move its estimate.
    let busy = busy_before || s.topping_up.load(Ordering::Acquire);
    tracing::debug!(node = %s.node.url, took_ms = sent.elapsed().as_secs_f64() * 1e3, topping_up = busy, ok = r.is_ok(), "sign round trip");
    match &r {
        Ok(_) if busy => {}
        Ok(_) => s.observe(sent.elapsed()),
        // Too slow for its own estimate: next time it is judged by a longer one.
        Err(NodeFault::TimedOut(_)) => s.observe(sent.elapsed()),
        Err(_) => {}
    }
    r.and_then(|a| parse_share(&a.share))
}

/// Starts a background fetch into node `i`'s pool, `after` from now, when it holds under half a
/// refill batch and no fetch is running (outside a tokio runtime, none: the next empty pool is
/// fetched into inline).
fn top_up(slots: &Arc<[Slot]>, i: usize, client: &NodeClient, opts: CoordinatorOptions, after: Duration) {
    let s = &slots[i];
    if !s.pool_low(opts) || s.topping_up.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        s.topping_up.store(false, Ordering::Release);
        return;
    };
    let (slots, client) = (Arc::clone(slots), client.clone());
    runtime.spawn(async move {
        let s = &slots[i];
        if !after.is_zero() {
            tokio::time::sleep(after).await;
        }
        {
            let _guard = s.refill.lock().await;
            if s.pool_low(opts)
                && let Err(fault) = fetch(&client, s, opts.refill, opts.timeout).await
            {
                tracing::debug!(node = %s.node.url, %fault, "topping up commitments failed");
                if fault.is_unavailable() {
                    s.mark_down();
                }
            }
        }
        s.topping_up.store(false, Ordering::Release);
    });
}

/// The keeper: every [`KEEPER_TICK`], each healthy node whose connection has been idle for
/// [`WARM_AFTER`] gets a health request on the pooled connection, each pool under half a refill
/// batch is topped up, and each node marked down is probed (see [`probe_down`]). Ends when the
/// coordinator is dropped.
async fn keep(slots: Weak<[Slot]>, client: NodeClient, opts: CoordinatorOptions) {
    // The first look one tick after start: a `preprocess` right after construction goes first.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEPER_TICK, KEEPER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(slots) = slots.upgrade() else { return };
        for i in 0..slots.len() {
            let s = &slots[i];
            if !s.healthy() {
                probe_down(&slots, i, &client, opts);
                continue;
            }
            top_up(&slots, i, &client, opts, Duration::ZERO);
            if s.idle_for() >= WARM_AFTER && !s.warming.swap(true, Ordering::AcqRel) {
                let (slots, client) = (Arc::clone(&slots), client.clone());
                tokio::spawn(async move {
                    let s = &slots[i];
                    match client.health(&s.node.url, opts.timeout).await {
                        Ok(()) => s.used_now(),
                        Err(fault) => {
                            tracing::debug!(node = %s.node.url, %fault, "keep-warm request failed");
                            s.mark_down();
                        }
                    }
                    s.warming.store(false, Ordering::Release);
                });
            }
        }
    }
}

/// Probes node `i`, marked down, in the background: a node is marked up again only when it
/// answers here (or answers any other request), never because time passed, so a node that stays
/// down costs a failed attempt only to the signature that found it down. The probe is a
/// commitments fetch (a whole batch when its pool is low, else one), so the node is back only once
/// it can make and store nonces, not merely answer a health request.
fn probe_down(slots: &Arc<[Slot]>, i: usize, client: &NodeClient, opts: CoordinatorOptions) {
    let s = &slots[i];
    if s.warming.swap(true, Ordering::AcqRel) {
        return;
    }
    let (slots, client) = (Arc::clone(slots), client.clone());
    tokio::spawn(async move {
        let s = &slots[i];
        let count = if s.pool_low(opts) { opts.refill } else { 1 };
        let answered = {
            let _guard = s.refill.lock().await;
            fetch(&client, s, count, opts.timeout).await.is_ok()
        };
        if answered {
            tracing::info!(node = %s.node.url, "node answers again: chosen for signatures again");
        }
        s.warming.store(false, Ordering::Release);
    });
}

fn parse_share(hex_share: &str) -> Result<SignatureShare, NodeFault> {
    let bytes = hex::decode(hex_share).map_err(|e| NodeFault::Malformed(e.to_string()))?;
    SignatureShare::deserialize(&bytes).map_err(|e| NodeFault::Malformed(e.to_string()))
}

/// A signature and the nodes excluded while obtaining it.
#[derive(Debug, Clone)]
pub struct SignOutcome {
    /// The verified signature.
    pub signature: FrostSignature,
    /// The nodes whose shares make it up (URLs).
    pub signers: Vec<String>,
    /// Nodes excluded (URL, why): down, slow, refused or culprits of bad shares.
    pub excluded: Vec<(String, NodeFault)>,
}

/// One node to run DKG with: its URL and the fingerprint its operator confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedNode {
    /// Base URL.
    pub url: String,
    /// Pinned fingerprint.
    pub fingerprint: String,
}

impl std::str::FromStr for PinnedNode {
    type Err = QuorumError;
    /// `URL#FINGERPRINT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (url, fp) = s.split_once('#').ok_or_else(|| {
            QuorumError::Config(format!("{s}: expected URL#FINGERPRINT (the node's pinned fingerprint)"))
        })?;
        if fp.len() != 32 || hex::decode(fp).is_err() {
            return Err(QuorumError::Config(format!("{s}: fingerprint must be 32 hex digits")));
        }
        Ok(Self { url: url.trim_end_matches('/').to_string(), fingerprint: fp.to_ascii_lowercase() })
    }
}

/// Result of a DKG or refresh.
#[derive(Debug, Clone)]
pub struct DkgOutcome {
    /// The quorum file content.
    pub quorum: QuorumFile,
    /// The group key.
    pub group_key: GroupKey,
    /// Runs needed (a group key with x ≥ n forces a re-run).
    pub attempts: u32,
}

fn node_err(url: &str, fault: NodeFault) -> QuorumError {
    QuorumError::Node { node: url.to_string(), fault }
}

fn random_session() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Runs DKG across `nodes` (each pinned by fingerprint), relaying packages; re-runs when the
/// group key is unusable on chain (x ≥ n). `coordinator_key` is recorded in the quorum file.
///
/// # Security
/// Node identities MUST match their pinned fingerprints before anything is sent; round-2 packages
/// are sealed between nodes and only relayed; the share is committed only after every node
/// confirmed the same transcript and group key (RFC 9591 appendix C DKG with signed rounds).
pub async fn run_dkg(
    key: IdentityKey,
    coordinator_key_file: &str,
    nodes: &[PinnedNode],
    threshold: u16,
    max_attempts: u32,
) -> Result<DkgOutcome, QuorumError> {
    let client = NodeClient::new(key);
    let timeout = Duration::from_secs(30);
    let mut roster = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let info = client.identity(&n.url, timeout).await.map_err(|f| node_err(&n.url, f))?;
        if info.fingerprint != n.fingerprint {
            return Err(QuorumError::Dkg(format!(
                "{} presents fingerprint {}, not the pinned {}",
                n.url, info.fingerprint, n.fingerprint
            )));
        }
        let id = Identifier::try_from((i + 1) as u16).map_err(QuorumError::frost)?;
        roster.push(RosterEntry { identifier: identifier_hex(&id), identity_key: info.identity_key });
    }
    for attempt in 1..=max_attempts.max(1) {
        let (session, finish) = run_rounds(&client, nodes, &roster, threshold, false, timeout).await?;
        let gk_bytes = hex::decode(&finish[0].group_key).map_err(|e| QuorumError::Corrupt(e.to_string()))?;
        let group_key = GroupKey::from_compressed(&gk_bytes)?;
        if !group_key.usable_onchain() {
            tracing::warn!(attempt, "group key x >= n: aborting and re-running DKG");
            abort(&client, nodes, &roster, &session, timeout).await;
            continue;
        }
        let attestations = commit(&client, nodes, &roster, &session, &finish, timeout).await?;
        let quorum = QuorumFile {
            threshold,
            coordinator_key: coordinator_key_file.to_string(),
            group_key: group_key.compressed.clone(),
            group_key_x: group_key.x,
            group_key_parity: group_key.parity,
            public_key_package: finish[0].public_key_package.clone(),
            nodes: nodes
                .iter()
                .zip(&roster)
                .zip(attestations)
                .map(|((n, r), attestation)| QuorumNode {
                    url: n.url.clone(),
                    identifier: r.identifier.clone(),
                    identity_key: r.identity_key.clone(),
                    fingerprint: n.fingerprint.clone(),
                    attestation,
                })
                .collect(),
            refresh: None,
        };
        return Ok(DkgOutcome { quorum, group_key, attempts: attempt });
    }
    Err(QuorumError::GroupKeyOutOfRange)
}

/// Refreshes every share of the quorum; the group key stays. Returns the updated quorum file,
/// which records the refresh's id.
///
/// When some nodes staged but did not activate their new share, fails with
/// [`QuorumError::ActivationIncomplete`], which carries the refreshed quorum file (to be saved:
/// the nodes that activated sign only under it) naming those nodes as pending; see
/// [`activate_refresh`]. A refresh is refused while an earlier one is still pending somewhere.
///
/// # Security
/// Same guarantees as [`run_dkg`]; every node checks the group key is unchanged before committing.
pub async fn run_refresh(key: IdentityKey, quorum: &QuorumFile) -> Result<DkgOutcome, QuorumError> {
    if let Some(r) = quorum.refresh.as_ref().filter(|r| !r.pending.is_empty()) {
        return Err(QuorumError::Dkg(format!(
            "refresh {} is not activated on {} yet: run `treasury dkg refresh --activate {}` first",
            r.id,
            r.pending.join(", "),
            r.id
        )));
    }
    let client = NodeClient::new(key);
    let timeout = Duration::from_secs(30);
    let nodes: Vec<PinnedNode> = quorum
        .nodes
        .iter()
        .map(|n| PinnedNode { url: n.url.clone(), fingerprint: n.fingerprint.clone() })
        .collect();
    let mut roster = Vec::new();
    for n in &quorum.nodes {
        let info = client.identity(&n.url, timeout).await.map_err(|f| node_err(&n.url, f))?;
        if info.fingerprint != n.fingerprint || info.identity_key != n.identity_key {
            return Err(QuorumError::Dkg(format!("{} does not present its pinned identity", n.url)));
        }
        roster.push(RosterEntry { identifier: n.identifier.clone(), identity_key: n.identity_key.clone() });
    }
    let (session, finish) = run_rounds(&client, &nodes, &roster, quorum.threshold, true, timeout).await?;
    if finish[0].group_key != quorum.group_key {
        abort(&client, &nodes, &roster, &session, timeout).await;
        return Err(QuorumError::Dkg("refresh produced a different group key".into()));
    }
    // Two phases: every node stages its new share (the old one keeps signing); only when all
    // staged are they activated. A node failing to stage makes every node drop its staged share.
    let attestations = match commit(&client, &nodes, &roster, &session, &finish, timeout).await {
        Ok(a) => a,
        Err(e) => {
            abort(&client, &nodes, &roster, &session, timeout).await;
            return Err(e);
        }
    };
    let failed = activate(&client, &nodes, &roster, &session, timeout).await;
    let group_key = GroupKey::from_compressed(
        &hex::decode(&quorum.group_key).map_err(|e| QuorumError::Corrupt(e.to_string()))?,
    )?;
    let mut q = quorum.clone();
    q.public_key_package = finish[0].public_key_package.clone();
    for (n, a) in q.nodes.iter_mut().zip(attestations) {
        n.attestation = a;
    }
    q.refresh = Some(RefreshRecord {
        id: session.clone(),
        pending: failed.iter().map(|(url, _)| url.clone()).collect(),
    });
    if !failed.is_empty() {
        return Err(QuorumError::ActivationIncomplete {
            refresh: session,
            nodes: failed,
            quorum: Box::new(q),
        });
    }
    Ok(DkgOutcome { quorum: q, group_key, attempts: 1 })
}

/// What [`activate_refresh`] did.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The quorum file with the activated nodes no longer pending.
    pub quorum: QuorumFile,
    /// URLs of the nodes activated now; empty when every node had already activated.
    pub activated: Vec<String>,
}

/// Re-runs phase 2 of refresh `refresh` on the nodes the quorum file names as pending (activation
/// is idempotent at the node, so a node that activated but whose answer was lost answers the
/// same). Fails with [`QuorumError::UnknownRefresh`] when `refresh` is not the file's last
/// refresh, and with [`QuorumError::ActivationIncomplete`] (carrying the updated file) naming the
/// nodes still not activated.
pub async fn activate_refresh(
    key: IdentityKey,
    quorum: &QuorumFile,
    refresh: &str,
) -> Result<Activation, QuorumError> {
    let record = match &quorum.refresh {
        Some(r) if r.id == refresh => r,
        other => {
            return Err(QuorumError::UnknownRefresh {
                id: refresh.to_string(),
                last: other.as_ref().map_or_else(|| "none".to_string(), |r| r.id.clone()),
            });
        }
    };
    let mut nodes = Vec::new();
    let mut roster = Vec::new();
    for url in &record.pending {
        let n = quorum.nodes.iter().find(|n| &n.url == url).ok_or_else(|| {
            QuorumError::Config(format!("refresh {refresh}: pending node {url} is not in the quorum file"))
        })?;
        nodes.push(PinnedNode { url: n.url.clone(), fingerprint: n.fingerprint.clone() });
        roster.push(RosterEntry { identifier: n.identifier.clone(), identity_key: n.identity_key.clone() });
    }
    let client = NodeClient::new(key);
    let failed = activate(&client, &nodes, &roster, refresh, Duration::from_secs(30)).await;
    let mut q = quorum.clone();
    q.refresh = Some(RefreshRecord {
        id: refresh.to_string(),
        pending: failed.iter().map(|(url, _)| url.clone()).collect(),
    });
    if !failed.is_empty() {
        return Err(QuorumError::ActivationIncomplete {
            refresh: refresh.to_string(),
            nodes: failed,
            quorum: Box::new(q),
        });
    }
    let activated = nodes.into_iter().map(|n| n.url).collect();
    Ok(Activation { quorum: q, activated })
}

async fn run_rounds(
    client: &NodeClient,
    nodes: &[PinnedNode],
    roster: &[RosterEntry],
    threshold: u16,
    refresh: bool,
    timeout: Duration,
) -> Result<(String, Vec<DkgFinishResponse>), QuorumError> {
    let session = random_session();
    let keys: Vec<IdentityPublic> =
        roster.iter().map(|r| IdentityPublic::from_hex(&r.identity_key)).collect::<Result<_, _>>()?;
    let r1req = DkgRound1Request { session: session.clone(), threshold, roster: roster.to_vec(), refresh };
    let r1 = futures::future::join_all(
        nodes
            .iter()
            .zip(&keys)
            .map(|(n, k)| client.post::<_, DkgRound1Response>(&n.url, k, "/v1/dkg/round1", &r1req, timeout)),
    )
    .await;
    let mut round1 = BTreeMap::new();
    for ((n, r), e) in nodes.iter().zip(r1).zip(roster) {
        round1.insert(e.identifier.clone(), r.map_err(|f| node_err(&n.url, f))?);
    }
    let r2req = DkgRound2Request { session: session.clone(), round1 };
    let r2 = futures::future::join_all(
        nodes
            .iter()
            .zip(&keys)
            .map(|(n, k)| client.post::<_, DkgRound2Response>(&n.url, k, "/v1/dkg/round2", &r2req, timeout)),
    )
    .await;
    let mut inbox: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for ((n, r), from) in nodes.iter().zip(r2).zip(roster) {
        for (to, sealed) in r.map_err(|f| node_err(&n.url, f))?.sealed {
            inbox.entry(to).or_default().insert(from.identifier.clone(), sealed);
        }
    }
    let fin =
        futures::future::join_all(
            nodes.iter().zip(&keys).zip(roster).map(|((n, k), e)| {
                let req = DkgFinishRequest {
                    session: session.clone(),
                    sealed: inbox.remove(&e.identifier).unwrap_or_default(),
                };
                async move {
                    client.post::<_, DkgFinishResponse>(&n.url, k, "/v1/dkg/finish", &req, timeout).await
                }
            }),
        )
        .await;
    let mut finish = Vec::new();
    for (n, r) in nodes.iter().zip(fin) {
        finish.push(r.map_err(|f| node_err(&n.url, f))?);
    }
    let first = &finish[0];
    for (n, f) in nodes.iter().zip(&finish) {
        if f.transcript != first.transcript
            || f.group_key != first.group_key
            || f.public_key_package != first.public_key_package
        {
            abort(client, nodes, roster, &session, timeout).await;
            return Err(QuorumError::Dkg(format!("{} saw a different transcript or group key", n.url)));
        }
    }
    Ok((session, finish))
}

async fn commit(
    client: &NodeClient,
    nodes: &[PinnedNode],
    roster: &[RosterEntry],
    session: &str,
    finish: &[DkgFinishResponse],
    timeout: Duration,
) -> Result<Vec<String>, QuorumError> {
    let confirmations: BTreeMap<String, String> =
        roster.iter().zip(finish).map(|(e, f)| (e.identifier.clone(), f.confirmation.clone())).collect();
    let req = DkgCommitRequest { session: session.to_string(), confirmations };
    let res = futures::future::join_all(nodes.iter().zip(roster).map(|(n, e)| {
        let req = &req;
        async move {
            let k =
                IdentityPublic::from_hex(&e.identity_key).map_err(|_| NodeFault::Malformed("key".into()))?;
            client.post::<_, DkgCommitResponse>(&n.url, &k, "/v1/dkg/commit", req, timeout).await
        }
    }))
    .await;
    let mut attestations = Vec::with_capacity(nodes.len());
    for (n, r) in nodes.iter().zip(res) {
        attestations.push(r.map_err(|f| node_err(&n.url, f))?.attestation);
    }
    Ok(attestations)
}

/// Attempts at activating a refreshed share on a node before the refresh is reported incomplete.
const ACTIVATION_ATTEMPTS: u32 = 5;

/// Phase 2 of a refresh commit: asks every node to make its staged share current, retrying the
/// nodes that failed (activation is idempotent at the node) until all activated or the attempts
/// run out. Returns the nodes that did not activate, with the last failure of each.
async fn activate(
    client: &NodeClient,
    nodes: &[PinnedNode],
    roster: &[RosterEntry],
    session: &str,
    timeout: Duration,
) -> Vec<(String, NodeFault)> {
    let req = DkgActivateRequest { session: session.to_string() };
    let mut pending: Vec<usize> = (0..nodes.len()).collect();
    let mut failed = Vec::new();
    for attempt in 1..=ACTIVATION_ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        if attempt > 1 {
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt - 1))).await;
        }
        let res = futures::future::join_all(pending.iter().map(|&i| {
            let (n, e, req) = (&nodes[i], &roster[i], &req);
            async move {
                let k = IdentityPublic::from_hex(&e.identity_key)
                    .map_err(|_| NodeFault::Malformed("key".into()))?;
                client.post::<_, serde_json::Value>(&n.url, &k, "/v1/dkg/activate", req, timeout).await
            }
        }))
        .await;
        failed.clear();
        let mut still = Vec::new();
        for (i, r) in pending.iter().zip(res) {
            if let Err(f) = r {
                tracing::warn!(node = %nodes[*i].url, attempt, fault = %f, "refresh activation failed");
                failed.push((nodes[*i].url.clone(), f));
                still.push(*i);
            }
        }
        pending = still;
    }
    failed
}

async fn abort(
    client: &NodeClient,
    nodes: &[PinnedNode],
    roster: &[RosterEntry],
    session: &str,
    timeout: Duration,
) {
    let req = DkgAbortRequest { session: session.to_string() };
    for (n, e) in nodes.iter().zip(roster) {
        if let Ok(k) = IdentityPublic::from_hex(&e.identity_key) {
            let _ = client.post::<_, serde_json::Value>(&n.url, &k, "/v1/dkg/abort", &req, timeout).await;
        }
    }
}
