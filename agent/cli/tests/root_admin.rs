//! `treasury root admin` as a process against anvil, with the module's root key in SoftHSM2:
//! pause and unpause (immediate), a budget raised (queued behind the timelock, applied after it) and
//! lowered (immediate), the group key rotated (queued, applied; only the new quorum executes), a
//! queued change cancelled, and the module's refusals named.
use std::process::Command;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use serde_json::Value;
use treasury_chain::contracts::TreasuryModule::{self, TreasuryModuleErrors};
use treasury_chain::contracts::{IERC20, exec_calls};
use treasury_chain::{AdminAction, Call, Operation, TIER_QUORUM, operation_digest};
use treasury_devnet::world::configure_as_safe;
use treasury_devnet::{TestChain, TestQuorum};
use treasury_signer::quorum::identity::IdentityKey;
use treasury_signer::quorum::quorum_file::QuorumFile;

#[path = "common/softhsm.rs"]
mod softhsm;
use softhsm::SoftHsm;

const PIN: &str = "135790";
const SO_PIN: &str = "97531086";
const DAY: u64 = 86_400;

/// A private SoftHSM2 holding the root key, and a deployed treasury whose root it is.
struct Rig {
    hsm: SoftHsm,
    root: Address,
    chain: TestChain,
}

impl Rig {
    async fn start() -> Self {
        let chain = TestChain::start().await.unwrap();
        let mut rig = Self { hsm: SoftHsm::new(), root: Address::ZERO, chain };
        let out = rig.run(&["root", "init", "--token", "admin-token", "--key", "root", "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        rig.root = v["address"].as_str().unwrap().parse().unwrap();
        rig
    }

    /// Makes the HSM key the module's root (through the Safe) and gives it ETH for gas.
    async fn register_root(&self) {
        let d = &self.chain.deployment;
        configure_as_safe(
            &self.chain.keeper,
            d,
            self.chain.signing_owners(),
            &AdminAction::SetRoot { root: self.root },
        )
        .await
        .unwrap();
        let fund = TransactionRequest::default()
            .with_to(self.root)
            .with_value(U256::from(10u64).pow(U256::from(18)));
        let receipt = self.chain.keeper.send_transaction(fund).await.unwrap().get_receipt().await.unwrap();
        assert!(receipt.status());
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.hsm.command(PIN, SO_PIN, args);
        c.env_remove("TREASURY_RPC_URL");
        c
    }

    /// Runs the binary; panics with its stderr unless it succeeds.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "treasury {args:?} failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn admin_args(&self, json: bool, action: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "root",
            "admin",
            "--token",
            "admin-token",
            "--key",
            "root",
            "--rpc",
            self.chain.anvil.url(),
            "--module-address",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(self.chain.deployment.module.to_string());
        if json {
            args.push("--json".into());
        }
        args.extend(action.iter().map(|s| s.to_string()));
        args
    }

    /// `treasury root admin --json <action>`, parsed.
    fn admin(&self, action: &[&str]) -> Value {
        let args = self.admin_args(true, action);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        serde_json::from_str(&self.run(&args)).unwrap()
    }

    /// `treasury root admin <action>` expected to fail; returns its stderr.
    fn admin_fails(&self, action: &[&str]) -> String {
        let out = self.command(&[]).args(self.admin_args(false, action)).output().unwrap();
        assert!(!out.status.success(), "treasury root admin {action:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn module(&self) -> TreasuryModule::TreasuryModuleInstance<alloy::providers::DynProvider> {
        TreasuryModule::new(self.chain.deployment.module, self.chain.keeper.clone())
    }

    fn usdc(&self) -> Address {
        self.chain.deployment.token("USDC").unwrap().address
    }

    /// Moves anvil's clock forward and mines a block.
    async fn wait(&self, secs: u64) {
        let p = &self.chain.keeper;
        p.raw_request::<_, Value>("evm_increaseTime".into(), (secs,)).await.unwrap();
        p.raw_request::<_, Value>("evm_mine".into(), ()).await.unwrap();
    }

    /// A tier-1 payment of `amount` USDC (6 decimals) under the module's next nonce.
    async fn pay(&self, amount: u64) -> Operation {
        let data =
            IERC20::transferCall { to: Address::repeat_byte(0x77), amount: U256::from(amount) }.abi_encode();
        Operation {
            calls: vec![Call::new(self.usdc(), U256::ZERO, data)],
            nonce: self.chain.module_nonce().await.unwrap(),
            deadline: U256::from(u64::MAX),
        }
    }

    /// Executes `op` signed by `quorum` alone: `Ok` on success, else the module's error.
    async fn exec_with(&self, op: &Operation, quorum: &TestQuorum) -> Result<(), TreasuryModuleErrors> {
        let d = &self.chain.deployment;
        let sig = quorum.sign(operation_digest(op, TIER_QUORUM, d.chain_id, d.module));
        let module = self.module();
        match module.exec(exec_calls(op), op.nonce, op.deadline, sig.clone(), Bytes::new()).call().await {
            Ok(_) => {
                self.chain.exec_signed(op, sig, Bytes::new()).await.unwrap();
                Ok(())
            }
            Err(e) => Err(e.as_decoded_interface_error::<TreasuryModuleErrors>().expect("a module error")),
        }
    }

    async fn usdc_limit(&self) -> U256 {
        self.module().budget(self.usdc()).call().await.unwrap().limit
    }
}

fn queued_id(v: &Value) -> String {
    assert_eq!(v["status"], "queued", "{v}");
    v["outcome"]["queued"]["id"].as_str().unwrap().to_owned()
}

fn usdc(whole: u64) -> U256 {
    U256::from(whole) * U256::from(1_000_000u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_unpause_and_budgets_through_the_hsm_root() {
    let rig = Rig::start().await;

    // Before the HSM key is the root, the CLI refuses to send what the module would refuse.
    let err = rig.admin_fails(&["pause"]);
    assert!(err.contains("but the module's root is"), "{err}");

    rig.register_root().await;

    // Pause: immediate; exec then reverts with ModulePaused.
    let v = rig.admin(&["pause"]);
    assert_eq!(v["status"], "applied", "{v}");
    assert_eq!(v["plan"]["effect"]["effect"], "immediate");
    assert_eq!(v["from"].as_str().unwrap().parse::<Address>().unwrap(), rig.root, "the HSM key sends");
    assert!(rig.module().paused().call().await.unwrap());
    let op = rig.pay(10).await;
    assert!(matches!(
        rig.exec_with(&op, &rig.chain.quorum).await,
        Err(TreasuryModuleErrors::ModulePaused(_))
    ));

    // Unpause: immediate; the same payment executes.
    assert_eq!(rig.admin(&["unpause"])["status"], "applied");
    assert!(!rig.module().paused().call().await.unwrap());
    rig.exec_with(&op, &rig.chain.quorum).await.unwrap();

    // Raise the USDC budget 50,000 → 60,000 per day: widening, so queued behind the 48 h timelock.
    let usdc_addr = rig.usdc().to_string();
    let limit = usdc(60_000).to_string();
    let v = rig.admin(&["set-budget", "--token", &usdc_addr, "--limit", &limit, "--period", "86400"]);
    assert_eq!(v["plan"]["effect"]["effect"], "timelocked", "{v}");
    let id = queued_id(&v);
    let eta = v["outcome"]["queued"]["eta"].as_u64().unwrap();
    assert_eq!(rig.usdc_limit().await, usdc(50_000), "not applied before the timelock");

    // It is listed with its eta; applying it early is refused with the module's error named.
    let list = rig.admin(&["pending-changes"]);
    let queued = list["queued"].as_array().unwrap();
    assert_eq!(queued.len(), 1, "{list}");
    assert_eq!(queued[0]["id"], id.as_str());
    assert_eq!(queued[0]["eta"].as_u64().unwrap(), eta);
    let err = rig.admin_fails(&["apply", "--id", &id]);
    assert!(err.contains("ChangeNotReady"), "{err}");

    rig.wait(2 * DAY + 1).await;
    let v = rig.admin(&["apply", "--id", &id]);
    assert_eq!(v["status"], "applied", "{v}");
    assert_eq!(rig.usdc_limit().await, usdc(60_000));
    assert!(rig.admin(&["pending-changes"])["queued"].as_array().unwrap().is_empty());
    let err = rig.admin_fails(&["apply", "--id", &id]);
    assert!(err.contains("is queued"), "an applied change cannot be applied again: {err}");

    // Lower it to 10,000: narrowing, so applied at once.
    let limit = usdc(10_000).to_string();
    let v = rig.admin(&["set-budget", "--token", &usdc_addr, "--limit", &limit, "--period", "86400"]);
    assert_eq!(v["status"], "applied", "{v}");
    assert_eq!(rig.usdc_limit().await, usdc(10_000));
    let op = rig.pay(20_000 * 1_000_000).await;
    assert!(matches!(
        rig.exec_with(&op, &rig.chain.quorum).await,
        Err(TreasuryModuleErrors::BudgetExceeded(_))
    ));

    // A dry run shows the op and its digest, and signs and sends nothing.
    let human = rig.admin_args(false, &["pause"]);
    let out = rig
        .command(&[])
        .args(&human[..human.len() - 1])
        .args(["--ttl", "0", "--dry-run", "pause"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pause the module") && text.contains("digest"), "{text}");
    assert!(!rig.module().paused().call().await.unwrap(), "a dry run sends nothing");

    // Replacing the root is timelocked too; once applied, the old HSM key is no longer the root.
    let successor = Address::repeat_byte(0x5e);
    let v = rig.admin(&["set-root", "--address", &successor.to_string()]);
    let id = queued_id(&v);
    assert_eq!(rig.module().root().call().await.unwrap(), rig.root, "not before the timelock");
    rig.wait(2 * DAY + 1).await;
    assert_eq!(rig.admin(&["apply", "--id", &id])["status"], "applied");
    assert_eq!(rig.module().root().call().await.unwrap(), successor);
    let err = rig.admin_fails(&["pause"]);
    assert!(err.contains("but the module's root is"), "the old key can no longer administer: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn group_key_rotation_is_timelocked_and_cancellable() {
    let rig = Rig::start().await;
    rig.register_root().await;
    let old = &rig.chain.quorum;
    let b = TestQuorum::new(2, 3);
    let c = TestQuorum::new(2, 3);

    // Rotation to B by --x/--parity, to C by its quorum file: both widening, both queued.
    let kb = b.group_key();
    let x = format!("{:#x}", kb.x);
    // Attack (issue 13): a raw key carries no node's attestation; registering it without saying
    // so (--unattested) is refused, naming the flag.
    let err = rig.admin_fails(&["set-group-key", "--x", &x, "--parity", &kb.parity.to_string()]);
    assert!(err.contains("--unattested") && err.contains("attest"), "{err}");
    let v = rig.admin(&["set-group-key", "--x", &x, "--parity", &kb.parity.to_string(), "--unattested"]);
    let id_b = queued_id(&v);
    let kc = c.group_key();
    let mut compressed = vec![2 + kc.parity];
    compressed.extend_from_slice(&kc.x.to_be_bytes::<32>());
    let quorum_file = rig.hsm.path().join("quorum.toml");
    let unattested = QuorumFile {
        threshold: 2,
        coordinator_key: "coordinator.key".into(),
        group_key: hex::encode(&compressed),
        group_key_x: kc.x,
        group_key_parity: kc.parity,
        public_key_package: String::new(),
        nodes: Vec::new(),
        refresh: None,
    };
    // Attack (issue 13 item 1): a compromised coordinator writes a quorum file for a key it
    // holds alone; no node attests it, so registering it is refused.
    unattested.save(&quorum_file).unwrap();
    let err = rig.admin_fails(&["set-group-key", "--quorum-file", quorum_file.to_str().unwrap()]);
    assert!(err.contains("attest"), "{err}");
    // Attested by three nodes whose fingerprints the operator pinned out of band: registered.
    let nodes: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate()).collect();
    let attested = attested_quorum(unattested, &nodes);
    std::fs::remove_file(&quorum_file).unwrap();
    attested.save(&quorum_file).unwrap();
    let mut args =
        vec!["set-group-key".to_string(), "--quorum-file".into(), quorum_file.display().to_string()];
    for k in &nodes {
        args.extend(["--node-fingerprint".into(), k.public().fingerprint()]);
    }
    // ... but not against pins that name another node
    let mut wrong = args.clone();
    wrong[4] = IdentityKey::generate().public().fingerprint();
    let err = rig.admin_fails(&wrong.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("pinned"), "{err}");
    let v = rig.admin(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let id_c = queued_id(&v);
    let list = rig.admin(&["pending-changes"]);
    let ids: Vec<&str> =
        list["queued"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id_b.as_str(), id_c.as_str()]);

    // The old quorum still executes while the change waits.
    rig.exec_with(&rig.pay(1).await, old).await.unwrap();

    // Cancel B (immediate); it can no longer be applied.
    let args = rig.admin_args(false, &["cancel", "--id", &id_b]);
    let text = rig.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text.contains("applied   cancel queued change"), "{text}");
    let id_b_hash: B256 = id_b.parse().unwrap();
    assert!(rig.module().queuedChange(id_b_hash).call().await.unwrap().is_zero());
    let list = rig.admin(&["pending-changes"]);
    let ids: Vec<&str> =
        list["queued"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id_c.as_str()]);

    // Apply C after the timelock: only C's signatures execute from then on.
    rig.wait(2 * DAY + 1).await;
    assert!(rig.admin_fails(&["apply", "--id", &id_b]).contains("is queued"));
    // Anyone may apply: here the keeper, from its encrypted keystore (anvil's dev key 7).
    let keeper = treasury_devnet::dev_key(7);
    alloy::signers::local::PrivateKeySigner::encrypt_keystore(
        rig.hsm.path(),
        &mut frost_secp256k1::rand_core::OsRng,
        keeper.to_bytes(),
        "keeper password",
        Some("keeper.json"),
    )
    .unwrap();
    let keystore = rig.hsm.path().join("keeper.json");
    let args = rig.admin_args(true, &["--from-keystore", keystore.to_str().unwrap(), "apply", "--id", &id_c]);
    let out = rig.command(&[]).args(&args).env("TREASURY_KEEPER_PASSWORD", "wrong").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("decrypting the keystore") && !err.contains("keeper password"), "{err}");
    let out =
        rig.command(&[]).args(&args).env("TREASURY_KEEPER_PASSWORD", "keeper password").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "applied", "{v}");
    assert_eq!(v["from"].as_str().unwrap().parse::<Address>().unwrap(), keeper.address());
    let key = rig.module().groupKey().call().await.unwrap();
    assert_eq!((key.x, key.parity), (kc.x, kc.parity));
    let op = rig.pay(1).await;
    assert!(matches!(rig.exec_with(&op, old).await, Err(TreasuryModuleErrors::InvalidFrostSignature(_))));
    assert!(matches!(rig.exec_with(&op, &b).await, Err(TreasuryModuleErrors::InvalidFrostSignature(_))));
    rig.exec_with(&op, &c).await.unwrap();
}

/// `q` with three nodes, each attesting its group key and roster with its identity key, as the
/// nodes do at the end of DKG.
fn attested_quorum(mut q: QuorumFile, nodes: &[IdentityKey]) -> QuorumFile {
    use treasury_signer::quorum::quorum_file::QuorumNode;
    q.nodes = nodes
        .iter()
        .enumerate()
        .map(|(i, k)| QuorumNode {
            url: format!("http://node{i}"),
            identifier: format!("{:064x}", i + 1),
            identity_key: k.public().to_hex(),
            fingerprint: k.public().fingerprint(),
            attestation: String::new(),
        })
        .collect();
    let msg = q.attestation_message();
    for (n, k) in q.nodes.iter_mut().zip(nodes) {
        n.attestation = hex::encode(k.sign(&msg));
    }
    q
}
