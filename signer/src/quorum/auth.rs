//! Authentication both ways: the coordinator authenticates each request, the node each answer.
//!
//! Coordinator and node pin each other's identity keys (the node's config names the coordinator
//! keys it accepts, the quorum file each node's key). From such a pair both sides derive the same
//! two 32-byte keys, once, by static ECDH and HKDF-SHA256 (one key per direction, bound to both
//! public keys: [`PairKeys`]), and tag every request and answer with HMAC-SHA256 under them. Only
//! the holder of one of the two identity secrets can compute a tag, so between these two parties
//! a tag proves origin as a signature would, for about 1 µs instead of an ECDSA signature
//! (~60 µs) and its verification (~110 µs) on every request and answer. A tag convinces only the
//! other party, never a third; nothing here relies on that.
//!
//! Request header `x-treasury-auth: <coordinator key hex>.<unix ms>.<request id hex>.<tag hex>`,
//! tag over `H("req" ‖ method ‖ path ‖ ms ‖ id ‖ H(body))`; where the coordinator does not know the
//! node's key yet (`/v1/identity`, before DKG) the tag is instead an ECDSA signature by the
//! coordinator key over the same message. A node accepts only configured
//! coordinator keys, a clock skew of at most [`MAX_SKEW_MS`], and each request id once.
//! Answer header `x-treasury-node-mac: <tag hex>` over `H("resp" ‖ request id ‖ status ‖ H(body))`,
//! checked by the coordinator with the keys of the node it asked: an answer cannot be forged by a
//! man in the middle nor replayed for another request.
use std::collections::HashMap;
use std::sync::Mutex;

use hkdf::hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::error::{Refusal, RefusalCode};
use super::identity::{IdentityKey, IdentityPublic, hash_parts};

/// Request authentication header.
pub const AUTH_HEADER: &str = "x-treasury-auth";
/// Answer authentication header.
pub const NODE_MAC_HEADER: &str = "x-treasury-node-mac";
/// Most refusals per minute a node tags for keys that are not configured coordinators (each costs
/// a static ECDH); beyond it such refusals go out untagged.
pub const UNKNOWN_KEY_TAGS_PER_MINUTE: usize = 64;
/// Largest accepted clock difference between coordinator and node.
pub const MAX_SKEW_MS: u64 = 120_000;

const KEY_CONTEXT: &[u8] = b"treasury-quorum-auth-v1";

/// The two MAC keys one coordinator and one node share: requests, answers.
///
/// # Security
/// Derived from static ECDH between the pinned identity keys; each side holds one secret, so a
/// valid tag comes from one of the two. The keys zeroize on drop and are never logged.
#[derive(Clone)]
pub struct PairKeys {
    request: Zeroizing<[u8; 32]>,
    answer: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for PairKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairKeys(..)")
    }
}

impl PairKeys {
    /// The coordinator's side of its pair with `node`.
    pub fn for_coordinator(me: &IdentityKey, node: &IdentityPublic) -> Self {
        Self::derive(me, node, &me.public(), node)
    }

    /// The node's side of its pair with `coordinator`.
    pub fn for_node(me: &IdentityKey, coordinator: &IdentityPublic) -> Self {
        Self::derive(me, coordinator, coordinator, &me.public())
    }

    fn derive(
        me: &IdentityKey,
        peer: &IdentityPublic,
        coordinator: &IdentityPublic,
        node: &IdentityPublic,
    ) -> Self {
        let context =
            |dir: &[u8]| [KEY_CONTEXT, dir, coordinator.sec1().as_slice(), node.sec1().as_slice()].concat();
        Self {
            request: me.shared_key(peer, &context(b"/request/")),
            answer: me.shared_key(peer, &context(b"/answer/")),
        }
    }
}

