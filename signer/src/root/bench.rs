//! `treasury root bench`: root signature latency through the service (HTTP, guard, SQLite queue,
//! auto-approval, HSM) against the bare PKCS#11 `C_Sign`, in the same run on the same token.
use std::path::Path;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256, keccak256};
use serde::Serialize;
use treasury_chain::{Call, Operation};

use super::client::RootClient;
use super::config::{ClientEntry, HsmSection, Role, ServiceConfig, new_token};
use super::error::{Result, RootError};
use super::guard::{AssetLimits, GuardConfig, ServedModule};
use super::request::EscalationRequest;
use super::service::{RootService, now};
use super::signer::RootKey;
use super::store::{Durability, RequestState};

/// Latency percentiles of one measured path, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let at = |q: f64| us(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
        let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
        Self { n: samples.len(), p50_us: at(0.5), p99_us: at(0.99), mean_us: mean }
    }
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Bare `C_Sign(CKM_ECDSA)` on a 32-byte digest.
    pub bare_c_sign: Stats,
    /// `C_Sign` plus low-s normalisation and recovery-id trial.
    pub sign_and_recover: Stats,
    /// A full escalation request over loopback HTTP, auto-approved, signed, and recorded with every
    /// commit flushed to disk before the answer (what the service does).
    pub service: Stats,
    /// The same with commits not flushed (`synchronous = NORMAL`): what the disk flush costs is the
    /// difference. Not a mode the service runs in.
    pub service_without_flush: Stats,
}

/// Runs the benchmark with `n` samples per path; the service's queue lives in `dir`.
pub async fn run(hsm: HsmSection, dir: &Path, n: usize) -> Result<BenchReport> {
    let n = n.max(1);
    let key = RootKey::new(hsm.resolve()?, None);
    key.connect()?;
    let digests: Vec<B256> = (0..n as u64).map(|i| keccak256(i.to_be_bytes())).collect();
    let mut bare = Vec::with_capacity(n);
    for d in &digests {
        let t = Instant::now();
        key.raw_sign(d)?;
        bare.push(t.elapsed());
    }
    let mut full = Vec::with_capacity(n);
    for d in &digests {
        let t = Instant::now();
        key.sign_digest(d)?;
        full.push(t.elapsed());
    }

    let service = through_service(&hsm, dir, n, Durability::Flushed).await?;
    let service_without_flush = through_service(&hsm, dir, n, Durability::ProcessCrashOnly).await?;
    Ok(BenchReport {
        bare_c_sign: Stats::of(bare),
        sign_and_recover: Stats::of(full),
        service,
        service_without_flush,
    })
}

/// `n` requests through a fresh service (its own queue file in `dir`) with the given durability.
async fn through_service(hsm: &HsmSection, dir: &Path, n: usize, durability: Durability) -> Result<Stats> {
    let module = Address::repeat_byte(0x4d);
    let to = Address::repeat_byte(0x01);
    let (token, hash) = new_token();
    let config = ServiceConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        db: dir.join(format!("bench-queue-{durability:?}.sqlite")),
        approval_ttl_secs: 3600,
        retry_interval_ms: 1000,
        hsm: hsm.clone(),
        guard: GuardConfig {
            modules: vec![ServedModule { chain_id: 1, module }],
            recipients: vec![to],
            assets: vec![AssetLimits {
                token: Address::ZERO,
                max_single: U256::MAX,
                period_cap: U256::MAX,
                period_secs: 86_400,
                auto_approve_max: Some(U256::MAX),
            }],
            allowed_calls: vec![],
            max_deadline_secs: None,
        },
        clients: vec![ClientEntry {
            name: "bench".into(),
            role: Role::Requester,
            token_sha256: hash,
            password_hash: None,
        }],
        approvals: Default::default(),
        book: Default::default(),
    };
    let svc = RootService::open_with(config, durability).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| RootError::Listen { what: "bind 127.0.0.1", source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| RootError::Listen { what: "read the bound address", source })?;
    let url = format!("http://{addr}");
    let server = tokio::spawn(super::http::serve(svc, listener));
    let client = RootClient::new(url, token.as_str());
    let deadline = U256::from(now() + 3600);
    let mut service = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let op = Operation {
            calls: vec![Call::new(to, U256::from(1), Vec::<u8>::new())],
            nonce: U256::from(i),
            deadline,
        };
        let t = Instant::now();
        let rec = client.submit(&EscalationRequest::operation(op, 1, module)).await?;
        service.push(t.elapsed());
        if rec.state != RequestState::Signed {
            return Err(RootError::NotPending { id: rec.id, state: rec.state.to_string() });
        }
    }
    server.abort();
    Ok(Stats::of(service))
}
