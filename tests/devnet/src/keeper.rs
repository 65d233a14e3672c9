//! Keeper jobs' fixtures (issue 18): Chainlink's example upkeeps and our test upkeeps and
//! resolver, compiled by `scripts/compile-keeper-fixtures.mjs` into `.tools/chainlink/artifacts`
//! (installed by `scripts/install.sh`, never committed), deployed on any endpoint.
use std::path::PathBuf;

use alloy::primitives::{Address, Bytes};
use alloy::providers::DynProvider;
use treasury_chain::ChainError;
use treasury_chain::tools::tools_dir;
use treasury_chain::tx::deploy_code;

type Result<T> = std::result::Result<T, ChainError>;

/// Where the compiled fixtures are: `.tools/chainlink/artifacts` beside `.tools/node_modules`.
pub fn artifacts_dir() -> PathBuf {
    tools_dir().parent().map_or_else(|| PathBuf::from(".tools"), PathBuf::from).join("chainlink/artifacts")
}

/// The creation bytecode of fixture `name` (e.g. `UpkeepCounter`).
pub fn bytecode(name: &str) -> Result<Bytes> {
    let path = artifacts_dir().join(format!("{name}.json"));
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| ChainError::Artifact {
        path: shown.clone(),
        reason: format!(
            "{e} (run scripts/install.sh: it fetches @chainlink/contracts and compiles the keeper fixtures)"
        ),
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ChainError::Artifact { path: shown.clone(), reason: e.to_string() })?;
    let hex = json["bytecode"].as_str().ok_or_else(|| ChainError::Artifact {
        path: shown.clone(),
        reason: "no \"bytecode\" string".into(),
    })?;
    alloy::hex::decode(hex)
        .map(Bytes::from)
        .map_err(|e| ChainError::Artifact { path: shown, reason: format!("bytecode is not hex: {e}") })
}

/// Deploys fixture `name` with ABI-encoded constructor `args`.
pub async fn deploy(provider: &DynProvider, name: &str, args: &[u8]) -> Result<Address> {
    let mut code = bytecode(name)?.to_vec();
    code.extend_from_slice(args);
    deploy_code(provider, name, code.into()).await
}

/// The interval the tests' counter upkeeps and resolvers wait between performs: an hour, since
/// anvil's clock also moves with real time and a loaded machine can spend a minute between steps.
pub const INTERVAL_SECS: u64 = 3_600;

/// Deploys Chainlink's `UpkeepCounter` example: performable for `test_range` seconds, at most
/// once every `interval_secs`.
pub async fn deploy_counter(provider: &DynProvider, test_range: u64, interval_secs: u64) -> Result<Address> {
    use alloy::sol_types::SolValue;
    let args = (alloy::primitives::U256::from(test_range), alloy::primitives::U256::from(interval_secs));
    deploy(provider, "UpkeepCounter", &args.abi_encode_params()).await
}

alloy::sol! {
    /// Chainlink's `UpkeepCounter` example (views and its setter).
    #[sol(rpc)]
    interface IUpkeepCounter {
        function counter() external view returns (uint256);
        function interval() external view returns (uint256);
        function eligible() external view returns (bool);
    }

    /// `LogTriggeredCounter` (tests/devnet/contracts/keeper).
    #[sol(rpc)]
    interface ILogTriggeredCounter {
        event Ping(uint256 indexed id);
        function ping() external;
        function pings() external view returns (uint256);
        function performed() external view returns (uint256);
    }

    /// `GasHungryUpkeep`, `RevertingPerformUpkeep`.
    #[sol(rpc)]
    interface ITestUpkeep {
        function performed() external view returns (uint256);
    }

    /// `UpkeepRegistryViews`: a registry stand-in with Chainlink's 2.1+ upkeep views.
    #[sol(rpc)]
    interface IUpkeepRegistryViews {
        function registerConditional(uint256 id, address target, uint32 performGas, bytes calldata checkData) external;
        function registerLog(uint256 id, address target, uint32 performGas, address source, bytes32 topic0) external;
    }

    /// `ResolverCounter`, the target of `GelatoStyleResolver`.
    #[sol(rpc)]
    interface IResolverCounter {
        function count() external view returns (uint256);
        function increment(uint256 expected) external;
    }
}
