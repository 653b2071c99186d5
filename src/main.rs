//! The `logveil` binary: parse arguments, run, map the outcome to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A panic's message can quote the data it was handling: only where it happened is shown
    // (standard error reaches cron mail, Spark's UI and event log).
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "logveil: internal error{at} (a bug; its message is withheld because it could quote input); the run did not finish: please report it"
        );
    }));
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
