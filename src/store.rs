//! Object stores, at the I/O edge only: an output directory may be an S3-compatible bucket
//! (`s3://bucket/prefix`). Reading is a download of the released files (tables and committed
//! run records, nothing else) into a private temporary directory, so every reader works on
//! local files; a write is one PUT (atomic per object).
//!
//! The async runtime lives only here: one process-wide tokio runtime with a single I/O
//! thread, which every store call and every streamed object uses. CPU work (decompression,
//! parsing) stays on the pipeline's own threads, fed through bounded channels.
//!
//! Endpoint, region and credentials come from the standard AWS environment variables
//! (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP=true` for a plain-HTTP
//! endpoint) or from the pipeline's `[s3]` table ([`configure`]); a variable that is set wins.
//! Credentials are never printed: errors name the `s3://` location only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

/// The pipeline's `[s3]` table: defaults under the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: Option<bool>,
    /// A private (0600) TOML file with `access_key_id`, `secret_access_key` and optionally
    /// `session_token`: credentials never sit in the pipeline file itself.
    pub credentials_file: Option<PathBuf>,
}

static SETTINGS: OnceLock<S3Settings> = OnceLock::new();

/// Sets the process's store settings from the pipeline (the first call wins: one pipeline
/// per process).
pub fn configure(settings: S3Settings) {
    let _ = SETTINGS.set(settings);
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

fn env_set(names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| std::env::var_os(n).is_some_and(|v| !v.is_empty()))
}

/// An S3 client for `bucket`: the environment's settings over the pipeline's.
fn builder(bucket: &str) -> Result<AmazonS3Builder, String> {
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    // object_store's default 30 s bounds a whole request, body included: too short for a
    // large log read while earlier ones are parsed.
    if !env_set(&["AWS_TIMEOUT"]) {
        b = b.with_config(
            object_store::aws::AmazonS3ConfigKey::Client(object_store::ClientConfigKey::Timeout),
            "1h",
        );
    }
    let Some(s) = SETTINGS.get() else {
        return Ok(b);
    };
    if let Some(e) = &s.endpoint
        && !env_set(&["AWS_ENDPOINT_URL", "AWS_ENDPOINT"])
    {
        b = b.with_endpoint(e);
    }
    if let Some(r) = &s.region
        && !env_set(&["AWS_REGION", "AWS_DEFAULT_REGION"])
    {
        b = b.with_region(r);
    }
    if let Some(a) = s.allow_http
        && !env_set(&["AWS_ALLOW_HTTP"])
    {
        b = b.with_allow_http(a);
    }
    if let Some(path) = &s.credentials_file
        && !env_set(&["AWS_ACCESS_KEY_ID"])
    {
        let shown = path.display().to_string();
        crate::pseudonymise::keys::check_private(
            std::fs::metadata(path),
            &shown,
            "chmod 600 it: it holds the store's secret key",
        )
        .map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the credentials file {shown}: {e}"))?;
        // The parser's message could quote the file: say only where it is wrong.
        let c: CredentialsFile = toml::from_str(&text).map_err(|e| {
            format!(
                "the credentials file {shown} is not TOML with `access_key_id` and `secret_access_key`{}",
                e.span()
                    .map(|r| format!(" (byte {})", r.start))
                    .unwrap_or_default()
            )
        })?;
        b = b
            .with_access_key_id(c.access_key_id)
            .with_secret_access_key(c.secret_access_key);
        if let Some(t) = c.session_token {
            b = b.with_token(t);
        }
    }
    Ok(b)
}

/// The process's one async runtime, for store I/O only.
fn io() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static IO: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = IO.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("logveil-io")
        .enable_all()
        .build()?;
    Ok(IO.get_or_init(|| rt))
}

/// Size, modification time (UTC seconds) and ETag of the objects listed as inputs, for the
/// input manifest.
static LISTED: Mutex<Option<HashMap<String, ObjectStamp>>> = Mutex::new(None);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStamp {
    pub size: u64,
    pub modified_s: i64,
    pub etag: Option<String>,
}

