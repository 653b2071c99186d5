//! The input manifest: what each input held, so that a nightly `--date D` run reads only the
//! inputs that can hold events of D's window (decision 8) instead of every rotated log.
//!
//! Kept in the state dir as `manifest.json` (0600): per input path, its size, modification
//! time and first and last event time (UTC seconds) as read by an earlier run. An entry counts
//! only while the file's size and modification time are unchanged; a grown or rotated file is
//! read again. It holds file names and times, nothing about visitors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub size: u64,
    pub modified_s: i64,
    pub first_ts: i64,
    pub last_ts: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub inputs: BTreeMap<String, Entry>,
}

fn file(state_dir: &Path) -> PathBuf {
    state_dir.join("manifest.json")
}

/// Size and modification time of a local file (`None` for standard input and objects).
pub fn stamp(path: &Path) -> Option<(u64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    let modified = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some((m.len(), modified))
}

impl Manifest {
    /// The manifest, or an empty one (missing or unreadable: every input is read).
    pub fn load(state_dir: &Path) -> Manifest {
        std::fs::read(file(state_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Whether `path` is recorded and unchanged since.
    pub fn unchanged(&self, path: &Path) -> bool {
        self.inputs
            .get(&path.display().to_string())
            .is_some_and(|e| stamp(path) == Some((e.size, e.modified_s)))
    }

    /// Whether `path`, unchanged since it was recorded, holds no event in `[from, to)`.
    pub fn outside(&self, path: &Path, from: i64, to: i64) -> bool {
        let Some(e) = self.inputs.get(&path.display().to_string()) else {
            return false;
        };
        stamp(path) == Some((e.size, e.modified_s)) && (e.last_ts < from || e.first_ts >= to)
    }

    pub fn record(&mut self, path: &Path, coverage: (i64, i64)) {
        if let Some((size, modified_s)) = stamp(path) {
            self.inputs.insert(
                path.display().to_string(),
                Entry {
                    size,
                    modified_s,
                    first_ts: coverage.0,
                    last_ts: coverage.1,
                },
            );
        }
    }

    /// Writes it atomically, mode 0600.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let path = file(state_dir);
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        {
            use std::io::Write;
            let mut f = options.open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
        }
        std::fs::rename(tmp, path)
    }
}
