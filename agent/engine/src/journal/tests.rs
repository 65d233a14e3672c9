//! The journal on both backends: every test runs against a real SQLite file and against a
//! private PostgreSQL cluster (`treasury_devnet::Postgres`, one per test).

use serde_json::json;
use tempfile::TempDir;
use treasury_devnet::Postgres;

use super::*;

/// A fresh, empty journal database on one backend; its folder or cluster lives as long as this.
enum Db {
    Sqlite(TempDir),
    Postgres(Postgres),
}

impl Db {
    fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::Sqlite(TempDir::new().unwrap()),
            Backend::Postgres => {
                let cluster = Postgres::start().unwrap();
                cluster.create_database("journal").unwrap();
                Self::Postgres(cluster)
            }
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}", dir.path().join("journal.db").display()),
            Self::Postgres(cluster) => cluster.url("journal"),
        }
    }

    async fn open(&self) -> Journal {
        Journal::open(&self.url()).await.unwrap()
    }
}

/// Runs each named `async fn(Db)` as two tests, `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::{Backend, Db};

            #[tokio::test]
            async fn sqlite() {
                super::$name(Db::new(Backend::Sqlite)).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(Db::new(Backend::Postgres)).await
            }
        }
    )*};
}

on_both_backends!(
    same_idempotency_key_twice_returns_the_existing_intent,
    every_transition_is_an_event_and_illegal_ones_are_refused,
    list_filters_by_state_and_policy,
    a_restart_finds_everything_and_the_work_to_resume,
    concurrent_inserts_of_one_key_make_one_intent,
    concurrent_transitions_from_one_state_let_exactly_one_through,
    signing_answers_round_trip_typed_and_a_corrupt_one_is_an_error,
    a_firings_intents_land_together_or_not_at_all,
    a_large_firing_lands_in_order_each_with_its_events,
    the_policy_version_is_journaled_with_the_intent_and_read_back_everywhere,
);

fn pay(key: &str, policy: &str) -> NewIntent {
    NewIntent {
        idempotency_key: key.into(),
        policy: policy.into(),
        trigger: "schedule@2024-03-01T09:00:00Z".into(),
        kind: "pay".into(),
        payload: json!({"to": "0x00000000000000000000000000000000000000a1", "token": "USDC", "amount": "1500.00"}),
        policy_version: None,
    }
}

async fn walk(journal: &Journal, id: IntentId, path: &[IntentState]) {
    for &to in path {
        journal.transition(id, to, json!({"step": to.as_str()})).await.unwrap();
    }
}

async fn same_idempotency_key_twice_returns_the_existing_intent(db: Db) {
    let journal = db.open().await;
    let first = journal.insert_intent(&pay("payroll:2024-03:alice", "payroll")).await.unwrap();
    let mut again = pay("payroll:2024-03:alice", "payroll");
    again.payload = json!({"amount": "9999"});
    let second = journal.insert_intent(&again).await.unwrap();

    assert!(first.created);
    assert!(!second.created);
    assert_eq!(second.intent, first.intent, "the stored intent, not the new payload");
    assert_eq!(journal.list(&IntentFilter::default()).await.unwrap().len(), 1);
    let (_, events) = journal.intent(first.intent.id).await.unwrap().unwrap();
    assert_eq!(events.len(), 1, "one creation event only");
    assert_eq!((events[0].from, events[0].to), (None, IntentState::Proposed));
}

async fn a_firings_intents_land_together_or_not_at_all(db: Db) {
    use IntentState::*;
    let journal = db.open().await;
    let guarded = Some((Guarded, json!(null)));
    // The second row cannot be written (an illegal first transition): the first is not kept.
    let failing = [
        (pay("grants:a", "grants"), guarded.clone()),
        (pay("grants:b", "grants"), Some((Signed, json!(null)))),
    ];
    let err = journal.insert_intents_then(&failing).await.unwrap_err();
    assert!(err.is_illegal_transition(), "{err}");
    assert!(
        journal.list(&IntentFilter::default()).await.unwrap().is_empty(),
        "nothing of the firing is journaled"
    );
    // Whole, they land together; again, each is a duplicate.
    let whole = [(pay("grants:a", "grants"), guarded.clone()), (pay("grants:b", "grants"), guarded.clone())];
    let first = journal.insert_intents_then(&whole).await.unwrap();
    assert!(first.iter().all(|i| i.created && i.intent.state == Guarded), "{first:?}");
    let again = journal.insert_intents_then(&whole).await.unwrap();
    assert!(again.iter().all(|i| !i.created), "{again:?}");
    assert_eq!(journal.list(&IntentFilter::default()).await.unwrap().len(), 2);
}

