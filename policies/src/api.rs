//! The functions a script sees: a read-only view of one block, period helpers, and intents.
//!
//! Every function reads the evaluation's [`RunCtx`] from the Rhai call tag, so one compiled engine
//! serves every policy and every block. Bad input from a script is returned as a [`Fault`], which
//! the engine turns into an error naming the policy and line.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, INT, ImmutableString, Map, NativeCallContext, Position};
use rust_decimal::Decimal;

use crate::error::Limit;
use crate::intent::{Action, Intent};
use crate::money::amount_from_script;
use crate::period::{Calendar, Period};
use crate::rebalance;
use crate::reference::{FnDoc, Section};
use crate::view::{Payment, SnapshotView};

/// Why a registered function refused to go on; carried through Rhai as a runtime error value.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// The script passed something invalid.
    BadInput(String),
    /// The script broke a limit the engine enforces itself.
    Limit(Limit),
    /// A registered function panicked.
    Panic(String),
}

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

impl From<Fault> for Box<EvalAltResult> {
    fn from(f: Fault) -> Self {
        EvalAltResult::ErrorRuntime(Dynamic::from(f), Position::NONE).into()
    }
}

/// State of one evaluation of one policy.
pub(crate) struct RunCtx {
    pub(crate) policy: String,
    pub(crate) trigger: String,
    pub(crate) period: Period,
    pub(crate) view: Arc<SnapshotView>,
    pub(crate) history: Vec<Payment>,
    pub(crate) max_intents: usize,
    pub(crate) out: Mutex<Output>,
}

/// Intents collected so far, and how many times each default key was used.
#[derive(Default)]
pub(crate) struct Output {
    pub(crate) intents: Vec<Intent>,
    key_uses: HashMap<String, usize>,
}

impl RunCtx {
    fn calendar(&self) -> Calendar {
        Calendar::at(self.view.timestamp)
    }

    fn period_key(&self, p: Period) -> String {
        p.key(self.view.timestamp, self.view.block_number)
    }

    /// Adds an intent, deriving its key unless the script gave one.
    fn push(&self, action: Action, opts: Opts, discriminator: String) -> Result<(), Fault> {
        let mut out = self.out.lock().map_err(|_| Fault::Panic("output lock poisoned".into()))?;
        if out.intents.len() >= self.max_intents {
            return Err(Fault::Limit(Limit::Intents));
        }
        let key = match opts.key {
            Some(k) => format!("{}:{k}", self.policy),
            None => {
                let base = format!(
                    "{}:{}:{}:{discriminator}",
                    self.policy,
                    self.trigger,
                    self.period_key(self.period)
                );
                let n = out.key_uses.entry(base.clone()).or_insert(0);
                *n += 1;
                if *n == 1 { base } else { format!("{base}#{n}") }
            }
        };
        if out.intents.iter().any(|i| i.key == key) {
            return Err(Fault::BadInput(format!("idempotency key `{key}` used twice")));
        }
        out.intents.push(Intent { policy: self.policy.clone(), key, memo: opts.memo, action });
        Ok(())
    }

    /// What this policy paid `recipient` (or anyone, if `None`) in `token` during the current
    /// `period`.
    fn paid(&self, recipient: Option<alloy::primitives::Address>, token: &str, period: Period) -> Decimal {
        let now = self.view.timestamp;
        self.history
            .iter()
            .filter(|p| p.policy == self.policy && p.token == token)
            .filter(|p| recipient.is_none_or(|r| r == p.recipient))
            .filter(|p| match period {
                Period::Block => p.timestamp == now,
                _ => period.same(p.timestamp, now),
            })
            .map(|p| p.amount)
            .sum()
    }
}

/// Options a script may pass as a last map argument: `#{ memo: "…", key: "…" }`.
#[derive(Default)]
struct Opts {
    memo: Option<String>,
    key: Option<String>,
}

impl Opts {
    fn parse(map: &Map) -> Result<Self, Fault> {
        let mut opts = Opts::default();
        for (k, v) in map {
            let text = v
                .clone()
                .try_cast::<ImmutableString>()
                .map(|s| s.to_string())
                .ok_or_else(|| Fault::BadInput(format!("option `{k}` must be a string")))?;
            match k.as_str() {
                "memo" => opts.memo = Some(text),
                "key" if text.is_empty() => {
                    return Err(Fault::BadInput("idempotency key must not be empty".into()));
                }
                "key" => opts.key = Some(text),
                other => {
                    return Err(Fault::BadInput(format!("unknown option `{other}` (expected memo or key)")));
                }
            }
        }
        Ok(opts)
    }
}

