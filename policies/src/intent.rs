//! The intents a policy returns: what it wants done, not yet how.

use std::fmt;

use alloy::primitives::Address;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One thing a policy wants done, with the key that makes doing it idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The policy that produced it.
    pub policy: String,
    /// Idempotency key: the same trigger in the same period yields the same key.
    pub key: String,
    /// Free text for humans (journal, approvals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
}

/// The action of an intent; amounts are decimals in the token's own units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Transfer `amount` of `token` to `to`.
    Pay {
        /// Recipient address.
        to: Address,
        /// The config name of the recipient, when the script used one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recipient: Option<String>,
        /// Token symbol.
        token: String,
        /// Amount in token units (positive).
        amount: Decimal,
    },
    /// Sell `amount` of `sell` for `buy`, accepting at most `max_slippage` (a fraction) below the
    /// oracle price.
    Swap {
        /// Symbol sold.
        sell: String,
        /// Symbol bought.
        buy: String,
        /// Amount sold, in `sell` units (positive).
        amount: Decimal,
        /// Largest acceptable shortfall against the oracle price, as a fraction (0.01 = 1%).
        max_slippage: Decimal,
    },
    /// Tell a human.
    Alert {
        /// The message.
        message: String,
    },
}

impl Action {
    /// Short name of the action (`pay`, `swap`, `alert`).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Pay { .. } => "pay",
            Action::Swap { .. } => "swap",
            Action::Alert { .. } => "alert",
        }
    }

    /// Whether the action moves funds.
    pub fn moves_funds(&self) -> bool {
        !matches!(self, Action::Alert { .. })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Pay { to, recipient, token, amount } => match recipient {
                Some(name) => write!(f, "pay {amount} {token} to {name} ({to})"),
                None => write!(f, "pay {amount} {token} to {to}"),
            },
            Action::Swap { sell, buy, amount, max_slippage } => {
                write!(f, "swap {amount} {sell} for {buy} (max slippage {max_slippage})")
            }
            Action::Alert { message } => write!(f, "alert: {message}"),
        }
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.action, self.key)?;
        if let Some(memo) = &self.memo {
            write!(f, " — {memo}")?;
        }
        Ok(())
    }
}
