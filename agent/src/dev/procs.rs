//! The child processes of `treasury dev`: anvil, signer nodes, the root service and the agent.
//!
//! Every child gets its own process group (a Ctrl-C in the terminal reaches `treasury dev` only,
//! which then stops them in order), is killed by the kernel if `treasury dev` dies without
//! cleaning up (`PR_SET_PDEATHSIG`), is killed when its handle is dropped, and writes its stderr
//! (and whatever stdout follows its first line) to a log file in the state directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// One running child process.
#[derive(Debug)]
pub struct Proc {
    /// Short name shown to the user (`anvil`, `signer node0`, …).
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Its log file.
    pub log: PathBuf,
    child: Child,
}

/// The children of one `treasury dev` run, stopped in reverse start order.
#[derive(Debug, Default)]
pub struct Procs {
    list: Vec<Proc>,
}

impl Procs {
    /// Adds a started child.
    pub fn push(&mut self, p: Proc) {
        self.list.push(p);
    }

    /// Names and process ids of the running children.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.list.iter().map(|p| (p.name.clone(), p.pid)).collect()
    }

    /// The child named `name`, if it was started.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Proc> {
        self.list.iter_mut().find(|p| p.name == name)
    }

    /// Stops every child, last started first: SIGINT, up to `grace` to exit, then SIGKILL; each is
    /// waited for, so none is left behind (not even as a zombie).
    pub async fn stop_all(&mut self, grace: Duration) {
        while let Some(mut p) = self.list.pop() {
            p.stop(grace).await;
        }
    }
}

impl Proc {
    /// SIGINT, then SIGKILL after `grace`; waits for the exit.
    pub async fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if !grace.is_zero() {
            signal(self.pid, libc::SIGINT);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// Whether it exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) with a pid we own (our child, not yet reaped) has no memory effects.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Starts `cmd` without waiting for it: stderr and stdout go to `log`.
pub fn start(name: &str, cmd: Command, log: &Path) -> anyhow::Result<Proc> {
    let (p, lines) = launch(name, cmd, log)?;
    drain(lines, log);
    Ok(p)
}

/// Starts `cmd`, waits up to `timeout` for a stdout line that `ready` accepts and returns what
/// `ready` extracted from it. stderr and later stdout go to `log`.
pub async fn spawn(
    name: &str,
    cmd: Command,
    log: &Path,
    timeout: Duration,
    ready: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<(Proc, String)> {
    let (mut p, mut lines) = launch(name, cmd, log)?;
    let mut seen = Vec::new();
    let found = tokio::time::timeout(timeout, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(v) = ready(&line) {
                return Some(v);
            }
            seen.push(line);
        }
        None
    })
    .await;
    let value = match found {
        Ok(Some(v)) => v,
        other => {
            p.stop(Duration::ZERO).await;
            let why =
                if other.is_err() { "did not become ready in time" } else { "exited before it was ready" };
            let printed =
                if seen.is_empty() { String::new() } else { format!("; it printed: {}", seen.join(" | ")) };
            bail!("{name} {why} (log: {}){printed}", log.display());
        }
    };
    drain(lines, log);
    Ok((p, value))
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

fn launch(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<(Proc, Lines)> {
    // Truncated once, then opened for appending: stderr and the drained stdout share the file.
    std::fs::File::create(log).with_context(|| format!("creating the log {}", log.display()))?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .with_context(|| format!("opening the log {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(file)).kill_on_drop(true);
    cmd.process_group(0);
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let pid = child.id().context("child has no pid")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let p = Proc { name: name.to_string(), pid, log: log.to_path_buf(), child };
    Ok((p, BufReader::new(stdout).lines()))
}

/// Keeps draining stdout into the log so the child never blocks on a full pipe.
fn drain(mut lines: Lines, log: &Path) {
    let log = log.to_path_buf();
    tokio::spawn(async move {
        let mut out = tokio::fs::OpenOptions::new().append(true).open(&log).await.ok();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(f) = out.as_mut() {
                let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            }
        }
    });
}

/// Asks the kernel to SIGKILL the child when the thread that started it (a runtime worker, which
/// lives as long as `treasury dev`) exits, so even a `kill -9` of `treasury dev` leaves no child.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Starts anvil on a free loopback port with its home (and `--config-out` with the dev
/// accounts) in `dir`; returns the process and its URL.
pub async fn anvil(dir: &Path, extra: &[String]) -> anyhow::Result<(Proc, String)> {
    let binary = treasury_chain::artifacts::foundry_binary("anvil");
    if !binary.exists() {
        bail!("anvil not found at {}: run scripts/install.sh", binary.display());
    }
    let home = dir.join("anvil-home");
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let mut cmd = Command::new(&binary);
    cmd.args(["--port", "0", "--host", "127.0.0.1", "--prune-history", "64", "--config-out"])
        .arg(dir.join("anvil-accounts.json"))
        .args(extra)
        .env("HOME", &home);
    let (p, addr) = spawn("anvil", cmd, &dir.join("anvil.log"), Duration::from_secs(30), |l| {
        l.strip_prefix("Listening on ").map(|a| a.trim().to_string())
    })
    .await?;
    Ok((p, format!("http://{addr}")))
}
