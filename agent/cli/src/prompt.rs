//! Secrets from the environment, or typed at a prompt when a terminal is attached.
use std::io::IsTerminal;

use anyhow::Context;
use zeroize::Zeroizing;

/// The secret in the environment variable `var`; when it is unset and stdin is a terminal, asks
/// for it on the terminal without echo (twice when `confirm`, for a new secret).
pub fn secret_or_prompt(var: &str, label: &str, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(value) = std::env::var(var) {
        return Ok(Zeroizing::new(value));
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{var} is not set and no terminal is attached to ask for it");
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("{label} ({var} is not set): "))
            .with_context(|| format!("reading {label} from the terminal"))?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password(format!("{label} again: "))
                .with_context(|| format!("reading {label} from the terminal"))?,
        );
        if *again != *first {
            anyhow::bail!("the two entries differ");
        }
    }
    Ok(first)
}
