//! What the agent tells the root about an operation it escalates, for the approvers' page: the
//! intents (policy, trigger, memo), the planning block with its USD prices, the module budgets it
//! exceeds and by how much, and the simulation's result. Sent beside the operation, outside the
//! digest; the root shows it as the agent's claim.
use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{I256, U256};
use treasury_chain::snapshot::read_snapshot;
use treasury_signer::root::request::{
    ContextBlock, ContextBudget, ContextIntent, ContextPrice, EscalationContext,
};

use super::super::Pipeline;
use super::super::intake::StoredIntent;
use super::super::simulate::{Simulation, simulate};
use super::InFlight;

/// A feed answer with `decimals` as USD with 8 decimals; `None` when not positive.
fn usd_e8(answer: I256, decimals: u8) -> Option<U256> {
    let answer = U256::try_from(answer).ok().filter(|a| !a.is_zero())?;
    let ten = U256::from(10u64);
    Some(match decimals.cmp(&8) {
        std::cmp::Ordering::Equal => answer,
        std::cmp::Ordering::Greater => answer / ten.pow(U256::from(decimals - 8)),
        std::cmp::Ordering::Less => answer * ten.pow(U256::from(8 - decimals)),
    })
}

impl Pipeline {
    /// The context of `flight` for the root's approvers. Best effort: a part that cannot be read
    /// is left out (and logged), never holding up the escalation.
    pub(super) async fn escalation_context(&self, flight: &InFlight) -> EscalationContext {
        let mut ctx = EscalationContext { reasons: flight.planned.reasons.clone(), ..Default::default() };
        for id in &flight.intents {
            match self.journal.intent(*id).await {
                Ok(Some((intent, _))) => {
                    let memo = StoredIntent::from_payload(&intent.payload).ok().and_then(|s| s.intent.memo);
                    ctx.intents.push(ContextIntent {
                        policy: intent.policy,
                        trigger: intent.trigger,
                        key: intent.idempotency_key,
                        memo,
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "escalation context: cannot read an intent"),
            }
        }
        let block = match flight.planned.plan_block {
            Some(b) => BlockNumberOrTag::Number(b.number),
            None => BlockNumberOrTag::Latest,
        };
        match read_snapshot(&self.provider, &self.spec, block).await {
            Ok(snap) => {
                ctx.block = Some(ContextBlock {
                    number: snap.block_number,
                    hash: snap.block_hash,
                    timestamp: snap.timestamp,
                });
                let outflows = treasury_chain::tiers::outflows(&flight.planned.operation);
                for a in &snap.assets {
                    if let Some(usd) =
                        a.price.as_ref().filter(|p| !p.stale).and_then(|p| usd_e8(p.answer, p.decimals))
                    {
                        ctx.prices.push(ContextPrice { token: a.token, decimals: a.decimals, usd_e8: usd });
                    }
                    if let (Some(b), Some(out)) = (&a.budget, outflows.get(&a.token))
                        && b.period_secs != 0
                        && *out > b.remaining
                    {
                        ctx.budgets.push(ContextBudget {
                            token: a.token,
                            limit: b.limit,
                            remaining: b.remaining,
                            outflow: *out,
                        });
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "escalation context: cannot read the planning block"),
        }
        ctx.simulation = Some(
            match simulate(&self.provider, self.spec.safe, self.spec.module, &flight.planned.operation).await
            {
                Ok(Simulation::Ok) => "every call succeeds at the latest block".into(),
                Ok(Simulation::Reverts(reason)) => format!("reverts at the latest block: {reason}"),
                Err(e) => format!("could not be simulated: {e}"),
            },
        );
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_answers_scale_to_eight_decimals() {
        assert_eq!(usd_e8(I256::try_from(99_990_000i64).unwrap(), 8), Some(U256::from(99_990_000u64)));
        assert_eq!(
            usd_e8(I256::try_from(2_000_000_000_000_000_000i128).unwrap(), 18),
            Some(U256::from(200_000_000u64))
        );
        assert_eq!(usd_e8(I256::try_from(3i64).unwrap(), 0), Some(U256::from(300_000_000u64)));
        assert_eq!(usd_e8(I256::ZERO, 8), None);
        assert_eq!(usd_e8(I256::try_from(-1i64).unwrap(), 8), None);
    }
}
