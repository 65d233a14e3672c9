//! Gas benchmark on one anvil, in one run: FROST verification on chain, and payments through the
//! treasury module against the same payments through the Safe's own 3-of-5 ECDSA `execTransaction`.
//!
//! Policy peers, compiled at bench time from `<repo>/../shared/anchors` by
//! `scripts/compile-peers.mjs` (LGPL-3.0 sources, never part of this repository): Safe's
//! AllowanceModule (`executeAllowanceTransfer` with a delegate signature, a daily allowance) and
//! Zodiac Roles v2 (a role scoped to the token's `transfer`, its amount `WithinAllowance` of a daily
//! allowance; ten payments through MultiSendCallOnly and Roles' MultiSend unwrapper). Roles v2 as
//! built from source is over the EIP-170 size limit: anvil runs with `--disable-code-size-limit`
//! (execution gas is unchanged by that flag).
//!
//! `cargo run -p treasury-tests --release --bin gas-bench [-- --json]`

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::SolCall;
use anyhow::Context;
use treasury_chain::contracts::peers::{IAllowanceModule, IRoles};
use treasury_chain::contracts::{FrostVerifierHarness, IERC20, IMultiSend, TreasuryModule};
use treasury_chain::safe::{SafeTx, exec_as_owners};
use treasury_chain::tx::deploy_code;
use treasury_chain::{Call, Operation, TIER_QUORUM, operation_digest};
use treasury_devnet::TestChain;

const PAYMENTS: usize = 10;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let chain = TestChain::start_with(&["--disable-code-size-limit"])
        .await
        .context("starting anvil and deploying the treasury")?;
    let usdc = chain.deployment.token("USDC").context("USDC deployed")?.address;
    let recipients: Vec<Address> = (1..=PAYMENTS as u8).map(|i| Address::repeat_byte(0x40 + i)).collect();
    let amount = U256::from(10_000_000u64); // 10 USDC

    // Steady state: every recipient already holds the token, and this period's budget was touched.
    exec_module(&chain, recipients.iter().map(|r| pay(usdc, *r, amount)).collect()).await?;
    exec_safe(&chain, pay(usdc, recipients[0], amount)).await?;

    let (verify, verify_library) = verify_gas(&chain).await?;
    let module_one = exec_module(&chain, vec![pay(usdc, recipients[0], amount)]).await?.gas_used;
    let safe_one = exec_safe(&chain, pay(usdc, recipients[0], amount)).await?.gas_used;
    let module_ten =
        exec_module(&chain, recipients.iter().map(|r| pay(usdc, *r, amount)).collect()).await?.gas_used;
    let safe_ten = exec_safe_multisend(&chain, recipients.iter().map(|r| pay(usdc, *r, amount)).collect())
        .await?
        .gas_used;
    let allowance_one = allowance_module_payment(&chain, usdc, recipients[0], amount).await?;
    let (roles_one, roles_ten) = roles_payments(&chain, usdc, &recipients, amount).await?;

    let report = serde_json::json!({
        "anvil": "1.7.1",
        "frost_verify_execution_gas": verify,
        "frost_verify_library_gas": verify_library,
        "one_payment": {
            "module_exec_tier1": module_one,
            "safe_exec_3_of_5": safe_one,
            "safe_allowance_module": allowance_one,
            "zodiac_roles_v2": roles_one,
            "ratio": ratio(module_one, safe_one),
        },
        "ten_payments": {
            "module_exec_tier1": module_ten,
            "safe_multisend_3_of_5": safe_ten,
            "zodiac_roles_v2": roles_ten,
            "ratio": ratio(module_ten, safe_ten),
        },
    });
    if json {
        println!("{report:#}");
    } else {
        println!("FROST verify (harness verifyDigest, execution gas = tx gas - intrinsic): {verify}");
        println!(
            "FROST verify (library only, gasleft() around the call, harness verifyGasUsed): {verify_library}"
        );
        println!(
            "one ERC-20 payment:  module exec tier 1 {module_one:>7}  Safe 3-of-5 execTransaction {safe_one:>7}  ratio {:.3}",
            ratio(module_one, safe_one)
        );
        println!("one ERC-20 payment:  Safe AllowanceModule executeAllowanceTransfer {allowance_one:>7}");
        println!("one ERC-20 payment:  Zodiac Roles v2 execTransactionWithRole {roles_one:>7}");
        println!("ten ERC-20 payments: Zodiac Roles v2 MultiSend through the unwrapper {roles_ten:>7}");
        println!(
            "ten ERC-20 payments: module exec tier 1 {module_ten:>7}  Safe 3-of-5 MultiSendCallOnly {safe_ten:>7}  ratio {:.3}",
            ratio(module_ten, safe_ten)
        );
    }
    Ok(())
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

