use alloy::primitives::{Address, B256, keccak256};
use treasury_policies::{Period, PolicyEntry, Trigger};

use super::scan::{SeenLog, block_firings, log_filter_parts, log_firing, manual_refusal};
use super::{BlockRef, Cause, Firing};

fn policy(name: &str, trigger: Trigger) -> PolicyEntry {
    PolicyEntry {
        name: name.into(),
        file: format!("{name}.rhai").into(),
        trigger,
        period: Period::Day,
        fixtures: vec![],
    }
}

fn block(number: u64, timestamp: u64) -> BlockRef {
    BlockRef { number, hash: B256::with_last_byte(number as u8), timestamp }
}

const EVENT: &str = "AnswerUpdated(int256,uint256,uint256)";

fn policies() -> Vec<PolicyEntry> {
    vec![
        policy("gas", Trigger::EveryBlocks { blocks: 5 }),
        policy("sweep", Trigger::EveryBlocks { blocks: 10 }),
        policy("tick", Trigger::Schedule { cron: "*/10 * * * * *".into() }),
        policy("minute", Trigger::Schedule { cron: "0 * * * * *".into() }),
        policy("feed", Trigger::OnLog { address: Address::repeat_byte(7), event: EVENT.into() }),
        policy("dca", Trigger::Manual),
    ]
}

#[test]
fn every_blocks_group_policies_at_common_multiples() {
    let p = policies();
    let names = |n| -> Vec<Vec<String>> {
        block_firings(&p, block(n, 1_000 + n), 1_000 + n)
            .into_iter()
            .filter(|f| f.cause == Cause::EveryBlocks)
            .map(|f| f.policies)
            .collect()
    };
    assert_eq!(names(10), vec![vec!["gas".to_string(), "sweep".to_string()]]);
    assert_eq!(names(15), vec![vec!["gas".to_string()]]);
    assert!(names(16).is_empty());
}

#[test]
fn schedule_firing_names_the_first_instant_reached() {
    let p = policies();
    // 1_700_000_000 is 22:13:20 UTC: a multiple of 10 s but not of 60 s.
    let t = 1_700_000_000;
    let firings = block_firings(&p, block(3, t + 4), t - 3);
    let schedules: Vec<_> = firings.iter().filter(|f| matches!(f.cause, Cause::Schedule { .. })).collect();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].cause, Cause::Schedule { instant: t });
    assert_eq!(schedules[0].label(), format!("schedule@{t}"));
    // Crossing 22:13:30, 22:13:40 and 22:14:00 at once: each schedule fires once, naming its own instant.
    let firings = block_firings(&p, block(4, t + 41), t + 4);
    let mut got: Vec<_> = firings
        .iter()
        .filter_map(|f| match f.cause {
            Cause::Schedule { instant } => Some((instant, f.policies.clone())),
            _ => None,
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![(t + 10, vec!["tick".to_string()]), (t + 40, vec!["minute".to_string()])]);
    // No instant between the two timestamps: nothing.
    assert!(
        block_firings(&p, block(5, t + 43), t + 41)
            .iter()
            .all(|f| !matches!(f.cause, Cause::Schedule { .. }))
    );
}

#[test]
fn logs_match_address_and_topic() {
    let p = policies();
    let log = SeenLog {
        block: block(9, 0),
        address: Address::repeat_byte(7),
        topic0: keccak256(EVENT),
        tx_hash: B256::repeat_byte(0xab),
        log_index: 3,
    };
    let f = log_firing(&p, &log).unwrap();
    assert_eq!(f.policies, vec!["feed".to_string()]);
    assert_eq!(f.label(), format!("log@{}:3", B256::repeat_byte(0xab)));
    assert_eq!(log_firing(&p, &SeenLog { address: Address::repeat_byte(8), ..log }), None);
    assert_eq!(log_firing(&p, &SeenLog { topic0: B256::ZERO, ..log }), None);
    assert_eq!(log_filter_parts(&p), (vec![Address::repeat_byte(7)], vec![keccak256(EVENT)]));
}

#[test]
fn manual_requests_are_refused_with_a_reason() {
    let p = policies();
    assert_eq!(manual_refusal(&p, "dca"), None);
    let unknown = manual_refusal(&p, "nope").unwrap();
    assert!(unknown.contains("no policy named `nope`"), "{unknown}");
    let wrong = manual_refusal(&p, "gas").unwrap();
    assert!(wrong.contains("`gas` is triggered by every_blocks, not manual"), "{wrong}");
}

#[test]
fn labels_and_order_within_a_block() {
    let b = block(12, 0);
    let f = |cause| Firing { block: b, policies: vec![], cause };
    let log = f(Cause::Log { tx_hash: B256::ZERO, log_index: 0, address: Address::ZERO });
    let every = f(Cause::EveryBlocks);
    let gap = f(Cause::Gap { from: 1, to: 12 });
    let mut all = vec![log.clone(), every.clone(), gap.clone()];
    all.sort_by_key(Firing::order_key);
    assert_eq!(all, vec![gap.clone(), every.clone(), log]);
    assert_eq!(every.label(), "every_blocks@12");
    assert_eq!(gap.label(), "gap@1-12");
    assert_eq!(f(Cause::Manual { request_id: 7 }).label(), "manual#7");
}
