//! What an approver sees of a request: its calls decoded by the root itself from the signed
//! payload (token symbols and amounts, recipients named from the root's own address book), next to
//! the context the agent sent with it (policy, trigger, prices at the pinned block, budgets
//! exceeded, simulation), which the root shows as the agent's claim.
use std::collections::BTreeMap;

use alloy::primitives::{Address, U256, utils::format_units};
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};
use treasury_chain::AdminAction;
use treasury_chain::contracts::IERC20;
use treasury_chain::operation::{OP_CALL, Operation};
use treasury_chain::rules;

use super::request::{EscalationContext, Payload};
use super::store::RequestRecord;

/// A token the page names (`[book.tokens.SYMBOL]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookToken {
    /// Token address (the zero address for ETH).
    pub address: Address,
    /// Decimals of its smallest unit.
    pub decimals: u8,
}

/// `[book]`: names for tokens and addresses, kept by the root (never taken from a requester).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Book {
    /// Tokens by symbol.
    #[serde(default)]
    pub tokens: BTreeMap<String, BookToken>,
    /// Addresses by name.
    #[serde(default)]
    pub names: BTreeMap<String, Address>,
}

impl Book {
    /// The symbol and decimals of `token` (ETH for the zero address when the book does not name it).
    pub fn token(&self, token: Address) -> Option<(String, u8)> {
        self.tokens
            .iter()
            .find(|(_, t)| t.address == token)
            .map(|(s, t)| (s.clone(), t.decimals))
            .or_else(|| (token == Address::ZERO).then(|| ("ETH".to_owned(), 18)))
    }

    /// The name of `address`, if the book has one.
    pub fn name(&self, address: Address) -> Option<String> {
        self.names.iter().find(|(_, a)| **a == address).map(|(n, _)| n.clone()).or_else(|| {
            self.tokens.iter().find(|(_, t)| t.address == address).map(|(s, _)| format!("{s} token"))
        })
    }

    /// `address` with its name.
    pub fn named(&self, address: Address) -> Named {
        Named { address, name: self.name(address) }
    }

    /// `amount` of `token` in its units with its symbol; raw when the book does not know the token.
    pub fn amount(&self, token: Address, amount: U256) -> String {
        match self.token(token) {
            Some((symbol, decimals)) => format!("{} {symbol}", units(amount, decimals)),
            None => format!("{amount} (raw units of {token})"),
        }
    }
}

/// An amount in whole units, trailing zeros of the fraction dropped.
pub fn units(amount: U256, decimals: u8) -> String {
    let text = format_units(amount, decimals).unwrap_or_else(|_| amount.to_string());
    match text.split_once('.') {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() { whole.to_owned() } else { format!("{whole}.{frac}") }
        }
        None => text,
    }
}

/// An address and its name in the root's book, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    /// The address.
    pub address: Address,
    /// Its name in the root's book.
    pub name: Option<String>,
}

/// One call of an operation, decoded for a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallView {
    /// What it does, in words (`transfer`, `approve`, `swap`, `ETH payment`, `call 0x…`).
    pub action: String,
    /// The contract called.
    pub target: Named,
    /// The asset moved, if any.
    pub token: Option<Address>,
    /// The amount in the asset's units with its symbol.
    pub amount: Option<String>,
    /// The raw amount.
    pub raw_amount: Option<U256>,
    /// The recipient or spender.
    pub to: Option<Named>,
    /// The USD value at the agent's pinned block, when the agent sent that token's price.
    pub usd: Option<String>,
}

/// A request as the approvals page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    /// Decoded calls (operations), or the admin action in words.
    pub calls: Vec<CallView>,
    /// The admin action, for admin requests.
    pub admin: Option<String>,
    /// Total USD value of the calls that could be valued.
    pub usd_total: Option<String>,
    /// The agent's context, as sent.
    pub context: Option<EscalationContext>,
    /// Budgets exceeded, in words, from the context.
    pub budgets: Vec<String>,
}

/// USD value (8 decimals) of `amount` of a token with `decimals` at `usd_e8` per whole token.
fn usd_e8(amount: U256, decimals: u8, price_e8: U256) -> U256 {
    amount.saturating_mul(price_e8) / U256::from(10u64).pow(U256::from(decimals))
}

/// `value_e8` as dollars with cents.
pub fn dollars(value_e8: U256) -> String {
    let cents = (value_e8 + U256::from(500_000u64)) / U256::from(1_000_000u64);
    let whole = cents / U256::from(100u64);
    let frac = cents % U256::from(100u64);
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("${grouped}.{frac:02}")
}

