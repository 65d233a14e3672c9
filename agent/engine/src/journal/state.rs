//! The state machine of an intent.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an intent stands in the flow; only the transitions of [`IntentState::can_become`] are legal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntentState {
    /// Returned by a policy, not yet checked.
    Proposed,
    /// Passed the guard (limits, tiers).
    Guarded,
    /// Turned into a module operation, stored in the journal.
    Planned,
    /// The FROST quorum is asked to sign.
    Authorising,
    /// Signed by the quorum, waiting for the root signer (tier 2).
    AwaitingRoot,
    /// Fully authorised; ready to submit.
    Signed,
    /// A keeper transaction carrying it was broadcast.
    Submitted,
    /// Executed and buried under the configured confirmations.
    Confirmed,
    /// Could not be executed (revert, error); the reason is in its events.
    Failed,
    /// Refused by the guard, a signer or the root.
    Rejected,
    /// Its deadline passed before it executed.
    Expired,
}

impl IntentState {
    /// Every state, in flow order.
    pub const ALL: [IntentState; 11] = [
        Self::Proposed,
        Self::Guarded,
        Self::Planned,
        Self::Authorising,
        Self::AwaitingRoot,
        Self::Signed,
        Self::Submitted,
        Self::Confirmed,
        Self::Failed,
        Self::Rejected,
        Self::Expired,
    ];

    /// The name stored in the journal and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Guarded => "guarded",
            Self::Planned => "planned",
            Self::Authorising => "authorising",
            Self::AwaitingRoot => "awaiting_root",
            Self::Signed => "signed",
            Self::Submitted => "submitted",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    /// Whether no transition leaves this state.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Confirmed | Self::Failed | Self::Rejected | Self::Expired)
    }

    /// Whether an intent in this state may move to `next`.
    pub fn can_become(self, next: IntentState) -> bool {
        use IntentState::*;
        match (self, next) {
            (Proposed, Guarded) | (Guarded, Planned) | (Planned, Authorising) => true,
            (Authorising, AwaitingRoot | Signed) | (AwaitingRoot, Signed) => true,
            (Signed, Submitted) | (Submitted, Confirmed) => true,
            // A refusal can come from the guard, a signer or the root.
            (Proposed | Guarded | Planned | Authorising | AwaitingRoot, Rejected) => true,
            // Anything not yet final can fail or run out of time; a submitted operation fails when
            // its transaction reverts and expires when the module refuses it past its deadline.
            (from, Failed | Expired) => !from.is_terminal(),
            _ => false,
        }
    }

    /// The states from which `self` can be reached.
    pub fn predecessors(self) -> Vec<IntentState> {
        Self::ALL.into_iter().filter(|from| from.can_become(self)).collect()
    }
}

impl fmt::Display for IntentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`IntentState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown intent state `{0}`")]
pub struct UnknownState(pub String);

impl FromStr for IntentState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::IntentState::{self, *};

    #[test]
    fn the_happy_paths_are_legal() {
        let tier1 = [Proposed, Guarded, Planned, Authorising, Signed, Submitted, Confirmed];
        let tier2 = [Proposed, Guarded, Planned, Authorising, AwaitingRoot, Signed, Submitted, Confirmed];
        for path in [&tier1[..], &tier2[..]] {
            for pair in path.windows(2) {
                assert!(pair[0].can_become(pair[1]), "{} -> {}", pair[0], pair[1]);
            }
        }
    }

    #[test]
    fn terminal_states_are_final_and_steps_cannot_be_skipped() {
        for terminal in [Confirmed, Failed, Rejected, Expired] {
            assert!(IntentState::ALL.iter().all(|&to| !terminal.can_become(to)), "{terminal}");
        }
        assert!(!Proposed.can_become(Signed));
        assert!(!Planned.can_become(Submitted));
        assert!(!Submitted.can_become(Rejected), "a broadcast operation can no longer be refused");
        assert!(!Signed.can_become(Planned), "a signed intent is never planned again");
    }

    #[test]
    fn names_round_trip() {
        for st in IntentState::ALL {
            assert_eq!(st.as_str().parse::<IntentState>().unwrap(), st);
        }
        assert!("done".parse::<IntentState>().is_err());
    }
}
