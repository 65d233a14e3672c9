//! The signer node's HTTP server (`treasury signer serve`).
//!
//! Every route except `/v1/health` needs a request signed by a configured coordinator
//! ([`super::auth`]); every answer, refusals included, is signed with the node's identity key.
//! Every refusal is appended to `refusals.jsonl` in the node directory.
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use alloy::primitives::{Address, B256, U256};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use frost_secp256k1::keys::{KeyPackage, PublicKeyPackage};
use serde::Serialize;
use serde::de::DeserializeOwned;
use treasury_chain::operation::{TIER_QUORUM, TIER_ROOT, operation_digest};

use super::auth::{AUTH_HEADER, NODE_MAC_HEADER, PairKeys, RequestVerifier, sign_response};
use super::dkg::{DkgSession, identifier_hex};
use super::error::{QuorumError, Refusal, RefusalCode};
use super::guard::{BudgetState, Outflows, Tier};
use super::identity::{IdentityKey, IdentityPublic};
use super::nonces::{LedgerEntry, NonceStore, commitment_id, now};
use super::replay::{IntentLedger, LedgerRecord, ReplayMode, Replayed};
use super::signature::GroupKey;
use super::store::{NodeStore, Passphrase};
use super::wire::*;
use alloy::providers::DynProvider;
use treasury_policies::replay::Replayer;

/// Most commitments handed out per request.
pub const MAX_COMMITMENTS_PER_REQUEST: u32 = 1000;

/// Environment variable naming test-only faults; honoured only by builds with the `fault-injection` feature.
pub const FAULTS_ENV: &str = "TREASURY_SIGNER_TEST_FAULTS";

type Share = Arc<(KeyPackage, PublicKeyPackage)>;

/// A running node's state.
pub struct NodeState {
    identity: IdentityKey,
    verifier: RequestVerifier,
    store: Mutex<NodeStore>,
    share: RwLock<Option<Share>>,
    nonces: Mutex<NonceStore>,
    ledger: Mutex<std::fs::File>,
    budget: Mutex<BudgetState>,
    dkg: Mutex<HashMap<String, DkgSession>>,
    refusals: Mutex<std::fs::File>,
    metrics: crate::metrics::NodeMetrics,
    replay: NodeReplay,
    intents: Mutex<IntentLedger>,
    #[cfg(feature = "fault-injection")]
    faults: super::faults::Faults,
}

/// What a node replays with: its mode, pinned policies and own RPC endpoint.
struct NodeReplay {
    mode: ReplayMode,
    /// `[replay]`: approvers, threshold, widening delay.
    config: super::replay::ReplayConfig,
    /// Loaded at start, at the first request after a first `pin-policy` while serving, or
    /// when a staged change's delay has passed.
    replayer: RwLock<Option<Arc<Replayer>>>,
    provider: Option<DynProvider>,
    /// What the node keeps from its endpoint between requests.
    chain: super::chain_cache::ChainCache,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState").field("identity", &self.identity).finish()
    }
}

#[derive(Serialize, serde::Deserialize)]
struct SignedDetail {
    tier: Tier,
    period: u64,
    outflows: Outflows,
}

impl NodeState {
    /// Opens the node directory with `pass` and rebuilds nonce and budget state from disk.
    pub fn open(dir: &Path, pass: &Passphrase) -> Result<Self, QuorumError> {
        let store = NodeStore::open(dir, pass)?;
        let identity = store.secrets.identity()?;
        let allowed = store
            .config
            .coordinators
            .iter()
            .map(|k| IdentityPublic::from_hex(k))
            .collect::<Result<Vec<_>, _>>()?;
        if allowed.is_empty() {
            return Err(QuorumError::Config("node.toml names no coordinator key".into()));
        }
        let share = store.secrets.share()?.map(Arc::new);
        let (nonces, ledger_entries) = NonceStore::open(&dir.join("nonces"), store.key().clone())?;
        let period = now() / store.config.guard.period_secs.max(1);
        let mut budget = BudgetState::default();
        budget.roll(period);
        for e in &ledger_entries {
            let (Some(d), Some(detail)) = (&e.digest, &e.detail) else { continue };
            let Ok(detail) = serde_json::from_value::<SignedDetail>(detail.clone()) else { continue };
            if detail.tier == Tier::One
                && detail.period == period
                && let Ok(d) = d.parse::<B256>()
            {
                budget.record(d, &detail.outflows);
            }
        }
        let ledger = nonces.ledger_handle()?;
        let replay_config = store.config.replay.clone();
        let replayer = super::replay::load_pinned(dir, &identity.public(), &replay_config, now())?;
        let replay = NodeReplay {
            mode: store.config.replay.mode,
            config: replay_config,
            replayer: RwLock::new(replayer.map(Arc::new)),

            provider: match &store.config.replay.rpc {
                Some(url) => Some(treasury_chain::provider::connect(url).map_err(|e| {
                    QuorumError::Config(format!("replay.rpc {url}: {}", crate::error_chain(&e)))
                })?),
                None => None,
            },
            chain: Default::default(),
        };
        let intents = IntentLedger::open(dir)?;
        let rpath = dir.join("refusals.jsonl");
        let refusals = super::store::private_file(&rpath, false)?;
        Ok(Self {
            verifier: RequestVerifier::new(&identity, allowed),
            identity,
            store: Mutex::new(store),
            share: RwLock::new(share),
            nonces: Mutex::new(nonces),
            ledger: Mutex::new(ledger),
            budget: Mutex::new(budget),
            dkg: Mutex::new(HashMap::new()),
            refusals: Mutex::new(refusals),
            metrics: crate::metrics::NodeMetrics::new(),
            replay,
            intents: Mutex::new(intents),
            #[cfg(feature = "fault-injection")]
            faults: super::faults::Faults::from_env()?,
        })
    }

