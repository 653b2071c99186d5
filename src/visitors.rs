//! Previous visits: new and returning visitors, visit numbers, week and month uniques, and
//! attribution across visits, without a long-lived identifier (docs/PRIVACY.md).
//!
//! With `[returning_visitors]` on, a pseudonym lives for one *epoch* of `lookback_days`
//! (decision 2) instead of one day. What a later run needs to know about earlier visits is
//! carried in a *visit log*: one file per epoch and day under `<state dir>/visitors/<epoch>/`,
//! each visit as (pseudonym of that epoch, day, start, channel, campaign), sealed with
//! ChaCha20-Poly1305 in 64 KiB segments ([`DayWriter`], so a day of any size is written and
//! read without being held whole) under a key derived from that epoch's master. When the
//! master is destroyed (`logveil key destroy`, or a run with `manage_keys`) the files can
//! never be read again, and runs delete them: crypto-shredding. A day's file is replaced
//! whole when the day is re-run (decision 19), and files older than the lookback (at least
//! 31 days, for month uniques) are deleted.
//!
//! A run looks a visitor up under the current epoch's pseudonym and the previous epoch's,
//! which the pseudonymise stage computes for every pageview: the [`Identities`] map says, for
//! every (epoch, pseudonym) seen in the run, which bucket the client is in and which pseudonym
//! stands for it in this run (the newest). Only visits of clients present in the run are
//! loaded (and routed to their bucket); the rest stay sealed on disk, except that week and month
//! uniques read every pseudonym of the current epoch.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use polars::prelude::*;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::aggregate::{MODELS, Sessions};
use crate::day::Day;
use crate::goals::Goals;
use crate::pseudonymise::channel;
use crate::pseudonymise::keyring::KeySet;

/// A day's file as sealed whole, one AEAD over all its visits (read, never written now).
const MAGIC: &[u8; 8] = b"LVSTATE1";
/// A day's file sealed in segments ([`DayWriter`]): written and read a segment at a time.
const MAGIC_SEGMENTED: &[u8; 8] = b"LVSTATE2";
/// The plaintext of one segment of a segmented file (the last may be shorter).
const SEGMENT: usize = 64 << 10;
/// ChaCha20-Poly1305's tag, after each segment's ciphertext.
const TAG: usize = 16;

/// One client seen under a pseudonym of an epoch: its bucket, and its pseudonym (`identity`)
/// in the epoch `of`, the newest it was seen in.
///
/// Packed to 2-byte alignment: 26 bytes instead of 32 of which 6 were padding. Most notes are
/// of a client under its own epoch's pseudonym, which [`OwnEntry`] keeps in 14 bytes; this
/// form is for a pseudonym of an earlier epoch (docs/PERFORMANCE.md, sixteenth session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(2))]
struct IdentityEntry {
    pseudonym: u64,
    identity: u64,
    epoch: i32,
    of: i32,
    bucket: u16,
}

const _: () = assert!(std::mem::size_of::<IdentityEntry>() == 26);

/// A client seen under its own epoch's pseudonym: an [`IdentityEntry`] whose identity is its
/// pseudonym and whose `of` is its epoch, in 14 bytes. The shard notes one for every client
/// and day's epoch, so on logs of many clients these are most of the shard's growing memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(2))]
struct OwnEntry {
    pseudonym: u64,
    epoch: i32,
    bucket: u16,
}

const _: () = assert!(std::mem::size_of::<OwnEntry>() == 14);

/// What the sorted tables of [`Identities`] need of an entry.
trait Entry: Copy + std::fmt::Debug {
    fn pseudonym(&self) -> u64;
    fn epoch(&self) -> i32;
    /// The order of a table: by pseudonym and epoch, the newest identity first.
    fn order(&self) -> (u64, i32, std::cmp::Reverse<i32>);
    fn full(&self) -> IdentityEntry;
    fn key(&self) -> (u64, i32) {
        (self.pseudonym(), self.epoch())
    }
}

impl Entry for IdentityEntry {
    fn pseudonym(&self) -> u64 {
        self.pseudonym
    }
    fn epoch(&self) -> i32 {
        self.epoch
    }
    fn order(&self) -> (u64, i32, std::cmp::Reverse<i32>) {
        (self.pseudonym, self.epoch, std::cmp::Reverse(self.of))
    }
    fn full(&self) -> IdentityEntry {
        *self
    }
}

impl Entry for OwnEntry {
    fn pseudonym(&self) -> u64 {
        self.pseudonym
    }
    fn epoch(&self) -> i32 {
        self.epoch
    }
    fn order(&self) -> (u64, i32, std::cmp::Reverse<i32>) {
        (self.pseudonym, self.epoch, std::cmp::Reverse(self.epoch))
    }
    fn full(&self) -> IdentityEntry {
        IdentityEntry {
            pseudonym: self.pseudonym,
            identity: self.pseudonym,
            epoch: self.epoch,
            of: self.epoch,
            bucket: self.bucket,
        }
    }
}

/// Both tables of notes: clients under their own epoch's pseudonym, and under an earlier one.
#[derive(Debug, Default)]
struct NoteTables {
    own: Vec<OwnEntry>,
    moved: Vec<IdentityEntry>,
}

impl NoteTables {
    fn len(&self) -> usize {
        self.own.len() + self.moved.len()
    }

    fn push(&mut self, e: IdentityEntry) {
        if e.identity == e.pseudonym && e.of == e.epoch {
            self.own.push(OwnEntry {
                pseudonym: e.pseudonym,
                epoch: e.epoch,
                bucket: e.bucket,
            });
        } else {
            self.moved.push(e);
        }
    }
}

/// The pseudonymise stage's notes of which client each (epoch, pseudonym) is, appended as
/// pageviews come (a vector, not a map: a note is a push, not a hash-table insert with its
/// cache misses and rehashes) and folded into sorted tables now and then and at the end.
///
/// The shard's workers see mostly the same clients, so they fold into one pair of tables
/// ([`Self::sharing`]) rather than one each: on big inputs they are the shard's largest
/// allocation.
#[derive(Debug, Default)]
pub struct IdentityNotes {
    /// Folded notes, as [`merge_sorted`] keeps them (not indexed until [`Self::finish`]).
    tables: Arc<std::sync::Mutex<NoteTables>>,
    /// The tables' length at this worker's last fold.
    folded: usize,
    pending: NoteTables,
}

/// Notes kept unsorted before they are folded in: this many, or a quarter of the tables once
/// they are larger, so that folds stay few as the tables grow while each worker's pending
/// notes stay a fraction of them.
const PENDING_NOTES: usize = 1 << 18;

impl IdentityNotes {
    /// Notes of another worker that fold into the same tables.
    pub fn sharing(&self) -> IdentityNotes {
        IdentityNotes {
            tables: Arc::clone(&self.tables),
            ..Default::default()
        }
    }

    /// Notes that `pseudonym` of `epoch` is the client in `bucket` whose pseudonym in its own
    /// epoch `of` is `identity`. The newest identity wins; noting again changes nothing.
    pub fn note(&mut self, epoch: Day, pseudonym: u64, bucket: u16, identity: u64, of: Day) {
        self.pending.push(IdentityEntry {
            pseudonym,
            identity,
            epoch: epoch.0,
            of: of.0,
            bucket,
        });
        if self.pending.len() >= PENDING_NOTES.max(self.folded / 4) {
            self.fold();
        }
    }

    fn fold(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.own.sort_unstable_by_key(Entry::order);
        pending.moved.sort_unstable_by_key(Entry::order);
        let mut tables = self.tables.lock().expect("not poisoned");
        merge_sorted(&mut tables.own, pending.own);
        merge_sorted(&mut tables.moved, pending.moved);
        self.folded = tables.len();
    }

    /// Every note of the notes sharing these tables, as a map of clients: from the last of
    /// them to finish (exactly one gets the tables); the others fold their notes in and give
    /// an empty map. (The first to finish took the table, and the rest built a second one of
    /// the same clients: on distinct-client logs the two were the shard's peak, 55 MiB more.)
    pub fn finish(mut self) -> Identities {
        self.fold();
        match Arc::into_inner(self.tables) {
            Some(tables) => {
                let tables = tables.into_inner().expect("not poisoned");
                Identities {
                    own: Sorted::of_sorted(tables.own),
                    moved: Sorted::of_sorted(tables.moved),
                }
            }
            None => Identities::default(),
        }
    }
}

/// Adds `more` to `entries` (both sorted by [`Entry::order`]) and keeps the newest identity
/// of each (epoch, pseudonym). Noting is order-free (equal ones name the same client), so
/// the result does not depend on which worker saw what.
///
/// The tables are the shard's largest allocation when clients are many, so the merge works
/// in place: `entries` grows by `more`'s length (for a table this size the allocator remaps
/// its pages rather than copy them) and is filled from the back, largest first; a copy into
/// a new vector held both at once.
fn merge_sorted<E: Entry>(entries: &mut Vec<E>, mut more: Vec<E>) {
    more.dedup_by_key(|e| e.key());
    if more.is_empty() {
        return;
    }
    if entries.is_empty() {
        more.shrink_to_fit();
        *entries = more;
        return;
    }
    let (n, m) = (entries.len(), more.len());
    entries.reserve_exact(m);
    entries.resize(n + m, more[0]);
    // Unmerged: entries[..i] and more[..j]; merged: entries[w..]. w - i is j plus the
    // duplicates dropped so far, so writing at w never overwrites an unmerged entry.
    let (mut i, mut j, mut w) = (n, m, n + m);
    let mut put = |entries: &mut Vec<E>, e: E| {
        // Equal keys come oldest first from the back: a newer one replaces it.
        if w < n + m && entries[w].key() == e.key() {
            entries[w] = e;
        } else {
            w -= 1;
            entries[w] = e;
        }
    };
    while j > 0 {
        let e = if i > 0 && entries[i - 1].order() > more[j - 1].order() {
            i -= 1;
            entries[i]
        } else {
            j -= 1;
            more[j]
        };
        put(entries, e);
    }
    // An old entry just before the merged ones may share the key of the first of them (old
    // keys are distinct, so only that one): it is not older, so it replaces it.
    if i > 0 && entries[i - 1].key() == entries[w].key() {
        i -= 1;
        entries[w] = entries[i];
    }
    if w > i {
        entries.copy_within(w.., i);
        entries.truncate(i + (n + m - w));
    }
    if entries.capacity() - entries.len() > entries.len() / 8 {
        entries.shrink_to_fit();
    }
}

