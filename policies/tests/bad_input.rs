//! Every "bad input" of issue 5: each is an error naming the policy (and limit and line where
//! relevant), stops in bounded time, and leaves other policies running.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rust_decimal::Decimal;
use treasury_policies::view::{AssetView, PriceView};
use treasury_policies::{
    Book, Limit, Limits, PoliciesConfig, PolicyEngine, PolicyError, PolicySet, Run, SnapshotView,
};

const CONFIG: &str = r#"
    tokens.ETH = { address = "0x0000000000000000000000000000000000000000", decimals = 18 }
    tokens.USDC = { address = "0x0000000000000000000000000000000000000001", decimals = 6 }
    addresses.alice = "0x00000000000000000000000000000000000000a1"
"#;

fn config() -> PoliciesConfig {
    toml::from_str(CONFIG).unwrap()
}

fn view(eth_stale: bool) -> Arc<SnapshotView> {
    let book = Arc::new(Book::from_config(&config()));
    let asset = |balance: i64, price: i64, stale| AssetView {
        balance: balance.into(),
        price: Some(PriceView { price: price.into(), age_secs: if stale { 7200 } else { 60 }, stale }),
        budget_remaining: None,
    };
    let assets = BTreeMap::from([
        ("ETH".to_string(), asset(40, 2000, eth_stale)),
        ("USDC".to_string(), asset(20_000, 1, false)),
    ]);
    Arc::new(SnapshotView { chain_id: 1, block_number: 100, timestamp: 1_740_830_400, assets, book })
}

/// Compiles and runs `src` as policy `p` on a fresh snapshot.
fn run(src: &str) -> Result<Vec<treasury_policies::Intent>, PolicyError> {
    run_on(src, &view(false))
}

fn run_on(src: &str, view: &Arc<SnapshotView>) -> Result<Vec<treasury_policies::Intent>, PolicyError> {
    let engine = PolicyEngine::new(Limits::default());
    let book = Book::from_config(&config());
    let policy = engine.compile("p", Path::new("p.rhai"), src, Default::default(), &book)?;
    engine.evaluate(&policy, view, Run { trigger: "manual", history: &[] })
}