/// What the listing said of an `s3://bucket/key` input.
pub fn listed(url: &str) -> Option<ObjectStamp> {
    LISTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()?
        .get(url)
        .cloned()
}

/// An `s3://bucket/prefix` location.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    shown: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct StoreError {
    pub location: String,
    pub message: String,
}

/// `Some` when `location` names an object store rather than a local directory.
pub fn remote(location: &Path) -> Option<Result<Remote, StoreError>> {
    let text = location.to_str()?;
    let rest = text.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let err = |e: object_store::Error| StoreError {
        location: text.to_string(),
        message: e.to_string(),
    };
    let built = builder(bucket)
        .map_err(|message| StoreError {
            location: text.to_string(),
            message,
        })
        .and_then(|b| b.build().map_err(err));
    Some(built.map(|s| Remote {
        store: Arc::new(s),
        prefix: prefix.trim_matches('/').to_string(),
        shown: text.to_string(),
    }))
}

impl Remote {
    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            location: self.shown.clone(),
            message: e.to_string(),
        }
    }

    fn key(&self, name: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(name)
        } else {
            StorePath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Downloads the released files into `dest`, in the same layout: every
    /// `<table>/date=<D>/part-0.parquet` and every committed `_runs/<id>.json`.
    pub fn download_output(&self, dest: &Path) -> Result<usize, StoreError> {
        self.download(dest, true)
    }

    /// Downloads only the committed run records (what a run needs to know of earlier ones).
    pub fn download_records(&self, dest: &Path) -> Result<usize, StoreError> {
        self.download(dest, false)
    }

    fn download(&self, dest: &Path, tables: bool) -> Result<usize, StoreError> {
        let rt = io().map_err(|e| self.err(e))?;
        rt.block_on(async {
            let prefix = (!self.prefix.is_empty()).then(|| StorePath::from(self.prefix.as_str()));
            let mut listing = self.store.list(prefix.as_ref());
            let mut n = 0;
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| self.err(e))?;
                let full = meta.location.to_string();
                let rel = full
                    .strip_prefix(&self.prefix)
                    .unwrap_or(&full)
                    .trim_start_matches('/');
                let parts: Vec<&str> = rel.split('/').collect();
                let table_file = parts.len() == 3
                    && !parts[0].starts_with(['_', '.'])
                    && parts[1].starts_with("date=")
                    && parts[2] == "part-0.parquet";
                let record = parts.len() == 2
                    && parts[0] == "_runs"
                    && parts[1].ends_with(".json")
                    && !parts[1].ends_with(".pending.json");
                if !((tables && table_file) || record) {
                    continue;
                }
                let bytes = self
                    .store
                    .get(&meta.location)
                    .await
                    .map_err(|e| self.err(e))?
                    .bytes()
                    .await
                    .map_err(|e| self.err(e))?;
                let local = dest.join(rel);
                if let Some(parent) = local.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| self.err(e))?;
                }
                std::fs::write(&local, &bytes).map_err(|e| self.err(e))?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Writes one object (a single PUT: readers see the old or the new one, never a part).
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let rt = io().map_err(|e| self.err(e))?;
        rt.block_on(async {
            self.store
                .put(&self.key(name), PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| self.err(e))
        })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The object keys under this location whose names match `pattern` (a glob over the
    /// rest of the key: `*.gz`, `2026-11-*/*.log`), sorted, as `s3://bucket/key` inputs. Their
    /// sizes, times and ETags are kept for the input manifest ([`listed`]).
    pub fn list_matching(&self, bucket: &str, pattern: &str) -> Result<Vec<String>, StoreError> {
        let glob = glob::Pattern::new(pattern).map_err(|e| self.err(e))?;
        // As for local globs, `*` stays within one level of the key (`**` crosses levels).
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        let rt = io().map_err(|e| self.err(e))?;
        let found = rt.block_on(async {
            let prefix = (!self.prefix.is_empty()).then(|| StorePath::from(self.prefix.as_str()));
            let mut listing = self.store.list(prefix.as_ref());
            let mut found = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| self.err(e))?;
                let key = meta.location.to_string();
                let rest = key
                    .strip_prefix(&self.prefix)
                    .unwrap_or(&key)
                    .trim_start_matches('/');
                if glob.matches_with(rest, options) {
                    let stamp = ObjectStamp {
                        size: meta.size,
                        modified_s: meta.last_modified.timestamp(),
                        etag: meta.e_tag.clone(),
                    };
                    found.push((format!("s3://{bucket}/{key}"), stamp));
                }
            }
            Ok::<_, StoreError>(found)
        })?;
        let mut listed = LISTED.lock().unwrap_or_else(|e| e.into_inner());
        let listed = listed.get_or_insert_with(HashMap::new);
        let mut keys = Vec::with_capacity(found.len());
        for (url, stamp) in found {
            listed.insert(url.clone(), stamp);
            keys.push(url);
        }
        keys.sort();
        Ok(keys)
    }

    /// A reader of one object, streamed: a task on the I/O runtime downloads it and hands
    /// the bytes over a bounded channel ([`READ_AHEAD_PARTS`] parts in flight), so memory does
    /// not grow with the object and no copy of it touches the disk. The download starts at
    /// once: opening the next objects while this one is parsed reads them concurrently.
    pub fn open_read(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let store = self.store.clone();
        let location = StorePath::from(key);
        let shown = format!("{}/{key}", self.shown.trim_end_matches('/'));
        let rt = io().map_err(|e| self.err(e))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(READ_AHEAD_PARTS);
        rt.spawn(async move {
            let mut stream = match store.get(&location).await {
                Ok(r) => r.into_stream(),
                Err(e) => {
                    let _ = tx.send(Err(e.to_string())).await;
                    return;
                }
            };
            while let Some(part) = stream.next().await {
                let stop = part.is_err();
                // A dropped reader (a failed or finished run) ends the download.
                if tx.send(part.map_err(|e| e.to_string())).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(ObjectReader {
            rx,
            current: bytes::Bytes::new(),
            shown,
        })
    }

    /// The bytes of one object, `None` when there is none.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rt = io().map_err(|e| self.err(e))?;
        rt.block_on(async {
            match self.store.get(&self.key(name)).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.err(e))?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(e)),
            }
        })
    }

    /// Removes one object (no error when it is already gone).
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let rt = io().map_err(|e| self.err(e))?;
        rt.block_on(async {
            match self.store.delete(&self.key(name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err(e)),
            }
        })
    }

    /// Names (relative to this location) of the objects directly under `dir`.
    pub fn list_names(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let rt = io().map_err(|e| self.err(e))?;
        let base = self.key(dir);
        let mut names = rt.block_on(async {
            let mut listing = self.store.list(Some(&base));
            let mut names = Vec::new();
            while let Some(meta) = listing.next().await {
                let full = meta.map_err(|e| self.err(e))?.location.to_string();
                let rel = full
                    .strip_prefix(&self.prefix)
                    .unwrap_or(&full)
                    .trim_start_matches('/');
                names.push(rel.to_string());
            }
            Ok::<_, StoreError>(names)
        })?;
        names.sort();
        Ok(names)
    }

    /// Takes the output's run lock, `_runs/.lock`, by a conditional PUT that fails when the
    /// object exists: two runs on one store location never interleave, whatever machines
    /// they run on. `holder` names this machine and state dir (a hash): a lock left by a
    /// killed run of the same holder is taken over, since the caller holds the state dir's
    /// local lock and so no run of that holder can be alive.
    pub fn lock(&self, holder: &str) -> Result<StoreLock<'_>, LockError> {
        let body = serde_json::json!({
            "holder": holder,
            "started": jiff::Timestamp::now().to_string(),
        });
        let payload = || PutPayload::from(serde_json::to_vec(&body).expect("plain JSON"));
        let key = self.key(LOCK);
        let rt = io().map_err(|e| LockError::Store(self.err(e)))?;
        let taken = || StoreLock {
            remote: self,
            holder: holder.to_string(),
        };
        // Twice: a lock released between the refused create and its read is taken anew.
        for _ in 0..2 {
            let created = rt.block_on(self.store.put_opts(&key, payload(), PutMode::Create.into()));
            match created {
                Ok(_) => return Ok(taken()),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    let Some(held) = self.get(LOCK).map_err(LockError::Store)? else {
                        continue;
                    };
                    let held: serde_json::Value = serde_json::from_slice(&held).unwrap_or_default();
                    if held["holder"].as_str() == Some(holder) {
                        rt.block_on(self.store.put(&key, payload()))
                            .map_err(|e| LockError::Store(self.err(e)))?;
                        return Ok(taken());
                    }
                    return Err(LockError::Locked {
                        location: self.shown.clone(),
                        started: held["started"]
                            .as_str()
                            .unwrap_or("at an unknown time")
                            .to_string(),
                    });
                }
                Err(e) => return Err(LockError::Store(self.err(e))),
            }
        }
        Err(LockError::Locked {
            location: self.shown.clone(),
            started: "just now".to_string(),
        })
    }
}

