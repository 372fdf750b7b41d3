//! `portico import nginx|apache|iis FILE`: the Portico configuration on stdout (or `-o`),
//! the report on stderr. Exit 0 translated without problems, 1 translated with problems
//! found, 2 the source could not be read.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::import::{self, IisFiles, Source};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which server the configuration is from.
    #[arg(value_enum)]
    pub source: Source,
    /// Its main file: nginx.conf, apache2.conf (or one site's file), applicationHost.config.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write the configuration here instead of stdout (joined chain files go beside it).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// IIS: the output of `netsh http show sslcert`.
    #[arg(long, value_name = "FILE")]
    pub sslcert: Option<PathBuf>,
    /// IIS: where the certificates are, as THUMBPRINT.pem and THUMBPRINT.key.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.source != Source::Iis && (args.sslcert.is_some() || args.cert_dir.is_some()) {
        eprintln!("error: --sslcert and --cert-dir are for `portico import iis`");
        return Ok(ExitCode::from(2));
    }
    // Absolute paths: the output's relative paths would be relative to its own directory.
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let iis = IisFiles {
        sslcert: args.sslcert.as_ref().map(|p| cwd.join(p)),
        cert_dir: args.cert_dir.as_ref().map(|p| cwd.join(p)),
    };
    let mut plan = match import::read(args.source, &cwd.join(&args.file), &iis) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let output = match &args.output {
        Some(o) => cwd.join(o),
        None => cwd.join("portico.toml"),
    };
    let chains = import::chains(&mut plan, &output);
    for (path, bytes) in &chains {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let outcome = import::finish(plan, &output, chains);
    match &args.output {
        Some(_) => std::fs::write(&output, &outcome.toml)
            .with_context(|| format!("cannot write {}", output.display()))?,
        None => print!("{}", outcome.toml),
    }
    eprint!("{}", outcome.report());
    Ok(if outcome.problems() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
