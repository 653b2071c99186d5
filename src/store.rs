//! Object stores, at the I/O edge only: an output directory may be an S3-compatible bucket
//! (`s3://bucket/prefix`). Reading is a download of the released files (tables and committed
//! run records, nothing else) into a private temporary directory, so every reader works on
//! local files; a write is one PUT (atomic per object). The async runtime lives only inside
//! these functions. Credentials and the endpoint come from the environment, as for any S3
//! client: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`
//! (`AWS_ALLOW_HTTP=true` for a local test server).

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

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
    Some(
        AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(err)
            .map(|s| Remote {
                store: Arc::new(s),
                prefix: prefix.trim_matches('/').to_string(),
                shown: text.to_string(),
            }),
    )
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
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
        let rt = runtime().map_err(|e| self.err(e))?;
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
        let rt = runtime().map_err(|e| self.err(e))?;
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
    /// rest of the key: `*.gz`, `2026-11-*/*.log`), sorted, as `s3://bucket/key` inputs.
    pub fn list_matching(&self, bucket: &str, pattern: &str) -> Result<Vec<String>, StoreError> {
        let glob = glob::Pattern::new(pattern).map_err(|e| self.err(e))?;
        let rt = runtime().map_err(|e| self.err(e))?;
        let mut keys = rt.block_on(async {
            let prefix = (!self.prefix.is_empty()).then(|| StorePath::from(self.prefix.as_str()));
            let mut listing = self.store.list(prefix.as_ref());
            let mut keys = Vec::new();
            while let Some(meta) = listing.next().await {
                let key = meta.map_err(|e| self.err(e))?.location.to_string();
                let rest = key
                    .strip_prefix(&self.prefix)
                    .unwrap_or(&key)
                    .trim_start_matches('/');
                if glob.matches(rest) {
                    keys.push(format!("s3://{bucket}/{key}"));
                }
            }
            Ok::<_, StoreError>(keys)
        })?;
        keys.sort();
        Ok(keys)
    }

    /// A reader of one object, streamed: a thread runs the download on its own runtime and
    /// hands the bytes over a bounded channel (at most a few MiB in flight), so memory does
    /// not grow with the object and no copy of it touches the disk.
    pub fn open_read(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let store = self.store.clone();
        let location = StorePath::from(key);
        let shown = format!("{}/{key}", self.shown.trim_end_matches('/'));
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<bytes::Bytes, String>>(16);
        std::thread::spawn(move || {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async {
                let mut stream = match store.get(&location).await {
                    Ok(r) => r.into_stream(),
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while let Some(part) = stream.next().await {
                    let stop = part.is_err();
                    if tx.send(part.map_err(|e| e.to_string())).is_err() || stop {
                        return;
                    }
                }
            });
        });
        Ok(ObjectReader {
            rx,
            current: bytes::Bytes::new(),
            shown,
        })
    }
}

/// A blocking reader over a streamed object.
pub struct ObjectReader {
    rx: std::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    current: bytes::Bytes,
    shown: String,
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => self.current = b,
                Ok(Err(e)) => {
                    return Err(std::io::Error::other(format!("{}: {e}", self.shown)));
                }
                Err(_) => return Ok(0),
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