/// The lock object of an output in a store.
const LOCK: &str = "_runs/.lock";

/// Parts of one object held in memory at most while it waits to be parsed.
pub const READ_AHEAD_PARTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{location} is being written by another run (started {started}): two runs never interleave on one output. Wait for it to end; if it was killed on another machine, delete {location}/_runs/.lock"
    )]
    Locked { location: String, started: String },
    #[error(transparent)]
    Store(StoreError),
}

/// Held while a run writes to a store; dropping it removes the lock object if it is still
/// this holder's. A run whose publication failed half-way keeps it instead
/// ([`StoreLock::keep`]), so that only the same holder, which has the staged copy, goes on.
pub struct StoreLock<'a> {
    remote: &'a Remote,
    holder: String,
}

impl StoreLock<'_> {
    /// Leaves the lock object in place, as a killed run would.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for StoreLock<'_> {
    fn drop(&mut self) {
        let ours = self.remote.get(LOCK).ok().flatten().is_some_and(|b| {
            serde_json::from_slice::<serde_json::Value>(&b)
                .is_ok_and(|v| v["holder"].as_str() == Some(self.holder.as_str()))
        });
        if ours {
            let _ = self.remote.delete(LOCK);
        }
    }
}

/// A blocking reader over a streamed object.
pub struct ObjectReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    current: bytes::Bytes,
    shown: String,
}

