//! A private SoftHSM2 (configuration and token folder) for tests that run `treasury` against it,
//! and `treasury root serve` as a child process.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The SoftHSM2 PKCS#11 module installed by the Debian package `softhsm2`.
pub const MODULE: &str = treasury_devnet::softhsm::DEFAULT_MODULE;

/// A SoftHSM2 configuration and token folder of its own, removed on drop.
pub struct SoftHsm {
    dir: tempfile::TempDir,
    hsm: treasury_devnet::softhsm::SoftHsm,
    /// Path of its `softhsm2.conf` (for `SOFTHSM2_CONF`).
    pub conf: PathBuf,
}

impl SoftHsm {
    /// Creates the configuration and an empty token folder in a fresh temporary folder.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hsm = treasury_devnet::softhsm::SoftHsm::create(dir.path()).unwrap();
        let conf = hsm.conf.clone();
        Self { dir, hsm, conf }
    }

    /// The temporary folder (free for the test's other files).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `treasury ARGS` using this SoftHSM2, with the user and SO PINs in the environment.
    pub fn command(&self, pin: &str, so_pin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_treasury"));
        c.args(args).envs(self.hsm.env(pin, so_pin));
        c
    }
}

/// A running `treasury root serve`, killed on drop.
pub struct Service {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Service {
    /// Sends SIGTERM (as systemd stops a service) and waits for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        treasury_devnet::procs::send_sigterm(self.child.id()).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a prepared `treasury root serve …` command and waits for the address it prints.
pub fn serve(mut cmd: Command) -> Service {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url =
        line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
    Service { child, url }
}
