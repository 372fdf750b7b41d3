//! `portico generate WHAT`: the man page and the shell completions, made from the clap
//! definitions in `cli/mod.rs`, written to stdout. The packaging script runs it on the very
//! binary it packages, so the page and the completions always describe that binary.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

/// What to write.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// The man page, portico(1), in roff.
    Man,
    Bash,
    Zsh,
    Fish,
}

pub(super) fn run(what: What) -> anyhow::Result<ExitCode> {
    let bytes = render(what)?;
    std::io::stdout()
        .lock()
        .write_all(&bytes)
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The file's bytes.
fn render(what: What) -> anyhow::Result<Vec<u8>> {
    let mut command = super::Cli::command();
    let mut out = Vec::new();
    let shell = match what {
        What::Man => {
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("cannot render the man page")?;
            return Ok(out);
        }
        What::Bash => clap_complete::Shell::Bash,
        What::Zsh => clap_complete::Shell::Zsh,
        What::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, "portico", &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_names_every_visible_command_and_not_this_one() {
        let page = String::from_utf8(render(What::Man).expect("man")).expect("utf-8");
        assert!(
            page.starts_with(".ie") || page.contains(".TH portico 1"),
            "{page}"
        );
        for command in ["serve", "check", "reload", "upgrade", "bindings", "probe"] {
            assert!(page.contains(command), "the page names {command}");
        }
        assert!(
            page.contains(crate::VERSION),
            "the page carries the version"
        );
        assert!(
            !page.contains("generate"),
            "the hidden command stays hidden"
        );
    }

    #[test]
    fn completions_complete_commands_and_options() {
        for (what, marker) in [
            (What::Bash, "complete -F"),
            (What::Zsh, "#compdef portico"),
            (What::Fish, "complete -c portico"),
        ] {
            let text = String::from_utf8(render(what).expect("render")).expect("utf-8");
            assert!(text.contains(marker), "{what:?}: {text}");
            assert!(
                text.contains("bindings") && text.contains("--config"),
                "{what:?}"
            );
        }
    }
}
