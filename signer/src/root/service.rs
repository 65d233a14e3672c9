//! The root service: guard, durable queue, approvals and signing; `treasury root serve` runs it
//! behind the HTTP API of [`super::http`].
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, U256};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use zeroize::Zeroizing;

use super::config::ServiceConfig;
use super::error::{Result, RootError};
use super::guard;
use super::request::{EscalationRequest, Payload};
use super::signer::RootKey;
use super::store::{Decision, Durability, NewRequest, RequestRecord, RequestState, Store};

/// Name recorded for decisions made by the auto-approve rule.
pub const AUTO_APPROVER: &str = "auto-approve rule";

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The running root service.
#[derive(Debug)]
pub struct RootService {
    /// Configuration.
    pub config: ServiceConfig,
    store: Store,
    key: Arc<RootKey>,
    approval_key: Zeroizing<[u8; 32]>,
    submit_lock: Mutex<()>,
    sign_lock: Mutex<()>,
    wake: Notify,
    metrics: crate::metrics::RootMetrics,
}

/// Takes a lock guarding no data of its own (only the order of queue and HSM calls), over a panic
/// of a previous holder.
fn hold(lock: &Mutex<()>) -> MutexGuard<'_, ()> {
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RootService {
    /// Opens the queue and prepares the key (connecting lazily: the HSM may be away at start).
    /// Every decision is flushed to disk before it is answered.
    pub async fn open(config: ServiceConfig) -> Result<Arc<Self>> {
        Self::open_with(config, Durability::Flushed).await
    }

    /// Like [`RootService::open`] with a chosen durability of the queue's commits; anything but
    /// [`Durability::Flushed`] is for measurements only.
    pub async fn open_with(config: ServiceConfig, durability: Durability) -> Result<Arc<Self>> {
        let hsm = config.hsm.resolve()?;
        let key = Arc::new(RootKey::new(hsm, config.hsm.address));
        let store = Store::open_with(&config.db, durability).await?;
        let approval_key = load_or_create_approval_key(&approval_key_path(&config.db))?;
        Ok(Arc::new(Self {
            config,
            store,
            key,
            approval_key,
            submit_lock: Mutex::new(()),
            sign_lock: Mutex::new(()),
            wake: Notify::new(),
            metrics: crate::metrics::RootMetrics::new(),
        }))
    }

    /// The service's Prometheus metrics, with the queue depth (pending requests) read now.
    pub async fn render_metrics(&self) -> String {
        let pending = match in_place(|| self.store.count(RequestState::Pending)) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = crate::error_chain(&e), "metrics: cannot read the queue");
                0
            }
        };
        self.metrics.render(pending)
    }

    /// The queue. Its calls block until their commit: from async code, go through the service's
    /// own methods ([`RootService::get`], [`RootService::list`], ...), which run them in place.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The root key.
    pub fn key(&self) -> &Arc<RootKey> {
        &self.key
    }

    /// The request `id`.
    pub async fn get(&self, id: &str) -> Result<RequestRecord> {
        in_place(|| self.store.get(id))
    }

    /// Requests, newest first, optionally only in `state`.
    pub async fn list(&self, state: Option<RequestState>) -> Result<Vec<RequestRecord>> {
        in_place(|| self.store.list(state))
    }

    /// Every decision on request `id`, oldest first.
    pub async fn decisions(&self, id: &str) -> Result<Vec<Decision>> {
        in_place(|| {
            self.store.get(id)?;
            self.store.decisions(id)
        })
    }

    /// Checks a request against the guard and queues it; auto-approved requests are signed at once
    /// when the HSM is there. Resubmitting a live request returns it unchanged (idempotent).
    ///
    /// The whole request (queue reads, guard, HSM, the commit) runs as one blocking call on this
    /// thread: a round trip to another thread per statement cost more than the statements.
    ///
    /// # Security
    /// The digest MUST be rebuilt from the structured payload (EIP-712); a requester never supplies it.
    pub async fn submit(&self, request: EscalationRequest, requester: &str) -> Result<RequestRecord> {
        in_place(|| self.submit_now(&request, requester))
    }

    fn submit_now(&self, request: &EscalationRequest, requester: &str) -> Result<RequestRecord> {
        let digest = request.digest();
        let record = {
            let _one = hold(&self.submit_lock);
            if let Some(existing) = self.store.live_by_digest(digest)? {
                return Ok(existing);
            }
            let now = now();
            let (assessment, windows) = self.assess(request, now, None).inspect_err(|e| {
                if matches!(e, RootError::GuardDenied { .. }) {
                    self.metrics.decided("refused");
                }
            })?;
            let deadline = u64::try_from(request.deadline()).unwrap_or(u64::MAX);
            let expires_at = now.saturating_add(self.config.approval_ttl_secs).min(deadline);
            let id = new_id();
            let auto = assessment.auto_approve.then_some(AUTO_APPROVER);
            // An auto-approved request is signed now and stored signed, with its decisions, in one
            // transaction; the signature leaves only after that commit. If the HSM is away it is
            // stored approved and the worker signs it later.
            let signature = match auto {
                Some(_) => match self.sign_new(digest) {
                    Ok(sig) => Some(sig.as_bytes()),
                    Err(e) => {
                        tracing::warn!(%digest, error = crate::error_chain(&e), "signing deferred");
                        None
                    }
                },
                None => None,
            };
            let new = NewRequest {
                id: &id,
                request,
                requester,
                assessment: &assessment,
                now,
                expires_at,
                auto_approver: auto,
                signature: signature.as_ref().map(|s| s.as_slice()),
                windows: &windows,
            };
            let rec = self.store.insert(new)?;
            if auto.is_some() {
                self.metrics.decided("auto_approved");
            }
            tracing::info!(id = %rec.id, %digest, requester, state = %rec.state, "request queued");
            rec
        };
        if record.state == RequestState::Approved {
            return Ok(match self.sign(&record) {
                Ok(signed) => signed,
                Err(e) => {
                    tracing::warn!(id = %record.id, error = crate::error_chain(&e), "signing deferred");
                    record
                }
            });
        }
        Ok(record)
    }

    /// Runs the guard over `request` at `now`; `own` is the stored request itself when it is
    /// re-checked before signing (its own flows are then not counted twice against the caps).
    fn assess(
        &self,
        request: &EscalationRequest,
        now: u64,
        own: Option<&RequestRecord>,
    ) -> Result<(guard::Assessment, Vec<super::store::WindowRead>)> {
        let guard = &self.config.guard;
        let mut windows = Vec::new();
        let assessment = match &request.payload {
            Payload::Operation { operation } => {
                // Only the assets this operation moves are summed (a malformed operation is
                // refused by `check_operation` below, with the same rule).
                let flows = guard::flows(operation, &guard.allowed_calls).unwrap_or_default();
                let moved: std::collections::BTreeSet<Address> = flows.iter().map(|f| f.token).collect();
                let mut spent = std::collections::BTreeMap::new();
                for a in guard.assets.iter().filter(|a| moved.contains(&a.token)) {
                    let since = now.saturating_sub(a.period_secs);
                    let read = self.store.window_total(a.token, a.period_secs, since)?;
                    let mut total = read.total;
                    if own.is_some_and(|r| r.created_at > since) {
                        let mine = flows.iter().filter(|f| f.token == a.token).map(|f| f.amount);
                        total = total.saturating_sub(mine.fold(U256::ZERO, |t, x| t.saturating_add(x)));
                    }
                    spent.insert((a.token, a.period_secs), total);
                    windows.push(read);
                }
                guard.check_operation(operation, request.chain_id, request.module, now, |t: Address, p| {
                    spent.get(&(t, p)).copied().unwrap_or(U256::ZERO)
                })
            }
            Payload::Admin { admin } => guard.check_admin(admin, request.chain_id, request.module, now),
        }
        .map_err(|(rule, detail)| RootError::GuardDenied { rule, detail })?;
        Ok((assessment, windows))
    }

    fn approval_tag(&self, id: &str, digest: alloy::primitives::B256, by: &str) -> String {
        approval_tag(&self.approval_key, id, digest, by)
    }

    /// Checks made right before the HSM signs a stored, approved request: the approval is the
    /// service's own (an authenticated human approval, or the auto-approve rule, which the guard
    /// must still grant), and the guard passes again.
    fn verify_before_signing(&self, rec: &RequestRecord) -> Result<()> {
        let (assessment, _) = self.assess(&rec.request, now(), Some(rec))?;
        let by = rec.decided_by.as_deref().unwrap_or_default();
        if by == AUTO_APPROVER {
            if !assessment.auto_approve {
                return Err(RootError::Unauthorized(
                    "marked auto-approved, but the guard does not auto-approve it".into(),
                ));
            }
            return Ok(());
        }
        let (valid, need) = self.valid_approvals(rec)?;
        if valid.len() < need as usize {
            return Err(RootError::Unauthorized(format!(
                "request {} needs {need} approvals made through the service by configured approvers; it has {} ({})",
                rec.id,
                valid.len(),
                if valid.is_empty() { "none".to_owned() } else { valid.join(", ") }
            )));
        }
        Ok(())
    }

    /// Approvers needed for `rec` under the current rules.
    pub fn required_approvals(&self, rec: &RequestRecord) -> u32 {
        let admin = matches!(rec.request.payload, Payload::Admin { .. });
        self.config.approvals.required(admin, &rec.totals)
    }

    /// The approvers of `rec` whose approval carries the service's valid tag and who are approvers
    /// in the current configuration, and how many the rules need.
    fn valid_approvals(&self, rec: &RequestRecord) -> Result<(Vec<String>, u32)> {
        let mut valid = Vec::new();
        for a in self.store.approvals(&rec.id)? {
            let want = self.approval_tag(&rec.id, rec.digest, &a.approver);
            let tagged = bool::from(subtle::ConstantTimeEq::ct_eq(want.as_bytes(), a.tag.as_bytes()));
            if tagged && self.config.is_approver(&a.approver) && !valid.contains(&a.approver) {
                valid.push(a.approver);
            }
        }
        Ok((valid, self.required_approvals(rec)))
    }

    /// Who has approved `id` so far and how many approvals it needs.
    pub async fn approval_progress(&self, id: &str) -> Result<(Vec<super::store::Approval>, u32)> {
        in_place(|| {
            let rec = self.store.get(id)?;
            Ok((self.store.approvals(id)?, self.required_approvals(&rec)))
        })
    }

    /// The newest `limit` decisions on any request, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<Decision>> {
        in_place(|| self.store.audit_log(limit))
    }

    /// Records the approval of a pending request by `by` (an authenticated approver); once the
    /// approvers the rules require have approved, the request is approved and signed when the
    /// HSM is there. Until then it stays pending.
    pub async fn approve(&self, id: &str, by: &str) -> Result<RequestRecord> {
        if !self.config.is_approver(by) {
            return Err(RootError::Unauthorized(format!("{by} is not an approver")));
        }
        let (rec, signed) = in_place(|| -> Result<_> {
            let pending = self.store.get(id)?;
            let required = self.required_approvals(&pending);
            let tag = self.approval_tag(id, pending.digest, by);
            let rec = self.store.approve_tagged(id, by, now(), &tag, required)?;
            if rec.state == RequestState::Pending {
                tracing::info!(id, by, required, "approval recorded; more approvers needed");
                return Ok((rec, None));
            }
            tracing::info!(id, by, "request approved");
            self.metrics.decided("approved");
            let signed = self.sign(&rec);
            Ok((rec, Some(signed)))
        })?;
        let Some(signed) = signed else { return Ok(rec) };
        match signed {
            Ok(signed) => Ok(signed),
            Err(e) => {
                tracing::warn!(id, error = crate::error_chain(&e), "signing deferred");
                self.wake.notify_one();
                Ok(rec)
            }
        }
    }

    /// Rejects a pending request as `by` with `reason` (which must say something).
    pub async fn reject(&self, id: &str, by: &str, reason: &str) -> Result<RequestRecord> {
        if reason.trim().is_empty() {
            return Err(RootError::InvalidInput("a rejection needs a reason".into()));
        }
        let rec = in_place(|| self.store.reject(id, by, reason, now()))?;
        tracing::info!(id, by, reason, "request rejected");
        self.metrics.decided("rejected");
        Ok(rec)
    }

    /// Signs the digest of a request not stored yet (auto-approved), under the signing lock.
    fn sign_new(&self, digest: alloy::primitives::B256) -> Result<alloy::primitives::Signature> {
        let _one = hold(&self.sign_lock);
        let started = std::time::Instant::now();
        let sig = self.key.sign_digest(&digest);
        if sig.is_ok() {
            self.metrics.hsm_signed(started.elapsed());
            self.metrics.decided("signed");
        }
        sig
    }

    /// Signs an approved request with the HSM and stores the signature.
    ///
    /// # Security
    /// The digest signed is rebuilt from the stored payload; a row whose stored digest differs is
    /// refused. Only requests in state `approved` are signed.
    fn sign(&self, rec: &RequestRecord) -> Result<RequestRecord> {
        // One signing at a time, re-reading the row under the lock: the worker and an inline
        // approval never sign the same request twice.
        let _one = hold(&self.sign_lock);
        let rec = &self.store.get(&rec.id)?;
        if rec.state == RequestState::Signed {
            return Ok(rec.clone());
        }
        if rec.state != RequestState::Approved {
            return Err(RootError::NotPending { id: rec.id.clone(), state: rec.state.to_string() });
        }
        let digest = rec.request.digest();
        if digest != rec.digest {
            return Err(RootError::CorruptRecord {
                id: rec.id.clone(),
                field: "digest",
                source: "the stored digest is not the digest of the stored payload".into(),
            });
        }
        if let Err(e) = self.verify_before_signing(rec) {
            if !e.is_retryable() {
                let reason = format!("refused at signing: {}", crate::error_chain(&e));
                tracing::warn!(id = %rec.id, %reason, "approved request not signed");
                self.store.refuse_at_signing(&rec.id, &reason, now())?;
            }
            return Err(e);
        }
        let started = std::time::Instant::now();
        let sig = self.key.sign_digest(&digest)?;
        self.metrics.hsm_signed(started.elapsed());
        self.metrics.decided("signed");
        self.store.set_signed(&rec.id, &sig.as_bytes(), now())
    }

    /// One pass of the worker: expires what is due and signs what is approved. Returns how many
    /// requests were signed.
    pub async fn sign_pass(&self) -> usize {
        in_place(|| self.sign_pass_now())
    }

    fn sign_pass_now(&self) -> usize {
        if let Err(e) = self.store.expire_due(now()) {
            tracing::warn!(error = crate::error_chain(&e), "expiry pass failed");
        }
        let waiting = match self.store.awaiting_signature() {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = crate::error_chain(&e), "cannot read the queue");
                return 0;
            }
        };
        let mut signed = 0;
        for rec in waiting {
            match self.sign(&rec) {
                Ok(_) => signed += 1,
                Err(e) => {
                    tracing::warn!(id = %rec.id, error = crate::error_chain(&e), "cannot sign yet");
                    break;
                }
            }
        }
        signed
    }

    /// Runs the worker forever: a pass every `retry_interval_ms`, or sooner when woken.
    pub fn spawn_worker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let (keep, stop) = tokio::sync::watch::channel(false);
        let this = self.clone();
        tokio::spawn(async move {
            // The sender lives with the task, so `stop` never changes.
            let _keep = keep;
            this.work_until(stop).await;
        })
    }

    /// Like [`RootService::spawn_worker`], ending after the pass under way once `stop` turns true.
    pub fn spawn_worker_until(
        self: &Arc<Self>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.work_until(stop).await })
    }

    async fn work_until(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let every = Duration::from_millis(self.config.retry_interval_ms.max(10));
        while !*stop.borrow() {
            self.sign_pass().await;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Runs `f`, which blocks on the queue's disk writes and the HSM, on this thread: on a
/// multi-threaded runtime the thread's other tasks move to another worker meanwhile; on a
/// current-thread runtime (tests, one-shot CLI commands) it simply blocks. Handing each call to a
/// pool thread and waiting to be woken cost about as much as the work itself.
fn in_place<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The tag authenticating `by`'s approval of request `id` over `digest`: HMAC-SHA256 under the
/// approval key, which only the service's user can read.
fn approval_tag(key: &[u8; 32], id: &str, digest: alloy::primitives::B256, by: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in [b"treasury-root-approval-v1".as_slice(), id.as_bytes(), digest.as_slice(), by.as_bytes()] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Where the key authenticating approvals is kept: beside the queue, `<queue>.approval-key`.
pub fn approval_key_path(db: &std::path::Path) -> std::path::PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".approval-key");
    db.with_file_name(name)
}

/// Reads the approval key, or creates it (random, mode 0600) when absent.
fn load_or_create_approval_key(path: &std::path::Path) -> Result<Zeroizing<[u8; 32]>> {
    use rand_core::RngCore;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |source| RootError::ConfigFile { path: path.to_owned(), source };
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| RootError::Config(format!("approval key {}: not 32 bytes", path.display())))?;
            Ok(Zeroizing::new(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = Zeroizing::new([0u8; 32]);
            rand_core::OsRng.fill_bytes(&mut key[..]);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(bad)?;
            f.write_all(&key[..]).and_then(|()| f.sync_all()).map_err(bad)?;
            Ok(key)
        }
        Err(e) => Err(bad(e)),
    }
}