/// Runs `f` with the evaluation's context, containing panics and mapping faults to Rhai errors.
fn with_ctx<T>(ctx: &NativeCallContext, f: impl FnOnce(&RunCtx) -> Result<T, Fault>) -> RhaiResult<T> {
    let tag = ctx.tag().ok_or_else(|| Fault::Panic("no evaluation context".into()))?;
    let run = tag.read_lock::<Arc<RunCtx>>().ok_or_else(|| Fault::Panic("no evaluation context".into()))?;
    match catch_unwind(AssertUnwindSafe(|| f(&run))) {
        Ok(r) => r.map_err(Into::into),
        Err(payload) => Err(Fault::Panic(panic_message(&payload)).into()),
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

fn bad(msg: impl Into<String>) -> Fault {
    Fault::BadInput(msg.into())
}

/// A strictly positive amount, rounded toward zero to the token's decimals.
fn positive_amount(run: &RunCtx, token: &str, v: &Dynamic) -> Result<Decimal, Fault> {
    let decimals = run.view.book.token(token).map_err(bad)?.decimals;
    let raw = amount_from_script(v, "amount").map_err(bad)?;
    let amount = raw.round_dp_with_strategy(decimals.into(), rust_decimal::RoundingStrategy::ToZero);
    if raw <= Decimal::ZERO {
        return Err(bad(format!("amount must be positive, got {raw} {token}")));
    }
    if amount.is_zero() {
        return Err(bad(format!(
            "amount must be positive: {raw} {token} rounds to 0 at {token}'s {decimals} decimals (amounts round towards zero)"
        )));
    }
    Ok(amount.normalize())
}

/// A fraction in (0, 1), e.g. a slippage bound.
fn fraction(v: &Dynamic, what: &str) -> Result<Decimal, Fault> {
    let f = amount_from_script(v, what).map_err(bad)?;
    if f <= Decimal::ZERO || f >= Decimal::ONE {
        return Err(bad(format!("{what} must be between 0 and 1 (exclusive), got {f}")));
    }
    Ok(f)
}

fn period_arg(p: &str) -> Result<Period, Fault> {
    Period::parse(p).ok_or_else(|| bad(format!("unknown period `{p}` (block, day, week or month)")))
}

/// Registers the whole script API on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    register_view(engine);
    register_calendar(engine);
    register_intents(engine);
    register_float_guards(engine);
    #[cfg(test)]
    engine.register_fn("panic_for_test", |ctx: NativeCallContext| {
        with_ctx(&ctx, |_| -> Result<(), Fault> { panic!("registered function blew up") })
    });
}

/// Documentation of a function of `section` taking `params` and returning `returns`.
const fn doc(
    section: Section,
    params: &'static [&'static str],
    returns: &'static str,
    text: &'static str,
    errors: &'static str,
    example: &'static str,
) -> FnDoc {
    FnDoc { section, params, returns, text, errors, example }
}

const UNKNOWN_TOKEN: &str =
    "`sym` is not in the config's token table (the message names the closest symbol).";

