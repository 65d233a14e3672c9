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

    /// The frost public key package.
    pub fn public_key_package(&self) -> Result<frost_secp256k1::keys::PublicKeyPackage, QuorumError> {
        let b = hex::decode(&self.public_key_package).map_err(|e| QuorumError::Corrupt(e.to_string()))?;
        frost_secp256k1::keys::PublicKeyPackage::deserialize(&b).map_err(QuorumError::frost)
    }
}
