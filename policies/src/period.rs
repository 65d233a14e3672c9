//! Calendar periods keyed by a block's timestamp, in UTC.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// A calendar period a policy can act once per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// One block.
    Block,
    /// One UTC day.
    #[default]
    Day,
    /// One ISO week (Monday to Sunday, UTC).
    Week,
    /// One calendar month, UTC.
    Month,
}

impl Period {
    /// Parses `block`, `day`, `week` or `month`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "block" => Some(Period::Block),
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    /// The key of the period containing `timestamp` (or `block` for [`Period::Block`]).
    ///
    /// Keys are `2025-01-31`, `2025-W05`, `2025-01` or `block-123`.
    pub fn key(self, timestamp: u64, block: u64) -> String {
        let t = utc(timestamp);
        match self {
            Period::Block => format!("block-{block}"),
            Period::Day => t.format("%Y-%m-%d").to_string(),
            Period::Week => {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Month => t.format("%Y-%m").to_string(),
        }
    }

    /// Whether two timestamps fall in the same period (blocks compare equal only to themselves).
    pub fn same(self, a: u64, b: u64) -> bool {
        self != Period::Block && self.key(a, 0) == self.key(b, 0)
    }
}

/// The UTC date-time of a Unix timestamp (saturating at chrono's range).
pub(crate) fn utc(timestamp: u64) -> DateTime<Utc> {
    i64::try_from(timestamp)
        .ok()
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Calendar facts about one timestamp, as scripts read them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Calendar {
    at: DateTime<Utc>,
}

impl Calendar {
    /// The calendar at `timestamp`.
    pub(crate) fn at(timestamp: u64) -> Self {
        Self { at: utc(timestamp) }
    }

    pub(crate) fn year(self) -> i64 {
        self.at.year().into()
    }

    pub(crate) fn month(self) -> i64 {
        self.at.month().into()
    }

    pub(crate) fn day_of_month(self) -> i64 {
        self.at.day().into()
    }

    /// ISO weekday, Monday = 1 … Sunday = 7.
    pub(crate) fn weekday(self) -> i64 {
        self.at.weekday().number_from_monday().into()
    }

    pub(crate) fn hour(self) -> i64 {
        self.at.hour().into()
    }

    pub(crate) fn days_in_month(self) -> i64 {
        let (y, m) = (self.at.year(), self.at.month());
        let next =
            if m == 12 { NaiveDate::from_ymd_opt(y + 1, 1, 1) } else { NaiveDate::from_ymd_opt(y, m + 1, 1) };
        let first = NaiveDate::from_ymd_opt(y, m, 1);
        match (first, next) {
            (Some(a), Some(b)) => (b - a).num_days(),
            _ => 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29T12:00:00Z, a Thursday in ISO week 9 of a leap year.
    const LEAP_DAY: u64 = 1_709_208_000;

    #[test]
    fn keys_follow_utc_calendar() {
        assert_eq!(Period::Day.key(LEAP_DAY, 7), "2024-02-29");
        assert_eq!(Period::Week.key(LEAP_DAY, 7), "2024-W09");
        assert_eq!(Period::Month.key(LEAP_DAY, 7), "2024-02");
        assert_eq!(Period::Block.key(LEAP_DAY, 7), "block-7");
        let cal = Calendar::at(LEAP_DAY);
        assert_eq!((cal.days_in_month(), cal.weekday(), cal.hour()), (29, 4, 12));
    }

    #[test]
    fn same_period_splits_at_midnight_utc() {
        let midnight = 1_709_251_200; // 2024-03-01T00:00:00Z
        assert!(!Period::Day.same(midnight - 1, midnight));
        assert!(!Period::Month.same(midnight - 1, midnight));
        assert!(Period::Week.same(midnight - 1, midnight));
    }
}