fn register_view(engine: &mut Engine) {
    use Section::{Block, History, Money, Treasury};
    doc(
        Block,
        &[],
        "int",
        "The number of the block the policy runs at (the pinned block).",
        "none.",
        "let n = block_number();",
    )
    .register(engine, "block_number", |ctx: NativeCallContext| {
        with_ctx(&ctx, |r| Ok(r.view.block_number as INT))
    });
    doc(
        Block,
        &[],
        "int",
        "The pinned block's timestamp, Unix seconds (UTC).",
        "none.",
        "let t = timestamp();",
    )
    .register(engine, "timestamp", |ctx: NativeCallContext| with_ctx(&ctx, |r| Ok(r.view.timestamp as INT)));
    doc(
        Block,
        &[],
        "int",
        "The chain's id (1 for Ethereum mainnet).",
        "none.",
        "if chain_id() != 1 { return; }",
    )
    .register(engine, "chain_id", |ctx: NativeCallContext| with_ctx(&ctx, |r| Ok(r.view.chain_id as INT)));
    doc(
        Treasury,
        &["sym: String"],
        "Decimal",
        "The Safe's balance of `sym` at the pinned block, in whole tokens: the on-chain integer\ndivided by 10^decimals, exact (no rounding).",
        UNKNOWN_TOKEN,
        "if balance(\"USDC\") < dec(\"1000\") { alert(\"low USDC\"); }",
    )
    .register(engine, "balance", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| Ok(r.view.asset(sym).map_err(bad)?.balance))
    });
    doc(
        Treasury,
        &["sym: String"],
        "bool",
        "Whether `sym` has a price feed in the config.",
        UNKNOWN_TOKEN,
        "if has_price(\"WETH\") { … }",
    )
    .register(engine, "has_price", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| Ok(r.view.asset(sym).map_err(bad)?.price.is_some()))
    });
    doc(
        Treasury,
        &["sym: String"],
        "Decimal",
        "The USD price of one whole `sym` from its feed at the pinned block: the feed's answer\ndivided by 10^(feed decimals), exact.",
        "`sym` is unknown, or has no price feed.",
        "let eth_usd = price(\"WETH\");",
    )
    .register(engine, "price", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| price_of(r, sym).map(|p| p.price))
    });
    doc(
        Treasury,
        &["sym: String"],
        "int",
        "Seconds between the feed's last update and the pinned block's timestamp.",
        "`sym` is unknown, or has no price feed.",
        "if price_age(\"WETH\") > 600 { return; }",
    )
    .register(engine, "price_age", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| price_of(r, sym).map(|p| p.age_secs as INT))
    });
    doc(
        Treasury,
        &["sym: String"],
        "bool",
        "Whether the feed's price is older than the token's `max_price_age` (default 3600 s).",
        "`sym` is unknown, or has no price feed.",
        "if price_stale(\"WETH\") { alert(\"stale WETH price\"); return; }",
    )
    .register(engine, "price_stale", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| price_of(r, sym).map(|p| p.stale))
    });
    doc(
        Treasury,
        &["sym: String"],
        "Decimal",
        "The USD value of the Safe's `sym`: balance × price, exact.",
        "`sym` is unknown or has no price feed; the product overflows (beyond ~7.9e28).",
        "let usd = value(\"WETH\");",
    )
    .register(engine, "value", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| {
            price_of(r, sym)?;
            r.view.asset(sym).map_err(bad)?.value().ok_or_else(|| bad("value overflows"))
        })
    });
    doc(
        Treasury,
        &[],
        "Decimal",
        "The USD value of every priced asset of the Safe, summed (unpriced assets count 0).",
        "none.",
        "let total = portfolio_value();",
    )
    .register(engine, "portfolio_value", |ctx: NativeCallContext| {
        with_ctx(&ctx, |r| Ok(r.view.portfolio_value()))
    });
    doc(
        Treasury,
        &["sym: String"],
        "Decimal",
        "`value(sym) / portfolio_value()`, between 0 and 1 (0 when the portfolio is worth 0); the\ndivision keeps 28 significant digits.",
        "`sym` is unknown, or has no price feed.",
        "if weight(\"WETH\") > dec(\"0.6\") { … }",
    )
    .register(engine, "weight", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| {
            price_of(r, sym)?;
            let value = r.view.asset(sym).map_err(bad)?.value().unwrap_or_default();
            let total = r.view.portfolio_value();
            Ok(if total.is_zero() { Decimal::ZERO } else { value / total })
        })
    });
    doc(
        Treasury,
        &["sym: String"],
        "bool",
        "Whether the module has a tier-1 budget for `sym`.",
        UNKNOWN_TOKEN,
        "if has_budget(\"USDC\") { … }",
    )
    .register(engine, "has_budget", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| Ok(r.view.asset(sym).map_err(bad)?.budget_remaining.is_some()))
    });
    doc(
        Treasury,
        &["sym: String"],
        "Decimal",
        "What tier 1 may still move of `sym` in the module's current budget period, whole tokens,\nexact. A payment above it escalates to the root.",
        "`sym` is unknown, or has no budget in the module.",
        "let room = budget_remaining(\"USDC\");",
    )
    .register(engine, "budget_remaining", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| {
            r.view
                .asset(sym)
                .map_err(bad)?
                .budget_remaining
                .ok_or_else(|| bad(format!("{sym} has no budget in the module")))
        })
    });
    doc(
        History,
        &["to: String", "token: String", "period: String"],
        "Decimal",
        "What this policy already paid `to` (a name or address-book address) in `token` during the\ncurrent `period` (`block`, `day`, `week` or `month`, UTC), in whole tokens, exact.",
        "unknown recipient or token; unknown period.",
        "if paid(\"alice\", \"USDC\", \"month\") == 0 { pay(\"alice\", \"USDC\", 5000); }",
    )
    .register(engine, "paid", |ctx: NativeCallContext, to: &str, token: &str, period: &str| {
        with_ctx(&ctx, |r| {
            let (addr, _) = r.view.book.recipient(to).map_err(bad)?;
            r.view.book.token(token).map_err(bad)?;
            Ok(r.paid(Some(addr), token, period_arg(period)?))
        })
    });
    doc(
        History,
        &["token: String", "period: String"],
        "Decimal",
        "What this policy already paid anyone in `token` during the current `period`, whole tokens.",
        "unknown token; unknown period.",
        "let left = dec(\"20000\") - paid_total(\"USDC\", \"month\");",
    )
    .register(engine, "paid_total", |ctx: NativeCallContext, token: &str, period: &str| {
        with_ctx(&ctx, |r| {
            r.view.book.token(token).map_err(bad)?;
            Ok(r.paid(None, token, period_arg(period)?))
        })
    });
    doc(
        Money,
        &["v: Dynamic"],
        "Decimal",
        "A money value from an integer, a decimal or a decimal string (`dec(\"0.1\")`), exact; up\nto 28 significant digits.",
        "a float (`0.1` is not money: write `dec(\"0.1\")`), or text that is not a number.",
        "pay(\"alice\", \"USDC\", dec(\"1250.50\"));",
    )
    .register(engine, "dec", |ctx: NativeCallContext, v: Dynamic| {
        with_ctx(&ctx, |_| amount_from_script(&v, "dec() argument").map_err(bad))
    });
}

