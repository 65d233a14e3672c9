//! The agent configuration (TOML): loading, defaults and validation.
