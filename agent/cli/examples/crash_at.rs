//! Test helper: `treasury run --once` that kills itself with SIGKILL right after the journal
//! commits the state named by `TREASURY_CRASH_AT` (e.g. `submitted`), the first time it does.
//!
//! Crash-safety tests run it, then run the real `treasury run --once` on the same journal and
//! check every intent reaches exactly one outcome. It is an example, not part of the `treasury`
//! binary, so no fault injection ships.
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use treasury_agent::Agent;
use treasury_agent::config::Config;
use treasury_agent::journal::IntentState;
use treasury_agent::pipeline::runner::RunOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    treasury_agent::logging::init(1);
    let config: PathBuf = std::env::args().nth(1).expect("usage: crash_at CONFIG").into();
    let crash_at: IntentState = std::env::var("TREASURY_CRASH_AT")?.parse()?;
    let hook = Arc::new(move |state: IntentState| {
        if state == crash_at {
            eprintln!("crash_at: SIGKILL after entering {state}");
            let pid = std::process::id().to_string();
            let _ = std::process::Command::new("kill").args(["-9", &pid]).status();
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    });
    let config = Config::load(&config)?;
    let agent = Agent::start(&config, Some(hook)).await?;
    let (_stop, shutdown) = watch::channel(false);
    agent.run(RunOptions { once: true }, shutdown).await?;
    Ok(())
}