async fn a_large_firing_lands_in_order_each_with_its_events(db: Db) {
    use IntentState::*;
    let journal = db.open().await;
    journal.insert_intent(&pay("grants:17", "grants")).await.unwrap();
    // More intents than one multi-row statement holds, one already journaled, one key given twice.
    let mut firing: Vec<_> =
        (0..1_200).map(|i| (pay(&format!("grants:{i}"), "grants"), Some((Guarded, json!(null))))).collect();
    firing.push((pay("grants:5", "grants"), Some((Rejected, json!({"reason": "again"})))));
    let inserted = journal.insert_intents_then(&firing).await.unwrap();

    assert_eq!(inserted.len(), firing.len());
    let created: Vec<_> = inserted.iter().filter(|i| i.created).map(|i| i.intent.id).collect();
    assert_eq!(created.len(), 1_199, "all but the journaled key and the repeated one");
    assert!(created.windows(2).all(|w| w[0] < w[1]), "ids follow the firing's order");
    assert!(!inserted[17].created && inserted[17].intent.state == Proposed, "the journaled one is untouched");
    let repeated = &inserted[1_200];
    assert!(!repeated.created && repeated.intent == inserted[5].intent && repeated.intent.state == Guarded);
    for (inserted, (new, _)) in inserted.iter().zip(&firing) {
        assert_eq!(inserted.intent.idempotency_key, new.idempotency_key);
    }
    let (intent, events) = journal.intent(inserted[1_199].intent.id).await.unwrap().unwrap();
    assert_eq!(intent.state, Guarded);
    let steps: Vec<_> = events.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(steps, [(None, Proposed), (Some(Proposed), Guarded)]);
    assert_eq!(
        journal.list(&IntentFilter { limit: Some(5_000), ..Default::default() }).await.unwrap().len(),
        1_200
    );
}

async fn every_transition_is_an_event_and_illegal_ones_are_refused(db: Db) {
    use IntentState::*;
    let journal = db.open().await;
    let id = journal.insert_intent(&pay("k1", "grants")).await.unwrap().intent.id;

    let err = journal.transition(id, Signed, json!(null)).await.unwrap_err();
    assert!(err.is_illegal_transition());
    let msg = err.to_string();
    assert!(msg.contains("proposed") && msg.contains("signed"), "{msg}");

    walk(&journal, id, &[Guarded, Planned, Authorising, AwaitingRoot, Signed, Submitted, Confirmed]).await;
    let (intent, events) = journal.intent(id).await.unwrap().unwrap();
    assert_eq!(intent.state, Confirmed);
    let steps: Vec<_> = events.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        steps,
        vec![
            (None, Proposed),
            (Some(Proposed), Guarded),
            (Some(Guarded), Planned),
            (Some(Planned), Authorising),
            (Some(Authorising), AwaitingRoot),
            (Some(AwaitingRoot), Signed),
            (Some(Signed), Submitted),
            (Some(Submitted), Confirmed),
        ],
        "the refused transition left no event"
    );
    assert_eq!(events[3].detail, json!({"step": "authorising"}));

    let err = journal.transition(id, Failed, json!(null)).await.unwrap_err();
    assert!(matches!(err, JournalError::IllegalTransition { from: Confirmed, to: Failed, .. }));
    assert!(matches!(
        journal.transition(IntentId(4242), Guarded, json!(null)).await,
        Err(JournalError::NotFound(IntentId(4242)))
    ));
}

async fn list_filters_by_state_and_policy(db: Db) {
    use IntentState::*;
    let journal = db.open().await;
    let a = journal.insert_intent(&pay("a", "payroll")).await.unwrap().intent.id;
    let _b = journal.insert_intent(&pay("b", "payroll")).await.unwrap().intent.id;
    let c = journal.insert_intent(&pay("c", "grants")).await.unwrap().intent.id;
    walk(&journal, a, &[Guarded]).await;
    walk(&journal, c, &[Rejected]).await;

    let ids = |v: Vec<Intent>| v.into_iter().map(|i| i.idempotency_key).collect::<Vec<_>>();
    let by_policy = IntentFilter { policy: Some("payroll".into()), ..Default::default() };
    assert_eq!(ids(journal.list(&by_policy).await.unwrap()), ["b", "a"], "newest first");
    let by_state = IntentFilter { state: Some(Guarded), ..Default::default() };
    assert_eq!(ids(journal.list(&by_state).await.unwrap()), ["a"]);
    let both = IntentFilter { state: Some(Rejected), policy: Some("payroll".into()), limit: None };
    assert!(journal.list(&both).await.unwrap().is_empty());
    let limited = IntentFilter { limit: Some(1), ..Default::default() };
    assert_eq!(ids(journal.list(&limited).await.unwrap()), ["c"]);
}

