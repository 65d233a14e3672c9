//! Rust bindings of every contract treasury talks to.
//!
//! The project's own contracts are bound from their committed artifacts in `chain/artifacts/`
//! (ABI and bytecode, compiled by `scripts/compile-contracts.mjs`); third-party contracts from the
//! subset of their interfaces that treasury uses.
#![allow(missing_docs, clippy::too_many_arguments)]

use alloy::primitives::{Address, address};
use alloy::sol;

/// Where Multicall3 lives on most chains.
pub const CANONICAL_MULTICALL3: Address = address!("0xcA11bde05977b3631167028862bE2a173976CA11");

/// Storage slot of `TreasuryModule`'s group key x coordinate (`_groupKeyX`, declared second, after
/// `_state`; the contract inherits nothing). Used only to override it in a gas estimate.
pub const MODULE_GROUP_KEY_X_SLOT: u64 = 1;

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    TreasuryModule,
    "artifacts/TreasuryModule.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    FrostVerifierHarness,
    "artifacts/FrostVerifierHarness.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    PriceFeed,
    "artifacts/PriceFeed.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    TestToken,
    "artifacts/TestToken.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    Multicall3,
    "artifacts/Multicall3.json"
);

sol! {
    /// The ERC-20 functions treasury reads and calls.
    #[sol(rpc)]
    #[derive(Debug)]
    interface IERC20 {
        function balanceOf(address owner) external view returns (uint256);
        function transfer(address to, uint256 amount) external returns (bool);
        function approve(address spender, uint256 amount) external returns (bool);
        function allowance(address owner, address spender) external view returns (uint256);
        function decimals() external view returns (uint8);
        function symbol() external view returns (string);
    }

    /// Wrapped ether.
    #[sol(rpc)]
    #[derive(Debug)]
    interface IWETH {
        function deposit() external payable;
        function withdraw(uint256 amount) external;
    }

    /// A Safe transaction as its owners sign it (EIP-712, domain: chain id and the Safe's address).
    #[derive(Debug)]
    struct SafeTx {
        address to;
        uint256 value;
        bytes data;
        uint8 operation;
        uint256 safeTxGas;
        uint256 baseGas;
        uint256 gasPrice;
        address gasToken;
        address refundReceiver;
        uint256 nonce;
    }

    /// The subset of Safe 1.5.0 treasury uses.
    #[sol(rpc)]
    #[derive(Debug)]
    interface ISafe {
        function setup(address[] calldata owners, uint256 threshold, address to, bytes calldata data, address fallbackHandler, address paymentToken, uint256 payment, address paymentReceiver) external;
        function execTransaction(address to, uint256 value, bytes calldata data, uint8 operation, uint256 safeTxGas, uint256 baseGas, uint256 gasPrice, address gasToken, address refundReceiver, bytes memory signatures) external payable returns (bool success);
        function getTransactionHash(address to, uint256 value, bytes calldata data, uint8 operation, uint256 safeTxGas, uint256 baseGas, uint256 gasPrice, address gasToken, address refundReceiver, uint256 nonce) external view returns (bytes32);
        function nonce() external view returns (uint256);
        function enableModule(address module) external;
        function isModuleEnabled(address module) external view returns (bool);
        function execTransactionFromModuleReturnData(address to, uint256 value, bytes calldata data, uint8 operation) external returns (bool success, bytes memory returnData);
        function getOwners() external view returns (address[] memory);
        function getThreshold() external view returns (uint256);
    }

    /// Safe's proxy factory.
    #[sol(rpc)]
    #[derive(Debug)]
    interface ISafeProxyFactory {
        event ProxyCreation(address indexed proxy, address singleton);
        function createProxyWithNonce(address singleton, bytes memory initializer, uint256 saltNonce) external returns (address proxy);
    }

    /// Safe's MultiSendCallOnly: `transactions` packs (uint8 op, address to, uint256 value, uint256 len, bytes data).
    #[sol(rpc)]
    #[derive(Debug)]
    interface IMultiSend {
        function multiSend(bytes memory transactions) external payable;
    }

    /// Uniswap V2 factory.
    #[sol(rpc)]
    #[derive(Debug)]
    interface IUniswapV2Factory {
        function getPair(address tokenA, address tokenB) external view returns (address pair);
        function createPair(address tokenA, address tokenB) external returns (address pair);
    }

    /// Uniswap V2 pair.
    #[sol(rpc)]
    #[derive(Debug)]
    interface IUniswapV2Pair {
        function getReserves() external view returns (uint112 reserve0, uint112 reserve1, uint32 blockTimestampLast);
        function token0() external view returns (address);
    }

    /// Uniswap V2 router (version 2).
    #[sol(rpc)]
    #[derive(Debug)]
    interface IUniswapV2Router02 {
        function factory() external view returns (address);
        function WETH() external view returns (address);
        function addLiquidity(address tokenA, address tokenB, uint256 amountADesired, uint256 amountBDesired, uint256 amountAMin, uint256 amountBMin, address to, uint256 deadline) external returns (uint256 amountA, uint256 amountB, uint256 liquidity);
        function addLiquidityETH(address token, uint256 amountTokenDesired, uint256 amountTokenMin, uint256 amountETHMin, address to, uint256 deadline) external payable returns (uint256 amountToken, uint256 amountETH, uint256 liquidity);
        function swapExactTokensForTokens(uint256 amountIn, uint256 amountOutMin, address[] calldata path, address to, uint256 deadline) external returns (uint256[] memory amounts);
        function swapExactETHForTokens(uint256 amountOutMin, address[] calldata path, address to, uint256 deadline) external payable returns (uint256[] memory amounts);
        function swapExactTokensForETH(uint256 amountIn, uint256 amountOutMin, address[] calldata path, address to, uint256 deadline) external returns (uint256[] memory amounts);
        function getAmountsOut(uint256 amountIn, address[] calldata path) external view returns (uint256[] memory amounts);
    }
}

