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
