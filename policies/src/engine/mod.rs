//! The engine: compiles scripts once and evaluates them against snapshots, each in its sandbox.

pub(crate) mod sandbox;
mod shared;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::{AST, CallFnOptions, Dynamic, Engine, Scope};
use rhai::{ASTNode, Expr, FnCallExpr, Position, Stmt};

use crate::api::{Output, RunCtx, panic_message};
use crate::config::Limits;
use crate::error::{Location, PolicyError, Result};
use crate::intent::Intent;
use crate::period::Period;
use crate::view::{Book, Payment, SnapshotView};

/// Name of the empty function appended to every script, called so the top-level statements run
/// with the evaluation's context attached (Rhai passes a call tag only through `call_fn`).
const ENTRY: &str = "__treasury_entry";

/// A script compiled once, ready to be evaluated on any snapshot.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// Policy name.
    pub name: String,
    /// Script file it came from (for messages).
    pub file: PathBuf,
    /// Period default idempotency keys are scoped to.
    pub period: Period,
    ast: Arc<AST>,
}

/// Which trigger and history an evaluation runs with.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// Trigger label used in default idempotency keys (usually the trigger kind).
    pub trigger: &'a str,
    /// Payments already made (any policy's; each policy sees its own).
    pub history: &'a [Payment],
}

/// The sandboxed Rhai engine with the script API; build once and share.
pub struct PolicyEngine {
    engine: Arc<Engine>,
    limits: Limits,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// An engine enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { engine: shared::engine(&limits), limits }
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The Rhai engine itself (its metadata feeds the reference).
    pub(crate) fn rhai(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `source` and checks every literal token symbol and recipient against `book`.
    pub fn compile(
        &self,
        name: &str,
        file: &Path,
        source: &str,
        period: Period,
        book: &Book,
    ) -> Result<CompiledPolicy> {
        let compile_err = |at: Location, message: String| PolicyError::Compile {
            policy: name.to_owned(),
            file: file.to_owned(),
            at,
            message,
        };
        let mut ast = self
            .engine
            .compile(source)
            .map_err(|e| compile_err(Location::of(e.position()), parse_message(&e, source)))?;
        // The same refusals as `policy check`, so no command (test, simulate, diff, reload) runs
        // a script that check would refuse.
        let mut problems = unknown_functions(&self.engine, &ast);
        problems.extend(resolve_names(&ast, book));
        if let Some((at, message)) = problems.into_iter().min_by_key(|(at, _)| (at.line, at.column)) {
            return Err(compile_err(at, message));
        }
        let entry = self
            .engine
            .compile(format!("fn {ENTRY}() {{}}"))
            .map_err(|e| compile_err(Location::default(), e.to_string()))?;
        ast.combine(entry);
        Ok(CompiledPolicy { name: name.to_owned(), file: file.to_owned(), period, ast: Arc::new(ast) })
    }

    /// Every compile and name error of `source`, for `policy check`; names are resolved only when
    /// a `book` is given.
    pub fn check(&self, file: &Path, source: &str, book: Option<&Book>) -> Vec<PolicyError> {
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let err =
            |at, message| PolicyError::Compile { policy: name.clone(), file: file.to_owned(), at, message };
        match self.engine.compile(source) {
            Err(e) => vec![err(Location::of(e.position()), parse_message(&e, source))],
            Ok(ast) => {
                let mut problems = unknown_functions(&self.engine, &ast);
                problems.extend(book.map(|b| resolve_names(&ast, b)).unwrap_or_default());
                problems.into_iter().map(|(at, m)| err(at, m)).collect()
            }
        }
    }

    /// Runs `policy` on `view` and returns its intents, or the error that stopped it.
    ///
    /// Deterministic: the same policy, view and history give the same intents. A script that
    /// breaks a limit is stopped (operations bound the run time) and nothing it produced is kept.
    pub fn evaluate(
        &self,
        policy: &CompiledPolicy,
        view: &Arc<SnapshotView>,
        run: Run<'_>,
    ) -> Result<Vec<Intent>> {
        let ctx = Arc::new(RunCtx {
            policy: policy.name.clone(),
            trigger: run.trigger.to_owned(),
            period: policy.period,
            view: Arc::clone(view),
            history: run.history.iter().filter(|p| p.policy == policy.name).cloned().collect(),
            max_intents: self.limits.max_intents,
            out: Mutex::new(Output::default()),
        });
        let options = CallFnOptions::new().with_tag(Arc::clone(&ctx)).eval_ast(true);
        let mut scope = Scope::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.engine.call_fn_with_options::<Dynamic>(options, &mut scope, &policy.ast, ENTRY, ())
        }));
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let mut err = sandbox::classify(&policy.name, &policy.file, &e);
                if let (PolicyError::Runtime { message, .. }, Some(call)) = (&mut err, function_not_found(&e))
                {
                    *message = no_such_call(&self.engine, &policy.ast, call);
                }
                return Err(err);
            }
            Err(payload) => {
                return Err(PolicyError::Panicked {
                    policy: policy.name.clone(),
                    file: policy.file.clone(),
                    at: Location::default(),
                    message: panic_message(&payload),
                });
            }
        }
        let mut out = ctx.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(std::mem::take(&mut out.intents))
    }
}