sol! {
    /// The Multicall3 functions treasury uses (the same ABI on every chain).
    #[sol(rpc)]
    #[derive(Debug)]
    interface IMulticall3 {
        struct Call3 { address target; bool allowFailure; bytes callData; }
        struct Result { bool success; bytes returnData; }
        function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData);
        function getEthBalance(address addr) external view returns (uint256 balance);
    }

    /// Chainlink's price feed interface.
    #[sol(rpc)]
    #[derive(Debug)]
    interface AggregatorV3Interface {
        function decimals() external view returns (uint8);
        function latestRoundData() external view returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
    }

    /// The treasury module's views that snapshots read.
    #[sol(rpc)]
    #[derive(Debug)]
    interface ITreasuryModuleViews {
        function nonce() external view returns (uint256);
        function paused() external view returns (bool);
        function budget(address token) external view returns (uint256 limit, uint64 period, uint256 spent, uint256 remaining);
    }
}

impl From<&crate::operation::Call> for TreasuryModule::Call {
    fn from(c: &crate::operation::Call) -> Self {
        Self { to: c.to, value: c.value, data: c.data.clone(), operation: c.operation }
    }
}

/// The `calls` argument of the module's `exec` for `op`.
pub fn exec_calls(op: &crate::operation::Operation) -> Vec<TreasuryModule::Call> {
    op.calls.iter().map(TreasuryModule::Call::from).collect()
}

