//! What the `treasury` command line prints when it fails: each cause once, naming what was wrong.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_treasury");

/// What a failing command printed, stdout and stderr.
fn output_of(args: &[&str]) -> String {
    let out = Command::new(EXE).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap()
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