/// Which arguments of which API functions name tokens (`t`), recipients (`r`) or exact amounts
/// (`a`), so literal arguments can be checked before the script ever runs.
fn arg_roles(name: &str) -> &'static str {
    match name {
        "balance" | "has_price" | "price" | "price_age" | "price_stale" | "value" | "weight"
        | "has_budget" | "budget_remaining" => "t",
        "paid" => "rt",
        "paid_total" => "t",
        "pay" => "rta",
        "swap" => "ttaa",
        "dec" => "a",
        _ => "",
    }
}

/// Checks literal token symbols, recipients and amounts in calls to the API.
fn resolve_names(ast: &AST, book: &Book) -> Vec<(Location, String)> {
    let mut errors = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos))) | Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => {
                check_call(call, *pos, book, &mut errors)
            }
            _ => {}
        }
        true
    });
    errors
}

/// Calls to functions that neither the engine (treasury's API and Rhai's standard packages) nor the
/// script itself defines: a typo such as `blance("ETH")` would otherwise only fail when run.
fn unknown_functions(engine: &Engine, ast: &AST) -> Vec<(Location, String)> {
    let mut known: std::collections::HashSet<String> = engine
        .gen_fn_signatures(true)
        .iter()
        .filter_map(|sig| sig.split('(').next())
        .map(|name| name.trim().to_string())
        .collect();
    known.extend(ast.iter_functions().map(|f| f.name.to_string()));
    known.extend(RHAI_KEYWORD_FUNCTIONS.iter().map(|s| s.to_string()));
    let mut errors = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::FnCall(call, pos)) | ASTNode::Stmt(Stmt::FnCall(call, pos))) =
            path.last()
            && call.op_token.is_none()
            && call.namespace.is_empty()
            && !known.contains(call.name.as_str())
        {
            let hint = crate::view::suggest(call.name.as_str(), known.iter());
            errors.push((Location::of(*pos), format!("unknown function `{}`{hint}", call.name)));
        }
        true
    });
    errors
}

/// A compile error's message; an undefined variable names the nearest variable the script declares.
fn parse_message(err: &rhai::ParseError, source: &str) -> String {
    match err.err_type() {
        rhai::ParseErrorType::VariableUndefined(name) => {
            let declared = declared_names(source);
            format!("undefined variable `{name}`{}", crate::view::suggest(name, declared.iter()))
        }
        other => other.to_string(),
    }
}

/// The call signature (`name (types)`) of a "function not found" error, unwrapped from the
/// script functions it was raised in.
fn function_not_found(err: &rhai::EvalAltResult) -> Option<&str> {
    match err {
        rhai::EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => function_not_found(inner),
        rhai::EvalAltResult::ErrorFunctionNotFound(call, _) => Some(call),
        _ => None,
    }
}

/// What to say about a call no function matches: the signatures of that name (the engine's and
/// the script's own), else the nearest known name.
fn no_such_call(engine: &Engine, ast: &AST, call: &str) -> String {
    let name = call.split([' ', '(']).next().unwrap_or(call);
    let args = call[name.len()..].trim();
    let mut all = engine.gen_fn_signatures(true);
    all.extend(ast.iter_functions().map(|f| format!("{}({})", f.name, f.params.join(", "))));
    let name_of = |sig: &str| sig.split('(').next().unwrap_or_default().trim().to_string();
    let signatures: Vec<&str> =
        all.iter().filter(|sig| name_of(sig) == name).map(String::as_str).take(8).collect();
    if signatures.is_empty() {
        let known: std::collections::HashSet<String> = all.iter().map(|sig| name_of(sig)).collect();
        return format!("no function `{name}` takes {args}{}", crate::view::suggest(name, known.iter()));
    }
    let list = if signatures.len() == 1 { "it is" } else { "they are" };
    format!("no `{name}` takes {args}; {list}: {}", signatures.join("; "))
}

