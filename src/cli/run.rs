//! `logveil run`.

use std::fmt::Write;
use std::path::PathBuf;

use clap::Parser;

use crate::config::Pipeline;
use crate::day::Day;
use crate::pipeline::{self, DateArg, Failure, RunOptions, exit};

#[derive(Debug, Parser)]
pub struct RunArgs {
    /// Pipeline definition (default: the embedded demo, `pipelines/demo.toml`).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Input file, directory or glob; replaces the pipeline's `inputs`. Repeatable.
    #[arg(long)]
    pub input: Vec<PathBuf>,
    /// Output directory; replaces the pipeline's `output`.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Master key file (from `logveil keygen`); replaces the pipeline's `key`.
    #[arg(long, conflicts_with = "key_dir")]
    pub key_file: Option<PathBuf>,
    /// Key ring directory (from `logveil key rotate`); replaces the pipeline's key.
    #[arg(long)]
    pub key_dir: Option<PathBuf>,
    /// Only this local day: YYYY-MM-DD or `yesterday` (in the pipeline's time zone).
    #[arg(long, value_parser = parse_date)]
    pub date: Option<DateArg>,
    /// Let a partial day replace a complete one already published.
    #[arg(long)]
    pub force: bool,
    /// Publish only the days touched by inputs new or changed since the last run (each such
    /// day recomputed in full); for cron jobs over growing or rotating logs.
    #[arg(long, conflicts_with = "date")]
    pub since_last: bool,
    /// Worker threads for reading and pseudonymising (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Client buckets (partitions processed one at a time); replaces the pipeline's `buckets`.
    #[arg(long)]
    pub buckets: Option<u16>,
}

fn parse_date(s: &str) -> Result<DateArg, String> {
    if s == "yesterday" {
        return Ok(DateArg::Yesterday);
    }
    Day::parse(s)
        .map(DateArg::Day)
        .ok_or_else(|| format!("{s:?} is not a date like 2026-11-24 or `yesterday`"))
}

pub fn run(args: RunArgs) -> Result<String, Failure> {
    let pipeline = pipeline_of(&args)?;
    // Drawn on stderr only when it is a terminal (never in cron logs or pipes).
    let progress =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
            .with_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .expect("valid template"),
            );
    let options = options_of(&args, Some(progress));
    let report = pipeline::run(&pipeline, &options)?;
    Ok(summary(&report))
}

/// The pipeline the arguments name, with `--buckets` applied.
pub fn pipeline_of(args: &RunArgs) -> Result<Pipeline, Failure> {
    let mut pipeline = Pipeline::load(args.pipeline.as_deref())
        .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    if let Some(b) = args.buckets {
        if b == 0 {
            return Err(Failure::new(exit::USAGE, "--buckets must be at least 1"));
        }
        pipeline.buckets = b;
    }
    Ok(pipeline)
}

/// The run options the arguments give.
pub fn options_of(args: &RunArgs, progress: Option<indicatif::ProgressBar>) -> RunOptions {
    RunOptions {
        inputs: args.input.clone(),
        output: args.output.clone(),
        key_file: args.key_file.clone(),
        key_dir: args.key_dir.clone(),
        date: args.date,
        force: args.force,
        since_last: args.since_last,
        threads: args.threads,
        progress,
    }
}

/// What a run prints: its counts, dates, disclosure, notes and where it wrote.
pub fn summary(report: &pipeline::RunReport) -> String {
    let r = &report.record;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "logveil {} · pipeline {} · site {}",
        r.logveil_version, r.pipeline.name, r.pipeline.site
    );
    let _ = writeln!(
        s,
        "lines: {} read, {} parsed, {} rejected · pageviews: {} · visits: {}",
        r.lines.read, r.lines.parsed, r.lines.rejected, r.pageviews, r.visits
    );
    for (reason, info) in &r.lines.rejected_by_reason {
        let _ = writeln!(s, "  rejected {reason}: {}", info.count);
    }
    if !r.filtered.is_empty() {
        let parts: Vec<String> = r.filtered.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "filtered: {}", parts.join(", "));
    }
    let dates: Vec<String> = r
        .dates
        .iter()
        .map(|d| {
            let mut t = d.date.clone();
            if d.partial {
                t.push_str(" (partial)");
            }
            if !d.published {
                t.push_str(" (kept previous)");
            }
            t
        })
        .collect();
    let _ = writeln!(
        s,
        "dates: {}",
        if dates.is_empty() {
            "none".into()
        } else {
            dates.join(", ")
        }
    );
    let _ = writeln!(s, "k = {}:", r.pipeline.k);
    for (table, c) in &r.disclosure {
        let _ = writeln!(
            s,
            "  {table}: {} rows released, {} suppressed, {} folded into (other), {} dropped",
            c.rows_released, c.rows_suppressed, c.rows_folded, c.rows_dropped
        );
    }
    for note in &r.notes {
        let _ = writeln!(s, "note: {note}");
    }
    let _ = writeln!(
        s,
        "wrote {} files to {}",
        r.files.len(),
        report.output.display()
    );
    let _ = writeln!(s, "run record: {}", report.record_path.display());
    s
}
