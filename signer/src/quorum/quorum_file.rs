//! The quorum file: written by `treasury dkg`, read by the coordinator.
//!
//! ```toml
//! threshold = 3
//! coordinator_key = "coordinator.key"   # sealed key file, relative to this file
//! group_key = "02…"                     # SEC1 compressed
//! group_key_x = "0x…"                   # what the module takes: x and parity
//! group_key_parity = 0
//! public_key_package = "…"              # frost PublicKeyPackage, hex (verifying shares)
//! [[node]]
//! url = "http://127.0.0.1:7001"
//! identifier = "…"
//! identity_key = "02…"
//! fingerprint = "…"                     # pinned out of band
//! [refresh]                             # the last share refresh, once there was one
//! id = "…"
//! pending = ["http://127.0.0.1:7003"]   # nodes not yet activated (`treasury dkg refresh --activate`)
//! ```
use std::path::{Path, PathBuf};

use alloy::primitives::U256;
use serde::{Deserialize, Serialize};

use super::error::QuorumError;
use super::store::write_durable;

/// One node as the quorum pins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumNode {
    /// Base URL.
    pub url: String,
    /// FROST identifier, hex.
    pub identifier: String,
    /// Identity key, compressed hex.
    pub identity_key: String,
    /// Fingerprint of the identity key, pinned out of band.
    pub fingerprint: String,
    /// The node's signature (identity key, hex) over the group key and roster
    /// ([`attestation_message`]), made when it committed its share.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attestation: String,
}

/// What a node signs to attest a DKG's outcome: the group key, the threshold and every member's
/// (identifier, identity key), in identifier order.
pub fn attestation_message(group_key: &str, threshold: u16, members: &[(String, String)]) -> [u8; 32] {
    let mut members = members.to_vec();
    members.sort();
    let t = threshold.to_be_bytes();
    let mut parts: Vec<&[u8]> = vec![b"treasury-group-key-attestation-v1", group_key.as_bytes(), &t];
    for (id, key) in &members {
        parts.push(id.as_bytes());
        parts.push(key.as_bytes());
    }
    super::identity::hash_parts(&parts)
}

/// The quorum file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumFile {
    /// Threshold t.
    pub threshold: u16,
    /// Path to the sealed coordinator key (relative paths are relative to the quorum file).
    pub coordinator_key: String,
    /// Group key, SEC1 compressed hex.
    pub group_key: String,
    /// Group key x coordinate.
    pub group_key_x: U256,
    /// Group key y parity.
    pub group_key_parity: u8,
    /// frost `PublicKeyPackage`, hex.
    pub public_key_package: String,
    /// The nodes.
    #[serde(rename = "node")]
    pub nodes: Vec<QuorumNode>,
    /// The last share refresh, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshRecord>,
}

/// A share refresh as the quorum file records it: its id and the nodes that have not activated
/// its shares yet (they keep signing with the old share until they do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// The refresh id (the session the nodes staged their new shares under).
    pub id: String,
    /// URLs of the nodes still on the old share; empty once every node activated.
    #[serde(default)]
    pub pending: Vec<String>,
}

impl QuorumFile {
    /// Reads a quorum file.
    pub fn load(path: &Path) -> Result<Self, QuorumError> {
        let text = std::fs::read_to_string(path).map_err(|e| QuorumError::io(path, e))?;
        toml::from_str(&text).map_err(|e| QuorumError::Config(format!("{}: {e}", path.display())))
    }

    /// Writes it durably.
    pub fn save(&self, path: &Path) -> Result<(), QuorumError> {
        let text = toml::to_string_pretty(self).map_err(|e| QuorumError::Config(e.to_string()))?;
        write_durable(path, text.as_bytes())
    }

    /// The coordinator key path, resolved against the quorum file's directory.
    pub fn coordinator_key_path(&self, quorum_path: &Path) -> PathBuf {
        let p = PathBuf::from(&self.coordinator_key);
        if p.is_absolute() { p } else { quorum_path.parent().unwrap_or(Path::new(".")).join(p) }
    }

    /// The message each node of this file attests.
    pub fn attestation_message(&self) -> [u8; 32] {
        let members: Vec<(String, String)> =
            self.nodes.iter().map(|n| (n.identifier.clone(), n.identity_key.clone())).collect();
        attestation_message(&self.group_key, self.threshold, &members)
    }

    /// Checks that every node the operator `pinned` (fingerprints confirmed out of band) is a
    /// member, that no other node is, and that each attested this group key and roster.
    pub fn verify_attestations(&self, pinned: &[String]) -> Result<(), QuorumError> {
        if self.nodes.is_empty() || self.nodes.iter().all(|n| n.attestation.is_empty()) {
            return Err(QuorumError::Config(
                "no node attests this group key (not a file from `treasury dkg`)".into(),
            ));
        }
        if pinned.is_empty() {
            return Err(QuorumError::Config(
                "name the nodes' fingerprints you confirmed out of band (--node-fingerprint) to check their attestations".into(),
            ));
        }
        let pinned: Vec<String> = pinned.iter().map(|p| p.to_ascii_lowercase()).collect();
        let msg = self.attestation_message();
        for n in &self.nodes {
            let key = super::identity::IdentityPublic::from_hex(&n.identity_key)?;
            if key.fingerprint() != n.fingerprint || !pinned.contains(&n.fingerprint) {
                return Err(QuorumError::Config(format!(
                    "{}: fingerprint {} is not one you pinned",
                    n.url,
                    key.fingerprint()
                )));
            }
            let sig = hex::decode(&n.attestation).unwrap_or_default();
            if !key.verify(&msg, &sig) {
                return Err(QuorumError::Config(format!(
                    "{}: does not attest this group key and roster",
                    n.url
                )));
            }
        }
        if let Some(missing) = pinned.iter().find(|p| !self.nodes.iter().any(|n| &n.fingerprint == *p)) {
            return Err(QuorumError::Config(format!("pinned node {missing} is not in the quorum")));
        }
        Ok(())
    }

    /// The frost public key package.
    pub fn public_key_package(&self) -> Result<frost_secp256k1::keys::PublicKeyPackage, QuorumError> {
        let b = hex::decode(&self.public_key_package).map_err(|e| QuorumError::Corrupt(e.to_string()))?;
        frost_secp256k1::keys::PublicKeyPackage::deserialize(&b).map_err(QuorumError::frost)
    }
}