fn tag(key: &[u8; 32], msg: &[u8; 32]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn tag_ok(key: &[u8; 32], msg: &[u8; 32], tag_hex: &str) -> bool {
    let Ok(t) = hex::decode(tag_hex) else { return false };
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    // constant-time comparison
    mac.verify_slice(&t).is_ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn request_message(method: &str, path: &str, ms: u64, rid: &str, body: &[u8]) -> [u8; 32] {
    let body_hash = hash_parts(&[body]);
    hash_parts(&[
        b"treasury-quorum-req-v2",
        method.as_bytes(),
        path.as_bytes(),
        &ms.to_be_bytes(),
        rid.as_bytes(),
        &body_hash,
    ])
}

fn response_message(rid: &str, status: u16, body: &[u8]) -> [u8; 32] {
    let body_hash = hash_parts(&[body]);
    hash_parts(&[b"treasury-quorum-resp-v2", rid.as_bytes(), &status.to_be_bytes(), &body_hash])
}

/// Builds the auth header for a request from coordinator `me` to the node `keys` pair with;
/// returns (header value, request id).
///
/// # Security
/// The coordinator key MUST be the one pinned in each node's config; each header is single-use.
pub fn sign_request(
    me: &IdentityPublic,
    keys: &PairKeys,
    method: &str,
    path: &str,
    body: &[u8],
) -> (String, String) {
    let mut rid = [0u8; 16];
    OsRng.fill_bytes(&mut rid);
    let rid = hex::encode(rid);
    let ms = now_ms();
    let t = tag(&keys.request, &request_message(method, path, ms, &rid, body));
    (format!("{}.{ms}.{rid}.{}", me.to_hex(), hex::encode(t)), rid)
}

/// Builds an auth header signed (ECDSA) with the coordinator key itself, for a node whose key the
/// coordinator does not know yet (`/v1/identity` before DKG); returns (header value, request id).
pub fn sign_request_with_key(me: &IdentityKey, method: &str, path: &str, body: &[u8]) -> (String, String) {
    let mut rid = [0u8; 16];
    OsRng.fill_bytes(&mut rid);
    let rid = hex::encode(rid);
    let ms = now_ms();
    let sig = me.sign(&request_message(method, path, ms, &rid, body));
    (format!("{}.{ms}.{rid}.{}", me.public().to_hex(), hex::encode(sig)), rid)
}

/// Tags an answer to request `rid`.
pub fn sign_response(keys: &PairKeys, rid: &str, status: u16, body: &[u8]) -> String {
    hex::encode(tag(&keys.answer, &response_message(rid, status, body)))
}

/// True when `tag_hex` is the node's tag (under `keys`) over the answer to request `rid`.
pub fn verify_response(keys: &PairKeys, rid: &str, status: u16, body: &[u8], tag_hex: &str) -> bool {
    tag_ok(&keys.answer, &response_message(rid, status, body), tag_hex)
}

/// What a node learned from a request's auth header.
#[derive(Debug)]
pub struct Checked {
    /// The request id the answer is bound to (empty when the header names none).
    pub rid: String,
    /// Keys to tag the answer with, when the header names a well-formed coordinator key.
    pub keys: Option<PairKeys>,
    /// Accepted, or refused with why.
    pub verdict: Result<(), Refusal>,
}

/// A node's request verifier: its pairs with the allowed coordinators and recently seen request ids.
pub struct RequestVerifier {
    me: IdentityKey,
    allowed: Vec<(IdentityPublic, PairKeys)>,
    seen: Mutex<HashMap<String, u64>>,
    /// (minute, refusals tagged for unknown keys in it).
    unknown_tags: Mutex<(u64, usize)>,
}

impl std::fmt::Debug for RequestVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestVerifier").field("allowed", &self.allowed.len()).finish_non_exhaustive()
    }
}

impl RequestVerifier {
    /// A verifier for node `me` accepting the given coordinator keys (pair keys derived once here).
    pub fn new(me: &IdentityKey, allowed: Vec<IdentityPublic>) -> Self {
        let allowed = allowed.into_iter().map(|k| (k, PairKeys::for_node(me, &k))).collect();
        Self { me: me.clone(), allowed, seen: Mutex::new(HashMap::new()), unknown_tags: Mutex::new((0, 0)) }
    }