fn price_of(r: &RunCtx, sym: &str) -> Result<crate::view::PriceView, Fault> {
    r.view.asset(sym).map_err(bad)?.price.ok_or_else(|| bad(format!("{sym} has no price feed")))
}

fn register_calendar(engine: &mut Engine) {
    doc(
        Section::Calendar,
        &["period: String"],
        "String",
        "The key of the current `period` at the pinned block: `2025-01-31` (day), `2025-W05`\n(ISO week), `2025-01` (month) or `block-123`.",
        "unknown period (not `block`, `day`, `week` or `month`).",
        "let k = period_key(\"month\");",
    )
    .register(engine, "period_key", |ctx: NativeCallContext, p: &str| {
        with_ctx(&ctx, |r| Ok(r.period_key(period_arg(p)?)))
    });
    type Field = fn(Calendar) -> INT;
    let fields: [(&str, Field, &str, &str); 6] = [
        ("year", Calendar::year, "The year of the pinned block's time (UTC).", "if year() < 2027 { … }"),
        (
            "month",
            Calendar::month,
            "The month of the pinned block's time, 1–12 (UTC).",
            "if month() == 12 { … }",
        ),
        (
            "day_of_month",
            Calendar::day_of_month,
            "The day of the month of the pinned block's time, 1–31 (UTC).",
            "if day_of_month() == 1 { … }",
        ),
        (
            "days_in_month",
            Calendar::days_in_month,
            "How many days the pinned block's month has, 28–31.",
            "if day_of_month() == days_in_month() { … }",
        ),
        (
            "weekday",
            Calendar::weekday,
            "The ISO weekday of the pinned block's time: Monday = 1 … Sunday = 7 (UTC).",
            "if weekday() == 5 { … }",
        ),
        (
            "hour",
            Calendar::hour,
            "The hour of the pinned block's time, 0–23 (UTC).",
            "if hour() < 9 { return; }",
        ),
    ];
    for (name, field, text, example) in fields {
        doc(Section::Calendar, &[], "int", text, "none.", example).register(
            engine,
            name,
            move |ctx: NativeCallContext| with_ctx(&ctx, |r| Ok(field(r.calendar()))),
        );
    }
}

const PAY: FnDoc = doc(
    Section::Intents,
    &["to: String", "token: String", "amount: Decimal"],
    "()",
    "Asks for a payment of `amount` `token` to `to` (an address-book name, or an address in the\n\
     book). The amount is rounded toward zero to the token's decimals. The intent's idempotency key\n\
     is `POLICY:TRIGGER:PERIOD_KEY:pay:TOKEN:0xADDRESS` (a second identical payment in one run gets\n\
     `#2`), so a policy paying once per period pays once however often it runs. Options\n\
     `#{ memo: \"…\", key: \"…\" }`: a memo for the journal, and a key of your own (`POLICY:key`).",
    "unknown recipient or token; an amount ≤ 0, one that rounds to 0, or a float; the same key twice;\n\
     an unknown option; more than `max_intents` intents.",
    "pay(\"alice\", \"USDC\", 5000, #{ memo: \"salary\" });",
);

