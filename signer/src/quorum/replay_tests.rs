//! Issue 15: a compromised agent host drives the node. The node holds the pinned policies and
//! reads the chain through its own RPC endpoint (anvil); the "agent" below builds its requests
//! with the same public functions an honest agent uses, then lies.
use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use frost_secp256k1::keys::{IdentifierList, KeyPackage};
use rust_decimal::Decimal;
use treasury_chain::operation::{Operation, TIER_QUORUM, operation_digest};
use treasury_chain::snapshot::read_snapshot;
use treasury_devnet::TestChain;
use treasury_policies::replay::{DecidedFiring, Decision, PastIntent, PinnedBlock, PolicyBundle, payment_of};
use treasury_policies::{Action, Intent, PoliciesConfig, PolicySet, SnapshotView};

use super::super::guard::{AllowEntry, Budget, GuardConfig};
use super::super::replay::{ReplayConfig, ReplayMode, pin_policy};
use super::super::store::{NodeConfig, NodeStore, Passphrase};
use super::*;

const GRANTS: &str = r#"if paid("alice", "USDC", "day") == 0 { pay("alice", "USDC", 100); }"#;
const TITHE: &str = r#"pay("bob", "USDC", balance("USDC") / 1000);"#;
/// Alice first; bob once alice was paid; and a third payment only if bob was paid but alice
/// was not — which no honest order of firings reaches.
const RELAY: &str = r#"
if paid("alice", "USDC", "day") == 0 { pay("alice", "USDC", 100); }
if paid("alice", "USDC", "day") > 0 && paid("bob", "USDC", "day") == 0 { pay("bob", "USDC", 50); }
if paid("bob", "USDC", "day") > 0 && paid("alice", "USDC", "day") == 0 { pay("alice", "USDC", 7); }
"#;

struct World {
    chain: TestChain,
    bundle: PolicyBundle,
    usdc: Address,
    /// The history window of every decision here: the chain starts in the current month.
    genesis: PinnedBlock,
}

fn policies_config(chain: &TestChain) -> PoliciesConfig {
    let d = &chain.deployment;
    let usdc = d.token("USDC").unwrap();
    let text = format!(
        r#"
[tokens.USDC]
address = "{}"
decimals = {}
feed = "{}"
[addresses]
alice = "0x00000000000000000000000000000000000000a1"
bob = "0x00000000000000000000000000000000000000b2"
[[policy]]
name = "grants"
file = "grants.rhai"
trigger = {{ kind = "manual" }}
[[policy]]
name = "tithe"
file = "tithe.rhai"
trigger = {{ kind = "manual" }}
[[policy]]
name = "relay"
file = "relay.rhai"
trigger = {{ kind = "manual" }}
"#,
        usdc.address, usdc.decimals, usdc.feed
    );
    toml::from_str(&text).unwrap()
}

async fn world() -> World {
    let chain = TestChain::start().await.unwrap();
    let mut spec = chain.snapshot_spec();
    spec.assets.retain(|a| a.symbol == "USDC");
    let scripts: BTreeMap<String, String> =
        [("grants".into(), GRANTS.into()), ("tithe".into(), TITHE.into()), ("relay".into(), RELAY.into())]
            .into_iter()
            .collect();
    let bundle = PolicyBundle::new(chain.deployment.chain_id, &spec, None, policies_config(&chain), scripts);
    let usdc = chain.deployment.token("USDC").unwrap().address;
    let block0 = chain.keeper.get_block_by_number(BlockNumberOrTag::Number(0)).await.unwrap().unwrap();
    let genesis = PinnedBlock { number: 0, hash: block0.header.hash };
    World { chain, bundle, usdc, genesis }
}