/// Peer contracts deployed beside the module in the gas benchmark only (`tests/src/bin/gas_bench.rs`).
pub mod peers {
    alloy::sol! {
        /// Safe's AllowanceModule (LGPL-3.0, compiled at bench time from `../shared/anchors`, never shipped).
        #[sol(rpc)]
        interface IAllowanceModule {
            function addDelegate(address delegate) external;
            function setAllowance(address delegate, address token, uint96 allowanceAmount, uint16 resetTimeMin, uint32 resetBaseMin) external;
            function executeAllowanceTransfer(address safe, address token, address to, uint96 amount, address paymentToken, uint96 payment, address delegate, bytes signature) external;
            function generateTransferHash(address safe, address token, address to, uint96 amount, address paymentToken, uint96 payment, uint16 nonce) external view returns (bytes32);
            function getTokenAllowance(address safe, address delegate, address token) external view returns (uint256[5] memory);
        }

        /// Zodiac Roles v2 (LGPL-3.0, compiled at bench time); enums as uint8.
        #[sol(rpc)]
        interface IRoles {
            struct ConditionFlat { uint8 parent; uint8 paramType; uint8 operator; bytes compValue; }
            function assignRoles(address module, bytes32[] roleKeys, bool[] memberOf) external;
            function scopeTarget(bytes32 roleKey, address targetAddress) external;
            function scopeFunction(bytes32 roleKey, address targetAddress, bytes4 selector, ConditionFlat[] conditions, uint8 options) external;
            function setAllowance(bytes32 key, uint128 balance, uint128 maxRefill, uint128 refill, uint64 period, uint64 timestamp) external;
            function setTransactionUnwrapper(address to, bytes4 selector, address adapter) external;
            function execTransactionWithRole(address to, uint256 value, bytes data, uint8 operation, bytes32 roleKey, bool shouldRevert) external returns (bool);
        }
    }
}

/// Keeper jobs (issue 18): the interfaces of Chainlink Automation upkeeps (as published in npm
/// `@chainlink/contracts`, MIT-licensed interface files) and of Gelato resolvers.
pub mod automation {
    alloy::sol! {
        /// Chainlink's `AutomationCompatibleInterface`.
        #[sol(rpc)]
        #[derive(Debug)]
        interface AutomationCompatibleInterface {
            function checkUpkeep(bytes calldata checkData) external returns (bool upkeepNeeded, bytes memory performData);
            function performUpkeep(bytes calldata performData) external;
        }

        /// The log Chainlink's `ILogAutomation.checkLog` receives.
        #[derive(Debug)]
        struct Log {
            uint256 index;
            uint256 timestamp;
            bytes32 txHash;
            uint256 blockNumber;
            bytes32 blockHash;
            address source;
            bytes32[] topics;
            bytes data;
        }

        /// Chainlink's `ILogAutomation` (log-triggered upkeeps).
        #[sol(rpc)]
        #[derive(Debug)]
        interface ILogAutomation {
            function checkLog(Log calldata log, bytes memory checkData) external returns (bool upkeepNeeded, bytes memory performData);
            function performUpkeep(bytes calldata performData) external;
        }

        /// The view functions of a Chainlink Automation registry (2.1 and later,
        /// `IAutomationV21PlusCommon`) that describe one upkeep.
        #[sol(rpc)]
        #[derive(Debug)]
        interface IAutomationRegistryViews {
            struct UpkeepInfoLegacy {
                address target;
                uint32 performGas;
                bytes checkData;
                uint96 balance;
                address admin;
                uint64 maxValidBlocknumber;
                uint32 lastPerformedBlockNumber;
                uint96 amountSpent;
                bool paused;
                bytes offchainConfig;
            }
            struct LogTriggerConfig {
                address contractAddress;
                uint8 filterSelector;
                bytes32 topic0;
                bytes32 topic1;
                bytes32 topic2;
                bytes32 topic3;
            }
            function getUpkeep(uint256 id) external view returns (UpkeepInfoLegacy memory upkeepInfo);
            function getTriggerType(uint256 upkeepId) external view returns (uint8);
            function getUpkeepTriggerConfig(uint256 upkeepId) external view returns (bytes memory);
        }

        /// A Gelato resolver: `checker()` answers whether to execute and the payload to send.
        #[sol(rpc)]
        #[derive(Debug)]
        interface IGelatoResolver {
            function checker() external view returns (bool canExec, bytes memory execPayload);
        }
    }
}
