//! Compiled contracts that come from npm packages (Safe 1.5.0, Uniswap V2), loaded at run time.
//!
//! They are not committed: `scripts/install.sh` installs the packages into `.tools/node_modules`.
//! The project's own contracts are compiled into `chain/artifacts/` and bound in [`crate::contracts`].

use std::path::PathBuf;

use alloy::primitives::Bytes;

use crate::error::{ChainError, Result};

/// Environment variable naming the folder that holds the npm packages (`node_modules`).
pub const TOOLS_ENV: &str = "TREASURY_TOOLS_DIR";

/// The `node_modules` folder holding the toolchain: `$TREASURY_TOOLS_DIR`, else `.tools/node_modules`
/// in the current directory or the nearest of its parents that has one (a checkout of treasury).
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(TOOLS_ENV) {
        return PathBuf::from(dir);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .map(|dir| dir.join(".tools/node_modules"))
        .find(|candidate| candidate.is_dir())
        .unwrap_or_else(|| cwd.join(".tools/node_modules"))
}

/// The npm platform suffix of foundry's binary packages for this machine (`linux-amd64`, …).
fn foundry_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{}-{arch}", std::env::consts::OS)
}

/// Path of a foundry binary (`anvil`, `forge`, `cast`) installed from npm.
pub fn foundry_binary(tool: &str) -> PathBuf {
    tools_dir().join(format!("@foundry-rs/{tool}-{}/bin/{tool}", foundry_platform()))
}

/// A contract from an npm package, identified by its artifact path under `node_modules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum External {
    /// Safe 1.5.0 singleton.
    Safe,
    /// Safe proxy factory.
    SafeProxyFactory,
    /// Safe's fallback handler (EIP-1271, token callbacks).
    CompatibilityFallbackHandler,
    /// Safe's batching library restricted to CALL.
    MultiSendCallOnly,
    /// Uniswap V2 factory.
    UniswapV2Factory,
    /// Uniswap V2 router (version 2).
    UniswapV2Router02,
    /// Wrapped ether as shipped with Uniswap V2 periphery.
    Weth9,
}

impl External {
    fn relative_path(self) -> &'static str {
        match self {
            Self::Safe => "@safe-global/safe-smart-account/build/artifacts/contracts/Safe.sol/Safe.json",
            Self::SafeProxyFactory => {
                "@safe-global/safe-smart-account/build/artifacts/contracts/proxies/SafeProxyFactory.sol/SafeProxyFactory.json"
            }
            Self::CompatibilityFallbackHandler => {
                "@safe-global/safe-smart-account/build/artifacts/contracts/handler/CompatibilityFallbackHandler.sol/CompatibilityFallbackHandler.json"
            }
            Self::MultiSendCallOnly => {
                "@safe-global/safe-smart-account/build/artifacts/contracts/libraries/MultiSendCallOnly.sol/MultiSendCallOnly.json"
            }
            Self::UniswapV2Factory => "@uniswap/v2-core/build/UniswapV2Factory.json",
            Self::UniswapV2Router02 => "@uniswap/v2-periphery/build/UniswapV2Router02.json",
            Self::Weth9 => "@uniswap/v2-periphery/build/WETH9.json",
        }
    }

    /// Where the artifact is expected.
    pub fn path(self) -> PathBuf {
        tools_dir().join(self.relative_path())
    }

    /// The creation bytecode of the contract.
    pub fn bytecode(self) -> Result<Bytes> {
        let path = self.path();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| ChainError::Artifact {
            path: shown.clone(),
            reason: format!("{e} (run scripts/install.sh to install the npm packages)"),
        })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ChainError::Artifact { path: shown.clone(), reason: e.to_string() })?;
        let hex = json["bytecode"].as_str().ok_or_else(|| ChainError::Artifact {
            path: shown.clone(),
            reason: "no \"bytecode\" string".into(),
        })?;
        let hex = hex.strip_prefix("0x").unwrap_or(hex);
        alloy::hex::decode(hex)
            .map(Bytes::from)
            .map_err(|e| ChainError::Artifact { path: shown, reason: format!("bytecode is not hex: {e}") })
    }
}