/// A node with replay `mode` through anvil, `bundle` pinned, share 1 of a 2-of-2 dealer key.
fn replaying_node(dir: &std::path::Path, w: &World, mode: ReplayMode) -> (Arc<NodeState>, Vec<KeyPackage>) {
    let d = &w.chain.deployment;
    let guard: GuardConfig = serde_json::from_value(serde_json::json!({
        "chain_id": d.chain_id,
        "module": d.module,
        "allow": [AllowEntry { target: w.usdc, selector: Some("0xa9059cbb".into()) }],
        "budgets": [Budget { token: w.usdc, amount: U256::from(10u64).pow(U256::from(15)) }],
    }))
    .unwrap();
    let pass = Passphrase::new("tidal ember quartz meadow");
    let replay = ReplayConfig { mode, rpc: Some(w.chain.anvil.url().to_string()), ..Default::default() };
    let config = NodeConfig { coordinators: vec![IdentityKey::generate().public().to_hex()], guard, replay };
    NodeStore::init_with(dir, &pass, config, true).unwrap();
    let (shares, pkp) =
        frost_secp256k1::keys::generate_with_dealer(2, 2, IdentifierList::Default, rand_core::OsRng).unwrap();
    let kps: Vec<KeyPackage> = shares.into_values().map(|s| KeyPackage::try_from(s).unwrap()).collect();
    let mut store = NodeStore::open(dir, &pass).unwrap();
    store.secrets.set_share(&kps[0], &pkp).unwrap();
    store.save_secrets().unwrap();
    pin_policy(dir, &store.secrets.identity().unwrap(), &store.config.replay, &w.bundle, &[], now()).unwrap();
    (Arc::new(NodeState::open(dir, &pass).unwrap()), kps)
}

/// What the agent decided: the decision and the operation it asks the node to sign.
#[derive(Clone)]
struct Ask {
    decision: Decision,
    op: Operation,
}

/// The honest agent's decision for `policy` at the head: snapshot, evaluation, plan.
async fn decide(w: &World, policy: &str, history: &[treasury_policies::Payment]) -> Ask {
    decide_with(w, policy, history, Vec::new()).await
}

/// [`decide`], with the history the decision presents to the node.
async fn decide_with(
    w: &World,
    policy: &str,
    history: &[treasury_policies::Payment],
    presented: Vec<PastIntent>,
) -> Ask {
    let provider = &w.chain.keeper;
    let spec = w.bundle.snapshot_spec();
    let snapshot = read_snapshot(provider, &spec, BlockNumberOrTag::Latest).await.unwrap();
    let set = PolicySet::from_sources(&w.bundle.policies, &w.bundle.scripts).unwrap();
    let view = Arc::new(SnapshotView::new(&snapshot, set.book().clone()).unwrap());
    let intents = set.evaluate(policy, &view, history).unwrap();
    let mut ask = ask_for(w, policy, snapshot, intents);
    ask.decision.history = presented;
    ask
}

fn ask_for(w: &World, policy: &str, snapshot: treasury_chain::Snapshot, intents: Vec<Intent>) -> Ask {
    let block = PinnedBlock { number: snapshot.block_number, hash: snapshot.block_hash };
    let deadline = snapshot.timestamp + 3600;
    let calls =
        treasury_policies::plan::plan_batch(&intents, &snapshot, &w.bundle.venue(), deadline).unwrap();
    let op = Operation { calls, nonce: snapshot.module_nonce, deadline: U256::from(deadline) };
    let decision = Decision {
        policy_hash: w.bundle.hash(),
        firings: vec![DecidedFiring { policies: vec![policy.into()], trigger: "manual#1".into(), block }],
        intents,
        plan_block: block,
        history_from: Some(w.genesis),
        history: Vec::new(),
        keeper: None,
    };
    Ask { decision, op }
}

/// Asks `node` to sign `ask` (as the coordinator would, with a fresh commitment).
async fn sign(
    node: &Arc<NodeState>,
    peer: &KeyPackage,
    w: &World,
    ask: &Ask,
) -> Result<SignResponse, Refusal> {
    let d = &w.chain.deployment;
    let c = node.commitments(CommitmentsRequest { count: 1 }).unwrap();
    let mine = frost_secp256k1::round1::SigningCommitments::deserialize(
        &hex::decode(&c.commitments[0].commitments).unwrap(),
    )
    .unwrap();
    let (_, peer_c) = frost_secp256k1::round1::commit(peer.signing_share(), &mut rand_core::OsRng);
    let digest = operation_digest(&ask.op, TIER_QUORUM, d.chain_id, d.module);
    let me = frost_secp256k1::Identifier::try_from(1u16).unwrap();
    let package = frost_secp256k1::SigningPackage::new(
        [(*peer.identifier(), peer_c), (me, mine)].into_iter().collect(),
        digest.as_slice(),
    );
    let req = SignRequest {
        operation: ask.op.clone(),
        chain_id: d.chain_id,
        module: d.module,
        root_signature: None,
        signing_package: hex::encode(package.serialize().unwrap()),
        decision: Some(ask.decision.clone()),
    };
    let node = node.clone();
    tokio::task::spawn_blocking(move || node.sign(req)).await.unwrap()
}

