//! The devnet's world: a Safe 1.5.0 with the treasury module enabled, Uniswap V2 with liquidity,
//! test tokens and price feeds, and Multicall3 where the chain lacks it, deployed on any endpoint.

use std::path::Path;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, FixedBytes, I256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolConstructor};
use serde::{Deserialize, Serialize};

use treasury_chain::AdminAction;
use treasury_chain::ChainError;
use treasury_chain::contracts::{
    CANONICAL_MULTICALL3, IERC20, ISafe, ISafeProxyFactory, IUniswapV2Router02, Multicall3, PriceFeed,
    TestToken, TreasuryModule,
};
use treasury_chain::safe::{SafeTx, exec_as_owners};
use treasury_chain::tx::{deploy_code, send_call, send_tx};

use crate::artifacts::External;

type Result<T> = std::result::Result<T, ChainError>;

/// The FROST group public key as the module stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKey {
    /// x coordinate.
    pub x: U256,
    /// Parity of y (0 even, 1 odd).
    pub parity: u8,
}

/// A per-period outflow budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Maximum gross outflow per budget window, smallest unit.
    pub limit: U256,
    /// Period in seconds.
    pub period_secs: u64,
}

/// A test token to deploy, price it and give the Safe a balance of.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// Symbol, e.g. `USDC`.
    pub symbol: String,
    /// Decimals of the smallest unit.
    pub decimals: u8,
    /// USD price with 8 decimals (Chainlink convention).
    pub price_e8: i64,
    /// The Safe's starting balance, smallest unit.
    pub safe_balance: U256,
    /// Tier-1 budget, if tracked.
    pub budget: Option<Budget>,
    /// Liquidity of its Uniswap V2 pool against WETH, in whole US dollars per side.
    pub pool_usd: u64,
}

/// Everything a deployment needs to know.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// The Safe's owners (their keys sign the Safe transactions that enable and configure the module).
    pub owners: Vec<PrivateKeySigner>,
    /// The Safe's owner threshold.
    pub threshold: usize,
    /// The FROST group key the module trusts.
    pub group_key: GroupKey,
    /// The root signer's address.
    pub root: Address,
    /// Timelock for power-widening changes, seconds.
    pub timelock_secs: u64,
    /// ETH/USD price with 8 decimals.
    pub eth_price_e8: i64,
    /// The Safe's starting ETH balance in wei.
    pub safe_eth: U256,
    /// Tier-1 ETH budget, if any.
    pub eth_budget: Option<Budget>,
    /// Test tokens.
    pub tokens: Vec<TokenSpec>,
}

impl DeployConfig {
    /// A demo configuration: `owners` with the given threshold, USDC and GOV, a funded Safe and budgets.
    pub fn demo(owners: Vec<PrivateKeySigner>, threshold: usize, group_key: GroupKey, root: Address) -> Self {
        let day = 86_400;
        Self {
            owners,
            threshold,
            group_key,
            root,
            timelock_secs: 48 * 3600,
            eth_price_e8: 3_000 * 100_000_000,
            safe_eth: U256::from(100u64) * U256::from(10u64).pow(U256::from(18)),
            eth_budget: Some(Budget {
                limit: U256::from(5u64) * U256::from(10u64).pow(U256::from(18)),
                period_secs: day,
            }),
            tokens: vec![
                TokenSpec {
                    symbol: "USDC".into(),
                    decimals: 6,
                    price_e8: 100_000_000,
                    safe_balance: U256::from(500_000u64) * U256::from(1_000_000u64),
                    budget: Some(Budget {
                        limit: U256::from(50_000u64) * U256::from(1_000_000u64),
                        period_secs: day,
                    }),
                    pool_usd: 3_000_000,
                },
                TokenSpec {
                    symbol: "GOV".into(),
                    decimals: 18,
                    price_e8: 250_000_000,
                    safe_balance: U256::from(200_000u64) * U256::from(10u64).pow(U256::from(18)),
                    budget: Some(Budget {
                        limit: U256::from(20_000u64) * U256::from(10u64).pow(U256::from(18)),
                        period_secs: day,
                    }),
                    pool_usd: 3_000_000,
                },
            ],
        }
    }
}

