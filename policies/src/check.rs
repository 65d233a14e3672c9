//! `treasury policy check`: compile scripts and resolve their names without running them.

use std::path::Path;

use crate::config::PoliciesConfig;
use crate::engine::PolicyEngine;
use crate::error::{PolicyError, Result};
use crate::view::Book;

/// Compiles every file and, when a config is given, checks its literal token symbols, recipients
/// and amounts; returns every problem found (empty when all is well).
///
/// Errors reading the config stop the check; an unreadable script is reported like a compile
/// error.
pub fn check_files(files: &[&Path], config: Option<&Path>) -> Result<Vec<PolicyError>> {
    let cfg = config.map(PoliciesConfig::from_file).transpose()?;
    let engine = PolicyEngine::new(cfg.as_ref().map(|c| c.limits).unwrap_or_default());
    let book = cfg.as_ref().map(Book::from_config);
    let mut problems = Vec::new();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(source) => problems.extend(engine.check(file, &source, book.as_ref())),
            Err(source) => problems.push(PolicyError::Io { path: file.to_path_buf(), source }),
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_file_with_file_line_col() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("t.toml");
        std::fs::write(
            &cfg,
            "tokens.USDC = { address = \"0x0000000000000000000000000000000000000001\", decimals = 6 }\n",
        )
        .unwrap();
        let good = dir.path().join("good.rhai");
        let typo = dir.path().join("typo.rhai");
        std::fs::write(&good, "let b = balance(\"USDC\");\n").unwrap();
        std::fs::write(&typo, "// pays\n  let b = balance(\"USCD\");\n").unwrap();
        let problems = check_files(&[&good, &typo], Some(&cfg)).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        let text = problems[0].to_string();
        assert!(text.starts_with(&format!("{}:2:", typo.display())), "{text}");
        assert!(text.contains("unknown token `USCD`"), "{text}");
        // Without a config, only syntax is checked.
        assert!(check_files(&[&typo], None).unwrap().is_empty());
    }
}