fn refused(r: Result<SignResponse, Refusal>, code: RefusalCode, names: &str) {
    let err =
        r.err().unwrap_or_else(|| panic!("the node signed; expected a {code:?} refusal naming {names}"));
    assert_eq!(err.code, code, "{}", err.reason);
    assert!(err.reason.contains(names), "the refusal should name `{names}`: {}", err.reason);
}

fn with_amount(intent: &Intent, amount: Decimal) -> Intent {
    let mut i = intent.clone();
    if let Action::Pay { amount: a, .. } = &mut i.action {
        *a = amount;
    }
    i
}

/// The honest path: the node re-derives and signs, and signs the same operation again (a
/// coordinator retry with fresh commitments) without counting it as a second payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_decision_is_replayed_and_signed() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let ask = decide(&w, "grants", &[]).await;
    assert_eq!(ask.decision.intents.len(), 1);
    sign(&node, &kps[1], &w, &ask).await.expect("the honest decision signs");
    sign(&node, &kps[1], &w, &ask).await.expect("a retry of the same operation signs");
    let ledger = IntentLedger::open(dir.path()).unwrap().export();
    assert!(ledger.contains(&ask.decision.intents[0].key), "{ledger}");
    assert_eq!(ledger.lines().count(), 1, "a retry of one digest records its intent once: {ledger}");
}

/// A node that signed a grant and restarted (its signed intents read back from the nonce
/// ledger's lines, where they were synced with the nonce) still refuses the grant's key under
/// another operation while the first can execute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_still_refuses_a_key_it_signed() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let first = decide(&w, "grants", &[]).await;
    sign(&node, &kps[1], &w, &first).await.expect("the grant signs");
    drop(node);
    let node = Arc::new(NodeState::open(dir.path(), &Passphrase::new("tidal ember quartz meadow")).unwrap());
    let mut again = decide(&w, "grants", &[]).await;
    again.op.deadline -= U256::from(60);
    assert_eq!(again.decision.intents[0].key, first.decision.intents[0].key);
    refused(
        sign(&node, &kps[1], &w, &again).await,
        RefusalCode::AlreadySigned,
        &first.decision.intents[0].key,
    );
}