/// A deployed token with its price feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedToken {
    /// Symbol.
    pub symbol: String,
    /// Token contract.
    pub address: Address,
    /// Decimals.
    pub decimals: u8,
    /// Its USD price feed.
    pub feed: Address,
}

/// Addresses of a deployed treasury, written to and read from a JSON file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Chain id of the endpoint deployed on.
    pub chain_id: u64,
    /// The Safe (proxy).
    pub safe: Address,
    /// The treasury module enabled on the Safe.
    pub module: Address,
    /// Safe singleton.
    pub safe_singleton: Address,
    /// Safe proxy factory.
    pub safe_factory: Address,
    /// Safe's MultiSendCallOnly.
    pub multisend_call_only: Address,
    /// Multicall3 (canonical, or deployed because the chain lacked it).
    pub multicall3: Address,
    /// WETH.
    pub weth: Address,
    /// Uniswap V2 factory.
    pub uniswap_factory: Address,
    /// Uniswap V2 router.
    pub router: Address,
    /// ETH/USD price feed.
    pub eth_feed: Address,
    /// Test tokens and their feeds.
    pub tokens: Vec<DeployedToken>,
    /// Safe owners.
    pub owners: Vec<Address>,
    /// Root signer.
    pub root: Address,
    /// FROST group key.
    pub group_key: GroupKey,
}

impl Deployment {
    /// The token with this symbol.
    pub fn token(&self, symbol: &str) -> Option<&DeployedToken> {
        self.tokens.iter().find(|t| t.symbol == symbol)
    }

    /// Writes the addresses as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("deployment serialises");
        std::fs::write(path, text).map_err(|e| file_error(path, e))
    }

    /// Reads addresses written by [`Deployment::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        serde_json::from_str(&text).map_err(|e| file_error(path, e))
    }
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> ChainError {
    ChainError::File { path: path.display().to_string(), reason: e.to_string() }
}

/// Deploys everything in `config` from `deployer`, a provider whose wallet signs for the funded account `me`.
pub async fn deploy(deployer: &DynProvider, me: Address, config: &DeployConfig) -> Result<Deployment> {
    if config.owners.len() < config.threshold || config.threshold == 0 {
        return Err(ChainError::InvalidInput(format!(
            "threshold {} with {} owners",
            config.threshold,
            config.owners.len()
        )));
    }
    let chain_id = treasury_chain::provider::chain_id(deployer).await?;
    let multicall3 = ensure_multicall3(deployer).await?;
    let (safe_singleton, safe_factory, multisend_call_only, fallback) =
        deploy_safe_contracts(deployer).await?;
    let safe = create_safe(deployer, config, safe_singleton, safe_factory, fallback).await?;
    let (weth, uniswap_factory, router) = deploy_uniswap(deployer, me).await?;
    let eth_feed = deploy_feed(deployer, "ETH / USD", config.eth_price_e8).await?;
    let mut tokens = Vec::new();
    for spec in &config.tokens {
        tokens.push(deploy_token(deployer, spec, me, safe, router, config.eth_price_e8).await?);
    }
    send_tx(
        deployer,
        "fund the Safe with ETH",
        TransactionRequest::default().with_to(safe).with_value(config.safe_eth),
    )
    .await?;
    let module = deploy_module(deployer, config, safe, multisend_call_only).await?;
    let deployment = Deployment {
        chain_id,
        safe,
        module,
        safe_singleton,
        safe_factory,
        multisend_call_only,
        multicall3,
        weth,
        uniswap_factory,
        router,
        eth_feed,
        tokens,
        owners: config.owners.iter().map(|o| o.address()).collect(),
        root: config.root,
        group_key: config.group_key,
    };
    enable_and_configure_module(deployer, config, &deployment).await?;
    Ok(deployment)
}

/// Returns Multicall3's address, deploying the project's implementation if the canonical one is absent.
pub async fn ensure_multicall3(deployer: &DynProvider) -> Result<Address> {
    let code = deployer
        .get_code_at(CANONICAL_MULTICALL3)
        .await
        .map_err(|e| ChainError::rpc("eth_getCode", Some(CANONICAL_MULTICALL3), e))?;
    if !code.is_empty() {
        return Ok(CANONICAL_MULTICALL3);
    }
    deploy_code(deployer, "Multicall3", Multicall3::BYTECODE.clone()).await
}

