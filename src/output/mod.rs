//! Output: a [`Publishable`] release → Parquet files, published atomically (decision 6).
//!
//! A run writes every file under `OUT/_staging/<run id>/`, then `_runs/<id>.pending.json`
//! (the full run record, listing the renames), then renames each file into place, then
//! commits by renaming the record to `_runs/<id>.json`. Each rename replaces one file
//! atomically, so a reader sees a whole old file or a whole new one; a crash before the
//! renames leaves the published files untouched, and the next run finishes an interrupted
//! publication from its pending record and removes stale staging. Readers skip names that
//! start with `_`.
//!
//! File layout: `OUT/<table>/date=YYYY-MM-DD/part-0.parquet` (zstd, full statistics, rows
//! sorted by key, no run-specific bytes inside, so identical inputs give identical files).

pub mod parquet;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::day::Day;
use crate::disclose::Publishable;
use crate::record::{FileInfo, RunRecord};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "another logveil run holds the lock on {0}; wait for it to finish (or remove the lock file if no run is active)"
    )]
    Locked(String),
    #[error("cannot write {path}: {source}; the published outputs were left as they were")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "cannot write Parquet file {path}: {message}; the published outputs were left as they were"
    )]
    Parquet { path: String, message: String },
    #[error("cannot read run record {path}: {message}")]
    Record { path: String, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Holds `OUT/_runs/.lock` for the life of a run.
pub struct RunLock {
    _file: File,
}

/// Takes the output directory's lock (exit code 3 when another run holds it).
pub fn lock(out: &Path) -> Result<RunLock, OutputError> {
    let runs = out.join("_runs");
    fs::create_dir_all(&runs).map_err(io_err(&runs))?;
    let path = runs.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(OutputError::Locked(out.display().to_string())),
        Err(fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

/// Finishes publications interrupted between their first rename and their commit, and
/// removes staging left by runs that never reached that point. Returns notes for the record.
pub fn recover(out: &Path) -> Result<Vec<String>, OutputError> {
    let mut notes = Vec::new();
    let runs = out.join("_runs");
    let mut pending_ids = BTreeSet::new();
    for (name, path) in record_files(&runs)? {
        let Some(id) = name.strip_suffix(".pending.json") else {
            continue;
        };
        for f in &read_record(&path)?.files {
            let staged = out.join("_staging").join(id).join(&f.path);
            if staged.exists() {
                let dest = out.join(&f.path);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                fs::rename(&staged, &dest).map_err(io_err(&dest))?;
            }
        }
        fs::rename(&path, runs.join(format!("{id}.json"))).map_err(io_err(&path))?;
        notes.push(format!("finished the interrupted publication of run {id}"));
        pending_ids.insert(id.to_string());
    }
    let staging = out.join("_staging");
    if staging.is_dir() {
        for entry in fs::read_dir(&staging).map_err(io_err(&staging))? {
            let path = entry.map_err(io_err(&staging))?.path();
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
            let id = file_name(&path);
            if !pending_ids.contains(&id) {
                notes.push(format!("removed the staging of unfinished run {id}"));
            }
        }
        let _ = fs::remove_dir(&staging);
    }
    Ok(notes)
}

/// Days already published and whether each was partial, from the committed run records
/// (later records win; run ids sort in the order the runs started).
pub fn published_days(out: &Path) -> Result<BTreeMap<String, bool>, OutputError> {
    let mut days = BTreeMap::new();
    for (name, path) in record_files(&out.join("_runs"))? {
        if name.ends_with(".pending.json") {
            continue;
        }
        for d in read_record(&path)?.dates.iter().filter(|d| d.published) {
            days.insert(d.date.clone(), d.partial);
        }
    }
    Ok(days)
}

/// `*.json` files of the run-record directory, sorted by name.
fn record_files(runs: &Path) -> Result<Vec<(String, PathBuf)>, OutputError> {
    let mut files = Vec::new();
    if runs.is_dir() {
        for entry in fs::read_dir(runs).map_err(io_err(runs))? {
            let path = entry.map_err(io_err(runs))?.path();
            let name = file_name(&path);
            if name.ends_with(".json") {
                files.push((name, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn read_record(path: &Path) -> Result<RunRecord, OutputError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| OutputError::Record {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes the release for `days_to_publish` under `_staging/<run id>/` and lists the files,
/// with their hashes, in `record`. Nothing published changes yet. Returns the staging root.
/// The files are written on `workers` threads (each is small, and a run writes one per table
/// and day), then synced side by side; the list keeps table and day order whatever the
/// threads.
pub fn stage(
    out: &Path,
    release: &Publishable,
    days_to_publish: &BTreeSet<Day>,
    costs: Option<&crate::costs::Costs>,
    record: &mut RunRecord,
    workers: usize,
) -> Result<PathBuf, OutputError> {
    let staging = out.join("_staging").join(&record.run_id);
    fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    let (first, last) = release.days();
    let mut jobs = Vec::new();
    for (table, by_day) in release.tables() {
        for day in (first.0..=last.0)
            .map(Day)
            .filter(|d| days_to_publish.contains(d))
        {
            let rel = format!("{}/date={day}/part-0.parquet", table.as_str());
            let rows = by_day.get(&day).map_or(&[][..], Vec::as_slice);
            let staged = staging.join(&rel);
            let parent = staged.parent().expect("has a parent");
            fs::create_dir_all(parent).map_err(io_err(parent))?;
            jobs.push((*table, day, rows, rel, staged));
        }
    }
    let write = |i: usize| -> Result<FileInfo, OutputError> {
        let (table, day, rows, rel, staged) = &jobs[i];
        let ctx = parquet::DayContext {
            day: Some(*day),
            day_visits: release.day_visits(*day),
            costs,
        };
        parquet::write_table(*table, rows, release.noisy(), &ctx, staged)?;
        let bytes = fs::read(staged).map_err(io_err(staged))?;
        Ok(FileInfo {
            path: rel.clone(),
            rows: rows.len() as u64,
            blake3: blake3::hash(&bytes).to_hex().to_string(),
        })
    };
    record.files = crate::threads::in_parallel(jobs.len(), workers, write)
        .into_iter()
        .collect::<Result<_, _>>()?;
    // Synced together once all are written, not each after its own write: the file system
    // commits many waiting syncs at once (a sync was about 0.5 ms, and a run stages one file
    // per table and day).
    let sync = |i: usize| {
        let staged = &jobs[i].4;
        fs::File::open(staged)
            .and_then(|f| f.sync_all())
            .map_err(io_err(staged))
    };
    crate::threads::in_parallel_io(jobs.len(), crate::threads::IO_THREADS, sync)
        .into_iter()
        .collect::<Result<(), _>>()?;
    Ok(staging)
}

/// Publishes staged files: pending record, renames, commit. Returns the committed record.
pub fn commit(out: &Path, record: &RunRecord) -> Result<PathBuf, OutputError> {
    let staging = out.join("_staging").join(&record.run_id);
    let runs = out.join("_runs");
    let pending = runs.join(format!("{}.pending.json", record.run_id));
    write_json_atomically(&pending, record)?;
    let mut parents = BTreeSet::new();
    for f in &record.files {
        let dest = out.join(&f.path);
        let parent = dest.parent().expect("has a parent");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        fs::rename(staging.join(&f.path), &dest).map_err(io_err(&dest))?;
        parents.insert(parent.to_path_buf());
    }
    // Every directory that gained a file synced before the commit, side by side.
    let parents: Vec<PathBuf> = parents.into_iter().collect();
    crate::threads::in_parallel_io(parents.len(), crate::threads::IO_THREADS, |i| {
        sync_dir(&parents[i])
    });
    let committed = runs.join(format!("{}.json", record.run_id));
    fs::rename(&pending, &committed).map_err(io_err(&committed))?;
    sync_dir(&runs);
    discard(out, &record.run_id);
    Ok(committed)
}

/// Writes `report.html` at the top of the output (atomically) and describes it for the record.
pub fn write_report(out: &Path, html: &str) -> Result<FileInfo, OutputError> {
    let path = out.join(REPORT_FILE);
    let tmp = out.join(format!("_{REPORT_FILE}.tmp"));
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(html.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(FileInfo {
        path: REPORT_FILE.to_string(),
        rows: 0,
        blake3: blake3::hash(html.as_bytes()).to_hex().to_string(),
    })
}

/// The name of the report in an output directory.
pub const REPORT_FILE: &str = "report.html";

/// Replaces a committed run record (to add the report written after the commit).
pub fn rewrite_record(out: &Path, record: &RunRecord) -> Result<PathBuf, OutputError> {
    let path = out.join("_runs").join(format!("{}.json", record.run_id));
    write_json_atomically(&path, record)?;
    Ok(path)
}

/// Removes a run's staging (after a commit, or when its release is refused).
pub fn discard(out: &Path, run_id: &str) {
    let _ = fs::remove_dir_all(out.join("_staging").join(run_id));
    let _ = fs::remove_dir(out.join("_staging"));
}

/// Writes a run record that publishes nothing (a run that failed a check, or skipped days).
pub fn write_record_only(out: &Path, record: &RunRecord) -> Result<PathBuf, OutputError> {
    let path = out.join("_runs").join(format!("{}.json", record.run_id));
    write_json_atomically(&path, record)?;
    Ok(path)
}

fn write_json_atomically(path: &Path, record: &RunRecord) -> Result<(), OutputError> {
    let parent = path.parent().expect("has a parent");
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(record).expect("a run record serialises");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the renames durable on file systems that need it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
