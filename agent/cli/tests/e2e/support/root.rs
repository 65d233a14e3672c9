//! The root signer for agent tests: a private SoftHSM2 token with the root key, and
//! `treasury root serve` as a process guarding one module.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;

use alloy::primitives::Address;

use super::softhsm::{MODULE, Service, SoftHsm, serve};

const PIN: &str = "515151";
const SO_PIN: &str = "97531111";

/// A SoftHSM2 token holding the root key, and the files of its service.
pub struct RootEnv {
    hsm: SoftHsm,
    /// The root key's address (register it in the module).
    pub address: Address,
}

/// A running `treasury root serve`.
pub type RootService = Service;

impl RootEnv {
    /// Creates the token and the root key with `treasury root init`.
    pub fn init() -> Self {
        let mut env = Self { hsm: SoftHsm::new(), address: Address::ZERO };
        let out = env.run(&["root", "init", "--token", "root-token", "--key", "root", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        env.address = v["address"].as_str().unwrap().parse().unwrap();
        env
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.hsm.command(PIN, SO_PIN, args)
    }

    /// The environment a process needs to use this SoftHSM2 (config path and module), plus `pin_var` = the PIN.
    pub fn env(&self, pin_var: &str) -> Vec<(String, String)> {
        vec![
            ("SOFTHSM2_CONF".into(), self.hsm.conf.display().to_string()),
            ("TREASURY_HSM_MODULE".into(), MODULE.into()),
            (pin_var.into(), PIN.into()),
        ]
    }

    /// Runs `treasury ARGS` with the HSM's environment; returns stdout, panicking on failure.
    pub fn run(&self, args: &[&str]) -> String {
        self.run_with(args, &[])
    }

    /// Like [`RootEnv::run`], with extra environment variables.
    pub fn run_with(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        let out = self.cmd(args).envs(envs.iter().copied()).output().unwrap();
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
            db = self.hsm.path().join("queue.sqlite").display(),
            address = self.address,
            recipients = recipients.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", "),
        );
        for (token, max_single, cap) in assets {
            text.push_str(&format!(
                "\n[[guard.assets]]\ntoken = \"{token}\"\nmax_single = \"{max_single}\"\nperiod_cap = \"{cap}\"\nperiod_secs = 86400\n"
            ));
        }
        text.push_str(&format!("\n{agent_entry}\n{approver_entry}\n"));
        let path = self.hsm.path().join("root.toml");
        std::fs::write(&path, text).unwrap();
        (path, agent, approver)
    }

    /// Starts `treasury root serve` on `listen` (`127.0.0.1:0` for any port).
    pub fn serve(&self, config: &std::path::Path, listen: &str) -> RootService {
        serve(self.cmd(&["root", "serve", "--config", config.to_str().unwrap(), "--listen", listen]))
    }
}
