//! The policy section of the agent's config: tokens, named addresses, policies and their triggers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use alloy::primitives::{Address, B256, keccak256};
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::period::Period;

/// Everything the policies need from config; the agent's TOML embeds it (e.g. under `[policies]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Sandbox limits applied to every policy.
    #[serde(default)]
    pub limits: Limits,
    /// Tokens scripts may name, by symbol.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenEntry>,
    /// Named addresses (recipients, keepers) scripts may name.
    #[serde(default)]
    pub addresses: BTreeMap<String, Address>,
    /// The policies to run.
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyEntry>,
}

/// One token of the config's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Contract address, or the zero address for native ETH.
    pub address: Address,
    /// Decimals of the smallest unit.
    pub decimals: u8,
    /// Chainlink-style USD price feed, if the token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<Address>,
    /// Age in seconds past which the feed's price counts as stale.
    #[serde(default = "default_max_price_age")]
    pub max_price_age: u64,
}

fn default_max_price_age() -> u64 {
    3_600
}

/// One policy: a script and what triggers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    /// Unique name, used in logs, errors and idempotency keys.
    pub name: String,
    /// The Rhai script, relative to the config file's directory.
    pub file: PathBuf,
    /// What makes it run.
    pub trigger: Trigger,
    /// The period default idempotency keys are scoped to (default: `day`).
    #[serde(default)]
    pub period: Period,
    /// Fixture files (relative to the config file's directory) a new version of the script must
    /// pass before `treasury run` loads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixtures: Vec<PathBuf>,
}

/// What makes a policy run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A cron schedule with seconds (`sec min hour day-of-month month day-of-week`), in UTC.
    Schedule {
        /// The cron expression, e.g. `0 0 9 1 * *`.
        cron: String,
    },
    /// Every `blocks` blocks.
    EveryBlocks {
        /// Interval in blocks (at least 1).
        blocks: u64,
    },
    /// A log emitted by a contract.
    OnLog {
        /// The emitting contract.
        address: Address,
        /// The event signature, e.g. `Transfer(address,address,uint256)`.
        event: String,
    },
    /// Only when asked (keeper API or CLI).
    Manual,
}

impl Trigger {
    /// Short name of the trigger kind, as used in idempotency keys.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Schedule { .. } => "schedule",
            Trigger::EveryBlocks { .. } => "every_blocks",
            Trigger::OnLog { .. } => "on_log",
            Trigger::Manual => "manual",
        }
    }

    /// Checks the trigger is well formed (cron parses, interval positive, event signature valid).
    pub fn validate(&self) -> Result<()> {
        match self {
            Trigger::Schedule { cron } => self::schedule(cron).map(drop),
            Trigger::EveryBlocks { blocks: 0 } => {
                Err(PolicyError::Config("every_blocks must be at least 1".into()))
            }
            Trigger::OnLog { event, .. } => event_topic(event).map(drop),
            Trigger::EveryBlocks { .. } | Trigger::Manual => Ok(()),
        }
    }

    /// Whether the trigger fires for a block at `timestamp`, given the previous block's timestamp.
    ///
    /// A schedule fires on the first block at or after each cron instant; `on_log` and `manual`
    /// never fire from blocks alone.
    pub fn fires_at(&self, block: u64, timestamp: u64, prev_timestamp: u64) -> bool {
        match self {
            Trigger::EveryBlocks { blocks } => *blocks > 0 && block.is_multiple_of(*blocks),
            Trigger::Schedule { cron } => schedule(cron).is_ok_and(|s| {
                let prev = crate::period::utc(prev_timestamp);
                s.after(&prev).next().is_some_and(|t| t <= crate::period::utc(timestamp))
            }),
            Trigger::OnLog { .. } | Trigger::Manual => false,
        }
    }

    /// The log topic the trigger listens to, for `on_log`.
    pub fn topic0(&self) -> Option<B256> {
        match self {
            Trigger::OnLog { event, .. } => event_topic(event).ok(),
            _ => None,
        }
    }
}

/// Parses a cron expression with seconds.
fn schedule(expr: &str) -> Result<cron::Schedule> {
    cron::Schedule::from_str(expr)
        .map_err(|e| PolicyError::Config(format!("bad cron expression `{expr}`: {e}")))
}