fn assert_limit(err: PolicyError, limit: Limit, line: usize) {
    assert_eq!(err.limit(), Some(limit), "{err}");
    assert_eq!(err.policy(), Some("p"));
    assert_eq!(err.line(), Some(line), "{err}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("p.rhai:{line}:")) && text.contains(&limit.to_string()), "{text}");
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let err = run("let a = 1;\nlet b = (2 + ;\n").unwrap_err();
    assert!(err.is_compile(), "{err}");
    assert_eq!(err.line(), Some(2));
    assert!(err.to_string().starts_with("p.rhai:2:"), "{err}");
}

#[test]
fn unknown_token_is_an_error_at_compile_time_and_at_run_time() {
    let err = run("pay(\"alice\", \"USCD\", 5);").unwrap_err();
    assert!(err.is_compile() && err.to_string().contains("did you mean `USDC`"), "{err}");
    // A symbol computed at run time is caught when used, naming the line.
    let err = run("let t = \"US\" + \"CD\";\npay(\"alice\", t, 5);").unwrap_err();
    assert!(matches!(err, PolicyError::BadInput { .. }), "{err}");
    assert_eq!(err.line(), Some(2));
}

#[test]
fn unknown_or_malformed_address_is_an_error() {
    let err = run("pay(\"alcie\", \"USDC\", 5);").unwrap_err();
    assert!(err.to_string().contains("unknown recipient `alcie`"), "{err}");
    let err = run("let a = \"0x12\";\npay(a, \"USDC\", 5);").unwrap_err();
    assert!(err.to_string().contains("malformed address"), "{err}");
    assert_eq!(err.line(), Some(2));
}

#[test]
fn float_amount_is_an_error_naming_the_line() {
    let err = run("pay(\"alice\", \"USDC\", 1.5);").unwrap_err();
    assert!(err.to_string().contains("float"), "{err}");
    assert_eq!(err.line(), Some(1));
    // Hidden behind a variable it is still refused, at run time.
    let err = run("let x = 0.1 + 0.2;\n\npay(\"alice\", \"USDC\", x);").unwrap_err();
    assert!(matches!(err, PolicyError::BadInput { .. }) && err.to_string().contains("float"), "{err}");
    assert_eq!(err.line(), Some(3));
    // Mixing floats into money arithmetic is refused too.
    let err = run("let x = balance(\"ETH\") * 0.5;").unwrap_err();
    assert!(err.to_string().contains("float in money arithmetic"), "{err}");
}

#[test]
fn zero_and_negative_amounts_are_errors() {
    for amount in ["0", "-5", "\"-0.01\"", "\"0.0000001\""] {
        let err = run(&format!("pay(\"alice\", \"USDC\", {amount});")).unwrap_err();
        assert!(err.to_string().contains("must be positive"), "{amount}: {err}");
    }
}

#[test]
fn endless_loop_is_stopped_by_the_operations_limit() {
    assert_limit(run("let x = 0;\nloop {\n  x += 1;\n}").unwrap_err(), Limit::Operations, 3);
}

#[test]
fn endless_recursion_is_stopped_by_the_call_depth_limit() {
    let err = run("fn f(n) {\n  f(n + 1)\n}\nf(0);").unwrap_err();
    assert_eq!(err.limit(), Some(Limit::CallDepth), "{err}");
    assert_eq!(err.policy(), Some("p"));
}

#[test]
fn growing_string_array_and_map_are_stopped() {
    assert_limit(run("let s = \"x\";\nloop { s += s; }").unwrap_err(), Limit::StringSize, 2);
    assert_limit(run("let a = [];\nloop { a.push(1); }").unwrap_err(), Limit::ArraySize, 2);
    // Rhai checks a map's size when maps are merged (`+=`, `mixin`), not on `m[new_key] = v`,
    // which only the operations limit bounds.
    let src = "let m = #{};\nlet i = 0;\nloop { let n = #{}; n[`k${i}`] = i; m += n; i += 1; }";
    assert_limit(run(src).unwrap_err(), Limit::MapSize, 3);
}

#[test]
fn a_million_intents_are_stopped_by_the_intents_limit() {
    let err = run("for i in 0..1000000 {\n  alert(`n${i}`);\n}").unwrap_err();
    assert_limit(err, Limit::Intents, 2);
}

#[test]
fn script_errors_are_runtime_errors_with_line() {
    let err = run("let a = 1;\nthrow \"boom\";").unwrap_err();
    assert!(matches!(err, PolicyError::Runtime { .. }), "{err}");
    assert_eq!(err.line(), Some(2));
    assert!(err.to_string().starts_with("p.rhai:2:1: policy `p`:"), "{err}");
    let err = run("let a = 1;\nlet b = a / 0;").unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.rhai:2:11: policy `p`: Division by zero: 1 / 0",
        "the place once, as file:line:col"
    );
}

#[test]
fn stale_price_is_visible_and_rebalance_refuses_it() {
    let stale = view(true);
    let intents = run_on("if price_stale(\"ETH\") { alert(`age ${price_age(\"ETH\")}`); }", &stale).unwrap();
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0].action.to_string(), "alert: age 7200");
    let err = run_on("rebalance(#{ ETH: \"0.6\", USDC: \"0.4\" }, \"0.05\", \"0.01\");", &stale).unwrap_err();
    assert!(matches!(err, PolicyError::BadInput { .. }) && err.to_string().contains("stale"), "{err}");
    // The same call on fresh prices trades.
    let ok = run("rebalance(#{ ETH: \"0.6\", USDC: \"0.4\" }, \"0.05\", \"0.01\");").unwrap();
    assert_eq!(ok.len(), 1);
}

