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