async fn deploy_safe_contracts(deployer: &DynProvider) -> Result<(Address, Address, Address, Address)> {
    let singleton = deploy_code(deployer, "Safe singleton", External::Safe.bytecode()?).await?;
    let factory = deploy_code(deployer, "SafeProxyFactory", External::SafeProxyFactory.bytecode()?).await?;
    let multisend =
        deploy_code(deployer, "MultiSendCallOnly", External::MultiSendCallOnly.bytecode()?).await?;
    let fallback = deploy_code(
        deployer,
        "CompatibilityFallbackHandler",
        External::CompatibilityFallbackHandler.bytecode()?,
    )
    .await?;
    Ok((singleton, factory, multisend, fallback))
}

async fn create_safe(
    deployer: &DynProvider,
    config: &DeployConfig,
    singleton: Address,
    factory: Address,
    fallback: Address,
) -> Result<Address> {
    let owners: Vec<Address> = config.owners.iter().map(|o| o.address()).collect();
    let setup = ISafe::setupCall {
        owners,
        threshold: U256::from(config.threshold),
        to: Address::ZERO,
        data: Bytes::new(),
        fallbackHandler: fallback,
        paymentToken: Address::ZERO,
        payment: U256::ZERO,
        paymentReceiver: Address::ZERO,
    }
    .abi_encode();
    let factory_contract = ISafeProxyFactory::new(factory, deployer);
    let receipt = send_call(
        "SafeProxyFactory.createProxyWithNonce",
        factory,
        factory_contract.createProxyWithNonce(singleton, setup.into(), U256::ZERO),
    )
    .await?;
    receipt.decoded_log::<ISafeProxyFactory::ProxyCreation>().map(|log| log.proxy).ok_or_else(|| {
        ChainError::InvalidAnswer {
            call: "SafeProxyFactory.createProxyWithNonce".into(),
            reason: "no ProxyCreation event".into(),
        }
    })
}

async fn deploy_uniswap(deployer: &DynProvider, me: Address) -> Result<(Address, Address, Address)> {
    let weth = deploy_code(deployer, "WETH9", External::Weth9.bytecode()?).await?;
    let factory_code =
        with_args(External::UniswapV2Factory.bytecode()?, alloy::sol_types::SolValue::abi_encode(&me));
    let factory = deploy_code(deployer, "UniswapV2Factory", factory_code).await?;
    let router_code = with_args(
        External::UniswapV2Router02.bytecode()?,
        alloy::sol_types::SolValue::abi_encode_params(&(factory, weth)),
    );
    let router = deploy_code(deployer, "UniswapV2Router02", router_code).await?;
    Ok((weth, factory, router))
}

fn with_args(code: Bytes, args: Vec<u8>) -> Bytes {
    let mut out = code.to_vec();
    out.extend_from_slice(&args);
    out.into()
}

async fn deploy_feed(deployer: &DynProvider, description: &str, price_e8: i64) -> Result<Address> {
    let args = PriceFeed::constructorCall {
        decimals_: 8,
        description_: description.to_string(),
        initialAnswer: I256::try_from(price_e8).expect("i64 fits"),
    };
    let code = with_args(PriceFeed::BYTECODE.clone(), args.abi_encode());
    deploy_code(deployer, &format!("PriceFeed {description}"), code).await
}

