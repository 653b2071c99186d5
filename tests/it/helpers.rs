//! Running the binary and reading what it wrote.

use std::path::{Path, PathBuf};
use std::process::Output;

use polars::prelude::*;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary, with its state dir (spill, ledger) kept out of the developer's home.
pub fn logveil() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("logveil").expect("binary built");
    cmd.env(
        "XDG_STATE_HOME",
        STATE_HOME.with(|d| d.path().to_path_buf()),
    );
    cmd
}

thread_local! {
    /// One default state home per test (each test runs on its own thread): runs of one
    /// test share their state, as nightly runs do, and tests never share theirs (a run
    /// holds its state dir's lock).
    static STATE_HOME: tempfile::TempDir = tempfile::tempdir().expect("a temporary dir");
}

/// Runs `logveil run` with the given pipeline and output, plus extra arguments.
pub fn run(pipeline: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = logveil();
    cmd.arg("run")
        .arg("--pipeline")
        .arg(pipeline)
        .arg("--output")
        .arg(out)
        .args(extra);
    cmd.output().expect("runs")
}

pub fn read_parquet(path: &Path) -> DataFrame {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetReader::new(file).finish().unwrap()
}

pub fn table(out: &Path, table: &str, date: &str) -> DataFrame {
    read_parquet(
        &out.join(table)
            .join(format!("date={date}"))
            .join("part-0.parquet"),
    )
}

pub fn strs(df: &DataFrame, name: &str) -> Vec<Option<String>> {
    df.column(name)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}

pub fn ints(df: &DataFrame, name: &str) -> Vec<Option<i64>> {
    df.column(name).unwrap().i64().unwrap().iter().collect()
}

pub fn floats(df: &DataFrame, name: &str) -> Vec<Option<f64>> {
    df.column(name).unwrap().f64().unwrap().iter().collect()
}

pub fn bools(df: &DataFrame, name: &str) -> Vec<Option<bool>> {
    df.column(name).unwrap().bool().unwrap().iter().collect()
}

pub fn names(df: &DataFrame) -> Vec<String> {
    df.get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The run record written by the last run.
pub fn run_record(out: &Path) -> serde_json::Value {
    let mut records: Vec<PathBuf> = files_under(&out.join("_runs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    records.sort();
    let text = std::fs::read_to_string(records.last().expect("a run record")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn some(v: &[&str]) -> Vec<Option<String>> {
    v.iter().map(|s| Some(s.to_string())).collect()
}

/// The dates a run record lists.
pub fn record_dates(record: &serde_json::Value) -> Vec<String> {
    record["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["date"].as_str().unwrap().to_string())
        .collect()
}

/// Writes a new key with `logveil keygen`.
pub fn keygen(path: &Path) {
    let o = logveil().arg("keygen").arg(path).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A virtualenv under the cache dir with `packages` installed, created once behind a file
/// lock (decision 23). `None` when Python or PyPI is unavailable.
pub fn python_venv(packages: &[&str]) -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let venv = cache.join("logveil-test-venv");
    std::fs::create_dir_all(&cache).ok()?;
    let lock = std::fs::File::create(cache.join("logveil-test-venv.lock")).ok()?;
    lock.lock().ok()?;
    let python = venv.join("bin/python");
    if !python.exists() {
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
    }
    let marker = venv.join(format!(
        "installed-{}",
        packages.join("+").replace(['[', ']'], "_")
    ));
    if !marker.exists() {
        let ok = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "-q"])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        std::fs::write(&marker, "").ok()?;
    }
    Some(venv)
}

/// Parquet files under `out` → BLAKE3, by relative path: "the same files".
pub fn parquet_hashes(out: &Path) -> std::collections::BTreeMap<String, String> {
    files_under(out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            let rel = p.strip_prefix(out).unwrap().display().to_string();
            (
                rel,
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string(),
            )
        })
        .collect()
}

/// A program from a Debian package, installed with apt-get when missing (decision 23);
/// `None` when it cannot be (no root, no network): the test then says it was skipped.
pub fn debian_tool(package: &str, names: &[&str]) -> Option<PathBuf> {
    let find = || {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
    };
    if let Some(p) = find() {
        return Some(p);
    }
    let installed = std::process::Command::new("timeout")
        .args(["600", "apt-get", "install", "-y", "-q", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed { find() } else { None }
}
