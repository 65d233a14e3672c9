use alloy::primitives::{Address, U256};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::testing::{queue, request, token};
use super::*;

/// Attack (issue 13 item 8): another local user reads (or, with a loose umask, writes) the
/// root's queue; the file and its WAL are the owner's alone.
#[tokio::test]
async fn the_queue_file_is_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sqlite");
    let store = Store::open(&path).await.unwrap();
    queue(&store, "a", U256::from(1), 1_000);
    for p in [path.clone(), dir.path().join("q.sqlite-wal")] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}

#[tokio::test]
async fn commits_are_flushed_unless_asked_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    for (name, durability, want) in
        [("full", Durability::Flushed, 2), ("normal", Durability::ProcessCrashOnly, 1)]
    {
        let store = Store::open_with(&dir.path().join(name), durability).await.unwrap();
        let sync: i64 = store.conn().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, want, "{name}");
    }
    let store = Store::open(&dir.path().join("default")).await.unwrap();
    let sync: i64 = store.conn().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
    assert_eq!(sync, 2, "the service's default is FULL");
}

/// The schema the hand-written migration of the previous release left (`PRAGMA user_version = 3`):
/// amounts also as eight 32-bit limbs, a `live` flag, and limb sums in `window_totals`.
const SCHEMA_V3: &[&str] = &[
    "CREATE TABLE requests (id TEXT PRIMARY KEY, kind TEXT NOT NULL, body TEXT NOT NULL, digest TEXT NOT NULL,
     requester TEXT NOT NULL, totals TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
     deadline INTEGER NOT NULL, state TEXT NOT NULL, signature TEXT, decided_by TEXT, decided_at INTEGER,
     reason TEXT)",
    "CREATE INDEX requests_digest ON requests(digest)",
    "CREATE INDEX requests_state ON requests(state)",
    "CREATE TABLE flows (request_id TEXT NOT NULL, token TEXT NOT NULL, amount TEXT NOT NULL, at INTEGER NOT NULL,
     live INTEGER NOT NULL DEFAULT 1, l0 INTEGER NOT NULL DEFAULT 0, l1 INTEGER NOT NULL DEFAULT 0,
     l2 INTEGER NOT NULL DEFAULT 0, l3 INTEGER NOT NULL DEFAULT 0, l4 INTEGER NOT NULL DEFAULT 0,
     l5 INTEGER NOT NULL DEFAULT 0, l6 INTEGER NOT NULL DEFAULT 0, l7 INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX flows_token ON flows(token, at)",
    "CREATE INDEX flows_request ON flows(request_id)",
    "CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,
     action TEXT NOT NULL, by TEXT NOT NULL, at INTEGER NOT NULL, reason TEXT)",
    "CREATE TABLE approval_tags (request_id TEXT PRIMARY KEY, tag TEXT NOT NULL)",
    "CREATE INDEX flows_window_sum ON flows(token, live, at, l0, l1, l2, l3, l4, l5, l6, l7)",
    "CREATE TABLE window_totals (token TEXT NOT NULL, period INTEGER NOT NULL, horizon INTEGER NOT NULL,
     l0 INTEGER NOT NULL, l1 INTEGER NOT NULL, l2 INTEGER NOT NULL, l3 INTEGER NOT NULL, l4 INTEGER NOT NULL,
     l5 INTEGER NOT NULL, l6 INTEGER NOT NULL, l7 INTEGER NOT NULL, PRIMARY KEY (token, period))",
    "PRAGMA user_version = 3",
];

/// The first release's schema (`PRAGMA user_version = 0`): no `live` flag, no limbs.
const SCHEMA_V0: &[&str] = &[
    "CREATE TABLE requests (id TEXT PRIMARY KEY, kind TEXT NOT NULL, body TEXT NOT NULL, digest TEXT NOT NULL,
     requester TEXT NOT NULL, totals TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
     deadline INTEGER NOT NULL, state TEXT NOT NULL, signature TEXT, decided_by TEXT, decided_at INTEGER,
     reason TEXT)",
    "CREATE TABLE flows (request_id TEXT NOT NULL, token TEXT NOT NULL, amount TEXT NOT NULL, at INTEGER NOT NULL)",
    "CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,
     action TEXT NOT NULL, by TEXT NOT NULL, at INTEGER NOT NULL, reason TEXT)",
    "CREATE TABLE approval_tags (request_id TEXT PRIMARY KEY, tag TEXT NOT NULL)",
];

/// Requests written by the previous code: (id, state, amount, signature).
const OLD_REQUESTS: &[(&str, &str, u128, Option<&str>)] = &[
    ("pending", "pending", 300, None),
    ("approved", "approved", 1 << 70, None),
    ("signed", "signed", 5, Some("0x0102")),
    ("rejected", "rejected", 400, None),
];

