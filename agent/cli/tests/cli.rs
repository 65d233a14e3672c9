//! What the `treasury` command line prints when it fails: each cause once, naming what was wrong.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_treasury");

/// What a failing command printed, stdout and stderr.
fn output_of(args: &[&str]) -> String {
    let out = Command::new(EXE).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stdout).unwrap() + String::from_utf8(out.stderr).unwrap().as_str()
}

#[test]
fn a_missing_config_file_is_named_with_its_cause_printed_once() {
    for command in [&["status"][..], &["run"], &["intents", "list"], &["config", "check"]] {
        let mut args = command.to_vec();
        args.extend(["--config", "/nonexistent/treasury.toml"]);
        let err = output_of(&args);
        assert!(err.contains("/nonexistent/treasury.toml"), "{args:?}: {err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{args:?}: {err}");
    }
}

/// `treasury policy docs --check` passes on the shipped reference and names the first differing
/// line of a stale one.
#[test]
fn policy_docs_check_refuses_a_reference_that_differs_from_the_engine() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/POLICIES.md");
    let ok = Command::new(EXE).args(["policy", "docs", "--check", shipped]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("POLICIES.md");
    let text = std::fs::read_to_string(shipped).unwrap();
    std::fs::write(&stale, text.replacen("Seconds between", "Minutes between", 1)).unwrap();
    let err = output_of(&["policy", "docs", "--check", stale.to_str().unwrap()]);
    let line = text.lines().position(|l| l.contains("Seconds between")).unwrap() + 1;
    assert!(err.contains(&format!("from line {line}")), "{err}");
}

/// `treasury policy diff --fixture … --json`: the example payroll against a version that raises
/// alice's salary, compared without a chain.
#[test]
fn policy_diff_compares_two_versions_on_fixtures_as_json() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/examples");
    let dir = tempfile::tempdir().unwrap();
    let old = format!("{examples}/payroll.rhai");
    let text = std::fs::read_to_string(&old).unwrap();
    let raised = text.replace("alice: 8000, bob: 6500", "alice: 9000, bob: 6500");
    assert_ne!(raised, text, "payroll.rhai sets alice's salary");
    let new = dir.path().join("payroll.rhai");
    std::fs::write(&new, raised).unwrap();
    let out = Command::new(EXE)
        .args(["policy", "diff", &old, new.to_str().unwrap(), "--config"])
        .arg(format!("{examples}/treasury.toml"))
        .args(["--fixture", &format!("{examples}/fixtures/payroll-first-of-month.toml"), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["evaluated"], 1);
    assert_eq!(json["points"][0]["changes"][0]["change"], "changed", "{json}");
    assert_eq!(
        json["totals"],
        serde_json::json!([{ "token": "USDC", "to": "alice", "old": "8000", "new": "9000" }]),
        "bob's pay is unchanged, so only alice's total is listed"
    );
}

/// `treasury policy diff --fixture --json` with budgets: the fixture gives the module's tier-1 room
/// (50,000 USDC); the old version's payments fit it, the new one's push past it and the payment
/// that does not fit is reported as an escalation to the root, with exact amounts.
#[test]
fn policy_diff_reports_a_change_that_turns_a_payment_into_an_escalation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("treasury.toml"),
        "[tokens.USDC]\naddress = \"0x0000000000000000000000000000000000000001\"\ndecimals = 6\n\
         [addresses]\nalice = \"0x00000000000000000000000000000000000000a1\"\n\
         bob = \"0x00000000000000000000000000000000000000b0\"\n",
    )
    .unwrap();
    let fixture = dir.path().join("payday.toml");
    std::fs::write(
        &fixture,
        "config = \"treasury.toml\"\nexpect = []\n[block]\nnumber = 7\ntime = \"2026-12-01T09:00:00Z\"\n\
         [assets.USDC]\nbalance = 200000\nbudget_remaining = 50000\n",
    )
    .unwrap();
    let script = |bob: u32| format!("pay(\"alice\", \"USDC\", 30000);\npay(\"bob\", \"USDC\", {bob});\n");
    let (old, new) = (dir.path().join("old.rhai"), dir.path().join("payroll.rhai"));
    std::fs::write(&old, script(15_000)).unwrap();
    std::fs::write(&new, script(25_000)).unwrap();
    let diff = |json: bool| {
        let mut cmd = Command::new(EXE);
        cmd.args(["policy", "diff"])
            .arg(&old)
            .arg(&new)
            .arg("--config")
            .arg(dir.path().join("treasury.toml"));
        cmd.arg("--fixture").arg(&fixture);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&diff(true)).unwrap();
    let window = |version: &str| {
        let w = json[version].as_array().unwrap();
        assert_eq!(w.len(), 1, "{json}");
        let w = &w[0];
        (
            w["token"].clone(),
            w["room"].clone(),
            w["used"].clone(),
            w["escalations"].clone(),
            w["escalated"].clone(),
        )
    };
    let v = |text: &str| serde_json::Value::from(text);
    assert_eq!(window("old_budget"), (v("USDC"), v("50000"), v("45000"), 0.into(), v("0")));
    assert_eq!(window("new_budget"), (v("USDC"), v("50000"), v("30000"), 1.into(), v("25000")));
    assert_eq!(json["new_budget"][0]["at"], fixture.display().to_string());
    let text = diff(false);
    assert!(
        text.contains(&format!(
            "new budget {}: USDC window 2026-12-01 09:00:00Z – 2026-12-02 09:00:00Z: 30000 of 50000 used at \
             tier 1, 1 escalation(s) to the root (25000 USDC)",
            fixture.display()
        )),
        "{text}"
    );
    let old_line = format!(
        "old budget {}: USDC window 2026-12-01 09:00:00Z – 2026-12-02 09:00:00Z: 45000 of 50000 used at tier 1\n",
        fixture.display()
    );
    assert!(text.contains(&old_line), "no escalation for the old version: {text}");
}