fn pay(token: Address, to: Address, amount: U256) -> Call {
    Call::new(token, U256::ZERO, IERC20::transferCall { to, amount }.abi_encode())
}

async fn exec_module(chain: &TestChain, calls: Vec<Call>) -> anyhow::Result<TransactionReceipt> {
    let d = &chain.deployment;
    let module = TreasuryModule::new(d.module, chain.keeper.clone());
    let nonce = module.nonce().call().await?;
    let op = Operation { calls, nonce, deadline: U256::from(u64::MAX) };
    let sig = chain.quorum.sign(operation_digest(&op, TIER_QUORUM, d.chain_id, d.module));
    chain.exec_signed(&op, sig, Bytes::new()).await
}

async fn exec_safe(chain: &TestChain, call: Call) -> anyhow::Result<TransactionReceipt> {
    let tx = SafeTx { to: call.to, value: call.value, data: call.data, operation: 0 };
    Ok(exec_as_owners(&chain.keeper, chain.deployment.safe, chain.signing_owners(), &tx).await?)
}

async fn exec_safe_multisend(chain: &TestChain, calls: Vec<Call>) -> anyhow::Result<TransactionReceipt> {
    let mut packed = Vec::new();
    for call in &calls {
        packed.push(0u8);
        packed.extend_from_slice(call.to.as_slice());
        packed.extend_from_slice(&call.value.to_be_bytes::<32>());
        packed.extend_from_slice(&U256::from(call.data.len()).to_be_bytes::<32>());
        packed.extend_from_slice(&call.data);
    }
    let data = IMultiSend::multiSendCall { transactions: packed.into() }.abi_encode();
    let tx = SafeTx {
        to: chain.deployment.multisend_call_only,
        value: U256::ZERO,
        data: data.into(),
        operation: 1,
    };
    Ok(exec_as_owners(&chain.keeper, chain.deployment.safe, chain.signing_owners(), &tx).await?)
}

/// (execution gas of the harness's `verifyDigest`, gas of the library call alone via `verifyGasUsed`).
async fn verify_gas(chain: &TestChain) -> anyhow::Result<(u64, u64)> {
    let provider: &DynProvider = &chain.keeper;
    let harness =
        deploy_code(provider, "FrostVerifierHarness", FrostVerifierHarness::BYTECODE.clone()).await?;
    let key = chain.quorum.group_key();
    let digest = keccak256(b"gas bench");
    let sig = chain.quorum.sign(digest);
    let input = FrostVerifierHarness::verifyDigestCall {
        pkX: key.x,
        pkParity: key.parity,
        digest,
        rX: sig.rX,
        rY: sig.rY,
        z: sig.z,
    }
    .abi_encode();
    let intrinsic = 21_000 + input.iter().map(|b| if *b == 0 { 4 } else { 16 }).sum::<u64>();
    let tx = TransactionRequest::default().with_to(harness).with_input(input);
    let valid = provider.call(tx.clone()).await?;
    anyhow::ensure!(valid.last() == Some(&1), "the bench signature must verify");
    let execution = provider.estimate_gas(tx).await? - intrinsic;
    let measured = FrostVerifierHarness::new(harness, provider)
        .verifyGasUsed(key.x, key.parity, digest, sig.rX, sig.rY, sig.z)
        .call()
        .await?;
    anyhow::ensure!(measured.ok, "the bench signature must verify (verifyGasUsed)");
    Ok((execution, u64::try_from(measured.gasUsed)?))
}

/// The creation code of peer `name` compiled into `dir`, its external libraries deployed first and
/// linked in.
async fn peer_bytecode(provider: &DynProvider, dir: &std::path::Path, name: &str) -> anyhow::Result<Bytes> {
    let file = dir.join(format!("{name}.json"));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    let mut hex = json["bytecode"].as_str().context("peer artifact without bytecode")?.to_string();
    for link in json["links"].as_array().into_iter().flatten() {
        let lib_name = link["name"].as_str().context("link name")?;
        let code = alloy::hex::decode(link["bytecode"].as_str().context("link bytecode")?)?;
        let lib = deploy_code(provider, lib_name, code.into()).await?;
        let placeholder = link["placeholder"].as_str().context("link placeholder")?;
        hex = hex.replace(placeholder, &alloy::hex::encode(lib.as_slice()));
    }
    Ok(alloy::hex::decode(hex)?.into())
}

