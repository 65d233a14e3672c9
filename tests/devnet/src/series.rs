//! Samples of a duration, summarised as the benches report them (milliseconds, p50 / p99).
use std::time::Duration;

use serde_json::json;

/// Durations measured by a bench, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Series(Vec<f64>);

impl Series {
    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    /// The sample at quantile `q` (0.5 = median), nearest rank; NaN when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    /// The mean; NaN when empty.
    pub fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len() as f64
    }

    /// `{"p50_ms", "p99_ms"}`, to the microsecond.
    pub fn json(&self) -> serde_json::Value {
        json!({ "p50_ms": round(self.quantile(0.5)), "p99_ms": round(self.quantile(0.99)) })
    }
}

impl FromIterator<Duration> for Series {
    fn from_iter<I: IntoIterator<Item = Duration>>(samples: I) -> Self {
        let mut series = Series::default();
        samples.into_iter().for_each(|d| series.push(d));
        series
    }
}

/// Milliseconds rounded to the microsecond, as the benches print them.
pub fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_in_milliseconds() {
        let s: Series = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(s.quantile(0.5), 51.0);
        assert_eq!(s.quantile(0.99), 99.0);
        assert_eq!(s.mean(), 50.5);
        assert_eq!(s.json(), json!({ "p50_ms": 51.0, "p99_ms": 99.0 }));
    }
}
