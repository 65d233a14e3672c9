//! Child processes of the devnet (anvil, signer nodes, the root service, the agent), each with a log.
//!
//! Every child gets its own process group (a Ctrl-C in the terminal reaches `treasury dev` only,
//! which then stops them in order), is killed by the kernel if `treasury dev` dies without
//! cleaning up (started through `setpriv --pdeathsig KILL`), is killed when its handle is dropped,
//! and writes its stderr
//! (and whatever stdout follows its first line) to a log file in the state directory.

use std::path::Path;
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

    /// How many children were started.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no child was started.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Prefixes the names of the children started since the first `from` with `prefix` (one
    /// set-up run per treasury: `grants: anvil`).
    pub fn prefix_names(&mut self, from: usize, prefix: &str) {
        for p in self.list.iter_mut().skip(from) {
            p.name = format!("{prefix}{}", p.name);
        }
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
            interrupt(self.pid);
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

/// Sends SIGINT to `pid` (a child not yet reaped); an error means it is gone already.
fn interrupt(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGINT);
}

/// Sends SIGTERM to `pid` (a child not yet reaped), as systemd stops a service.
pub fn send_sigterm(pid: u32) -> anyhow::Result<()> {
    let pid = i32::try_from(pid)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)?;
    Ok(())
}

/// Sends SIGKILL to `pid` (a child not yet reaped): what a crash of its host looks like to it.
pub fn send_sigkill(pid: u32) -> anyhow::Result<()> {
    let pid = i32::try_from(pid)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
    Ok(())
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

fn launch(name: &str, cmd: Command, log: &Path) -> anyhow::Result<(Proc, Lines)> {
    // Truncated once, then opened for appending: stderr and the drained stdout share the file.
    std::fs::File::create(log).with_context(|| format!("creating the log {}", log.display()))?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .with_context(|| format!("opening the log {}", log.display()))?;
    let mut cmd = dying_with_parent(&cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(file)).kill_on_drop(true);
    cmd.process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let pid = child.id().context("child has no pid")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let p = Proc { name: name.to_string(), pid, child };
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

/// `cmd` run so that the kernel SIGKILLs it when the thread that started it (a runtime worker,
/// which lives as long as `treasury dev`) exits, so even a `kill -9` of `treasury dev` leaves no
/// child: util-linux's `setpriv` sets the parent-death signal, then executes the program in its
/// place (same pid), with `cmd`'s arguments, environment and working directory.
fn dying_with_parent(cmd: &Command) -> Command {
    let std = cmd.as_std();
    let mut wrapped = Command::new("setpriv");
    wrapped.args(["--pdeathsig", "KILL", "--"]).arg(std.get_program()).args(std.get_args());
    for (key, value) in std.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = std.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// Starts anvil on a free loopback port with its home (and `--config-out` with the dev
/// accounts) in `dir`; returns the process and its URL.
pub async fn anvil(dir: &Path, extra: &[String]) -> anyhow::Result<(Proc, String)> {
    let binary = crate::anvil::binary()?;
    let home = dir.join("anvil-home");
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let mut cmd = Command::new(&binary);
    cmd.args(crate::anvil::ARGS)
        .arg("--config-out")
        .arg(dir.join("anvil-accounts.json"))
        .args(extra)
        .env("HOME", &home);
    let (p, addr) =
        spawn("anvil", cmd, &dir.join("anvil.log"), Duration::from_secs(30), crate::anvil::listening_addr)
            .await?;
    Ok((p, format!("http://{addr}")))
}