/// Attack: payments no policy produced, or a policy's payment with the amount or recipient
/// changed, or a decision under another policy set, or none at all: every one refused, naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_decisions_are_refused_naming_what_differs() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let honest = decide(&w, "grants", &[]).await;
    let pay = honest.decision.intents[0].clone();

    // a payment no policy produced (its own key), to the attacker
    let snapshot =
        read_snapshot(&w.chain.keeper, &w.bundle.snapshot_spec(), BlockNumberOrTag::Latest).await.unwrap();
    let invented = Intent {
        policy: "grants".into(),
        key: "grants:drain".into(),
        memo: None,
        action: Action::Pay {
            to: Address::repeat_byte(0xee),
            recipient: None,
            token: "USDC".into(),
            amount: Decimal::from(50_000),
        },
    };
    let ask = ask_for(&w, "grants", snapshot.clone(), vec![invented]);
    refused(sign(&node, &kps[1], &w, &ask).await, RefusalCode::ReplayMismatch, "grants:drain");

    // the policy's payment with the amount raised (intent and call both changed)
    let ask = ask_for(&w, "grants", snapshot.clone(), vec![with_amount(&pay, Decimal::from(100_000))]);
    refused(sign(&node, &kps[1], &w, &ask).await, RefusalCode::ReplayMismatch, &pay.key);

    // the honest decision, but the call pays someone else
    let mut ask = honest.clone();
    let redirected = treasury_policies::plan::plan_batch(
        &[Intent {
            action: Action::Pay {
                to: Address::repeat_byte(0xee),
                recipient: None,
                token: "USDC".into(),
                amount: Decimal::from(100),
            },
            ..pay.clone()
        }],
        &snapshot,
        &w.bundle.venue(),
        u64::try_from(ask.op.deadline).unwrap(),
    )
    .unwrap();
    ask.op.calls = redirected;
    refused(sign(&node, &kps[1], &w, &ask).await, RefusalCode::ReplayMismatch, "call 0");

    // a decision taken with another script (another bundle hash): the expected hash is named
    let mut ask = honest.clone();
    let mut other = w.bundle.clone();
    other.scripts.insert("grants".into(), r#"pay("alice", "USDC", 100000);"#.into());
    ask.decision.policy_hash = other.hash();
    refused(sign(&node, &kps[1], &w, &ask).await, RefusalCode::PolicyMismatch, &w.bundle.hash().to_string());

    // no decision at all
    let d = &w.chain.deployment;
    let c = node.commitments(CommitmentsRequest { count: 1 }).unwrap();
    let mine = frost_secp256k1::round1::SigningCommitments::deserialize(
        &hex::decode(&c.commitments[0].commitments).unwrap(),
    )
    .unwrap();
    let (_, peer_c) = frost_secp256k1::round1::commit(kps[1].signing_share(), &mut rand_core::OsRng);
    let digest = operation_digest(&honest.op, TIER_QUORUM, d.chain_id, d.module);
    let me = frost_secp256k1::Identifier::try_from(1u16).unwrap();
    let package = frost_secp256k1::SigningPackage::new(
        [(*kps[1].identifier(), peer_c), (me, mine)].into_iter().collect(),
        digest.as_slice(),
    );
    let bare = SignRequest {
        operation: honest.op.clone(),
        chain_id: d.chain_id,
        module: d.module,
        root_signature: None,
        signing_package: hex::encode(package.serialize().unwrap()),
        decision: None,
    };
    let n = node.clone();
    let r = tokio::task::spawn_blocking(move || n.sign(bare)).await.unwrap();
    refused(r, RefusalCode::ReplayRequired, "decision");

    // nothing was signed: the ledger holds no intent
    let ledger = IntentLedger::open(dir.path()).unwrap().export();
    assert!(ledger.is_empty(), "{ledger}");
}

/// Attack: the agent's RPC endpoint lies (the Safe's USDC balance doubled, as a rewriting proxy
/// would answer `balanceOf`), so its policy pays a tithe twice too large; the node reads its own
/// endpoint and refuses, naming the intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_lying_rpc_snapshot_is_refused() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let mut snapshot =
        read_snapshot(&w.chain.keeper, &w.bundle.snapshot_spec(), BlockNumberOrTag::Latest).await.unwrap();
    snapshot.assets[0].balance *= U256::from(2);
    let set = PolicySet::from_sources(&w.bundle.policies, &w.bundle.scripts).unwrap();
    let view = Arc::new(SnapshotView::new(&snapshot, set.book().clone()).unwrap());
    let intents = set.evaluate("tithe", &view, &[]).unwrap();
    let ask = ask_for(&w, "tithe", snapshot, intents);
    refused(sign(&node, &kps[1], &w, &ask).await, RefusalCode::ReplayMismatch, &ask.decision.intents[0].key);
    // the same policy on the honest chain signs
    let honest = decide(&w, "tithe", &[]).await;
    sign(&node, &kps[1], &w, &honest).await.expect("the honest tithe signs");
}

/// Attack: an old firing replayed after it was paid. The grant executes on chain; the agent
/// asks again (new nonce, history omitting the payment): the node refuses, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_firing_replayed_after_it_was_paid_is_refused() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let first = decide(&w, "grants", &[]).await;
    sign(&node, &kps[1], &w, &first).await.expect("the first grant signs");
    w.chain.exec(&first.op, false).await.expect("the grant executes");
    // The agent, omitting the payment from its history, decides the same grant again.
    let again = decide(&w, "grants", &[]).await;
    assert_eq!(again.decision.intents[0].key, first.decision.intents[0].key);
    assert_ne!(again.op.nonce, first.op.nonce);
    refused(
        sign(&node, &kps[1], &w, &again).await,
        RefusalCode::AlreadySigned,
        &first.decision.intents[0].key,
    );
}