fn new_id() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[tokio::test]
    async fn the_period_cap_counts_live_requests_and_frees_rejected_ones() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let first = svc.submit(pay(60, 1), "agent").await.unwrap();
        assert_eq!(first.state, RequestState::Pending);
        svc.submit(pay(40, 2), "agent").await.unwrap();
        let err = svc.submit(pay(1, 3), "agent").await.unwrap_err();
        assert_eq!(err.guard_rule(), Some(GuardRule::PeriodCap), "{err}");
        svc.reject(&first.id, "alice", "no").await.unwrap();
        svc.submit(pay(60, 4), "agent").await.unwrap();
        let err = svc.submit(pay(1, 5), "agent").await.unwrap_err();
        assert_eq!(err.guard_rule(), Some(GuardRule::PeriodCap), "{err}");
        // A restarted service reads the same totals from the file.
        drop(svc);
        let svc = service(dir.path()).await;
        let err = svc.submit(pay(1, 6), "agent").await.unwrap_err();
        assert_eq!(err.guard_rule(), Some(GuardRule::PeriodCap), "{err}");
    }
}

/// A service the tests share.
#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::root::config::HsmSection;
    pub(super) use crate::root::guard::GuardRule;
    use crate::root::guard::{AssetLimits, GuardConfig, ServedModule};
    use alloy::primitives::U256;
    use treasury_chain::{Call, Operation};

    const MODULE: Address = Address::repeat_byte(0x4d);
    const TO: Address = Address::repeat_byte(0x01);

    /// A service whose HSM is absent (nothing is signed) with a 100 wei ETH cap per day.
    pub(super) async fn service(dir: &std::path::Path) -> Arc<RootService> {
        let pin = dir.join("pin");
        std::fs::write(&pin, "1234").unwrap();
        let config = ServiceConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            db: dir.join("q.sqlite"),
            approval_ttl_secs: 3600,
            retry_interval_ms: 1000,
            hsm: HsmSection {
                module: dir.join("absent.so"),
                token: "t".into(),
                key: "k".into(),
                pin_file: Some(pin),
                address: None,
            },
            guard: GuardConfig {
                modules: vec![ServedModule { chain_id: 1, module: MODULE }],
                recipients: vec![TO],
                assets: vec![AssetLimits {
                    token: Address::ZERO,
                    max_single: U256::from(100),
                    period_cap: U256::from(100),
                    period_secs: 86_400,
                    auto_approve_max: None,
                }],
                allowed_calls: vec![],
                max_deadline_secs: None,
            },
            clients: ["alice", "bob"]
                .map(|name| crate::root::config::ClientEntry {
                    name: name.into(),
                    role: crate::root::config::Role::Approver,
                    token_sha256: String::new(),
                    password_hash: None,
                })
                .to_vec(),
            approvals: crate::root::config::ApprovalsConfig {
                rules: vec![crate::root::config::ApprovalRule {
                    token: Address::ZERO,
                    above: U256::from(50),
                    approvers: 2,
                }],
                ..Default::default()
            },
            book: Default::default(),
        };
        RootService::open(config).await.unwrap()
    }

    pub(super) fn pay(wei: u64, nonce: u64) -> EscalationRequest {
        let op = Operation {
            calls: vec![Call::new(TO, U256::from(wei), Vec::<u8>::new())],
            nonce: U256::from(nonce),
            deadline: U256::from(now() + 600),
        };
        EscalationRequest::operation(op, 1, MODULE)
    }
}