    fn share(&self) -> Option<Share> {
        self.share.read().expect("share lock").clone()
    }

    fn record_refusal(&self, path: &str, r: &Refusal) {
        let line = serde_json::json!({ "at": now(), "route": path, "code": r.code, "reason": r.reason });
        let mut f = self.refusals.lock().expect("refusals lock");
        let _ = writeln!(f, "{line}");
        tracing::warn!(route = path, code = ?r.code, reason = %r.reason, "refused");
        let code = serde_json::to_value(r.code).ok().and_then(|v| v.as_str().map(str::to_owned));
        self.metrics.refused(path, code.as_deref().unwrap_or("unknown"));
    }

    fn identity_info(&self) -> IdentityInfo {
        let share = self.share();
        IdentityInfo {
            identity_key: self.identity.public().to_hex(),
            fingerprint: self.identity.public().fingerprint(),
            identifier: share.as_ref().map(|s| identifier_hex(s.0.identifier())),
            group_key: share.as_ref().and_then(|s| s.1.verifying_key().serialize().ok()).map(hex::encode),
            unused_nonces: self.nonces.lock().expect("nonce lock").unused(),
        }
    }

    fn commitments(&self, req: CommitmentsRequest) -> Result<CommitmentsResponse, Refusal> {
        let share =
            self.share().ok_or_else(|| Refusal::new(RefusalCode::NoShare, "no key share yet: run DKG"))?;
        if req.count == 0 || req.count > MAX_COMMITMENTS_PER_REQUEST {
            return Err(Refusal::new(
                RefusalCode::BadRequest,
                format!("count must be 1..={MAX_COMMITMENTS_PER_REQUEST}"),
            ));
        }
        let issued = self
            .nonces
            .lock()
            .expect("nonce lock")
            .generate(req.count as usize, share.0.signing_share())
            .map_err(|e| {
                Refusal::new(
                    RefusalCode::BadRequest,
                    format!("cannot store nonces: {}", crate::error_chain(&e)),
                )
            })?;
        let mut commitments = Vec::with_capacity(issued.len());
        for (id, c) in issued {
            let bytes = c.serialize().map_err(|e| Refusal::new(RefusalCode::BadRequest, e.to_string()))?;
            commitments.push(CommitmentEntry { id, commitments: hex::encode(bytes) });
        }
        Ok(CommitmentsResponse { identifier: identifier_hex(share.0.identifier()), commitments })
    }

    /// Validates and signs.
    ///
    /// # Security
    /// Rebuilds the EIP-712 digest from the structured operation and refuses a signing package
    /// whose message differs; runs the guard; consumes the nonce by value and durably records it
    /// used (fsync) before returning the RFC 9591 signature share.
    fn sign(&self, req: SignRequest) -> Result<SignResponse, Refusal> {
        let started = std::time::Instant::now();
        let bad = |m: String| Refusal::new(RefusalCode::BadRequest, m);
        let share =
            self.share().ok_or_else(|| Refusal::new(RefusalCode::NoShare, "no key share yet: run DKG"))?;
        let tier =
            if req.root_signature.as_ref().is_some_and(|s| !s.is_empty()) { TIER_ROOT } else { TIER_QUORUM };
        let digest = operation_digest(&req.operation, tier, req.chain_id, req.module);
        let pkg_bytes =
            hex::decode(&req.signing_package).map_err(|e| bad(format!("signing package hex: {e}")))?;
        let package = frost_secp256k1::SigningPackage::deserialize(&pkg_bytes)
            .map_err(|e| bad(format!("signing package: {e}")))?;
        if package.message().as_slice() != digest.as_slice() {
            return Err(Refusal::new(
                RefusalCode::DigestMismatch,
                format!("signing package message is not the digest {digest} of the operation"),
            ));
        }
        let me = share.0.identifier();
        let mine = package
            .signing_commitment(me)
            .ok_or_else(|| bad("signing package has no commitment for this node".into()))?;
        let id = commitment_id(&mine).map_err(|e| bad(e.to_string()))?;
        let store = self.store.lock().expect("store lock");
        let guard = store.config.guard.clone();
        drop(store);
        let replayed = self.replay_request(&req, tier, digest)?;
        let replay_us = started.elapsed().as_micros() as u64;
        // Held until the share is answered: no two requests sign one idempotency key at once.
        let mut intents = self.intents.lock().expect("intent ledger lock");
        if let Some(r) = &replayed {
            super::replay::recheck(&intents, r, digest)?;
        }
        let now = now();
        let period = now / guard.period_secs.max(1);
        // The nonce is taken first: a request that cannot sign (unknown or used commitment) never
        // touches the budget, so no spend is ever given back.
        let nonces = self.nonces.lock().expect("nonce lock").take(&id)?;
        let checked = {
            let mut budget = self.budget.lock().expect("budget lock");
            budget.roll(period);
            let valuing = match replayed.as_ref().and_then(|r| r.upkeep.as_ref()) {
                Some(_) => super::guard::Valuing::MeasuredOnChain,
                None => super::guard::Valuing::Required,
            };
            let checked = guard.check_as(
                &req.operation,
                req.chain_id,
                req.module,
                digest,
                req.root_signature.as_ref().map(|b| b.as_ref()),
                &budget,
                now,
                valuing,
            );
            // Counted under the same lock as the check: two concurrent requests cannot both pass
            // against the same remaining budget.
            if let Ok(a) = &checked
                && a.tier == Tier::One
            {
                budget.record(digest, &a.outflows);
            }
            checked
        };
        let approved = match checked {
            Ok(a) => a,
            Err(refusal) => {
                drop(nonces);
                let entry = LedgerEntry {
                    commitment: id,
                    kind: "discarded".into(),
                    digest: Some(digest.to_string()),
                    detail: None,
                    at: now,
                    intents: Vec::new(),
                };
                self.append_ledger(&entry).map_err(bad)?;
                return Err(refusal);
            }
        };
        let result = frost_secp256k1::round2::sign(&package, &nonces, &share.0);
        drop(nonces);
        let detail = SignedDetail { tier: approved.tier, period, outflows: approved.outflows.clone() };
        // The intents signed ride in the line that marks the nonce used: one write, one sync
        // makes both durable before the share leaves (a failure withholds the share; an intent
        // recorded for a share never sent only makes the node refuse its key under another
        // digest sooner). A retry of a digest adds none (its records are held already).
        let mut records = ledger_records(&req, tier, digest, replayed.as_ref(), now);
        records.retain(|r| !intents.records(&r.key).iter().any(|o| o.digest == r.digest));
        let mut entry = LedgerEntry {
            commitment: id,
            kind: if result.is_ok() { "signed" } else { "discarded" }.into(),
            digest: Some(digest.to_string()),
            detail: serde_json::to_value(&detail).ok(),
            at: now,
            intents: Vec::new(),
        };
        let share_out = match result {
            Ok(share_out) => share_out,
            Err(e) => {
                self.append_ledger(&entry).map_err(bad)?;
                return Err(bad(format!("frost sign: {e}")));
            }
        };
        entry.intents = records;
        self.append_ledger(&entry).map_err(bad)?;
        intents.remember(&entry.intents);
        drop(intents);
        let sign_us = started.elapsed().as_micros() as u64;
        tracing::info!(%digest, tier = ?approved.tier, replay_us, sign_us, "signed");
        let bytes = share_out.serialize();
        #[cfg(feature = "fault-injection")]
        let bytes = {
            let mut b = bytes;
            self.faults.corrupt(&mut b);
            b
        };
        Ok(SignResponse { share: hex::encode(bytes) })
    }

