//! `[[keeper.job]]` and `[keeper.automation]`: upkeeps the agent runs itself (Chainlink
//! Automation upkeeps, Gelato resolvers, fixed calls), written as text and checked into
//! [`KeeperJob`]s whose every problem names the job and the field.

use std::collections::BTreeSet;
use std::time::Duration;

use alloy::primitives::{Address, Bytes};
use serde::{Deserialize, Serialize};
use treasury_policies::Trigger;

use super::{Problem, units};

/// The selector of Gelato's `checker()`, the usual resolver calldata.
pub const GELATO_CHECKER: [u8; 4] = [0xcf, 0x53, 0x03, 0xcf];

/// A job as written in `[[keeper.job]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    /// Unique name (journal keys, metrics, API).
    pub name: String,
    /// `chainlink_upkeep`, `gelato_resolver` or `call`.
    pub kind: String,
    /// Upkeep contract (`chainlink_upkeep`) or the contract a call or a resolver's payload goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `checkData` passed to `checkUpkeep` / `checkLog` (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_data: Option<String>,
    /// The Gelato resolver contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    /// Calldata sent to the resolver (hex; default `checker()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker_data: Option<String>,
    /// Calldata of a `call` job (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Gas limit of the perform transaction (and of its simulation).
    pub gas_limit: u64,
    /// When the check runs: `every_blocks` (1 = every block), `schedule` (cron) or `on_log`.
    pub trigger: Trigger,
    /// `keeper` (the keeper's EOA, default) or `module` (through the Safe's module, tier 1).
    #[serde(default = "default_execute")]
    pub execute: String,
    /// Highest max fee per gas this job's perform may pay, in gwei (default: `keeper.max_fee_gwei`).
    #[serde(default, with = "units::gwei_opt", skip_serializing_if = "Option::is_none")]
    pub max_fee_gwei: Option<u128>,
    /// Most native coin this job may spend on gas per `spend_period`, in ether.
    #[serde(default, with = "ether_opt", skip_serializing_if = "Option::is_none")]
    pub spend_cap_eth: Option<u128>,
}

fn default_execute() -> String {
    "keeper".into()
}

/// `[keeper.automation]`: settings shared by every job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutomationSection {
    /// Most native coin all jobs together may spend on gas per `spend_period`, in ether.
    #[serde(with = "ether_opt", skip_serializing_if = "Option::is_none")]
    pub spend_cap_eth: Option<u128>,
    /// The period spending caps count over (`1day`, `1h`).
    #[serde(with = "humantime_serde")]
    pub spend_period: Duration,
    /// Alert when the keeper's balance covers fewer than this many performs (at their worst-case cost).
    pub low_balance_performs: u64,
    /// The most blocks caught up after an outage; older blocks are skipped with an alert naming them.
    pub max_catch_up_blocks: u64,
    /// Blocks a job waits after a reverting check or perform before it is checked again (doubled
    /// on each repeat, up to 64 times this).
    pub revert_backoff_blocks: u64,
}

impl Default for AutomationSection {
    fn default() -> Self {
        Self {
            spend_cap_eth: None,
            spend_period: Duration::from_secs(86_400),
            low_balance_performs: 10,
            max_catch_up_blocks: 256,
            revert_backoff_blocks: 4,
        }
    }
}

/// `(de)serialize_with` for an optional ether amount.
mod ether_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::units::ether")] u128);
        Option::<Wrap>::deserialize(d).map(|w| w.map(|w| w.0))
    }

    pub(super) fn serialize<S: Serializer>(wei: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match wei {
            Some(w) => super::units::ether::serialize(w, s),
            None => s.serialize_none(),
        }
    }
}

pub use treasury_policies::upkeep::JobKind;

/// Who sends a job's perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Execute {
    /// The keeper's own account (permissionless upkeeps).
    Keeper,
    /// The Safe, through the treasury module as a tier-1 call.
    Module,
}

/// One checked `[[keeper.job]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperJob {
    /// Unique name.
    pub name: String,
    /// What it checks and performs.
    pub kind: JobKind,
    /// When it is checked.
    pub trigger: Trigger,
    /// Who sends the perform.
    pub execute: Execute,
    /// Gas limit of the perform.
    pub gas_limit: u64,
    /// Highest max fee per gas, wei.
    pub max_fee_per_gas: u128,
    /// Most wei spent on gas per period.
    pub spend_cap_wei: Option<u128>,
}