#[test]
fn same_trigger_twice_gives_same_keys_and_a_new_period_new_keys() {
    let src = "pay(\"alice\", \"USDC\", 10);\npay(\"alice\", \"USDC\", 10);\nalert(\"hi\");";
    let first = run(src).unwrap();
    let again = run(src).unwrap();
    assert_eq!(first, again);
    let keys: Vec<_> = first.iter().map(|i| i.key.clone()).collect();
    let unique: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), 3, "keys within a run are distinct: {keys:?}");
    let mut next_day = (*view(false)).clone();
    next_day.timestamp += 86_400;
    let later = run_on(src, &Arc::new(next_day)).unwrap();
    assert!(later.iter().all(|i| !keys.contains(&i.key)), "{later:?}");
}

#[test]
fn sandbox_has_no_clock_files_or_eval() {
    for src in ["timestamp() - timestamp(); let t = timestamp_now();", "import \"x\" as x;", "eval(\"1\");"] {
        assert!(run(src).is_err(), "{src}");
    }
}

#[test]
fn a_failing_policy_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.rhai"), "loop {}").unwrap();
    std::fs::write(dir.path().join("good.rhai"), "pay(\"alice\", \"USDC\", 10);").unwrap();
    let cfg: PoliciesConfig = toml::from_str(&format!(
        "{CONFIG}\n[[policy]]\nname = \"bad\"\nfile = \"bad.rhai\"\ntrigger = {{ kind = \"manual\" }}\n\
         [[policy]]\nname = \"good\"\nfile = \"good.rhai\"\ntrigger = {{ kind = \"manual\" }}\n"
    ))
    .unwrap();
    let set = PolicySet::load(&cfg, dir.path()).unwrap();
    let outcomes = set.evaluate_all(&view(false), &[], |_| true);
    let by_name: BTreeMap<_, _> = outcomes.iter().map(|o| (o.policy.as_str(), &o.result)).collect();
    assert_eq!(by_name["bad"].as_ref().unwrap_err().limit(), Some(Limit::Operations));
    assert_eq!(by_name["good"].as_ref().unwrap().len(), 1);
}

#[test]
fn broken_reload_keeps_the_previous_version_and_raises_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rhai");
    std::fs::write(&file, "pay(\"alice\", \"USDC\", 10);").unwrap();
    let cfg: PoliciesConfig = toml::from_str(&format!(
        "{CONFIG}\n[[policy]]\nname = \"p\"\nfile = \"p.rhai\"\ntrigger = {{ kind = \"manual\" }}\n"
    ))
    .unwrap();
    let mut set = PolicySet::load(&cfg, dir.path()).unwrap();
    let amount = |set: &PolicySet| set.evaluate("p", &view(false), &[]).unwrap()[0].action.to_string();

    std::fs::write(&file, "pay(\"alice\", \"USDC\", 20);").unwrap();
    assert_eq!(set.reload().reloaded, vec!["p".to_string()]);
    assert!(amount(&set).starts_with("pay 20 USDC"));

    std::fs::write(&file, "pay(\"alice\", \"USDC\", 30").unwrap();
    let report = set.reload();
    assert_eq!(report.kept_previous.len(), 1);
    let alerts = report.alerts();
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].action.to_string().contains("previous one still runs"), "{}", alerts[0].action);
    assert!(amount(&set).starts_with("pay 20 USDC"), "previous version still runs");
    // An unchanged file is not reloaded again.
    assert!(set.reload().reloaded.is_empty());
}