/// Writes a queue with `schema` and [`OLD_REQUESTS`] as the previous code did (`limbs`: the
/// version 1–3 columns filled, and a stale `window_totals` row).
async fn write_old_queue(path: &std::path::Path, schema: &[&str], limbs: bool) {
    let opts = SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
    for stmt in schema {
        sqlx::query(sqlx::AssertSqlSafe(*stmt)).execute(&pool).await.unwrap();
    }
    for (i, (id, state, amount, sig)) in OLD_REQUESTS.iter().enumerate() {
        let req = request(i as u64);
        let totals = serde_json::to_string(&[(token(), U256::from(*amount))]).unwrap();
        sqlx::query(
            "INSERT INTO requests (id, kind, body, digest, requester, totals, created_at, expires_at, deadline,
             state, signature, decided_by, decided_at) VALUES (?, ?, ?, ?, 'agent', ?, 10, 99, 99, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(req.kind())
        .bind(serde_json::to_string(&req).unwrap())
        .bind(req.digest().to_string())
        .bind(totals)
        .bind(state)
        .bind(sig)
        .bind((*state != "pending").then_some("alice"))
        .bind((*state != "pending").then_some(20))
        .execute(&pool)
        .await
        .unwrap();
        let live = matches!(*state, "pending" | "approved" | "signed");
        let insert = if limbs {
            let l: Vec<String> =
                (0..8).map(|k| (amount.checked_shr(32 * k).unwrap_or(0) & 0xffff_ffff).to_string()).collect();
            format!(
                "INSERT INTO flows (request_id, token, amount, at, live, l0, l1, l2, l3, l4, l5, l6, l7)
                 VALUES (?, ?, ?, 10, {}, {})",
                i64::from(live),
                l.join(", ")
            )
        } else {
            "INSERT INTO flows (request_id, token, amount, at) VALUES (?, ?, ?, 10)".to_owned()
        };
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(id)
            .bind(token().to_string())
            .bind(amount.to_string())
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO decisions (request_id, action, by, at) VALUES (?, 'queued', 'agent', 10)")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO approval_tags (request_id, tag) VALUES ('approved', 'tag-1')")
        .execute(&pool)
        .await
        .unwrap();
    if limbs {
        // A running total that no longer matches anything: the new code must not trust it.
        sqlx::query("INSERT INTO window_totals VALUES (?, 100, 0, 1, 0, 0, 0, 0, 0, 0, 0)")
            .bind(token().to_string())
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

/// Opens a queue written by earlier code and checks every request, decision, tag and amount survived.
async fn assert_old_queue_intact(path: &std::path::Path) {
    let store = Store::open(path).await.unwrap();
    for (i, (id, state, amount, sig)) in OLD_REQUESTS.iter().enumerate() {
        let rec = store.get(id).unwrap();
        assert_eq!(rec.state.as_str(), *state);
        assert_eq!(rec.request, request(i as u64));
        assert_eq!(rec.digest, request(i as u64).digest());
        assert_eq!(rec.totals, [(token(), U256::from(*amount))]);
        assert_eq!(rec.signature.map(|s| s.to_string()).as_deref(), *sig);
        assert_eq!(store.decisions(id).unwrap().len(), 1, "{id}");
    }
    assert_eq!(store.approval_tag("approved").unwrap().as_deref(), Some("tag-1"));
    assert_eq!(store.count(RequestState::Pending).unwrap(), 1);
    assert_eq!(store.count(RequestState::Expired).unwrap(), 0);
    // pending + approved + signed count; rejected does not.
    let live = U256::from(300u64 + 5) + U256::from(1u128 << 70);
    assert_eq!(store.committed_since(token(), 0).unwrap(), live);
    assert_eq!(store.window_total(token(), 100, 0).unwrap().total, live);
    // The migrated file takes new requests and decisions.
    queue(&store, "new", U256::from(1), 50);
    store.reject("pending", "bob", "no", 60).unwrap();
    assert_eq!(store.committed_since(token(), 0).unwrap(), live - U256::from(300) + U256::from(1));
    drop(store);
    let again = Store::open(path).await.unwrap();
    assert_eq!(again.list(None).unwrap().len(), OLD_REQUESTS.len() + 1, "reopening changes nothing");
}

#[tokio::test]
async fn a_queue_of_the_previous_release_opens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.sqlite");
    write_old_queue(&path, SCHEMA_V3, true).await;
    assert_old_queue_intact(&path).await;
}

#[tokio::test]
async fn a_queue_of_the_first_schema_opens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v0.sqlite");
    write_old_queue(&path, SCHEMA_V0, false).await;
    assert_old_queue_intact(&path).await;
}

#[tokio::test]
async fn queues_opened_at_once_migrate_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.sqlite");
    write_old_queue(&path, SCHEMA_V3, true).await;
    let opens = (0..4).map(|_| Store::open(&path));
    for store in futures::future::join_all(opens).await {
        store.unwrap();
    }
    assert_old_queue_intact(&path).await;
}

#[tokio::test]
async fn a_corrupt_amount_is_named_with_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("q.sqlite")).await.unwrap();
    queue(&store, "a", U256::from(1), 10);
    store.conn().execute("UPDATE flows SET amount = 'lots'", []).unwrap();
    let err = store.committed_since(token(), 0).unwrap_err();
    assert!(matches!(err, RootError::CorruptRecord { field: "amount", .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some(), "the parse error is kept");
    let _ = Address::ZERO;
}