/// A reorg between the agent's snapshot and the node's replay: the block hash the agent saw is
/// not on the node's chain (though the node read that block's snapshot for an earlier signature);
/// refused naming both hashes, then decided again on the new block and signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorged_block_is_refused_naming_its_hash_then_the_retry_signs() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let provider = &w.chain.keeper;
    let id: U256 = provider.raw_request("evm_snapshot".into(), ()).await.unwrap();
    let _: String = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let stale = decide(&w, "grants", &[]).await;
    // The node has read that block's snapshot (and may keep it): a tithe decided there signs.
    let tithe = decide(&w, "tithe", &[]).await;
    assert_eq!(tithe.decision.plan_block, stale.decision.plan_block);
    sign(&node, &kps[1], &w, &tithe).await.expect("the tithe at that block signs");
    let stale_block = tithe.decision.plan_block.number;
    let signed_tithe = PastIntent {
        intent: tithe.decision.intents[0].clone(),
        timestamp: provider
            .get_block_by_number(BlockNumberOrTag::Number(stale_block))
            .await
            .unwrap()
            .unwrap()
            .header
            .timestamp,
        digest: Some(operation_digest(
            &tithe.op,
            TIER_QUORUM,
            w.chain.deployment.chain_id,
            w.chain.deployment.module,
        )),
        decided_by: None,
    };
    let _: bool = provider.raw_request("evm_revert".into(), (id,)).await.unwrap();
    // another block at the same height (a later timestamp gives it another hash)
    let head = provider.get_block_by_number(BlockNumberOrTag::Latest).await.unwrap().unwrap();
    let _: String = provider.raw_request("evm_mine".into(), (head.header.timestamp + 7,)).await.unwrap();
    let block = stale.decision.firings[0].block;
    let now = provider.get_block_by_number(BlockNumberOrTag::Number(block.number)).await.unwrap().unwrap();
    assert_ne!(now.header.hash, block.hash, "the block was replaced");
    refused(sign(&node, &kps[1], &w, &stale).await, RefusalCode::ReplayMismatch, &block.hash.to_string());
    // decided again on the new block, its history holding the tithe the node signed (still live)
    let retry = decide_with(&w, "grants", &[], vec![signed_tithe]).await;
    sign(&node, &kps[1], &w, &retry).await.expect("the retry on the new block signs");
}

/// Attack: a grant executed without this node (the other signers signed it); the agent then
/// leaves it out of the history it presents, invents a payment, or misstates one. The node reads
/// the module's `Executed` events and the executed calls from its own endpoint and refuses each,
/// naming what is wrong; the honest history (the grant as executed) signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_omitted_invented_or_misstated_past_payment_is_refused() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let d = &w.chain.deployment;
    let grant = decide(&w, "grants", &[]).await;
    w.chain.exec(&grant.op, false).await.expect("the grant executes, signed by other nodes");
    let grant_digest = operation_digest(&grant.op, TIER_QUORUM, d.chain_id, d.module);
    let paid = PastIntent {
        intent: grant.decision.intents[0].clone(),
        timestamp: read_snapshot(
            &w.chain.keeper,
            &w.bundle.snapshot_spec(),
            BlockNumberOrTag::Number(grant.decision.plan_block.number),
        )
        .await
        .unwrap()
        .timestamp,
        digest: Some(grant_digest),
        decided_by: None,
    };

    // omitted: the agent's history leaves the grant out, so the policy pays alice again
    let again = decide(&w, "grants", &[]).await;
    assert_eq!(again.decision.intents.len(), 1, "without the grant in its history the policy pays again");
    refused(sign(&node, &kps[1], &w, &again).await, RefusalCode::ReplayMismatch, &grant_digest.to_string());

    // invented: a payment in an operation that never executed
    let mut invented = paid.clone();
    invented.digest = Some(alloy::primitives::B256::repeat_byte(0x77));
    invented.intent.key = "grants:invented".into();
    let ask = decide_with(&w, "tithe", &[], vec![paid.clone(), invented]).await;
    refused(sign(&node, &kps[1], &w, &ask).await, RefusalCode::ReplayMismatch, "has not executed");

    // misstated: the grant claimed as 50 USDC where 100 were sent
    let mut halved = paid.clone();
    halved.intent = with_amount(&paid.intent, Decimal::from(50));
    let ask = decide_with(&w, "tithe", &[], vec![halved]).await;
    refused(sign(&node, &kps[1], &w, &ask).await, RefusalCode::ReplayMismatch, "no such transfer");

    // honest: with the grant in its history the policy pays nothing more, and another policy's
    // decision presenting that history signs
    let history = [payment_of(&paid.intent, paid.timestamp).unwrap()];
    let done = decide_with(&w, "grants", &history, vec![paid.clone()]).await;
    assert!(done.decision.intents.is_empty(), "the grant was paid once today");
    let tithe = decide_with(&w, "tithe", &history, vec![paid]).await;
    sign(&node, &kps[1], &w, &tithe).await.expect("the honest history checks out");
}