/// A log trigger's `event` given as its topic0 hash (`0x` + 64 hex digits, as `treasury keeper
/// import chainlink` writes it when the registry holds only the hash).
fn raw_topic(event: &str) -> Option<alloy::primitives::B256> {
    (event.len() == 66 && event.starts_with("0x")).then(|| event.parse().ok()).flatten()
}

impl KeeperJob {
    /// The topic0 a log-triggered job listens to (from the event signature or its hash).
    pub fn topic0(&self) -> Option<alloy::primitives::B256> {
        match &self.trigger {
            Trigger::OnLog { event, .. } => raw_topic(event).or_else(|| self.trigger.topic0()),
            _ => None,
        }
    }

    /// The job as the signer nodes pin it, when its performs go through the module.
    pub fn pinned(&self) -> Option<treasury_policies::upkeep::PinnedJob> {
        (self.execute == Execute::Module).then(|| treasury_policies::upkeep::PinnedJob {
            name: self.name.clone(),
            job: self.kind.clone(),
            log: match &self.trigger {
                Trigger::OnLog { address, .. } => self.topic0().map(|t| (*address, t)),
                _ => None,
            },
            trigger: self.trigger.clone(),
        })
    }

    /// The most a single perform can cost: gas limit × fee ceiling, in wei.
    pub fn worst_case_wei(&self) -> u128 {
        u128::from(self.gas_limit).saturating_mul(self.max_fee_per_gas)
    }
}

/// `[keeper.automation]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomationConfig {
    /// Most wei all jobs may spend on gas per period.
    pub spend_cap_wei: Option<u128>,
    /// The period caps count over.
    pub spend_period: Duration,
    /// Alert when the balance covers fewer performs than this.
    pub low_balance_performs: u64,
    /// The most blocks caught up after an outage.
    pub max_catch_up_blocks: u64,
    /// Blocks a job rests after a revert (doubling).
    pub revert_backoff_blocks: u64,
}

/// Checks the automation settings.
pub(super) fn check_automation(p: &mut Vec<Problem>, a: AutomationSection) -> AutomationConfig {
    if a.spend_period.as_secs() == 0 {
        p.push(Problem::new("keeper.automation.spend_period", "must be at least 1s"));
    }
    for (key, value) in [
        ("keeper.automation.max_catch_up_blocks", a.max_catch_up_blocks),
        ("keeper.automation.revert_backoff_blocks", a.revert_backoff_blocks),
    ] {
        if value == 0 {
            p.push(Problem::new(key, "must be at least 1"));
        }
    }
    AutomationConfig {
        spend_cap_wei: a.spend_cap_eth,
        spend_period: a.spend_period,
        low_balance_performs: a.low_balance_performs,
        max_catch_up_blocks: a.max_catch_up_blocks,
        revert_backoff_blocks: a.revert_backoff_blocks,
    }
}

/// Checks every job; each problem's key is `keeper.job[NAME].FIELD` (or `keeper.job[INDEX]`
/// while the name itself is wrong).
pub(super) fn check_jobs(
    p: &mut Vec<Problem>,
    jobs: Vec<JobSection>,
    keeper_max_fee: u128,
) -> Vec<KeeperJob> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let label = if job.name.trim().is_empty() {
            p.push(Problem::new(format!("keeper.job[{i}].name"), "must not be empty"));
            format!("keeper.job[{i}]")
        } else {
            if !job.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
                p.push(Problem::new(
                    format!("keeper.job[{i}].name"),
                    format!("`{}`: use letters, digits, `_`, `-` and `.` only", job.name),
                ));
            }
            if !names.insert(job.name.clone()) {
                p.push(Problem::new(format!("keeper.job[{}].name", job.name), "is defined twice"));
            }
            format!("keeper.job[{}]", job.name)
        };
        if let Some(job) = check_job(p, &label, job, keeper_max_fee) {
            out.push(job);
        }
    }
    out
}