async fn a_restart_finds_everything_and_the_work_to_resume(db: Db) {
    use IntentState::*;
    let (submitted, planned, done);
    {
        let journal = db.open().await;
        submitted = journal.insert_intent(&pay("s", "payroll")).await.unwrap().intent.id;
        planned = journal.insert_intent(&pay("p", "payroll")).await.unwrap().intent.id;
        done = journal.insert_intent(&pay("d", "payroll")).await.unwrap().intent.id;
        walk(&journal, submitted, &[Guarded, Planned]).await;
        journal
            .record_operation(&OperationRecord {
                operation_id: "0xop1".into(),
                module_nonce: 7,
                operation: json!({"calls": [], "nonce": 7, "deadline": 1_700_000_000}),
                intents: vec![submitted],
            })
            .await
            .unwrap();
        walk(&journal, submitted, &[Authorising]).await;
        let request = NewSigningRequest {
            operation_id: "0xop1".into(),
            signer: "quorum".into(),
            digest: "0xdigest".into(),
            request: json!({"tier": 1}),
        };
        journal.record_signing_request(&request).await.unwrap();
        journal.answer_signing_request("0xop1", "quorum", &quorum_answer()).await.unwrap();
        walk(&journal, submitted, &[Signed]).await;
        journal
            .record_transaction(&NewTransaction {
                operation_id: "0xop1".into(),
                module_nonce: 7,
                signed_operation: json!({"nonce": 7, "frostSig": "0xabc"}),
                keeper_nonce: 3,
                tx_hash: "0xt1".into(),
                raw_tx: "0x02f8aa".into(),
            })
            .await
            .unwrap();
        walk(&journal, submitted, &[Submitted]).await;
        journal.set_transaction_state("0xt1", TxState::Included, Some(120)).await.unwrap();
        walk(&journal, planned, &[Guarded, Planned]).await;
        walk(&journal, done, &[Guarded, Failed]).await;
        let cursor = Cursor { block_number: 121, block_hash: "0xb121".into() };
        journal.set_cursor("blocks", "0xsafe", &cursor).await.unwrap();
        journal.close().await;
        // Dropped without anything else: a kill after the last commit.
    }

    let journal = db.open().await;
    if journal.backend() == Backend::Sqlite {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&journal.pool).await.unwrap();
        assert_eq!(mode, "wal");
    }

    let pending = journal.pending().await.unwrap();
    let keys: Vec<_> = pending.iter().map(|p| p.intent.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["s", "p"], "the failed intent is not pending work");
    let resumed = &pending[0];
    assert_eq!(resumed.intent.state, Submitted);
    let op = resumed.operation.as_ref().unwrap();
    assert_eq!((op.operation_id.as_str(), op.module_nonce), ("0xop1", 7));
    assert_eq!(op.intents, vec![submitted]);
    let tx = resumed.transaction.as_ref().unwrap();
    assert_eq!(tx.tx.raw_tx, "0x02f8aa", "the raw transaction to broadcast again");
    assert_eq!((tx.state, tx.block_number), (TxState::Included, Some(120)));
    assert!(pending[1].operation.is_none() && pending[1].transaction.is_none());

    // The histories' one query: decided intents newest first, the failed one left out, each with
    // its newest operation and the block that operation's newest transaction was mined in.
    let decided = journal.decided_intents(100).await.unwrap();
    let seen: Vec<_> = decided
        .iter()
        .map(|d| (d.intent.idempotency_key.as_str(), d.operation_id.as_deref(), d.mined_block))
        .collect();
    assert_eq!(seen, [("p", None, None), ("s", Some("0xop1"), Some(120))]);
    assert_eq!(journal.decided_intents(1).await.unwrap().len(), 1, "the newest one only");
    let ids: Vec<_> = decided.iter().map(|d| d.intent.id).collect();
    assert_eq!(journal.decided_ids(100).await.unwrap(), ids, "the same intents, by id alone");
    assert_eq!(journal.decided_ids(1).await.unwrap(), ids[..1]);

    let signing = journal.signing_request("0xop1", "quorum").await.unwrap().unwrap();
    assert_eq!(signing.state, SigningState::Signed);
    assert_eq!(signing.answer, Some(quorum_answer()));
    let (_, events) = journal.intent(submitted).await.unwrap().unwrap();
    assert_eq!(events.len(), 6);
    assert_eq!(
        journal.cursor("blocks", "0xsafe").await.unwrap(),
        Some(Cursor { block_number: 121, block_hash: "0xb121".into() })
    );
    assert_eq!(journal.cursor("logs", "0xsafe").await.unwrap(), None);
    // Journaling the same things again after the restart (replayed steps) duplicates nothing.
    assert!(!journal.insert_intent(&pay("s", "payroll")).await.unwrap().created);
    journal
        .record_transaction(&NewTransaction {
            operation_id: "0xop1".into(),
            module_nonce: 7,
            signed_operation: json!({}),
            keeper_nonce: 3,
            tx_hash: "0xt1".into(),
            raw_tx: "0xother".into(),
        })
        .await
        .unwrap();
    let txs = journal.transactions("0xop1").await.unwrap();
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0].tx.raw_tx, "0x02f8aa");
}

async fn concurrent_inserts_of_one_key_make_one_intent(db: Db) {
    // Two handles on one file, as two agent processes would have.
    let a = db.open().await;
    let b = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let journal = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            journal.insert_intent(&pay("tick:2024-03-01T09:00:00Z", "payroll")).await.unwrap()
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.created).count(), 1);
    assert!(results.iter().all(|r| r.intent.id == results[0].intent.id));
    assert_eq!(a.list(&IntentFilter::default()).await.unwrap().len(), 1);
    let (_, events) = a.intent(results[0].intent.id).await.unwrap().unwrap();
    assert_eq!(events.len(), 1);
}