#[cfg(test)]
mod approval_rules {
    use super::tests_support::*;
    use super::*;

    /// The two-person rule: above 50 wei, one approver's approval leaves the request pending, the
    /// same approver cannot count twice, a second approver approves it.
    #[tokio::test]
    async fn a_large_request_needs_two_distinct_approvers() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let big = svc.submit(pay(60, 1), "agent").await.unwrap();
        let after_alice = svc.approve(&big.id, "alice").await.unwrap();
        assert_eq!(after_alice.state, RequestState::Pending, "one of two approvals");
        let again = svc.approve(&big.id, "alice").await.unwrap_err();
        assert!(matches!(again, RootError::InvalidInput(_)), "{again}");
        assert_eq!(svc.get(&big.id).await.unwrap().state, RequestState::Pending);
        let (approvals, need) = svc.approval_progress(&big.id).await.unwrap();
        assert_eq!((approvals.len(), need), (1, 2));
        let after_bob = svc.approve(&big.id, "bob").await.unwrap();
        assert_eq!(after_bob.state, RequestState::Approved, "two of two (the HSM is away: not signed)");
        let small = svc.submit(pay(10, 2), "agent").await.unwrap();
        assert_eq!(svc.approve(&small.id, "alice").await.unwrap().state, RequestState::Approved);
        let stranger = svc.approve(&small.id, "mallory").await.unwrap_err();
        assert!(matches!(stranger, RootError::Unauthorized(_)), "{stranger}");
    }

    /// Attack: a request approved by one approver (the rule was 1 of m when it was approved, or
    /// the row was marked approved in the file) is not signed while the rules need two.
    #[tokio::test]
    async fn one_approval_is_refused_at_signing_when_the_rule_needs_two() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let big = svc.submit(pay(60, 1), "agent").await.unwrap();
        let tag = svc.approval_tag(&big.id, big.digest, "alice");
        let approved = svc.store().approve_tagged(&big.id, "alice", now(), &tag, 1).unwrap();
        assert_eq!(approved.state, RequestState::Approved);
        svc.sign_pass().await;
        let after = svc.get(&big.id).await.unwrap();
        assert_eq!(after.state, RequestState::Rejected, "refused at signing");
        assert!(after.reason.unwrap_or_default().contains("needs 2 approvals"));
    }

    /// A rejection needs a reason; the decision log cannot be rewritten.
    #[tokio::test]
    async fn a_rejection_needs_a_reason_and_the_log_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let r = svc.submit(pay(10, 1), "agent").await.unwrap();
        assert!(matches!(svc.reject(&r.id, "alice", "  ").await, Err(RootError::InvalidInput(_))));
        svc.reject(&r.id, "alice", "not this month").await.unwrap();
        let log = svc.audit_log(10).await.unwrap();
        assert_eq!(log[0].action, "reject");
        assert_eq!(log[0].reason.as_deref(), Some("not this month"));
        let conn = rusqlite::Connection::open(dir.path().join("q.sqlite")).unwrap();
        let edit = conn.execute("UPDATE decisions SET by = 'bob'", []);
        assert!(edit.unwrap_err().to_string().contains("append-only"));
        assert!(conn.execute("DELETE FROM decisions", []).is_err());
    }
}
