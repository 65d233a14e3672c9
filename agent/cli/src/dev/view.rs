//! What `treasury dev` shows: a line per set-up and scenario step (✓ or ✗, with its duration),
//! then a live view of intents, balances and weights redrawn every 500 ms on a terminal (a line
//! per intent state change otherwise).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::U256;
use serde::Serialize;
use treasury_chain::snapshot::{Snapshot, SnapshotSpec, read_snapshot};

use treasury_agent::journal::{IntentFilter, Journal};

/// One step of the set-up or the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// What it did.
    pub name: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// How long it took, ms.
    pub ms: u64,
    /// Its result or error.
    pub detail: String,
}

/// Step lines: on stdout, or on stderr when stdout carries the JSON summary.
#[derive(Debug)]
pub struct Progress {
    to_stderr: bool,
    tty: bool,
    current: Option<(String, Instant)>,
    /// Every finished step.
    pub steps: Vec<StepRecord>,
}

impl Progress {
    /// Step lines on stderr when `to_stderr` (JSON mode), else on stdout.
    pub fn new(to_stderr: bool) -> Self {
        use std::io::IsTerminal;
        let tty = if to_stderr { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
        Self { to_stderr, tty, current: None, steps: Vec::new() }
    }

    fn write(&self, text: &str, newline: bool) {
        let nl = if newline { "\n" } else { "" };
        if self.to_stderr {
            let mut e = std::io::stderr();
            let _ = write!(e, "{text}{nl}");
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout();
            let _ = write!(o, "{text}{nl}");
            let _ = o.flush();
        }
    }

    /// Starts a step; shows it as running on a terminal.
    pub fn start(&mut self, name: &str) -> Instant {
        if self.tty {
            self.write(&format!("  … {name}"), false);
        } else {
            self.write(&format!("  … {name}"), true);
        }
        let now = Instant::now();
        self.current = Some((name.to_string(), now));
        now
    }

    /// Finishes the running step.
    pub fn done(&mut self, started: Instant, detail: &str) {
        let name = self.current.take().map(|(n, _)| n).unwrap_or_default();
        let ms = started.elapsed().as_millis() as u64;
        let clear = if self.tty { "\r\x1b[2K" } else { "" };
        self.write(&format!("{clear}  ✓ {name:<52} {:>7}  {detail}", secs(ms)), true);
        self.steps.push(StepRecord { name, ok: true, ms, detail: detail.to_string() });
    }

    /// Marks the running step (if any) as failed with `error`.
    pub fn fail_current(&mut self, error: &str) {
        if let Some((name, t0)) = self.current.take() {
            let ms = t0.elapsed().as_millis() as u64;
            let clear = if self.tty { "\r\x1b[2K" } else { "" };
            self.write(&format!("{clear}  ✗ {name:<52} {:>7}  {error}", secs(ms)), true);
            self.steps.push(StepRecord { name, ok: false, ms, detail: error.to_string() });
        }
    }

    /// Records a step shown elsewhere (the scenario's steps appear in the live view).
    pub fn record(&mut self, name: &str, started: Instant, detail: &str, ok: bool) {
        let ms = started.elapsed().as_millis() as u64;
        self.steps.push(StepRecord { name: name.to_string(), ok, ms, detail: detail.to_string() });
    }

    /// Whether the step lines go to a terminal.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// A plain line.
    pub fn line(&self, text: &str) {
        self.write(text, true);
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// What the scenario tells the live view.
#[derive(Debug, Default)]
pub struct Shared {
    /// The state directory, shown in the header.
    pub dir: String,
    /// The child processes (`anvil 1234, signer node0 1240, …`), shown in the header.
    pub procs: String,
    /// Scenario events, oldest first.
    pub events: Mutex<Vec<String>>,
    /// A question for the operator: the view stops redrawing while it is asked.
    pub prompt: Mutex<Option<String>>,
}

impl Shared {
    /// Adds a scenario event.
    pub fn event(&self, text: impl Into<String>) {
        if let Ok(mut e) = self.events.lock() {
            e.push(text.into());
        }
    }
}

/// Renders the live view until `stop` turns true.
pub async fn live(
    journal: Journal,
    provider: alloy::providers::DynProvider,
    spec: SnapshotSpec,
    shared: Arc<Shared>,
    tty: bool,
    to_stderr: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen: BTreeMap<i64, String> = BTreeMap::new();
    let mut printed_events = 0;
    let mut paused = false;
    let mut last_round = false;
    loop {
        let prompt = shared.prompt.lock().ok().and_then(|p| p.clone());
        if tty {
            if !paused {
                let snap = read_snapshot(&provider, &spec, BlockNumberOrTag::Latest).await.ok();
                let screen = render(&journal, snap.as_ref(), &shared, prompt.as_deref()).await;
                let mut o = std::io::stdout();
                let _ = write!(o, "\x1b[H\x1b[2J{screen}");
                let _ = o.flush();
            }
            paused = prompt.is_some();
        } else {
            let events = shared.events.lock().map(|e| e.clone()).unwrap_or_default();
            for e in &events[printed_events..] {
                emit(to_stderr, &format!("  » {e}"));
            }
            printed_events = events.len();
            if let Ok(list) = journal.list(&IntentFilter { limit: Some(1000), ..Default::default() }).await {
                for i in list.iter().rev() {
                    let state = i.state.as_str().to_string();
                    if seen.get(&i.id.0) != Some(&state) {
                        emit(to_stderr, &format!("    intent #{} {} {}: {}", i.id, i.policy, i.kind, state));
                        seen.insert(i.id.0, state);
                    }
                }
            }
            if let Some(p) = &prompt
                && !paused
            {
                emit(to_stderr, p);
            }
            paused = prompt.is_some();
        }
        if last_round {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            // One more round, so the last events and states are shown (redrawn on a terminal).
            _ = stop.changed() => last_round = true,
        }
    }
}

fn emit(to_stderr: bool, line: &str) {
    if to_stderr {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

async fn render(journal: &Journal, snap: Option<&Snapshot>, shared: &Shared, prompt: Option<&str>) -> String {
    let mut s = String::new();
    s.push_str(&format!("treasury dev — Ctrl-C stops everything — state, logs, env.sh: {}\n", shared.dir));
    s.push_str(&format!("processes: {}\n\n", shared.procs));
    if let Some(snap) = snap {
        let when = utc_time(snap.timestamp);
        s.push_str(&format!(
            "chain   block {}  time {when}  module nonce {}\n",
            snap.block_number, snap.module_nonce
        ));
        s.push_str(&format!("\nSafe {}\n", snap.safe));
        let values: Vec<(String, f64, f64, Option<f64>)> = snap
            .assets
            .iter()
            .map(|a| {
                let amount = units(a.balance, a.decimals);
                let price = a.price.as_ref().map(|p| {
                    let raw: i128 = p.answer.try_into().unwrap_or(0);
                    raw as f64 / 10f64.powi(p.decimals as i32)
                });
                (a.symbol.clone(), amount, price.map(|p| p * amount).unwrap_or(0.0), price)
            })
            .collect();
        let eth_usdc: f64 = values.iter().filter(|v| v.0 == "ETH" || v.0 == "USDC").map(|v| v.2).sum();
        s.push_str(&format!(
            "  {:<6} {:>16} {:>12} {:>14} {:>14}\n",
            "asset", "balance", "price $", "value $", "weight ETH/USDC"
        ));
        for (sym, amount, value, price) in &values {
            let weight = if (sym == "ETH" || sym == "USDC") && eth_usdc > 0.0 {
                format!("{:.1}%", 100.0 * value / eth_usdc)
            } else {
                "-".into()
            };
            let price = price.map(|p| format!("{p:.2}")).unwrap_or_else(|| "-".into());
            s.push_str(&format!("  {sym:<6} {amount:>16.4} {price:>12} {value:>14.2} {weight:>14}\n"));
        }
    } else {
        s.push_str("chain   (not reachable)\n");
    }
    s.push_str("\nintents\n");
    match journal.list(&IntentFilter { limit: Some(20), ..Default::default() }).await {
        Ok(list) if list.is_empty() => s.push_str("  (none yet)\n"),
        Ok(list) => {
            for i in list.iter().rev() {
                s.push_str(&format!(
                    "  #{:<3} {:<13} {:<6} {:<14} {}\n",
                    i.id,
                    i.policy,
                    i.kind,
                    i.state.as_str(),
                    describe(&i.payload)
                ));
            }
        }
        Err(e) => s.push_str(&format!("  journal: {e}\n")),
    }
    if let Ok(alerts) = journal.alerts(3).await
        && !alerts.is_empty()
    {
        s.push_str("\nalerts\n");
        for a in alerts {
            s.push_str(&format!("  {}: {}\n", a.policy, a.message));
        }
    }
    s.push_str("\nscenario\n");
    let events = shared.events.lock().map(|e| e.clone()).unwrap_or_default();
    for e in events.iter().rev().take(8).rev() {
        s.push_str(&format!("  {e}\n"));
    }
    if let Some(p) = prompt {
        s.push_str(&format!("\n{p}"));
    }
    s
}

/// A short description of an intent's payload (`8000 USDC → alice`).
pub fn describe(payload: &serde_json::Value) -> String {
    let a = payload.get("intent").unwrap_or(payload);
    let field = |k: &str| {
        a.get(k)
            .filter(|v| !v.is_null())
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
    };
    let memo = field("memo").map(|m| format!("  ({m})")).unwrap_or_default();
    if let (Some(to), Some(token), Some(amount)) =
        (field("recipient").or(field("to")), field("token"), field("amount"))
    {
        return format!("{amount} {token} → {to}{memo}");
    }
    if let (Some(sell), Some(buy), Some(amount)) = (field("sell"), field("buy"), field("amount")) {
        return format!("{amount} {sell} → {buy}{memo}");
    }
    field("message").unwrap_or_default()
}

/// A token amount in whole units, for display.
pub fn units(raw: U256, decimals: u8) -> f64 {
    let s = raw.to_string();
    s.parse::<f64>().unwrap_or(f64::MAX) / 10f64.powi(decimals as i32)
}

/// `YYYY-MM-DD hh:mm:ss UTC` from unix seconds.
pub fn utc_time(ts: u64) -> String {
    match i64::try_from(ts).ok().and_then(|t| chrono::DateTime::from_timestamp(t, 0)) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{ts} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_utc_calendar_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_795_900_000), "2026-11-28 21:06:40 UTC");
    }
}