async fn deploy_token(
    deployer: &DynProvider,
    spec: &TokenSpec,
    me: Address,
    safe: Address,
    router: Address,
    eth_price_e8: i64,
) -> Result<DeployedToken> {
    let args = TestToken::constructorCall {
        name_: format!("Test {}", spec.symbol),
        symbol_: spec.symbol.clone(),
        decimals_: spec.decimals,
    };
    let code = with_args(TestToken::BYTECODE.clone(), args.abi_encode());
    let address = deploy_code(deployer, &format!("TestToken {}", spec.symbol), code).await?;
    let feed = deploy_feed(deployer, &format!("{} / USD", spec.symbol), spec.price_e8).await?;
    let unit = U256::from(10u64).pow(U256::from(spec.decimals));
    let pool_tokens =
        U256::from(spec.pool_usd) * unit * U256::from(100_000_000u64) / U256::from(spec.price_e8 as u64);
    let pool_wei =
        U256::from(spec.pool_usd) * U256::from(10u64).pow(U256::from(18)) * U256::from(100_000_000u64)
            / U256::from(eth_price_e8 as u64);
    let token = TestToken::new(address, deployer);
    let what = |s: &str| format!("{}.{s}", spec.symbol);
    send_call(&what("mint"), address, token.mint(me, pool_tokens)).await?;
    send_call(&what("mint"), address, token.mint(safe, spec.safe_balance)).await?;
    send_call(&what("approve"), address, token.approve(router, pool_tokens)).await?;
    let router_contract = IUniswapV2Router02::new(router, deployer);
    let deadline = U256::from(u64::MAX);
    send_call(
        "UniswapV2Router02.addLiquidityETH",
        router,
        router_contract
            .addLiquidityETH(address, pool_tokens, pool_tokens, pool_wei, me, deadline)
            .value(pool_wei),
    )
    .await?;
    Ok(DeployedToken { symbol: spec.symbol.clone(), address, decimals: spec.decimals, feed })
}

async fn deploy_module(
    deployer: &DynProvider,
    config: &DeployConfig,
    safe: Address,
    multisend_call_only: Address,
) -> Result<Address> {
    let args = TreasuryModule::constructorCall {
        safe_: safe,
        groupKeyX: config.group_key.x,
        groupKeyParity: config.group_key.parity,
        root_: config.root,
        timelockDelay_: config.timelock_secs,
        multiSendCallOnly_: multisend_call_only,
    };
    let code = with_args(TreasuryModule::BYTECODE.clone(), args.abi_encode());
    deploy_code(deployer, "TreasuryModule", code).await
}

/// The selector of ERC-20 `transfer(address,uint256)`.
pub const TRANSFER_SELECTOR: [u8; 4] = IERC20::transferCall::SELECTOR;

/// The (target, selector) pairs and spenders a freshly deployed treasury allows in tier 1:
/// token transfers and Uniswap V2 swaps, with the router as the only approval spender.
pub fn default_allow_list(d: &Deployment) -> Vec<AdminAction> {
    let mut actions = Vec::new();
    for token in &d.tokens {
        actions.push(AdminAction::SetCallAllowed {
            target: token.address,
            selector: FixedBytes(TRANSFER_SELECTOR),
            allowed: true,
        });
    }
    actions.extend(AdminAction::router_allow_list(d.router));
    actions
}

async fn enable_and_configure_module(
    deployer: &DynProvider,
    config: &DeployConfig,
    d: &Deployment,
) -> Result<()> {
    let signers = &config.owners[..config.threshold];
    let enable = SafeTx {
        to: d.safe,
        value: U256::ZERO,
        data: ISafe::enableModuleCall { module: d.module }.abi_encode().into(),
        operation: 0,
    };
    exec_as_owners(deployer, d.safe, signers, &enable).await?;
    let mut actions = default_allow_list(d);
    if let Some(b) = config.eth_budget {
        actions.push(AdminAction::SetBudget { token: Address::ZERO, limit: b.limit, period: b.period_secs });
    }
    for (spec, token) in config.tokens.iter().zip(&d.tokens) {
        if let Some(b) = spec.budget {
            actions.push(AdminAction::SetBudget {
                token: token.address,
                limit: b.limit,
                period: b.period_secs,
            });
        }
    }
    for action in actions {
        configure_as_safe(deployer, d, signers, &action).await?;
    }
    Ok(())
}

/// Applies `action` to the module immediately through a Safe transaction signed by `owners`.
pub async fn configure_as_safe(
    provider: &DynProvider,
    d: &Deployment,
    owners: &[PrivateKeySigner],
    action: &AdminAction,
) -> Result<()> {
    let data = TreasuryModule::configureCall { action: action.code(), params: action.params() }.abi_encode();
    let tx = SafeTx { to: d.module, value: U256::ZERO, data: data.into(), operation: 0 };
    exec_as_owners(provider, d.safe, owners, &tx).await.map(|_| ())
}
