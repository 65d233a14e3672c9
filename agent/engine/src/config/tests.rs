//! Parsing and validation of agent configurations.

use super::*;

const EXAMPLE: &str = include_str!("../../../../config/example.toml");

/// Creates every file `example.toml` refers to, so only its values are judged.
fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    for f in [
        "quorum.toml",
        "keeper.json",
        "policies/payroll.rhai",
        "policies/gas-topup.rhai",
        "policies/derisk.rhai",
        "policies/rebalance.rhai",
    ] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    std::fs::write(dir.path().join("treasury.toml"), EXAMPLE).unwrap();
    dir
}

/// The documented example, checked against a folder holding every file it names.
pub(crate) fn example_config() -> (tempfile::TempDir, Config) {
    let dir = example_dir();
    let config = Config::load(&dir.path().join("treasury.toml")).unwrap();
    (dir, config)
}

/// The example with its first (commented) webhook in force.
fn uncomment_webhook(example: &str) -> String {
    let commented = "# [[notify.webhook]]\n# name = \"ops\"\n# url = \"https://hooks.example.org/treasury\"\n# events = [\"escalation\", \"failure\"]\n# format = \"json\"\n";
    assert!(example.contains(commented), "the example documents a webhook");
    example.replace(commented, &commented.replace("# ", ""))
}

#[test]
fn the_documented_webhook_is_valid_once_uncommented() {
    let dir = example_dir();
    std::fs::write(dir.path().join("treasury.toml"), uncomment_webhook(EXAMPLE)).unwrap();
    let config = Config::load(&dir.path().join("treasury.toml")).unwrap();
    assert_eq!(config.notify.webhooks.len(), 1);
}

#[test]
fn the_documented_example_is_valid_and_uses_every_section() {
    let dir = example_dir();
    let config = Config::load(&dir.path().join("treasury.toml")).unwrap();
    assert_eq!(config.chain.chain_id, 31337);
    assert_eq!(config.policies.policies.len(), 4);
    assert_eq!(config.policies.tokens["USDC"].decimals, 6);
    assert!(config.notify.webhooks.is_empty(), "the example's webhooks are commented out, to copy it as is");
    assert!(config.api.is_some() && config.dex.is_some());
    assert_eq!(config.signing.quorum_file, dir.path().join("quorum.toml"), "DKG writes a TOML quorum file");
    assert_eq!(config.journal.url, format!("sqlite://{}", dir.path().join("treasury.db").display()));
}