fn check_job(p: &mut Vec<Problem>, label: &str, job: JobSection, keeper_max_fee: u128) -> Option<KeeperJob> {
    let key = |field: &str| format!("{label}.{field}");
    let before = p.len();
    let kind = check_kind(p, label, &job);
    match &job.trigger {
        Trigger::Manual => p.push(Problem::new(
            key("trigger"),
            "`manual` is not a job trigger (use every_blocks, schedule or on_log)",
        )),
        Trigger::OnLog { event, .. } if raw_topic(event).is_some() => {}
        t => {
            if let Err(e) = t.validate() {
                p.push(Problem::new(key("trigger"), e.to_string()));
            }
        }
    }
    if matches!(job.trigger, Trigger::OnLog { .. }) && !matches!(kind, Some(JobKind::ChainlinkUpkeep { .. }))
    {
        p.push(Problem::new(
            key("trigger"),
            format!(
                "on_log needs kind = \"chainlink_upkeep\" (an ILogAutomation upkeep), not `{}`",
                job.kind
            ),
        ));
    }
    let execute = match job.execute.as_str() {
        "keeper" => Some(Execute::Keeper),
        "module" => Some(Execute::Module),
        other => {
            p.push(Problem::new(key("execute"), format!("`{other}`: expected \"keeper\" or \"module\"")));
            None
        }
    };
    if job.gas_limit < 21_000 || job.gas_limit > 30_000_000 {
        p.push(Problem::new(key("gas_limit"), "must be between 21000 and 30000000"));
    }
    let max_fee_per_gas = job.max_fee_gwei.unwrap_or(keeper_max_fee);
    if max_fee_per_gas == 0 {
        p.push(Problem::new(key("max_fee_gwei"), "must be more than 0"));
    } else if max_fee_per_gas > keeper_max_fee {
        p.push(Problem::new(key("max_fee_gwei"), "must not be above keeper.max_fee_gwei (the sender's cap)"));
    }
    if job.spend_cap_eth == Some(0) {
        p.push(Problem::new(key("spend_cap_eth"), "must be more than 0 (leave it out for no cap)"));
    }
    if p.len() > before {
        return None;
    }
    Some(KeeperJob {
        name: job.name,
        kind: kind?,
        trigger: job.trigger,
        execute: execute?,
        gas_limit: job.gas_limit,
        max_fee_per_gas,
        spend_cap_wei: job.spend_cap_eth,
    })
}

fn check_kind(p: &mut Vec<Problem>, label: &str, job: &JobSection) -> Option<JobKind> {
    let key = |field: &str| format!("{label}.{field}");
    let mut addr = |field: &str, value: &Option<String>| -> Option<Address> {
        match value {
            None => {
                p.push(Problem::new(key(field), format!("required for kind = \"{}\"", job.kind)));
                None
            }
            Some(v) => super::file::address(p, &key(field), v),
        }
    };
    let (allowed, kind): (&[&str], Option<JobKind>) = match job.kind.as_str() {
        "chainlink_upkeep" => {
            let target = addr("target", &job.target);
            let check_data = hex_field(p, &key("check_data"), job.check_data.as_deref().unwrap_or("0x"));
            (
                &["target", "check_data"],
                target
                    .zip(check_data)
                    .map(|(target, check_data)| JobKind::ChainlinkUpkeep { target, check_data }),
            )
        }
        "gelato_resolver" => {
            let resolver = addr("resolver", &job.resolver);
            let target = addr("target", &job.target);
            let checker_data = match &job.checker_data {
                Some(d) => hex_field(p, &key("checker_data"), d),
                None => Some(Bytes::copy_from_slice(&GELATO_CHECKER)),
            };
            let kind = match (resolver, target, checker_data) {
                (Some(resolver), Some(target), Some(checker_data)) => {
                    Some(JobKind::GelatoResolver { resolver, checker_data, target })
                }
                _ => None,
            };
            (&["resolver", "checker_data", "target"], kind)
        }
        "call" => {
            let target = addr("target", &job.target);
            let data = match &job.data {
                Some(d) => hex_field(p, &key("data"), d),
                None => {
                    p.push(Problem::new(key("data"), "required for kind = \"call\""));
                    None
                }
            };
            (&["target", "data"], target.zip(data).map(|(target, data)| JobKind::Call { target, data }))
        }
        other => {
            p.push(Problem::new(
                key("kind"),
                format!("`{other}`: expected \"chainlink_upkeep\", \"gelato_resolver\" or \"call\""),
            ));
            return None;
        }
    };
    let given = [
        ("target", job.target.is_some()),
        ("check_data", job.check_data.is_some()),
        ("resolver", job.resolver.is_some()),
        ("checker_data", job.checker_data.is_some()),
        ("data", job.data.is_some()),
    ];
    for (field, set) in given {
        if set && !allowed.contains(&field) {
            p.push(Problem::new(key(field), format!("not used by kind = \"{}\"", job.kind)));
        }
    }
    kind
}

