//! The script API's reference: what each registered function takes, returns (units, rounding),
//! raises, with an example. The text is attached to the function where it is registered
//! ([`FnDoc::register`]); `docs/POLICIES.md` and `treasury policy docs` are generated from the
//! engine's own metadata, so an undocumented function or a stale document is an error.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rhai::{Engine, FuncRegistration, RhaiNativeFunc, Variant};
use serde::Deserialize;

use crate::config::Limits;
use crate::engine::PolicyEngine;
use crate::view::Book;

/// What the reference says of one registered function.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FnDoc {
    /// Section of the reference it belongs to.
    pub(crate) section: Section,
    /// Parameters as `name: Type`, in order.
    pub(crate) params: &'static [&'static str],
    /// The type it returns (`()` for none).
    pub(crate) returns: &'static str,
    /// What it does and what it returns, with units and rounding.
    pub(crate) text: &'static str,
    /// What makes it raise an error.
    pub(crate) errors: &'static str,
    /// A line of script using it.
    pub(crate) example: &'static str,
}

/// The reference's sections, in the order they appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Section {
    /// The block the policy runs at.
    Block,
    /// Balances, prices, budgets.
    Treasury,
    /// What the policy already paid.
    History,
    /// Calendar facts and period keys.
    Calendar,
    /// Intents: what a policy asks for.
    Intents,
    /// Numbers and money.
    Money,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Self::Block => "The block",
            Self::Treasury => "Balances, prices and budgets",
            Self::History => "What was paid",
            Self::Calendar => "Calendar and periods",
            Self::Intents => "Intents",
            Self::Money => "Money",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Block, Self::Treasury, Self::History, Self::Calendar, Self::Intents, Self::Money]
            .into_iter()
            .find(|x| x.title() == s)
    }
}

/// The first line of every doc comment: the section's title.
const SECTION_TAG: &str = "/// Section: ";

impl FnDoc {
    /// The doc comment Rhai stores with the function (and writes into definition files).
    fn comment(&self) -> String {
        let mut lines = vec![format!("{SECTION_TAG}{}", self.section.title()), String::from("///")];
        lines.extend(self.text.lines().map(|l| format!("/// {l}")));
        lines.push("///".into());
        lines.push(format!("/// Errors: {}", self.errors));
        lines.push("///".into());
        lines.push(format!("/// Example: `{}`", self.example));
        lines.join("\n")
    }

    /// Registers `func` as `name` on `engine` with this documentation.
    pub(crate) fn register<A: 'static, const N: usize, const X: bool, R, const F: bool, FUNC>(
        &self,
        engine: &mut Engine,
        name: &str,
        func: FUNC,
    ) where
        R: Variant + Clone,
        FUNC: RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
    {
        let info = self.params.iter().copied().chain([self.returns]);
        FuncRegistration::new(name)
            .with_params_info(info)
            .with_comments([self.comment()])
            .register_into_engine(engine, func);
    }
}

/// One function as Rhai's metadata describes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FnMeta {
    name: String,
    #[serde(default)]
    params: Vec<ParamMeta>,
    #[serde(default)]
    return_type: String,
    #[serde(default)]
    doc_comments: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ParamMeta {
    name: Option<String>,
    #[serde(rename = "type")]
    typ: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    functions: Vec<FnMeta>,
}

/// A registered function without documentation, or metadata that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// Functions registered without an [`FnDoc`].
    #[error("registered functions without documentation: {}", .0.join(", "))]
    Undocumented(Vec<String>),
    /// Rhai's metadata did not parse.
    #[error("cannot read the engine's function metadata")]
    Metadata(#[source] serde_json::Error),
}

impl FnMeta {
    fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| match (&p.name, &p.typ) {
                (Some(n), Some(t)) => format!("{n}: {t}"),
                (Some(n), None) => n.clone(),
                (None, Some(t)) => t.clone(),
                (None, None) => "_".into(),
            })
            .collect();
        let ret = if self.return_type.is_empty() || self.return_type == "()" {
            String::new()
        } else {
            format!(" -> {}", self.return_type)
        };
        format!("{}({}){ret}", self.name, params.join(", "))
    }

    /// The section named on the comment's first line, and the rest of the comment as text.
    fn doc(&self) -> Option<(Section, String)> {
        let comment = self.doc_comments.join("\n");
        let mut lines = comment.lines();
        let section = Section::parse(lines.next()?.strip_prefix(SECTION_TAG)?)?;
        let body: Vec<&str> =
            lines.map(|l| l.strip_prefix("/// ").or_else(|| l.strip_prefix("///")).unwrap_or(l)).collect();
        Some((section, body.join("\n").trim().to_owned()))
    }
}

/// The functions this crate registered (not Rhai's standard library), as Rhai describes them.
fn registered(engine: &Engine) -> Result<Vec<FnMeta>, ReferenceError> {
    let json = engine.gen_fn_metadata_to_json(false).map_err(ReferenceError::Metadata)?;
    let meta: Metadata = serde_json::from_str(&json).map_err(ReferenceError::Metadata)?;
    Ok(meta.functions)
}