/// The names a script declares: `let` and `const` variables, loop variables, and the parameters
/// of its functions and closures (comments and strings skipped).
fn declared_names(source: &str) -> Vec<String> {
    let tokens = tokens(source);
    let ident = |t: &str| t.starts_with(|c: char| c.is_alphabetic() || c == '_');
    let mut names = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let until = match tokens[i] {
            "let" | "const" => {
                names.extend(tokens.get(i + 1).filter(|t| ident(t)).map(|t| t.to_string()));
                None
            }
            "for" => Some("in"),
            "fn" => {
                i += 1; // the function's name
                Some(")")
            }
            "|" => Some("|"),
            _ => None,
        };
        if let Some(end) = until {
            i += 1;
            while i < tokens.len() && tokens[i] != end {
                if ident(tokens[i]) && tokens[i] != "in" {
                    names.push(tokens[i].to_string());
                }
                i += 1;
            }
        }
        i += 1;
    }
    names.sort();
    names.dedup();
    names
}

/// Identifiers and single punctuation characters of `source`, without comments or string literals.
fn tokens(source: &str) -> Vec<&str> {
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if bytes[i..].starts_with(b"//") {
            i = bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| i + n);
        } else if bytes[i..].starts_with(b"/*") {
            i = bytes[i + 2..].windows(2).position(|w| w == b"*/").map_or(bytes.len(), |n| i + n + 4);
        } else if c == b'"' || c == b'`' || c == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(&source[start..i]);
        } else if c.is_ascii_whitespace() || !c.is_ascii() {
            i += 1;
        } else {
            out.push(&source[i..i + 1]);
            i += 1;
        }
    }
    out
}

/// Functions the Rhai language itself provides as keywords rather than registered functions.
const RHAI_KEYWORD_FUNCTIONS: &[&str] =
    &["print", "debug", "type_of", "Fn", "call", "curry", "is_shared", "is_def_var", "is_def_fn", "this"];

fn check_call(call: &FnCallExpr, pos: Position, book: &Book, errors: &mut Vec<(Location, String)>) {
    for (role, arg) in arg_roles(&call.name).chars().zip(call.args.iter()) {
        if let Some(e) = check_arg(role, arg, book) {
            let p = if arg.position().is_none() { pos } else { arg.position() };
            errors.push((Location::of(p), format!("{}(): {e}", call.name)));
        }
    }
}

fn check_arg(role: char, arg: &Expr, book: &Book) -> Option<String> {
    match (role, arg) {
        ('t', Expr::StringConstant(s, _)) => book.token(s).err(),
        ('r', Expr::StringConstant(s, _)) => book.recipient(s).err().map(|e| e.to_string()),
        ('a', Expr::FloatConstant(f, _)) => {
            Some(format!("{f} is a float; money must be exact: write dec(\"{f}\") or an integer"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_panic_in_a_registered_function_is_an_error_naming_policy_and_line() {
        let engine = PolicyEngine::new(Limits::default());
        let book = Book::default();
        let src = "let a = 1;\npanic_for_test();";
        let policy = engine.compile("p", Path::new("p.rhai"), src, Period::Day, &book).unwrap();
        let view = Arc::new(SnapshotView {
            chain_id: 1,
            block_number: 1,
            timestamp: 0,
            assets: BTreeMap::new(),
            book: Arc::new(book),
        });
        let err = engine.evaluate(&policy, &view, Run { trigger: "manual", history: &[] }).unwrap_err();
        assert!(matches!(err, PolicyError::Panicked { .. }), "{err}");
        assert_eq!((err.policy(), err.line()), (Some("p"), Some(2)));
        assert!(err.to_string().contains("blew up"), "{err}");
        // The engine is still usable afterwards.
        let ok = engine.compile("q", Path::new("q.rhai"), "alert(\"x\");", Period::Day, &view.book);
        assert_eq!(
            engine.evaluate(&ok.unwrap(), &view, Run { trigger: "manual", history: &[] }).unwrap().len(),
            1
        );
    }
}