const SWAP: FnDoc = doc(
    Section::Intents,
    &["sell: String", "buy: String", "amount: Decimal", "max_slippage: Decimal"],
    "()",
    "Asks to sell `amount` of `sell` for `buy` through the configured router. The planner sets the\n\
     minimum received from the oracle prices at the pinned block, less `max_slippage` (a fraction\n\
     between 0 and 1, e.g. `dec(\"0.005\")`). Amount rounding, keys and options as for `pay`.",
    "unknown token; selling and buying the same token; a bad amount; `max_slippage` outside (0, 1);\n\
     as for `pay`.",
    "swap(\"WETH\", \"USDC\", dec(\"2.5\"), dec(\"0.01\"));",
);

const REBALANCE: FnDoc = doc(
    Section::Intents,
    &["targets: Map", "band: Decimal", "max_slippage: Decimal"],
    "()",
    "Asks for the swaps that bring the Safe's priced assets to `targets` (symbol → weight, e.g.\n\
     `#{ USDC: dec(\"0.6\"), WETH: dec(\"0.4\") }`) when an asset's weight is off by more than `band`.\n\
     One swap intent per leg, memo `rebalance SELL → BUY`; with a `key` option each leg's key is\n\
     `KEY:SELL-BUY`.",
    "an unknown token or an unpriced asset in `targets`; weights that are not numbers; as for `swap`.",
    "rebalance(#{ USDC: dec(\"0.6\"), WETH: dec(\"0.4\") }, dec(\"0.05\"), dec(\"0.01\"));",
);

const ALERT: FnDoc = doc(
    Section::Intents,
    &["message: String"],
    "()",
    "Raises an alert: journaled and sent to the webhooks; moves no funds. Key and options as for\n\
     `pay` (`#{ key: \"…\" }` to raise it once per key).",
    "more than `max_intents` intents; an unknown option.",
    "alert(\"USDC runway under 3 months\");",
);

/// The same documentation for the overload that takes an options map last.
const fn with_opts(d: FnDoc, params: &'static [&'static str]) -> FnDoc {
    FnDoc { params, ..d }
}

fn register_intents(engine: &mut Engine) {
    let pay = |ctx: &NativeCallContext, to: &str, token: &str, amount: &Dynamic, opts: &Map| {
        with_ctx(ctx, |r| {
            let (addr, recipient) = r.view.book.recipient(to).map_err(bad)?;
            let amount = positive_amount(r, token, amount)?;
            let disc = format!("pay:{token}:{addr:#x}");
            let action = Action::Pay { to: addr, recipient, token: token.to_owned(), amount };
            r.push(action, Opts::parse(opts)?, disc)
        })
    };
    PAY.register(engine, "pay", move |ctx: NativeCallContext, to: &str, token: &str, amount: Dynamic| {
        pay(&ctx, to, token, &amount, &Map::new())
    });
    with_opts(PAY, &["to: String", "token: String", "amount: Decimal", "opts: Map"]).register(
        engine,
        "pay",
        move |ctx: NativeCallContext, to: &str, token: &str, amount: Dynamic, opts: Map| {
            pay(&ctx, to, token, &amount, &opts)
        },
    );

    let swap =
        |ctx: &NativeCallContext, sell: &str, buy: &str, amount: &Dynamic, slip: &Dynamic, opts: &Map| {
            with_ctx(ctx, |r| {
                r.view.book.token(buy).map_err(bad)?;
                if sell == buy {
                    return Err(bad(format!("swap sells and buys the same token {sell}")));
                }
                let amount = positive_amount(r, sell, amount)?;
                let max_slippage = fraction(slip, "max_slippage")?;
                let action = Action::Swap { sell: sell.into(), buy: buy.into(), amount, max_slippage };
                r.push(action, Opts::parse(opts)?, format!("swap:{sell}-{buy}"))
            })
        };
    SWAP.register(
        engine,
        "swap",
        move |ctx: NativeCallContext, sell: &str, buy: &str, amount: Dynamic, slip: Dynamic| {
            swap(&ctx, sell, buy, &amount, &slip, &Map::new())
        },
    );
    with_opts(
        SWAP,
        &["sell: String", "buy: String", "amount: Decimal", "max_slippage: Decimal", "opts: Map"],
    )
    .register(
        engine,
        "swap",
        move |ctx: NativeCallContext, sell: &str, buy: &str, amount: Dynamic, slip: Dynamic, opts: Map| {
            swap(&ctx, sell, buy, &amount, &slip, &opts)
        },
    );

    REBALANCE.register(
        engine,
        "rebalance",
        |ctx: NativeCallContext, t: Map, band: Dynamic, slip: Dynamic| {
            with_ctx(&ctx, |r| rebalance_intents(r, &t, &band, &slip, &Map::new()))
        },
    );
    with_opts(REBALANCE, &["targets: Map", "band: Decimal", "max_slippage: Decimal", "opts: Map"]).register(
        engine,
        "rebalance",
        |ctx: NativeCallContext, t: Map, band: Dynamic, slip: Dynamic, opts: Map| {
            with_ctx(&ctx, |r| rebalance_intents(r, &t, &band, &slip, &opts))
        },
    );

    ALERT.register(engine, "alert", |ctx: NativeCallContext, msg: &str| {
        with_ctx(&ctx, |r| r.push(alert(msg), Opts::default(), "alert".into()))
    });
    with_opts(ALERT, &["message: String", "opts: Map"]).register(
        engine,
        "alert",
        |ctx: NativeCallContext, msg: &str, opts: Map| {
            with_ctx(&ctx, |r| r.push(alert(msg), Opts::parse(&opts)?, "alert".into()))
        },
    );
}