/// Every policy command that reads a script names the file:line:col of a misspelt function and
/// the nearest known name (not only `check`), and an unknown `--policy` names the nearest policy.
#[test]
fn policy_commands_name_file_line_col_and_the_nearest_known_name() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/examples");
    let config = format!("{examples}/treasury.toml");
    let fixture = format!("{examples}/fixtures/payroll-first-of-month.toml");
    let old = format!("{examples}/payroll.rhai");
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("payroll.rhai");
    std::fs::write(&typo, "// pays\nlet usdc = blance(\"USDC\");\n").unwrap();
    let typo = typo.to_str().unwrap();
    let at = format!("{typo}:2:12:");
    let hint = "unknown function `blance`, did you mean `balance`?";
    for args in [
        vec!["policy", "check", typo, "--config", &config],
        vec!["policy", "test", typo, "--fixture", &fixture],
        vec!["policy", "diff", &old, typo, "--config", &config, "--fixture", &fixture],
        vec!["policy", "simulate", typo, "--config", &config, "--rpc", "http://127.0.0.1:1", "--safe"],
    ] {
        let mut args = args;
        if args[1] == "simulate" {
            args.extend(["0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", "--from", "1", "--to", "1"]);
        }
        let err = output_of(&args);
        assert!(err.contains(&at) && err.contains(hint), "{args:?}: {err}");
    }
    let err = output_of(&[
        "policy",
        "diff",
        &old,
        &old,
        "--policy",
        "payrol",
        "--config",
        &config,
        "--fixture",
        &fixture,
    ]);
    assert!(err.contains("has no policy `payrol`, did you mean `payroll`?"), "{err}");
}

/// Issue 17: `treasury status` and `treasury intents list` as the README shows them (no
/// `--config`) need `TREASURY_CONFIG`; each command that reads the agent's config takes it there.
#[test]
fn treasury_config_stands_for_the_config_flag() {
    for command in
        [&["status"][..], &["run"], &["intents", "list"], &["intents", "show", "1"], &["config", "check"]]
    {
        let out = Command::new(EXE)
            .args(command)
            .env("TREASURY_CONFIG", "/nonexistent/from-env.toml")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command:?} succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("/nonexistent/from-env.toml"),
            "{command:?} did not read TREASURY_CONFIG: {err}"
        );
    }
}

/// Issue 17: distinct exit codes, as documented: 2 for a usage error, 78 for a configuration
/// that cannot be read or is invalid, 1 for a failure at run time.
#[test]
fn usage_configuration_and_runtime_failures_exit_with_distinct_codes() {
    let code = |args: &[&str]| Command::new(EXE).args(args).output().unwrap().status.code();
    assert_eq!(code(&["status", "--bogus"]), Some(2), "usage error");
    assert_eq!(code(&["status", "--config", "/nonexistent/treasury.toml"]), Some(78), "unreadable config");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("treasury.toml");
    std::fs::write(&bad, "[chain]\nrpc_http = \"nope\"\n").unwrap();
    assert_eq!(code(&["config", "check", "--config", bad.to_str().unwrap()]), Some(78), "invalid config");
    assert_eq!(code(&["run", "--config", bad.to_str().unwrap()]), Some(78), "invalid config");
    // A runtime failure: the root service named does not answer.
    let out = Command::new(EXE)
        .args(["root", "pending", "--url", "http://127.0.0.1:9"])
        .env("TREASURY_APPROVER_TOKEN", "t")
        .output()
        .unwrap();
    let runtime = out.status.code();
    assert_eq!(runtime, Some(1), "runtime failure");
}