    /// With replay required, re-derives a tier-1 request's decision through the node's own RPC
    /// endpoint and pinned policies; `None` when nothing is replayed (tier 2, replay off).
    fn replay_request(&self, req: &SignRequest, tier: u8, digest: B256) -> Result<Option<Replayed>, Refusal> {
        if tier == TIER_ROOT || self.replay.mode == ReplayMode::Off {
            return Ok(None);
        }
        let required = |m: &str| Refusal::new(RefusalCode::ReplayRequired, m);
        let decision = req.decision.as_ref().ok_or_else(|| {
            required("replay is required: a tier-1 request must carry the decision that produced it")
        })?;
        let replayer = self.pinned_replayer()?.ok_or_else(|| {
            required("replay is required but no policy set is pinned (treasury signer pin-policy)")
        })?;
        if decision.policy_hash != replayer.hash() {
            let dir = self.store.lock().expect("store lock").dir().to_path_buf();
            if let Ok(Some(staged)) = super::replay::staged_pin(&dir)
                && staged.policy_hash == decision.policy_hash
            {
                return Err(Refusal::new(
                    RefusalCode::PolicyMismatch,
                    format!(
                        "policy set {} is staged on this node and enforced from unix time {} (a widening change waits [replay] widening_delay_secs); this node enforces {}",
                        staged.policy_hash,
                        staged.active_from,
                        replayer.hash()
                    ),
                ));
            }
        }
        let provider = self
            .replay
            .provider
            .as_ref()
            .ok_or_else(|| required("replay is required but replay.rpc is not set"))?;
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| Refusal::new(RefusalCode::BadRequest, format!("replay needs the runtime: {e}")))?;
        if let Some(keeper) = &decision.keeper {
            return handle
                .block_on(super::upkeep::check(
                    &replayer,
                    provider,
                    decision,
                    keeper,
                    &req.operation,
                    digest,
                    &self.intents,
                ))
                .map(Some);
        }
        handle
            .block_on(super::replay::check(
                &replayer,
                provider,
                &self.replay.chain,
                decision,
                &req.operation,
                digest,
                &self.intents,
            ))
            .map(Some)
    }

    /// The pinned policy set: the one loaded at start, else one pinned since (a first pin takes
    /// effect at once; a changed pin at the next start).
    fn pinned_replayer(&self) -> Result<Option<Arc<Replayer>>, Refusal> {
        let refusal = |e: QuorumError| Refusal::new(RefusalCode::ReplayRequired, crate::error_chain(&e));
        let dir = self.store.lock().expect("store lock").dir().to_path_buf();
        // A staged change is looked for at each request (a missing file costs one failed open).
        let due = super::replay::staged_pin(&dir).map_err(refusal)?.is_some_and(|p| now() >= p.active_from);
        if !due && let Some(r) = self.replay.replayer.read().expect("replayer lock").clone() {
            return Ok(Some(r));
        }
        let loaded = super::replay::load_pinned(&dir, &self.identity.public(), &self.replay.config, now())
            .map_err(refusal)?
            .map(Arc::new);
        let mut slot = self.replay.replayer.write().expect("replayer lock");
        if due || slot.is_none() {
            slot.clone_from(&loaded);
        }
        Ok(slot.clone())
    }

    /// Appends `entry` to the nonce ledger and syncs it to disk.
    fn append_ledger(&self, entry: &LedgerEntry) -> Result<(), String> {
        let mut line = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut ledger = self.ledger.lock().expect("ledger lock");
        ledger
            .write_all(&line)
            .and_then(|()| ledger.sync_data())
            .map_err(|e| format!("cannot record the nonce as used: {e}"))
    }

    /// Refuses a DKG or refresh roster other than the one this node's operator pinned.
    fn check_pinned_roster(&self, req: &DkgRound1Request) -> Result<(), Refusal> {
        let fail = |m: String| Refusal::new(RefusalCode::DkgFailure, m);
        let dir = self.store.lock().expect("store lock").dir().to_path_buf();
        let pin = super::store::read_roster_pin(&dir, &self.identity.public())
            .map_err(|e| fail(crate::error_chain(&e)))?
            .ok_or_else(|| {
                fail("no roster pinned: run `treasury signer pin` with the peers' fingerprints first".into())
            })?;
        if req.threshold != pin.threshold || req.roster.len() != pin.fingerprints.len() {
            return Err(fail(format!(
                "roster is {}-of-{}, not the pinned {}-of-{}",
                req.threshold,
                req.roster.len(),
                pin.threshold,
                pin.fingerprints.len()
            )));
        }
        for e in &req.roster {
            let fp =
                IdentityPublic::from_hex(&e.identity_key).map_err(|e| fail(e.to_string()))?.fingerprint();
            if !pin.fingerprints.contains(&fp) {
                return Err(fail(format!("roster member {fp} is not among the pinned fingerprints")));
            }
        }
        Ok(())
    }

    fn dkg_round1(&self, req: DkgRound1Request) -> Result<DkgRound1Response, Refusal> {
        self.check_pinned_roster(&req)?;
        let share = self.share();
        let (session, out) = DkgSession::start(&self.identity, &req, share.as_deref())?;
        self.dkg.lock().expect("dkg lock").insert(req.session, session);
        Ok(out)
    }

    fn with_session<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut DkgSession) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let mut map = self.dkg.lock().expect("dkg lock");
        let s =
            map.get_mut(id).ok_or_else(|| Refusal::new(RefusalCode::DkgFailure, "unknown DKG session"))?;
        let out = f(s);
        if out.is_err() {
            map.remove(id);
        }
        out
    }

    fn dkg_commit(&self, req: DkgCommitRequest) -> Result<DkgCommitResponse, Refusal> {
        let session = self
            .dkg
            .lock()
            .expect("dkg lock")
            .remove(&req.session)
            .ok_or_else(|| Refusal::new(RefusalCode::DkgFailure, "unknown DKG session"))?;
        #[cfg(feature = "fault-injection")]
        if self.faults.refuse_refresh_commit && session.is_refresh() {
            return Err(Refusal::new(RefusalCode::DkgFailure, "test fault: refresh commit refused"));
        }
        let members = session.roster_entries();
        let refresh = session.is_refresh();
        let (kp, pkp) = session.commit(&req.confirmations)?;
        let threshold = *kp.min_signers();
        let gk = GroupKey::from_verifying_key(pkp.verifying_key())
            .map_err(|e| Refusal::new(RefusalCode::DkgFailure, crate::error_chain(&e)))?;
        let msg = super::quorum_file::attestation_message(&gk.compressed, threshold, &members);
        let attestation = hex::encode(self.identity.sign(&msg));
        let mut store = self.store.lock().expect("store lock");
        if refresh {
            // Phase 1 of a refresh: the new share is staged durably; the current one keeps
            // signing until the coordinator activates the new one on every node.
            store
                .secrets
                .stage_share(&req.session, &kp, &pkp)
                .map_err(|e| Refusal::new(RefusalCode::DkgFailure, crate::error_chain(&e)))?;
            store.save_secrets().map_err(|e| {
                Refusal::new(
                    RefusalCode::DkgFailure,
                    format!("cannot stage share: {}", crate::error_chain(&e)),
                )
            })?;
            tracing::info!(group_key = %gk.compressed, "refreshed key share staged");
            return Ok(DkgCommitResponse { group_key: gk.compressed, attestation });
        }
        store
            .secrets
            .set_share(&kp, &pkp)
            .map_err(|e| Refusal::new(RefusalCode::DkgFailure, crate::error_chain(&e)))?;
        store.save_secrets().map_err(|e| {
            Refusal::new(RefusalCode::DkgFailure, format!("cannot save share: {}", crate::error_chain(&e)))
        })?;
        *self.share.write().expect("share lock") = Some(Arc::new((kp, pkp)));
        tracing::info!(group_key = %gk.compressed, "key share committed");
        Ok(DkgCommitResponse { group_key: gk.compressed, attestation })
    }

    /// Whether this node equivocates in DKG round 2 (test fault injection only).
    fn equivocates(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return self.faults.dkg_equivocate;
        #[cfg(not(feature = "fault-injection"))]
        false
    }

    /// Phase 2 of a refresh: the share staged for the session becomes current.
    fn dkg_activate(&self, req: DkgActivateRequest) -> Result<serde_json::Value, Refusal> {
        let fail = |m: String| Refusal::new(RefusalCode::DkgFailure, m);
        #[cfg(feature = "fault-injection")]
        if self.faults.refuses_activation() {
            return Err(fail("test fault: refresh activation refused once".into()));
        }
        #[cfg(feature = "fault-injection")]
        if self.faults.exit_at_activate {
            tracing::warn!("test fault: exiting at refresh activation");
            std::process::exit(3);
        }
        let mut store = self.store.lock().expect("store lock");
        if !req.session.is_empty() && store.secrets.activated_session == req.session {
            // A repeat (the coordinator lost the answer, or re-runs activation): already done.
            return Ok(serde_json::json!({}));
        }
        if !store.secrets.activate_staged(&req.session).map_err(|e| fail(crate::error_chain(&e)))? {
            return Err(fail("no share staged for this session".into()));
        }
        store.save_secrets().map_err(|e| fail(format!("cannot save share: {}", crate::error_chain(&e))))?;
        let share = store.secrets.share().map_err(|e| fail(crate::error_chain(&e)))?.map(Arc::new);
        *self.share.write().expect("share lock") = share;
        tracing::info!("refreshed key share activated");
        Ok(serde_json::json!({}))
    }
}

