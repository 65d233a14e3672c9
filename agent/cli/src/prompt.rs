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
    let first = read_hidden(&format!("{label} ({var} is not set): "))
        .with_context(|| format!("reading {label} from the terminal"))?;
    if confirm {
        let again = read_hidden(&format!("{label} again: "))
            .with_context(|| format!("reading {label} from the terminal"))?;
        if *again != *first {
            anyhow::bail!("the two entries differ");
        }
    }
    Ok(first)
}

/// Shows `prompt` on the controlling terminal and reads one line from it without echo. Echo is
/// turned off before the prompt is shown, so nothing typed once the prompt is visible is echoed.
fn read_hidden(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::{BufRead, Write};
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut hidden = saved.clone();
    hidden.local_modes.remove(LocalModes::ECHO);
    hidden.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&tty, OptionalActions::Now, &hidden)?;
    let restore = EchoRestore { tty: &tty, saved };
    (&tty).write_all(prompt.as_bytes())?;
    (&tty).flush()?;
    let mut line = Zeroizing::new(String::new());
    std::io::BufReader::new(&tty).read_line(&mut line)?;
    drop(restore);
    let typed = line.trim_end_matches(['\n', '\r']);
    Ok(Zeroizing::new(typed.to_owned()))
}

/// Puts the terminal's saved modes back, also when reading fails.
struct EchoRestore<'a> {
    tty: &'a std::fs::File,
    saved: rustix::termios::Termios,
}

impl Drop for EchoRestore<'_> {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(self.tty, rustix::termios::OptionalActions::Now, &self.saved);
    }
}

/// Whether stdin is a terminal someone can type a secret into.
fn terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// A passphrase from `var` or the key file `{var}_FILE`; when neither is set and a terminal is
/// attached, typed at a prompt (twice when `confirm`, for a new one). Without a terminal the
/// library's own error names the variable.
pub fn passphrase(
    var: &'static str,
    label: &str,
    confirm: bool,
) -> anyhow::Result<treasury_signer::quorum::store::Passphrase> {
    use treasury_signer::quorum::store::Passphrase;
    let set = std::env::var_os(var).is_some() || std::env::var_os(format!("{var}_FILE")).is_some();
    if set || !terminal() {
        return Ok(Passphrase::from_env(var)?);
    }
    let typed = secret_or_prompt(var, label, confirm)?;
    Ok(Passphrase::new(typed.as_bytes().to_vec()))
}

/// The HSM PIN from `file`, else `var`; when neither is given and a terminal is attached, typed
/// at a prompt. Without a terminal the library's own error names the variable.
pub fn pin(
    file: Option<&std::path::Path>,
    var: &str,
    label: &str,
) -> anyhow::Result<treasury_signer::root::Pin> {
    use treasury_signer::root::Pin;
    if file.is_some() || std::env::var_os(var).is_some() || !terminal() {
        return Pin::resolve(file, var).with_context(|| format!("reading the {label}"));
    }
    Ok(Pin::new(secret_or_prompt(var, label, false)?.as_str()))
}
