//! The `logveil` binary: parse arguments, run, map the outcome to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = logveil::cli::Args::parse();
    match logveil::cli::dispatch(args) {
        Ok(text) => {
            // A closed stdout (e.g. `| head`) is not a failure.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let _ = writeln!(std::io::stderr(), "logveil: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