/// One sorted table of entries, one per (epoch, pseudonym), with an index by the
/// pseudonym's leading bits (pseudonyms are keyed hashes, so evenly spread): a lookup reads
/// one slot of the index and the few entries it points to.
#[derive(Debug)]
struct Sorted<E> {
    entries: Vec<E>,
    /// `index[k]` is the first entry whose pseudonym's leading `bits` bits are at least `k`.
    index: Vec<u32>,
    bits: u32,
}

impl<E> Default for Sorted<E> {
    fn default() -> Self {
        Sorted {
            entries: Vec::new(),
            index: Vec::new(),
            bits: 0,
        }
    }
}

impl<E: Entry> Sorted<E> {
    /// The table of `entries`, as [`merge_sorted`] keeps them.
    fn of_sorted(entries: Vec<E>) -> Sorted<E> {
        let mut table = Sorted {
            entries,
            ..Default::default()
        };
        table.reindex();
        table
    }

    fn reindex(&mut self) {
        let n = self.entries.len();
        self.bits = (usize::BITS - n.leading_zeros()).clamp(1, 24);
        let slots = 1usize << self.bits;
        self.index.clear();
        self.index.reserve_exact(slots + 1);
        let mut at = 0;
        for k in 0..slots {
            while at < n && self.slot(self.entries[at].pseudonym()) < k {
                at += 1;
            }
            self.index.push(at as u32);
        }
        self.index.push(n as u32);
    }

    fn slot(&self, pseudonym: u64) -> usize {
        (pseudonym >> (64 - self.bits)) as usize
    }

    fn get(&self, epoch: Day, pseudonym: u64) -> Option<&E> {
        if self.entries.is_empty() {
            return None;
        }
        let k = self.slot(pseudonym);
        let range = self.index[k] as usize..self.index[k + 1] as usize;
        self.entries[range]
            .iter()
            .find(|e| e.pseudonym() == pseudonym && e.epoch() == epoch.0)
    }

    fn absorb(&mut self, other: Sorted<E>) {
        let mut entries = std::mem::take(&mut self.entries);
        merge_sorted(&mut entries, other.entries);
        *self = Sorted::of_sorted(entries);
    }

    fn of_bucket(&self, b: usize, buckets: usize) -> Sorted<E> {
        Sorted::of_sorted(
            self.entries
                .iter()
                .filter(|e| usize::from(e.full().bucket) % buckets == b)
                .copied()
                .collect(),
        )
    }
}

/// Which bucket and which run-wide pseudonym each (epoch, pseudonym) of a run belongs to, in
/// two sorted tables: clients under their own epoch's pseudonym ([`OwnEntry`]) and under an
/// earlier epoch's ([`IdentityEntry`]). A key in both is the same client seen in two epochs;
/// the earlier-epoch entry names its newer identity and wins, as one table's newest would
/// (the shard notes a pseudonym of an earlier epoch only with the identity of a later one).
#[derive(Debug, Default)]
pub struct Identities {
    own: Sorted<OwnEntry>,
    moved: Sorted<IdentityEntry>,
}

impl Identities {
    pub fn absorb(&mut self, other: Identities) {
        self.own.absorb(other.own);
        self.moved.absorb(other.moved);
    }

    /// (bucket, identity) of a pseudonym of `epoch`.
    pub fn get(&self, epoch: Day, pseudonym: u64) -> Option<(u16, u64)> {
        match self.moved.get(epoch, pseudonym) {
            Some(e) => Some((e.bucket, e.identity)),
            None => self
                .own
                .get(epoch, pseudonym)
                .map(|e| (e.bucket, e.pseudonym)),
        }
    }

    /// The run-wide identity of a pseudonym of `epoch`: [`Self::get`]'s, or the pseudonym
    /// itself (as for a client seen only in its own epoch), found in the smaller table alone.
    pub fn identity(&self, epoch: Day, pseudonym: u64) -> u64 {
        self.moved
            .get(epoch, pseudonym)
            .map_or(pseudonym, |e| e.identity)
    }

    /// Every (epoch, pseudonym) once, in the order of one table of all, with its newest
    /// identity: what one table would hold.
    fn for_each(&self, mut each: impl FnMut(&IdentityEntry)) {
        let (own, moved) = (&self.own.entries, &self.moved.entries);
        let (mut i, mut j) = (0, 0);
        while i < own.len() || j < moved.len() {
            let a = own.get(i).map(Entry::key);
            let b = moved.get(j).map(Entry::key);
            match (a, b) {
                (Some(a), Some(b)) if a == b => {
                    // The same client seen in two epochs: the newer identity.
                    each(&moved[j]);
                    i += 1;
                    j += 1;
                }
                (Some(a), b) if b.is_none_or(|b| a < b) => {
                    each(&own[i].full());
                    i += 1;
                }
                _ => {
                    each(&moved[j]);
                    j += 1;
                }
            }
        }
    }

    /// How many (epoch, pseudonym) pairs the run saw.
    pub fn len(&self) -> usize {
        let mut n = 0;
        self.for_each(|_| n += 1);
        n
    }

    pub fn is_empty(&self) -> bool {
        self.own.entries.is_empty() && self.moved.entries.is_empty()
    }

    /// The entries of the clients in bucket `b` of `buckets` (what one reduce task needs).
    pub fn of_bucket(&self, b: usize, buckets: usize) -> Identities {
        Identities {
            own: self.own.of_bucket(b, buckets),
            moved: self.moved.of_bucket(b, buckets),
        }
    }

    /// The map as bytes, for a staged run's intermediates (sealed by the caller): 26 bytes an
    /// (epoch, pseudonym), in the order of one table of all.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity((self.own.entries.len() + self.moved.entries.len()) * 26);
        self.for_each(|e| put_entry(&mut buf, e));
        buf
    }

    /// Hands each bucket's entries on as bytes ([`Self::to_bytes`], which
    /// [`Self::from_bytes`] reads back), in parts of about [`PART_BYTES`], and frees the
    /// map: the reduce needs only its own bucket's clients, and on big inputs the whole map
    /// is the largest thing a run holds.
    pub fn split(
        self,
        buckets: usize,
        each: &mut dyn FnMut(usize, Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut parts: Vec<Vec<u8>> = vec![Vec::new(); buckets];
        let mut failed = Ok(());
        self.for_each(|e| {
            if failed.is_err() {
                return;
            }
            let b = usize::from(e.bucket) % buckets;
            put_entry(&mut parts[b], e);
            if parts[b].len() >= PART_BYTES {
                failed = each(b, std::mem::take(&mut parts[b]));
            }
        });
        failed?;
        drop(self);
        for (b, part) in parts.into_iter().enumerate() {
            if !part.is_empty() {
                each(b, part)?;
            }
        }
        Ok(())
    }

    /// The map [`Self::to_bytes`] wrote.
    pub fn from_bytes(b: &[u8]) -> Option<Identities> {
        let mut r = Reader { b, at: 0 };
        let mut notes = IdentityNotes::default();
        while r.at < b.len() {
            let epoch = i32::from_le_bytes(r.array().ok()?);
            let p = u64::from_le_bytes(r.array().ok()?);
            let bucket = u16::from_le_bytes(r.array().ok()?);
            let id = u64::from_le_bytes(r.array().ok()?);
            let of = i32::from_le_bytes(r.array().ok()?);
            notes.note(Day(epoch), p, bucket, id, Day(of));
        }
        Some(notes.finish())
    }
}

/// A bucket's visits for the visit log, day by day (days ascending), each day's in the log's
/// encoding and in the order the reduce made them: what [`VisitLog::write_day`] seals, at
/// about 33 bytes a visit (a [`VisitRecord`] takes 88), and small enough to leave the bucket's
/// worker for the spill rather than be held until the run publishes.
pub type DayVisits = Vec<(Day, Vec<u8>)>;

/// `records` grouped by day ([`DayVisits`]).
pub fn by_day(records: &[VisitRecord]) -> DayVisits {
    let mut days: BTreeMap<i32, Vec<u8>> = BTreeMap::new();
    for v in records {
        encode(v, days.entry(v.day).or_default());
    }
    days.into_iter().map(|(d, b)| (Day(d), b)).collect()
}

fn put_entry(buf: &mut Vec<u8>, e: &IdentityEntry) {
    buf.extend_from_slice(&e.epoch.to_le_bytes());
    buf.extend_from_slice(&e.pseudonym.to_le_bytes());
    buf.extend_from_slice(&e.bucket.to_le_bytes());
    buf.extend_from_slice(&e.identity.to_le_bytes());
    buf.extend_from_slice(&e.of.to_le_bytes());
}

/// One bucket's share of the visit log as [`VisitLog::load`] routes it: visits in the log's
/// encoding (the visitor already the run-wide identity), and the other clients' (pseudonym,
/// day) pairs, 12 bytes each. The load hands parts on as they fill ([`PART_BYTES`]), so the
/// caller can put them on disk: however long the log, it never sits in memory whole.
#[derive(Debug, Default)]
pub struct HistoryPart {
    visits: Vec<u8>,
    others: Vec<u8>,
}

/// The size at which [`VisitLog::load`] hands a bucket's part on.
const PART_BYTES: usize = 128 << 10;

impl HistoryPart {
    fn len(&self) -> usize {
        self.visits.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The part as bytes: its visits' length and its others' (u64 each), then both. Parts
    /// written one after another read back as one history ([`History::from_bytes`]).
    pub fn into_bytes(self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 + self.len());
        buf.extend_from_slice(&(self.visits.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(self.others.len() as u64).to_le_bytes());
        buf.extend_from_slice(&self.visits);
        buf.extend_from_slice(&self.others);
        buf
    }
}

impl History {
    /// The history as one part (for tests).
    #[cfg(test)]
    pub fn to_part(&self) -> HistoryPart {
        let mut part = HistoryPart::default();
        for v in &self.visits {
            encode(v, &mut part.visits);
        }
        for (p, day) in &self.others {
            part.others.extend_from_slice(&p.to_le_bytes());
            part.others.extend_from_slice(&day.to_le_bytes());
        }
        part
    }