/// The topic0 of an event signature such as `Transfer(address,address,uint256)`.
fn event_topic(sig: &str) -> Result<B256> {
    let event = alloy::json_abi::Event::parse(sig)
        .map_err(|e| PolicyError::Config(format!("bad event signature `{sig}`: {e}")))?;
    Ok(keccak256(event.signature()))
}

/// Sandbox limits; every breach stops the script with an error naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Operations per evaluation.
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_depth: usize,
    /// Bytes of one string.
    pub max_string_size: usize,
    /// Elements of one array.
    pub max_array_size: usize,
    /// Entries of one map.
    pub max_map_size: usize,
    /// Intents per evaluation.
    pub max_intents: usize,
    /// Variables in scope.
    pub max_variables: usize,
}

impl Limits {
    /// Refuses a limit of 0, which Rhai reads as "no limit".
    pub fn validate(&self) -> Result<()> {
        let l = self;
        let named = [
            ("max_operations", l.max_operations),
            ("max_call_depth", l.max_call_depth as u64),
            ("max_string_size", l.max_string_size as u64),
            ("max_array_size", l.max_array_size as u64),
            ("max_map_size", l.max_map_size as u64),
            ("max_intents", l.max_intents as u64),
            ("max_variables", l.max_variables as u64),
        ];
        match named.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(PolicyError::Config(format!(
                "limits.{name} = 0 would lift the limit (the sandbox reads 0 as unlimited); set a positive value"
            ))),
            None => Ok(()),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 50_000,
            max_call_depth: 32,
            max_string_size: 4_096,
            max_array_size: 1_024,
            max_map_size: 256,
            max_intents: 64,
            max_variables: 256,
        }
    }
}

impl PoliciesConfig {
    /// What a snapshot reads for every configured token.
    pub fn asset_specs(&self) -> Vec<treasury_chain::snapshot::AssetSpec> {
        self.tokens
            .iter()
            .map(|(symbol, t)| treasury_chain::snapshot::AssetSpec {
                symbol: symbol.clone(),
                token: t.address,
                decimals: t.decimals,
                feed: t.feed,
                max_price_age_secs: t.max_price_age,
            })
            .collect()
    }

