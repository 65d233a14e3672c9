//! The coordinator's HTTP client for nodes: authenticates each request, checks each answer's tag.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::{
    AUTH_HEADER, NODE_MAC_HEADER, PairKeys, sign_request, sign_request_with_key, verify_response,
};
use super::error::{NodeFault, Refusal};
use super::identity::{IdentityKey, IdentityPublic};
use super::wire::{IdentityInfo, RefusalBody};

/// A timeout is [`NodeFault::TimedOut`]; any other transport failure is [`NodeFault::Unreachable`]
/// with the whole chain (reqwest's own message leaves out why, e.g. "connection refused").
fn transport_fault(e: reqwest::Error, timeout: Duration) -> NodeFault {
    if e.is_timeout() { NodeFault::TimedOut(timeout) } else { NodeFault::Unreachable(crate::error_chain(&e)) }
}

/// An authenticated client (one per coordinator; cheap to clone).
#[derive(Clone, Debug)]
pub struct NodeClient {
    key: IdentityKey,
    public: IdentityPublic,
    http: reqwest::Client,
    pairs: Arc<Mutex<HashMap<[u8; 33], PairKeys>>>,
}

impl NodeClient {
    /// A client signing with the coordinator key `key`.
    pub fn new(key: IdentityKey) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            // Nodes close a connection idle for their 10 s header timeout: let it go first, so a
            // request never lands on a connection the node is closing.
            .pool_idle_timeout(Duration::from_secs(8))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client with default TLS settings");
        Self { public: key.public(), key, http, pairs: Arc::default() }
    }

    /// The coordinator's public key.
    pub fn public(&self) -> IdentityPublic {
        self.public
    }

    /// The keys this coordinator shares with `node` (ECDH once per node, then cached).
    fn pair(&self, node: &IdentityPublic) -> PairKeys {
        let id = node.sec1();
        if let Some(k) = self.pairs.lock().expect("pairs lock").get(&id) {
            return k.clone();
        }
        let k = PairKeys::for_coordinator(&self.key, node);
        self.pairs.lock().expect("pairs lock").insert(id, k.clone());
        k
    }

    /// POSTs `body` to `url{path}` signed, and returns the answer verified against `node`'s key.
    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        url: &str,
        node: &IdentityPublic,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, NodeFault> {
        let bytes = serde_json::to_vec(body).map_err(|e| NodeFault::Malformed(e.to_string()))?;
        let keys = self.pair(node);
        let (auth, rid) = sign_request(&self.public, &keys, "POST", path, &bytes);
        let resp = self
            .http
            .post(format!("{}{path}", url.trim_end_matches('/')))
            .header(AUTH_HEADER, auth)
            .header("content-type", "application/json")
            .body(bytes)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_fault(e, timeout))?;
        let status = resp.status().as_u16();
        let sig = resp.headers().get(NODE_MAC_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.bytes().await.map_err(|e| transport_fault(e, timeout))?;
        match sig {
            Some(sig) if verify_response(&keys, &rid, status, &body, &sig) => {}
            _ => return Err(NodeFault::BadResponseSignature),
        }
        if (200..300).contains(&status) {
            serde_json::from_slice(&body).map_err(|e| NodeFault::Malformed(e.to_string()))
        } else {
            let r: Refusal = serde_json::from_slice::<RefusalBody>(&body)
                .map(|b| b.refusal)
                .map_err(|e| NodeFault::Malformed(format!("status {status}: {e}")))?;
            Err(NodeFault::Refused(r))
        }
    }

    /// `GET /v1/health`: keeps a pooled connection to the node warm (its answer proves nothing and
    /// is not authenticated; only whether it came).
    pub async fn health(&self, url: &str, timeout: Duration) -> Result<(), NodeFault> {
        let resp = self
            .http
            .get(format!("{}/v1/health", url.trim_end_matches('/')))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_fault(e, timeout))?;
        resp.bytes().await.map_err(|e| transport_fault(e, timeout))?;
        Ok(())
    }

    /// Fetches a node's identity; the answer must be tagged by the holder of the key it announces.
    ///
    /// The node's key is not known yet, so the request is signed with the coordinator key itself;
    /// the answer's tag under the pair keys proves the node holds the announced key.
    pub async fn identity(&self, url: &str, timeout: Duration) -> Result<IdentityInfo, NodeFault> {
        let (auth, rid) = sign_request_with_key(&self.key, "GET", "/v1/identity", b"");
        let resp = self
            .http
            .get(format!("{}/v1/identity", url.trim_end_matches('/')))
            .header(AUTH_HEADER, auth)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_fault(e, timeout))?;
        let status = resp.status().as_u16();
        let sig = resp.headers().get(NODE_MAC_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.bytes().await.map_err(|e| transport_fault(e, timeout))?;
        if !(200..300).contains(&status) {
            let r = serde_json::from_slice::<RefusalBody>(&body)
                .map_err(|e| NodeFault::Malformed(e.to_string()))?;
            return Err(NodeFault::Refused(r.refusal));
        }
        let info: IdentityInfo =
            serde_json::from_slice(&body).map_err(|e| NodeFault::Malformed(e.to_string()))?;
        let key =
            IdentityPublic::from_hex(&info.identity_key).map_err(|e| NodeFault::Malformed(e.to_string()))?;
        match sig {
            Some(sig) if verify_response(&self.pair(&key), &rid, status, &body, &sig) => Ok(info),
            _ => Err(NodeFault::BadResponseSignature),
        }
    }
}