    /// The history of parts written one after another ([`HistoryPart::into_bytes`]), its
    /// other clients sorted and each pair once.
    pub fn from_bytes(b: &[u8]) -> Option<History> {
        let mut history = History::default();
        let mut strings = HashMap::new();
        let mut r = Reader { b, at: 0 };
        while r.at < b.len() {
            let visits = u64::from_le_bytes(r.array().ok()?) as usize;
            let others = u64::from_le_bytes(r.array().ok()?) as usize;
            let visits = r.take(visits).ok()?;
            decode(visits, &mut strings, |v| history.visits.push(v)).ok()?;
            let others = r.take(others).ok()?;
            if others.len() % 12 != 0 {
                return None;
            }
            for pair in others.chunks_exact(12) {
                let p = u64::from_le_bytes(pair[..8].try_into().expect("8"));
                let day = i32::from_le_bytes(pair[8..].try_into().expect("4"));
                history.others.push((p, day));
            }
        }
        history.others.sort_unstable();
        history.others.dedup();
        Some(history)
    }
}

/// One visit of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitRecord {
    /// Pseudonym under the epoch of the file; after loading, the run-wide identity.
    pub visitor: u64,
    pub day: i32,
    pub start: i64,
    pub channel: &'static str,
    pub utm_source: Option<Arc<str>>,
    pub utm_medium: Option<Arc<str>>,
    pub utm_campaign: Option<Arc<str>>,
}

/// What the log holds for one bucket of a run: earlier visits of the run's clients, and the
/// (pseudonym, day) pairs of the current epoch's other clients (for uniques).
#[derive(Debug, Default)]
pub struct History {
    pub visits: Vec<VisitRecord>,
    pub others: Vec<(u64, i32)>,
}

/// The epoch a managed key ring gives `day`: whole `lookback`s from 1970-01-01.
pub fn grid_epoch(day: Day, lookback: u32) -> Day {
    let l = lookback.max(1) as i32;
    Day(day.0 - day.0.rem_euclid(l))
}

/// How many days of the log are kept: the lookback, and a month for month uniques.
pub fn retention_days(lookback: u32) -> i32 {
    lookback.max(31) as i32
}

/// The visit log of a pipeline: `<state dir>/visitors`.
pub struct VisitLog {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("visitor state {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("cannot spill the visit log's earlier visits: {0}")]
    Spill(io::Error),
    #[error(
        "visitor state {path} fails authentication (tampered with, or sealed under another key); move it away to start that day's state afresh"
    )]
    Tampered { path: String },
}

/// One day's file of the visit log being written ([`VisitLog::day_writer`]): the STREAM
/// construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) over ChaCha20-Poly1305. The file
/// is `LVSTATE2` ‖ a random 7-byte nonce prefix ‖ segments, each [`SEGMENT`] bytes of
/// visits (the last fewer, maybe none) sealed with the nonce prefix ‖ the segment's number
/// ‖ whether it is the last, so segments cannot be reordered, dropped or cut off unnoticed.
/// A day's file used to be sealed whole, which held the day's visits in memory: on a log of
/// many clients that was the run's peak (docs/PERFORMANCE.md, sixteenth session).
pub struct DayWriter {
    file: Option<std::fs::File>,
    key: LessSafeKey,
    aad: Vec<u8>,
    prefix: [u8; 7],
    counter: u32,
    buf: Vec<u8>,
    tmp: PathBuf,
    path: PathBuf,
}

impl DayWriter {
    /// Appends visits to the day's file.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), StateError> {
        while !bytes.is_empty() {
            // A full segment is sealed only once more follows: the last one is marked so.
            if self.buf.len() == SEGMENT {
                self.seal_segment(false)?;
            }
            let n = (SEGMENT - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Seals the last segment, syncs the file and puts it in place of the day's earlier one.
    pub fn commit(mut self) -> Result<(), StateError> {
        self.seal_segment(true)?;
        let file = self.file.take().expect("open until committed");
        file.sync_all().map_err(io_err(&self.tmp))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))
    }

    fn seal_segment(&mut self, last: bool) -> Result<(), StateError> {
        let nonce = segment_nonce(&self.prefix, self.counter, last);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&self.aad), &mut self.buf)
            .expect("sealing cannot fail for in-memory data");
        self.buf.extend_from_slice(tag.as_ref());
        write_all(&mut self.file, &self.tmp, &self.buf)?;
        self.buf.clear();
        self.counter = self.counter.checked_add(1).ok_or_else(|| StateError::Io {
            path: self.tmp.display().to_string(),
            source: io::Error::other("a day's visits exceed 2^32 segments"),
        })?;
        Ok(())
    }
}

/// Appends `bytes` to a [`DayWriter`]'s file (open until it is committed).
fn write_all(file: &mut Option<std::fs::File>, tmp: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let file = file.as_mut().expect("open until committed");
    file.write_all(bytes).map_err(io_err(tmp))
}

impl Drop for DayWriter {
    /// A writer dropped before its commit (an error, a failed run) leaves no partial file.
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The nonce of segment `counter` of a segmented file.
fn segment_nonce(prefix: &[u8; 7], counter: u32, last: bool) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[..7].copy_from_slice(prefix);
    nonce[7..11].copy_from_slice(&counter.to_be_bytes());
    nonce[11] = u8::from(last);
    Nonce::assume_unique_for_key(nonce)
}

/// Opens a segmented file's segments in order, handing each one's visits to `each`; `Err`
/// when a segment fails authentication, is missing, or the file is cut short or extended.
fn open_segmented(
    key: &[u8; 32],
    aad: &[u8],
    mut file: impl io::Read,
    mut each: impl FnMut(&[u8]) -> Result<(), ()>,
) -> Result<Result<(), ()>, io::Error> {
    let mut header = [0u8; 15];
    if fill(&mut file, &mut header)? < header.len() || &header[..8] != MAGIC_SEGMENTED {
        return Ok(Err(()));
    }
    let prefix: [u8; 7] = header[8..].try_into().expect("7 bytes");
    let key = cipher(key);
    let (mut segment, mut next) = (vec![0u8; SEGMENT + TAG], vec![0u8; SEGMENT + TAG]);
    let mut n = fill(&mut file, &mut segment)?;
    for counter in 0u32.. {
        // Only a full segment can have another after it.
        let m = if n == segment.len() {
            fill(&mut file, &mut next)?
        } else {
            0
        };
        let last = m == 0;
        let nonce = segment_nonce(&prefix, counter, last);
        let Ok(plain) = key.open_in_place(nonce, Aad::from(aad), &mut segment[..n]) else {
            return Ok(Err(()));
        };
        if each(plain).is_err() {
            return Ok(Err(()));
        }
        if last {
            return Ok(Ok(()));
        }
        std::mem::swap(&mut segment, &mut next);
        n = m;
    }
    Ok(Err(()))
}