/// Attack: a widened policy set (the grant raised a thousandfold) is approved and staged on the
/// node, and the agent asks under it at once: refused, naming the staged set and when it will be
/// enforced; decisions under the enforced set still sign meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_widening_change_is_not_enforced_before_its_delay() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let mut raised = w.bundle.clone();
    raised.scripts.insert("grants".into(), r#"pay("alice", "USDC", 100000);"#.into());
    let store = NodeStore::open(dir.path(), &Passphrase::new("tidal ember quartz meadow")).unwrap();
    let identity = store.secrets.identity().unwrap();
    let out =
        super::super::replay::pin_policy(dir.path(), &identity, &store.config.replay, &raised, &[], now())
            .unwrap();
    assert!(out.widening && out.active_from >= now() + 86_000, "{out:?}");

    let mut ask = decide(&w, "grants", &[]).await;
    ask.decision.policy_hash = raised.hash();
    refused(sign(&node, &kps[1], &w, &ask).await, RefusalCode::PolicyMismatch, "staged");
    let honest = decide(&w, "grants", &[]).await;
    sign(&node, &kps[1], &w, &honest).await.expect("the enforced set still signs");
}

/// Attack on the node's chain cache: the node signs (and so reads the module's `Executed` events
/// up to the head), then a grant executes without it (the other signers signed it). The agent
/// then asks for the grant again, leaving it out of the history it presents: the node still
/// finds it executed and refuses, naming its digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_executed_after_the_nodes_last_signature_is_still_seen() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let d = &w.chain.deployment;
    let tithe = decide(&w, "tithe", &[]).await;
    sign(&node, &kps[1], &w, &tithe).await.expect("the tithe signs (the node has read the chain)");
    // its retries: the node now keeps the module's events up to the tithe's block, seen before,
    // which is the head (the events are then read from the head on)
    sign(&node, &kps[1], &w, &tithe).await.expect("its retry signs");
    sign(&node, &kps[1], &w, &tithe).await.expect("its retry at the head signs");
    let grant = decide(&w, "grants", &[]).await;
    w.chain.exec(&grant.op, false).await.expect("the grant executes, signed by other nodes");
    let grant_digest = operation_digest(&grant.op, TIER_QUORUM, d.chain_id, d.module);
    let again = decide(&w, "grants", &[]).await;
    assert_eq!(again.decision.intents.len(), 1, "without the grant in its history the policy pays again");
    refused(sign(&node, &kps[1], &w, &again).await, RefusalCode::ReplayMismatch, &grant_digest.to_string());
}