impl ObjectReader {
    /// Whether downloaded bytes are waiting to be read (tests of the read-ahead).
    pub fn has_buffered(&self) -> bool {
        !self.current.is_empty() || !self.rx.is_empty()
    }
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!("{}: {e}", self.shown)));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// (location without the glob, the glob) of an `s3://bucket/prefix/*.gz` input pattern, and
/// the bucket.
pub fn split_pattern(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let glob_at = key.find(['*', '?', '[']).unwrap_or(key.len());
    let dir_end = key[..glob_at].rfind('/').map_or(0, |i| i + 1);
    let (prefix, pattern) = key.split_at(dir_end);
    let pattern = if pattern.is_empty() { "**" } else { pattern };
    Some((
        format!("s3://{bucket}/{}", prefix.trim_end_matches('/')),
        pattern.to_string(),
        bucket.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn in_memory() -> Remote {
        Remote {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: "logs".into(),
            shown: "s3://test/logs".into(),
        }
    }

    /// Opening several objects starts all their downloads at once: each has bytes waiting
    /// before any of them is read, and each then reads back whole.
    #[test]
    fn objects_opened_together_download_concurrently_and_read_back_whole() {
        let remote = in_memory();
        let bodies: Vec<Vec<u8>> = (0..3u8)
            .map(|i| (0..100_000u32).map(|n| (n as u8) ^ i).collect())
            .collect();
        for (i, b) in bodies.iter().enumerate() {
            remote.put(&format!("{i}.log"), b.clone()).unwrap();
        }
        let mut readers: Vec<ObjectReader> = (0..3)
            .map(|i| remote.open_read(&format!("logs/{i}.log")).unwrap())
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !readers.iter().all(ObjectReader::has_buffered) {
            assert!(
                std::time::Instant::now() < deadline,
                "downloads did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for (r, want) in readers.iter_mut().zip(&bodies) {
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(&got, want);
        }
    }

    #[test]
    fn a_missing_object_is_an_error_naming_its_location() {
        let remote = in_memory();
        let mut r = remote.open_read("logs/none.log").unwrap();
        let err = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(err.starts_with("s3://test/logs/logs/none.log"), "{err}");
        assert_eq!(remote.get("none.json").unwrap(), None);
    }

    /// The run lock: a second holder is refused (with when the first started), the same
    /// holder takes over a lock its killed run left, and dropping the lock frees it.
    #[test]
    fn the_store_lock_admits_one_holder_at_a_time() {
        let remote = in_memory();
        let first = remote.lock("aaaa").unwrap();
        assert!(remote.get(LOCK).unwrap().is_some());
        let refused = remote
            .lock("bbbb")
            .err()
            .expect("a second holder is refused");
        assert!(matches!(refused, LockError::Locked { .. }));
        assert!(refused.to_string().contains("s3://test/logs/_runs/.lock"));
        std::mem::forget(first); // as a kill -9 would: the lock object stays
        let again = remote
            .lock("aaaa")
            .expect("its own stale lock is taken over");
        drop(again);
        assert_eq!(remote.get(LOCK).unwrap(), None);
        let _other = remote.lock("bbbb").expect("free again");
    }

    /// `*` stays within one level of the key, as in a local glob; `**` crosses levels.
    #[test]
    fn key_globs_match_one_level_unless_double_star() {
        let remote = in_memory();
        for key in ["a.gz", "archive/b.gz", "c.log"] {
            remote.put(key, b"x".to_vec()).unwrap();
        }
        assert_eq!(
            remote.list_matching("test", "*.gz").unwrap(),
            ["s3://test/logs/a.gz"]
        );
        assert_eq!(
            remote.list_matching("test", "**/*.gz").unwrap(),
            ["s3://test/logs/a.gz", "s3://test/logs/archive/b.gz"]
        );
        assert_eq!(listed("s3://test/logs/a.gz").map(|o| o.size), Some(1));
    }

    /// A run whose lock was taken over (its own stale lock, by a later run of the same
    /// holder) does not remove the new run's lock when it ends; a kept lock stays.
    #[test]
    fn a_lock_is_removed_only_by_its_holder_and_kept_on_request() {
        let remote = in_memory();
        let mine = remote.lock("aaaa").unwrap();
        mine.keep();
        assert!(remote.get(LOCK).unwrap().is_some(), "kept, as after a kill");
        let other = Remote {
            store: remote.store.clone(),
            prefix: remote.prefix.clone(),
            shown: remote.shown.clone(),
        };
        let old = StoreLock {
            remote: &other,
            holder: "zzzz".into(),
        };
        drop(old);
        assert!(remote.get(LOCK).unwrap().is_some(), "not zzzz's to remove");
        drop(remote.lock("aaaa").unwrap());
        assert_eq!(remote.get(LOCK).unwrap(), None);
    }

    #[test]
    fn patterns_split_into_location_glob_and_bucket() {
        assert_eq!(
            split_pattern("s3://b/logs/2026-11/*.gz"),
            Some(("s3://b/logs/2026-11".into(), "*.gz".into(), "b".into()))
        );
        assert_eq!(
            split_pattern("s3://b"),
            Some(("s3://b/".into(), "**".into(), "b".into()))
        );
    }
}
