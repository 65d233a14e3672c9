//! Third-party contracts (Safe, Uniswap V2, WETH) loaded from the installed npm packages.
use std::path::PathBuf;

use alloy::primitives::Bytes;
use treasury_chain::ChainError;
use treasury_chain::tools::tools_dir;

type Result<T> = std::result::Result<T, ChainError>;

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
