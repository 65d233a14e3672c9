//! The one error type of the policies crate.

use std::fmt;
use std::path::PathBuf;

/// A sandbox limit a script can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Operations executed in one evaluation (stops endless loops).
    Operations,
    /// Depth of nested function calls (stops endless recursion).
    CallDepth,
    /// Length of a string in bytes.
    StringSize,
    /// Number of elements of an array.
    ArraySize,
    /// Number of entries of a map.
    MapSize,
    /// Number of intents one evaluation may return.
    Intents,
    /// Nesting depth of expressions when compiling.
    ExprDepth,
    /// Number of variables in scope.
    Variables,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Operations => "max_operations",
            Limit::CallDepth => "max_call_depth",
            Limit::StringSize => "max_string_size",
            Limit::ArraySize => "max_array_size",
            Limit::MapSize => "max_map_size",
            Limit::Intents => "max_intents",
            Limit::ExprDepth => "max_expr_depth",
            Limit::Variables => "max_variables",
        })
    }
}

/// Where in a script something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// 1-based column, if known.
    pub column: Option<usize>,
}

impl Location {
    /// `LINE:COL` as editors read it (0 where unknown).
    pub fn line_col(&self) -> String {
        format!("{}:{}", self.line.unwrap_or(0), self.column.unwrap_or(0))
    }

    /// The location of a Rhai position.
    pub(crate) fn of(pos: rhai::Position) -> Self {
        Self { line: pos.line(), column: pos.position() }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}"),
            (Some(l), None) => write!(f, "line {l}"),
            _ => f.write_str("unknown line"),
        }
    }
}

/// Errors from loading, checking and evaluating policies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The script does not compile, or names a token or address the config does not know.
    #[error("{}:{}: policy `{policy}`: {message}", file.display(), at.line_col())]
    Compile {
        /// Policy name.
        policy: String,
        /// Script file.
        file: PathBuf,
        /// Where the error is.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// The script broke a sandbox limit and was stopped.
    #[error("{}:{}: policy `{policy}` stopped: limit {limit} exceeded", file.display(), at.line_col())]
    LimitExceeded {
        /// Policy name.
        policy: String,
        /// Script file.
        file: PathBuf,
        /// The limit broken.
        limit: Limit,
        /// Where the script was when stopped.
        at: Location,
    },
    /// The script gave a registered function bad input (unknown token, float amount, …).
    #[error("{}:{}: policy `{policy}`: {message}", file.display(), at.line_col())]
    BadInput {
        /// Policy name.
        policy: String,
        /// Script file.
        file: PathBuf,
        /// The offending call.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// The script failed at run time (a type error, `throw`, a division by zero, …).
    #[error("{}:{}: policy `{policy}`: {message}", file.display(), at.line_col())]
    Runtime {
        /// Policy name.
        policy: String,
        /// Script file.
        file: PathBuf,
        /// Where it failed.
        at: Location,
        /// Rhai's description.
        message: String,
    },
    /// A registered function or the engine panicked; the panic was contained.
    #[error("{}:{}: policy `{policy}`: internal panic contained: {message}", file.display(), at.line_col())]
    Panicked {
        /// Policy name.
        policy: String,
        /// Script file.
        file: PathBuf,
        /// Where the script was, if known.
        at: Location,
        /// The panic payload.
        message: String,
    },
    /// The configuration is invalid (bad cron, unknown trigger, duplicate policy, …).
    #[error("config: {0}")]
    Config(String),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A fixture file is malformed.
    #[error("fixture {}: {message}", path.display())]
    Fixture {
        /// The fixture file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A fixture names a token or recipient the config does not know (the message names the
    /// nearest known one).
    #[error("{}:{}: fixture: {message}", path.display(), at.line_col())]
    FixtureName {
        /// The fixture file.
        path: PathBuf,
        /// Where the name is in it.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// A version of a policy does not do what one of its own fixtures expects.
    #[error("policy `{policy}` fails its fixture {}: {diff}", fixture.display())]
    FixtureFailed {
        /// Policy name.
        policy: String,
        /// The fixture it fails.
        fixture: PathBuf,
        /// What differed.
        diff: String,
    },
    /// A snapshot could not be read from the chain.
    #[error("snapshot at block {block}: {message}")]
    Snapshot {
        /// Block asked for.
        block: u64,
        /// The cause.
        message: String,
    },
}

impl PolicyError {
    /// Whether the script broke a sandbox limit.
    pub fn is_limit(&self) -> bool {
        matches!(self, PolicyError::LimitExceeded { .. })
    }

    /// The limit broken, if this is a limit error.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            PolicyError::LimitExceeded { limit, .. } => Some(*limit),
            _ => None,
        }
    }

    /// Whether the script failed to compile or resolve names.
    pub fn is_compile(&self) -> bool {
        matches!(self, PolicyError::Compile { .. })
    }

    /// Whether the fault is in the script (as opposed to config, files or the chain).
    pub fn is_script_fault(&self) -> bool {
        matches!(
            self,
            PolicyError::Compile { .. }
                | PolicyError::LimitExceeded { .. }
                | PolicyError::BadInput { .. }
                | PolicyError::Runtime { .. }
        )
    }

    /// Whether retrying later may succeed (the chain or a file was unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, PolicyError::Io { .. } | PolicyError::Snapshot { .. })
    }

    /// The policy concerned, if any.
    pub fn policy(&self) -> Option<&str> {
        match self {
            PolicyError::Compile { policy, .. }
            | PolicyError::LimitExceeded { policy, .. }
            | PolicyError::BadInput { policy, .. }
            | PolicyError::Runtime { policy, .. }
            | PolicyError::Panicked { policy, .. }
            | PolicyError::FixtureFailed { policy, .. } => Some(policy),
            _ => None,
        }
    }

    /// The script line concerned, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Compile { at, .. }
            | PolicyError::LimitExceeded { at, .. }
            | PolicyError::BadInput { at, .. }
            | PolicyError::Runtime { at, .. }
            | PolicyError::Panicked { at, .. } => at.line,
            _ => None,
        }
    }
}

/// Result alias of the policies crate.
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;
