//! `tracing` set-up: human-readable logs on stderr, filtered by `RUST_LOG` or `-v`.
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `verbosity` raises the default level (0 = warn, 1 = info, 2+ = debug).
pub fn init(verbosity: u8) {
    let default = match verbosity {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
