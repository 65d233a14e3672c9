//! The agent config `treasury dev` writes: `treasury.toml` beside this file (embedded) filled in with the
//! deployment, plus the example policies (embedded too, so an installed binary needs no checkout).

use std::path::Path;

use alloy::primitives::Address;
use anyhow::Context;
use treasury_devnet::world::Deployment;

use super::setup::{ALICE, BOB, GRANTEE};

/// The base config (`treasury.toml` beside this file).
const BASE: &str = include_str!("treasury.toml");

/// The manual policy whose payment is too large for tier 1 and escalates to the root.
pub const ESCALATED_POLICY: &str = "gov_grant";

/// Policies of the demo: (name, period, trigger as inline TOML; `None` for the ETH
/// feed's `AnswerUpdated` log, whose address is known only after deployment).
const POLICIES: &[(&str, &str, Option<&str>)] = &[
    ("payroll", "month", Some(r#"{ kind = "schedule", cron = "0 0 9 * * *" }"#)),
    ("grant_stream", "day", Some(r#"{ kind = "schedule", cron = "0 0 0 * * *" }"#)),
    ("gas_topup", "week", Some(r#"{ kind = "schedule", cron = "0 0 9 * * *" }"#)),
    ("rebalance", "day", Some(r#"{ kind = "every_blocks", blocks = 20 }"#)),
    ("dca", "week", Some(r#"{ kind = "schedule", cron = "0 0 12 * * Mon" }"#)),
    // De-risk sells half of the ETH when the ETH feed reports under 2,500 USD; it runs on every
    // update of that feed (the scenario's price moves stay above the floor).
    ("derisk", "day", None),
    (ESCALATED_POLICY, "day", Some(r#"{ kind = "manual" }"#)),
];

/// Blocks between two runs of the rebalance policy (as in its trigger above).
pub const REBALANCE_EVERY: u64 = 20;

/// The escalated grant: 30,000 GOV, over the module's 20,000 GOV daily tier-1 budget.
const GOV_GRANT: &str = r#"// A one-off grant of 30,000 GOV: over the module's 20,000 GOV daily budget, so it needs the
// HSM root's signature (tier 2) on top of the quorum's, and waits for a human to approve it.
pay("grantee", "GOV", 30000, #{ memo: "community grant" });
"#;

/// The keeper job of the demo: Chainlink's `UpkeepCounter` example, checked every block.
pub const DEMO_UPKEEP: &str = "chainlink_counter";

/// Deploys Chainlink's `UpkeepCounter` example (due at once, then hourly) and returns its
/// `[[keeper.job]]`; nothing when the keeper fixtures are not installed (scripts/install.sh).
pub async fn demo_upkeep(deployer: &alloy::providers::DynProvider) -> anyhow::Result<String> {
    if !treasury_devnet::keeper::artifacts_dir().join("UpkeepCounter.json").is_file() {
        return Ok(String::new());
    }
    let counter = treasury_devnet::keeper::deploy_counter(deployer, 315_360_000, 3600)
        .await
        .context("deploying Chainlink's UpkeepCounter")?;
    Ok(format!(
        "\n[[keeper.job]]\nname = \"{DEMO_UPKEEP}\"\nkind = \"chainlink_upkeep\"\ntarget = \"{counter}\"\n\
         gas_limit = 200000\ntrigger = {{ kind = \"every_blocks\", blocks = 1 }}\n"
    ))
}

/// Writes the policy scripts into `dir/policies/`.
pub fn write_policies(dir: &Path) -> anyhow::Result<()> {
    let folder = dir.join("policies");
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    for (name, _, _) in POLICIES {
        let script = if *name == ESCALATED_POLICY {
            GOV_GRANT
        } else {
            treasury_policies::examples::script(name)
                .with_context(|| format!("no example policy `{name}`"))?
        };
        let path = folder.join(format!("{name}.rhai"));
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The agent config for this deployment, rooted in `dir`.
pub fn render(
    dir: &Path,
    rpc: &str,
    d: &Deployment,
    root_url: &str,
    keeper: Address,
) -> anyhow::Result<String> {
    let mut t: toml::Table = toml::from_str(BASE)
        .context("the embedded dev config (agent/cli/src/dev/treasury.toml) does not parse")?;
    let mut set = |section: &str, key: &str, value: toml::Value| {
        let entry = t.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(s) = entry {
            s.insert(key.to_string(), value);
        }
    };
    let s = |v: String| toml::Value::String(v);
    set("chain", "rpc_http", s(rpc.to_string()));
    set("chain", "chain_id", toml::Value::Integer(d.chain_id as i64));
    set("chain", "multicall3", s(d.multicall3.to_string()));
    set("safe", "address", s(d.safe.to_string()));
    set("safe", "module", s(d.module.to_string()));
    set("dex", "router", s(d.router.to_string()));
    set("signing", "quorum_file", s("quorum.toml".into()));
    set("signing", "root_url", s(root_url.to_string()));
    set("signing", "root_token_env", s("TREASURY_ROOT_TOKEN".into()));
    set("journal", "url", s(format!("sqlite://{}", dir.join("journal.db").display())));
    set("keeper", "keystore", s("keeper.json".into()));
    let mut text = toml::to_string(&t).context("serialising the dev config")?;

    text.push_str(&format!(
        "\n[policies.tokens.ETH]\naddress = \"{}\"\ndecimals = 18\nfeed = \"{}\"\n",
        Address::ZERO,
        d.eth_feed
    ));
    for tok in &d.tokens {
        text.push_str(&format!(
            "\n[policies.tokens.{}]\naddress = \"{}\"\ndecimals = {}\nfeed = \"{}\"\n",
            tok.symbol, tok.address, tok.decimals, tok.feed
        ));
    }
    text.push_str(&format!(
        "\n[policies.addresses]\nalice = \"{ALICE}\"\nbob = \"{BOB}\"\ngrantee = \"{GRANTEE}\"\nkeeper = \"{keeper}\"\n"
    ));
    let on_feed = format!(
        "{{ kind = \"on_log\", address = \"{}\", event = \"AnswerUpdated(int256,uint256,uint256)\" }}",
        d.eth_feed
    );
    for (name, period, trigger) in POLICIES {
        let trigger = trigger.unwrap_or(&on_feed);
        text.push_str(&format!(
            "\n[[policies.policy]]\nname = \"{name}\"\nfile = \"policies/{name}.rhai\"\nperiod = \"{period}\"\ntrigger = {trigger}\n"
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use treasury_agent::config::Config;

    use super::*;

    #[test]
    fn the_base_config_parses_and_takes_defaults() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["quorum.toml", "keeper.json"] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        let config = Config::from_toml(BASE, dir.path()).unwrap();
        assert_eq!(config.chain.confirmations, 1);
        assert_eq!(config.keeper.max_fee_per_gas, 200_000_000_000);
        assert_eq!(config.pipeline.poll_interval, std::time::Duration::from_millis(200));
        assert!(config.policies.policies.is_empty());
        assert_eq!(config.journal.url, format!("sqlite://{}", dir.path().join("treasury-dev.db").display()));
        let defaults = Config::from_toml(
            &BASE.replace("[journal]\nurl = \"sqlite://treasury-dev.db\"\n", ""),
            dir.path(),
        )
        .unwrap();
        assert_eq!(defaults.journal.url, format!("sqlite://{}", dir.path().join("treasury.db").display()));
    }

    #[test]
    fn every_demo_policy_gets_its_own_script() {
        let dir = tempfile::tempdir().unwrap();
        write_policies(dir.path()).unwrap();
        for (name, _, _) in POLICIES {
            let script =
                std::fs::read_to_string(dir.path().join("policies").join(format!("{name}.rhai"))).unwrap();
            let expected = if *name == ESCALATED_POLICY {
                GOV_GRANT
            } else {
                treasury_policies::examples::script(name).unwrap()
            };
            assert_eq!(script, expected, "{name}.rhai is not its own script");
        }
    }
}