fn hex_field(p: &mut Vec<Problem>, key: &str, value: &str) -> Option<Bytes> {
    match value.parse::<Bytes>() {
        Ok(b) => Some(b),
        Err(e) => {
            p.push(Problem::new(key, format!("not hex bytes (0x…): {e}")));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ConfigFile;

    const BASE: &str = r#"
[chain]
rpc_http = "http://127.0.0.1:8545"
chain_id = 31337
[safe]
address = "0x1111111111111111111111111111111111111111"
module = "0x2222222222222222222222222222222222222222"
[signing]
quorum_file = "quorum.toml"
[keeper]
keystore = "keeper.json"
password_env = "KEEPER_PASSWORD"
max_fee_gwei = 100
"#;

    fn problems(jobs: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("quorum.toml"), "").unwrap();
        std::fs::write(dir.path().join("keeper.json"), "").unwrap();
        let file = ConfigFile::parse(&format!("{BASE}{jobs}")).unwrap();
        match file.check(dir.path()) {
            Ok(config) => {
                assert!(!config.keeper.jobs.is_empty());
                Vec::new()
            }
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_valid_job_of_each_kind_loads() {
        let jobs = r#"
[[keeper.job]]
name = "counter"
kind = "chainlink_upkeep"
target = "0x3333333333333333333333333333333333333333"
check_data = "0xbeef"
gas_limit = 200000
trigger = { kind = "every_blocks", blocks = 1 }
[[keeper.job]]
name = "resolver"
kind = "gelato_resolver"
resolver = "0x4444444444444444444444444444444444444444"
target = "0x5555555555555555555555555555555555555555"
gas_limit = 300000
trigger = { kind = "schedule", cron = "0 */5 * * * *" }
max_fee_gwei = 20
spend_cap_eth = "0.5"
[[keeper.job]]
name = "poke"
kind = "call"
target = "0x5555555555555555555555555555555555555555"
data = "0x12345678"
gas_limit = 50000
trigger = { kind = "every_blocks", blocks = 10 }
execute = "module"
[keeper.automation]
spend_cap_eth = 1
spend_period = "1day"
"#;
        assert_eq!(problems(jobs), Vec::<String>::new());
    }

    #[test]
    fn each_mistake_names_the_job_and_the_field() {
        let jobs = r#"
[[keeper.job]]
name = "counter"
kind = "chainlink_upkeep"
check_data = "0xzz"
gas_limit = 100
trigger = { kind = "manual" }
execute = "safe"
max_fee_gwei = 500
[[keeper.job]]
name = "counter"
kind = "gelato_resolver"
resolver = "0x4444444444444444444444444444444444444444"
target = "not an address"
data = "0x00"
gas_limit = 100000
trigger = { kind = "on_log", address = "0x4444444444444444444444444444444444444444", event = "Ping(uint256)" }
[[keeper.job]]
name = "x"
kind = "cron_job"
gas_limit = 100000
trigger = { kind = "every_blocks", blocks = 0 }
"#;
        let found = problems(jobs);
        let expect = [
            "keeper.job[counter].target: required for kind = \"chainlink_upkeep\"",
            "keeper.job[counter].check_data: not hex bytes",
            "keeper.job[counter].trigger: `manual` is not a job trigger",
            "keeper.job[counter].execute: `safe`",
            "keeper.job[counter].gas_limit: must be between 21000 and 30000000",
            "keeper.job[counter].max_fee_gwei: must not be above keeper.max_fee_gwei",
            "keeper.job[counter].name: is defined twice",
            "keeper.job[counter].target: not a valid address",
            "keeper.job[counter].data: not used by kind = \"gelato_resolver\"",
            "keeper.job[counter].trigger: on_log needs kind = \"chainlink_upkeep\"",
            "keeper.job[x].kind: `cron_job`",
        ];
        for e in expect {
            assert!(found.iter().any(|p| p.starts_with(e)), "missing `{e}` in {found:#?}");
        }
    }
}
