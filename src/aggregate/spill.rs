//! Spilled buckets: pseudonymous events partitioned by a keyed hash of the client, on disk,
//! encrypted, so a run's memory is bounded by one bucket rather than by its input (decision 3,
//! 7, 21).
//!
//! Every event of one client lands in one bucket (across midnight too), so sessions and
//! distinct counts are exact per bucket and the buckets' partial tables add up to the totals.
//! Files live in `<state dir>/spill/<run id>/` (0700), one per writer and bucket
//! (`w-<salt>-b<bucket>.bin`), as a sequence of AES-256-GCM chunks under a key derived
//! from a random run key and the writer's salt. In `logveil run` the run key exists only in the
//! process's memory: a killed run leaves nothing readable, and the directory is removed when
//! the run ends. A staged run (`src/stages.rs`) keeps its run key in its work directory and its
//! shard tasks write the same files into it; the salt keeps every writer (and every
//! retry of a task) in a nonce space of its own.
//!
//! Texts (path, referrer host, browser, OS, utm values) are written once per file, where
//! they first occur, and then as a writer's number: most events repeat texts of earlier
//! ones, and a number costs a byte or two to seal and write and one array read to decode,
//! where the text cost its length and a hash lookup. Numbers are LEB128 varints, and an
//! event's input position, time and day are written as the difference from the file's
//! previous event (zigzag varints): a bucket sees every few dozenth line of a log in order,
//! so these take a byte or two instead of twenty. On the 5 M-line benchmark log an event
//! takes 22 bytes instead of 67 (the spill 32.9 MB instead of 99.0); every byte is sealed,
//! written, read and opened once more.
//!
//! Beside the events, under the run key with nonce spaces of their own: each bucket's
//! row-visitor frames (`f-b<bucket>.bin`), and with returning visitors its clients' entries
//! of the identity map (`i-b<bucket>.bin`), its earlier visits from the visit log
//! (`h-b<bucket>.bin`) and its visits of this run for the log (`v-b<bucket>.bin`, day by
//! day). These grow with the site's audience and the log's length, not with one bucket, so
//! they wait here rather than in memory.

use std::collections::HashSet;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::events::{Dictionary, EventColumns};
use crate::pseudonymise::{PageviewRef, channel};

/// Bytes of a bucket's events a writer gathers before sealing them. Every writer holds a
/// partly filled chunk for every bucket, and the buckets grow with the input: at 64 KiB the
/// 20 M-line benchmark's shard peaked 10 MiB higher (153 buckets, 2 writers).
const CHUNK: usize = 32 * 1024;
const DEVICE_TYPES: [&str; 4] = ["desktop", "mobile", "tablet", "bot"];

