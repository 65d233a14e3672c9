//! `tracing` set-up: logs on stderr as text (coloured only on a terminal, never under `NO_COLOR`)
//! or as JSON lines, filtered by `RUST_LOG` or `-v`.
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for journald, Loki and the like).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// Our crates, whose info lines a service shows by default.
const OUR_CRATES: [&str; 5] =
    ["treasury", "treasury_agent", "treasury_chain", "treasury_signer", "treasury_policies"];

/// The filter when `RUST_LOG` is unset: `verbosity` 0 = warn (info for our crates when `service`:
/// a long-running process says what it signs, submits and confirms), 1 = info, 2+ = debug.
pub fn default_filter(verbosity: u8, service: bool) -> String {
    match verbosity {
        0 if service => std::iter::once("warn".to_string())
            .chain(OUR_CRATES.iter().map(|c| format!("{c}=info")))
            .collect::<Vec<_>>()
            .join(","),
        0 => "warn".into(),
        1 => "info".into(),
        _ => "debug".into(),
    }
}

/// Whether text logs are coloured: only on a terminal, and never when `NO_COLOR` is set to
/// anything non-empty (<https://no-color.org>).
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber (see [`default_filter`] for the levels).
pub fn init(verbosity: u8) {
    init_with(verbosity, false, LogFormat::Text);
}

/// Installs the global subscriber with the given format; `service` for long-running commands.
pub fn init_with(verbosity: u8, service: bool, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(verbosity, service)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text => builder
            .with_ansi(use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref()))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some("1".as_ref())));
        assert!(use_colour(true, Some("".as_ref())), "an empty NO_COLOR does not count");
    }

    #[test]
    fn services_log_our_info_lines_by_default() {
        assert_eq!(default_filter(0, false), "warn");
        assert!(default_filter(0, true).contains("treasury_agent=info"));
        assert_eq!(default_filter(1, true), "info");
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