#[test]
fn validation_reports_every_problem_with_its_key() {
    let dir = example_dir();
    let broken = uncomment_webhook(EXAMPLE)
        .replace("module = \"0x2222222222222222222222222222222222222222\"", "module = \"0x22\"")
        .replace("rpc_http = \"http://127.0.0.1:8545\"", "rpc_http = \"127.0.0.1:8545\"")
        .replace("confirmations = 2", "confirmations = 0")
        .replace("cron = \"0 0 9 1 * *\" }\n\n", "cron = \"every monday\" }\n\n")
        .replace("password_env = \"TREASURY_KEEPER_PASSWORD\"", "password_env = \"hunter2 secret\"")
        .replace("events = [\"escalation\", \"failure\"]", "events = [\"escalation\", \"party\"]")
        .replace("decimals = 6", "decimals = 40")
        .replace("file = \"policies/derisk.rhai\"", "file = \"policies/missing.rhai\"");
    std::fs::write(dir.path().join("treasury.toml"), broken).unwrap();

    let err = Config::load(&dir.path().join("treasury.toml")).unwrap_err();
    let keys: Vec<String> = err.problems().into_iter().map(|p| p.key).collect();
    for key in [
        "safe.module",
        "chain.rpc_http",
        "chain.confirmations",
        "policies.policy[0].trigger",
        "keeper.password_env",
        "notify.webhook[0].events",
        "policies.tokens.USDC.decimals",
        "policies.policy[2].file",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
    assert_eq!(keys.len(), 8, "nothing else is wrong: {keys:?}");
    let text = err.to_string();
    assert!(text.contains("safe.module: not a valid address"), "{text}");
    assert!(!text.contains("hunter2"), "a secret pasted by mistake is not echoed");
}

#[test]
fn unknown_keys_are_refused_naming_the_key() {
    let text = EXAMPLE.replace("[safe]\n", "[safe]\nowner = \"0x01\"\n");
    let err = ConfigFile::parse(&text).unwrap_err();
    assert!(err.contains("owner"), "{err}");
}

#[test]
fn keeper_needs_exactly_one_key_source() {
    let dir = example_dir();
    let both = EXAMPLE.replace("# pkcs11_label = \"treasury-keeper\"", "pkcs11_label = \"treasury-keeper\"");
    let problems = ConfigFile::parse(&both).unwrap().check(dir.path()).unwrap_err();
    assert_eq!(problems, vec![Problem::new("keeper", "set exactly one of keystore and pkcs11_label")]);
}

#[test]
fn a_pkcs11_keeper_names_its_token() {
    let dir = example_dir();
    let hsm = EXAMPLE
        .replace("keystore = \"keeper.json\"\n", "")
        .replace("password_env = \"TREASURY_KEEPER_PASSWORD\"\n", "")
        .replace("# pkcs11_label = \"treasury-keeper\"", "pkcs11_label = \"treasury-keeper\"");
    let problems = ConfigFile::parse(&hsm).unwrap().check(dir.path()).unwrap_err();
    assert_eq!(problems, vec![Problem::new("keeper.pkcs11_token", "required with pkcs11_label")]);
    let with_token = hsm.replace("# pkcs11_token = \"keeper-token\"", "pkcs11_token = \"keeper-token\"");
    assert!(ConfigFile::parse(&with_token).unwrap().check(dir.path()).is_ok());
}

#[test]
fn a_postgres_journal_makes_a_replica_with_its_lease_settings() {
    let dir = example_dir();
    let (_, sqlite) = example_config();
    assert!(!sqlite.journal.is_replicated());
    assert_eq!(sqlite.journal.lease_ttl, std::time::Duration::from_secs(10));
    assert!(sqlite.journal.replica.ends_with(&format!(":{}", std::process::id())), "HOSTNAME:PID by default");

    let pg = EXAMPLE
        .replace("url = \"sqlite://treasury.db\"", "url = \"postgres://treasury@db:5432/treasury\"")
        .replace("lease_ttl = \"10s\"", "lease_ttl = \"3s\"")
        .replace("# replica = \"agent-a\"", "replica = \"agent-a\"");
    let config = ConfigFile::parse(&pg).unwrap().check(dir.path()).unwrap();
    assert!(config.journal.is_replicated());
    assert_eq!(config.journal.url, "postgres://treasury@db:5432/treasury", "kept as written");
    assert_eq!(config.journal.lease_ttl, std::time::Duration::from_secs(3));
    assert_eq!(config.journal.replica, "agent-a");

    let bad = pg
        .replace("lease_ttl = \"3s\"", "lease_ttl = \"200ms\"")
        .replace("replica = \"agent-a\"", "replica = \" \"")
        .replace("url = \"postgres://treasury@db:5432/treasury\"", "url = \"mysql://db/treasury\"");
    let problems = ConfigFile::parse(&bad).unwrap().check(dir.path()).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["journal.lease_ttl", "journal.replica", "journal.url"], "{problems:?}");
}

#[test]
fn several_rpc_endpoints_are_tried_in_order_and_each_checked() {
    let dir = example_dir();
    let one = "rpc_http = \"http://127.0.0.1:8545\"";
    let two = "rpc_http = [\"http://127.0.0.1:8545\", \"https://rpc.example.org/KEY\"]";
    let config = Config::from_toml(&EXAMPLE.replace(one, two), dir.path()).unwrap();
    let urls: Vec<String> = config.chain.endpoints().iter().map(ToString::to_string).collect();
    assert_eq!(urls, ["http://127.0.0.1:8545/", "https://rpc.example.org/KEY"]);
    let bad = "rpc_http = [\"http://127.0.0.1:8545\", \"ftp://x\", \"http://127.0.0.1:8545\"]";
    let problems = Config::from_toml(&EXAMPLE.replace(one, bad), dir.path()).unwrap_err().problems();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["chain.rpc_http[1]", "chain.rpc_http"], "{problems:?}");
    let none = Config::from_toml(&EXAMPLE.replace(one, "rpc_http = []"), dir.path()).unwrap_err();
    assert_eq!(none.problems()[0].key, "chain.rpc_http");
}

