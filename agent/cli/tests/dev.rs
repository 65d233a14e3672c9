//! `treasury dev` as a user runs it: the whole scenario with `--once --json` (its summary checked
//! against what the example policies pay), and Ctrl-C during set-up leaving no child behind.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_treasury");

/// Pids of live processes whose command line mentions `needle` (zombies have none).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) && pid != std::process::id() {
            out.push((pid, cmdline));
        }
    }
    out
}

/// What `grant_stream.rhai` pays for the day its firing `trigger` (`schedule@UNIX_SECONDS`) names,
/// in micro-USDC: 30,000 USDC / the days of that month on the chain's clock, rounded towards zero
/// to USDC's 6 decimals. The demo's chain starts at the wall clock, so the month is whatever
/// it is when the test runs; the rule, not the date, is what is checked.
fn grant_day_micro_usdc(trigger: &str) -> u64 {
    use chrono::Datelike;
    let at = trigger.strip_prefix("schedule@").unwrap_or_else(|| panic!("not a schedule firing: {trigger}"));
    let secs: i64 = at.parse().unwrap_or_else(|e| panic!("{trigger}: {e}"));
    let day = chrono::DateTime::from_timestamp(secs, 0).unwrap().date_naive();
    let first_of_next = if day.month() == 12 {
        chrono::NaiveDate::from_ymd_opt(day.year() + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(day.year(), day.month() + 1, 1)
    }
    .unwrap();
    let days_in_month = u64::from(first_of_next.pred_opt().unwrap().day());
    30_000_000_000 / days_in_month
}

/// Micro-USDC as the summary prints token amounts (`967.741935`, `8000`).
fn usdc(micro: u64) -> String {
    let (whole, frac) = (micro / 1_000_000, micro % 1_000_000);
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{}", format!("{frac:06}").trim_end_matches('0'))
    }
}

#[test]
fn the_grant_day_follows_the_month_of_the_firing_and_rounds_towards_zero() {
    // 31 January 2027, 1 February 2027, 29 February 2028, 30 November 2026, 31 December 2026.
    assert_eq!(usdc(grant_day_micro_usdc("schedule@1801353600")), "967.741935");
    assert_eq!(usdc(grant_day_micro_usdc("schedule@1801440000")), "1071.428571");
    assert_eq!(usdc(grant_day_micro_usdc("schedule@1835395200")), "1034.482758");
    assert_eq!(usdc(grant_day_micro_usdc("schedule@1795996800")), "1000");
    assert_eq!(usdc(grant_day_micro_usdc("schedule@1798675200")), "967.741935");
}

/// `treasury dev FLAGS --state-dir STATE`, with no terminal on stdin.
fn dev(state: &std::path::Path, flags: &[&str]) -> Command {
    let mut cmd = Command::new(EXE);
    cmd.arg("dev").args(flags).arg("--state-dir").arg(state).stdin(Stdio::null());
    cmd
}

fn balance(summary: &Value, who: &str, token: &str) -> String {
    summary["balances"][who][token].as_str().unwrap_or_else(|| panic!("no {who} {token} balance")).to_string()
}

