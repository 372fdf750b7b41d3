//! The `portico` binary: parse the command line, run the command, map the outcome to an exit
//! code (0 ok, 1 a problem found, 2 usage).

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = portico::cli::Cli::parse();
    let result = portico::cli::run(cli);
    // The log's last lines (a drained server's access log) before the process ends.
    portico::logging::finish();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