async fn concurrent_transitions_from_one_state_let_exactly_one_through(db: Db) {
    let journal = db.open().await;
    let id = journal.insert_intent(&pay("k", "payroll")).await.unwrap().intent.id;
    walk(&journal, id, &[IntentState::Guarded]).await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let j = journal.clone();
            tokio::spawn(async move { j.transition(id, IntentState::Planned, json!(null)).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(e.is_illegal_transition(), "{e}"),
        }
    }
    assert_eq!(ok, 1, "only one planner may move the intent");
    let (_, events) = journal.intent(id).await.unwrap().unwrap();
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn unsupported_url_is_a_typed_error() {
    let err = Journal::open("mysql://localhost/treasury").await.unwrap_err();
    assert!(matches!(err, JournalError::UnsupportedUrl(_)));
}

/// The SQLite every lane journal opens a connection to is built without the per-connection
/// lookaside buffer (48 KiB) and bulk page-cache allocation (≈ 86 KiB) that SQLite touches as each
/// connection opens, which 1,000 lanes would hold 1,000 times (`.cargo/config.toml`, issue 16).
#[tokio::test]
async fn sqlite_is_built_without_per_connection_preallocations() {
    let db = Db::new(Backend::Sqlite);
    let journal = db.open().await;
    let options: Vec<String> =
        sqlx::query_scalar("PRAGMA compile_options").fetch_all(&journal.pool).await.unwrap();
    for wanted in ["DEFAULT_LOOKASIDE=0,0", "DEFAULT_PCACHE_INITSZ=0"] {
        assert!(options.iter().any(|o| o == wanted), "{wanted} missing from {options:?}");
    }
}

/// Each lane's SQLite connection caches at most 64 KiB of pages: a fleet of 1,000 lanes would
/// otherwise hold every journal's tables in its heap (issue 16).
#[tokio::test]
async fn sqlite_connections_keep_a_small_page_cache() {
    let db = Db::new(Backend::Sqlite);
    let journal = db.open().await;
    let cache: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&journal.pool).await.unwrap();
    assert_eq!(cache, -64, "cache_size in KiB (negative) of the journal's connection");
}

fn quorum_answer() -> SigningAnswer {
    use alloy::primitives::U256;
    let signature = treasury_signer::quorum::FrostSignature {
        r_x: U256::from(1u64),
        r_y: U256::from(2u64),
        z: U256::from(3u64),
    };
    SigningAnswer::Quorum(QuorumSignature { signature, root_signature: Some(vec![0xab; 65].into()) })
}

