//! The token's user PIN: read from an environment variable or a file, zeroized, never printed.
use std::path::Path;

use zeroize::Zeroizing;

use super::error::{Result, RootError};

/// Default environment variable holding the user PIN.
pub const PIN_ENV: &str = "TREASURY_HSM_PIN";
/// Default environment variable holding the security-officer PIN (token initialisation only).
pub const SO_PIN_ENV: &str = "TREASURY_HSM_SO_PIN";

/// A PKCS#11 PIN.
///
/// # Security
/// The PIN MUST NOT be logged or printed: `Debug` is redacted and the bytes are zeroized on drop.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wraps a PIN.
    pub fn new(pin: impl Into<String>) -> Self {
        Self(Zeroizing::new(pin.into()))
    }

    /// Reads the PIN from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Self::new(v)),
            _ => Err(RootError::PinNotSet { var: var.to_owned() }),
        }
    }

    /// Reads the PIN from the first line of a file (trailing newline stripped).
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| RootError::PinFile { path: path.to_owned(), source: Some(e) })?,
        );
        let line = raw.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(RootError::PinFile { path: path.to_owned(), source: None });
        }
        Ok(Self::new(line))
    }

    /// The PIN from `file` when given, else from the environment variable `var`.
    pub fn resolve(file: Option<&Path>, var: &str) -> Result<Self> {
        match file {
            Some(f) => Self::from_file(f),
            None => Self::from_env(var),
        }
    }

    pub(crate) fn auth_pin(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::from(self.0.as_str())
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}
