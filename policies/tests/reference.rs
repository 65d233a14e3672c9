//! The policy reference: docs/POLICIES.md is what the engine generates, and its examples are Rhai.

use treasury_policies::reference::{definitions, markdown};
use treasury_policies::{Book, Limits, PoliciesConfig, PolicyEngine};

fn doc_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/POLICIES.md")
}

#[test]
fn docs_policies_md_is_the_engines_reference() {
    let engine = PolicyEngine::new(Limits::default());
    let generated = markdown(&engine).unwrap();
    let written = std::fs::read_to_string(doc_path()).unwrap();
    assert!(
        written == generated,
        "docs/POLICIES.md differs from the engine: run `treasury policy docs > docs/POLICIES.md`"
    );
}

#[test]
fn every_function_of_the_reference_has_an_example_that_compiles() {
    let engine = PolicyEngine::new(Limits::default());
    let reference = markdown(&engine).unwrap();
    let examples: Vec<&str> =
        reference.lines().filter_map(|l| l.strip_prefix("Example: `")?.strip_suffix('`')).collect();
    let entries = reference.matches("```rhai").count();
    assert_eq!(examples.len(), entries, "one example per entry");
    for example in examples {
        // `…` stands for the rest of a policy.
        let source = example.replace('…', "");
        let errors = engine.check(std::path::Path::new("example.rhai"), &source, None);
        assert!(errors.is_empty(), "{example}: {errors:?}");
    }
}

#[test]
fn definitions_list_the_api_and_the_configs_names() {
    let engine = PolicyEngine::new(Limits::default());
    let cfg = PoliciesConfig::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/treasury.toml"),
    )
    .unwrap();
    let book = Book::from_config(&cfg);
    let defs = definitions(&engine, Some(&book));
    for f in
        ["fn pay(to: String, token: String, amount: Decimal) -> ();", "fn balance(sym: String) -> Decimal;"]
    {
        assert!(defs.contains(f), "{f} missing from\n{defs}");
    }
    for symbol in cfg.tokens.keys() {
        assert!(defs.contains(&format!("`\"{symbol}\"`")), "token {symbol} not listed");
    }
    for name in cfg.addresses.keys() {
        assert!(defs.contains(&format!("`\"{name}\"`")), "recipient {name} not listed");
    }
    // The Rhai language server treats a workspace file as definitions only when, after plain `//`
    // comments and `///` docs, its first statement is a `module` declaration.
    let first = defs.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("//"));
    assert_eq!(first, Some("module static;"), "definitions must open with a module header");
}