/// A signature edited in the file (or written by another version) is an error naming the
/// operation, the signer and what does not parse, never an empty signature.
async fn signing_answers_round_trip_typed_and_a_corrupt_one_is_an_error(db: Db) {
    let journal = db.open().await;
    for (op, signer) in [("0xq", "quorum"), ("0xr", "root"), ("0xn", "quorum")] {
        let request = NewSigningRequest {
            operation_id: op.into(),
            signer: signer.into(),
            digest: op.into(),
            request: json!({}),
        };
        journal.record_signing_request(&request).await.unwrap();
    }
    let root = SigningAnswer::Root(RootSignature { signature: vec![0xcd; 65].into() });
    let refused = SigningAnswer::Refused("node-1: over the limit".into());
    journal.answer_signing_request("0xq", "quorum", &quorum_answer()).await.unwrap();
    journal.answer_signing_request("0xr", "root", &root).await.unwrap();
    journal.answer_signing_request("0xn", "quorum", &refused).await.unwrap();
    let answer = |op: &'static str, signer: &'static str| {
        let journal = journal.clone();
        async move { journal.signing_request(op, signer).await.map(|r| r.unwrap().answer) }
    };
    assert_eq!(answer("0xq", "quorum").await.unwrap(), Some(quorum_answer()));
    assert_eq!(answer("0xr", "root").await.unwrap(), Some(root));
    assert_eq!(answer("0xn", "quorum").await.unwrap(), Some(refused));
    let pending = NewSigningRequest {
        operation_id: "0xp".into(),
        signer: "quorum".into(),
        digest: "0xp".into(),
        request: json!({}),
    };
    let stored = journal.record_signing_request(&pending).await.unwrap();
    assert_eq!((stored.state, stored.answer), (SigningState::Pending, None));

    let corrupt = [
        (
            r#"{"signature": {"r_x": "0x1", "r_y": "0x2", "z": "0x3"}, "root_signature": "0xnothex"}"#,
            "Invalid",
        ),
        (r#"{"signature": {"r_x": "0x1", "r_y": "0x2"}, "root_signature": null}"#, "missing field `z`"),
        (r#"{"sig": "0xabc"}"#, "unknown field `sig`"),
        ("", "EOF"),
    ];
    for (text, why) in corrupt {
        sqlx::query("UPDATE signing_requests SET response = $1 WHERE operation_id = '0xq'")
            .bind(text)
            .execute(&journal.pool)
            .await
            .unwrap();
        let err = answer("0xq", "quorum").await.unwrap_err();
        assert!(matches!(err, JournalError::CorruptAnswer { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("quorum answer for operation 0xq"), "{message}");
        assert!(message.to_lowercase().contains(&why.to_lowercase()), "{text}: {message}");
    }
    sqlx::query("UPDATE signing_requests SET response = NULL WHERE operation_id = '0xr'")
        .execute(&journal.pool)
        .await
        .unwrap();
    let err = answer("0xr", "root").await.unwrap_err().to_string();
    assert!(err.contains("root answer for operation 0xr: signed without an answer"), "{err}");
}

on_both_backends!(a_lease_has_one_holder_and_a_takeover_fences_the_old_one);

/// Two replicas on one database: while A's lease runs B cannot take it; once it expired B takes it
/// with a new term, and from then on every write of A's fenced handle is refused (and its renewal),
/// while B writes.
async fn a_lease_has_one_holder_and_a_takeover_fences_the_old_one(db: Db) {
    use std::time::Duration;
    let journal = db.open().await;
    let long = Duration::from_secs(3600);
    let a = journal.try_acquire_lease("1:0xmodule", "replica-a", long).await.unwrap().unwrap();
    assert_eq!(a.term, 1);
    assert_eq!(journal.try_acquire_lease("1:0xmodule", "replica-b", long).await.unwrap(), None);
    let other = journal.try_acquire_lease("1:0xother", "replica-b", long).await.unwrap().unwrap();
    assert_eq!(other.holder, "replica-b", "leases are per treasury");

    let as_a = journal.fenced(a.clone());
    let id = as_a.insert_intent(&pay("k", "payroll")).await.unwrap().intent.id;
    as_a.check_fence().await.unwrap();
    // A's lease lapses (a zero time to live: it expires now), B takes over with the next term.
    as_a.renew_lease(&a, Duration::ZERO).await.unwrap();
    let b = journal.try_acquire_lease("1:0xmodule", "replica-b", long).await.unwrap().unwrap();
    assert_eq!((b.holder.as_str(), b.term), ("replica-b", 2));
    let as_b = journal.fenced(b.clone());

    let refused = [
        as_a.transition(id, IntentState::Guarded, json!(null)).await.map(drop),
        as_a.insert_intent(&pay("k2", "payroll")).await.map(drop),
        as_a.set_cursor("blocks", "0xsafe", &Cursor { block_number: 1, block_hash: "0x1".into() }).await,
        as_a.set_transaction_state("0xt", TxState::Included, Some(1)).await,
        as_a.record_alert(&Alert {
            idempotency_key: "a".into(),
            policy: "p".into(),
            trigger: "t".into(),
            message: "m".into(),
        })
        .await
        .map(drop),
        as_a.check_fence().await,
        as_a.renew_lease(&a, long).await.map(drop),
    ];
    for outcome in refused {
        let err = outcome.unwrap_err();
        assert!(err.is_fenced(), "{err}");
        assert!(matches!(err, JournalError::Fenced { term: 1, current: Some(2), .. }), "{err:?}");
    }
    assert_eq!(journal.intent_by_key("k2").await.unwrap(), None, "nothing of a refused write is left");
    assert_eq!(journal.intent(id).await.unwrap().unwrap().0.state, IntentState::Proposed);

    as_b.transition(id, IntentState::Guarded, json!(null)).await.unwrap();
    as_b.release_lease(&b).await.unwrap();
    let again = journal.try_acquire_lease("1:0xmodule", "replica-a", long).await.unwrap().unwrap();
    assert_eq!(again.term, 3, "a released lease is taken at once, with a new term");
    assert!(as_b.check_fence().await.unwrap_err().is_fenced());
}

on_both_backends!(a_keeper_run_is_claimed_once_and_spending_counts_only_what_may_be_paid);

/// Keeper jobs (issue 18): the same (job, work, perform hash) is claimed once, by whichever
/// handle comes first; a fenced replica claims nothing; caps sum what is in flight or paid.
async fn a_keeper_run_is_claimed_once_and_spending_counts_only_what_may_be_paid(db: Db) {
    use super::keeper::{NewRun, RunState};
    let journal = db.open().await;
    let other_replica = db.open().await;
    let run = NewRun {
        job: "counter".into(),
        work_key: "block:7".into(),
        perform_hash: "0xabc".into(),
        block_number: 7,
        block_hash: "0x07".into(),
        target: "0x01".into(),
        calldata: "0x".into(),
        spent_wei: 1_000,
        period: 3,
    };
    let id = journal.claim_keeper_run(&run, RunState::Sending, None).await.unwrap().expect("first claim");
    assert_eq!(other_replica.claim_keeper_run(&run, RunState::Sending, None).await.unwrap(), None);
    assert_eq!(journal.claim_keeper_run(&run, RunState::Skipped, Some("x")).await.unwrap(), None);
    journal.keeper_run_signed(id, "0xdead", "0x02f0").await.unwrap();
    let open = journal.open_keeper_runs().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].state, open[0].raw_tx.as_deref()), (RunState::Submitted, Some("0x02f0")));
    let skipped = NewRun { work_key: "block:8".into(), ..run.clone() };
    journal.claim_keeper_run(&skipped, RunState::Skipped, Some("check reverted")).await.unwrap().unwrap();
    assert_eq!(
        journal.keeper_spent(Some("counter"), 3).await.unwrap(),
        1_000,
        "in flight counts, skipped not"
    );
    journal.finish_keeper_run(id, RunState::Confirmed, None, Some(50_000), 400).await.unwrap();
    assert_eq!(journal.keeper_spent(None, 3).await.unwrap(), 400, "what was paid once confirmed");
    assert_eq!(journal.keeper_spent(None, 4).await.unwrap(), 0, "another period");
    assert!(journal.open_keeper_runs().await.unwrap().is_empty());
    let counts = journal.keeper_counts().await.unwrap();
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(
        journal.recent_keeper_performs(64).await.unwrap(),
        vec![("counter".to_string(), 7)],
        "the recent performs name the performed run, not the skipped one"
    );
    // The keeper's two cursors are written together.
    let (at, logs) = (
        Cursor { block_number: 9, block_hash: "0x09".into() },
        Cursor { block_number: 8, block_hash: String::new() },
    );
    journal.set_cursors_relaxed("keeper_jobs", &[("0xk", &at), ("0xk#logs", &logs)]).await.unwrap();
    assert_eq!(journal.cursor("keeper_jobs", "0xk").await.unwrap(), Some(at.clone()));
    assert_eq!(journal.cursor("keeper_jobs", "0xk#logs").await.unwrap(), Some(logs));

    // A replica whose lease was taken over claims nothing.
    let first =
        journal.try_acquire_lease("t", "a", std::time::Duration::from_millis(1)).await.unwrap().unwrap();
    let fenced = journal.fenced(first);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    journal.try_acquire_lease("t", "b", std::time::Duration::from_secs(60)).await.unwrap().unwrap();
    let late = NewRun { work_key: "block:9".into(), ..run };
    let refused = fenced.claim_keeper_run(&late, RunState::Sending, None).await.unwrap_err();
    assert!(refused.is_fenced(), "{refused}");
    let refused = fenced.set_cursors_relaxed("keeper_jobs", &[("0xk", &at)]).await.unwrap_err();
    assert!(refused.is_fenced(), "{refused}");
    let refused = fenced.apply_relaxed(&[]).await.unwrap_err();
    assert!(refused.is_fenced(), "an outcome is fenced too: {refused}");
}

/// The version of the script that produced an intent is stored with it (its own column) and every
/// read returns it; the first insert of a key wins, as for the rest of the intent.
async fn the_policy_version_is_journaled_with_the_intent_and_read_back_everywhere(db: Db) {
    let journal = db.open().await;
    let versioned = NewIntent { policy_version: Some("0123456789abcdef".into()), ..pay("k1", "payroll") };
    let id = journal.insert_intent(&versioned).await.unwrap().intent.id;
    let unversioned = journal.insert_intent(&pay("k2", "payroll")).await.unwrap().intent;
    assert_eq!(unversioned.policy_version, None);
    let again = NewIntent { policy_version: Some("fedcba9876543210".into()), ..pay("k1", "payroll") };
    let existing = journal.insert_intent(&again).await.unwrap();
    assert!(!existing.created);
    assert_eq!(existing.intent.policy_version.as_deref(), Some("0123456789abcdef"));

    let want = Some("0123456789abcdef".to_string());
    let (shown, _) = journal.intent(id).await.unwrap().unwrap();
    assert_eq!(shown.policy_version, want);
    assert_eq!(journal.intent_by_key("k1").await.unwrap().unwrap().policy_version, want);
    let listed = journal.list(&IntentFilter::default()).await.unwrap();
    assert_eq!(listed.iter().find(|i| i.id == id).unwrap().policy_version, want);
    let pending = journal.pending().await.unwrap();
    assert_eq!(pending.iter().find(|p| p.intent.id == id).unwrap().intent.policy_version, want);
    let decided = journal.decided_intents(10).await.unwrap();
    assert_eq!(decided.iter().find(|d| d.intent.id == id).unwrap().intent.policy_version, want);
    let moved = journal.transition(id, IntentState::Guarded, json!(null)).await.unwrap();
    assert_eq!(moved.policy_version, want, "a transition keeps it");
    // A reopened journal (migrations already applied) reads it back too.
    journal.close().await;
    let reopened = db.open().await;
    assert_eq!(reopened.intent_by_key("k1").await.unwrap().unwrap().policy_version, want);
}

on_both_backends!(a_batch_of_transitions_moves_every_intent_or_none);

/// A batched operation's intents move together: each gets its event row with the state it left,
/// an intent that cannot make the move stops the whole batch (nothing written), and an unknown
/// intent is named.
async fn a_batch_of_transitions_moves_every_intent_or_none(db: Db) {
    use IntentState::*;
    let journal = db.open().await;
    let mut ids = Vec::new();
    for key in ["a", "b", "c", "d"] {
        let id = journal.insert_intent(&pay(key, "payroll")).await.unwrap().intent.id;
        walk(&journal, id, &[Guarded]).await;
        ids.push(id);
    }
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    walk(&journal, c, &[Planned]).await;
    let states = |ids: Vec<IntentId>| {
        let journal = &journal;
        async move {
            let mut states = Vec::new();
            for id in ids {
                states.push(journal.intent(id).await.unwrap().unwrap().0.state);
            }
            states
        }
    };

    let refused = journal.transition_all(&[a, b, c], Planned, json!(null)).await.unwrap_err();
    assert!(matches!(refused, JournalError::IllegalTransition { id, from: Planned, to: Planned } if id == c));
    let refused = journal
        .apply(&[
            Write::Transition { intents: vec![a, b], to: Planned, detail: json!(null) },
            Write::Transition { intents: vec![c, d], to: Planned, detail: json!(null) },
        ])
        .await
        .unwrap_err();
    assert!(matches!(refused, JournalError::IllegalTransition { id, .. } if id == c), "{refused}");
    assert_eq!(states(vec![a, b, c, d]).await, [Guarded, Guarded, Planned, Guarded], "nothing written");
    let unknown = journal.transition_all(&[a, IntentId(9_999)], Planned, json!(null)).await.unwrap_err();
    assert!(matches!(unknown, JournalError::NotFound(IntentId(9_999))), "{unknown}");

    let moved = journal.transition_all(&[a, b], Planned, json!({"operation_id": "0xop"})).await.unwrap();
    assert_eq!(moved.iter().map(|i| (i.id, i.state)).collect::<Vec<_>>(), [(a, Planned), (b, Planned)]);
    assert_eq!(states(vec![a, b]).await, [Planned, Planned]);
    // From two states at once: each event names the state its intent left.
    let moved = journal.transition_all(&[a, d, c], Rejected, json!({"reason": "r"})).await.unwrap();
    assert!(moved.iter().all(|i| i.state == Rejected));
    for (id, left) in [(a, Planned), (d, Guarded), (c, Planned)] {
        let (intent, events) = journal.intent(id).await.unwrap().unwrap();
        assert_eq!(intent.state, Rejected);
        let last = events.last().unwrap();
        assert_eq!((last.from, last.to, &last.detail), (Some(left), Rejected, &json!({"reason": "r"})));
    }
    let (_, events) = journal.intent(b).await.unwrap().unwrap();
    let tail: Vec<_> = events.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        tail,
        [(None, Proposed), (Some(Proposed), Guarded), (Some(Guarded), Planned)],
        "one event per move"
    );
}

