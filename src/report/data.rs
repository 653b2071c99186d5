//! What a report shows, read from a published output directory: the released Parquet tables
//! and the committed run records, nothing else (no raw logs, keys or state). Whatever the
//! report shows has already passed the disclosure rules, so it can show no more than they do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::day::Day;
use crate::record::RunRecord;

/// A released cell: a value, or hidden by the k rule (suppressed).
pub type Cell = Option<f64>;

/// One released row of a table: its keys as text, its columns by name.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub keys: Vec<String>,
    pub values: BTreeMap<String, Cell>,
    pub suppressed: bool,
    pub other: bool,
    /// Differential-privacy scale of the `visitors` noise, when present.
    pub noise_scale: Option<f64>,
}

impl Row {
    pub fn get(&self, column: &str) -> Cell {
        self.values.get(column).copied().flatten()
    }
}

/// The released tables of an output directory, by table and date.
#[derive(Debug, Default)]
pub struct Published {
    pub tables: BTreeMap<String, BTreeMap<Day, Vec<Row>>>,
    pub records: Vec<RunRecord>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {message}")]
pub struct ReadError {
    pub path: String,
    pub message: String,
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> ReadError {
    ReadError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Key columns of each table, in order (the rest are measures and flags).
pub fn key_columns(table: &str) -> &'static [&'static str] {
    crate::aggregate::TABLES
        .iter()
        .find(|t| t.as_str() == table)
        .map_or(&[], |t| t.keys())
}

impl Published {
    /// Reads every published table file for dates in `from..=to` (all dates when `None`) and
    /// every committed run record.
    pub fn read(out: &Path, from: Option<Day>, to: Option<Day>) -> Result<Published, ReadError> {
        let mut p = Published::default();
        let entries = std::fs::read_dir(out).map_err(|e| read_error(out, e))?;
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        let mut files = Vec::new();
        for dir in dirs {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('_') || name.starts_with('.') || !dir.is_dir() {
                continue;
            }
            let Ok(parts) = std::fs::read_dir(&dir) else {
                continue;
            };
            for part in parts.filter_map(|e| e.ok().map(|e| e.path())) {
                let Some(day) = part
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("date="))
                    .and_then(Day::parse)
                else {
                    continue;
                };
                if from.is_some_and(|f| day < f) || to.is_some_and(|t| day > t) {
                    continue;
                }
                files.push((name.clone(), day, part.join("part-0.parquet")));
            }
        }
        // Read side by side: a run's report reads one small file per table and day.
        let read = |i: usize| {
            let (name, _, file) = &files[i];
            read_rows(name, file)
        };
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let all = crate::threads::in_parallel(files.len(), workers, read);
        for ((name, day, _), rows) in files.into_iter().zip(all) {
            p.tables.entry(name).or_default().insert(day, rows?);
        }
        let runs = out.join("_runs");
        if let Ok(entries) = std::fs::read_dir(&runs) {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let n = f.to_string_lossy();
                    n.ends_with(".json") && !n.ends_with(".pending.json")
                })
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).map_err(|e| read_error(&f, e))?;
                let record: RunRecord =
                    serde_json::from_str(&text).map_err(|e| read_error(&f, e))?;
                p.records.push(record);
            }
        }
        Ok(p)
    }

    /// The dates with a published `overview`.
    pub fn dates(&self) -> Vec<Day> {
        self.tables
            .get("overview")
            .map(|d| d.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn rows(&self, table: &str, day: Day) -> &[Row] {
        self.tables
            .get(table)
            .and_then(|d| d.get(&day))
            .map_or(&[], Vec::as_slice)
    }

    /// The latest committed record that published `day`.
    pub fn record_of(&self, day: Day) -> Option<&RunRecord> {
        let name = day.to_string();
        self.records
            .iter()
            .rev()
            .find(|r| r.dates.iter().any(|d| d.date == name && d.published))
    }
}

fn read_rows(table: &str, file: &Path) -> Result<Vec<Row>, ReadError> {
    let f = std::fs::File::open(file).map_err(|e| read_error(file, e))?;
    let df = ParquetReader::new(f)
        .finish()
        .map_err(|e| read_error(file, e))?;
    let keys = key_columns(table);
    let mut rows = vec![Row::default(); df.height()];
    for c in df.columns() {
        let name = c.name().as_str();
        if keys.contains(&name) {
            let as_text = c.cast(&DataType::String).map_err(|e| read_error(file, e))?;
            let s = as_text.str().map_err(|e| read_error(file, e))?;
            for (i, v) in s.iter().enumerate() {
                rows[i].keys.push(v.unwrap_or("").to_string());
            }
            continue;
        }
        match c.dtype() {
            DataType::Boolean => {
                let b = c.bool().map_err(|e| read_error(file, e))?;
                for (i, v) in b.iter().enumerate() {
                    match name {
                        "suppressed" => rows[i].suppressed = v == Some(true),
                        "is_other" => rows[i].other = v == Some(true),
                        _ => {}
                    }
                }
            }
            _ => {
                let f64s = c
                    .cast(&DataType::Float64)
                    .map_err(|e| read_error(file, e))?;
                let v = f64s.f64().map_err(|e| read_error(file, e))?;
                for (i, x) in v.iter().enumerate() {
                    if name == "noise_scale" {
                        rows[i].noise_scale = x;
                    } else {
                        rows[i].values.insert(name.to_string(), x);
                    }
                }
            }
        }
    }
    Ok(rows)
}