/// Reads into `buf` until it is full or the input ends; the bytes read.
fn fill(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(k) => at += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl VisitLog {
    pub fn new(state_dir: &Path) -> VisitLog {
        VisitLog {
            root: state_dir.join("visitors"),
        }
    }

    fn file(&self, epoch: Day, day: Day) -> PathBuf {
        self.root.join(epoch.to_string()).join(format!("{day}.bin"))
    }

    /// Every (epoch, day) file present.
    fn files(&self) -> Result<Vec<(Day, Day, PathBuf)>, StateError> {
        let mut out = Vec::new();
        let Ok(epochs) = std::fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for e in epochs {
            let e = e.map_err(io_err(&self.root))?.path();
            let Some(epoch) = e.file_name().and_then(|n| Day::parse(&n.to_string_lossy())) else {
                continue;
            };
            for f in std::fs::read_dir(&e).map_err(io_err(&e))? {
                let f = f.map_err(io_err(&e))?.path();
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                if let Some(day) = name
                    .as_deref()
                    .and_then(|n| n.strip_suffix(".bin"))
                    .and_then(Day::parse)
                {
                    out.push((epoch, day, f));
                }
            }
        }
        out.sort_by_key(|(e, d, _)| (*e, *d));
        Ok(out)
    }

    /// Deletes what may no longer exist: epochs whose master is gone (unreadable already),
    /// epochs older than the previous epoch of `latest`, and days older than the retention.
    /// Returns the epochs removed.
    pub fn expire(
        &self,
        keys: &KeySet,
        latest: Day,
        lookback: u32,
    ) -> Result<Vec<Day>, StateError> {
        let current = keys.epoch_start(latest, Some(lookback));
        let previous = current.and_then(|c| keys.epoch_start(c.prev(), Some(lookback)));
        let oldest_epoch = previous.or(current).unwrap_or(latest);
        let oldest_day = Day(latest.0 - retention_days(lookback));
        let mut removed = std::collections::BTreeSet::new();
        for (epoch, day, path) in self.files()? {
            let shredded = keys.master_for(epoch).is_none()
                || keys.epoch_start(epoch, Some(lookback)) != Some(epoch);
            if shredded || epoch < oldest_epoch {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                removed.insert(epoch);
            } else if day < oldest_day {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        for epoch in &removed {
            let dir = self.root.join(epoch.to_string());
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(removed.into_iter().collect())
    }

    /// Days after `day` already in the log (they were computed without this run's version of
    /// `day`: stale until re-run).
    pub fn days_after(&self, day: Day) -> Result<Vec<Day>, StateError> {
        let mut days: Vec<Day> = self
            .files()?
            .into_iter()
            .map(|(_, d, _)| d)
            .filter(|d| *d > day)
            .collect();
        days.dedup();
        Ok(days)
    }

    /// A writer of `day`'s file, which replaces the day's earlier file (if any) when it is
    /// committed: visits are pushed in, sealed a segment at a time, so a day of any size is
    /// never held whole.
    pub fn day_writer(
        &self,
        keys: &KeySet,
        lookback: u32,
        day: Day,
    ) -> Result<DayWriter, StateError> {
        let epoch = keys
            .epoch_start(day, Some(lookback))
            .expect("a master covers every day that was pseudonymised");
        let master = keys.master_for(epoch).expect("the same master");
        let path = self.file(epoch, day);
        let dir = path.parent().expect("a parent");
        private_dir(self.root.parent().unwrap_or(&self.root))?;
        private_dir(&self.root)?;
        private_dir(dir)?;
        let mut prefix = [0u8; 7];
        getrandom::fill(&mut prefix).map_err(|e| StateError::Io {
            path: "<random>".into(),
            source: io::Error::other(e.to_string()),
        })?;
        let tmp = path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&tmp).map_err(io_err(&tmp))?;
        let mut writer = DayWriter {
            file: Some(file),
            key: cipher(&master.state_key(epoch)),
            aad: segmented_aad(epoch, day),
            prefix,
            counter: 0,
            buf: Vec::with_capacity(SEGMENT + TAG),
            tmp,
            path,
        };
        let mut header = [0u8; 15];
        header[..8].copy_from_slice(MAGIC_SEGMENTED);
        header[8..].copy_from_slice(&prefix);
        write_all(&mut writer.file, &writer.tmp, &header)?;
        Ok(writer)
    }

    /// Writes `day`'s file of `plain` visits ([`DayVisits`]' encoding) at once (the tests'
    /// way; a run pushes its visits bucket by bucket).
    #[cfg(test)]
    pub fn write_day(
        &self,
        keys: &KeySet,
        lookback: u32,
        day: Day,
        plain: &[u8],
    ) -> Result<(), StateError> {
        let mut writer = self.day_writer(keys, lookback, day)?;
        writer.push(plain)?;
        writer.commit()
    }

    /// Reads the log's visits of days before `first` (within the retention of `last`) and
    /// routes them to their buckets: visits of the run's clients (as run-wide identities) and,
    /// for uniques, the other pseudonyms of the epochs of the run's days. Each bucket's part
    /// goes to `spill` whenever it fills, and at the end; a bucket may get several parts, or
    /// none.
    pub fn load(
        &self,
        keys: &KeySet,
        lookback: u32,
        days: (Day, Day),
        identities: &Identities,
        buckets: usize,
        spill: &mut dyn FnMut(usize, HistoryPart) -> io::Result<()>,
    ) -> Result<(), StateError> {
        let mut parts: Vec<HistoryPart> = (0..buckets).map(|_| HistoryPart::default()).collect();
        let run_epochs: std::collections::BTreeSet<Day> = (days.0.0..=days.1.0)
            .filter_map(|d| keys.epoch_start(Day(d), Some(lookback)))
            .collect();
        let oldest = Day(days.1.0 - retention_days(lookback));
        for (epoch, day, path) in self.files()? {
            if day >= days.0 || day < oldest {
                continue;
            }
            let Some(master) = keys.master_for(epoch) else {
                continue;
            };
            if keys.epoch_start(epoch, Some(lookback)) != Some(epoch) {
                continue;
            }
            let tampered = || StateError::Tampered {
                path: path.display().to_string(),
            };
            let current = run_epochs.contains(&epoch);
            let mut failed = None;
            let mut route = |v: RawVisit<'_>| {
                let (visitor, day, record) = (v.visitor, v.day, v.bytes);
                let b = match identities.get(epoch, visitor) {
                    Some((bucket, identity)) => {
                        let b = usize::from(bucket) % buckets;
                        let visits = &mut parts[b].visits;
                        visits.extend_from_slice(&identity.to_le_bytes());
                        visits.extend_from_slice(&record[8..]);
                        b
                    }
                    None if current => {
                        let b = (visitor % buckets as u64) as usize;
                        parts[b].others.extend_from_slice(&visitor.to_le_bytes());
                        parts[b].others.extend_from_slice(&day.to_le_bytes());
                        b
                    }
                    None => return Ok(()),
                };
                if parts[b].len() >= PART_BYTES
                    && failed.is_none()
                    && let Err(e) = spill(b, std::mem::take(&mut parts[b]))
                {
                    failed = Some(e);
                }
                Ok(())
            };
            let key = master.state_key(epoch);
            let mut file = std::fs::File::open(&path).map_err(io_err(&path))?;
            let mut magic = [0u8; 8];
            let got = fill(&mut file, &mut magic).map_err(io_err(&path))?;
            if got == magic.len() && &magic == MAGIC {
                // Sealed whole, by an earlier version.
                let mut sealed = magic.to_vec();
                io::Read::read_to_end(&mut file, &mut sealed).map_err(io_err(&path))?;
                let plain = open(&key, &aad(epoch, day), sealed).ok_or_else(tampered)?;
                records(&plain, &mut route).map_err(|()| tampered())?;
            } else {
                // Segment by segment, a record cut by a segment's end carried to the next.
                let mut carry = Vec::new();
                io::Seek::rewind(&mut file).map_err(io_err(&path))?;
                open_segmented(&key, &segmented_aad(epoch, day), &mut file, |plain| {
                    carry.extend_from_slice(plain);
                    let used = complete_records(&carry, &mut route)?;
                    carry.drain(..used);
                    Ok(())
                })
                .map_err(io_err(&path))?
                .map_err(|()| tampered())?;
                if !carry.is_empty() {
                    return Err(tampered());
                }
            }
            if let Some(e) = failed {
                return Err(StateError::Spill(e));
            }
        }
        for (b, part) in parts.into_iter().enumerate() {
            if !part.is_empty() {
                spill(b, part).map_err(StateError::Spill)?;
            }
        }
        Ok(())
    }
}

/// One record of the log's encoding ([`encode`]), its texts still bytes, and the record's
/// own bytes (the visitor its first eight).
struct RawVisit<'a> {
    visitor: u64,
    day: i32,
    start: i64,
    channel: u8,
    utm: [Option<&'a [u8]>; 3],
    bytes: &'a [u8],
}

/// The log's encoding record by record: the one reader of its layout, for [`decode`] and
/// for the load, which routes records without decoding their texts. Stops at the first
/// error `each` returns; `Err` too when the bytes end inside a record.
fn records(b: &[u8], each: impl FnMut(RawVisit<'_>) -> Result<(), ()>) -> Result<(), ()> {
    match complete_records(b, each)? {
        n if n == b.len() => Ok(()),
        _ => Err(()),
    }
}

/// Hands on the whole records at the start of `b`; the length they take (a record cut off
/// at the end is left for more bytes).
fn complete_records(
    b: &[u8],
    mut each: impl FnMut(RawVisit<'_>) -> Result<(), ()>,
) -> Result<usize, ()> {
    let mut r = Reader { b, at: 0 };
    while r.at < b.len() {
        let from = r.at;
        match next_record(&mut r) {
            Ok(v) => each(v)?,
            Err(()) => return Ok(from),
        }
    }
    Ok(b.len())
}

/// The record at `r`; `Err` if `r` ends before it does.
fn next_record<'a>(r: &mut Reader<'a>) -> Result<RawVisit<'a>, ()> {
    let from = r.at;
    let visitor = u64::from_le_bytes(r.array()?);
    let day = i32::from_le_bytes(r.array()?);
    let start = i64::from_le_bytes(r.array()?);
    let channel = r.take(1)?[0];
    let mut utm = [None; 3];
    for slot in &mut utm {
        let n = u32::from_le_bytes(r.array()?) as usize;
        if n > 0 {
            *slot = Some(r.take(n - 1)?);
        }
    }
    Ok(RawVisit {
        visitor,
        day,
        start,
        channel,
        utm,
        bytes: &r.b[from..r.at],
    })
}

fn aad(epoch: Day, day: Day) -> Vec<u8> {
    format!("logveil visit log v1 {epoch} {day}").into_bytes()
}

/// A segmented file's associated data: not a whole file's, so neither opens as the other.
fn segmented_aad(epoch: Day, day: Day) -> Vec<u8> {
    format!("logveil visit log v2 {epoch} {day}").into_bytes()
}

fn private_dir(dir: &Path) -> Result<(), StateError> {
    crate::state::private_dir(dir).map_err(io_err(dir))
}

fn cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"))
}

/// MAGIC ‖ random nonce ‖ ciphertext ‖ tag: how a day's file was sealed before
/// [`DayWriter`] (kept to test that such files are still read).
#[cfg(test)]
fn seal(key: &[u8; 32], aad: &[u8], mut plain: Vec<u8>) -> Result<Vec<u8>, StateError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| StateError::Io {
        path: "<random>".into(),
        source: io::Error::other(e.to_string()),
    })?;
    let tag = cipher(key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut plain,
        )
        .expect("sealing cannot fail for in-memory data");
    // The header goes in front of the sealed bytes in the same buffer: a second buffer for
    // the file would hold a day's visits twice.
    let len = plain.len();
    plain.reserve_exact(20 + tag.as_ref().len());
    plain.resize(len + 20, 0);
    plain.copy_within(..len, 20);
    plain[..8].copy_from_slice(MAGIC);
    plain[8..20].copy_from_slice(&nonce);
    plain.extend_from_slice(tag.as_ref());
    Ok(plain)
}

/// The plain bytes of a file [`seal`] made, opened in its own buffer.
fn open(key: &[u8; 32], aad: &[u8], mut sealed: Vec<u8>) -> Option<Vec<u8>> {
    if sealed.len() < 20 + 16 || &sealed[..8] != MAGIC {
        return None;
    }
    let nonce: [u8; 12] = sealed[8..20].try_into().ok()?;
    let len = cipher(key)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut sealed[20..],
        )
        .ok()?
        .len();
    sealed.copy_within(20..20 + len, 0);
    sealed.truncate(len);
    Some(sealed)
}

