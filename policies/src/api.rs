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

fn register_view(engine: &mut Engine) {
    engine.register_fn("block_number", |ctx: NativeCallContext| {
        with_ctx(&ctx, |r| Ok(r.view.block_number as INT))
    });
    engine.register_fn("timestamp", |ctx: NativeCallContext| with_ctx(&ctx, |r| Ok(r.view.timestamp as INT)));
    engine.register_fn("chain_id", |ctx: NativeCallContext| with_ctx(&ctx, |r| Ok(r.view.chain_id as INT)));
    engine.register_fn("balance", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| Ok(r.view.asset(sym).map_err(bad)?.balance))
    });
    engine.register_fn("has_price", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| Ok(r.view.asset(sym).map_err(bad)?.price.is_some()))
    });
    engine.register_fn("price", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| price_of(r, sym).map(|p| p.price))
    });
    engine.register_fn("price_age", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| price_of(r, sym).map(|p| p.age_secs as INT))
    });
    engine.register_fn("price_stale", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| price_of(r, sym).map(|p| p.stale))
    });
    engine.register_fn("value", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| {
            price_of(r, sym)?;
            r.view.asset(sym).map_err(bad)?.value().ok_or_else(|| bad("value overflows"))
        })
    });
    engine.register_fn("portfolio_value", |ctx: NativeCallContext| {
        with_ctx(&ctx, |r| Ok(r.view.portfolio_value()))
    });
    engine.register_fn("weight", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| {
            price_of(r, sym)?;
            let value = r.view.asset(sym).map_err(bad)?.value().unwrap_or_default();
            let total = r.view.portfolio_value();
            Ok(if total.is_zero() { Decimal::ZERO } else { value / total })
        })
    });
    engine.register_fn("has_budget", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| Ok(r.view.asset(sym).map_err(bad)?.budget_remaining.is_some()))
    });
    engine.register_fn("budget_remaining", |ctx: NativeCallContext, sym: &str| {
        with_ctx(&ctx, |r| {
            r.view
                .asset(sym)
                .map_err(bad)?
                .budget_remaining
                .ok_or_else(|| bad(format!("{sym} has no budget in the module")))
        })
    });
    engine.register_fn("paid", |ctx: NativeCallContext, to: &str, token: &str, period: &str| {
        with_ctx(&ctx, |r| {
            let (addr, _) = r.view.book.recipient(to).map_err(bad)?;
            r.view.book.token(token).map_err(bad)?;
            Ok(r.paid(Some(addr), token, period_arg(period)?))
        })
    });
    engine.register_fn("paid_total", |ctx: NativeCallContext, token: &str, period: &str| {
        with_ctx(&ctx, |r| {
            r.view.book.token(token).map_err(bad)?;
            Ok(r.paid(None, token, period_arg(period)?))
        })
    });
    engine.register_fn("dec", |ctx: NativeCallContext, v: Dynamic| {
        with_ctx(&ctx, |_| amount_from_script(&v, "dec() argument").map_err(bad))
    });
}

fn price_of(r: &RunCtx, sym: &str) -> Result<crate::view::PriceView, Fault> {
    r.view.asset(sym).map_err(bad)?.price.ok_or_else(|| bad(format!("{sym} has no price feed")))
}

fn register_calendar(engine: &mut Engine) {
    engine.register_fn("period_key", |ctx: NativeCallContext, p: &str| {
        with_ctx(&ctx, |r| Ok(r.period_key(period_arg(p)?)))
    });
    type Field = fn(Calendar) -> INT;
    let fields: [(&str, Field); 6] = [
        ("year", Calendar::year),
        ("month", Calendar::month),
        ("day_of_month", Calendar::day_of_month),
        ("days_in_month", Calendar::days_in_month),
        ("weekday", Calendar::weekday),
        ("hour", Calendar::hour),
    ];
    for (name, field) in fields {
        engine.register_fn(name, move |ctx: NativeCallContext| with_ctx(&ctx, |r| Ok(field(r.calendar()))));
    }
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
    engine.register_fn("pay", move |ctx: NativeCallContext, to: &str, token: &str, amount: Dynamic| {
        pay(&ctx, to, token, &amount, &Map::new())
    });
    engine.register_fn(
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
    engine.register_fn(
        "swap",
        move |ctx: NativeCallContext, sell: &str, buy: &str, amount: Dynamic, slip: Dynamic| {
            swap(&ctx, sell, buy, &amount, &slip, &Map::new())
        },
    );
    engine.register_fn(
        "swap",
        move |ctx: NativeCallContext, sell: &str, buy: &str, amount: Dynamic, slip: Dynamic, opts: Map| {
            swap(&ctx, sell, buy, &amount, &slip, &opts)
        },
    );

    engine.register_fn("rebalance", |ctx: NativeCallContext, t: Map, band: Dynamic, slip: Dynamic| {
        with_ctx(&ctx, |r| rebalance_intents(r, &t, &band, &slip, &Map::new()))
    });
    engine.register_fn(
        "rebalance",
        |ctx: NativeCallContext, t: Map, band: Dynamic, slip: Dynamic, opts: Map| {
            with_ctx(&ctx, |r| rebalance_intents(r, &t, &band, &slip, &opts))
        },
    );

    engine.register_fn("alert", |ctx: NativeCallContext, msg: &str| {
        with_ctx(&ctx, |r| r.push(alert(msg), Opts::default(), "alert".into()))
    });
    engine.register_fn("alert", |ctx: NativeCallContext, msg: &str, opts: Map| {
        with_ctx(&ctx, |r| r.push(alert(msg), Opts::parse(&opts)?, "alert".into()))
    });
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
    for op in ["+", "-", "*", "/", "<", ">", "<=", ">=", "==", "!="] {
        engine.register_fn(op, move |_: Decimal, _: rhai::FLOAT| refuse(op));
        engine.register_fn(op, move |_: rhai::FLOAT, _: Decimal| refuse(op));
    }
}
