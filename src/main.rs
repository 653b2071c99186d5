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
    tune_allocator();
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

/// glibc's allocator, set before any thread starts. By default it raises its mmap threshold
/// to the largest block freed so far (up to 32 MiB), so the reduce's per-bucket frames end up
/// in per-thread arenas that keep their freed pages: a 20 M-line run peaked at 270-290 MiB
/// of RSS with a live heap under 185 MiB. Blocks of 2 MiB and more are mapped (and returned
/// when freed); up to 64 MiB free at an arena's top is kept for reuse rather than trimmed,
/// which is what made a fixed threshold alone slow (docs/PERFORMANCE.md, ninth session).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
