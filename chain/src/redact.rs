//! RPC URLs carry API keys in their path, query or credentials: text shown in errors and logs
//! keeps only each URL's scheme, host and port.

/// `text` with every `scheme://…` URL cut to `scheme://host[:port]`, followed by `/…` when
/// anything (credentials, path, query) was hidden.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i);
        out.push_str(before);
        out.push_str("://");
        let after = &after[3..];
        let end =
            after.find(|c: char| c.is_whitespace() || "\"'<>()[]{},`".contains(c)).unwrap_or(after.len());
        let url = &after[..end];
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let authority = &url[..authority_end];
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        out.push_str(host);
        if host.len() < url.len() {
            out.push_str("/…");
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// An error shown with its causes, every URL in them redacted ([`redact_urls`]); the original
/// error (which may print the full URL) is not kept.
#[derive(Debug)]
pub struct Redacted(String);

impl Redacted {
    /// The redacted text of `e` and its causes.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut parts: Vec<String> = vec![e.to_string()];
        let mut cur = e.source();
        while let Some(s) = cur {
            let t = s.to_string();
            if !parts.contains(&t) {
                parts.push(t);
            }
            cur = s.source();
        }
        Self(redact_urls(&parts.join(": ")))
    }
}

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Redacted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_scheme_host_and_port_only() {
        assert_eq!(
            redact_urls("error for url (https://u:p@eth.example:8545/v3/KEY?x=1): refused"),
            "error for url (https://eth.example:8545/…): refused"
        );
        assert_eq!(redact_urls("ws://127.0.0.1:8546 and http://h"), "ws://127.0.0.1:8546 and http://h");
        assert_eq!(redact_urls("no url here"), "no url here");
    }
}
