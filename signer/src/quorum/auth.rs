//! Authentication both ways: the coordinator signs each request, the node signs each answer.
//!
//! Request header `x-treasury-auth: <coordinator key hex>.<unix ms>.<request id hex>.<sig hex>`,
//! signature over `H("req" ‖ method ‖ path ‖ ms ‖ id ‖ H(body))`. A node accepts only configured
//! coordinator keys, a clock skew of at most [`MAX_SKEW_MS`], and each request id once.
//! Answer header `x-treasury-node-sig: <sig hex>` over `H("resp" ‖ request id ‖ status ‖ H(body))`,
//! checked by the coordinator against the node's pinned key: an answer cannot be forged by a
//! man in the middle nor replayed for another request.
use std::collections::HashMap;
use std::sync::Mutex;

use rand_core::{OsRng, RngCore};

use super::error::{Refusal, RefusalCode};
use super::identity::{IdentityKey, IdentityPublic, hash_parts};

/// Request authentication header.
pub const AUTH_HEADER: &str = "x-treasury-auth";
/// Answer signature header.
pub const NODE_SIG_HEADER: &str = "x-treasury-node-sig";
/// Largest accepted clock difference between coordinator and node.
pub const MAX_SKEW_MS: u64 = 120_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn request_message(method: &str, path: &str, ms: u64, rid: &str, body: &[u8]) -> [u8; 32] {
    let body_hash = hash_parts(&[body]);
    hash_parts(&[
        b"treasury-quorum-req-v1",
        method.as_bytes(),
        path.as_bytes(),
        &ms.to_be_bytes(),
        rid.as_bytes(),
        &body_hash,
    ])
}

fn response_message(rid: &str, status: u16, body: &[u8]) -> [u8; 32] {
    let body_hash = hash_parts(&[body]);
    hash_parts(&[b"treasury-quorum-resp-v1", rid.as_bytes(), &status.to_be_bytes(), &body_hash])
}

/// Builds the auth header for a request; returns (header value, request id).
///
/// # Security
/// The coordinator key MUST be the one pinned in each node's config; each header is single-use.
pub fn sign_request(key: &IdentityKey, method: &str, path: &str, body: &[u8]) -> (String, String) {
    let mut rid = [0u8; 16];
    OsRng.fill_bytes(&mut rid);
    let rid = hex::encode(rid);
    let ms = now_ms();
    let sig = key.sign(&request_message(method, path, ms, &rid, body));
    (format!("{}.{ms}.{rid}.{}", key.public().to_hex(), hex::encode(sig)), rid)
}

/// Signs an answer to request `rid`.
pub fn sign_response(key: &IdentityKey, rid: &str, status: u16, body: &[u8]) -> String {
    hex::encode(key.sign(&response_message(rid, status, body)))
}

/// True when `sig_hex` is `node`'s signature over the answer to request `rid`.
pub fn verify_response(node: &IdentityPublic, rid: &str, status: u16, body: &[u8], sig_hex: &str) -> bool {
    hex::decode(sig_hex).is_ok_and(|sig| node.verify(&response_message(rid, status, body), &sig))
}

/// A node's request verifier: allowed coordinator keys and recently seen request ids.
#[derive(Debug)]
pub struct RequestVerifier {
    allowed: Vec<IdentityPublic>,
    seen: Mutex<HashMap<String, u64>>,
}

impl RequestVerifier {
    /// A verifier accepting the given coordinator keys.
    pub fn new(allowed: Vec<IdentityPublic>) -> Self {
        Self { allowed, seen: Mutex::new(HashMap::new()) }
    }

    /// Checks a request's auth header; returns the request id to bind the answer to.
    pub fn verify(
        &self,
        header: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<String, Refusal> {
        let deny = |why: &str| Refusal::new(RefusalCode::Unauthenticated, why.to_string());
        let header = header.ok_or_else(|| deny("missing x-treasury-auth header"))?;
        let parts: Vec<&str> = header.split('.').collect();
        let [key, ms, rid, sig] = parts.as_slice() else { return Err(deny("malformed auth header")) };
        let key = IdentityPublic::from_hex(key).map_err(|_| deny("malformed coordinator key"))?;
        if !self.allowed.contains(&key) {
            return Err(deny("request signed by a key that is not a configured coordinator"));
        }
        let ms: u64 = ms.parse().map_err(|_| deny("malformed timestamp"))?;
        let now = now_ms();
        if now.abs_diff(ms) > MAX_SKEW_MS {
            return Err(deny("request timestamp outside the accepted window"));
        }
        let sig = hex::decode(sig).map_err(|_| deny("malformed signature"))?;
        if !key.verify(&request_message(method, path, ms, rid, body), &sig) {
            return Err(deny("bad request signature"));
        }
        let mut seen = self.seen.lock().expect("seen lock");
        seen.retain(|_, at| now.saturating_sub(*at) <= 2 * MAX_SKEW_MS);
        if seen.insert(rid.to_string(), ms).is_some() {
            return Err(deny("replayed request"));
        }
        Ok(rid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_fresh_unreplayed_requests_pass() {
        let coord = IdentityKey::generate();
        let v = RequestVerifier::new(vec![coord.public()]);
        let (h, rid) = sign_request(&coord, "POST", "/v1/sign", b"{}");
        assert_eq!(v.verify(Some(&h), "POST", "/v1/sign", b"{}").unwrap(), rid);
        assert!(v.verify(Some(&h), "POST", "/v1/sign", b"{}").unwrap_err().reason.contains("replayed"));
        let (h2, _) = sign_request(&coord, "POST", "/v1/sign", b"{}");
        assert!(v.verify(Some(&h2), "POST", "/v1/sign", b"{\"x\":1}").is_err());
        assert!(v.verify(Some(&h2), "POST", "/v1/commitments", b"{}").is_err());
        let (h3, _) = sign_request(&IdentityKey::generate(), "POST", "/v1/sign", b"{}");
        assert!(v.verify(Some(&h3), "POST", "/v1/sign", b"{}").is_err());
        assert!(v.verify(None, "POST", "/v1/sign", b"{}").is_err());
    }

    #[test]
    fn answers_bind_to_node_key_and_request() {
        let node = IdentityKey::generate();
        let sig = sign_response(&node, "r1", 200, b"body");
        assert!(verify_response(&node.public(), "r1", 200, b"body", &sig));
        assert!(!verify_response(&node.public(), "r2", 200, b"body", &sig));
        assert!(!verify_response(&node.public(), "r1", 200, b"other", &sig));
        assert!(!verify_response(&IdentityKey::generate().public(), "r1", 200, b"body", &sig));
    }
}