fn alert(msg: &str) -> Action {
    Action::Alert { message: msg.to_owned() }
}

/// Plans a rebalance and pushes one swap intent per leg.
fn rebalance_intents(
    r: &RunCtx,
    targets: &Map,
    band: &Dynamic,
    slip: &Dynamic,
    opts: &Map,
) -> Result<(), Fault> {
    let mut weights = Vec::with_capacity(targets.len());
    for (sym, w) in targets {
        r.view.book.token(sym).map_err(bad)?;
        let w = amount_from_script(w, &format!("weight of {sym}")).map_err(bad)?;
        weights.push((sym.to_string(), w));
    }
    let band = amount_from_script(band, "band").map_err(bad)?;
    let max_slippage = fraction(slip, "max_slippage")?;
    let legs = rebalance::plan(&r.view, &weights, band).map_err(bad)?;
    let opts = Opts::parse(opts)?;
    for leg in legs {
        let decimals = r.view.book.token(&leg.sell).map_err(bad)?.decimals;
        let amount = leg
            .amount
            .round_dp_with_strategy(decimals.into(), rust_decimal::RoundingStrategy::ToZero)
            .normalize();
        if amount.is_zero() {
            continue;
        }
        let memo = opts.memo.clone().or_else(|| Some(format!("rebalance {} → {}", leg.sell, leg.buy)));
        let key = opts.key.as_ref().map(|k| format!("{k}:{}-{}", leg.sell, leg.buy));
        let disc = format!("rebalance:{}-{}", leg.sell, leg.buy);
        let action = Action::Swap { sell: leg.sell, buy: leg.buy, amount, max_slippage };
        r.push(action, Opts { memo, key }, disc)?;
    }
    Ok(())
}

/// Makes mixing floats into money arithmetic an error that names the line, instead of a silent
/// conversion or a confusing "function not found".
fn register_float_guards(engine: &mut Engine) {
    fn refuse(op: &str) -> RhaiResult<Dynamic> {
        Err(bad(format!("float in money arithmetic (`{op}`): write dec(\"…\") or an integer instead")).into())
    }
    let text = "Arithmetic and comparison between money (Decimal) and a float is refused, never\nconverted: `0.1` is not money.";
    let errors = "always: write `dec(\"0.1\")` or an integer instead of the float.";
    for op in ["+", "-", "*", "/", "<", ">", "<=", ">=", "==", "!="] {
        doc(
            Section::Money,
            &["a: Decimal", "b: float"],
            "Decimal",
            text,
            errors,
            "balance(\"USDC\") * dec(\"0.1\")",
        )
        .register(engine, op, move |_: Decimal, _: rhai::FLOAT| refuse(op));
        doc(
            Section::Money,
            &["a: float", "b: Decimal"],
            "Decimal",
            text,
            errors,
            "balance(\"USDC\") * dec(\"0.1\")",
        )
        .register(engine, op, move |_: rhai::FLOAT, _: Decimal| refuse(op));
    }
}
