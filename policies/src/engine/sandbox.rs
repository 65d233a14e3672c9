//! The sandbox: an engine with no I/O, no clock, no randomness, and limits on everything.

use std::path::Path;

use rhai::{Engine, EvalAltResult, OptimizationLevel};

use crate::api::Fault;
use crate::config::Limits;
use crate::error::{Limit, Location, PolicyError};

/// Deepest expression nesting accepted at compile time (top level, inside functions).
const MAX_EXPR_DEPTH: (usize, usize) = (64, 32);

/// A Rhai engine with the script API registered and every limit set.
///
/// Rhai's standard packages have no file, network, clock (`no_time`) or random access; module
/// imports are refused and `eval` is disabled so a script cannot load code the checker never saw.
pub(crate) fn engine(limits: &Limits) -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(limits.max_variables)
        .set_max_expr_depths(MAX_EXPR_DEPTH.0, MAX_EXPR_DEPTH.1)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(true)
        .set_optimization_level(OptimizationLevel::Simple)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    e.disable_symbol("eval");
    e.on_print(|s| tracing::debug!(target: "policy", "{s}"));
    e.on_debug(|s, _, pos| tracing::debug!(target: "policy", ?pos, "{s}"));
    crate::api::register(&mut e);
    e
}

/// Turns a Rhai evaluation error into a [`PolicyError`] naming the policy, the limit and the line.
///
/// Errors raised inside script functions are unwrapped to the innermost one, whose position is
/// the line that actually failed.
pub(crate) fn classify(policy: &str, file: &Path, err: &EvalAltResult) -> PolicyError {
    let (policy, file) = (policy.to_owned(), file.to_owned());
    let at = Location::of(err.position());
    let limit = |limit| PolicyError::LimitExceeded { policy: policy.clone(), file: file.clone(), limit, at };
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => classify(&policy, &file, inner),
        EvalAltResult::ErrorTooManyOperations(_) => limit(Limit::Operations),
        EvalAltResult::ErrorStackOverflow(_) => limit(Limit::CallDepth),
        EvalAltResult::ErrorTooManyVariables(_) => limit(Limit::Variables),
        EvalAltResult::ErrorDataTooLarge(what, _) => limit(data_limit(what)),
        EvalAltResult::ErrorRuntime(value, _) => match value.clone().try_cast::<Fault>() {
            Some(Fault::BadInput(message)) => PolicyError::BadInput { policy, file, at, message },
            Some(Fault::Limit(l)) => limit(l),
            Some(Fault::Panic(message)) => PolicyError::Panicked { policy, file, at, message },
            None => PolicyError::Runtime { policy, file, at, message: without_position(err) },
        },
        other => PolicyError::Runtime { policy, file, at, message: without_position(other) },
    }
}

/// Rhai's description of an error without its trailing `(line L, position C)`: the message
/// already starts with `FILE:LINE:COL`.
fn without_position(err: &EvalAltResult) -> String {
    let text = err.to_string();
    let suffix = format!(" ({})", err.position());
    match text.strip_suffix(&suffix) {
        Some(stripped) if !err.position().is_none() => stripped.to_string(),
        _ => text,
    }
}

/// Which limit a Rhai "data too large" error is about.
fn data_limit(what: &str) -> Limit {
    if what.contains("string") {
        Limit::StringSize
    } else if what.contains("map") {
        Limit::MapSize
    } else {
        Limit::ArraySize
    }
}