/// A reload that compiles but no longer does what the policy's own fixture expects (pays alice
/// 10 USDC) keeps the running version, raises an alert naming the fixture, and keeps the version hash.
#[test]
fn a_reload_that_fails_the_policys_fixtures_keeps_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rhai");
    std::fs::write(&file, "pay(\"alice\", \"USDC\", 10);").unwrap();
    std::fs::write(dir.path().join("treasury.toml"), CONFIG).unwrap();
    std::fs::write(
        dir.path().join("p-pays-10.toml"),
        "config = \"treasury.toml\"\npolicy = \"p\"\n[block]\nnumber = 1\ntime = \"2026-01-01T00:00:00Z\"\n\
         [assets.USDC]\nbalance = \"1000\"\nprice = \"1\"\n\
         [[expect]]\nkind = \"pay\"\nto = \"alice\"\ntoken = \"USDC\"\namount = \"10\"\n",
    )
    .unwrap();
    let cfg: PoliciesConfig = toml::from_str(&format!(
        "{CONFIG}\n[[policy]]\nname = \"p\"\nfile = \"p.rhai\"\ntrigger = {{ kind = \"manual\" }}\nfixtures = [\"p-pays-10.toml\"]\n"
    ))
    .unwrap();
    let mut set = PolicySet::load(&cfg, dir.path()).unwrap();
    let first = set.version("p").unwrap();

    std::fs::write(&file, "pay(\"alice\", \"USDC\", 99);").unwrap();
    let report = set.reload();
    assert!(report.reloaded.is_empty());
    let alerts = report.alerts();
    assert_eq!(alerts.len(), 1);
    let message = alerts[0].action.to_string();
    assert!(message.contains("p-pays-10.toml") && message.contains("previous one still runs"), "{message}");
    assert_eq!(set.version("p").unwrap(), first, "the running version is unchanged");
    let paid = set.evaluate("p", &view(false), &[]).unwrap()[0].action.to_string();
    assert!(paid.starts_with("pay 10 USDC"), "{paid}");

    // A change that still passes (a memo) is loaded, under a new version hash.
    std::fs::write(&file, "pay(\"alice\", \"USDC\", 10, #{ memo: \"monthly\" });").unwrap();
    assert_eq!(set.reload().reloaded, vec!["p".to_string()]);
    assert_ne!(set.version("p").unwrap(), first);

    // At start, a script failing its own fixture is refused.
    std::fs::write(&file, "pay(\"alice\", \"USDC\", 99);").unwrap();
    let err = PolicySet::load(&cfg, dir.path()).unwrap_err();
    assert!(err.to_string().contains("fails its fixture"), "{err}");
}

#[test]
fn amounts_keep_decimal_precision() {
    let intents = run("pay(\"alice\", \"USDC\", dec(\"10\") / 3);").unwrap();
    let treasury_policies::Action::Pay { amount, .. } = &intents[0].action else { panic!() };
    assert_eq!(*amount, "3.333333".parse::<Decimal>().unwrap());
}

#[test]
fn check_names_a_misspelt_function_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.rhai");
    std::fs::write(&file, "let x = 1;\nif blance(\"ETH\") > 0 { alert(\"rich\"); }\nfn helper() { 1 }\nlet y = helper() + max(1, 2);\n")
        .unwrap();
    let problems = treasury_policies::check::check_files(&[file.as_path()], None).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let text = problems[0].to_string();
    assert!(text.contains("blance") && text.contains(":2:"), "{text}");
    assert!(text.contains("did you mean `balance`?"), "{text}");
}

/// What `policy check` refuses, every command that compiles refuses too (`test`, `simulate`,
/// `diff`, reload): a misspelt function names the nearest known one, at file:line:col.
#[test]
fn a_misspelt_function_is_refused_when_compiling_naming_the_nearest_one() {
    let err = run("let a = 1;\nlet b = blance(\"USDC\");\n").unwrap_err();
    assert!(err.is_compile(), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("p.rhai:2:9:"), "{text}");
    assert!(text.contains("unknown function `blance`, did you mean `balance`?"), "{text}");
}

