//! Every example policy passes every one of its fixtures, as `treasury policy test` runs them.

use std::path::{Path, PathBuf};

use treasury_policies::fixture::{Fixture, run_fixture};
use treasury_policies::{PoliciesConfig, PolicySet};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn every_example_fixture_passes() {
    let mut fixtures: Vec<_> = std::fs::read_dir(examples().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    fixtures.sort();
    let mut failures = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    for path in &fixtures {
        let fx = Fixture::from_file(path).unwrap();
        let policy = fx.policy.clone().expect("example fixtures name their policy");
        let script = examples().join(format!("{policy}.rhai"));
        let report = run_fixture(&script, path, None).unwrap();
        if !report.passed {
            failures.push(report.to_string());
        }
        covered.insert(policy);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every configured example has at least one fixture.
    let cfg = PoliciesConfig::from_file(&examples().join("treasury.toml")).unwrap();
    for p in &cfg.policies {
        assert!(covered.contains(&p.name), "example `{}` has no fixture", p.name);
    }
}

#[test]
fn example_config_loads_every_policy() {
    let cfg = PoliciesConfig::from_file(&examples().join("treasury.toml")).unwrap();
    let set = PolicySet::load(&cfg, &examples()).unwrap();
    assert_eq!(set.entries().count(), 6);
}

#[test]
fn a_wrong_expectation_is_reported_as_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(examples().join("fixtures/dca-monday.toml")).unwrap();
    let wrong = original
        .replace("config = \"../treasury.toml\"", &format!("config = {:?}", examples().join("treasury.toml")))
        .replace("amount = \"500\"", "amount = \"450\"");
    let path = dir.path().join("dca-wrong.toml");
    std::fs::write(&path, wrong).unwrap();
    let report = run_fixture(&examples().join("dca.rhai"), &path, None).unwrap();
    assert!(!report.passed);
    assert_eq!(report.diff, vec!["intent 1: amount: expected 450, got 500".to_string()]);
}