/// The ledger lines a signature adds: each intent of the decision (replayed ones with their
/// decision block's time), or for a tier-2 request without one, its digest as the key.
fn ledger_records(
    req: &SignRequest,
    tier: u8,
    digest: B256,
    replayed: Option<&Replayed>,
    now: u64,
) -> Vec<LedgerRecord> {
    let record = |key: String, policy: String, intent: Option<treasury_policies::Intent>, timestamp: u64| {
        LedgerRecord {
            v: 1,
            key,
            policy,
            intent,
            timestamp,
            digest,
            module_nonce: req.operation.nonce,
            deadline: req.operation.deadline,
            tier,
            at: now,
        }
    };
    if let Some(r) = replayed {
        let upkeep =
            r.upkeep.iter().map(|u| record(u.key.clone(), format!("keeper:{}", u.job), None, u.timestamp));
        return r
            .intents
            .iter()
            .map(|(i, ts)| record(i.key.clone(), i.policy.clone(), Some(i.clone()), *ts))
            .chain(upkeep)
            .collect();
    }
    match &req.decision {
        Some(d) => {
            d.intents.iter().map(|i| record(i.key.clone(), i.policy.clone(), Some(i.clone()), now)).collect()
        }
        None if tier == TIER_ROOT => vec![record(format!("tier2:{digest}"), String::new(), None, now)],
        None => Vec::new(),
    }
}

