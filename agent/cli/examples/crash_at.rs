//! Test helper: `treasury run --once` that kills itself with SIGKILL right after the journal
//! commits the state named by `TREASURY_CRASH_AT` (e.g. `submitted`), the first time it does; or,
//! with `TREASURY_PAUSE_AT`, holds its step there (printing `crash_at: paused after entering
//! STATE`) until the file named by `TREASURY_RESUME_FILE` exists, so a test can SIGSTOP the whole
//! process at that point (a replica paused past its lease) and later SIGCONT it and let it go on.
//!
//! Crash-safety tests run it, then run the real `treasury run --once` on the same journal and
//! check every intent reaches exactly one outcome. On a PostgreSQL journal it runs as a replica
//! (it waits for the lease and prints `leading term N` / `deposed from term N`, as `treasury run`
//! does). It is an example, not part of the `treasury` binary, so no fault injection ships.
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use treasury_agent::Agent;
use treasury_agent::config::Config;
use treasury_agent::journal::IntentState;
use treasury_agent::pipeline::runner::RunOptions;
use treasury_agent::replica::{self, ReplicaEvent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    treasury_agent::logging::init(1);
    let config: PathBuf = std::env::args().nth(1).expect("usage: crash_at CONFIG").into();
    let (at, pause) = match (std::env::var("TREASURY_CRASH_AT"), std::env::var("TREASURY_PAUSE_AT")) {
        (Ok(state), _) => (state, None),
        (_, Ok(state)) => (state, Some(PathBuf::from(std::env::var("TREASURY_RESUME_FILE")?))),
        _ => anyhow::bail!("set TREASURY_CRASH_AT or TREASURY_PAUSE_AT to an intent state"),
    };
    if at.starts_with("keeper_") {
        return crash_in_keeper_job(&config, at).await;
    }
    let at: IntentState = at.parse()?;
    let fired = AtomicBool::new(false);
    let hook = Arc::new(move |state: IntentState| {
        if state != at || fired.swap(true, Ordering::SeqCst) {
            return;
        }
        match &pause {
            None => {
                eprintln!("crash_at: SIGKILL after entering {state}");
                let pid = std::process::id().to_string();
                let _ = std::process::Command::new("kill").args(["-9", &pid]).status();
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
            Some(resume) => {
                eprintln!("crash_at: paused after entering {state}");
                while !resume.exists() {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    });
    let config = Config::load(&config)?;
    let (_stop, shutdown) = watch::channel(false);
    let options = RunOptions { once: true };
    if config.journal.is_replicated() {
        replica::run(&config, Some(hook), options, shutdown, |event| match event {
            ReplicaEvent::Leading { term } => println!("leading term {term}"),
            ReplicaEvent::Deposed { term } => println!("deposed from term {term}"),
        })
        .await?;
        return Ok(());
    }
    let agent = Agent::start(&config, Some(hook)).await?;
    agent.run(options, shutdown).await?;
    Ok(())
}

/// `TREASURY_CRASH_AT=keeper_submitted` or `keeper_broadcast`: SIGKILL right after a keeper job's
/// perform reaches that step (stored before its broadcast; accepted by the node), the first time.
async fn crash_in_keeper_job(config: &std::path::Path, at: String) -> anyhow::Result<()> {
    let fired = AtomicBool::new(false);
    let hook = Arc::new(move |step: &str| {
        if step != at || fired.swap(true, Ordering::SeqCst) {
            return;
        }
        eprintln!("crash_at: SIGKILL after keeper step {step}");
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill").args(["-9", &pid]).status();
        std::thread::sleep(std::time::Duration::from_secs(60));
    });
    let config = Config::load(config)?;
    let (_stop, shutdown) = watch::channel(false);
    let agent = Agent::start(&config, None).await?.with_job_hook(hook);
    agent.run(RunOptions { once: true }, shutdown).await?;
    Ok(())
}
