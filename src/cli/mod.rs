//! Command-line interface: argument parsing and everything printed. The library does the work;
//! this module turns its results into one summary on stdout and its failures into one line on
//! stderr and an exit code.

pub mod audit;
pub mod key;
pub mod keygen;
pub mod report;
pub mod run;
pub mod show;
pub mod stage;
pub mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::day::Day;
use crate::pipeline::Failure;

fn parse_day(s: &str) -> Result<Day, String> {
    Day::parse(s).ok_or_else(|| format!("{s:?} is not a date like 2026-11-24"))
}

/// An output directory to read: local, or an object-store location downloaded (tables and
/// committed run records only) into a private temporary directory removed on drop.
pub struct LocalOutput {
    path: PathBuf,
    remote: Option<crate::store::Remote>,
    temporary: bool,
}

impl LocalOutput {
    pub fn open(out: &std::path::Path) -> Result<LocalOutput, Failure> {
        use crate::pipeline::exit;
        let Some(remote) = crate::store::remote(out) else {
            if !out.join("_runs").is_dir() {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "{} is not a logveil output directory (no _runs/); give the `output` of a pipeline",
                        out.display()
                    ),
                ));
            }
            return Ok(LocalOutput {
                path: out.to_path_buf(),
                remote: None,
                temporary: false,
            });
        };
        let remote = remote.map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
        let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("logveil-out-{hex}"));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&path)
            .map_err(|e| Failure::new(exit::FAILED, format!("{}: {e}", path.display())))?;
        let local = LocalOutput {
            path,
            remote: Some(remote),
            temporary: true,
        };
        let remote = local.remote.as_ref().expect("set");
        let n = remote
            .download_output(&local.path)
            .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
        if n == 0 || !local.path.join("_runs").is_dir() {
            return Err(Failure::new(
                exit::USAGE,
                format!("{} holds no logveil output (no _runs/)", remote.shown()),
            ));
        }
        Ok(local)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn remote(&self) -> Option<&crate::store::Remote> {
        self.remote.as_ref()
    }
}

impl Drop for LocalOutput {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
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
    /// The stages of a run as separate commands, for an engine that runs them as tasks
    /// (Spark, `xargs -P`): plan, shard, gather, reduce, merge. See docs/SCALING.md.
    #[command(subcommand)]
    Stage(stage::StageCommand),
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
        Command::Stage(command) => stage::stage(command),
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
