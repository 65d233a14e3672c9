//! Evaluation cost of the example policies, 1,000 policies on one core, a runaway script, compile
//! time cached vs uncached, and bare Rhai on a similar script as the baseline.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;
use treasury_policies::view::{AssetView, PriceView};
use treasury_policies::{Book, CompiledPolicy, PoliciesConfig, PolicyEngine, Run, SnapshotView};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn view(cfg: &PoliciesConfig) -> Arc<SnapshotView> {
    let asset = |balance: i64, price: i64| AssetView {
        balance: balance.into(),
        price: Some(PriceView { price: price.into(), age_secs: 60, stale: false }),
        budget_remaining: Some(Decimal::from(50_000)),
    };
    let assets =
        BTreeMap::from([("ETH".to_string(), asset(40, 2300)), ("USDC".to_string(), asset(100_000, 1))]);
    // Monday 2025-03-03 12:00 UTC, so DCA trades too.
    let book = Arc::new(Book::from_config(cfg));
    Arc::new(SnapshotView { chain_id: 1, block_number: 1, timestamp: 1_741_003_200, assets, book })
}

fn load() -> (PoliciesConfig, PolicyEngine, Vec<(CompiledPolicy, String)>) {
    let cfg = PoliciesConfig::from_file(&examples().join("treasury.toml")).unwrap();
    let engine = PolicyEngine::new(cfg.limits);
    let book = Book::from_config(&cfg);
    let policies = cfg
        .policies
        .iter()
        .map(|p| {
            let path = examples().join(&p.file);
            let src = std::fs::read_to_string(&path).unwrap();
            (engine.compile(&p.name, &path, &src, p.period, &book).unwrap(), src)
        })
        .collect();
    (cfg, engine, policies)
}

fn bench(c: &mut Criterion) {
    let (cfg, engine, policies) = load();
    let view = view(&cfg);
    let run = Run { trigger: "bench", history: &[] };

    let mut per = c.benchmark_group("per_policy");
    for (p, _) in &policies {
        per.bench_function(&p.name, |b| b.iter(|| engine.evaluate(p, &view, run).unwrap()));
    }
    per.finish();

    let thousand: Vec<_> = policies.iter().cycle().take(1000).map(|(p, _)| p.clone()).collect();
    c.bench_function("1000_policies_one_core", |b| {
        b.iter(|| thousand.iter().map(|p| engine.evaluate(p, &view, run).unwrap().len()).sum::<usize>())
    });

    let book = Book::from_config(&cfg);
    let runaway = engine
        .compile(
            "runaway",
            Path::new("runaway.rhai"),
            "let x = 0; loop { x += 1; }",
            Default::default(),
            &book,
        )
        .unwrap();
    c.bench_function("runaway_stopped_by_operations_limit", |b| {
        b.iter(|| engine.evaluate(&runaway, &view, run).unwrap_err())
    });

    let (payroll, payroll_src) = policies.iter().find(|(p, _)| p.name == "payroll").unwrap();
    let mut compile = c.benchmark_group("compile_payroll");
    compile.bench_function("uncached", |b| {
        b.iter(|| engine.compile("payroll", &payroll.file, payroll_src, payroll.period, &book).unwrap())
    });
    compile.bench_function("cached", |b| b.iter(|| payroll.clone()));
    compile.finish();

    // Baseline: bare Rhai (default engine, no limits, no API) on a payroll-like script over plain
    // integers, compiled once.
    let bare = rhai::Engine::new();
    let ast = bare
        .compile(
            "let salaries = #{ alice: 8000, bob: 6500 }; let paid = #{ alice: 0, bob: 0 };
             let out = []; let total = 0;
             for name in salaries.keys() { let owed = salaries[name] - paid[name];
               if owed > 0 { out.push([name, \"USDC\", owed]); total += owed; } }
             if total > 50000 { out = []; } out",
        )
        .unwrap();
    c.bench_function("bare_rhai_1000_scripts", |b| {
        b.iter(|| (0..1000).map(|_| bare.eval_ast::<rhai::Array>(&ast).unwrap().len()).sum::<usize>())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
