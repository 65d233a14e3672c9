//! A private anvil process on a free loopback port, killed and cleaned up on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;

/// The well-known anvil development keys (mnemonic "test test … junk"), first ten accounts.
pub const DEV_KEYS: [&str; 10] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// anvil's arguments for a private chain: a free loopback port, the last 64 states in memory.
pub const ARGS: [&str; 6] = ["--port", "0", "--host", "127.0.0.1", "--prune-history", "64"];

/// The installed anvil binary, or an error saying how to install it.
pub fn binary() -> anyhow::Result<PathBuf> {
    let binary = treasury_chain::tools::foundry_binary("anvil");
    if !binary.exists() {
        bail!(
            "anvil not found at {}: run scripts/install.sh in a treasury checkout and start there, or set {}",
            binary.display(),
            treasury_chain::tools::TOOLS_ENV
        );
    }
    Ok(binary)
}

/// The address in anvil's `Listening on ADDR` line.
pub fn listening_addr(line: &str) -> Option<String> {
    line.strip_prefix("Listening on ").map(|a| a.trim().to_string())
}

/// A running anvil keeping the last 64 states in memory and none on disk (`--prune-history 64`, so
/// recent past blocks stay readable). Dropping it kills the process and removes its private home folder
/// (where anvil keeps state files that would otherwise pile up under `~/.foundry`).
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    url: String,
    _home: TempDir,
}

impl Anvil {
    /// Starts anvil with `--prune-history` on a free port and waits until it listens.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts anvil with extra arguments (e.g. `["--no-mining"]`).
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        let binary = binary()?;
        let home = tempfile::Builder::new().prefix("treasury-anvil-").tempdir()?;
        // util-linux's `setpriv` makes the kernel kill anvil if the test process dies without
        // running destructors, then executes anvil in its place.
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&binary)
            .args(ARGS)
            .args(extra)
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (port_tx, port_rx) = mpsc::channel();
        // anvil writes to stdout for as long as it runs: keep draining it so it never blocks.
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match port_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                bail!("anvil did not report a listening address within 20 s");
            }
        };
        Ok(Self { child, url: format!("http://{addr}"), _home: home })
    }

    /// HTTP JSON-RPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// WebSocket URL of the same endpoint.
    pub fn ws_url(&self) -> String {
        self.url.replacen("http://", "ws://", 1)
    }

    /// The folder anvil uses as its home (state files live below it).
    pub fn home(&self) -> PathBuf {
        self._home.path().to_path_buf()
    }

    /// Kills anvil now (e.g. to test an endpoint that goes down).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.kill();
    }
}