fn put_opt(buf: &mut Vec<u8>, s: &Option<Arc<str>>) {
    match s {
        Some(s) => {
            buf.extend_from_slice(&(s.len() as u32 + 1).to_le_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        None => buf.extend_from_slice(&0u32.to_le_bytes()),
    }
}

fn encode(v: &VisitRecord, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&v.visitor.to_le_bytes());
    buf.extend_from_slice(&v.day.to_le_bytes());
    buf.extend_from_slice(&v.start.to_le_bytes());
    buf.push(
        channel::ALL
            .iter()
            .position(|c| *c == v.channel)
            .unwrap_or(0) as u8,
    );
    put_opt(buf, &v.utm_source);
    put_opt(buf, &v.utm_medium);
    put_opt(buf, &v.utm_campaign);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ()> {
        let s = self
            .b
            .get(self.at..self.at.checked_add(n).ok_or(())?)
            .ok_or(())?;
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ()> {
        self.take(N)?.try_into().map_err(|_| ())
    }
}

fn decode(
    b: &[u8],
    strings: &mut HashMap<Vec<u8>, Arc<str>>,
    mut each: impl FnMut(VisitRecord),
) -> Result<(), ()> {
    records(b, |v| {
        let mut utm: [Option<Arc<str>>; 3] = [None, None, None];
        for (slot, bytes) in utm.iter_mut().zip(v.utm) {
            let Some(bytes) = bytes else { continue };
            let s = match strings.get(bytes) {
                Some(s) => s.clone(),
                None => {
                    let s: Arc<str> = Arc::from(std::str::from_utf8(bytes).map_err(|_| ())?);
                    strings.insert(bytes.to_vec(), s.clone());
                    s
                }
            };
            *slot = Some(s);
        }
        let [utm_source, utm_medium, utm_campaign] = utm;
        each(VisitRecord {
            visitor: v.visitor,
            day: v.day,
            start: v.start,
            channel: channel::ALL[usize::from(v.channel) % channel::ALL.len()],
            utm_source,
            utm_medium,
            utm_campaign,
        });
        Ok(())
    })
}

/// The loyalty table's keys: (dimension, bucket), in the published order.
pub fn loyalty_buckets(lookback: u32) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = vec![
        ("visitor_type", "new".into()),
        ("visitor_type", "returning".into()),
    ];
    for b in VISIT_NUMBER_BUCKETS {
        out.push(("visit_number", b.into()));
    }
    for b in days_since_buckets(lookback) {
        out.push(("days_since_last_visit", b));
    }
    out
}

fn days_since_buckets(lookback: u32) -> Vec<String> {
    let mut out = vec!["0".to_string(), "1".into(), "2-7".into()];
    if lookback > 7 {
        out.push(format!("8-{}", lookback.min(30)));
    }
    if lookback > 30 {
        out.push(format!("31-{lookback}"));
    }
    out
}

/// The loyalty buckets of a visit's number within the lookback.
const VISIT_NUMBER_BUCKETS: [&str; 5] = ["1", "2", "3-4", "5-8", "9+"];

/// The index in [`VISIT_NUMBER_BUCKETS`] of visit number `n`.
fn visit_number_bucket(n: usize) -> usize {
    match n {
        1 => 0,
        2 => 1,
        3..=4 => 2,
        5..=8 => 3,
        _ => 4,
    }
}

/// The index in [`days_since_buckets`]'s list (`buckets` long) of `days` since the last visit.
fn days_since_bucket(days: i32, lookback: u32, buckets: usize) -> usize {
    // A local-day difference can exceed the lookback by one around a change of UTC offset:
    // such a visit counts in the last bucket.
    let i = match days.min(lookback as i32) {
        0 => 0,
        1 => 1,
        2..=7 => 2,
        8..=30 => 3,
        _ => 4,
    };
    i.min(buckets - 1)
}

/// The week (ISO, from Monday) and the month holding `day`, each starting no earlier than
/// the epoch (uniques are exact within an epoch: decision 14).
pub fn periods(day: Day, epoch: Day) -> Vec<(&'static str, Day)> {
    let weekday = (day.0 + 3).rem_euclid(7); // 1970-01-01 was a Thursday; Monday = 0
    let week = Day(day.0 - weekday);
    let (_, _, dom) = day.civil();
    let month = Day(day.0 - (dom as i32 - 1));
    vec![("week", week.max(epoch)), ("month", month.max(epoch))]
}

/// Splits `total` by integer weights, exactly: floors first, then the remainder one unit at a
/// time to the largest fractional parts (earlier touches first on ties).
pub fn largest_remainder(total: i64, weights: &[i64]) -> Vec<i64> {
    let den: i64 = weights.iter().sum();
    if den == 0 {
        return vec![0; weights.len()];
    }
    let mut out: Vec<i64> = weights
        .iter()
        .map(|w| (i128::from(total) * i128::from(*w) / i128::from(den)) as i64)
        .collect();
    let mut rest = total - out.iter().sum::<i64>();
    // Nothing left over (one touch, or weights that divide the total): no order needed.
    if rest == 0 {
        return out;
    }
    let mut order: Vec<(std::cmp::Reverse<i128>, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let frac = i128::from(total) * i128::from(*w) % i128::from(den);
            (std::cmp::Reverse(frac), i)
        })
        .collect();
    order.sort_unstable();
    for (_, i) in order {
        if rest == 0 {
            break;
        }
        out[i] += 1;
        rest -= 1;
    }
    out
}

/// The integer weights of each touch under `model`, for `channels` in time order.
pub fn model_weights(model: &str, channels: &[&str]) -> Vec<i64> {
    let n = channels.len();
    let mut w = vec![0i64; n];
    if n == 0 {
        return w;
    }
    match model {
        "first_touch" => w[0] = 1,
        "last_touch" => w[n - 1] = 1,
        "last_non_direct" => {
            let i = (0..n)
                .rev()
                .find(|i| channels[*i] != channel::DIRECT)
                .unwrap_or(n - 1);
            w[i] = 1;
        }
        "linear" => w.iter_mut().for_each(|x| *x = 1),
        "position_based" => match n {
            1 => w[0] = 1,
            2 => w.iter_mut().for_each(|x| *x = 1),
            _ => {
                // 40 % first, 40 % last, 20 % shared by the middle: in units of 1/(10(n−2)).
                let mid = (n - 2) as i64;
                w[0] = 4 * mid;
                w[n - 1] = 4 * mid;
                w[1..n - 1].iter_mut().for_each(|x| *x = 2);
            }
        },
        _ => unreachable!("unknown model {model}"),
    }
    w
}

/// Rows of (visitor, day, a public key, another key), column by column, the keys as ids of
/// the bucket's texts: the `loyalty` (dimension, bucket) and `uniques` (period, period_start)
/// frames.
#[derive(Default)]
struct KeyedRows {
    visitor: Vec<u64>,
    day: Vec<i32>,
    first: Vec<u32>,
    second: Vec<u32>,
}

impl KeyedRows {
    fn push(&mut self, visitor: u64, day: i32, first: u32, second: u32) {
        self.visitor.push(visitor);
        self.day.push(day);
        self.first.push(first);
        self.second.push(second);
    }

    fn frame(&self, first: &str, second: &str) -> PolarsResult<DataFrame> {
        DataFrame::new(
            self.visitor.len(),
            vec![
                Column::new("visitor".into(), &self.visitor),
                Column::new("day".into(), &self.day),
                Column::new(first.into(), &self.first),
                Column::new(second.into(), &self.second),
            ],
        )
    }
}

/// Attribution credit rows, column by column, texts as ids of the bucket's (see
/// [`Sessions::attribution`]).
#[derive(Default)]
struct AttributionRows {
    visitor: Vec<u64>,
    day: Vec<i32>,
    model: Vec<u32>,
    goal: Vec<u32>,
    source: Vec<Option<u32>>,
    medium: Vec<Option<u32>>,
    campaign: Vec<Option<u32>>,
    channel: Vec<u32>,
    credit: Vec<i64>,
    value: Vec<i64>,
}

/// What [`derive`] needs from the run.
pub struct DeriveContext<'a> {
    pub goals: &'a Goals,
    pub lookback_days: u32,
    /// Loyalty and uniques (returning visitors on).
    pub returning: bool,
    /// Run-wide identity of a visit's (day, pseudonym).
    pub identity: &'a dyn Fn(Day, u64) -> u64,
    /// With differential privacy: at most this many touches per conversion (the converting
    /// visit and the latest before it), so a visitor's rows are bounded.
    pub max_touches: Option<usize>,
    /// Epoch of each day of the run (uniques).
    pub epoch_of: &'a dyn Fn(Day) -> Day,
    /// The run's first and last day.
    pub days: (Day, Day),
}

fn id_col<'a>(df: &'a DataFrame, name: &str) -> PolarsResult<&'a UInt32Chunked> {
    df.column(name)?.u32()
}