fn compile_peers() -> anyhow::Result<tempfile::TempDir> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir()?;
    let status = std::process::Command::new("node")
        .arg(root.join("scripts/compile-peers.mjs"))
        .arg(dir.path())
        .status()
        .context("running node scripts/compile-peers.mjs")?;
    anyhow::ensure!(status.success(), "compile-peers failed (are ../shared/anchors and .tools installed?)");
    Ok(dir)
}

/// One payment through Safe's AllowanceModule: the Safe (its owners) enables the module, adds a
/// delegate and gives it a daily allowance on `token`; the delegate signs the transfer hash and the
/// keeper submits `executeAllowanceTransfer`. The first transfer warms the allowance slot (steady
/// state, as for the module); the second is measured.
async fn allowance_module_payment(
    chain: &TestChain,
    token: Address,
    to: Address,
    amount: U256,
) -> anyhow::Result<u64> {
    let peers = compile_peers()?;
    let code = peer_bytecode(&chain.keeper, peers.path(), "AllowanceModule").await?;
    let provider = &chain.keeper;
    let module = deploy_code(provider, "AllowanceModule", code).await?;
    let safe = chain.deployment.safe;
    let delegate = treasury_devnet::dev_key(7);
    let owners = chain.signing_owners();
    let as_safe =
        |to: Address, data: Vec<u8>| SafeTx { to, value: U256::ZERO, data: data.into(), operation: 0 };
    let enable = treasury_chain::contracts::ISafe::enableModuleCall { module }.abi_encode();
    exec_as_owners(provider, safe, owners, &as_safe(safe, enable)).await?;
    let add = IAllowanceModule::addDelegateCall { delegate: delegate.address() }.abi_encode();
    exec_as_owners(provider, safe, owners, &as_safe(module, add)).await?;
    let limit = amount * U256::from(100u64);
    let set = IAllowanceModule::setAllowanceCall {
        delegate: delegate.address(),
        token,
        allowanceAmount: limit.to(),
        resetTimeMin: 24 * 60,
        resetBaseMin: 0,
    }
    .abi_encode();
    exec_as_owners(provider, safe, owners, &as_safe(module, set)).await?;
    let m = IAllowanceModule::new(module, provider.clone());
    let mut gas = 0;
    for _ in 0..2 {
        let nonce = m.getTokenAllowance(safe, delegate.address(), token).call().await?[4];
        let hash = m
            .generateTransferHash(
                safe,
                token,
                to,
                amount.to(),
                Address::ZERO,
                alloy::primitives::aliases::U96::ZERO,
                nonce.to(),
            )
            .call()
            .await?;
        let sig = alloy::signers::SignerSync::sign_hash_sync(&delegate, &hash)?;
        let receipt = m
            .executeAllowanceTransfer(
                safe,
                token,
                to,
                amount.to(),
                Address::ZERO,
                alloy::primitives::aliases::U96::ZERO,
                delegate.address(),
                Bytes::from(sig.as_bytes().to_vec()),
            )
            .send()
            .await?
            .get_receipt()
            .await?;
        anyhow::ensure!(receipt.status(), "executeAllowanceTransfer reverted");
        gas = receipt.gas_used;
    }
    Ok(gas)
}