    /// Reads a TOML file holding either only the policies section, or the agent's whole config
    /// (whose `[policies]` table is then read and every other section ignored).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.into(), source })?;
        let config_error = |e: toml::de::Error| PolicyError::Config(format!("{}: {e}", path.display()));
        let mut table: toml::Table = toml::from_str(&text).map_err(config_error)?;
        let cfg: Self = match table.remove("policies") {
            Some(toml::Value::Table(section)) => section.try_into().map_err(config_error)?,
            _ => toml::from_str(&text).map_err(config_error)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks names are unique, triggers valid, token decimals representable and every sandbox
    /// limit positive.
    pub fn validate(&self) -> Result<()> {
        self.limits.validate()?;
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.policies {
            if !seen.insert(&p.name) {
                return Err(PolicyError::Config(format!("policy `{}` is defined twice", p.name)));
            }
            p.trigger.validate().map_err(|e| match e {
                PolicyError::Config(m) => PolicyError::Config(format!("policy `{}`: {m}", p.name)),
                other => other,
            })?;
        }
        for (sym, t) in &self.tokens {
            if t.decimals > crate::money::MAX_DECIMALS {
                return Err(PolicyError::Config(format!(
                    "token {sym}: {} decimals is more than {} supported",
                    t.decimals,
                    crate::money::MAX_DECIMALS
                )));
            }
        }
        Ok(())
    }

    /// The policy entry named `name`.
    pub fn policy(&self, name: &str) -> Option<&PolicyEntry> {
        self.policies.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_trigger_kind_from_toml() {
        let cfg: PoliciesConfig = toml::from_str(
            r#"
            [tokens.USDC]
            address = "0x0000000000000000000000000000000000000001"
            decimals = 6
            [addresses]
            alice = "0x00000000000000000000000000000000000000a1"
            [[policy]]
            name = "payroll"
            file = "payroll.rhai"
            period = "month"
            trigger = { kind = "schedule", cron = "0 0 9 1 * *" }
            [[policy]]
            name = "gas"
            file = "gas.rhai"
            trigger = { kind = "every_blocks", blocks = 100 }
            [[policy]]
            name = "derisk"
            file = "derisk.rhai"
            trigger = { kind = "on_log", address = "0x0000000000000000000000000000000000000002", event = "AnswerUpdated(int256,uint256,uint256)" }
            [[policy]]
            name = "dca"
            file = "dca.rhai"
            trigger = { kind = "manual" }
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.policies.len(), 4);
        assert_eq!(cfg.policies[0].period, Period::Month);
        assert_eq!(
            cfg.policies[2].trigger.topic0(),
            Some(keccak256("AnswerUpdated(int256,uint256,uint256)"))
        );
    }

    /// Issue 17: `treasury policy check --config treasury.toml` refused the agent's own config
    /// (`unknown field 'api'`); its `[policies]` section is read and the rest ignored.
    #[test]
    fn the_agents_whole_config_is_read_for_its_policies_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("treasury.toml");
        std::fs::write(
            &path,
            r#"
            [chain]
            rpc_http = "http://127.0.0.1:8545"
            chain_id = 31337
            [api]
            listen = "127.0.0.1:8080"
            token_env = "TREASURY_API_TOKEN"
            [policies.tokens.USDC]
            address = "0x0000000000000000000000000000000000000001"
            decimals = 6
            [policies.addresses]
            alice = "0x00000000000000000000000000000000000000a1"
            [[policies.policy]]
            name = "payroll"
            file = "payroll.rhai"
            trigger = { kind = "manual" }
            "#,
        )
        .unwrap();
        let cfg = PoliciesConfig::from_file(&path).expect("the agent's config is accepted");
        assert_eq!(cfg.tokens["USDC"].decimals, 6);
        assert_eq!(cfg.policies[0].name, "payroll");
        assert!(cfg.addresses.contains_key("alice"));

        std::fs::write(
            &path,
            format!(
                "[api]\nlisten = \"x\"\n[policies.tokens.USDC]\naddress = \"0x{}\"\ndecimalz = 6\n",
                "01".repeat(20)
            ),
        )
        .unwrap();
        let err = PoliciesConfig::from_file(&path).expect_err("a typo inside [policies] is still refused");
        assert!(err.to_string().contains("decimalz"), "{err}");
    }

    #[test]
    fn rejects_bad_cron_and_zero_interval() {
        assert!(Trigger::Schedule { cron: "every monday".into() }.validate().is_err());
        assert!(Trigger::EveryBlocks { blocks: 0 }.validate().is_err());
        assert!(Trigger::OnLog { address: Address::ZERO, event: "Transfer(".into() }.validate().is_err());
    }

    #[test]
    fn schedule_fires_on_first_block_past_instant() {
        let t = Trigger::Schedule { cron: "0 0 0 1 * *".into() }; // midnight on the 1st
        let midnight = 1_709_251_200; // 2024-03-01T00:00:00Z
        assert!(t.fires_at(10, midnight + 5, midnight - 7));
        assert!(!t.fires_at(11, midnight + 17, midnight + 5));
        assert!(Trigger::EveryBlocks { blocks: 5 }.fires_at(10, 0, 0));
        assert!(!Trigger::EveryBlocks { blocks: 5 }.fires_at(11, 0, 0));
    }

    /// Attack (issue 13 item 11): to Rhai a limit of 0 means "no limit"; a config setting one
    /// would let a script run without bound. Refused, naming the limit.
    #[test]
    fn a_sandbox_limit_of_zero_is_refused() {
        for field in [
            "max_operations",
            "max_call_depth",
            "max_string_size",
            "max_array_size",
            "max_map_size",
            "max_intents",
            "max_variables",
        ] {
            let cfg: PoliciesConfig = toml::from_str(&format!("[limits]\n{field} = 0\n")).unwrap();
            let err = cfg.validate().expect_err("a zero limit is refused");
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
        let ok: PoliciesConfig = toml::from_str("[limits]\nmax_operations = 1\n").unwrap();
        ok.validate().unwrap();
    }
}
