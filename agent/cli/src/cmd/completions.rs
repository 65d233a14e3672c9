//! `treasury completions SHELL`: the shell completion script on stdout.
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `treasury completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell (bash, zsh, fish, elvish, powershell).
    shell: Shell,
}

impl CompletionsArgs {
    /// Prints the completion script, e.g. `treasury completions bash > /etc/bash_completion.d/treasury`.
    pub fn run(self) -> anyhow::Result<()> {
        use std::io::Write;
        let mut command = crate::cli::Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut command, "treasury", &mut script);
        match std::io::stdout().write_all(&script) {
            // A reader that stops early (`| head`) is not an error of ours.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        }
    }
}
