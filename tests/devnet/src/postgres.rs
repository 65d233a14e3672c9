//! A private PostgreSQL cluster in a temporary folder on a free loopback port, stopped and removed
//! on drop (the way [`crate::anvil::Anvil`] runs anvil).
//!
//! PostgreSQL refuses to run as root, and tests run as root in CI. When this process is root, the
//! cluster runs as the unprivileged `postgres` user (created by Debian's `postgresql` package,
//! which `scripts/install.sh` installs): the temporary folder is given to that user, and `initdb`,
//! `postgres` and `createdb` are started through util-linux's `setpriv --reuid/--regid/
//! --init-groups`, which switches user and then executes the program (no `unsafe` `pre_exec`).
//! Any other user runs the cluster as itself.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;

/// The environment variable naming the folder of PostgreSQL's server binaries.
pub const BINDIR_ENV: &str = "TREASURY_PG_BINDIR";

/// The superuser every private cluster is created with (trust authentication, loopback only).
pub const SUPERUSER: &str = "treasury";

/// The unprivileged account the cluster runs as when this process is root.
const RUN_AS: &str = "postgres";

/// The folder holding `initdb`, `postgres` and `createdb`: `TREASURY_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout), else the folder of `initdb` on the `PATH`.
pub fn bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("initdb")).find(|b| b.exists()))
        .unwrap_or_default();
    match on_path.and_then(|b| b.parent().map(Path::to_path_buf)) {
        Some(dir) => Ok(dir),
        None => bail!(
            "PostgreSQL's initdb not found (in /usr/lib/postgresql/*/bin or on the PATH): run \
             scripts/install.sh, or set {BINDIR_ENV}"
        ),
    }
}

/// A running private cluster. Dropping it stops the server (immediate shutdown) and removes the folder.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    port: u16,
    bindir: PathBuf,
    dir: TempDir,
}

impl Postgres {
    /// Creates a cluster with `initdb` in a temporary folder and starts it on a free loopback port,
    /// its unix socket in the same folder; returns once it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_at(tempfile::Builder::new().prefix("treasury-pg-").tempdir()?)
    }

    /// As [`Postgres::start`], the cluster in a new folder `postgres-*` of `parent` (a state
    /// folder), removed on drop. When this process is root the cluster runs as `postgres`, which
    /// cannot reach a folder below a private one (`/root`, a 0700 temporary folder): the cluster
    /// then goes to the system's temporary folder, as with [`Postgres::start`]; [`Postgres::dir`]
    /// says where it went.
    pub fn start_in(parent: &Path) -> anyhow::Result<Self> {
        if is_root() && !reachable_by_others(parent) {
            return Self::start();
        }
        let dir = tempfile::Builder::new()
            .prefix("postgres-")
            .tempdir_in(parent)
            .with_context(|| format!("creating the cluster's folder in {}", parent.display()))?;
        Self::start_at(dir)
    }

    fn start_at(dir: TempDir) -> anyhow::Result<Self> {
        let bindir = bindir()?;
        if is_root() {
            give_to_run_user(dir.path())?;
        }
        let data = dir.path().join("data");
        let initdb = as_cluster_user(&bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
            .stdout(Stdio::null())
            .output()
            .context("running initdb")?;
        if !initdb.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr).trim());
        }
        let port = free_port()?;
        let child = serve(&bindir, dir.path(), port)?;
        Ok(Self { child, port, bindir, dir })
    }

    /// Stops the server at once (as [`Postgres::stop`]: what a crash leaves) and starts it again
    /// on the same data and port; returns once it accepts connections. Call it from the thread
    /// that started the cluster (the parent-death signal follows the thread).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start_again()
    }

    /// Starts a server stopped with [`Postgres::stop`] again, on the same data and port.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.child = serve(&self.bindir, self.dir.path(), self.port)?;
        Ok(())
    }

    /// Creates database `name` and returns its URL (`postgres://treasury@127.0.0.1:PORT/name`).
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let out = as_cluster_user(&self.bindir.join("createdb"))
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, name])
            .output()
            .context("running createdb")?;
        if !out.status.success() {
            bail!("createdb {name} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(self.url(name))
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder (its data in `data/`, its unix socket beside).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown, the next start recovers from the
    /// write-ahead log) and waits for it.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT).is_err() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `postgres` on the cluster in `dir` (data in `dir/data`, socket in `dir`) on `port`;
/// returns once it accepts connections.
fn serve(bindir: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
    let mut child = as_cluster_user(&bindir.join("postgres"))
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting postgres")?;
    let stderr = child.stderr.take().expect("piped stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    // The server logs to stderr for as long as it runs: keep draining it so it never blocks.
    std::thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        let mut last = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready to accept connections")
                && let Some(tx) = ready_tx.take()
            {
                let _ = tx.send(Ok(()));
            }
            last = line;
        }
        if let Some(tx) = ready_tx.take() {
            let _ = tx.send(Err(last));
        }
    });
    match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => Ok(child),
        Ok(Err(last)) => {
            let _ = child.wait();
            bail!("postgres exited before accepting connections: {last}")
        }
        Err(_) => {
            let _ = child.kill();
            bail!("postgres did not accept connections within 30 s")
        }
    }
}

/// Whether every folder from `/` down to `dir` lets other users through (mode `o+x`).
fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(dir) = dir.canonicalize() else { return false };
    dir.ancestors().all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` run as the cluster's user: through `setpriv` as `postgres` when we are root, and
/// killed by the kernel if the thread that started it ends without stopping it (the parent-death
/// signal follows the thread: start a cluster from the thread that owns it).
fn as_cluster_user(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    if is_root() {
        command.args(["--reuid", RUN_AS, "--regid", RUN_AS, "--init-groups"]);
    }
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    command
}

/// Hands the cluster's folder to the unprivileged user (root keeps access, and removes it on drop).
fn give_to_run_user(dir: &Path) -> anyhow::Result<()> {
    let user =
        nix::unistd::User::from_name(RUN_AS).context("looking up the postgres user")?.with_context(|| {
            format!(
                "PostgreSQL refuses to run as root and there is no `{RUN_AS}` user to run it as \
                 (install Debian's postgresql package with scripts/install.sh, or: useradd --system {RUN_AS})"
            )
        })?;
    std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .with_context(|| format!("giving {} to {RUN_AS}", dir.display()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