/// `text` (a single-treasury config) as one `[[treasury]]` named `name`.
fn as_treasury(text: &str, name: &str) -> String {
    let body: String = text
        .lines()
        .map(|line| {
            if let Some(rest) = line.strip_prefix("[[") {
                format!("[[treasury.{rest}\n")
            } else if let Some(rest) = line.strip_prefix('[') {
                format!("[treasury.{rest}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    format!("[[treasury]]\nname = \"{name}\"\n{body}")
}

#[test]
fn several_treasuries_are_each_a_whole_config_with_their_own_journal() {
    let dir = example_dir();
    let ops = EXAMPLE
        .replace("chain_id = 31337", "chain_id = 10")
        .replace("url = \"sqlite://treasury.db\"", "url = \"sqlite://ops.db\"")
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8081\"");
    let text = format!("{}\n{}", as_treasury(EXAMPLE, "grants"), as_treasury(&ops, "ops"));
    std::fs::write(dir.path().join("many.toml"), &text).unwrap();
    let all = Config::load_all(&dir.path().join("many.toml")).unwrap();
    let names: Vec<(&str, u64)> = all.iter().map(|c| (c.name.as_str(), c.chain.chain_id)).collect();
    assert_eq!(names, [("grants", 31337), ("ops", 10)]);
    assert_eq!(all[1].journal.url, format!("sqlite://{}", dir.path().join("ops.db").display()));
    assert_eq!(all[0].policies.policies.len(), 4);
    // A command that serves one treasury names them instead of picking one.
    let one = Config::load(&dir.path().join("many.toml")).unwrap_err().problems();
    assert!(one[0].message.contains("2 treasuries (grants, ops)"), "{one:?}");
    // The single form still loads, named `default`.
    assert_eq!(Config::from_toml(EXAMPLE, dir.path()).unwrap().name, DEFAULT_NAME);
}

#[test]
fn several_treasuries_never_share_a_journal_a_lease_or_a_name_and_problems_name_the_treasury() {
    let dir = example_dir();
    let bad = EXAMPLE.replace("confirmations = 2", "confirmations = 0");
    let text =
        format!("[pipeline]\nmax_batch = 4\n\n{}\n{}", as_treasury(EXAMPLE, "a"), as_treasury(&bad, "a"));
    let problems = Config::from_toml(&text, dir.path()).unwrap_err().problems();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"treasury[1].name"), "{problems:?}");
    assert!(keys.contains(&"treasury[1].chain.confirmations"), "{problems:?}");
    let twin = format!("{}\n{}", as_treasury(EXAMPLE, "a"), as_treasury(EXAMPLE, "b"));
    let problems = Config::from_toml(&twin, dir.path()).unwrap_err().problems();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["treasury[1].journal.url", "treasury[1].safe.module", "treasury[1].api.listen"]);
    // Sections of a treasury at the top are refused, not silently ignored.
    let stray = format!("[safe]\naddress = \"0x01\"\nmodule = \"0x02\"\n\n{}", as_treasury(EXAMPLE, "a"));
    let problems = Config::from_toml(&stray, dir.path()).unwrap_err().problems();
    assert_eq!(problems[0].key, "safe", "{problems:?}");
}

#[test]
fn top_level_pipeline_is_the_default_of_every_treasury_without_its_own() {
    let dir = example_dir();
    let start = EXAMPLE.find("\n[pipeline]\n").unwrap();
    let end = start + EXAMPLE[start..].find("\n# The policy section").unwrap();
    let without = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
    let own = EXAMPLE.replace("max_batch = 16", "max_batch = 8");
    let text = format!(
        "[pipeline]\nmax_batch = 4\n\n{}\n{}",
        as_treasury(&without, "a"),
        as_treasury(
            &own.replace("chain_id = 31337", "chain_id = 5")
                .replace("127.0.0.1:8080", "127.0.0.1:8081")
                .replace("sqlite://treasury.db", "sqlite://b.db"),
            "b"
        )
    );
    let all = ConfigFile::parse(&text).unwrap().check_all(dir.path()).unwrap();
    let batches: Vec<usize> = all.iter().map(|c| c.pipeline.max_batch).collect();
    assert_eq!(batches, [4, 8]);
}