/// The per-run spill directory and its key; removes the directory when dropped.
pub struct SpillDir {
    dir: PathBuf,
    key: Arc<[u8; 32]>,
    pub buckets: usize,
    /// Held while the run lives, so a later run can tell a killed run's leftovers from a
    /// running one's.
    _lock: File,
    /// The removal begun by [`Self::remove_in_background`], waited for on drop.
    removing: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SpillDir {
    pub fn create(state_dir: &Path, run_id: &str, buckets: usize) -> io::Result<SpillDir> {
        let dir = state_dir.join("spill").join(run_id);
        for d in [
            state_dir.to_path_buf(),
            state_dir.join("spill"),
            dir.clone(),
        ] {
            crate::state::private_dir(&d)?;
        }
        let lock = File::create(dir.join(".lock"))?;
        lock.try_lock()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(SpillDir {
            dir,
            key: Arc::new(key),
            buckets: buckets.max(1),
            _lock: lock,
            removing: Default::default(),
        })
    }

    /// Starts removing the spill on a thread of its own, once the run has read what it needs
    /// from it: deleting a few hundred files and their cached pages took about 0.09 s at the
    /// very end of a run on one core, and beside the run's last steps it costs no wall time
    /// (docs/PERFORMANCE.md, sixteenth session). The lock stays held, and the drop waits for
    /// the removal (and finishes it, were it to fail), so the spill never outlives the run.
    /// Nothing may read the spill after this.
    pub fn remove_in_background(&self) {
        let mut removing = self.removing.lock().expect("not poisoned");
        if removing.is_none() {
            let dir = self.dir.clone();
            *removing = Some(std::thread::spawn(move || {
                let _ = std::fs::remove_dir_all(dir);
            }));
        }
    }

    /// Removes the spill of runs that were killed (their lock is free, or was never made: a
    /// run killed between creating its directory and its lock). Their files were never
    /// readable (the key died with the process); this only frees the space. Returns how many.
    /// Call it holding the state dir's lock: then no other run is creating a spill here.
    pub fn remove_stale(state_dir: &Path) -> io::Result<usize> {
        let root = state_dir.join("spill");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries {
            let dir = entry?.path();
            let free = match File::open(dir.join(".lock")) {
                Ok(f) => f.try_lock().is_ok(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(e),
            };
            if free {
                std::fs::remove_dir_all(&dir)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A writer for one ingest worker.
    pub fn writer(&self) -> io::Result<SpillWriter> {
        SpillWriter::create(&self.dir, &self.key, self.buckets)
    }

    /// Every event of bucket `b` from all writers, except those of `excluded` inputs.
    pub fn read_bucket(&self, b: usize, excluded: &HashSet<u32>) -> io::Result<EventColumns> {
        read_bucket(std::slice::from_ref(&self.dir), &self.key, b, excluded)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

/// Every event of bucket `b` that any writer left in `dirs` (files `w-<salt>-b<b>.bin`, in
/// name order), except those of `excluded` inputs. The order of events does not matter:
/// sessions sort them by client, time and input order.
pub fn read_bucket(
    dirs: &[PathBuf],
    run_key: &[u8; 32],
    b: usize,
    excluded: &HashSet<u32>,
) -> io::Result<EventColumns> {
    let suffix = format!("-b{b}.bin");
    let mut paths = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("w-") && name.ends_with(&suffix) {
                paths.push(dir.join(name));
            }
        }
    }
    paths.sort();
    let mut cols = EventColumns::default();
    let mut codes = CodeIds::default();
    for path in paths {
        let name = path.file_name().expect("a file").to_string_lossy();
        let salt = name
            .get(2..34)
            .and_then(|hex| crate::pseudonymise::keys::parse_hex::<16>(hex.as_bytes()))
            .ok_or_else(|| io::Error::other("a spilled bucket has a malformed name"))?;
        let key = writer_key(run_key, &salt);
        let mut input = BufReader::new(File::open(&path)?);
        let mut chunk_no = 0u64;
        // The writer's text numbers, as this file defined them.
        let mut numbered: Vec<u32> = Vec::new();
        // The file's previous event, which each is written relative to.
        let mut last = Previous::default();
        // One buffer for every chunk of the file (chunks are about the same size).
        let mut sealed = Vec::new();
        loop {
            let mut len = [0u8; 4];
            match input.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            sealed.resize(u32::from_le_bytes(len) as usize, 0);
            input.read_exact(&mut sealed)?;
            let plain = key
                .open_in_place(nonce(0, b, chunk_no), Aad::empty(), &mut sealed)
                .map_err(|_| io::Error::other("a spilled bucket failed authentication"))?;
            chunk_no += 1;
            decode(
                plain,
                &mut cols,
                &mut codes,
                &mut numbered,
                &mut last,
                excluded,
            )?;
        }
    }
    Ok(cols)
}

/// Each writer seals under its own key, derived from the run's and a random salt named in
/// its files: writers of different processes (a staged run's shard tasks, a task's retry)
/// never share a nonce space.
fn writer_key(run_key: &[u8; 32], salt: &[u8; 16]) -> LessSafeKey {
    let mut material = [0u8; 48];
    material[..32].copy_from_slice(run_key);
    material[32..].copy_from_slice(salt);
    let key = blake3::derive_key("logveil 2026 spill writer v4", &material);
    sealing_key(&key)
}

impl SpillDir {
    /// Seals and writes a bucket's frames (its row-visitor tables of
    /// [`super::bucket_tables`], slot = position; `None`: no frame) for a later stage of the
    /// same run. Returns the bytes written.
    pub fn write_frames(
        &self,
        bucket: usize,
        frames: Vec<Option<polars::prelude::DataFrame>>,
    ) -> io::Result<usize> {
        write_frames(&self.dir, &self.key, bucket, frames)
    }

    /// Seals a bucket's row-visitor frames (one per table, `None`: none) with, in the slot
    /// after them, the texts their id columns stand for ([`super::events::Strings`]). Writes
    /// nothing for a bucket without frames. Returns the bytes written.
    pub fn write_table_frames(
        &self,
        bucket: usize,
        mut frames: Vec<Option<polars::prelude::DataFrame>>,
        strings: &super::events::Strings,
    ) -> io::Result<usize> {
        if !frames.iter().any(Option::is_some) {
            return Ok(0);
        }
        frames.push(Some(strings.to_frame()));
        self.write_frames(bucket, frames)
    }

    /// The row-visitor frames of `tables` (slots) of `bucket`, written by
    /// [`Self::write_table_frames`], ids kept, with the bucket's texts (read once).
    pub fn read_table_frames(
        &self,
        bucket: usize,
        tables: &[u64],
    ) -> io::Result<super::events::RowVisitorFrames> {
        let frames = tables
            .iter()
            .map(|&t| self.read_frame(bucket, t))
            .collect::<io::Result<Vec<_>>>()?;
        super::events::RowVisitorFrames::new(frames, || {
            // The texts are the file's last slot.
            match frame_count(&self.dir, bucket)? {
                0 => Ok(None),
                count => self.read_frame(bucket, count - 1),
            }
        })
    }

    /// The frame of `slot` that [`Self::write_frames`] wrote, `None` when there is none.
    pub fn read_frame(
        &self,
        bucket: usize,
        slot: u64,
    ) -> io::Result<Option<polars::prelude::DataFrame>> {
        read_frame(&self.dir, &self.key, bucket, slot)
    }
}

/// Seals a bucket's frames into one file, `dir/f-b<bucket>.bin` (one file, not one per table:
/// creating hundreds of small files cost more than writing them), slot by slot
/// ([`write_slots`]). Each frame is sealed on its own under the run key (one process's: a
/// staged run seals its frames with `stages::seal` instead).
fn write_frames(
    dir: &Path,
    run_key: &[u8; 32],
    bucket: usize,
    frames: Vec<Option<polars::prelude::DataFrame>>,
) -> io::Result<usize> {
    let mut slots = Vec::with_capacity(frames.len());
    for frame in frames {
        slots.push(frame.as_ref().map(frame_bytes).transpose()?);
    }
    write_slots(&Slots::new(&FRAME_FILES, dir, bucket), run_key, slots)
}

/// A kind of per-bucket file the spill holds beside the events, sealed under the run key:
/// its name's prefix (`<prefix>-b<bucket>.bin`), its nonce space (the nonce's worker part,
/// never a writer's: writers seal under keys of their own) and what errors call it.
struct FileKind {
    prefix: &'static str,
    space: u16,
    what: &'static str,
}

const FRAME_FILES: FileKind = FileKind {
    prefix: "f",
    space: u16::MAX,
    what: "a spilled frame",
};
const VISIT_FILES: FileKind = FileKind {
    prefix: "v",
    space: u16::MAX - 1,
    what: "a bucket's spilled visits",
};
const HISTORY_FILES: FileKind = FileKind {
    prefix: "h",
    space: u16::MAX - 2,
    what: "a bucket's spilled history",
};
const IDENTITY_FILES: FileKind = FileKind {
    prefix: "i",
    space: u16::MAX - 3,
    what: "a bucket's spilled identities",
};

impl FileKind {
    fn path(&self, dir: &Path, bucket: usize) -> PathBuf {
        dir.join(format!("{}-b{bucket}.bin", self.prefix))
    }
}

/// One bucket's file of sealed slots.
struct Slots {
    kind: &'static FileKind,
    path: PathBuf,
    bucket: usize,
}

impl Slots {
    fn new(kind: &'static FileKind, dir: &Path, bucket: usize) -> Slots {
        Slots {
            kind,
            path: kind.path(dir, bucket),
            bucket,
        }
    }
}

/// Writes `slots` (`None`: empty) into one file: the slot count, each sealed slot's length
/// (0: none), then the sealed slots. Each slot is sealed on its own with a nonce of its
/// file's space, bucket and position, so a slot read from any other place fails
/// authentication. Returns the bytes written.
fn write_slots(file: &Slots, run_key: &[u8; 32], slots: Vec<Option<Vec<u8>>>) -> io::Result<usize> {
    let key = sealing_key(run_key);
    let mut sealed = Vec::with_capacity(slots.len());
    for (slot, plain) in slots.into_iter().enumerate() {
        let Some(mut plain) = plain else {
            sealed.push(Vec::new());
            continue;
        };
        key.seal_in_place_append_tag(
            nonce(file.kind.space, file.bucket, slot as u64),
            Aad::empty(),
            &mut plain,
        )
        .map_err(|_| io::Error::other("sealing a spill slot failed"))?;
        sealed.push(plain);
    }
    // The header, then each slot as it is: through a buffer that gathers the small slots
    // (many tables' frames are a few dozen bytes: a `write` each cost more than their
    // sealing) and lets the large ones go straight through, uncopied.
    let mut header = Vec::with_capacity(4 + 8 * sealed.len());
    header.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    for s in &sealed {
        header.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }
    let mut out = BufWriter::with_capacity(64 << 10, File::create(&file.path)?);
    out.write_all(&header)?;
    for s in &sealed {
        out.write_all(s)?;
    }
    out.flush()?;
    Ok(header.len() + sealed.iter().map(Vec::len).sum::<usize>())
}

/// How many slots a bucket's frame file holds (0 without a file).
fn frame_count(dir: &Path, bucket: usize) -> io::Result<u64> {
    let mut file = match File::open(FRAME_FILES.path(dir, bucket)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut word = [0u8; 4];
    file.read_exact(&mut word)?;
    Ok(u64::from(u32::from_le_bytes(word)))
}

/// The frame of `slot` that [`write_frames`] wrote, `None` when there is none.
fn read_frame(
    dir: &Path,
    run_key: &[u8; 32],
    bucket: usize,
    slot: u64,
) -> io::Result<Option<polars::prelude::DataFrame>> {
    read_slot(&Slots::new(&FRAME_FILES, dir, bucket), run_key, slot)?
        .map(|plain| frame_of(&plain))
        .transpose()
}

/// The plain bytes of `slot` that [`write_slots`] wrote, `None` when there is none (or no
/// file).
fn read_slot(file: &Slots, run_key: &[u8; 32], slot: u64) -> io::Result<Option<Vec<u8>>> {
    let mut plain = Vec::new();
    Ok(read_slot_into(file, run_key, slot, &mut plain)?.then_some(plain))
}

/// Appends the plain bytes of `slot` to `out`, read and opened in place there (no buffer of
/// their own); whether there was such a slot.
fn read_slot_into(
    file: &Slots,
    run_key: &[u8; 32],
    slot: u64,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut reader = match File::open(&file.path) {
        Ok(f) => BufReader::new(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut word = [0u8; 4];
    reader.read_exact(&mut word)?;
    let count = u64::from(u32::from_le_bytes(word));
    if slot >= count {
        return Ok(false);
    }
    let mut lengths = vec![0u8; 8 * count as usize];
    reader.read_exact(&mut lengths)?;
    let length = |i: usize| u64::from_le_bytes(lengths[8 * i..8 * i + 8].try_into().expect("8"));
    let len = length(slot as usize);
    if len == 0 {
        return Ok(false);
    }
    let skip: u64 = (0..slot as usize).map(length).sum();
    // Lengths are checked against the file before anything is allocated for them.
    if skip.saturating_add(len) > reader.get_ref().metadata()?.len() {
        return Err(io::Error::other(format!("{} is cut short", file.kind.what)));
    }
    reader.seek(SeekFrom::Current(
        i64::try_from(skip).map_err(io::Error::other)?,
    ))?;
    let start = out.len();
    out.resize(start + usize::try_from(len).map_err(io::Error::other)?, 0);
    let opened = reader.read_exact(&mut out[start..]).and_then(|()| {
        sealing_key(run_key)
            .open_in_place(
                nonce(file.kind.space, file.bucket, slot),
                Aad::empty(),
                &mut out[start..],
            )
            .map(|plain| plain.len())
            .map_err(|_| io::Error::other(format!("{} failed authentication", file.kind.what)))
    });
    match opened {
        Ok(plain_len) => {
            out.truncate(start + plain_len);
            Ok(true)
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

impl SpillDir {
    /// Seals a bucket's visits for the visit log, day by day in the log's encoding
    /// ([`crate::visitors::DayVisits`]), so the run holds one day's visits when it writes
    /// the log rather than every visit of the run. Slot 0 lists the days; slot `i + 1` holds
    /// the `i`-th day's visits. Writes nothing for a bucket without visits. Returns the bytes
    /// written.
    pub fn write_visits(
        &self,
        bucket: usize,
        visits: crate::visitors::DayVisits,
    ) -> io::Result<usize> {
        if visits.is_empty() {
            return Ok(0);
        }
        let days: Vec<u8> = visits.iter().flat_map(|(d, _)| d.0.to_le_bytes()).collect();
        let mut slots = vec![Some(days)];
        slots.extend(visits.into_iter().map(|(_, v)| Some(v)));
        write_slots(
            &Slots::new(&VISIT_FILES, &self.dir, bucket),
            &self.key,
            slots,
        )
    }

    /// Appends bucket `b`'s visits of `day` that [`Self::write_visits`] wrote, in the visit
    /// log's encoding, to `out` (read and opened in place there).
    pub fn read_visits_into(
        &self,
        bucket: usize,
        day: crate::day::Day,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let file = Slots::new(&VISIT_FILES, &self.dir, bucket);
        let Some(days) = read_slot(&file, &self.key, 0)? else {
            return Ok(());
        };
        let at = days
            .chunks_exact(4)
            .position(|d| i32::from_le_bytes(d.try_into().expect("4")) == day.0);
        if let Some(i) = at {
            read_slot_into(&file, &self.key, i as u64 + 1, out)?;
        }
        Ok(())
    }
}

/// What a [`PartsWriter`] appends to a bucket: with returning visitors, the bucket's earlier
/// visits from the visit log as [`crate::visitors::VisitLog::load`] routes them
/// (`h-b<bucket>.bin`), and its clients' entries of the identity map
/// ([`crate::visitors::Identities::split`], `i-b<bucket>.bin`). Both grow with the site's
/// audience, not with one bucket, so each bucket's reduce reads back its own rather than the
/// run holding them all.
#[derive(Debug, Clone, Copy)]
pub enum Parts {
    History,
    Identities,
}

impl Parts {
    fn files(self) -> &'static FileKind {
        match self {
            Parts::History => &HISTORY_FILES,
            Parts::Identities => &IDENTITY_FILES,
        }
    }
}

/// Appends parts to a file per bucket, each part sealed on its own (its length, then the
/// sealed bytes) with a nonce of its kind, bucket and number under the run key.
pub struct PartsWriter {
    dir: PathBuf,
    kind: Parts,
    key: LessSafeKey,
    files: Vec<Option<(BufWriter<File>, u64)>>,
}

impl SpillDir {
    /// The run's one writer of `kind` (its nonces are unique only if there is one).
    pub fn parts_writer(&self, kind: Parts) -> PartsWriter {
        PartsWriter {
            dir: self.dir.clone(),
            kind,
            key: sealing_key(&self.key),
            files: (0..self.buckets).map(|_| None).collect(),
        }
    }

    /// Every part of `kind` [`PartsWriter::append`] wrote for bucket `b`, one after another
    /// (empty: none).
    pub fn read_parts(&self, kind: Parts, b: usize) -> io::Result<Vec<u8>> {
        let files = kind.files();
        let mut input = match File::open(files.path(&self.dir, b)) {
            Ok(f) => BufReader::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let key = sealing_key(&self.key);
        let size = input.get_ref().metadata()?.len();
        let mut plain = Vec::new();
        let mut part = 0u64;
        loop {
            let mut len = [0u8; 4];
            match input.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let len = u32::from_le_bytes(len);
            if u64::from(len) > size {
                return Err(io::Error::other(format!("{} is cut short", files.what)));
            }
            let mut sealed = vec![0u8; len as usize];
            input.read_exact(&mut sealed)?;
            let opened = key
                .open_in_place(nonce(files.space, b, part), Aad::empty(), &mut sealed)
                .map_err(|_| io::Error::other(format!("{} failed authentication", files.what)))?;
            plain.extend_from_slice(opened);
            part += 1;
        }
        Ok(plain)
    }

    /// Bucket `b`'s history ([`Parts::History`]).
    pub fn read_history(&self, b: usize) -> io::Result<crate::visitors::History> {
        crate::visitors::History::from_bytes(&self.read_parts(Parts::History, b)?)
            .ok_or_else(|| io::Error::other("a bucket's spilled history is malformed"))
    }

    /// Bucket `b`'s clients in the identity map ([`Parts::Identities`]).
    pub fn read_identities(&self, b: usize) -> io::Result<crate::visitors::Identities> {
        crate::visitors::Identities::from_bytes(&self.read_parts(Parts::Identities, b)?)
            .ok_or_else(|| io::Error::other("a bucket's spilled identities are malformed"))
    }
}

impl PartsWriter {
    /// Seals `part` and appends it to bucket `b`'s file.
    pub fn append(&mut self, b: usize, part: Vec<u8>) -> io::Result<()> {
        let slot = &mut self.files[b];
        if slot.is_none() {
            *slot = Some((
                BufWriter::new(File::create(self.kind.files().path(&self.dir, b))?),
                0,
            ));
        }
        let (out, parts) = slot.as_mut().expect("opened");
        let mut sealed = part;
        self.key
            .seal_in_place_append_tag(
                nonce(self.kind.files().space, b, *parts),
                Aad::empty(),
                &mut sealed,
            )
            .map_err(|_| io::Error::other("encryption failed"))?;
        *parts += 1;
        let len = u32::try_from(sealed.len()).map_err(io::Error::other)?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&sealed)
    }

    /// Writes out what is buffered.
    pub fn finish(self) -> io::Result<()> {
        for (mut out, _) in self.files.into_iter().flatten() {
            out.flush()?;
        }
        Ok(())
    }
}

/// A frame as bytes ([`super::frames`]: types round-trip exactly).
pub fn frame_bytes(frame: &polars::prelude::DataFrame) -> io::Result<Vec<u8>> {
    super::frames::encode(frame)
}

/// The frame [`frame_bytes`] made.
pub fn frame_of(bytes: &[u8]) -> io::Result<polars::prelude::DataFrame> {
    super::frames::decode(bytes)
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if let Some(removing) = self.removing.get_mut().ok().and_then(Option::take) {
            let _ = removing.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// AES-256-GCM: with the processor's AES and carry-less multiply instructions (every x86_64
/// server processor since 2010, ARMv8 servers) `ring` seals and opens it about four times as
/// fast as ChaCha20-Poly1305, which was 3 % of a run's CPU on the spill and frames
/// (docs/PERFORMANCE.md, fourteenth session). Without them `ring` falls back to constant-time
/// AES in software, slower but as safe. Fixed, not chosen per machine: a staged run's shard
/// and reduce tasks may run on different machines.
fn sealing_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"))
}

/// Unique per (worker, bucket, chunk) under one run key.
fn nonce(worker: u16, bucket: usize, chunk: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..2].copy_from_slice(&worker.to_le_bytes());
    n[2..4].copy_from_slice(&(bucket as u16).to_le_bytes());
    n[4..].copy_from_slice(&chunk.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

struct BucketFile {
    out: BufWriter<File>,
    buf: Vec<u8>,
    chunks: u64,
    /// The file's previous event, which the next is written relative to.
    last: Previous,
    /// Bit `n` set: text number `n` of [`TextNumbers`] is written in this file already.
    written: Vec<u64>,
}

impl BucketFile {
    /// Marks text `n` written here; whether it was not yet.
    fn first_time(&mut self, n: u32) -> bool {
        let (word, bit) = (n as usize / 64, 1u64 << (n % 64));
        if word >= self.written.len() {
            self.written.resize(word + 1, 0);
        }
        let first = self.written[word] & bit == 0;
        self.written[word] |= bit;
        first
    }
}

/// A writer's numbers for the texts it writes, by the text's allocation: the pseudonymiser
/// hands out shared `Arc<str>`s from its caches, so one text is almost always one pointer,
/// and numbering by pointer needs no hash of the text. Each numbered `Arc` is held, so its
/// address cannot be reused for another text while the number stands. A text seen under
/// two pointers gets two numbers, which costs a second definition, not a wrong text.
#[derive(Default)]
struct TextNumbers {
    by_address: foldhash::HashMap<usize, u32>,
    held: Vec<Arc<str>>,
    held_bytes: usize,
}

/// Numbers (or text bytes) a writer holds before it starts over, so that memory stays
/// bounded on sites with millions of distinct paths.
const MAX_TEXT_NUMBERS: usize = if cfg!(test) { 1000 } else { 1 << 18 };
const MAX_TEXT_BYTES: usize = 16 << 20;

impl TextNumbers {
    fn number(&mut self, text: &Arc<str>) -> u32 {
        let address = Arc::as_ptr(text) as *const u8 as usize;
        if let Some(&n) = self.by_address.get(&address) {
            return n;
        }
        let n = self.held.len() as u32;
        self.by_address.insert(address, n);
        self.held_bytes += text.len();
        self.held.push(Arc::clone(text));
        n
    }

    fn full(&self) -> bool {
        self.held.len() >= MAX_TEXT_NUMBERS || self.held_bytes >= MAX_TEXT_BYTES
    }
}

pub struct SpillWriter {
    key: LessSafeKey,
    files: Vec<BucketFile>,
    texts: TextNumbers,
}

impl SpillWriter {
    /// A writer into `dir` (files `w-<salt>-b<b>.bin`) under its own key (see [`writer_key`]).
    pub fn create(dir: &Path, run_key: &[u8; 32], buckets: usize) -> io::Result<SpillWriter> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| io::Error::other(e.to_string()))?;
        let hex: String = salt.iter().map(|b| format!("{b:02x}")).collect();
        let mut files = Vec::with_capacity(buckets);
        for b in 0..buckets.max(1) {
            let path = dir.join(format!("w-{hex}-b{b}.bin"));
            files.push(BucketFile {
                out: BufWriter::new(File::create(path)?),
                buf: Vec::new(),
                chunks: 0,
                last: Previous::default(),
                written: Vec::new(),
            });
        }
        Ok(SpillWriter {
            key: writer_key(run_key, &salt),
            files,
            texts: TextNumbers::default(),
        })
    }

    pub fn push(&mut self, seq: u64, e: &PageviewRef<'_>) -> io::Result<()> {
        if self.texts.full() {
            // Start the numbering over: every file defines its texts again from here on.
            self.texts = TextNumbers::default();
            for f in &mut self.files {
                f.written.clear();
            }
        }
        let b = usize::from(e.bucket) % self.files.len();
        encode(seq, e, &mut self.files[b], &mut self.texts);
        if self.files[b].buf.len() >= CHUNK {
            self.flush_bucket(b)?;
        }
        Ok(())
    }

    fn flush_bucket(&mut self, b: usize) -> io::Result<()> {
        let f = &mut self.files[b];
        if f.buf.is_empty() {
            return Ok(());
        }
        let mut sealed = std::mem::take(&mut f.buf);
        self.key
            .seal_in_place_append_tag(nonce(0, b, f.chunks), Aad::empty(), &mut sealed)
            .map_err(|_| io::Error::other("encryption failed"))?;
        f.chunks += 1;
        f.out.write_all(&(sealed.len() as u32).to_le_bytes())?;
        f.out.write_all(&sealed)
    }

    pub fn finish(mut self) -> io::Result<()> {
        for b in 0..self.files.len() {
            self.flush_bucket(b)?;
            self.files[b].out.flush()?;
        }
        Ok(())
    }
}

/// A text as its number, preceded by the text itself where the file has not had it yet:
/// `number << 1 | 1`, length, bytes the first time; `number << 1` after (varints).
fn put_text(file: &mut BucketFile, texts: &mut TextNumbers, text: &Arc<str>) {
    let n = texts.number(text);
    if file.first_time(n) {
        put_varint(&mut file.buf, u64::from(n) << 1 | 1);
        put_varint(&mut file.buf, text.len() as u64);
        file.buf.extend_from_slice(text.as_bytes());
    } else {
        put_varint(&mut file.buf, u64::from(n) << 1);
    }
}

/// An event's position, time and day: what the next event of the file is written relative
/// to (all zero at the file's start).
#[derive(Default, Clone, Copy)]
struct Previous {
    seq: u64,
    ts: i64,
    day: i32,
}

/// `v` in LEB128: seven bits a byte, low first, the high bit set on all but the last.
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A signed difference as an unsigned varint's value, small either side of zero (zigzag).
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

/// Flags of an event: which of its optional fields follow.
const HAS_LINK: u8 = 1;
const HAS_REFERRER: u8 = 2;
const HAS_UTM: [u8; 3] = [4, 8, 16];

fn encode(seq: u64, e: &PageviewRef<'_>, file: &mut BucketFile, texts: &mut TextNumbers) {
    let now = Previous {
        seq,
        ts: e.ts,
        day: e.day.0,
    };
    let last = std::mem::replace(&mut file.last, now);
    let utm = [&e.utm_source, &e.utm_medium, &e.utm_campaign];
    let mut flags = 0;
    if e.link.is_some() {
        flags |= HAS_LINK;
    }
    if e.referrer_host.is_some() {
        flags |= HAS_REFERRER;
    }
    for (v, bit) in utm.iter().zip(HAS_UTM) {
        if v.is_some() {
            flags |= bit;
        }
    }
    let buf = &mut file.buf;
    put_varint(buf, zigzag(seq.wrapping_sub(last.seq) as i64));
    put_varint(buf, zigzag(e.ts.wrapping_sub(last.ts)));
    put_varint(buf, zigzag(i64::from(e.day.0) - i64::from(last.day)));
    buf.push(e.hour);
    buf.extend_from_slice(&e.visitor.to_le_bytes());
    buf.push(flags);
    if let Some(link) = e.link {
        buf.extend_from_slice(&link.to_le_bytes());
    }
    buf.push(
        channel::ALL
            .iter()
            .position(|c| *c == e.channel)
            .unwrap_or(0) as u8,
    );
    buf.push(
        DEVICE_TYPES
            .iter()
            .position(|d| *d == e.device_type)
            .unwrap_or(0) as u8,
    );
    put_text(file, texts, e.path);
    if let Some(host) = &e.referrer_host {
        put_text(file, texts, host);
    }
    put_text(file, texts, e.browser);
    put_text(file, texts, e.os);
    for v in utm.into_iter().flatten() {
        put_text(file, texts, v);
    }
    put_varint(&mut file.buf, e.steps);
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let s = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| io::Error::other("a spilled bucket is truncated"))?;
        self.at += n;
        Ok(s)
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// A [`put_varint`] value (at most ten bytes, the last one ending it).
    #[inline]
    fn varint(&mut self) -> io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            // The tenth byte holds the 64th bit only.
            if shift == 63 && byte > 1 {
                break;
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(io::Error::other(
            "a spilled bucket holds a malformed number",
        ))
    }
    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let len = usize::try_from(self.varint()?).map_err(io::Error::other)?;
        self.take(len)
    }
    /// A text [`put_text`] wrote, as its id in the bucket's dictionary; `numbered` maps the
    /// file's text numbers to those ids (`u32::MAX`: not defined yet).
    fn id(&mut self, dictionary: &mut Dictionary, numbered: &mut Vec<u32>) -> io::Result<u32> {
        let tag = self.varint()?;
        // A writer numbers fewer than 2^32 texts.
        let n = u32::try_from(tag >> 1).map_err(io::Error::other)? as usize;
        if tag & 1 == 1 {
            let id = dictionary
                .id_of_utf8(self.bytes()?)
                .map_err(io::Error::other)?;
            if n >= numbered.len() {
                numbered.resize(n + 1, u32::MAX);
            }
            numbered[n] = id;
            return Ok(id);
        }
        match numbered.get(n) {
            Some(&id) if id != u32::MAX => Ok(id),
            _ => Err(io::Error::other(
                "a spilled bucket names a text it never defined",
            )),
        }
    }
}

/// The bucket's ids of the channels and device types, which the spill stores as their
/// numbers in [`channel::ALL`] and [`DEVICE_TYPES`]: looked up once per bucket, not per event.
#[derive(Default)]
struct CodeIds {
    channel: [Option<u32>; channel::ALL.len()],
    device_type: [Option<u32>; DEVICE_TYPES.len()],
}

impl CodeIds {
    fn channel(&mut self, code: u8, cols: &mut EventColumns) -> u32 {
        let i = usize::from(code) % channel::ALL.len();
        *self.channel[i].get_or_insert_with(|| cols.strings.id(channel::ALL[i]))
    }

    fn device_type(&mut self, code: u8, cols: &mut EventColumns) -> u32 {
        let i = usize::from(code) % DEVICE_TYPES.len();
        *self.device_type[i].get_or_insert_with(|| cols.strings.id(DEVICE_TYPES[i]))
    }
}

/// Appends the events of one chunk to `cols`, straight into its columns: texts are looked up
/// in the bucket's dictionary by their bytes, so a repeated text costs one lookup and no
/// allocation.
fn decode(
    plain: &[u8],
    cols: &mut EventColumns,
    codes: &mut CodeIds,
    numbered: &mut Vec<u32>,
    last: &mut Previous,
    excluded: &HashSet<u32>,
) -> io::Result<()> {
    let mut c = Cursor { b: plain, at: 0 };
    while c.at < plain.len() {
        let seq = last.seq.wrapping_add(unzigzag(c.varint()?) as u64);
        let ts = last.ts.wrapping_add(unzigzag(c.varint()?));
        let day = i64::from(last.day)
            .checked_add(unzigzag(c.varint()?))
            .and_then(|d| i32::try_from(d).ok())
            .ok_or_else(|| io::Error::other("a spilled bucket holds a malformed day"))?;
        *last = Previous { seq, ts, day };
        let hour = c.u8()?;
        let visitor = c.u64()?;
        let flags = c.u8()?;
        let link = if flags & HAS_LINK != 0 {
            Some(c.u64()?)
        } else {
            None
        };
        let channel = codes.channel(c.u8()?, cols);
        let device_type = codes.device_type(c.u8()?, cols);
        let path = c.id(&mut cols.strings, numbered)?;
        let referrer_host = if flags & HAS_REFERRER != 0 {
            Some(c.id(&mut cols.strings, numbered)?)
        } else {
            None
        };
        let browser = c.id(&mut cols.strings, numbered)?;
        let os = c.id(&mut cols.strings, numbered)?;
        let mut utm: [Option<u32>; 3] = [None, None, None];
        for (slot, bit) in utm.iter_mut().zip(HAS_UTM) {
            if flags & bit != 0 {
                *slot = Some(c.id(&mut cols.strings, numbered)?);
            }
        }
        let steps = c.varint()?;
        // Usually none: no hash per event then.
        if !excluded.is_empty() && excluded.contains(&((seq >> 40) as u32)) {
            continue;
        }
        let [utm_source, utm_medium, utm_campaign] = utm;
        cols.seq.push(seq);
        cols.ts.push(ts);
        cols.day.push(day);
        cols.hour.push(i32::from(hour));
        cols.visitor.push(visitor);
        cols.link.push(link);
        cols.path.push(path);
        cols.referrer_host.push(referrer_host);
        cols.channel.push(channel);
        cols.device_type.push(device_type);
        cols.browser.push(browser);
        cols.os.push(os);
        cols.utm_source.push(utm_source);
        cols.utm_medium.push(utm_medium);
        cols.utm_campaign.push(utm_campaign);
        cols.steps.push(steps);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::day::Day;
    use crate::pseudonymise::Event;

    fn event(ts: i64, bucket: u16, path: &str) -> Event {
        Event {
            day: Day(20_000),
            hour: 3,
            link: Some(42),
            bucket,
            referrer_host: Some(Arc::from("yandex.ru")),
            channel: "organic_search",
            browser: Arc::from("Chrome"),
            os: Arc::from("Windows"),
            device_type: "mobile",
            ..Event::for_test(ts, 0xDEAD_BEEF_0000_0001, path)
        }
    }

    #[test]
    fn spill_round_trips_encrypted_and_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let spill = SpillDir::create(tmp.path(), "run-1", 3).unwrap();
        let mut w = spill.writer().unwrap();
        for i in 0..10_000i64 {
            w.push(
                i as u64,
                &event(i, (i % 3) as u16, "/secret-path-xyz").as_ref(),
            )
            .unwrap();
        }
        w.push((7 << 40) | 5, &event(99, 1, "/excluded").as_ref())
            .unwrap();
        w.finish().unwrap();
        // Nothing of the events is readable on disk.
        for entry in std::fs::read_dir(tmp.path().join("spill/run-1")).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(12).any(|x| x == b"/secret-path"));
            assert!(!bytes.windows(9).any(|x| x == b"yandex.ru"));
        }
        let excluded = HashSet::from([7u32]);
        let b1 = spill.read_bucket(1, &excluded).unwrap();
        assert_eq!(b1.len(), 3333);
        let all: usize = (0..3)
            .map(|b| spill.read_bucket(b, &excluded).unwrap().len())
            .sum();
        assert_eq!(all, 10_000, "the excluded input's event is skipped");
        let events = spill
            .read_bucket(0, &HashSet::new())
            .unwrap()
            .into_frame()
            .unwrap();
        let df = events.strings.decode(events.frame).unwrap();
        let row = |c: &str| df.column(c).unwrap().get(0).unwrap().to_string();
        assert_eq!(row("path"), "\"/secret-path-xyz\"");
        assert_eq!(row("referrer_host"), "\"yandex.ru\"");
        assert_eq!(row("channel"), "\"organic_search\"");
        assert_eq!(row("device_type"), "\"mobile\"");
        let dir = tmp.path().join("spill/run-1");
        drop(spill);
        assert!(!dir.exists());
    }

    /// Every field comes back as it went in, whatever the differences between a file's
    /// events (input positions and times going back, far jumps, the extremes, days either
    /// side of 1970, optional fields present or not, every flag combination), across many
    /// sealed chunks: the second method is the in-memory columns of the same events.
    #[test]
    fn spill_events_round_trip_field_by_field() {
        let tmp = tempfile::tempdir().unwrap();
        let spill = SpillDir::create(tmp.path(), "run-v", 2).unwrap();
        let mut w = spill.writer().unwrap();
        let mut next = crate::test_numbers(0x005e_ed0f_5b11);
        let mut want = [EventColumns::default(), EventColumns::default()];
        let pick = |r: u64, small: i64| match r % 5 {
            0 => i64::MIN,
            1 => i64::MAX,
            _ => (r >> 8) as i64 % small,
        };
        for i in 0..20_000u64 {
            let r = next();
            let seq = match r % 7 {
                0 => u64::MAX - (r >> 40),
                1 => r >> 3,
                _ => i * 31,
            };
            let texts = next();
            let some =
                |bit: u64, text: String| (texts >> bit & 1 == 1).then(|| Arc::from(text.as_str()));
            let e = Event {
                ts: pick(next(), 200_000),
                day: Day(pick(next(), 3_000) as i32),
                hour: (r % 24) as u8,
                visitor: next(),
                link: (r >> 5 & 1 == 1).then(&mut next),
                bucket: (r >> 6 & 1) as u16,
                path: Arc::from(format!("/p{}", texts % 50).as_str()),
                referrer_host: some(8, format!("r{}.ru", texts >> 20 & 7)),
                channel: channel::ALL[(texts >> 24) as usize % channel::ALL.len()],
                browser: Arc::from(["Chrome", "Яндекс Браузер"][(texts >> 30 & 1) as usize]),
                os: Arc::from(["Android", "Windows"][(texts >> 31 & 1) as usize]),
                device_type: DEVICE_TYPES[(texts >> 32) as usize % DEVICE_TYPES.len()],
                utm_source: some(9, "yandex".into()),
                utm_medium: some(10, format!("cpc{}", texts >> 40 & 3)),
                utm_campaign: some(11, "осень".into()),
                steps: if r >> 7 & 1 == 1 { next() } else { r >> 60 },
                ..Event::for_test(0, 0, "/unused")
            };
            w.push(seq, &e.as_ref()).unwrap();
            want[usize::from(e.bucket)].push(seq, e);
        }
        w.finish().unwrap();
        for (b, want) in want.into_iter().enumerate() {
            let got = spill
                .read_bucket(b, &HashSet::new())
                .unwrap()
                .into_frame()
                .unwrap();
            let want = want.into_frame().unwrap();
            assert!(got.frame.height() > 9_000);
            let got = got.strings.decode(got.frame).unwrap();
            let want = want.strings.decode(want.frame).unwrap();
            assert!(got.equals_missing(&want), "bucket {b}: the events differ");
        }
    }

    /// A damaged number (a varint that never ends) is an error, not a panic or a wrong value.
    #[test]
    fn spill_malformed_numbers_are_errors() {
        let mut c = Cursor {
            b: &[0xff; 11],
            at: 0,
        };
        assert!(c.varint().is_err());
        let mut c = Cursor {
            b: &[0x80, 0x80],
            at: 0,
        };
        assert!(c.varint().is_err());
        // Ten bytes hold 64 bits: a tenth byte above 1 would overflow.
        let mut ten = [0xff; 10];
        ten[9] = 0x02;
        assert!(Cursor { b: &ten, at: 0 }.varint().is_err());
        ten[9] = 0x01;
        assert_eq!(Cursor { b: &ten, at: 0 }.varint().unwrap(), u64::MAX);
        // A text number beyond a writer's 2^32 is an error, not a huge allocation.
        let mut huge = Vec::new();
        put_varint(&mut huge, (u64::from(u32::MAX) + 1) << 1 | 1);
        let mut numbered = Vec::new();
        let mut dictionary = Dictionary::default();
        assert!(
            Cursor { b: &huge, at: 0 }
                .id(&mut dictionary, &mut numbered)
                .is_err()
        );
        let mut buf = Vec::new();
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            buf.clear();
            put_varint(&mut buf, v);
            assert_eq!(Cursor { b: &buf, at: 0 }.varint().unwrap(), v);
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    /// Texts come back right when the writer numbers them by pointer: one `Arc` repeated, the
    /// same text under fresh `Arc`s, optional texts present or not, and more distinct texts
    /// than a writer numbers before it starts over (so files define texts again midway).
    #[test]
    fn spill_texts_survive_numbering_and_its_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let spill = SpillDir::create(tmp.path(), "run-t", 3).unwrap();
        let mut w = spill.writer().unwrap();
        let shared: Arc<str> = Arc::from("/shared");
        let mut want = std::collections::BTreeMap::new();
        for i in 0..(3 * MAX_TEXT_NUMBERS as i64) {
            let path: Arc<str> = match i % 4 {
                0 => shared.clone(),
                1 => Arc::from("/same-text-new-arc"),
                _ => Arc::from(format!("/unique/{i}").as_str()),
            };
            let referrer = (i % 3 == 0).then(|| Arc::from(format!("r{}.ru", i % 7).as_str()));
            let source = (i % 5 == 0).then(|| Arc::from("yandex"));
            let e = Event {
                path: path.clone(),
                referrer_host: referrer.clone(),
                utm_source: source.clone(),
                ..event(i, (i % 3) as u16, "/unused")
            };
            w.push(i as u64, &e.as_ref()).unwrap();
            want.insert(
                i,
                (
                    path.to_string(),
                    referrer.map(|r: Arc<str>| r.to_string()),
                    source.map(|s: Arc<str>| s.to_string()),
                ),
            );
        }
        w.finish().unwrap();
        let mut got = std::collections::BTreeMap::new();
        for b in 0..3 {
            let events = spill
                .read_bucket(b, &HashSet::new())
                .unwrap()
                .into_frame()
                .unwrap();
            let df = events.strings.decode(events.frame).unwrap();
            let ts = df.column("ts").unwrap().i64().unwrap().clone();
            let text = |c: &str, i: usize| {
                df.column(c)
                    .unwrap()
                    .str()
                    .unwrap()
                    .get(i)
                    .map(str::to_string)
            };
            for i in 0..df.height() {
                let key = ts.get(i).unwrap();
                let row = (
                    text("path", i).unwrap(),
                    text("referrer_host", i),
                    text("utm_source", i),
                );
                got.insert(key, row);
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn spill_of_a_killed_run_is_removed_but_not_a_live_one() {
        let tmp = tempfile::tempdir().unwrap();
        let live = SpillDir::create(tmp.path(), "live", 2).unwrap();
        // A killed run: its directory and files remain, nobody holds its lock.
        let dead = tmp.path().join("spill/dead");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("w0-b0.bin"), b"sealed bytes").unwrap();
        std::fs::write(dead.join(".lock"), b"").unwrap();
        // Killed after making its directory, before its lock.
        let unlocked = tmp.path().join("spill/unlocked");
        std::fs::create_dir_all(&unlocked).unwrap();
        assert_eq!(SpillDir::remove_stale(tmp.path()).unwrap(), 2);
        assert!(!dead.exists() && !unlocked.exists());
        assert!(tmp.path().join("spill/live").exists());
        drop(live);
    }

    #[test]
    fn spill_tampering_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let spill = SpillDir::create(tmp.path(), "run-2", 1).unwrap();
        let mut w = spill.writer().unwrap();
        w.push(1, &event(1, 0, "/a").as_ref()).unwrap();
        w.finish().unwrap();
        let f = std::fs::read_dir(tmp.path().join("spill/run-2"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("-b0.bin"))
            .unwrap();
        let mut bytes = std::fs::read(&f).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&f, bytes).unwrap();
        assert!(spill.read_bucket(0, &HashSet::new()).is_err());
    }

    /// Tables' frames keep their ids on disk and come back with the bucket's texts (they sit
    /// in the slot after the tables'); a bucket without frames writes nothing.
    #[test]
    fn table_frames_come_back_with_their_texts() {
        use polars::prelude::*;
        let tmp = tempfile::tempdir().unwrap();
        let spill = SpillDir::create(tmp.path(), "run-4", 2).unwrap();
        let mut strings = super::super::events::Strings::default();
        assert_eq!(strings.id("/каталог"), 0);
        assert_eq!(strings.id("yandex.ru"), 1);
        let pages = df!("day" => [3i32, 3], "path" => [1u32, 0], "visitor" => [7u64, 8]).unwrap();
        let hourly = df!("day" => [3i32], "hour" => [5i32], "visitor" => [7u64]).unwrap();
        let frames = vec![Some(pages.clone()), None, Some(hourly.clone())];
        assert!(spill.write_table_frames(0, frames, &strings).unwrap() > 0);
        let read = spill.read_table_frames(0, &[2, 1, 0]).unwrap();
        assert_eq!(read.frames, vec![Some(hourly), None, Some(pages.clone())]);
        let want =
            df!("day" => [3i32, 3], "path" => ["yandex.ru", "/каталог"], "visitor" => [7u64, 8])
                .unwrap();
        assert_eq!(read.texts.decode(pages).unwrap(), want);
        assert_eq!(
            spill
                .write_table_frames(1, vec![None, None], &strings)
                .unwrap(),
            0
        );
        assert_eq!(spill.read_table_frames(1, &[0]).unwrap().frames, vec![None]);
    }

    /// A bucket's visits come back day by day as written, sealed and bound to their bucket;
    /// a day or a bucket without visits reads as none.
    #[test]
    fn visits_come_back_by_day_sealed_and_bound_to_their_bucket() {
        use crate::day::Day;
        let tmp = tempfile::tempdir().unwrap();
        let spill = SpillDir::create(tmp.path(), "run-5", 3).unwrap();
        let visitor: u64 = 0x5EC2_E71D_0123_4567;
        let days = vec![
            (
                Day(20_760),
                [visitor.to_le_bytes().as_slice(), b"first"].concat(),
            ),
            (Day(20_762), b"third day".to_vec()),
        ];
        assert!(spill.write_visits(1, days.clone()).unwrap() > 0);
        assert_eq!(spill.write_visits(2, Vec::new()).unwrap(), 0);
        for (day, want) in &days {
            assert_eq!(&read(&spill, 1, *day).unwrap(), want);
        }
        assert!(read(&spill, 1, Day(20_761)).unwrap().is_empty());
        assert!(read(&spill, 2, Day(20_760)).unwrap().is_empty());
        assert!(read(&spill, 0, Day(20_760)).unwrap().is_empty());
        // Appended after what the buffer holds.
        let mut out = b"before".to_vec();
        spill.read_visits_into(1, Day(20_762), &mut out).unwrap();
        assert_eq!(out, b"beforethird day");
        let f = tmp.path().join("spill/run-5/v-b1.bin");
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == visitor.to_le_bytes()),
            "sealed"
        );
        // Bucket 1's file in bucket 0's place fails authentication.
        std::fs::write(tmp.path().join("spill/run-5/v-b0.bin"), &bytes).unwrap();
        let mut out = b"kept".to_vec();
        assert!(spill.read_visits_into(0, Day(20_760), &mut out).is_err());
        assert_eq!(out, b"kept", "a failed read leaves the buffer as it was");
        // A slot length beyond the file is an error, not an allocation of that size.
        let mut huge = bytes.clone();
        huge[4 + 8..4 + 16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        std::fs::write(&f, &huge).unwrap();
        let err = spill
            .read_visits_into(1, Day(20_760), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    fn read(spill: &SpillDir, b: usize, day: crate::day::Day) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        spill.read_visits_into(b, day, &mut out)?;
        Ok(out)
    }

    /// The visit log's history, appended part by part, reads back as the parts' history;
    /// parts are sealed, in order and bound to their bucket.
    #[test]
    fn history_parts_round_trip_sealed() {
        use crate::visitors::{History, VisitRecord};
        let tmp = tempfile::tempdir().unwrap();
        let spill = SpillDir::create(tmp.path(), "run-6", 2).unwrap();
        let visit = |visitor: u64| VisitRecord {
            visitor,
            day: 20_760,
            start: 1_793_000_000,
            channel: "organic_search",
            utm_source: Some(Arc::from("яндекс")),
            utm_medium: None,
            utm_campaign: None,
        };
        let parts = [
            History {
                visits: vec![visit(0xAB_CDEF_0123), visit(7)],
                others: vec![(9, 20_759), (3, 20_758)],
            },
            History {
                visits: vec![visit(8)],
                others: vec![(3, 20_758), (1, 20_759)],
            },
        ];
        let mut writer = spill.parts_writer(Parts::History);
        for h in &parts {
            writer.append(1, h.to_part().into_bytes()).unwrap();
        }
        writer.finish().unwrap();
        let back = spill.read_history(1).unwrap();
        let ids: Vec<u64> = back.visits.iter().map(|v| v.visitor).collect();
        assert_eq!(ids, [0xAB_CDEF_0123, 7, 8]);
        assert_eq!(back.visits[0], visit(0xAB_CDEF_0123));
        assert_eq!(back.others, [(1, 20_759), (3, 20_758), (9, 20_759)]);
        let empty = spill.read_history(0).unwrap();
        assert!(empty.visits.is_empty() && empty.others.is_empty());
        let f = tmp.path().join("spill/run-6/h-b1.bin");
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes
                .windows(5)
                .any(|w| *w == 0xAB_CDEF_0123u64.to_le_bytes()[..5])
        );
        std::fs::write(tmp.path().join("spill/run-6/h-b0.bin"), &bytes).unwrap();
        assert!(spill.read_history(0).is_err(), "another bucket's parts");
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 3);
        std::fs::write(&f, cut).unwrap();
        assert!(spill.read_history(1).is_err(), "a part cut short");
    }

    /// A row-visitor frame comes back as it was written, sealed (no visitor id in the clear
    /// on disk), bound to its bucket and slot, and tampering is detected.
    #[test]
    fn frames_round_trip_sealed_and_bound_to_their_slot() {
        use polars::prelude::*;
        let tmp = tempfile::tempdir().unwrap();
        let spill = SpillDir::create(tmp.path(), "run-3", 2).unwrap();
        let visitor: u64 = 0x5EC2_E71D_0123_4567;
        let frame = df!(
            "day" => [20_760i32, 20_760],
            "path" => ["/каталог", "/a"],
            "visitor" => [visitor, 7],
            "_bucket" => [1u32, 1],
        )
        .unwrap();
        let other = df!("day" => [20_761i32], "visitor" => [9u64]).unwrap();
        // Slots 0 and 2 hold nothing; 1 and 3 hold frames of equal size.
        let frames = vec![
            None,
            Some(frame.clone()),
            None,
            Some(frame.clone()),
            Some(other.clone()),
        ];
        assert!(spill.write_frames(1, frames).unwrap() > 0);
        assert_eq!(spill.read_frame(1, 1).unwrap().unwrap(), frame);
        assert_eq!(spill.read_frame(1, 3).unwrap().unwrap(), frame);
        assert_eq!(spill.read_frame(1, 4).unwrap().unwrap(), other);
        for (b, slot) in [(1, 0), (1, 2), (1, 5), (0, 1)] {
            assert!(
                spill.read_frame(b, slot).unwrap().is_none(),
                "bucket {b} slot {slot} holds nothing"
            );
        }
        let f = tmp.path().join("spill/run-3/f-b1.bin");
        let mut bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == visitor.to_le_bytes()),
            "the visitor id is not in the clear"
        );
        // Slots 1 and 3 swapped (equal lengths), each fails authentication in the other's
        // place; so does a flipped bit.
        let header = 4 + 8 * 5;
        let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
        let (first, third) = (header, header + len);
        let mut swapped = bytes.clone();
        swapped[first..first + len].copy_from_slice(&bytes[third..third + len]);
        swapped[third..third + len].copy_from_slice(&bytes[first..first + len]);
        std::fs::write(&f, &swapped).unwrap();
        assert!(spill.read_frame(1, 1).is_err());
        assert!(spill.read_frame(1, 3).is_err());
        bytes[header + 10] ^= 1;
        std::fs::write(&f, bytes).unwrap();
        assert!(spill.read_frame(1, 1).is_err());
        assert_eq!(
            spill.read_frame(1, 4).unwrap().unwrap(),
            other,
            "other slots unharmed"
        );
    }
}
