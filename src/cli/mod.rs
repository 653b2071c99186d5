//! Command-line interface: argument parsing and everything printed. The library does the work;
//! this module turns its results into one summary on stdout and its failures into one line on
//! stderr and an exit code.

pub mod audit;
pub mod key;
pub mod keygen;
pub mod run;
pub mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::pipeline::Failure;

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
    }
}