/// Decodes `rec` for the page with the root's `book`.
pub fn view(rec: &RequestRecord, book: &Book) -> RequestView {
    let context = rec.request.context.clone();
    let price = |token: Address| -> Option<(U256, u8)> {
        let c = context.as_ref()?;
        let p = c.prices.iter().find(|p| p.token == token)?;
        let decimals = book.token(token).map(|(_, d)| d).unwrap_or(p.decimals);
        Some((p.usd_e8, decimals))
    };
    let (calls, admin) = match &rec.request.payload {
        Payload::Operation { operation } => (decode_calls(operation, book), None),
        Payload::Admin { admin } => {
            let text = match AdminAction::decode(admin.action, &admin.params) {
                Ok(action) => describe_admin(&action, book),
                Err(e) => format!("undecodable admin action {}: {e}", admin.action),
            };
            (Vec::new(), Some(text))
        }
    };
    let mut total = U256::ZERO;
    let mut valued = false;
    let calls = calls
        .into_iter()
        .map(|mut c| {
            if let (Some(token), Some(raw)) = (c.token, c.raw_amount)
                && let Some((p, decimals)) = price(token)
            {
                let v = usd_e8(raw, decimals, p);
                total = total.saturating_add(v);
                valued = true;
                c.usd = Some(dollars(v));
            }
            c
        })
        .collect();
    let budgets = context
        .as_ref()
        .map(|c| {
            c.budgets
                .iter()
                .map(|b| {
                    let excess = b.outflow.saturating_sub(b.remaining);
                    format!(
                        "{} budget: moves {}, {} left of {} in the current window: exceeds it by {}",
                        book.token(b.token).map(|(s, _)| s).unwrap_or_else(|| b.token.to_string()),
                        book.amount(b.token, b.outflow),
                        book.amount(b.token, b.remaining),
                        book.amount(b.token, b.limit),
                        book.amount(b.token, excess),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    RequestView { calls, admin, usd_total: valued.then(|| dollars(total)), context, budgets }
}

fn decode_calls(op: &Operation, book: &Book) -> Vec<CallView> {
    op.calls
        .iter()
        .map(|call| {
            let mut v = CallView {
                action: String::new(),
                target: book.named(call.to),
                token: None,
                amount: None,
                raw_amount: None,
                to: None,
                usd: None,
            };
            let moved = |v: &mut CallView, action: &str, token: Address, to: Address, amount: U256| {
                v.action = action.to_owned();
                v.token = Some(token);
                v.amount = Some(book.amount(token, amount));
                v.raw_amount = Some(amount);
                v.to = Some(book.named(to));
            };
            if call.operation != OP_CALL {
                v.action = "DELEGATECALL".into();
                return v;
            }
            let sel: Option<[u8; 4]> = call.data.get(..4).and_then(|s| s.try_into().ok());
            match sel {
                None if call.data.is_empty() => {
                    moved(&mut v, "ETH payment", Address::ZERO, call.to, call.value)
                }
                Some(rules::TRANSFER) => match IERC20::transferCall::abi_decode(&call.data) {
                    Ok(c) => moved(&mut v, "transfer", call.to, c.to, c.amount),
                    Err(_) => v.action = "malformed transfer".into(),
                },
                Some(rules::APPROVE) => match IERC20::approveCall::abi_decode(&call.data) {
                    Ok(c) => moved(&mut v, "approve", call.to, c.spender, c.amount),
                    Err(_) => v.action = "malformed approve".into(),
                },
                _ => match rules::decode_swap(&call.data) {
                    Some(Ok(swap)) => {
                        let sell = if swap.eth_in { Address::ZERO } else { swap.path[0] };
                        let buy = if swap.eth_out {
                            "ETH".to_owned()
                        } else {
                            swap.path
                                .last()
                                .map(|t| book.token(*t).map(|(s, _)| s).unwrap_or(t.to_string()))
                                .unwrap_or_default()
                        };
                        let amount = if swap.eth_in { call.value } else { swap.max_in };
                        moved(&mut v, &format!("swap for {buy}"), sell, swap.recipient, amount);
                    }
                    Some(Err(e)) => v.action = e,
                    None => {
                        v.action = match sel {
                            Some(s) => format!("call 0x{}", hex::encode(s)),
                            None => format!("call with {} bytes of data", call.data.len()),
                        };
                        if !call.value.is_zero() {
                            v.token = Some(Address::ZERO);
                            v.amount = Some(book.amount(Address::ZERO, call.value));
                            v.raw_amount = Some(call.value);
                        }
                    }
                },
            }
            v
        })
        .collect()
}

fn describe_admin(action: &AdminAction, book: &Book) -> String {
    let name = |a: Address| match book.name(a) {
        Some(n) => format!("{n} ({a})"),
        None => a.to_string(),
    };
    match action {
        AdminAction::SetBudget { token, limit, period } => {
            format!("set the budget of {} to {} per {period} s", name(*token), book.amount(*token, *limit))
        }
        AdminAction::SetRoot { root } => format!("replace the root signer with {}", name(*root)),
        AdminAction::SetSpenderAllowed { spender, allowed } => {
            format!("{} spender {}", if *allowed { "allow" } else { "forbid" }, name(*spender))
        }
        AdminAction::SetCallAllowed { target, selector, allowed } => {
            format!(
                "{} calls to {} selector {selector}",
                if *allowed { "allow" } else { "forbid" },
                name(*target)
            )
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_dollars_read_as_people_write_them() {
        assert_eq!(units(U256::from(1_500_000u64), 6), "1.5");
        assert_eq!(units(U256::from(2_000_000u64), 6), "2");
        // 1234.5 tokens (6 decimals) at $0.99 = $1,222.155 → $1,222.16
        let v = usd_e8(U256::from(1_234_500_000u64), 6, U256::from(99_000_000u64));
        assert_eq!(dollars(v), "$1,222.16");
        assert_eq!(dollars(U256::ZERO), "$0.00");
    }
}
