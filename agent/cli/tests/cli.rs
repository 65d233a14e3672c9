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