/// The reference in Markdown: every registered function by section, then the sandbox's limits.
pub fn markdown(engine: &PolicyEngine) -> Result<String, ReferenceError> {
    let functions = registered(engine.rhai())?;
    let undocumented: Vec<String> =
        functions.iter().filter(|f| f.doc().is_none()).map(FnMeta::signature).collect();
    if !undocumented.is_empty() {
        return Err(ReferenceError::Undocumented(undocumented));
    }
    // Overloads with the same text (an optional options map, the refused float operators) share an entry.
    let mut sections: BTreeMap<Section, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for f in &functions {
        let (section, text) = f.doc().expect("checked above");
        let entries = sections.entry(section).or_default();
        match entries.iter_mut().find(|(t, _)| *t == text) {
            Some((_, sigs)) => {
                sigs.push(f.signature());
                sigs.sort();
            }
            None => entries.push((text, vec![f.signature()])),
        }
    }
    let mut out = String::from(HEADER);
    for (section, entries) in sections {
        let _ = writeln!(out, "{}\n## {}\n", if out.ends_with("\n\n") { "" } else { "\n" }, section.title());
        for (text, sigs) in entries {
            out.push_str("```rhai\n");
            for s in &sigs {
                let _ = writeln!(out, "{s}");
            }
            out.push_str("```\n\n");
            out.push_str(&text);
            out.push_str("\n\n");
        }
    }
    out.push_str(&limits_section(&Limits::default()));
    Ok(out)
}

const HEADER: &str = "# Policy reference

Generated from the engine by `treasury policy docs`; the test suite fails when this file and the
engine disagree. Amounts are decimals in whole tokens (`dec(\"1.5\")`, `100`), never floats;
token symbols and recipients are the names in the config's `[policies.tokens]` and
`[policies.addresses]` (a recipient may also be a 0x address). An error raised by a function stops
the policy's evaluation for that block and names the policy, the file's line and column, and for an
unknown name the nearest known one.
";

/// The sandbox's limits with their defaults and what hitting each looks like.
fn limits_section(l: &Limits) -> String {
    let rows = [
        (
            "max_operations",
            l.max_operations.to_string(),
            "operations (statements, calls, loop turns) per evaluation",
        ),
        ("max_call_depth", l.max_call_depth.to_string(), "nested function calls"),
        ("max_string_size", l.max_string_size.to_string(), "bytes of one string"),
        ("max_array_size", l.max_array_size.to_string(), "elements of one array"),
        ("max_map_size", l.max_map_size.to_string(), "entries of one map"),
        ("max_intents", l.max_intents.to_string(), "intents one evaluation may return"),
        ("max_variables", l.max_variables.to_string(), "variables in scope"),
    ];
    let mut out = String::from(
        "## Limits\n\nSet in `[policies.limits]`; 0 is refused (Rhai reads it as no limit). A script that \
         hits one is stopped, returns no intents for that block, and the error names the limit and the \
         line: ``FILE:LINE:COL: policy `NAME` stopped: limit max_operations exceeded``.\n\n\
         | limit | default | bounds |\n|---|---:|---|\n",
    );
    for (name, default, what) in rows {
        let _ = writeln!(out, "| `{name}` | {default} | {what} |");
    }
    out
}

/// Rhai definitions of the script API (for the Rhai language server and editors), with the
/// config's token symbols and address-book names as constants when a `book` is given.
pub fn definitions(engine: &PolicyEngine, book: Option<&Book>) -> String {
    let mut scope = rhai::Scope::new();
    if let Some(book) = book {
        let tokens: rhai::Array = book.symbols().map(|s| rhai::Dynamic::from(s.to_owned())).collect();
        let names: rhai::Array = book.names().map(|s| rhai::Dynamic::from(s.to_owned())).collect();
        scope.push_constant("TOKENS", tokens);
        scope.push_constant("RECIPIENTS", names);
    }
    let defs = engine.rhai().definitions_with_scope(&scope).include_standard_packages(false);
    let mut out = String::from(
        "// Rhai definitions of treasury's policy API, written by `treasury policy definitions`.\n",
    );
    let mut text = defs.single_file();
    if let Some(book) = book {
        let listed =
            |names: Vec<&str>| names.iter().map(|n| format!("`\"{n}\"`")).collect::<Vec<_>>().join(", ");
        let tokens = format!(
            "/// The config's token symbols: {}.\nconst TOKENS: array;",
            listed(book.symbols().collect())
        );
        let names = format!(
            "/// The config's address-book names: {}.\nconst RECIPIENTS: array;",
            listed(book.names().collect())
        );
        text = text.replace("const TOKENS: array;", &tokens).replace("const RECIPIENTS: array;", &names);
    }
    out.push_str(&text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test builds register `panic_for_test` without documentation: the reference refuses to
    /// be generated and names it.
    #[test]
    fn an_undocumented_function_fails_the_reference() {
        let engine = PolicyEngine::new(Limits::default());
        let err = markdown(&engine).unwrap_err();
        let ReferenceError::Undocumented(names) = &err else { panic!("{err}") };
        assert_eq!(names.len(), 1, "{err}");
        assert!(names[0].starts_with("panic_for_test()"), "{err}");
    }
}
