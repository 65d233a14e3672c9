//! The agent config `treasury dev` writes: `config/dev.toml` (embedded) filled in with the
//! deployment, plus the example policies (embedded too, so an installed binary needs no checkout).

use std::path::Path;

use alloy::primitives::Address;
use anyhow::Context;
use treasury_devnet::world::Deployment;

use super::setup::{ALICE, BOB, GRANTEE};

/// The base config (`config/dev.toml`).
const BASE: &str = include_str!("../../../../config/dev.toml");

/// The manual policy whose payment is too large for tier 1 and escalates to the root.
pub const ESCALATED_POLICY: &str = "gov_grant";

/// Policies of the demo: (name, script, period, trigger as inline TOML; `None` for the ETH
/// feed's `AnswerUpdated` log, whose address is known only after deployment).
const POLICIES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "payroll",
        include_str!("../../../../policies/examples/payroll.rhai"),
        "month",
        Some(r#"{ kind = "schedule", cron = "0 0 9 * * *" }"#),
    ),
    (
        "grant_stream",
        include_str!("../../../../policies/examples/grant_stream.rhai"),
        "day",
        Some(r#"{ kind = "schedule", cron = "0 0 0 * * *" }"#),
    ),
    (
        "gas_topup",
        include_str!("../../../../policies/examples/gas_topup.rhai"),
        "week",
        Some(r#"{ kind = "schedule", cron = "0 0 9 * * *" }"#),
    ),
    (
        "rebalance",
        include_str!("../../../../policies/examples/rebalance.rhai"),
        "day",
        Some(r#"{ kind = "every_blocks", blocks = 20 }"#),
    ),
    (
        "dca",
        include_str!("../../../../policies/examples/dca.rhai"),
        "week",
        Some(r#"{ kind = "schedule", cron = "0 0 12 * * Mon" }"#),
    ),
    // De-risk sells half of the ETH when the ETH feed reports under 2,500 USD; it runs on every
    // update of that feed (the scenario's price moves stay above the floor).
    ("derisk", include_str!("../../../../policies/examples/derisk.rhai"), "day", None),
    (ESCALATED_POLICY, GOV_GRANT, "day", Some(r#"{ kind = "manual" }"#)),
];

/// Blocks between two runs of the rebalance policy (as in its trigger above).
pub const REBALANCE_EVERY: u64 = 20;

/// The escalated grant: 30,000 GOV, over the module's 20,000 GOV daily tier-1 budget.
const GOV_GRANT: &str = r#"// A one-off grant of 30,000 GOV: over the module's 20,000 GOV daily budget, so it needs the
// HSM root's signature (tier 2) on top of the quorum's, and waits for a human to approve it.
pay("grantee", "GOV", 30000, #{ memo: "community grant" });
"#;

/// Writes the policy scripts into `dir/policies/`.
pub fn write_policies(dir: &Path) -> anyhow::Result<()> {
    let folder = dir.join("policies");
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    for (name, script, _, _) in POLICIES {
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
    let mut t: toml::Table = toml::from_str(BASE).context("config/dev.toml (embedded) does not parse")?;
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
    for (name, _, period, trigger) in POLICIES {
        let trigger = trigger.unwrap_or(&on_feed);
        text.push_str(&format!(
            "\n[[policies.policy]]\nname = \"{name}\"\nfile = \"policies/{name}.rhai\"\nperiod = \"{period}\"\ntrigger = {trigger}\n"
        ));
    }
    Ok(text)
}