/// Attack on the node's chain cache: the node signs twice far enough from genesis that it keeps
/// the module's events up to a finalized block (anvil finalizes 64 blocks back), then a reorg
/// deeper than that block (anvil's revert) replaces them with a chain in which a grant executes,
/// signed by the other nodes. The agent asks for the grant again, leaving it out of the history: the
/// node finds the block it kept events up to gone, reads them again and refuses, naming the
/// grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_under_the_nodes_kept_events_is_still_seen() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let d = &w.chain.deployment;
    let provider = &w.chain.keeper;
    let grant = decide(&w, "grants", &[]).await;
    let id: U256 = provider.raw_request("evm_snapshot".into(), ()).await.unwrap();
    let _: serde_json::Value = provider.raw_request("anvil_mine".into(), (U256::from(80),)).await.unwrap();
    let tithe = decide(&w, "tithe", &[]).await;
    let read = tithe.decision.plan_block;
    sign(&node, &kps[1], &w, &tithe).await.expect("the tithe signs (the node sees a finalized block)");
    sign(&node, &kps[1], &w, &tithe).await.expect("its retry signs (the node keeps events up to it)");
    let _: bool = provider.raw_request("evm_revert".into(), (id,)).await.unwrap();
    w.chain.exec(&grant.op, false).await.expect("the grant executes on the replacing chain");
    let head = provider.get_block_number().await.unwrap();
    assert!(head + 64 < read.number, "the blocks the node read, finalized ones included, are gone");
    let grant_digest = operation_digest(&grant.op, TIER_QUORUM, d.chain_id, d.module);
    let again = decide(&w, "grants", &[]).await;
    assert_eq!(again.decision.intents.len(), 1, "without the grant in its history the policy pays again");
    refused(sign(&node, &kps[1], &w, &again).await, RefusalCode::ReplayMismatch, &grant_digest.to_string());
}

/// A tithe this node signed never executed: a grant took its module nonce (signed by the other
/// nodes) and its deadline passed, so it can no longer pay. The history of a later tithe need
/// not count it: the node, holding an operation of its own that has not executed, reads the
/// module nonce, finds that operation dead and signs (were it taken as live, the history would
/// be refused for leaving it out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_operation_that_can_no_longer_execute_need_not_be_in_the_history() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let d = &w.chain.deployment;
    let provider = &w.chain.keeper;
    let first = decide(&w, "tithe", &[]).await;
    sign(&node, &kps[1], &w, &first).await.expect("the tithe signs");
    let grant = decide(&w, "grants", &[]).await;
    assert_eq!(grant.op.nonce, first.op.nonce);
    w.chain.exec(&grant.op, false).await.expect("the grant takes the nonce, signed by other nodes");
    let paid = PastIntent {
        intent: grant.decision.intents[0].clone(),
        timestamp: read_snapshot(
            provider,
            &w.bundle.snapshot_spec(),
            BlockNumberOrTag::Number(grant.decision.plan_block.number),
        )
        .await
        .unwrap()
        .timestamp,
        digest: Some(operation_digest(&grant.op, TIER_QUORUM, d.chain_id, d.module)),
        decided_by: None,
    };
    let _: serde_json::Value =
        provider.raw_request("evm_increaseTime".into(), (U256::from(7200),)).await.unwrap();
    let _: serde_json::Value = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    let history = [payment_of(&paid.intent, paid.timestamp).unwrap()];
    let later = decide_with(&w, "tithe", &history, vec![paid]).await;
    assert_ne!(later.op.nonce, first.op.nonce);
    sign(&node, &kps[1], &w, &later).await.expect("the dead tithe need not be in the history");
}

/// Two firings of `relay` at the latest block B: the first pays alice, the second, counting it,
/// pays bob (neither executed).
struct TwoFirings {
    at_b: treasury_chain::Snapshot,
    set: PolicySet,
    view: Arc<SnapshotView>,
    alice: Vec<Intent>,
    first: Ask,
    bob: Vec<Intent>,
}

async fn two_firings_at_one_block(w: &World) -> TwoFirings {
    let at_b =
        read_snapshot(&w.chain.keeper, &w.bundle.snapshot_spec(), BlockNumberOrTag::Latest).await.unwrap();
    let set = PolicySet::from_sources(&w.bundle.policies, &w.bundle.scripts).unwrap();
    let view = Arc::new(SnapshotView::new(&at_b, set.book().clone()).unwrap());
    let alice = set.evaluate("relay", &view, &[]).unwrap();
    let first = ask_for(w, "relay", at_b.clone(), alice.clone());
    let bob = set.evaluate("relay", &view, &[payment_of(&alice[0], at_b.timestamp).unwrap()]).unwrap();
    assert_eq!(bob.len(), 1, "{bob:?}");
    TwoFirings { at_b, set, view, alice, first, bob }
}

