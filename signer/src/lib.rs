//! Signers for treasury operations: the FROST quorum and the HSM-backed root.
//!
//! # Layout
//! - [`quorum`]: FROST signer nodes (server), the coordinator (client), DKG, refresh, nonce store.
//! - [`root`]: the PKCS#11 root signer, its guard, approval queue and service.
pub mod metrics;
pub mod quorum;
pub mod root;
pub mod serve;

/// `err` and its causes joined by `: `, each cause once (a cause whose text the message before it
/// already carries, as some libraries' errors do, is left out): what logs and HTTP answers print.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;
    use crate::root::RootError;

    #[test]
    fn the_chain_names_what_failed_then_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let err = RootError::ConfigFile { path: "/nonexistent/root.toml".into(), source: io };
        let text = error_chain(&err);
        assert_eq!(
            text,
            "configuration: cannot read or write /nonexistent/root.toml: No such file or directory"
        );
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }
}