/// The answer, tagged for the coordinator that asked (untagged only when the request named no key).
fn signed_response(rid: &str, keys: Option<&PairKeys>, status: StatusCode, body: Vec<u8>) -> Response {
    let tag = keys.map(|k| sign_response(k, rid, status.as_u16(), &body));
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(v) = tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert(NODE_MAC_HEADER, v);
    }
    resp
}

fn refusal_status(r: &Refusal) -> StatusCode {
    match r.code {
        RefusalCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        RefusalCode::BadRequest | RefusalCode::DigestMismatch => StatusCode::BAD_REQUEST,
        RefusalCode::UnknownCommitment | RefusalCode::UsedCommitment | RefusalCode::DkgFailure => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::FORBIDDEN,
    }
}

async fn handle<Req, Resp>(
    state: Arc<NodeState>,
    method: &'static str,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
    f: fn(&NodeState, Req) -> Result<Resp, Refusal>,
) -> Response
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let auth = headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let st = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let checked = st.verifier.verify(auth.as_deref(), method, path, &body);
        // A refusal is bound to the request id it claimed, so the caller can check who refused.
        let result = checked.verdict.clone().and_then(|()| {
            let json: &[u8] = if body.is_empty() { b"null" } else { &body };
            let req: Req = serde_json::from_slice(json)
                .map_err(|e| Refusal::new(RefusalCode::BadRequest, format!("body: {e}")))?;
            f(&st, req).and_then(|r| {
                serde_json::to_vec(&r).map_err(|e| Refusal::new(RefusalCode::BadRequest, e.to_string()))
            })
        });
        (checked.rid, checked.keys, result)
    })
    .await;
    let (rid, keys, result) = match outcome {
        Ok(o) => o,
        Err(e) => (String::new(), None, Err(Refusal::new(RefusalCode::BadRequest, format!("internal: {e}")))),
    };
    match result {
        Ok(bytes) => signed_response(&rid, keys.as_ref(), StatusCode::OK, bytes),
        Err(r) => {
            state.record_refusal(path, &r);
            let status = refusal_status(&r);
            let body = serde_json::to_vec(&RefusalBody { refusal: r }).unwrap_or_default();
            signed_response(&rid, keys.as_ref(), status, body)
        }
    }
}

/// The node's router.
pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route(
            "/v1/identity",
            get(|State(s): State<Arc<NodeState>>, h: HeaderMap| async move {
                handle(s, "GET", "/v1/identity", h, Bytes::new(), |s, ()| Ok(s.identity_info())).await
            }),
        )
        .route("/v1/commitments", signed_post("/v1/commitments", NodeState::commitments))
        .route(
            "/v1/sign",
            post(|State(s): State<Arc<NodeState>>, h: HeaderMap, b: Bytes| async move {
                #[cfg(feature = "fault-injection")]
                s.faults.before_sign().await;
                let started = std::time::Instant::now();
                let answer = handle(s.clone(), "POST", "/v1/sign", h, b, NodeState::sign).await;
                if answer.status() == StatusCode::OK {
                    s.metrics.signed(started.elapsed());
                }
                answer
            }),
        )
        .route("/v1/dkg/round1", signed_post("/v1/dkg/round1", NodeState::dkg_round1))
        .route(
            "/v1/dkg/round2",
            signed_post("/v1/dkg/round2", |s: &NodeState, r: DkgRound2Request| {
                s.with_session(&r.session.clone(), |sess| sess.round2(&s.identity, &r, s.equivocates()))
            }),
        )
        .route(
            "/v1/dkg/finish",
            signed_post("/v1/dkg/finish", |s: &NodeState, r: DkgFinishRequest| {
                let share = s.share();
                s.with_session(&r.session.clone(), |sess| sess.finish(&s.identity, &r, share.as_deref()))
            }),
        )
        .route("/v1/dkg/commit", signed_post("/v1/dkg/commit", NodeState::dkg_commit))
        .route("/v1/dkg/activate", signed_post("/v1/dkg/activate", NodeState::dkg_activate))
        .route(
            "/v1/dkg/abort",
            signed_post("/v1/dkg/abort", |s: &NodeState, r: DkgAbortRequest| {
                s.dkg.lock().expect("dkg lock").remove(&r.session);
                let mut store = s.store.lock().expect("store lock");
                if store.secrets.drop_staged(&r.session) {
                    store
                        .save_secrets()
                        .map_err(|e| Refusal::new(RefusalCode::DkgFailure, crate::error_chain(&e)))?;
                }
                Ok(serde_json::json!({}))
            }),
        )
        .with_state(state)
}