/// `intent` as a history entry: decided at `timestamp`, carried by `op` (tier 1).
fn past_at(
    w: &World,
    intent: &Intent,
    op: &Operation,
    timestamp: u64,
    decided_by: Option<&str>,
) -> PastIntent {
    let d = &w.chain.deployment;
    PastIntent {
        intent: intent.clone(),
        timestamp,
        digest: Some(operation_digest(op, TIER_QUORUM, d.chain_id, d.module)),
        decided_by: decided_by.map(str::to_string),
    }
}

/// Attack on split firings: two firings at one block paid alice, then bob; the agent asks for
/// a payment of a third firing "of the first" at that block, calling alice's payment that
/// firing's own (carried by another operation) so its replay leaves it out — while still
/// counting bob's, decided after it. Replayed so, the policy pays what no honest order of
/// firings pays. Refused: a split firing's block holds no other firing of its policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_of_another_firing_called_a_split_firings_own_is_refused() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let spec = w.bundle.snapshot_spec();
    let TwoFirings { at_b, set, view, alice, first, bob } = two_firings_at_one_block(&w).await;
    let mut second = ask_for(&w, "relay", at_b.clone(), bob.clone());
    second.op.nonce += U256::from(1);
    w.chain.exec(&first.op, false).await.expect("alice is paid, signed by other nodes");
    w.chain.exec(&second.op, false).await.expect("bob is paid, signed by other nodes");
    let past = |intent: &Intent, op: &Operation, decided_by: Option<&str>| {
        past_at(&w, intent, op, at_b.timestamp, decided_by)
    };

    // Without alice's payment the policy pays alice again and the third payment; the agent
    // asks only for the third, planned at the head.
    let paid_bob = [payment_of(&bob[0], at_b.timestamp).unwrap()];
    let forged = set.evaluate("relay", &view, &paid_bob).unwrap();
    assert_eq!(forged.len(), 2, "{forged:?}");
    let head = read_snapshot(&w.chain.keeper, &spec, BlockNumberOrTag::Latest).await.unwrap();
    let mut ask = ask_for(&w, "relay", head, vec![forged[1].clone()]);
    ask.decision.firings[0].block = first.decision.plan_block;
    ask.decision.history =
        vec![past(&alice[0], &first.op, Some("manual#1")), past(&bob[0], &second.op, None)];
    refused(sign(&node, &kps[1], &w, &ask).await, RefusalCode::ReplayMismatch, &bob[0].key);
}

/// The honest path beside that rule: a second firing of a policy at a block (counting the
/// first's payment) whose history also lists the operation's own intent, labelled with its
/// firing as the agent does, is signed: its own intents do not make it a split firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_firing_at_a_block_listing_its_own_intent_is_signed() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, kps) = replaying_node(dir.path(), &w, ReplayMode::Required);
    let spec = w.bundle.snapshot_spec();
    let TwoFirings { at_b, alice, first, bob, .. } = two_firings_at_one_block(&w).await;
    w.chain.exec(&first.op, false).await.expect("alice is paid, signed by other nodes");
    // Fired at block B like the first, planned at the head after the first executed.
    let head = read_snapshot(&w.chain.keeper, &spec, BlockNumberOrTag::Latest).await.unwrap();
    let mut second = ask_for(&w, "relay", head, bob.clone());
    second.decision.firings[0].block = first.decision.plan_block;
    second.decision.firings[0].trigger = "manual#2".into();
    let past = |intent: &Intent, op: &Operation, decided_by: Option<&str>| {
        past_at(&w, intent, op, at_b.timestamp, decided_by)
    };
    second.decision.history =
        vec![past(&alice[0], &first.op, None), past(&bob[0], &second.op, Some("manual#2"))];
    sign(&node, &kps[1], &w, &second).await.expect("the second firing's payment signs");
}