/// Issue 17: `treasury completions SHELL` prints a completion script naming the subcommands.
#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(EXE).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in ["run", "status", "intents", "signer", "root", "completions"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
}

/// Issue 17: `--log-format json` writes one JSON object per log line.
#[test]
fn log_format_json_writes_json_lines() {
    let out = Command::new(EXE)
        .args(["--log-format", "json", "-vv", "root", "pending", "--url", "http://127.0.0.1:9"])
        .env("TREASURY_APPROVER_TOKEN", "t")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    // The final error is plain text; every log line before it is JSON.
    let logs: Vec<&str> = err.lines().filter(|l| !l.starts_with("error:")).collect();
    assert!(!logs.is_empty(), "debug logs of the connection attempt: {err}");
    for line in logs {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
    }
    let bad = Command::new(EXE).args(["--log-format", "yaml", "status"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "an unknown format is a usage error");
}

/// Outside a checkout with nothing installed, `treasury dev` names each missing piece with why it
/// is needed and how to get it, before starting anything (no state folder is made).
#[test]
fn dev_names_what_is_missing_and_why_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(EXE)
        .current_dir(dir.path())
        .args(["dev", "--once", "--no-install"])
        .env_remove("TREASURY_TOOLS_DIR")
        .env("TREASURY_HSM_MODULE", dir.path().join("no-such-softhsm.so"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for piece in
        ["anvil 1.7.1", "the local chain", "Safe 1.5.0", "Uniswap V2", "SoftHSM2", "scripts/install.sh dev"]
    {
        assert!(err.contains(piece), "{piece} not named: {err}");
    }
    assert!(!dir.path().join(".state").exists(), "nothing started");
}

/// `treasury intents show` names the version of the policy script that produced the intent (the
/// journal's column), in text and in `--json`; an intent without one shows no version line.
#[tokio::test]
async fn intents_show_names_the_policy_version_that_produced_the_intent() {
    use treasury_agent::journal::{Journal, NewIntent};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    let journal = Journal::open(&url).await.unwrap();
    let new = |key: &str, version: Option<&str>| NewIntent {
        idempotency_key: key.into(),
        policy: "payroll".into(),
        trigger: "manual".into(),
        kind: "pay".into(),
        payload: serde_json::json!({ "to": "0x00000000000000000000000000000000000000a1", "amount": "1000" }),
        policy_version: version.map(str::to_owned),
    };
    let versioned = journal.insert_intent(&new("k1", Some("0123456789abcdef"))).await.unwrap().intent.id;
    let bare = journal.insert_intent(&new("k2", None)).await.unwrap().intent.id;
    journal.close().await;
    // Only the journal is read; the quorum file must exist, not be valid.
    std::fs::write(dir.path().join("quorum.json"), "{}").unwrap();
    let config = dir.path().join("treasury.toml");
    std::fs::write(
        &config,
        format!(
            "[chain]\nrpc_http = \"http://127.0.0.1:8545\"\nchain_id = 31337\n\
             [safe]\naddress = \"0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\"\n\
             module = \"0x4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d\"\n\
             [signing]\nquorum_file = \"quorum.json\"\n[journal]\nurl = \"{url}\"\n\
             [keeper]\npkcs11_label = \"keeper\"\npkcs11_token = \"keeper-token\"\n"
        ),
    )
    .unwrap();
    let show = |id: i64, json: bool| {
        let mut args = vec!["intents".to_string(), "show".into(), id.to_string(), "--config".into()];
        args.push(config.display().to_string());
        if json {
            args.push("--json".into());
        }
        let out = Command::new(EXE).args(&args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = show(versioned.0, false);
    assert!(text.contains("policy   payroll version 0123456789abcdef"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&show(versioned.0, true)).unwrap();
    assert_eq!(json["intent"]["policy_version"], "0123456789abcdef");
    let text = show(bare.0, false);
    assert!(!text.contains("version"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&show(bare.0, true)).unwrap();
    assert!(json["intent"]["policy_version"].is_null(), "{json}");
}