    /// Checks a request's auth header.
    ///
    /// A refused request still gets the id and (if its header names a key) the keys to tag the
    /// refusal with, so that the caller can check who refused.
    pub fn verify(&self, header: Option<&str>, method: &str, path: &str, body: &[u8]) -> Checked {
        let mut out = Checked { rid: String::new(), keys: None, verdict: Ok(()) };
        out.verdict = self.check(header, method, path, body, &mut out.rid, &mut out.keys);
        out
    }

    /// Whether one more refusal to an unknown key may be tagged this minute.
    fn may_tag_unknown(&self) -> bool {
        let minute = now_ms() / 60_000;
        let mut w = self.unknown_tags.lock().expect("unknown tags lock");
        if w.0 != minute {
            *w = (minute, 0);
        }
        w.1 += 1;
        w.1 <= UNKNOWN_KEY_TAGS_PER_MINUTE
    }

    fn check(
        &self,
        header: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
        rid_out: &mut String,
        keys_out: &mut Option<PairKeys>,
    ) -> Result<(), Refusal> {
        let deny = |why: &str| Refusal::new(RefusalCode::Unauthenticated, why.to_string());
        let header = header.ok_or_else(|| deny("missing x-treasury-auth header"))?;
        let parts: Vec<&str> = header.split('.').collect();
        let [key, ms, rid, t] = parts.as_slice() else { return Err(deny("malformed auth header")) };
        *rid_out = (*rid).to_string();
        let key = IdentityPublic::from_hex(key).map_err(|_| deny("malformed coordinator key"))?;
        let Some((_, keys)) = self.allowed.iter().find(|(k, _)| *k == key) else {
            // Tag the refusal for whoever holds that key (derived here, on this path only), within
            // a budget of ECDH work per minute: anyone can name a fresh key.
            if self.may_tag_unknown() {
                *keys_out = Some(PairKeys::for_node(&self.me, &key));
            }
            return Err(deny("request signed by a key that is not a configured coordinator"));
        };
        *keys_out = Some(keys.clone());
        let ms: u64 = ms.parse().map_err(|_| deny("malformed timestamp"))?;
        let now = now_ms();
        if now.abs_diff(ms) > MAX_SKEW_MS {
            return Err(deny("request timestamp outside the accepted window"));
        }
        let msg = request_message(method, path, ms, rid, body);
        // A 32-byte tag under the pair keys, or a 64-byte ECDSA signature by the coordinator key.
        let valid = match t.len() {
            64 => tag_ok(&keys.request, &msg, t),
            128 => hex::decode(t).is_ok_and(|sig| key.verify(&msg, &sig)),
            _ => false,
        };
        if !valid {
            return Err(deny("bad request signature"));
        }
        let mut seen = self.seen.lock().expect("seen lock");
        seen.retain(|_, at| now.saturating_sub(*at) <= 2 * MAX_SKEW_MS);
        if seen.insert((*rid).to_string(), ms).is_some() {
            return Err(deny("replayed request"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_fresh_unreplayed_requests_pass() {
        let coord = IdentityKey::generate();
        let node = IdentityKey::generate();
        let v = RequestVerifier::new(&node, vec![coord.public()]);
        let keys = PairKeys::for_coordinator(&coord, &node.public());
        let req = |m: &str, p: &str, b: &[u8]| sign_request(&coord.public(), &keys, m, p, b);
        let (h, rid) = req("POST", "/v1/sign", b"{}");
        let ok = v.verify(Some(&h), "POST", "/v1/sign", b"{}");
        assert!(ok.verdict.is_ok());
        assert_eq!(ok.rid, rid);
        let replay = v.verify(Some(&h), "POST", "/v1/sign", b"{}");
        assert!(replay.verdict.unwrap_err().reason.contains("replayed"));
        let (h2, _) = req("POST", "/v1/sign", b"{}");
        assert!(v.verify(Some(&h2), "POST", "/v1/sign", b"{\"x\":1}").verdict.is_err());
        assert!(v.verify(Some(&h2), "POST", "/v1/commitments", b"{}").verdict.is_err());
        // a key that is not configured, and a configured key with a tag made under other keys
        let other = IdentityKey::generate();
        let (h3, _) = sign_request(
            &other.public(),
            &PairKeys::for_coordinator(&other, &node.public()),
            "POST",
            "/",
            b"",
        );
        let refused = v.verify(Some(&h3), "POST", "/", b"");
        assert!(refused.verdict.is_err() && refused.keys.is_some());
        let (h4, _) = sign_request(
            &coord.public(),
            &PairKeys::for_coordinator(&other, &node.public()),
            "POST",
            "/",
            b"",
        );
        assert!(v.verify(Some(&h4), "POST", "/", b"").verdict.unwrap_err().reason.contains("bad request"));
        assert!(v.verify(None, "POST", "/v1/sign", b"{}").verdict.is_err());
        // signed with the coordinator key itself (identity requests): accepted from a configured key only
        let (h5, _) = sign_request_with_key(&coord, "GET", "/v1/identity", b"");
        assert!(v.verify(Some(&h5), "GET", "/v1/identity", b"").verdict.is_ok());
        assert!(v.verify(Some(&h5), "GET", "/v1/identity", b"").verdict.is_err(), "replayed");
        let (h6, _) = sign_request_with_key(&other, "GET", "/v1/identity", b"");
        assert!(v.verify(Some(&h6), "GET", "/v1/identity", b"").verdict.is_err());
    }

    #[test]
    fn answers_bind_to_the_pair_and_the_request() {
        let coord = IdentityKey::generate();
        let node = IdentityKey::generate();
        let at_node = PairKeys::for_node(&node, &coord.public());
        let at_coord = PairKeys::for_coordinator(&coord, &node.public());
        let t = sign_response(&at_node, "r1", 200, b"body");
        assert!(verify_response(&at_coord, "r1", 200, b"body", &t));
        assert!(!verify_response(&at_coord, "r2", 200, b"body", &t));
        assert!(!verify_response(&at_coord, "r1", 201, b"body", &t));
        assert!(!verify_response(&at_coord, "r1", 200, b"other", &t));
        // another node's answer does not pass for this node's
        let impostor = PairKeys::for_node(&IdentityKey::generate(), &coord.public());
        assert!(!verify_response(
            &at_coord,
            "r1",
            200,
            b"body",
            &sign_response(&impostor, "r1", 200, b"body")
        ));
        // a request's tag does not pass as an answer's
        let (h, rid) = sign_request(&coord.public(), &at_coord, "POST", "/", b"");
        let req_tag = h.rsplit('.').next().unwrap();
        assert!(!verify_response(&at_coord, &rid, 200, b"", req_tag));
    }

    /// Attack (issue 13 item 11): an unauthenticated client sends requests naming a fresh random
    /// key each time, and the node runs static ECDH for every one of them to tag its refusal. The
    /// work spent on keys that are not configured is capped.
    #[test]
    fn ecdh_work_for_unknown_keys_is_capped() {
        let node = IdentityKey::generate();
        let v = RequestVerifier::new(&node, vec![IdentityKey::generate().public()]);
        let mut tagged = 0;
        for _ in 0..300 {
            let stranger = IdentityKey::generate();
            let keys = PairKeys::for_coordinator(&stranger, &node.public());
            let (h, _) = sign_request(&stranger.public(), &keys, "POST", "/v1/sign", b"{}");
            let refused = v.verify(Some(&h), "POST", "/v1/sign", b"{}");
            assert!(refused.verdict.is_err());
            tagged += usize::from(refused.keys.is_some());
        }
        assert!(tagged <= 2 * UNKNOWN_KEY_TAGS_PER_MINUTE, "{tagged} refusals to unknown keys were tagged");
        assert!(tagged > 0, "the first unknown keys still get a tagged refusal");
    }
}
