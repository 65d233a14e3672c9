//! The root signer for agent tests: a private SoftHSM2 token with the root key, and
//! `treasury root serve` as a process guarding one module.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use alloy::primitives::Address;

use super::EXE;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "515151";
const SO_PIN: &str = "97531111";

/// A SoftHSM2 token holding the root key, and the files of its service.
pub struct RootEnv {
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// The root key's address (register it in the module).
    pub address: Address,
}

/// A running `treasury root serve`.
pub struct RootService {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Drop for RootService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RootEnv {
    /// Creates the token and the root key with `treasury root init`.
    pub fn init() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        let text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.path().join("tokens").display()
        );
        std::fs::write(&conf, text).unwrap();
        let mut env = Self { dir, conf, address: Address::ZERO };
        let out = env.run(&["root", "init", "--token", "root-token", "--key", "root", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        env.address = v["address"].as_str().unwrap().parse().unwrap();
        env
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(EXE);
        c.args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("TREASURY_HSM_PIN", PIN)
            .env("TREASURY_HSM_SO_PIN", SO_PIN)
            .env("TREASURY_HSM_MODULE", MODULE);
        c
    }

    /// The environment a process needs to use this SoftHSM2 (config path and module), plus `pin_var` = the PIN.
    pub fn env(&self, pin_var: &str) -> Vec<(String, String)> {
        vec![
            ("SOFTHSM2_CONF".into(), self.conf.display().to_string()),
            ("TREASURY_HSM_MODULE".into(), MODULE.into()),
            (pin_var.into(), PIN.into()),
        ]
    }

    /// Runs `treasury ARGS` with the HSM's environment; returns stdout, panicking on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(out.status.success(), "treasury {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn new_token(&self, name: &str, role: &str) -> (String, String) {
        let out = self.cmd(&["root", "new-token", "--name", name, "--role", role]).output().unwrap();
        assert!(out.status.success());
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Writes the service config guarding `module` on `chain_id`, for `assets` (token, max single
    /// amount, period cap, in token units) paid to `recipients`. Returns (config, requester token,
    /// approver token).
    pub fn config(
        &self,
        chain_id: u64,
        module: Address,
        assets: &[(Address, &str, &str)],
        recipients: &[Address],
    ) -> (PathBuf, String, String) {
        let (agent, agent_entry) = self.new_token("agent", "requester");
        let (approver, approver_entry) = self.new_token("carol", "approver");
        let mut text = format!(
            "db = \"{db}\"\napproval_ttl_secs = 3600\nretry_interval_ms = 50\n\n[hsm]\nmodule = \"{MODULE}\"\ntoken = \"root-token\"\nkey = \"root\"\naddress = \"{address}\"\n\n[guard]\nrecipients = [{recipients}]\n\n[[guard.modules]]\nchain_id = {chain_id}\nmodule = \"{module}\"\n",
            db = self.dir.path().join("queue.sqlite").display(),
            address = self.address,
            recipients = recipients.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", "),
        );
        for (token, max_single, cap) in assets {
            text.push_str(&format!(
                "\n[[guard.assets]]\ntoken = \"{token}\"\nmax_single = \"{max_single}\"\nperiod_cap = \"{cap}\"\nperiod_secs = 86400\n"
            ));
        }
        text.push_str(&format!("\n{agent_entry}\n{approver_entry}\n"));
        let path = self.dir.path().join("root.toml");
        std::fs::write(&path, text).unwrap();
        (path, agent, approver)
    }

    /// Starts `treasury root serve` on `listen` (`127.0.0.1:0` for any port).
    pub fn serve(&self, config: &std::path::Path, listen: &str) -> RootService {
        let mut child = self
            .cmd(&["root", "serve", "--config", config.to_str().unwrap(), "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected: {line}"))
            .to_owned();
        RootService { child, url }
    }
}