/// One and ten payments through Zodiac Roles v2: the Safe enables Roles (owner: the keeper, which
/// sets it up); a member's role is scoped to `token.transfer` with the amount `WithinAllowance` of a
/// daily allowance. A warm-up payment first (steady state), then one payment, then ten through
/// MultiSendCallOnly (DELEGATECALL, unwrapped by Roles' MultiSendUnwrapper).
async fn roles_payments(
    chain: &TestChain,
    token: Address,
    recipients: &[Address],
    amount: U256,
) -> anyhow::Result<(u64, u64)> {
    let peers = compile_peers()?;
    let provider = &chain.keeper;
    let d = &chain.deployment;
    let safe = d.safe;
    let owner = chain.keeper_key.address();
    let args = alloy::sol_types::SolValue::abi_encode_params(&(owner, safe, safe));
    let mut code = peer_bytecode(provider, peers.path(), "Roles").await?.to_vec();
    code.extend_from_slice(&args);
    let roles = deploy_code(provider, "Roles", code.into()).await.context("deploying Roles")?;
    // Roles writes its scopes through the ERC-2470 singleton factory, absent from anvil
    let factory: serde_json::Value =
        serde_json::from_slice(&std::fs::read(peers.path().join("SingletonFactory.json"))?)?;
    let factory_code = factory["runtime"].as_str().context("factory runtime")?.to_string();
    let factory_address: Address = "0xce0042B868300000d44A59004Da54A005ffdcf9f".parse()?;
    let _: () = provider
        .raw_request("anvil_setCode".into(), (factory_address, factory_code))
        .await
        .context("anvil_setCode of the ERC-2470 factory")?;
    let unwrapper_code = peer_bytecode(provider, peers.path(), "MultiSendUnwrapper").await?;
    let unwrapper = deploy_code(provider, "MultiSendUnwrapper", unwrapper_code).await?;
    let enable = treasury_chain::contracts::ISafe::enableModuleCall { module: roles }.abi_encode();
    let tx = SafeTx { to: safe, value: U256::ZERO, data: enable.into(), operation: 0 };
    exec_as_owners(provider, safe, chain.signing_owners(), &tx).await.context("enabling Roles")?;

    let member_key = treasury_devnet::dev_key(8);
    let member = treasury_chain::provider::connect_with_signer(chain.anvil.url(), member_key.clone())?;
    let role = keccak256(b"payments");
    let key = keccak256(b"payments allowance");
    let r = IRoles::new(roles, provider.clone());
    let sent = |what: &'static str, receipt: TransactionReceipt| {
        anyhow::ensure!(receipt.status(), "Roles {what} reverted");
        Ok(receipt)
    };
    sent(
        "assignRoles",
        r.assignRoles(member_key.address(), vec![role], vec![true])
            .send()
            .await
            .context("assignRoles")?
            .get_receipt()
            .await?,
    )?;
    sent(
        "scopeTarget",
        r.scopeTarget(role, token).send().await.context("scopeTarget")?.get_receipt().await?,
    )?;
    let condition = |parent: u8, param: u8, op: u8, value: Vec<u8>| IRoles::ConditionFlat {
        parent,
        paramType: param,
        operator: op,
        compValue: value.into(),
    };
    // Calldata Matches (transfer(to, amount)): `to` passes, `amount` WithinAllowance(key)
    let conditions =
        vec![condition(0, 5, 5, vec![]), condition(0, 1, 0, vec![]), condition(0, 1, 28, key.to_vec())];
    let selector = IERC20::transferCall::SELECTOR.into();
    sent(
        "scopeFunction",
        r.scopeFunction(role, token, selector, conditions, 0)
            .send()
            .await
            .context("scopeFunction")?
            .get_receipt()
            .await?,
    )?;
    let limit: u128 = (amount * U256::from(1_000u64)).to();
    sent(
        "setAllowance",
        r.setAllowance(key, limit, 0, limit, 86_400, 0)
            .send()
            .await
            .context("setAllowance")?
            .get_receipt()
            .await?,
    )?;
    let multisend_sel = IMultiSend::multiSendCall::SELECTOR.into();
    sent(
        "setTransactionUnwrapper",
        r.setTransactionUnwrapper(d.multisend_call_only, multisend_sel, unwrapper)
            .send()
            .await
            .context("setTransactionUnwrapper")?
            .get_receipt()
            .await?,
    )?;

    let m = IRoles::new(roles, member);
    let pay_one = |to: Address| IERC20::transferCall { to, amount }.abi_encode();
    let mut one = 0;
    for _ in 0..2 {
        let receipt = m
            .execTransactionWithRole(token, U256::ZERO, pay_one(recipients[0]).into(), 0, role, true)
            .send()
            .await
            .context("execTransactionWithRole")?
            .get_receipt()
            .await?;
        one = sent("execTransactionWithRole", receipt)?.gas_used;
    }
    let mut packed = Vec::new();
    for to in recipients {
        let data = pay_one(*to);
        packed.push(0u8);
        packed.extend_from_slice(token.as_slice());
        packed.extend_from_slice(&U256::ZERO.to_be_bytes::<32>());
        packed.extend_from_slice(&U256::from(data.len()).to_be_bytes::<32>());
        packed.extend_from_slice(&data);
    }
    let batch = IMultiSend::multiSendCall { transactions: packed.into() }.abi_encode();
    let receipt = m
        .execTransactionWithRole(d.multisend_call_only, U256::ZERO, batch.into(), 1, role, true)
        .send()
        .await
        .context("execTransactionWithRole(multiSend)")?
        .get_receipt()
        .await?;
    let ten = sent("execTransactionWithRole(multiSend)", receipt)?.gas_used;
    Ok((one, ten))
}