/// A `POST path` route whose authenticated JSON body `f` answers.
fn signed_post<Req, Resp>(
    path: &'static str,
    f: fn(&NodeState, Req) -> Result<Resp, Refusal>,
) -> axum::routing::MethodRouter<Arc<NodeState>>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    post(move |State(s): State<Arc<NodeState>>, h: HeaderMap, b: Bytes| async move {
        handle(s, "POST", path, h, b, f).await
    })
}

/// A node bound to its address, ready to serve.
#[derive(Debug)]
pub struct BoundNode {
    listener: tokio::net::TcpListener,
    state: Arc<NodeState>,
}

impl BoundNode {
    /// Opens the node directory and binds `listen` (port 0 picks a free port).
    ///
    /// A build without the `fault-injection` feature refuses to start when [`FAULTS_ENV`] is set,
    /// rather than silently running a node a test believes faulty.
    pub async fn bind(dir: &Path, pass: &Passphrase, listen: SocketAddr) -> Result<Self, QuorumError> {
        if cfg!(not(feature = "fault-injection")) && std::env::var_os(FAULTS_ENV).is_some() {
            return Err(QuorumError::Config(format!(
                "{FAULTS_ENV} is set, but this build has no fault injection (cargo feature fault-injection)"
            )));
        }
        let state = Arc::new(NodeState::open(dir, pass)?);
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| QuorumError::io(dir, e))?;
        Ok(Self { listener, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, QuorumError> {
        self.listener.local_addr().map_err(|e| QuorumError::Io { path: "listener".into(), source: e })
    }

    /// The node's public identity.
    pub fn info(&self) -> IdentityInfo {
        self.state.identity_info()
    }

    /// Serves the node's Prometheus metrics at `GET /metrics` on `listen` (apart from its API)
    /// until `shutdown` completes; returns the bound address.
    pub async fn serve_metrics(
        &self,
        listen: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<SocketAddr> {
        let state = self.state.clone();
        let render = move || {
            let state = state.clone();
            async move {
                let left = state.nonces.lock().expect("nonce lock").unused();
                state.metrics.render(left)
            }
        };
        crate::metrics::serve_metrics(listen, render, shutdown).await
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), QuorumError> {
        self.serve_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight (a signing round
    /// under way completes and its nonce's erasure is durable) and returns.
    pub async fn serve_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), QuorumError> {
        crate::serve::serve_until(
            self.listener,
            router(self.state),
            crate::serve::HttpLimits::default(),
            shutdown,
        )
        .await
        .map_err(|e| QuorumError::Io { path: "http server".into(), source: e })
    }
}

/// Options of `treasury signer init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Coordinator public keys accepted.
    pub coordinators: Vec<String>,
    /// Guard configuration.
    pub guard: super::guard::GuardConfig,
}

/// Budget amounts parse helper for the CLI: `TOKEN:AMOUNT`.
pub fn parse_budget(s: &str) -> Result<super::guard::Budget, QuorumError> {
    let (t, a) =
        s.split_once(':').ok_or_else(|| QuorumError::Config(format!("budget {s}: expected TOKEN:AMOUNT")))?;
    Ok(super::guard::Budget {
        token: t.parse::<Address>().map_err(|e| QuorumError::Config(format!("budget token {t}: {e}")))?,
        amount: a.parse::<U256>().map_err(|e| QuorumError::Config(format!("budget amount {a}: {e}")))?,
    })
}

/// Allow-list parse helper for the CLI: `TARGET:SELECTOR` or `TARGET` (empty calldata).
pub fn parse_allow(s: &str) -> Result<super::guard::AllowEntry, QuorumError> {
    let (t, sel) = match s.split_once(':') {
        Some((t, sel)) => (t, Some(sel.to_ascii_lowercase())),
        None => (s, None),
    };
    if let Some(sel) = &sel
        && (sel.len() != 10 || !sel.starts_with("0x") || hex::decode(&sel[2..]).is_err())
    {
        return Err(QuorumError::Config(format!("selector {sel}: expected 0x and 8 hex digits")));
    }
    Ok(super::guard::AllowEntry {
        target: t.parse::<Address>().map_err(|e| QuorumError::Config(format!("target {t}: {e}")))?,
        selector: sel,
    })
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod replay_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::guard::{AllowEntry, Budget, GuardConfig};
    use crate::quorum::store::NodeConfig;
    use frost_secp256k1::keys::IdentifierList;
    use treasury_chain::operation::Operation;

    const CHAIN: u64 = 31337;

    fn token() -> Address {
        Address::repeat_byte(0x70)
    }
    fn module() -> Address {
        Address::repeat_byte(0x4d)
    }

    fn transfer(amount: u64, nonce: u64) -> Operation {
        treasury_devnet::ops::erc20_transfer(
            token(),
            Address::repeat_byte(0xbe),
            U256::from(amount),
            nonce,
            now() + 600,
        )
    }

    /// A node (as a value, no HTTP) holding share 1 of a 2-of-2 dealer key, budget 1000 of `token()`.
    fn node(dir: &Path) -> (NodeState, Vec<KeyPackage>) {
        // Built from its file form, so that settings this test does not name keep their defaults.
        let guard: GuardConfig = serde_json::from_value(serde_json::json!({
            "chain_id": CHAIN,
            "module": module(),
            "allow": [AllowEntry { target: token(), selector: Some("0xa9059cbb".into()) }],
            "budgets": [Budget { token: token(), amount: U256::from(1000) }],
        }))
        .unwrap();
        let coordinator = IdentityKey::generate().public().to_hex();
        let pass = Passphrase::new("tidal ember quartz meadow");
        let config = NodeConfig { coordinators: vec![coordinator], guard, replay: Default::default() };
        crate::quorum::store::NodeStore::init_with(dir, &pass, config, true).unwrap();
        let (shares, pkp) =
            frost_secp256k1::keys::generate_with_dealer(2, 2, IdentifierList::Default, rand_core::OsRng)
                .unwrap();
        let kps: Vec<KeyPackage> = shares.into_values().map(|s| KeyPackage::try_from(s).unwrap()).collect();
        let mut store = NodeStore::open(dir, &pass).unwrap();
        store.secrets.set_share(&kps[0], &pkp).unwrap();
        store.save_secrets().unwrap();
        (NodeState::open(dir, &pass).unwrap(), kps)
    }

    /// A sign request for `op` with this node's commitment `mine` and a peer's fresh one.
    fn request(
        op: &Operation,
        mine: &frost_secp256k1::round1::SigningCommitments,
        peer: &KeyPackage,
    ) -> SignRequest {
        let (_, peer_c) = frost_secp256k1::round1::commit(peer.signing_share(), &mut rand_core::OsRng);
        let digest = operation_digest(op, treasury_chain::TIER_QUORUM, CHAIN, module());
        let commitments = [(*peer.identifier(), peer_c), (my_id(), *mine)].into_iter().collect();
        let package = frost_secp256k1::SigningPackage::new(commitments, digest.as_slice());
        SignRequest {
            operation: op.clone(),
            chain_id: CHAIN,
            module: module(),
            root_signature: None,
            signing_package: hex::encode(package.serialize().unwrap()),
            decision: None,
        }
    }

    fn my_id() -> frost_secp256k1::Identifier {
        frost_secp256k1::Identifier::try_from(1u16).unwrap()
    }

    fn issued(state: &NodeState) -> frost_secp256k1::round1::SigningCommitments {
        let c = state.commitments(CommitmentsRequest { count: 1 }).unwrap();
        let bytes = hex::decode(&c.commitments[0].commitments).unwrap();
        frost_secp256k1::round1::SigningCommitments::deserialize(&bytes).unwrap()
    }

    /// Attack (issue 13 item 2): while the nonce lock is held (a concurrent `/v1/commitments`),
    /// the coordinator sends the same operation twice, once with a commitment the node never
    /// issued and once with a valid one. The failing request must not give back the spend the
    /// succeeding one made: afterwards the budget still counts it.
    #[test]
    fn a_failed_request_does_not_release_the_spend_of_a_concurrent_signed_one() {
        let dir = tempfile::tempdir().unwrap();
        let (state, kps) = node(dir.path());
        let state = Arc::new(state);
        let op = transfer(600, 1);
        let valid = request(&op, &issued(&state), &kps[1]);
        let (_, foreign) = frost_secp256k1::round1::commit(kps[0].signing_share(), &mut rand_core::OsRng);
        let unknown = request(&op, &foreign, &kps[1]);
        let held = state.nonces.lock().unwrap();
        let (s1, s2) = (state.clone(), state.clone());
        let a = std::thread::spawn(move || s1.sign(unknown));
        // Let the failing request take its budget reservation first, then the valid one.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let b = std::thread::spawn(move || s2.sign(valid));
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(held);
        assert_eq!(a.join().unwrap().unwrap_err().code, RefusalCode::UnknownCommitment);
        b.join().unwrap().expect("the valid request signs");
        // 600 spent of 1000: another 600 must be over budget.
        let again = request(&transfer(600, 2), &issued(&state), &kps[1]);
        let err = state.sign(again).expect_err("a second 600 exceeds the budget of 1000");
        assert_eq!(err.code, RefusalCode::OverBudget, "{}", err.reason);
    }

    /// Periods only roll forward: a request that computed an older period never resets the budget.
    #[test]
    fn the_budget_period_never_moves_back() {
        let mut b = BudgetState::default();
        b.roll(10);
        b.record(B256::repeat_byte(1), &[(token(), U256::from(5))].into_iter().collect());
        b.roll(9);
        assert_eq!(b.period, 10);
        assert_eq!(b.spent[&token()], U256::from(5));
        b.roll(11);
        assert!(b.spent.is_empty());
    }

    /// Attack (issue 13 item 4): a compromised coordinator asks for a tier-1 signature with a
    /// deadline of 2^256−1 (say for a future module nonce), to keep it usable after its key is
    /// rotated. Nodes refuse a deadline beyond their maximum TTL.
    #[test]
    fn a_deadline_beyond_the_maximum_ttl_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (state, kps) = node(dir.path());
        let mut far = transfer(1, 7);
        far.deadline = U256::MAX;
        let err = state.sign(request(&far, &issued(&state), &kps[1])).expect_err("a far deadline is refused");
        assert_eq!(serde_json::to_value(err.code).unwrap(), "deadline_too_far", "{}", err.reason);
        let mut week_and_a_day = transfer(1, 7);
        week_and_a_day.deadline = U256::from(now() + 8 * 86_400);
        assert!(state.sign(request(&week_and_a_day, &issued(&state), &kps[1])).is_err());
        state.sign(request(&transfer(1, 7), &issued(&state), &kps[1])).expect("a near deadline signs");
    }

    /// A DKG round-1 request naming this node and `others` identities (identifiers 1, 2, …).
    fn round1(state: &NodeState, others: &[String], threshold: u16, refresh: bool) -> DkgRound1Request {
        let keys = std::iter::once(state.identity.public().to_hex()).chain(others.iter().cloned());
        let roster = keys
            .enumerate()
            .map(|(i, k)| RosterEntry {
                identifier: identifier_hex(&frost_secp256k1::Identifier::try_from(i as u16 + 1).unwrap()),
                identity_key: k,
            })
            .collect();
        DkgRound1Request { session: format!("s{}", others.len()), threshold, roster, refresh }
    }

    /// Attack (issue 13 item 1): a compromised coordinator runs DKG (or a refresh) with this node
    /// and identities it holds itself, so that it alone holds t shares of the new key. The node
    /// refuses a roster its operator did not pin.
    #[test]
    fn a_roster_of_the_coordinators_own_keys_is_refused_in_dkg_and_refresh() {
        let rogue = || IdentityKey::generate().public().to_hex();
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = node(dir.path());
        // refresh of this node's 2-of-2 share with the coordinator's key in place of the peer
        let err = state.dkg_round1(round1(&state, &[rogue()], 2, true)).expect_err("rogue refresh roster");
        assert_eq!(err.code, RefusalCode::DkgFailure, "{}", err.reason);
        // a fresh node asked to run DKG with two coordinator-held identities
        let fresh = tempfile::tempdir().unwrap();
        let pass = Passphrase::new("tidal ember quartz meadow");
        let config = NodeConfig {
            coordinators: vec![rogue()],
            guard: GuardConfig::default(),
            replay: Default::default(),
        };
        crate::quorum::store::NodeStore::init_with(fresh.path(), &pass, config, true).unwrap();
        let state = NodeState::open(fresh.path(), &pass).unwrap();
        let err = state.dkg_round1(round1(&state, &[rogue(), rogue()], 2, false)).expect_err("rogue roster");
        assert_eq!(err.code, RefusalCode::DkgFailure, "{}", err.reason);

        // pinned: the operator's roster runs, any other member, size or threshold is refused
        let (a, b) = (IdentityKey::generate().public(), IdentityKey::generate().public());
        let peers = [a.fingerprint(), b.fingerprint()];
        crate::quorum::store::pin_roster(fresh.path(), &pass, 2, &peers).unwrap();
        let (a, b) = (a.to_hex(), b.to_hex());
        state.dkg_round1(round1(&state, &[a.clone(), b.clone()], 2, false)).expect("the pinned roster runs");
        for (others, t) in
            [(vec![a.clone(), rogue()], 2), (vec![a.clone(), b.clone()], 3), (vec![a.clone()], 2)]
        {
            let err = state.dkg_round1(round1(&state, &others, t, false)).expect_err("not the pinned roster");
            assert_eq!(err.code, RefusalCode::DkgFailure, "{}", err.reason);
        }
        // a pin file rewritten without the node's key is refused
        let path = fresh.path().join("roster.pin");
        let text = std::fs::read_to_string(&path).unwrap().replace("\"threshold\": 2", "\"threshold\": 3");
        std::fs::write(&path, text).unwrap();
        let err = state.dkg_round1(round1(&state, &[a, b], 3, false)).expect_err("a forged pin");
        assert!(err.reason.contains("not signed"), "{}", err.reason);
    }

    /// Sends raw bytes to `addr` and returns everything the server answers until it closes the
    /// connection (or the generous safety bound passes: then the node never cut the client off).
    async fn raw_exchange(addr: SocketAddr, sent: &[u8]) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(sent).await.unwrap();
        tcp
    }

    async fn read_until_closed(mut tcp: tokio::net::TcpStream, what: &str) -> String {
        use tokio::io::AsyncReadExt;
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(30), tcp.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{what}: the node kept the connection open (never cut the client off)");
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Attack (issue 13 item 11): a client sends its headers or its body slowly, or a huge body,
    /// to hold the node's connections and memory. The node cuts each one off (connection closed,
    /// 408, 413) and keeps answering a normal client meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_and_oversized_clients_are_cut_off_and_others_served() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = node(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = crate::serve::HttpLimits {
            header_read_timeout: std::time::Duration::from_millis(300),
            request_timeout: std::time::Duration::from_millis(300),
            body_limit: 64 * 1024,
        };
        tokio::spawn(crate::serve::serve(listener, router(Arc::new(state)), limits));

        // Headers that never end, and a body that never completes.
        let slow_headers = raw_exchange(addr, b"POST /v1/sign HTTP/1.1\r\nhost: node\r\n").await;
        let slow_body = raw_exchange(
            addr,
            b"POST /v1/sign HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\"",
        )
        .await;

        // Meanwhile a normal client is served.
        let health = read_until_closed(
            raw_exchange(addr, b"GET /v1/health HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n").await,
            "health",
        )
        .await;
        assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok"), "{health}");

        let answer = read_until_closed(slow_headers, "slow headers").await;
        assert!(!answer.contains("200 OK"), "slow headers were served: {answer}");
        let answer = read_until_closed(slow_body, "slow body").await;
        assert!(answer.starts_with("HTTP/1.1 408"), "slow body: {answer}");

        // A body over the limit, announced by its length, is refused unread: only the headers are
        // sent (writing the body too would race the node closing the connection after its 413).
        let huge = format!(
            "POST /v1/sign HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            1024 * 1024 + 1
        );
        let answer = read_until_closed(raw_exchange(addr, huge.as_bytes()).await, "huge body").await;
        assert!(answer.starts_with("HTTP/1.1 413"), "huge body: {answer}");

        let health = read_until_closed(
            raw_exchange(addr, b"GET /v1/health HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n").await,
            "health after",
        )
        .await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    }
}