#[test]
fn the_scenario_runs_to_the_end_and_the_summary_shows_what_the_policies_paid() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = dev(&state, &["--once", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("summary is not JSON ({e}):\n{}\nstderr:\n{stderr}", String::from_utf8_lossy(&out.stdout))
    });
    assert!(out.status.success(), "treasury dev failed: {}\nstderr:\n{stderr}", summary["error"]);
    assert_eq!(summary["ok"], true);
    // The group key reported is the one the DKG made and the module registered, not the
    // placeholder the module was deployed with.
    let quorum = std::fs::read_to_string(state.join("quorum.toml")).unwrap();
    let quorum: toml::Value = toml::from_str(&quorum).unwrap();
    let dkg_x = quorum["group_key_x"].as_str().unwrap_or_else(|| panic!("quorum.toml group_key_x: {quorum}"));
    let reported = &summary["deployment"]["group_key"];
    assert_eq!(
        reported["x"].as_str().unwrap().trim_start_matches("0x").trim_start_matches('0'),
        dkg_x.trim_start_matches("0x").trim_start_matches('0'),
        "{reported}"
    );

    // Each jump of the clock crosses exactly the schedules it names.
    let steps = summary["steps"].as_array().unwrap();
    let detail = |prefix: &str| -> String {
        let s = steps.iter().find(|s| s["name"].as_str().unwrap().starts_with(prefix)).unwrap();
        s["detail"].as_str().unwrap().to_string()
    };
    assert!(detail("time → 00:00").ends_with(", 1 intent(s) done"), "{}", detail("time → 00:00"));
    assert!(detail("time → 09:00").ends_with(", 3 intent(s) done"), "{}", detail("time → 09:00"));
    // The demo's keeper job (Chainlink's UpkeepCounter) was performed by the agent.
    assert!(detail("keeper job: Chainlink's UpkeepCounter performed").starts_with("performUpkeep in tx 0x"));

    let intents = summary["intents"].as_array().unwrap();
    let of = |policy: &str| -> Vec<&Value> { intents.iter().filter(|i| i["policy"] == policy).collect() };
    for i in intents {
        assert_eq!(i["state"], "confirmed", "every intent confirms: {i}");
        assert!(i["tx_hash"].as_str().is_some_and(|h| h.starts_with("0x") && h.len() == 66), "{i}");
    }
    // payroll.rhai: alice 8,000 and bob 6,500 USDC a month.
    assert_eq!(of("payroll").len(), 2, "{intents:?}");
    assert_eq!(balance(&summary, "alice", "USDC"), "8000");
    assert_eq!(balance(&summary, "bob", "USDC"), "6500");
    // grant_stream.rhai: 30,000 USDC / the days of the month it fired in, once for the one day that
    // passed; exactly the rule's amount.
    let grants = of("grant_stream");
    assert_eq!(grants.len(), 1);
    let first_day = grant_day_micro_usdc(grants[0]["trigger"].as_str().unwrap());
    assert_eq!(grants[0]["intent"]["amount"], usdc(first_day), "{}", grants[0]);
    assert_eq!(balance(&summary, "grantee", "USDC"), usdc(first_day));
    // gas_topup.rhai: 0.5 ETH to the keeper (which had paid nothing this week).
    let topup = of("gas_topup");
    assert_eq!(topup.len(), 1);
    assert_eq!(topup[0]["intent"]["amount"], "0.5");
    // The ETH price moved: the rebalance sold ETH for USDC.
    let swaps = of("rebalance");
    assert_eq!(swaps.len(), 1, "{intents:?}");
    assert_eq!(swaps[0]["kind"], "swap");
    assert_eq!(swaps[0]["intent"]["sell"], "ETH");
    // The 30,000 GOV grant went through the root and executed.
    let escalated = of("gov_grant");
    assert_eq!(escalated.len(), 1);
    let states: Vec<&str> =
        escalated[0]["states"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let waited = states.iter().position(|s| *s == "awaiting_root").expect("the grant waited for the root");
    let signed = states.iter().position(|s| *s == "signed").expect("the grant was signed");
    assert!(waited < signed && states.last() == Some(&"confirmed"), "signed only after the root: {states:?}");
    for i in intents.iter().filter(|i| i["policy"] != "gov_grant") {
        assert!(
            !i["states"].as_array().unwrap().iter().any(|s| s == "awaiting_root"),
            "tier 1 needs no root: {i}"
        );
    }
    assert_eq!(balance(&summary, "grantee", "GOV"), "30000");
    assert_eq!(balance(&summary, "safe", "GOV"), "170000");
    let step = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().contains("GOV grant"))
        .unwrap();
    assert!(step["detail"].as_str().unwrap().starts_with("confirmed after the root's decision"), "{step}");

    // Nothing is left running.
    let state = state.canonicalize().unwrap();
    assert_eq!(processes_mentioning(&state.display().to_string()), vec![]);
    let names: Vec<&str> =
        summary["processes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in ["anvil", "signer node0", "signer node1", "signer node2", "root service", "agent"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    // --resume: anvil reloads its dumped chain, nodes, root and agent restart from their files;
    // a grant queued meanwhile for the same day is the same intent (idempotency key), and the
    // next day's grant stream goes through the restarted quorum.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", state.join("journal.db").display());
        let journal = treasury_agent::journal::Journal::open(&url).await.unwrap();
        journal.request_manual_trigger("gov_grant", "test").await.unwrap();
        journal.close().await;
    });
    let out = dev(&state, &["--once", "--json", "--resume"]).output().unwrap();
    let resumed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("resumed summary is not JSON ({e}); stderr:\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(
        out.status.success(),
        "resume failed: {}\n{}",
        resumed["error"],
        String::from_utf8_lossy(&out.stderr)
    );
    let intents = resumed["intents"].as_array().unwrap();
    let of = |policy: &str| -> Vec<&Value> { intents.iter().filter(|i| i["policy"] == policy).collect() };
    assert_eq!(of("gov_grant").len(), 1, "the same day's grant is not paid twice: {intents:?}");
    assert_eq!(balance(&resumed, "grantee", "GOV"), "30000");
    assert_eq!(of("grant_stream").len(), 2, "{intents:?}");
    assert!(intents.iter().all(|i| i["state"] == "confirmed"), "{intents:?}");
    // The next day's grant follows its own month (the resumed run may cross into a new month).
    let next = of("grant_stream").into_iter().find(|i| i["id"] != grants[0]["id"]).unwrap();
    let next_day = grant_day_micro_usdc(next["trigger"].as_str().unwrap());
    assert_eq!(next["intent"]["amount"], usdc(next_day), "{next}");
    assert_eq!(balance(&resumed, "grantee", "USDC"), usdc(first_day + next_day));
    assert_eq!(
        balance(&resumed, "alice", "USDC"),
        "8000",
        "the reloaded chain keeps the first run's payments"
    );
    assert_eq!(processes_mentioning(&state.display().to_string()), vec![]);
}