on_both_backends!(moves_of_the_same_intents_back_to_back_are_each_recorded);

/// Moves of the same intents back to back in one batch (planned → authorising) leave each intent
/// in the last state with an event row per move, in order; a path with an illegal step writes
/// nothing and names the step.
async fn moves_of_the_same_intents_back_to_back_are_each_recorded(db: Db) {
    use IntentState::*;
    let journal = db.open().await;
    let mut ids = Vec::new();
    for key in ["a", "b"] {
        let id = journal.insert_intent(&pay(key, "payroll")).await.unwrap().intent.id;
        walk(&journal, id, &[Guarded]).await;
        ids.push(id);
    }
    let path = |intents: &[IntentId], to: [IntentState; 2]| {
        to.map(|to| Write::Transition { intents: intents.to_vec(), to, detail: json!({ "to": to }) })
    };
    for one_or_both in [&ids[..1], &ids[..]] {
        let refused = journal.apply(&path(one_or_both, [Planned, Signed])).await.unwrap_err();
        assert!(
            matches!(refused, JournalError::IllegalTransition { from: Planned, to: Signed, .. }),
            "{refused}"
        );
        for id in &ids {
            let (intent, events) = journal.intent(*id).await.unwrap().unwrap();
            assert_eq!((intent.state, events.len()), (Guarded, 2), "nothing written");
        }
    }
    let moved = journal.apply(&path(&ids, [Planned, Authorising])).await.unwrap();
    let seen: Vec<_> = moved.iter().map(|i| (i.id, i.state)).collect();
    assert_eq!(seen, [(ids[0], Planned), (ids[1], Planned), (ids[0], Authorising), (ids[1], Authorising)]);
    for id in &ids {
        let (intent, events) = journal.intent(*id).await.unwrap().unwrap();
        assert_eq!(intent.state, Authorising);
        let tail: Vec<_> = events[2..].iter().map(|e| (e.from, e.to, e.detail.clone())).collect();
        assert_eq!(
            tail,
            [
                (Some(Guarded), Planned, json!({ "to": Planned })),
                (Some(Planned), Authorising, json!({ "to": Authorising }))
            ]
        );
    }
    // An outcome the chain can tell again goes through the relaxed writer, with the same checks.
    let refused = journal.apply_relaxed(&path(&ids, [Signed, Planned])).await.unwrap_err();
    assert!(
        matches!(refused, JournalError::IllegalTransition { from: Signed, to: Planned, .. }),
        "{refused}"
    );
    let moved = journal
        .apply_relaxed(&[Write::Transition { intents: ids.clone(), to: Signed, detail: json!(null) }])
        .await
        .unwrap();
    assert!(moved.iter().all(|i| i.state == Signed));
    for id in &ids {
        assert_eq!(journal.intent(*id).await.unwrap().unwrap().0.state, Signed);
    }
}

