//! The input manifest: what each input held, so that a nightly `--date D` run reads only the
//! inputs that can hold events of D's window (decision 8) instead of every rotated log.
//!
//! Kept in the state dir as `manifest.json` (0600): per input path, its size, modification
//! time (and for an object in a store its ETag) and first and last event time (UTC seconds)
//! as read by an earlier run. An entry counts only while all of these are unchanged; a grown,
//! rotated or re-uploaded input is read again. It holds input names and times, nothing about
//! visitors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub size: u64,
    pub modified_s: i64,
    /// Objects in a store: the ETag their listing gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
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

/// Size, modification time and ETag of an input (`None` for standard input).
pub fn stamp(path: &Path) -> Option<(u64, i64, Option<String>)> {
    let text = path.to_string_lossy();
    if text.starts_with("s3://") {
        return crate::store::listed(&text).map(|s| (s.size, s.modified_s, s.etag));
    }
    let m = std::fs::metadata(path).ok()?;
    let modified = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some((m.len(), modified, None))
}

impl Entry {
    fn matches(&self, path: &Path) -> bool {
        stamp(path) == Some((self.size, self.modified_s, self.etag.clone()))
    }
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
            .is_some_and(|e| e.matches(path))
    }

    /// Whether `path`, unchanged since it was recorded, holds no event in `[from, to)`.
    pub fn outside(&self, path: &Path, from: i64, to: i64) -> bool {
        let Some(e) = self.inputs.get(&path.display().to_string()) else {
            return false;
        };
        e.matches(path) && (e.last_ts < from || e.first_ts >= to)
    }

    pub fn record(&mut self, path: &Path, coverage: (i64, i64)) {
        if let Some((size, modified_s, etag)) = stamp(path) {
            self.inputs.insert(
                path.display().to_string(),
                Entry {
                    size,
                    modified_s,
                    etag,
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
