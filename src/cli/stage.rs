//! `logveil stage …`: the stages of a run as separate commands over a work directory, for
//! an engine to run as tasks (docs/SCALING.md). `logveil run` is the same stages in one
//! process and writes the same files.

use std::fmt::Write;
use std::path::PathBuf;

use clap::Subcommand;

use crate::pipeline::Failure;
use crate::stages;

#[derive(Debug, Subcommand)]
pub enum StageCommand {
    /// Decide the run (inputs, buckets, run id) into a new work directory. Prints
    /// `run_id=`, `files=` (the number of inputs), `buckets=` and one `input=` line per input
    /// (its number is its position, from 0).
    Plan {
        #[command(flatten)]
        run: super::run::RunArgs,
        /// The work directory (new or empty; private, never inside the output).
        #[arg(long)]
        work: PathBuf,
    },
    /// Parse and pseudonymise some planned inputs into `WORK/shard/TASK/`.
    Shard {
        #[arg(long)]
        work: PathBuf,
        /// The task's name (letters, digits, - and _), unique among the run's shard tasks.
        #[arg(long)]
        task: String,
        /// Input numbers: `0,3,5-7`.
        #[arg(long, value_parser = stages::parse_indices)]
        inputs: std::vec::Vec<u32>,
    },
    /// After every shard task: add up their summaries and prepare each bucket's reduce.
    /// Exits 0 and prints `reshard` when a managed key ring gained masters: run the shard
    /// stage again, then this.
    Gather {
        #[arg(long)]
        work: PathBuf,
    },
    /// Sessions and partial tables of one bucket into `WORK/reduce/BUCKET/`.
    Reduce {
        #[arg(long)]
        work: PathBuf,
        #[arg(long)]
        bucket: usize,
    },
    /// After every reduce task: sum, apply k (or noise) once, publish as `logveil run` does,
    /// and remove the work directory.
    Merge {
        #[arg(long)]
        work: PathBuf,
    },
}

pub fn stage(command: StageCommand) -> Result<String, Failure> {
    let mut out = String::new();
    match command {
        StageCommand::Plan { run, work } => {
            let pipeline = super::run::pipeline_of(&run)?;
            let options = super::run::options_of(&run, None);
            let info = stages::plan(run.pipeline.as_deref(), &pipeline, &options, &work)?;
            let _ = writeln!(out, "run_id={}", info.run_id);
            let _ = writeln!(out, "files={}", info.files.len());
            let _ = writeln!(out, "buckets={}", info.buckets);
            for f in &info.files {
                let _ = writeln!(out, "input={}", f.display());
            }
        }
        StageCommand::Shard { work, task, inputs } => stages::shard(&work, &task, &inputs)?,
        StageCommand::Gather { work } => match stages::gather(&work)? {
            stages::Gathered::Days(days) => {
                let _ = match days {
                    Some((a, b)) => writeln!(out, "days={a}..{b}"),
                    None => writeln!(out, "days=none"),
                };
            }
            stages::Gathered::Reshard(notes) => {
                for n in notes {
                    eprintln!("note: {n}");
                }
                let _ = writeln!(out, "reshard");
            }
        },
        StageCommand::Reduce { work, bucket } => stages::reduce(&work, bucket)?,
        StageCommand::Merge { work } => {
            let report = stages::merge(&work)?;
            out = super::run::summary(&report);
        }
    }
    Ok(out)
}