#[test]
fn ctrl_c_during_set_up_stops_every_child_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let child =
        dev(&state, &["--once", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until anvil and the signer nodes run (their command lines name the state directory).
    let mut seen = Vec::new();
    for _ in 0..1200 {
        if let Ok(state) = state.canonicalize() {
            seen = processes_mentioning(&state.display().to_string());
            if seen.iter().filter(|(_, c)| c.contains("signer serve")).count() >= 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen.iter().any(|(_, c)| c.contains("anvil")), "anvil never started: {seen:?}");
    assert!(seen.iter().any(|(_, c)| c.contains("signer serve")), "no signer node started: {seen:?}");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "an interrupted run must not exit 0");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ok"], false);
    assert!(summary["error"].as_str().unwrap().contains("interrupted"), "{}", summary["error"]);
    let left = processes_mentioning(&state.canonicalize().unwrap().display().to_string());
    assert_eq!(left, vec![], "child processes survived Ctrl-C");
    let names: Vec<&str> =
        summary["processes"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"anvil") && names.contains(&"signer node0"), "{names:?}");
}

#[test]
fn ctrl_c_during_the_live_view_stops_every_child_process_and_exits_cleanly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child =
        dev(&state, &["--yes", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Without --once the scenario ends and the agent keeps running under the live view.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("scenario done");
        log.push(line);
        if done {
            break;
        }
    }
    assert!(
        log.last().is_some_and(|l| l.contains("scenario done")),
        "the scenario did not finish:\n{}",
        log.join("\n")
    );
    let state = state.canonicalize().unwrap();
    let running = processes_mentioning(&state.display().to_string());
    for what in ["anvil", "signer serve", "root serve", " run --config"] {
        assert!(running.iter().any(|(_, c)| c.contains(what)), "{what} is not running: {running:?}");
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    std::thread::spawn(move || lines.for_each(drop));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a Ctrl-C after the scenario is a normal stop");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["ok"], true, "{}", summary["error"]);
    assert_eq!(processes_mentioning(&state.display().to_string()), vec![], "child processes survived Ctrl-C");
}

#[test]
fn ha_the_leading_replica_is_killed_mid_scenario_and_the_standby_pays_each_intent_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Reachable by the `postgres` user the cluster runs as when the tests run as root, so the
    // cluster goes into the state folder.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let out = dev(&state, &["--ha", "--once", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("summary is not JSON ({e}):\n{}\nstderr:\n{stderr}", String::from_utf8_lossy(&out.stdout))
    });
    assert!(out.status.success(), "treasury dev --ha failed: {}\nstderr:\n{stderr}", summary["error"]);
    assert_eq!(summary["ok"], true);

    // The cluster was initialised in the state folder.
    let state = state.canonicalize().unwrap();
    let steps = summary["steps"].as_array().unwrap();
    let cluster = steps.iter().find(|s| s["name"] == "PostgreSQL cluster (initdb)").unwrap();
    assert!(
        cluster["detail"].as_str().unwrap().contains(&format!("{}/postgres-", state.display())),
        "{cluster}"
    );

    // Two treasuries on two chains.
    let treasuries = summary["treasuries"].as_array().unwrap();
    let chains: Vec<(&str, u64)> = treasuries
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["deployment"]["chain_id"].as_u64().unwrap()))
        .collect();
    assert_eq!(chains, vec![("grants", 31337), ("ops", 10)]);

    // The leading replica was killed and is gone; the other one took over.
    let failover = &summary["failover"];
    let killed = failover["killed"].as_u64().unwrap_or_else(|| panic!("no failover: {summary}"));
    assert!(failover["taken_over_after_ms"].is_u64(), "{failover}");
    assert!(
        !std::path::Path::new(&format!("/proc/{killed}")).exists(),
        "the killed replica {killed} is alive"
    );
    let replica_pids: Vec<u64> = summary["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("replica "))
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(replica_pids.len(), 2, "{}", summary["processes"]);
    assert!(replica_pids.contains(&killed), "{killed} is not a replica: {replica_pids:?}");
    assert!(replica_pids.contains(&failover["standby"].as_u64().unwrap()), "{failover}");
    assert_ne!(failover["standby"], failover["killed"]);

    // Each treasury: the day's grant stream, payroll (alice, bob) and gas top-up, each intent
    // confirmed exactly once with its transaction; the balances show each paid once.
    let intents = summary["intents"].as_array().unwrap();
    for i in intents {
        let confirmed = i["states"].as_array().unwrap().iter().filter(|s| *s == "confirmed").count();
        assert!(i["state"] == "confirmed" && confirmed == 1, "confirmed once: {i}");
        assert!(i["tx_hash"].as_str().is_some_and(|h| h.starts_with("0x") && h.len() == 66), "{i}");
    }
    for (treasury, _) in &chains {
        let mine: Vec<&Value> = intents.iter().filter(|i| i["treasury"] == *treasury).collect();
        let mut policies: Vec<&str> = mine.iter().map(|i| i["policy"].as_str().unwrap()).collect();
        policies.sort();
        assert_eq!(policies, ["gas_topup", "grant_stream", "payroll", "payroll"], "{treasury}: {mine:?}");
        let balances = &summary["balances"][treasury];
        let usdc_of = |who: &str| balances[who]["USDC"].as_str().unwrap().to_string();
        assert_eq!(usdc_of("alice"), "8000", "{treasury}");
        assert_eq!(usdc_of("bob"), "6500", "{treasury}");
        let grant = mine.iter().find(|i| i["policy"] == "grant_stream").unwrap();
        let grant_day = grant_day_micro_usdc(grant["trigger"].as_str().unwrap());
        assert_eq!(usdc_of("grantee"), usdc(grant_day), "{treasury}");
        assert_eq!(
            usdc_of("safe"),
            usdc(95_000_000_000 - 8_000_000_000 - 6_500_000_000 - grant_day),
            "{treasury}"
        );
        assert_eq!(balances["safe"]["ETH"], "39.5", "{treasury}: one gas top-up of 0.5 ETH");
    }
    assert_eq!(intents.len(), 8, "{intents:?}");

    // Nothing is left running, and the cluster's folder is gone.
    assert_eq!(processes_mentioning(&state.display().to_string()), vec![]);
    let left: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("postgres-"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "the cluster's folder was not removed");
}