on_both_backends!(a_batched_operation_is_resumed_whole_with_or_without_payloads);

/// The lane's reads of its work: every intent of a batched operation carries that operation with
/// all its intents and its newest transaction (`pending`, four queries whatever the number of
/// intents); a step's read (`lane_work`, without payloads, which `payloads` reads by id) says the
/// same of the operation in flight, and while none is in flight lists the oldest trigger's next
/// guarded intents, at most the batch.
async fn a_batched_operation_is_resumed_whole_with_or_without_payloads(db: Db) {
    use IntentState::*;
    let journal = db.open().await;
    let a = journal.insert_intent(&pay("a", "payroll")).await.unwrap().intent.id;
    let b = journal.insert_intent(&pay("b", "payroll")).await.unwrap().intent.id;
    let later = NewIntent { trigger: "manual#7".into(), ..pay("d", "grants") };
    let d = journal.insert_intent(&later).await.unwrap().intent.id;
    let c = journal.insert_intent(&pay("c", "grants")).await.unwrap().intent.id;
    for id in [a, b, c, d] {
        walk(&journal, id, &[Guarded]).await;
    }
    let next = |work: super::pending::LaneWork| work.next.iter().map(|i| i.id).collect::<Vec<_>>();
    let unplanned = journal.lane_work(16).await.unwrap();
    assert!(unplanned.in_flight.is_empty());
    assert!(unplanned.next.iter().all(|i| i.payload.is_null()));
    assert_eq!(next(unplanned), [a, b, c], "the oldest trigger's guarded intents, not manual#7's");
    assert_eq!(next(journal.lane_work(2).await.unwrap()), [a, b], "at most the batch");
    journal
        .record_operation(&OperationRecord {
            operation_id: "0xbatch".into(),
            module_nonce: 3,
            operation: json!({"calls": [], "nonce": 3, "deadline": 1_700_000_000}),
            intents: vec![a, b],
        })
        .await
        .unwrap();
    for id in [a, b] {
        walk(&journal, id, &[Planned, Authorising, Signed]).await;
    }
    for (hash, keeper_nonce) in [("0xfirst", 5), ("0xbumped", 5)] {
        journal
            .record_transaction(&NewTransaction {
                operation_id: "0xbatch".into(),
                module_nonce: 3,
                signed_operation: json!({"nonce": 3}),
                keeper_nonce,
                tx_hash: hash.into(),
                raw_tx: format!("raw{hash}"),
            })
            .await
            .unwrap();
    }
    for id in [a, b] {
        walk(&journal, id, &[Submitted]).await;
    }

    let full = journal.pending().await.unwrap();
    let work = journal.lane_work(16).await.unwrap();
    assert!(work.next.is_empty(), "nothing is planned while an operation is in flight");
    let light = work.in_flight;
    assert_eq!(full.iter().map(|p| p.intent.id).collect::<Vec<_>>(), [a, b, d, c]);
    assert_eq!(light.len(), 2, "the operation in flight's intents");
    for p in &full[..2] {
        let op = p.operation.as_ref().expect("the batch's intents carry it");
        assert_eq!((op.operation_id.as_str(), op.module_nonce, &op.intents), ("0xbatch", 3, &vec![a, b]));
        let tx = p.transaction.as_ref().expect("with its newest transaction");
        assert_eq!(tx.tx.tx_hash, "0xbumped");
    }
    assert!(full[2..].iter().all(|p| p.operation.is_none() && p.transaction.is_none()));
    assert_eq!(full[0].intent.payload, pay("a", "payroll").payload);
    for (f, l) in full.iter().zip(&light) {
        assert_eq!(l.intent.payload, serde_json::Value::Null);
        let mut f = f.clone();
        f.intent.payload = serde_json::Value::Null;
        assert_eq!(&f, l, "the same work without the payloads");
    }

    // The replay's history names operations: the planned intents only, newest first.
    let planned = journal.planned_intents_without_payloads(100).await.unwrap();
    let named: Vec<_> = planned.iter().map(|p| (p.intent.id, p.operation_id.as_deref())).collect();
    assert_eq!(named, [(b, Some("0xbatch")), (a, Some("0xbatch"))], "not the guarded c and d");
    assert!(planned.iter().all(|p| p.intent.payload.is_null()));

    let payloads = journal.payloads(&[c, a, IntentId(9_999)]).await.unwrap();
    assert_eq!(payloads.len(), 2, "an unknown id is left out");
    assert_eq!(payloads[&c], pay("c", "grants").payload);
    let read = journal.intents(&[c, a]).await.unwrap();
    assert_eq!(
        read.iter().map(|i| (i.id, i.policy.as_str())).collect::<Vec<_>>(),
        [(a, "payroll"), (c, "grants")]
    );
}

#[test]
fn the_decided_states_are_every_state_but_failed_rejected_and_expired() {
    let listed: Vec<&str> = super::intents::DECIDED
        .trim_matches(|c| c == '(' || c == ')')
        .split(", ")
        .map(|s| s.trim_matches('\''))
        .collect();
    let decided: Vec<&str> = IntentState::ALL
        .iter()
        .filter(|s| !matches!(s, IntentState::Failed | IntentState::Rejected | IntentState::Expired))
        .map(|s| s.as_str())
        .collect();
    assert_eq!(listed, decided);
}
