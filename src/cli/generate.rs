//! `portico generate WHAT`: the man pages and the shell completions, made from the clap
//! definitions in `cli/mod.rs`. The packaging script runs it on the very binary it
//! packages, so the pages and the completions always describe that binary.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

/// What to write.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// The man pages in roff: portico(1) and portico-COMMAND(1) for each command.
    Man,
    Bash,
    Zsh,
    Fish,
}

pub(super) fn run(what: What, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match (what, dir) {
        (What::Man, Some(dir)) => man_pages(dir)?,
        (What::Man, None) => anyhow::bail!("man pages need a directory to go to"),
        (shell, _) => std::io::stdout()
            .lock()
            .write_all(&completions(shell))
            .context("cannot write to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes portico.1 and a page per visible command into `dir`.
fn man_pages(dir: &Path) -> anyhow::Result<()> {
    clap_mangen::generate_to(super::Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))
}

/// A shell's completion script (for `What::Man`, nothing).
fn completions(what: What) -> Vec<u8> {
    let shell = match what {
        What::Man => return Vec::new(),
        What::Bash => clap_complete::Shell::Bash,
        What::Zsh => clap_complete::Shell::Zsh,
        What::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut visible(super::Cli::command()),
        "portico",
        &mut out,
    );
    out
}

/// `command` without its hidden subcommands: clap_complete would offer them (it skips
/// hidden options, not hidden commands), and this one is no operator's.
fn visible(command: clap::Command) -> clap::Command {
    let subcommands: Vec<clap::Command> = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut top = clap::Command::new("portico")
        .version(crate::VERSION)
        .args(command.get_arguments().cloned())
        .subcommands(subcommands);
    if let Some(about) = command.get_about() {
        top = top.about(about.clone());
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_man_page_per_visible_command_and_none_for_this_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        man_pages(dir.path()).expect("man pages");
        let page = |name: &str| std::fs::read_to_string(dir.path().join(name));
        let top = page("portico.1").expect("portico.1");
        assert!(top.contains(".TH portico 1"), "{top}");
        assert!(top.contains(crate::VERSION), "the page carries the version");
        for command in ["serve", "check", "reload", "upgrade", "bindings", "probe"] {
            let sub = page(&format!("portico-{command}.1"))
                .unwrap_or_else(|e| panic!("portico-{command}.1: {e}"));
            assert!(sub.contains(&format!(".TH portico-{command} 1")), "{sub}");
        }
        assert!(page("portico-serve.1")
            .expect("serve")
            .contains("\\-\\-config"));
        assert!(
            page("portico-generate.1").is_err(),
            "the hidden command stays hidden"
        );
        assert!(!top.contains("generate"), "and is not listed");
    }

    #[test]
    fn completions_complete_commands_and_options() {
        for (what, marker, option) in [
            (What::Bash, "complete -F", "--config"),
            (What::Zsh, "#compdef portico", "--config"),
            (What::Fish, "complete -c portico", "-l config"),
        ] {
            let text = String::from_utf8(completions(what)).expect("utf-8");
            assert!(text.contains(marker), "{what:?}: {text}");
            assert!(
                text.contains("bindings") && text.contains(option),
                "{what:?}: {text}"
            );
            assert!(
                !text.contains("generate"),
                "{what:?}: the hidden command stays hidden"
            );
        }
    }
}
