//! The agent's and the sender's debug spans, timed from creation to close, for the benches.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, filter::Targets};

/// A closed span: its name, when it opened, and how long it was open.
#[derive(Debug, Clone)]
pub struct ClosedSpan {
    /// The span's name (`plan.facts`, `keeper.claim`, …).
    pub name: String,
    /// When it was created.
    pub opened: Instant,
    /// From creation to close.
    pub duration: Duration,
}

static CLOSED: Mutex<Vec<ClosedSpan>> = Mutex::new(Vec::new());

struct Timer;

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Timer {
    fn on_new_span(&self, _: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Instant::now());
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if let Some(opened) = span.extensions().get::<Instant>() {
            let closed =
                ClosedSpan { name: span.name().to_string(), opened: *opened, duration: opened.elapsed() };
            CLOSED.lock().unwrap().push(closed);
        }
    }
}

/// Times the debug spans of the agent and the sender (nothing else is recorded or printed).
pub fn install() {
    let targets = Targets::new()
        .with_target("treasury_agent", tracing::Level::DEBUG)
        .with_target("treasury_chain", tracing::Level::DEBUG);
    tracing_subscriber::registry().with(targets).with(Timer).init();
}

/// The spans closed since the last call.
pub fn take() -> Vec<ClosedSpan> {
    std::mem::take(&mut *CLOSED.lock().unwrap())
}