/// Fills a bucket's `attribution`, `loyalty` and `uniques` frames from its visits and the
/// log's earlier visits of its clients. Returns the bucket's visits as log records (with the
/// pseudonym of their own epoch), for the log of the run's days.
pub fn derive(
    sessions: &mut Sessions,
    history: &History,
    ctx: &DeriveContext<'_>,
) -> PolarsResult<Vec<VisitRecord>> {
    let Sessions {
        visits: v, strings, ..
    } = sessions;
    let n = v.height();
    let day = v.column("day")?.i32()?;
    let visitor = v.column("visitor")?.u64()?;
    let start = v.column("start")?.i64()?;
    let chan = id_col(v, "channel")?;
    let (src, med, camp) = (
        id_col(v, "utm_source")?,
        id_col(v, "utm_medium")?,
        id_col(v, "utm_campaign")?,
    );
    // Whether each visit converted each goal, read once (a null is no conversion).
    let goal_flags: Vec<Vec<bool>> = (0..ctx.goals.goals.len())
        .map(|i| {
            let flags = v.column(&format!("_g{i}"))?.bool()?;
            Ok(flags.iter().map(|f| f == Some(true)).collect())
        })
        .collect::<PolarsResult<_>>()?;
    // The ids of every text the rows below hold, numbered once per bucket.
    let channel_ids: Vec<u32> = channel::ALL.iter().map(|c| strings.id(c)).collect();
    let other_id = strings.id(channel::OTHER);
    // A channel's name and id from its place among the known channels; `other` if none.
    let channel_at = |k: Option<usize>| match k {
        Some(k) => (channel::ALL[k], channel_ids[k]),
        None => (channel::OTHER, other_id),
    };

    // Every touch of each identity, earlier log visits first, in time order.
    struct Touch {
        identity: u64,
        start: i64,
        day: i32,
        /// Index into the bucket's visits, for visits of this run.
        visit: Option<usize>,
        channel: &'static str,
        channel_id: u32,
        source: Option<u32>,
        medium: Option<u32>,
        campaign: Option<u32>,
    }
    // One vector sorted by identity and time, not a vector per identity: a bucket holds tens
    // of thousands of identities with a few touches each.
    let mut touches: Vec<Touch> = Vec::with_capacity(history.visits.len() + n);
    for h in &history.visits {
        let (channel, channel_id) = channel_at(channel::ALL.iter().position(|c| *c == h.channel));
        let mut id = |s: &Option<Arc<str>>| s.as_deref().map(|s| strings.id(s));
        touches.push(Touch {
            identity: h.visitor,
            start: h.start,
            day: h.day,
            visit: None,
            channel,
            channel_id,
            source: id(&h.utm_source),
            medium: id(&h.utm_medium),
            campaign: id(&h.utm_campaign),
        });
    }
    let model_ids: Vec<u32> = MODELS.iter().map(|m| strings.id(m)).collect();
    let goal_ids: Vec<u32> = ctx
        .goals
        .goals
        .iter()
        .map(|g| strings.id(&g.name))
        .collect();
    let dimension_ids = [
        strings.id("visit_number"),
        strings.id("days_since_last_visit"),
        strings.id("visitor_type"),
    ];
    let number_ids = VISIT_NUMBER_BUCKETS.map(|b| strings.id(b));
    let since_ids: Vec<u32> = days_since_buckets(ctx.lookback_days)
        .iter()
        .map(|b| strings.id(b))
        .collect();
    let kind_ids = [strings.id("new"), strings.id("returning")];
    // Each run day's periods and their starts, made once (not per client).
    // (day, [(period, first day, first day as text)]).
    type DayPeriods = Vec<(i32, Vec<(u32, i32, u32)>)>;
    let day_periods: DayPeriods = (ctx.days.0.0..=ctx.days.1.0)
        .map(|d| {
            let periods = periods(Day(d), (ctx.epoch_of)(Day(d)));
            let periods = periods
                .into_iter()
                .map(|(p, from)| (strings.id(p), from.0, strings.id(&from.to_string())));
            (d, periods.collect())
        })
        .collect();
    // From here on the texts are only read: the visit log's records take theirs back.
    let strings = &*strings;
    let mut shared: HashMap<u32, Arc<str>> = HashMap::new();
    let mut text_of = |id: Option<u32>| -> Option<Arc<str>> {
        id.map(|id| {
            shared
                .entry(id)
                .or_insert_with(|| Arc::from(strings.text(id).unwrap_or_default()))
                .clone()
        })
    };
    let mut records = Vec::with_capacity(n);
    let mut identities = Vec::with_capacity(n);
    // The columns read in order, not by `get(i)`, which finds each row's chunk anew.
    let columns = day
        .iter()
        .zip(visitor.iter())
        .zip(start.iter())
        .zip(chan.iter())
        .zip(src.iter().zip(med.iter()).zip(camp.iter()));
    for (i, ((((d, p), start), chan), ((source, medium), campaign))) in columns.enumerate() {
        let d = Day(d.unwrap_or(0));
        let p = p.unwrap_or(0);
        let start = start.unwrap_or(0);
        let id = (ctx.identity)(d, p);
        identities.push(id);
        let (channel, channel_id) = channel_at(channel_ids.iter().position(|c| Some(*c) == chan));
        records.push(VisitRecord {
            visitor: p,
            day: d.0,
            start,
            channel,
            utm_source: text_of(source),
            utm_medium: text_of(medium),
            utm_campaign: text_of(campaign),
        });
        touches.push(Touch {
            identity: id,
            start,
            day: d.0,
            visit: Some(i),
            channel,
            channel_id,
            source,
            medium,
            campaign,
        });
    }
    let lookback_s = i64::from(ctx.lookback_days) * 86_400;

    let mut loyalty = KeyedRows::default();
    let mut attribution = AttributionRows::default();
    let mut uniques = KeyedRows::default();
    // At most one row per client, day and period (the tables count them without grouping
    // them again): a run client's rows come from its one group of touches, the others' are
    // deduplicated here, and a client of the run is never among the others.
    let mut uniques_seen: HashSet<(u64, i32, u32)> = HashSet::new();
    // Stable: touches equal in all of these stay in the order they were pushed.
    touches.sort_by_key(|t| (t.identity, t.start, t.visit.is_some(), t.visit));
    // Per client, reused from one client to the next (a client has a few touches: an
    // allocation and a free of each per client were a sixth of this function's time).
    // Whether the client is returning on a day, by day: a few days, searched in order.
    let mut returning_on: Vec<(i32, bool)> = Vec::new();
    let mut touch_days: Vec<i32> = Vec::new();
    for touches in touches.chunk_by(|a, b| a.identity == b.identity) {
        let id = touches[0].identity;
        returning_on.clear();
        for (k, t) in touches.iter().enumerate() {
            let Some(i) = t.visit else { continue };
            let earlier = &touches[..k];
            // Earlier touches are in time order: the window is a suffix of them.
            let window = &earlier[earlier.partition_point(|e| e.start < t.start - lookback_s)..];
            if ctx.returning {
                let number = window.len() + 1;
                let [number_id, since_id, kind_id] = dimension_ids;
                loyalty.push(
                    id,
                    t.day,
                    number_id,
                    number_ids[visit_number_bucket(number)],
                );
                if let Some(last) = window.last() {
                    let since =
                        days_since_bucket(t.day - last.day, ctx.lookback_days, since_ids.len());
                    loyalty.push(id, t.day, since_id, since_ids[since]);
                }
                let returning = match returning_on.iter().find(|(d, _)| *d == t.day) {
                    Some(&(_, returning)) => returning,
                    None => {
                        let returning = window.iter().any(|e| e.day < t.day);
                        returning_on.push((t.day, returning));
                        returning
                    }
                };
                loyalty.push(id, t.day, kind_id, kind_ids[usize::from(returning)]);
            }
            // Attribution of each goal this visit converted, over the lookback's touches.
            for ((g, flags), &goal_id) in ctx.goals.goals.iter().zip(&goal_flags).zip(&goal_ids) {
                if !flags[i] {
                    continue;
                }
                let mut path: Vec<&Touch> = window.iter().chain([t]).collect();
                if let Some(m) = ctx.max_touches {
                    path.drain(..path.len().saturating_sub(m.max(1)));
                }
                let channels: Vec<&str> = path.iter().map(|t| t.channel).collect();
                for (model, &model_id) in MODELS.iter().zip(&model_ids) {
                    let w = model_weights(model, &channels);
                    let credit = largest_remainder(1_000_000, &w);
                    let value = largest_remainder(g.value, &w);
                    for (j, touch) in path.iter().enumerate() {
                        if w[j] == 0 {
                            continue;
                        }
                        let a = &mut attribution;
                        a.visitor.push(id);
                        a.day.push(t.day);
                        a.model.push(model_id);
                        a.goal.push(goal_id);
                        a.source.push(touch.source);
                        a.medium.push(touch.medium);
                        a.campaign.push(touch.campaign);
                        a.channel.push(touch.channel_id);
                        a.credit.push(credit[j]);
                        a.value.push(value[j]);
                    }
                }
            }
        }
        // Week and month uniques of each run day: the client counts in a day's period when one
        // of its touches falls between the period's start and that day, that is when its
        // latest touch up to the day does. One walk over the days and the sorted touch days
        // (a set of every (day, period) it touched made this the costliest part of derive).
        if ctx.returning {
            touch_days.clear();
            touch_days.extend(touches.iter().map(|t| t.day));
            touch_days.sort_unstable();
            let (mut next, mut latest) = (0, None);
            for (d, periods) in &day_periods {
                while next < touch_days.len() && touch_days[next] <= *d {
                    latest = Some(touch_days[next]);
                    next += 1;
                }
                let Some(latest) = latest else { continue };
                for (period, from, start) in periods {
                    if latest >= *from {
                        uniques.push(id, *d, *period, *start);
                    }
                }
            }
        }
    }
    if ctx.returning {
        // Clients of the epoch not in this run count in the uniques of the days after theirs.
        for (p, d0) in &history.others {
            for (d, periods) in day_periods.iter().filter(|(d, _)| d >= d0) {
                for (period, from, start) in periods {
                    if *d0 >= *from && uniques_seen.insert((*p, *d, *period)) {
                        uniques.push(*p, *d, *period, *start);
                    }
                }
            }
        }
    }
    sessions.loyalty = loyalty.frame("dimension", "bucket")?;
    let a = &attribution;
    sessions.attribution = DataFrame::new(
        a.visitor.len(),
        vec![
            Column::new("visitor".into(), &a.visitor),
            Column::new("day".into(), &a.day),
            Column::new("model".into(), &a.model),
            Column::new("goal".into(), &a.goal),
            Column::new("utm_source".into(), &a.source),
            Column::new("utm_medium".into(), &a.medium),
            Column::new("utm_campaign".into(), &a.campaign),
            Column::new("channel".into(), &a.channel),
            Column::new("credit".into(), &a.credit),
            Column::new("value".into(), &a.value),
        ],
    )?;
    sessions.uniques = uniques.frame("period", "period_start")?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sorted identities against a second method, a map with the old rule (the newest
    /// identity wins): notes split over two workers in any order, enough of them to fold
    /// several times, repeats and pseudonyms seen under two epochs; then a bucket's part and
    /// the bytes of a staged run. The workers keep a table each, or share one (as the shard's
    /// workers do).
    #[test]
    fn identities_match_a_map_of_the_newest_identity() {
        identities_of_two_workers(false);
        identities_of_two_workers(true);
    }

    /// The in-place merge against sorting both runs together and keeping each key's first
    /// (newest) entry: runs of many sizes with keys in one, in the other and in both, under
    /// older and newer identities.
    #[test]
    fn merge_sorted_is_sort_and_dedup() {
        let mut next = crate::test_numbers(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..2000 {
            let run = |len: u64, next: &mut dyn FnMut() -> u64| {
                let mut v: Vec<IdentityEntry> = (0..len)
                    .map(|_| {
                        let r = next();
                        let (pseudonym, of) = (r % 40, ((r >> 12) % 3) as i32);
                        // One client per pseudonym: its identity in `of` is one number.
                        IdentityEntry {
                            pseudonym,
                            identity: pseudonym * 31 + of as u64,
                            epoch: ((r >> 8) % 2) as i32,
                            of,
                            bucket: (pseudonym % 7) as u16,
                        }
                    })
                    .collect();
                v.sort_unstable_by_key(IdentityEntry::order);
                v
            };
            let mut old = run(next() % (round % 50 + 1), &mut next);
            old.dedup_by_key(|e| (e.pseudonym, e.epoch));
            let more = run(next() % (round % 30 + 1), &mut next);
            let mut want: Vec<IdentityEntry> = old.iter().chain(&more).copied().collect();
            want.sort_by_key(IdentityEntry::order);
            want.dedup_by_key(|e| (e.pseudonym, e.epoch));
            let mut got = old.clone();
            merge_sorted(&mut got, more.clone());
            assert_eq!(got, want, "round {round}: {old:?} + {more:?}");
        }
    }

    fn identities_of_two_workers(shared: bool) {
        let mut reference: std::collections::HashMap<(i32, u64), (u16, u64, i32)> =
            Default::default();
        let mut a = IdentityNotes::default();
        let mut b = if shared {
            a.sharing()
        } else {
            IdentityNotes::default()
        };
        let mut next = crate::test_numbers(0x2545_f491_4f6c_dd1du64);
        let n = 3 * PENDING_NOTES + 123;
        for i in 0..n {
            let x = next();
            // Few distinct pseudonyms (so notes repeat), spread over all 64 bits.
            let pseudonym = (x % 200_000).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let epoch = 20_400 + (x >> 40) as i32 % 2;
            let of = epoch + (x >> 50) as i32 % 3;
            // The same client under the same (pseudonym, of) always gives the same identity:
            // its own pseudonym in its own epoch (the shard's usual note), another in a later.
            let identity = if of == epoch {
                pseudonym
            } else {
                pseudonym ^ of as u64
            };
            let bucket = (pseudonym % 38) as u16;
            let e = reference
                .entry((epoch, pseudonym))
                .or_insert((bucket, identity, of));
            if of > e.2 {
                *e = (bucket, identity, of);
            }
            let notes = if i % 3 == 0 { &mut a } else { &mut b };
            notes.note(Day(epoch), pseudonym, bucket, identity, Day(of));
        }
        let mut ids = a.finish();
        // Of notes sharing a table, only the last to finish gives it (once).
        assert_eq!(ids.is_empty(), shared);
        ids.absorb(b.finish());
        assert_eq!(ids.len(), reference.len());
        for (&(epoch, p), &(bucket, identity, _)) in &reference {
            assert_eq!(ids.get(Day(epoch), p), Some((bucket, identity)));
            assert_eq!(ids.identity(Day(epoch), p), identity);
        }
        assert_eq!(ids.identity(Day(20_400), 12_345), 12_345);
        assert_eq!(ids.get(Day(20_400), 12_345), None);
        assert_eq!(
            ids.get(Day(19_000), reference.keys().next().unwrap().1),
            None
        );
        let part = ids.of_bucket(5, 38);
        assert_eq!(
            part.len(),
            reference.values().filter(|v| v.0 % 38 == 5).count()
        );
        for (&(epoch, p), &(bucket, identity, _)) in &reference {
            let want = (bucket % 38 == 5).then_some((bucket, identity));
            assert_eq!(part.get(Day(epoch), p), want);
        }
        // Both tables in use, and keys in both (a client seen in two epochs).
        assert!(ids.own.entries.len() > 1000 && ids.moved.entries.len() > 1000);
        assert!(ids.own.entries.len() + ids.moved.entries.len() > ids.len());
        // The bytes: one entry a key, sorted, the newest identity, as the reference says.
        let bytes = ids.to_bytes();
        assert_eq!(bytes.len(), 26 * reference.len());
        let mut keys = Vec::new();
        for e in bytes.chunks(26) {
            let epoch = i32::from_le_bytes(e[0..4].try_into().unwrap());
            let p = u64::from_le_bytes(e[4..12].try_into().unwrap());
            let bucket = u16::from_le_bytes(e[12..14].try_into().unwrap());
            let identity = u64::from_le_bytes(e[14..22].try_into().unwrap());
            let of = i32::from_le_bytes(e[22..26].try_into().unwrap());
            assert_eq!(reference[&(epoch, p)], (bucket, identity, of));
            keys.push((p, epoch));
        }
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let back = Identities::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes(), bytes);
        // Split by bucket, in parts, each bucket's bytes read back are its clients' entries.
        let mut split = vec![Vec::new(); 38];
        let mut parts = 0;
        let whole = Identities::from_bytes(&ids.to_bytes()).unwrap();
        whole
            .split(38, &mut |b, part| {
                parts += 1;
                split[b].extend(part);
                Ok(())
            })
            .unwrap();
        assert!(parts > 38, "{parts} parts: some buckets in several");
        for (b, bytes) in split.iter().enumerate() {
            let mine = Identities::from_bytes(bytes).unwrap();
            assert_eq!(
                mine.to_bytes(),
                ids.of_bucket(b, 38).to_bytes(),
                "bucket {b}"
            );
        }
        assert!(Identities::from_bytes(&ids.to_bytes()[..25]).is_none());
        assert!(Identities::default().get(Day(1), 1).is_none());
    }

    #[test]
    fn largest_remainder_is_exact() {
        assert_eq!(
            largest_remainder(1_000_000, &[1, 1, 1]),
            [333_334, 333_333, 333_333]
        );
        assert_eq!(largest_remainder(100, &[4, 2, 4]), [40, 20, 40]);
        // Position-based over 4 touches: 40 %, 10 %, 10 %, 40 % of 1 001 kopecks.
        assert_eq!(largest_remainder(1001, &[8, 2, 2, 8]), [401, 100, 100, 400]);
        assert_eq!(largest_remainder(7, &[0, 0]), [0, 0]);
        assert_eq!(largest_remainder(1_000_000, &[3]), [1_000_000]);
        assert_eq!(largest_remainder(10, &[1, 0, 1]), [5, 0, 5]);
        // Equal remainders go to the earlier touches.
        assert_eq!(largest_remainder(5, &[1, 1, 1, 1]), [2, 1, 1, 1]);
    }

    #[test]
    fn model_weights_by_hand() {
        let path = ["organic_search", "paid_search", "direct", "direct"];
        assert_eq!(model_weights("first_touch", &path), [1, 0, 0, 0]);
        assert_eq!(model_weights("last_touch", &path), [0, 0, 0, 1]);
        assert_eq!(model_weights("last_non_direct", &path), [0, 1, 0, 0]);
        assert_eq!(model_weights("linear", &path), [1, 1, 1, 1]);
        assert_eq!(model_weights("position_based", &path), [8, 2, 2, 8]);
        assert_eq!(model_weights("position_based", &path[..2]), [1, 1]);
        assert_eq!(model_weights("last_non_direct", &["direct"]), [1]);
    }

    #[test]
    fn periods_weeks_start_monday_and_clip_to_the_epoch() {
        let d = Day::parse("2026-11-25").unwrap(); // a Wednesday
        let p = periods(d, Day::parse("2026-01-01").unwrap());
        assert_eq!(p[0], ("week", Day::parse("2026-11-23").unwrap()));
        assert_eq!(p[1], ("month", Day::parse("2026-11-01").unwrap()));
        let p = periods(d, Day::parse("2026-11-20").unwrap());
        assert_eq!(p[1], ("month", Day::parse("2026-11-20").unwrap()));
    }

    #[test]
    fn visit_log_round_trips_sealed_and_detects_tampering() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = KeySet::Single(crate::pseudonymise::keys::MasterKey::from_bytes([7; 32]));
        let log = VisitLog::new(tmp.path());
        let day = Day::parse("2026-11-20").unwrap();
        let rec = VisitRecord {
            visitor: 0xfeed_beef,
            day: day.0,
            start: 1_795_000_000,
            channel: "paid_search",
            utm_source: Some(Arc::from("yandex")),
            utm_medium: None,
            utm_campaign: Some(Arc::from("осень")),
        };
        let visits = by_day(std::slice::from_ref(&rec));
        assert_eq!(visits.len(), 1);
        assert_eq!(visits[0].0, day);
        log.write_day(&keys, 30, day, &visits[0].1).unwrap();
        let files = log.files().unwrap();
        assert_eq!(files.len(), 1);
        let bytes = std::fs::read(&files[0].2).unwrap();
        assert!(
            !bytes.windows(6).any(|w| w == "yandex".as_bytes()),
            "sealed"
        );
        assert!(!bytes.windows(8).any(|w| w == 0xfeed_beefu64.to_le_bytes()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files[0].2).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut notes = IdentityNotes::default();
        let epoch = keys.epoch_start(day, Some(30)).unwrap();
        notes.note(epoch, 0xfeed_beef, 3, 42, epoch);
        let ids = notes.finish();
        let next = (Day(day.0 + 1), Day(day.0 + 1));
        let h = load(&log, &keys, next, &ids, 4).unwrap();
        assert_eq!(h[3].visits.len(), 1);
        assert_eq!(h[3].visits[0].visitor, 42, "routed as the run's identity");
        assert_eq!(h[3].visits[0].utm_campaign.as_deref(), Some("осень"));
        // Another key cannot open it.
        let other = KeySet::Single(crate::pseudonymise::keys::MasterKey::from_bytes([8; 32]));
        assert!(matches!(
            load(&log, &other, next, &ids, 4),
            Err(StateError::Tampered { .. })
        ));
        let mut b = bytes.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&files[0].2, b).unwrap();
        assert!(load(&log, &keys, next, &ids, 4).is_err());
    }

    /// A day's file sealed in segments reads back exactly, at every length around a segment's
    /// end, pushed in pieces of any size; a file cut at a segment's end, missing a segment,
    /// with a segment moved or with bytes after its last fails, as does a wrong key.
    #[test]
    fn segmented_day_files_read_back_and_reject_cuts() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = KeySet::Single(crate::pseudonymise::keys::MasterKey::from_bytes([7; 32]));
        let log = VisitLog::new(tmp.path());
        let day = Day::parse("2026-11-20").unwrap();
        let epoch = keys.epoch_start(day, Some(30)).unwrap();
        let key = keys.master_for(epoch).unwrap().state_key(epoch);
        let read = |bytes: &[u8], key: &[u8; 32]| {
            let mut plain = Vec::new();
            let ok = open_segmented(key, &segmented_aad(epoch, day), bytes, |p| {
                plain.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
            ok.map(|()| plain)
        };
        let mut next = crate::test_numbers(0x5eed);
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            3 * SEGMENT + 17,
        ] {
            let want: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut writer = log.day_writer(&keys, 30, day).unwrap();
            let mut rest = &want[..];
            while !rest.is_empty() {
                let n = (next() as usize % 5000 + 1).min(rest.len());
                writer.push(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
            writer.commit().unwrap();
            let file = log.file(epoch, day);
            let bytes = std::fs::read(&file).unwrap();
            let segments = len.div_ceil(SEGMENT).max(1);
            assert_eq!(bytes.len(), 15 + len + TAG * segments, "length {len}");
            assert_eq!(read(&bytes, &key), Ok(want.clone()), "length {len}");
            assert_eq!(read(&bytes, &[8; 32]), Err(()), "another key, length {len}");
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                read(&longer, &key),
                Err(()),
                "a byte after the last, length {len}"
            );
            let seg = SEGMENT + TAG;
            if segments > 1 {
                // Cut after a full segment: it was not sealed as the last.
                assert_eq!(read(&bytes[..15 + seg], &key), Err(()), "cut, length {len}");
                // The second segment dropped.
                let mut gone = bytes[..15 + seg].to_vec();
                gone.extend_from_slice(&bytes[(15 + 2 * seg).min(bytes.len())..]);
                if gone.len() < bytes.len() {
                    assert_eq!(
                        read(&gone, &key),
                        Err(()),
                        "a segment dropped, length {len}"
                    );
                }
            }
            if segments > 2 {
                let mut swapped = bytes[..15].to_vec();
                swapped.extend_from_slice(&bytes[15 + seg..15 + 2 * seg]);
                swapped.extend_from_slice(&bytes[15..15 + seg]);
                swapped.extend_from_slice(&bytes[15 + 2 * seg..]);
                assert_eq!(
                    read(&swapped, &key),
                    Err(()),
                    "segments swapped, length {len}"
                );
            }
        }
        // A writer dropped before its commit leaves nothing behind, not even its temporary.
        let before = std::fs::read(log.file(epoch, day)).unwrap();
        let mut writer = log.day_writer(&keys, 30, day).unwrap();
        writer.push(b"never committed").unwrap();
        drop(writer);
        assert_eq!(std::fs::read(log.file(epoch, day)).unwrap(), before);
        let dir = log.file(epoch, day).parent().unwrap().to_path_buf();
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
    }

    /// Visits sealed in segments with records across segments' ends, and a day's file sealed
    /// whole by an earlier version: both load as the visits written.
    #[test]
    fn visit_log_reads_records_across_segments_and_whole_sealed_files() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = KeySet::Single(crate::pseudonymise::keys::MasterKey::from_bytes([7; 32]));
        let log = VisitLog::new(tmp.path());
        let day = Day::parse("2026-11-20").unwrap();
        let epoch = keys.epoch_start(day, Some(30)).unwrap();
        let records: Vec<VisitRecord> = (0..20_000u64)
            .map(|c| VisitRecord {
                visitor: c,
                day: day.0,
                start: 1_795_000_000 + c as i64,
                channel: "referral",
                utm_source: (c % 3 == 0).then(|| Arc::from("яндекс")),
                utm_medium: None,
                utm_campaign: (c % 5 == 0).then(|| Arc::from(format!("campaign-{c}"))),
            })
            .collect();
        let plain = by_day(&records).remove(0).1;
        assert!(
            plain.len() > 4 * SEGMENT,
            "records cross several segments' ends"
        );
        // Every client is in this run's map, in bucket visitor % 4, under identity visitor + 1.
        let mut notes = IdentityNotes::default();
        for r in &records {
            notes.note(
                epoch,
                r.visitor,
                (r.visitor % 4) as u16,
                r.visitor + 1,
                Day(epoch.0 + 30),
            );
        }
        let ids = notes.finish();
        let next = (Day(day.0 + 1), Day(day.0 + 1));
        let check = |h: &[History]| {
            for (b, history) in h.iter().enumerate() {
                let want: Vec<u64> = (0..20_000u64)
                    .filter(|c| c % 4 == b as u64)
                    .map(|c| c + 1)
                    .collect();
                let got: Vec<u64> = history.visits.iter().map(|v| v.visitor).collect();
                assert_eq!(got, want, "bucket {b}");
            }
            // Visitor 5, the second of bucket 1.
            let fifth = &h[1].visits[1];
            assert_eq!(fifth.utm_campaign.as_deref(), Some("campaign-5"));
            assert_eq!(fifth.utm_source, None);
        };
        log.write_day(&keys, 30, day, &plain).unwrap();
        check(&load(&log, &keys, next, &ids, 4).unwrap());
        // The same visits as an earlier version sealed them: one AEAD over the whole day.
        let master = keys.master_for(epoch).unwrap();
        let whole = seal(&master.state_key(epoch), &aad(epoch, day), plain.clone()).unwrap();
        assert_eq!(&whole[..8], MAGIC);
        std::fs::write(log.file(epoch, day), &whole).unwrap();
        check(&load(&log, &keys, next, &ids, 4).unwrap());
        let mut bad = whole;
        bad[30] ^= 1;
        std::fs::write(log.file(epoch, day), &bad).unwrap();
        assert!(matches!(
            load(&log, &keys, next, &ids, 4),
            Err(StateError::Tampered { .. })
        ));
    }

    /// Every bucket's history, from the parts [`VisitLog::load`] hands on (lookback 30).
    fn load(
        log: &VisitLog,
        keys: &KeySet,
        days: (Day, Day),
        ids: &Identities,
        buckets: usize,
    ) -> Result<Vec<History>, StateError> {
        let mut bytes = vec![Vec::new(); buckets];
        log.load(keys, 30, days, ids, buckets, &mut |b, part| {
            assert!(!part.is_empty());
            bytes[b].extend(part.into_bytes());
            Ok(())
        })?;
        Ok(bytes
            .iter()
            .map(|b| History::from_bytes(b).expect("parts read back"))
            .collect())
    }

    /// A long log comes out in many parts per bucket; read back one after another they are
    /// each bucket's history, as a direct routing of the written visits says: the run's
    /// clients' visits in log order under their identity, the others' (pseudonym, day) pairs
    /// sorted, each once. A failing spill stops the load with its error.
    #[test]
    fn history_parts_reassemble_the_routed_log() {
        let tmp = tempfile::tempdir().unwrap();
        let log = VisitLog::new(tmp.path());
        let keys = KeySet::Single(crate::pseudonymise::keys::MasterKey::from_bytes([5; 32]));
        // The log's three days and the run's in one epoch (2026-11-03 to 2026-12-02).
        let first = Day::parse("2026-11-04").unwrap();
        let epoch = keys.epoch_start(first, Some(30)).unwrap();
        assert_eq!(keys.epoch_start(Day(first.0 + 3), Some(30)), Some(epoch));
        let mut notes = IdentityNotes::default();
        // Clients 0..3000 are in the run (bucket = client % 3, identity = client + 1_000_000);
        // 3000..9000 are not.
        for c in 0..3000u64 {
            notes.note(epoch, c, (c % 3) as u16, c + 1_000_000, epoch);
        }
        let ids = notes.finish();
        let mut want = vec![History::default(), History::default(), History::default()];
        for d in 0..3 {
            let day = Day(first.0 + d);
            let records: Vec<VisitRecord> = (0..9000u64)
                .map(|c| VisitRecord {
                    visitor: c,
                    day: day.0,
                    start: 1_800_000_000 + c as i64,
                    channel: channel::ALL[(c % 5) as usize],
                    utm_source: (c % 4 == 0).then(|| Arc::from("яндекс")),
                    utm_medium: None,
                    utm_campaign: (c % 7 == 0).then(|| Arc::from(format!("c{c}"))),
                })
                .collect();
            for r in &records {
                if r.visitor < 3000 {
                    let mut v = r.clone();
                    v.visitor += 1_000_000;
                    want[(r.visitor % 3) as usize].visits.push(v);
                } else {
                    want[(r.visitor % 3) as usize]
                        .others
                        .push((r.visitor, r.day));
                }
            }
            let plain = by_day(&records).remove(0).1;
            log.write_day(&keys, 30, day, &plain).unwrap();
        }
        for h in &mut want {
            h.others.sort_unstable();
        }
        let run = (Day(first.0 + 3), Day(first.0 + 3));
        let got = load(&log, &keys, run, &ids, 3).unwrap();
        for b in 0..3 {
            assert!(got[b].visits == want[b].visits, "bucket {b}'s visits");
            assert_eq!(got[b].others, want[b].others, "bucket {b}'s others");
        }
        let mut parts = [0; 3];
        log.load(&keys, 30, run, &ids, 3, &mut |b, _| {
            parts[b] += 1;
            Ok(())
        })
        .unwrap();
        assert!(
            parts.iter().all(|&n| n >= 2),
            "{parts:?}: several parts a bucket"
        );
        let err = log
            .load(&keys, 30, run, &ids, 3, &mut |_, _| {
                Err(io::Error::other("disk full"))
            })
            .unwrap_err();
        assert!(matches!(err, StateError::Spill(_)), "{err}");
    }
}