/// A misspelt variable names the nearest variable the script declares (`let`, `const`, loop and
/// function parameters), at file:line:col.
#[test]
fn a_misspelt_variable_names_the_nearest_declared_one() {
    let err = run("let amount = 10;\nif amout > 0 { pay(\"alice\", \"USDC\", amount); }\n").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("p.rhai:2:4:"), "{text}");
    assert!(text.contains("undefined variable `amout`, did you mean `amount`?"), "{text}");
    let err = run("fn half(total) { totl / 2 }\npay(\"alice\", \"USDC\", half(10));\n").unwrap_err();
    assert!(err.to_string().contains("did you mean `total`?"), "{err}");
    let err = run("for recipient in [\"alice\"] { pay(recipent, \"USDC\", 1); }\n").unwrap_err();
    assert!(err.to_string().contains("did you mean `recipient`?"), "{err}");
}

/// A known function called with arguments of the wrong types names the signatures it has.
#[test]
fn a_call_with_wrong_argument_types_lists_the_functions_signatures() {
    let err = run("let a = 1;\nlet b = balance(1);\n").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("p.rhai:2:9:"), "{text}");
    assert!(text.contains("no `balance` takes (i64); it is: balance(sym: String) -> Decimal"), "{text}");
    let err = run("fn half(total) { total / 2 }\npay(\"alice\", \"USDC\", half(10, 2));\n").unwrap_err();
    assert!(err.to_string().contains("no `half` takes (i64, i64); it is: half(total)"), "{err}");
}

/// A reload whose new version calls a misspelt function keeps the running version (it would pass
/// no `policy check`), and the alert names the nearest known function.
#[test]
fn a_reload_with_a_misspelt_function_keeps_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rhai");
    std::fs::write(&file, "pay(\"alice\", \"USDC\", 10);").unwrap();
    let cfg: PoliciesConfig = toml::from_str(&format!(
        "{CONFIG}\n[[policy]]\nname = \"p\"\nfile = \"p.rhai\"\ntrigger = {{ kind = \"manual\" }}\n"
    ))
    .unwrap();
    let mut set = PolicySet::load(&cfg, dir.path()).unwrap();
    let first = set.version("p").unwrap();
    std::fs::write(&file, "if balanse(\"USDC\") > 0 { pay(\"alice\", \"USDC\", 10); }").unwrap();
    let report = set.reload();
    assert!(report.reloaded.is_empty());
    let message = report.alerts()[0].action.to_string();
    assert!(message.contains("p.rhai:1:4") && message.contains("did you mean `balance`?"), "{message}");
    assert_eq!(set.version("p").unwrap(), first);
}

/// A fixture naming a token or recipient the config does not know is refused at the name's
/// file:line:col, with the nearest known name.
#[test]
fn a_fixtures_unknown_names_are_located_with_the_nearest_known_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("treasury.toml"), CONFIG).unwrap();
    let script = dir.path().join("p.rhai");
    std::fs::write(&script, "pay(\"alice\", \"USDC\", 10);").unwrap();
    let fixture = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("config = \"treasury.toml\"\nexpect = []\n[block]\nnumber = 1\ntime = 1\n{body}"),
        )
        .unwrap();
        path
    };
    let asset = fixture("asset.toml", "[assets.USCD]\nbalance = 10\n");
    let err = treasury_policies::fixture::run_fixture(&script, &asset, None).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:6:9:", asset.display())), "{err}");
    assert!(err.contains("unknown token `USCD`, did you mean `USDC`?"), "{err}");
    let history = fixture(
        "history.toml",
        "[assets.USDC]\nbalance = 10\n[[history]]\nrecipient = \"alcie\"\ntoken = \"USDC\"\namount = 1\ntime = 1\n",
    );
    let err = treasury_policies::fixture::run_fixture(&script, &history, None).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:9:14:", history.display())), "{err}");
    assert!(err.contains("unknown recipient `alcie`, did you mean `alice`?"), "{err}");
}
