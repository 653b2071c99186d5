//! Command-line interface: argument parsing and everything printed. The library does the work;
//! this module turns its results into one summary on stdout and its failures into one line on
//! stderr and an exit code.

pub mod audit;
pub mod key;
pub mod keygen;
pub mod report;
pub mod run;
pub mod show;
pub mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::day::Day;
use crate::pipeline::Failure;

fn parse_day(s: &str) -> Result<Day, String> {
    Day::parse(s).ok_or_else(|| format!("{s:?} is not a date like 2026-11-24"))
}

#[derive(Debug, Parser)]
#[command(
    name = "logveil",
    version,
    about = "Anonymous analytics tables from web-server access logs"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: read logs, pseudonymise, aggregate, disclose, write Parquet.
    Run(run::RunArgs),
    /// Write a new random 256-bit key (hex) to FILE, mode 0600. Never overwrites.
    Keygen {
        /// Where to write the key.
        file: PathBuf,
    },
    /// Manage a key ring: one master key per period, for crypto-shredding by period.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Check a finished output directory independently of the writer: schemas, identifiers,
    /// the k rule, run records and hashes. Exits 5 on any finding.
    Audit {
        /// The output directory.
        dir: PathBuf,
    },
    /// Write one self-contained HTML report (offline, no external requests) from an output
    /// directory's released tables and run records only.
    Report {
        /// The output directory.
        out: PathBuf,
        /// First day (default: 30 days before --to).
        #[arg(long, value_parser = parse_day)]
        from: Option<Day>,
        /// Last day (default: the latest published day).
        #[arg(long, value_parser = parse_day)]
        to: Option<Day>,
        /// Language (default: the pipeline's `[report] lang`, else ru).
        #[arg(long, value_enum)]
        lang: Option<crate::report::i18n::Lang>,
        /// Where to write it (default: OUT/report.html).
        #[arg(short = 'o', long = "output")]
        file: Option<PathBuf>,
    },
    /// A quick look at one published day: headline and top rows as aligned tables.
    Show {
        /// The output directory.
        out: PathBuf,
        /// The day (default: the latest published).
        #[arg(long, value_parser = parse_day)]
        date: Option<Day>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Check a pipeline definition without running it.
    Validate {
        /// Pipeline file (default: the embedded demo pipeline).
        #[arg(long)]
        pipeline: Option<PathBuf>,
    },
}

/// Runs a parsed command line; `Ok` carries the text for stdout.
pub fn dispatch(args: Args) -> Result<String, Failure> {
    match args.command {
        Command::Run(a) => run::run(a),
        Command::Keygen { file } => keygen::keygen(&file),
        Command::Key(command) => key::key(command),
        Command::Audit { dir } => audit::audit(&dir),
        Command::Validate { pipeline } => validate::validate(pipeline.as_deref()),
        Command::Report {
            out,
            from,
            to,
            lang,
            file,
        } => report::report(&out, from, to, lang, file),
        Command::Show { out, date, json } => show::show(&out, date, json),
    }
}
