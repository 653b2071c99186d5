//! Orchestration only: ingest → pseudonymise → aggregate → disclose → output.
//!
//! `logveil run` is the three stages the Spark job runs as tasks (shard: parse and
//! pseudonymise; reduce: sessions and additive partial tables; merge: sums, then the privacy
//! rules once), here in one process with one partial.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::aggregate::{
    self, TABLES, TableName,
    spill::{Parts, SpillDir, SpillWriter},
};
use crate::config::{KeySource, Pipeline};
use crate::day::Day;
use crate::disclose;
use crate::ingest::{self, Reject, reader};
use crate::ledger::{self, Ledger};
use crate::output;
use crate::pseudonymise::keyring::{KeyRing, KeySet};
use crate::pseudonymise::{self, FilterRule, Outcome, Pseudonymiser, keys::MasterKey, local_time};
use crate::record::{self, DateInfo, InputInfo, RunRecord};
use crate::visitors::{self, Identities, VisitLog, VisitRecord};

/// Exit codes (decision 17).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const LOCKED: u8 = 3;
    pub const BUDGET_SPENT: u8 = 4;
    pub const AUDIT_FAILED: u8 = 5;
}

/// A failed run: the exit code and a one-line cause with what to do.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::FAILED, e.to_string())
}

/// `--date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateArg {
    Day(Day),
    Yesterday,
}

/// Command-line overrides of the pipeline.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub inputs: Vec<PathBuf>,
    pub output: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub key_dir: Option<PathBuf>,
    pub date: Option<DateArg>,
    /// Worker threads for ingest (default: the machine's cores).
    pub threads: Option<usize>,
    /// A progress display for the shard stage (files, bytes, lines/s); the CLI passes one
    /// that draws only on a terminal.
    pub progress: Option<indicatif::ProgressBar>,
    /// Replace a complete published day with a partial one.
    pub force: bool,
    /// Publish only the days touched by inputs that are new or changed since the manifest
    /// last saw them (each recomputed in full from every input).
    pub since_last: bool,
}

/// What a run did.
pub struct RunReport {
    pub record: RunRecord,
    pub record_path: PathBuf,
    pub output: PathBuf,
}

/// Attribution looks back this far when returning visitors are off (it then sees only the
/// visits of one pseudonym day).
const DEFAULT_LOOKBACK_DAYS: u32 = 30;

/// Partial tables merged into the running totals at a time.
const MERGE_BATCH: usize = 16;

/// Input per bucket (decompressed; gzip counted as 8× its size).
const BUCKET_INPUT_BYTES: u64 = 32 << 20;

/// Line numbers kept per file and reason in the run record.
const MAX_LINE_NUMBERS: usize = 100;

pub fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<RunReport, Failure> {
    pseudonymise::useragent::compile_in_background();
    publish_with(pipeline, options, |out| run_in(pipeline, options, out))
}

/// Holds the state dir's lock while `produce` writes a run into a local output directory:
/// the pipeline's (or `--output`) itself, or for an object store a private work directory
/// that is then published to it.
pub(crate) fn publish_with(
    pipeline: &Pipeline,
    options: &RunOptions,
    produce: impl FnOnce(PathBuf) -> Result<RunReport, Failure>,
) -> Result<RunReport, Failure> {
    let out = options
        .output
        .clone()
        .unwrap_or_else(|| pipeline.output.clone());
    crate::store::configure(pipeline.s3.clone());
    let _state_lock = lock_state(pipeline)?;
    let Some(remote) = crate::store::remote(&out) else {
        return produce(out);
    };
    let remote = remote.map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    run_to_store(pipeline, &remote, out, produce)
}

/// The state dir's lock (exit 3 when another run holds it).
pub(crate) fn lock_state(pipeline: &Pipeline) -> Result<crate::state::StateLock, Failure> {
    crate::state::lock(&pipeline.state_dir).map_err(|e| match e {
        crate::state::StateLockError::Busy(_) => Failure::new(exit::LOCKED, e.to_string()),
        _ => failed(e),
    })
}

/// A run whose output is an object store. It works in a private directory under the state
/// dir holding the store's run records, then publishes: the run record as
/// `_runs/<id>.pending.json`, each file under its final key (a PUT is atomic per object),
/// the record as `_runs/<id>.json`, and the pending record removed. The local copy is kept
/// until the publication is complete, so a run killed while publishing is finished by the
/// next one, as on disk; a run that fails before publishing leaves the objects as they were.
fn run_to_store(
    pipeline: &Pipeline,
    remote: &crate::store::Remote,
    out: PathBuf,
    produce: impl FnOnce(PathBuf) -> Result<RunReport, Failure>,
) -> Result<RunReport, Failure> {
    let holder = crate::state::holder(&pipeline.state_dir).map_err(failed)?;
    let store_lock = remote.lock(&holder).map_err(|e| match e {
        crate::store::LockError::Locked { .. } => Failure::new(exit::LOCKED, e.to_string()),
        crate::store::LockError::Store(e) => failed(e),
    })?;
    let publishing = pipeline.state_dir.join("publish");
    crate::state::private_dir(&publishing).map_err(failed)?;
    let finished = finish_store_publications(remote, &publishing);
    let notes = match finished {
        Ok(notes) => notes,
        Err(f) => {
            store_lock.keep();
            return Err(f);
        }
    };
    for note in notes {
        eprintln!("note: {note}");
    }
    let mut name = [0u8; 8];
    getrandom::fill(&mut name).map_err(failed)?;
    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
    let work = publishing.join(format!("run-{hex}"));
    crate::state::private_dir(&work).map_err(failed)?;
    let prepared = (|| {
        // A report shows every published day, so it needs the tables too.
        if pipeline.report.is_some() {
            remote.download_output(&work).map_err(failed)?;
        } else {
            remote.download_records(&work).map_err(failed)?;
        }
        produce(work.clone())
    })();
    let mut report = match prepared {
        Ok(r) => r,
        Err(f) => {
            let _ = fs::remove_dir_all(&work);
            return Err(f);
        }
    };
    let id = report.record.run_id.clone();
    let staged = publishing.join(&id);
    // From here the run's state (manifest, visit log, ledger) counts it as done, so its files
    // must reach the store: on any failure the staged copy and the lock stay, and the next
    // run on this state dir publishes it first.
    let published = fs::rename(&work, &staged)
        .map_err(|e| crate::store::StoreError {
            location: staged.display().to_string(),
            message: e.to_string(),
        })
        .and_then(|()| publish_to_store(remote, &staged, &id));
    if let Err(e) = published {
        store_lock.keep();
        return Err(Failure::new(
            exit::FAILED,
            format!(
                "{e}; run {id} was not fully published: the next run on this state dir finishes it (until then the output stays locked)"
            ),
        ));
    }
    let _ = fs::remove_dir_all(&staged);
    drop(store_lock);
    report.record_path = PathBuf::from(format!(
        "{}/_runs/{id}.json",
        remote.shown().trim_end_matches('/')
    ));
    report.output = out;
    Ok(report)
}

/// PUTs a staged run's files and its record, marked pending until the last file is in.
fn publish_to_store(
    remote: &crate::store::Remote,
    staged: &std::path::Path,
    id: &str,
) -> Result<(), crate::store::StoreError> {
    let read = |rel: &str| {
        fs::read(staged.join(rel)).map_err(|e| crate::store::StoreError {
            location: staged.join(rel).display().to_string(),
            message: e.to_string(),
        })
    };
    let record_name = format!("_runs/{id}.json");
    let pending_name = format!("_runs/{id}.pending.json");
    let record_bytes = read(&record_name)?;
    let record: RunRecord =
        serde_json::from_slice(&record_bytes).map_err(|e| crate::store::StoreError {
            location: record_name.clone(),
            message: e.to_string(),
        })?;
    let mut puts = 0usize;
    fault_after_puts(puts);
    let mut put = |name: &str, bytes: Vec<u8>| {
        remote.put(name, bytes)?;
        puts += 1;
        fault_after_puts(puts);
        Ok::<_, crate::store::StoreError>(())
    };
    put(&pending_name, record_bytes.clone())?;
    for f in &record.files {
        put(&f.path, read(&f.path)?)?;
    }
    put(&record_name, record_bytes)?;
    remote.delete(&pending_name)
}

/// Test builds only: `LOGVEIL_FAULT_EXIT_AFTER_PUTS=N` ends the process at once after the
/// N-th object written (0: before the first), as a `kill -9` would, so tests can stop a
/// publication half-way.
fn fault_after_puts(puts: usize) {
    #[cfg(debug_assertions)]
    if std::env::var("LOGVEIL_FAULT_EXIT_AFTER_PUTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(puts)
    {
        std::process::exit(137);
    }
    #[cfg(not(debug_assertions))]
    let _ = puts;
}

/// Finishes publications to the store that were interrupted. Driven by the local copies:
/// every committed run record under `publishing` (a staged run, or a work directory whose run
/// committed but was killed before it was renamed) that the store does not hold yet is
/// published, oldest first. A pending record in the store with no local copy is from another
/// state dir: it is removed, with a note. The local copies go once all is published.
fn finish_store_publications(
    remote: &crate::store::Remote,
    publishing: &std::path::Path,
) -> Result<Vec<String>, Failure> {
    let mut notes = Vec::new();
    let in_store: BTreeSet<String> = remote
        .list_names("_runs")
        .map_err(failed)?
        .into_iter()
        .collect();
    // (run id, its directory) of every committed local record the store lacks.
    let mut to_publish: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in fs::read_dir(publishing).map_err(failed)?.flatten() {
        let Ok(records) = fs::read_dir(entry.path().join("_runs")) else {
            continue;
        };
        for record in records.flatten() {
            let name = record.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if id.ends_with(".pending") || in_store.contains(&format!("_runs/{id}.json")) {
                continue;
            }
            to_publish.insert(id.to_string(), entry.path());
        }
    }
    for (id, dir) in &to_publish {
        publish_to_store(remote, dir, id).map_err(failed)?;
        notes.push(format!("finished the interrupted publication of run {id}"));
    }
    for name in &in_store {
        let Some(id) = name
            .strip_prefix("_runs/")
            .and_then(|n| n.strip_suffix(".pending.json"))
        else {
            continue;
        };
        if to_publish.contains_key(id) {
            continue;
        }
        remote.delete(name).map_err(failed)?;
        if !in_store.contains(&format!("_runs/{id}.json")) {
            notes.push(format!(
                "run {id} was interrupted while publishing from another state dir; some of its files may be published without a record: run its dates again"
            ));
        }
    }
    for entry in fs::read_dir(publishing).map_err(failed)?.flatten() {
        let _ = fs::remove_dir_all(entry.path());
    }
    Ok(notes)
}

fn run_in(pipeline: &Pipeline, options: &RunOptions, out: PathBuf) -> Result<RunReport, Failure> {
    let (_lock, mut notes) = open_output(pipeline, &out)?;
    let decisions = decide(pipeline, options)?;
    let mut plan = Plan::new(pipeline, options, decisions, true)?;
    if let Ok(n @ 1..) = SpillDir::remove_stale(&pipeline.state_dir) {
        notes.push(format!("removed the encrypted spill of {n} killed run(s)"));
    }
    let phase = Phases::start();
    let (spill, shard) = shard_with_keys(&mut plan, &mut notes)?;
    phase.mark("shard (read, parse, pseudonymise, spill)");
    update_manifest(&plan, &shard.results, &mut notes);
    let summary = summarize(
        &plan,
        &shard.results,
        &shard.epoch_ids,
        spill.buckets,
        notes,
    )?;
    let Some(days) = summary.days else {
        return publish_nothing(summary, out);
    };
    let mut notes = Vec::new();
    let spill_err = |e| Failure::new(exit::FAILED, format!("cannot write spill: {e}"));
    let mut history = spill.parts_writer(Parts::History);
    load_histories(
        &plan,
        days,
        &shard.identities,
        spill.buckets,
        &mut notes,
        &mut |b, part| history.append(b, part.into_bytes()),
    )?;
    history.finish().map_err(spill_err)?;
    // From here on each bucket needs only its own clients' entries.
    let clients_seen = shard.identities.len();
    let mut identities = spill.parts_writer(Parts::Identities);
    shard
        .identities
        .split(spill.buckets, &mut |b, part| identities.append(b, part))
        .map_err(spill_err)?;
    identities.finish().map_err(spill_err)?;
    phase.mark("visit log (load)");
    // The shard's threads are gone, but glibc keeps what they freed in their arenas, and the
    // reduce stage runs on Polars' pool, whose threads allocate from arenas of their own:
    // without this the reduce stage's peak stood on top of the shard's leftovers (10 MiB
    // more on the 5 M-line benchmark).
    crate::threads::release_free_memory();
    let reducer = Reducer::new(&plan, days);
    let mut merger = Merger::new(plan.tables());
    let mut visits = 0u64;
    let (mut frame_bytes, mut frame_time) = (0usize, std::time::Duration::ZERO);
    reduce_buckets(
        &reducer,
        &spill,
        &summary.excluded,
        plan.workers,
        |reduced| {
            let Some(ReducedBucket {
                output,
                frame_bytes: bytes,
                frame_time: time,
            }) = reduced
            else {
                return Ok(());
            };
            visits += output.visits;
            frame_bytes += bytes;
            frame_time += time;
            merger.add(output.partials)
        },
    )?;
    let totals = merger.finish()?;
    if phase.on {
        eprintln!(
            "profile: reduce: sessions {:.2} s, partial tables {:.2} s; row-visitor frames: {} MiB sealed in the spill in {:.2} s",
            reducer.in_sessions.lock().expect("timer").as_secs_f64(),
            reducer.in_tables.lock().expect("timer").as_secs_f64(),
            frame_bytes >> 20,
            frame_time.as_secs_f64(),
        );
    }
    phase.mark("reduce (sessions, partial tables)");
    let reduced = Reduced {
        days,
        totals,
        visits,
        clients_seen,
        buckets: spill.buckets,
        notes,
    };
    let read_frame = |b: usize, tables: &[u64]| spill.read_table_frames(b, tables);
    let read_visits = |b: usize, day: Day, out: &mut Vec<u8>| spill.read_visits_into(b, day, out);
    let release_spill = || spill.remove_in_background();
    let sources = Sources {
        frame: &read_frame,
        visits: &read_visits,
        done: &release_spill,
    };
    finish(&plan, summary, reduced, &sources, out, &phase)
}

/// Pseudonymous state (spill, ledger) never lives where outputs are published (D18); the
/// output directory is created and locked, and an interrupted earlier run is finished or
/// rolled back. Returns the lock and the recovery's notes.
pub(crate) fn open_output(
    pipeline: &Pipeline,
    out: &std::path::Path,
) -> Result<(output::RunLock, Vec<String>), Failure> {
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if absolute(&pipeline.state_dir).starts_with(absolute(out)) {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "the state dir {} is inside the output directory {}: pseudonymous state must never sit with published outputs; set `state_dir` elsewhere",
                pipeline.state_dir.display(),
                out.display()
            ),
        ));
    }
    fs::create_dir_all(out).map_err(|e| {
        Failure::new(
            exit::FAILED,
            format!("cannot create output directory {}: {e}", out.display()),
        )
    })?;
    let lock = output::lock(out).map_err(|e| match e {
        output::OutputError::Locked(_) => Failure::new(exit::LOCKED, e.to_string()),
        _ => failed(e),
    })?;
    let notes = output::recover(out).map_err(failed)?;
    Ok((lock, notes))
}

/// What a run decides before it reads a line: from the pipeline, the options and the state
/// dir's input manifest. A staged run writes it into its work dir (`logveil stage plan`), so
/// every later stage works from the same decisions whatever the state dir holds by then.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Decisions {
    pub run_id: String,
    pub started_at: String,
    /// The local day of `--date` (`yesterday` resolved when decided).
    pub target: Option<i32>,
    /// The inputs, sorted; an event's input order is its position here.
    pub files: Vec<PathBuf>,
    /// Inputs new or changed since the manifest saw them (`--since-last`).
    pub changed: BTreeSet<PathBuf>,
    /// Inputs the manifest showed to hold nothing of the date's window.
    pub skipped_inputs: usize,
    /// Estimated decompressed input.
    pub input_bytes: u64,
    pub buckets: usize,
}

/// Decides the run's inputs, buckets and id (see [`Decisions`]).
pub fn decide(pipeline: &Pipeline, options: &RunOptions) -> Result<Decisions, Failure> {
    let started_at = jiff::Timestamp::now();
    let tz = &pipeline.time_zone;
    let reach = pipeline.max_visit_s + pipeline.session_timeout_s;
    let target = match options.date {
        None => None,
        Some(DateArg::Day(d)) => Some(d),
        Some(DateArg::Yesterday) => {
            let today = jiff::Timestamp::now().to_zoned(tz.clone()).date();
            let days = crate::ingest::timestamp::days_from_civil(
                i64::from(today.year()),
                i64::from(today.month()),
                i64::from(today.day()),
            );
            Some(Day(days as i32 - 1))
        }
    };
    let window = target.map(|d| (day_start(tz, d) - reach, day_start(tz, d.next()) + reach));
    let patterns = if options.inputs.is_empty() {
        pipeline.inputs.clone()
    } else {
        options.inputs.clone()
    };
    let mut files =
        reader::expand_inputs(&patterns).map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    // With --date, inputs the manifest shows to hold nothing of the date's window are not read.
    let manifest = crate::manifest::Manifest::load(&pipeline.state_dir);
    // `--since-last`: the inputs new or changed since the manifest saw them.
    let changed: BTreeSet<PathBuf> = files
        .iter()
        .filter(|f| !manifest.unchanged(f))
        .cloned()
        .collect();
    let mut skipped_inputs = 0usize;
    if let Some((from, to)) = window {
        let before = files.len();
        files.retain(|f| !manifest.outside(f, from, to));
        skipped_inputs = before - files.len();
        if files.is_empty() {
            return Err(Failure::new(
                exit::FAILED,
                "no input can hold events of that date (the input manifest in the state dir says so); nothing was published",
            ));
        }
    }
    // At least one bucket per BUCKET_INPUT_BYTES of (estimated decompressed) input, so a
    // bucket's share of the reduce stage stays about the same size as inputs grow.
    let input_bytes: u64 = files
        .iter()
        .map(|f| {
            let size = std::fs::metadata(f).map_or_else(
                // An object's size comes from its listing.
                |_| crate::store::listed(&f.to_string_lossy()).map_or(0, |o| o.size),
                |m| m.len(),
            );
            // Compressed logs expand about 8×; standard input's size is unknown (0).
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(ext, "gz" | "zst" | "bz2") {
                size * 8
            } else {
                size
            }
        })
        .sum();
    let buckets = usize::from(pipeline.buckets)
        .max(input_bytes.div_ceil(BUCKET_INPUT_BYTES) as usize)
        .min(4096);
    Ok(Decisions {
        run_id: run_id(started_at),
        started_at: started_at.to_string(),
        target: target.map(|d| d.0),
        files,
        changed,
        skipped_inputs,
        input_bytes,
        buckets,
    })
}

/// A run's decisions with everything derived from them: keys, ad costs, the pseudonymiser's
/// settings. Built the same way by `logveil run` and by every stage of a staged run.
pub struct Plan<'a> {
    pub pipeline: &'a Pipeline,
    pub options: &'a RunOptions,
    pub decisions: Decisions,
    source: KeySource,
    managed_ring: bool,
    lookback: Option<u32>,
    key_mode: &'static str,
    pub keys: Arc<KeySet>,
    costs: Option<crate::costs::Costs>,
    reach: i64,
    pub settings: pseudonymise::Settings,
    /// Ingest worker threads.
    pub workers: u16,
}

impl<'a> Plan<'a> {
    /// `with_costs`: read the ad-spend file (only the merge needs it).
    pub fn new(
        pipeline: &'a Pipeline,
        options: &'a RunOptions,
        decisions: Decisions,
        with_costs: bool,
    ) -> Result<Plan<'a>, Failure> {
        Plan::build(pipeline, options, decisions, with_costs, None)
    }

    /// A shard task's plan: only the keys derived for its days, never a master.
    pub fn with_derived_keys(
        pipeline: &'a Pipeline,
        options: &'a RunOptions,
        decisions: Decisions,
        keys: pseudonymise::keyring::DerivedKeys,
    ) -> Result<Plan<'a>, Failure> {
        Plan::build(pipeline, options, decisions, false, Some(keys))
    }

    fn build(
        pipeline: &'a Pipeline,
        options: &'a RunOptions,
        decisions: Decisions,
        with_costs: bool,
        derived: Option<pseudonymise::keyring::DerivedKeys>,
    ) -> Result<Plan<'a>, Failure> {
        let usage = |e: pseudonymise::keys::KeyError| Failure::new(exit::USAGE, e.to_string());
        let source = match (&options.key_file, &options.key_dir) {
            (Some(path), _) => KeySource::File(path.clone()),
            (None, Some(dir)) => KeySource::Ring(dir.clone()),
            (None, None) => pipeline.key.clone(),
        };
        let lookback = pipeline.returning.map(|r| r.lookback_days);
        // Only the pipeline's own ring is managed: a ring named on the command line must exist.
        let managed_ring = pipeline.returning.is_some_and(|r| r.manage_keys)
            && options.key_dir.is_none()
            && options.key_file.is_none();
        if lookback.is_some() && source == KeySource::Ephemeral {
            return Err(Failure::new(
                exit::USAGE,
                "returning visitors need a lasting key: give --key-file or --key-dir, not an ephemeral key",
            ));
        }
        let costs = match &pipeline.costs {
            Some(path) if with_costs => Some(
                crate::costs::Costs::read(path, &pipeline.currency, &pipeline.campaign_rules)
                    .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?,
            ),
            _ => None,
        };
        let (keys, key_mode) = match (&source, derived) {
            (_, Some(keys)) => (KeySet::Derived(keys), "derived"),
            (KeySource::File(path), None) => (
                KeySet::Single(MasterKey::read(path).map_err(usage)?),
                "key_file",
            ),
            (KeySource::Ring(dir), None) if managed_ring => (
                KeySet::Ring(KeyRing::open_managed(dir).map_err(usage)?),
                "key_ring_managed",
            ),
            (KeySource::Ring(dir), None) => {
                (KeySet::Ring(KeyRing::open(dir).map_err(usage)?), "key_ring")
            }
            (KeySource::Ephemeral, None) => (
                KeySet::Single(MasterKey::generate().map_err(failed)?),
                "ephemeral",
            ),
        };
        let tz = &pipeline.time_zone;
        let reach = pipeline.max_visit_s + pipeline.session_timeout_s;
        let window = decisions
            .target
            .map(Day)
            .map(|d| (day_start(tz, d) - reach, day_start(tz, d.next()) + reach));
        let settings = pseudonymise::Settings {
            time_zone: tz.clone(),
            filters: pipeline.filters.clone(),
            path_rules: pipeline.path_rules.clone(),
            host_lists: pipeline.host_lists.clone(),
            site_hosts: pipeline.site_hosts.clone(),
            check_vhost: pipeline.format.has_vhost(),
            link_window_s: reach,
            window,
            buckets: decisions.buckets as u16,
            goals: Arc::new(pipeline.goals.clone()),
            campaign_rules: Arc::new(pipeline.campaign_rules.clone()),
            epoch_days: lookback,
            managed_keys: managed_ring,
            trusted_proxies: Arc::new(pipeline.trusted_proxies.clone()),
            haproxy_captures: Arc::new(pipeline.haproxy_captures.clone()),
            custom_format: pipeline.custom_format.clone().map(Arc::new),
            json_fields: pipeline.json_fields.clone().map(Arc::new),
        };
        let threads = options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok(Plan {
            pipeline,
            options,
            decisions,
            source,
            managed_ring,
            lookback,
            key_mode,
            keys: Arc::new(keys),
            costs,
            reach,
            settings,
            workers: threads.clamp(1, 64) as u16,
        })
    }

    /// The tables this run computes (loyalty and uniques need returning visitors).
    pub fn tables(&self) -> Vec<TableName> {
        TABLES
            .iter()
            .copied()
            .filter(|t| {
                self.lookback.is_some() || !matches!(t, TableName::Loyalty | TableName::Uniques)
            })
            .collect()
    }

    fn lookback_days(&self) -> u32 {
        self.lookback.unwrap_or(DEFAULT_LOOKBACK_DAYS)
    }

    fn epoch_of(&self, d: Day) -> Day {
        self.keys.epoch_start(d, self.lookback).unwrap_or(d)
    }

    /// Which of `days` no master covers (a managed ring may add them).
    pub fn uncovered(&self, days: &BTreeSet<Day>) -> BTreeSet<Day> {
        days.iter()
            .copied()
            .filter(|d| {
                self.keys
                    .pseudonym_epoch(*d, self.lookback, self.managed_ring)
                    .is_none()
            })
            .collect()
    }

    /// The pseudonym epoch of each of the run's days, and two days on either side (what a
    /// reduce task gets instead of keys).
    pub fn epochs_of(&self, days: (Day, Day)) -> BTreeMap<Day, Day> {
        (days.0.0 - 2..=days.1.0 + 2)
            .map(Day)
            .map(|d| (d, self.epoch_of(d)))
            .collect()
    }

    /// Overrides the key mode the run record shows (a staged run's ephemeral key is a file
    /// in its work directory).
    pub fn set_key_mode(&mut self, mode: &'static str) {
        self.key_mode = mode;
    }

    /// Keys derived from the masters for a shard task to read events of `days` (decision 7).
    pub fn derive_keys(
        &self,
        days: impl IntoIterator<Item = Day>,
    ) -> pseudonymise::keyring::DerivedKeys {
        self.keys.derive_for(days, self.lookback, self.managed_ring)
    }

    /// The local days `--date`'s window reaches, or without a date the month up to tomorrow
    /// (days outside it get their keys when the shard stage reports them).
    pub fn likely_days(&self) -> BTreeSet<Day> {
        let tz = &self.pipeline.time_zone;
        match self.decisions.target {
            Some(d) => {
                let d = Day(d);
                let first = local_time(tz, day_start(tz, d) - self.reach).0;
                let last = local_time(tz, day_start(tz, d.next()) + self.reach).0;
                (first.0..=last.0).map(Day).collect()
            }
            None => {
                let now = jiff::Timestamp::now().as_second();
                let today = local_time(tz, now).0;
                (today.0 - 31..=today.0 + 1).map(Day).collect()
            }
        }
    }

    fn reads_stdin(&self) -> bool {
        self.decisions
            .files
            .iter()
            .any(|f| f.as_os_str() == reader::STDIN)
    }

    /// The masters a managed ring lacks for `missing` days, added (one per epoch), with a note
    /// each; any other key source fails, naming what to do.
    pub fn add_missing_masters(
        &mut self,
        missing: &BTreeSet<Day>,
        again: bool,
        notes: &mut Vec<String>,
    ) -> Result<(), Failure> {
        let usage = |e: pseudonymise::keys::KeyError| Failure::new(exit::USAGE, e.to_string());
        let Some(first) = missing.first().copied() else {
            return Ok(());
        };
        let KeySource::Ring(dir) = &self.source else {
            unreachable!("only a key ring can miss a day");
        };
        if !self.managed_ring || again {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "no master key in the key ring covers {first} ({} day(s) in all); add one with `logveil key rotate --key-dir {} --from DATE` or leave those days out with --date. Nothing was published",
                    missing.len(),
                    dir.display()
                ),
            ));
        }
        let starts: BTreeSet<Day> = missing
            .iter()
            .map(|d| visitors::grid_epoch(*d, self.lookback.unwrap_or(1)))
            .collect();
        for start in &starts {
            let id = KeyRing::rotate(dir, *start).map_err(usage)?;
            notes.push(format!(
                "managed key ring: added the master of the epoch starting {start} (epoch id {id})"
            ));
        }
        self.keys = Arc::new(KeySet::Ring(KeyRing::open_managed(dir).map_err(usage)?));
        Ok(())
    }
}

/// What the shard stage gave: per input, its counts; the key epochs used; the clients seen.
pub struct ShardOutput {
    pub results: Vec<FileResult>,
    pub epoch_ids: BTreeMap<Day, String>,
    pub identities: Identities,
}

/// The shard stage over every input, in one process. A managed key ring gains the masters
/// of the epochs the inputs reach (once: the shard is then run again with them).
fn shard_with_keys(
    plan: &mut Plan<'_>,
    notes: &mut Vec<String>,
) -> Result<(SpillDir, ShardOutput), Failure> {
    let state_dir = &plan.pipeline.state_dir;
    let indices: Vec<u32> = (0..plan.decisions.files.len() as u32).collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let spill_attempt = format!("{}-{attempt}", plan.decisions.run_id);
        let spill =
            SpillDir::create(state_dir, &spill_attempt, plan.decisions.buckets).map_err(|e| {
                Failure::new(
                    exit::FAILED,
                    format!(
                        "cannot create spill directory under {}: {e}",
                        state_dir.display()
                    ),
                )
            })?;
        let keys = plan.keys.clone();
        let output = shard(
            plan,
            &indices,
            &keys,
            spill.dir(),
            spill.key(),
            plan.options.progress.as_ref(),
        )?;
        let missing: BTreeSet<Day> = output
            .results
            .iter()
            .flat_map(|r| r.missing_key.iter().copied())
            .collect();
        if missing.is_empty() {
            return Ok((spill, output));
        }
        plan.add_missing_masters(&missing, attempt > 1, notes)?;
        // The pass runs again with the new masters; standard input cannot be read twice.
        if plan.reads_stdin() {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "{}; standard input cannot be read a second time, so nothing was published: run the same command again (the masters are in place now)",
                    notes.last().expect("a note per master added")
                ),
            ));
        }
    }
}

/// Records what each input covers in the state dir's manifest (for later `--date` and
/// `--since-last` runs).
pub fn update_manifest(plan: &Plan<'_>, results: &[FileResult], notes: &mut Vec<String>) {
    let mut manifest = crate::manifest::Manifest::load(&plan.pipeline.state_dir);
    for r in results {
        if let Some(coverage) = r.coverage {
            manifest.record(&plan.decisions.files[r.index as usize], coverage);
        }
    }
    if let Err(e) = manifest.save(&plan.pipeline.state_dir) {
        notes.push(format!(
            "the input manifest could not be saved ({e}); later --date runs read every input"
        ));
    }
}

/// The shard stage's results added up: the run record's counts, the duplicate inputs whose
/// events are skipped, the days to compute.
pub struct Summary {
    pub record: RunRecord,
    pub notes: Vec<String>,
    /// Inputs whose content repeats an earlier one's.
    pub excluded: HashSet<u32>,
    coverage: Option<(i64, i64)>,
    /// The local days the new or changed inputs touch (`--since-last`).
    touched: BTreeSet<Day>,
    /// The first and last day to compute; `None` when there is no pageview at all.
    pub days: Option<(Day, Day)>,
}

/// Adds up the shard's results (in input order, whatever task produced them).
pub fn summarize(
    plan: &Plan<'_>,
    results: &[FileResult],
    epoch_ids: &BTreeMap<Day, String>,
    buckets: usize,
    mut notes: Vec<String>,
) -> Result<Summary, Failure> {
    let pipeline = plan.pipeline;
    let decisions = &plan.decisions;
    let tz = &pipeline.time_zone;
    let mut record = RunRecord {
        logveil_version: env!("CARGO_PKG_VERSION").to_string(),
        run_id: decisions.run_id.clone(),
        started_at: decisions.started_at.clone(),
        key_mode: plan.key_mode.to_string(),
        pipeline: record::PipelineInfo {
            name: pipeline.name.clone(),
            origin: pipeline.origin.clone(),
            blake3: pipeline.hash.clone(),
            site: pipeline.site.clone(),
            time_zone: pipeline.time_zone_name.clone(),
            k: pipeline.k,
            session_timeout_s: pipeline.session_timeout_s,
            max_visit_s: pipeline.max_visit_s,
            report_lang: pipeline.report.map(|l| l.code().to_string()),
        },
        ..RunRecord::default()
    };
    if decisions.buckets > usize::from(pipeline.buckets) {
        notes.push(format!(
            "{} buckets for about {} MiB of input",
            decisions.buckets,
            decisions.input_bytes >> 20
        ));
    }
    // Standard input's size is unknown when the buckets are chosen: say what it would take.
    let read_bytes: u64 = results.iter().map(|r| r.info.decompressed_bytes).sum();
    let wanted = read_bytes.div_ceil(BUCKET_INPUT_BYTES) as usize;
    if plan.reads_stdin() && wanted > 2 * buckets {
        notes.push(format!(
            "standard input held {} MiB, read in {buckets} buckets chosen before its size was known; give --buckets {} to keep memory as low as for a file",
            read_bytes >> 20,
            wanted.min(4096)
        ));
    }
    if decisions.skipped_inputs > 0 {
        notes.push(format!(
            "{} input(s) skipped: the input manifest shows they hold no event of the date's window",
            decisions.skipped_inputs
        ));
    }
    let mut seen_content: HashMap<blake3::Hash, String> = HashMap::new();
    let mut excluded: HashSet<u32> = HashSet::new();
    let mut filtered: BTreeMap<FilterRule, u64> = BTreeMap::new();
    let mut rejected: BTreeMap<Reject, record::RejectInfo> = BTreeMap::new();
    let mut coverage: Option<(i64, i64)> = None;
    let mut pageview_days: Option<(Day, Day)> = None;
    // The local days the new or changed inputs touch (their events, and the visits they can
    // reach into: a day's visits may start up to `reach` before its events).
    let mut touched: BTreeSet<Day> = BTreeSet::new();
    for r in results {
        let path = &decisions.files[r.index as usize];
        if let Some(coverage) = r.coverage
            && decisions.changed.contains(path)
        {
            let first = local_time(tz, coverage.0 - plan.reach).0;
            let last = local_time(tz, coverage.1 + plan.reach).0;
            touched.extend((first.0..=last.0).map(Day));
        }
    }
    for r in results {
        let duplicate_of = r.digest.and_then(|d| seen_content.get(&d).cloned());
        record.inputs.push(InputInfo {
            duplicate_of: duplicate_of.clone(),
            ..r.info.clone()
        });
        if let Some(first) = duplicate_of {
            notes.push(format!(
                "{} has the same content as {first}; its lines were counted once",
                r.info.path
            ));
            excluded.insert(r.index);
            continue;
        }
        if let Some(digest) = r.digest {
            seen_content.insert(digest, r.info.path.clone());
        }
        record.lines.read += r.read;
        record.lines.parsed += r.parsed;
        record.pageviews += r.pageviews;
        for (rule, n) in &r.filtered {
            *filtered.entry(*rule).or_default() += n;
        }
        for (reason, (n, line_numbers)) in &r.rejected {
            record.lines.rejected += n;
            let info = rejected.entry(*reason).or_default();
            info.count += n;
            info.lines.insert(r.info.path.clone(), line_numbers.clone());
        }
        coverage = merge_range(coverage, r.coverage);
        pageview_days = merge_range(pageview_days, r.days);
    }
    record.lines.rejected_by_reason = rejected
        .into_iter()
        .map(|(r, i)| (r.name().to_string(), i))
        .collect();
    record.filtered = filtered
        .iter()
        .map(|(r, n)| (r.name().to_string(), *n))
        .collect();
    record.key_epochs = epoch_ids
        .iter()
        .map(|(d, id)| (d.to_string(), id.clone()))
        .collect();

    if record.lines.read > 0 {
        let share = record.lines.rejected as f64 / record.lines.read as f64;
        if share > pipeline.max_rejected_share {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "{} of {} lines ({:.0}%) could not be parsed, more than max_rejected_share allows; is `format = \"{}\"` right for these logs? Nothing was published",
                    record.lines.rejected,
                    record.lines.read,
                    share * 100.0,
                    serde_json::to_value(pipeline.format)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
            ));
        }
    }
    let days = match decisions.target {
        Some(d) => Some((Day(d), Day(d))),
        None => pageview_days,
    };
    Ok(Summary {
        record,
        notes,
        excluded,
        coverage,
        touched,
        days,
    })
}

/// A run with no pageview publishes no table, only its record.
pub fn publish_nothing(summary: Summary, out: PathBuf) -> Result<RunReport, Failure> {
    let mut record = summary.record;
    record.notes = summary.notes;
    record
        .notes
        .push("no pageviews in the inputs: nothing was published".into());
    record.finished_at = jiff::Timestamp::now().to_string();
    let record_path = output::write_record_only(&out, &record).map_err(failed)?;
    Ok(RunReport {
        record,
        record_path,
        output: out,
    })
}

/// Returning visitors: the visit log is expired, then the earlier visits of this run's
/// clients are loaded and routed to their buckets (decision 2, docs/PRIVACY.md), each
/// bucket's part handed to `spill` as it fills. Without returning visitors, nothing.
pub fn load_histories(
    plan: &Plan<'_>,
    days: (Day, Day),
    identities: &Identities,
    buckets: usize,
    notes: &mut Vec<String>,
    spill: &mut dyn FnMut(usize, visitors::HistoryPart) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let Some(l) = plan.lookback else {
        return Ok(());
    };
    let visit_log = VisitLog::new(&plan.pipeline.state_dir);
    let expired = visit_log.expire(&plan.keys, days.1, l).map_err(failed)?;
    if !expired.is_empty() {
        notes.push(format!(
            "visit log: deleted the state of {} ended epoch(s)",
            expired.len()
        ));
    }
    visit_log
        .load(&plan.keys, l, days, identities, buckets, spill)
        .map_err(failed)
}

/// What the reduce stage gives for one bucket: additive partial tables, which visitors each
/// row has (for the k rule's unions; none under differential privacy, which forms no
/// unions), and the bucket's visits for the visit log (returning visitors).
pub struct BucketOutput {
    pub visits: u64,
    /// One per table of [`Plan::tables`].
    pub partials: Vec<polars::prelude::DataFrame>,
    /// One per table, `None` under differential privacy; with the bucket's id columns.
    pub frames: Vec<Option<polars::prelude::DataFrame>>,
    /// The texts of the frames' ids, stored beside them.
    pub strings: aggregate::events::Strings,
    pub records: Vec<VisitRecord>,
}

/// The reduce stage: one bucket's events → sessions → partial tables.
pub struct Reducer<'p, 'a> {
    plan: &'p Plan<'a>,
    days: (Day, Day),
    tables: Vec<TableName>,
    /// Time in building sessions and in the partial tables (LOGVEIL_PROFILE).
    pub in_sessions: std::sync::Mutex<std::time::Duration>,
    pub in_tables: std::sync::Mutex<std::time::Duration>,
}

impl<'p, 'a> Reducer<'p, 'a> {
    pub fn new(plan: &'p Plan<'a>, days: (Day, Day)) -> Reducer<'p, 'a> {
        Reducer {
            plan,
            days,
            tables: plan.tables(),
            in_sessions: Default::default(),
            in_tables: Default::default(),
        }
    }

    /// Bucket `b`'s sessions and partial tables; `None` when it has neither events nor
    /// clients of the visit log.
    pub fn reduce(
        &self,
        b: usize,
        events: aggregate::events::EventColumns,
        history: &visitors::History,
        identities: &Identities,
    ) -> Result<Option<BucketOutput>, Failure> {
        let pipeline = self.plan.pipeline;
        let clock = std::time::Instant::now();
        // A bucket without events still counts its clients of the visit log in the uniques.
        if events.is_empty() && history.others.is_empty() {
            return Ok(None);
        }
        let lookback = self.plan.lookback;
        let epoch_of = |d: Day| self.plan.epoch_of(d);
        let identity_of = |d: Day, visitor: u64| match lookback {
            Some(_) => identities.identity(epoch_of(d), visitor),
            None => visitor,
        };
        let derive_context = visitors::DeriveContext {
            goals: &pipeline.goals,
            lookback_days: self.plan.lookback_days(),
            returning: lookback.is_some(),
            max_touches: pipeline
                .dp
                .as_ref()
                .map(|dp| dp.bounds.max_rows_per_table as usize),
            identity: &identity_of,
            epoch_of: &epoch_of,
            days: self.days,
        };
        let frame = events.into_frame().map_err(polars_err("event frame"))?;
        let mut sessions = aggregate::sessionise(
            frame,
            pipeline.session_timeout_s,
            pipeline.max_visit_s,
            self.days,
            &pipeline.goals,
        )
        .map_err(polars_err("sessions"))?;
        if let Some(dp) = &pipeline.dp {
            sessions = aggregate::bound_contributions(sessions, &dp.bounds, &pipeline.goals)
                .map_err(polars_err("contribution bounds"))?;
        }
        let mut records = visitors::derive(&mut sessions, history, &derive_context)
            .map_err(polars_err("previous visits"))?;
        if lookback.is_none() {
            records.clear();
        }
        *self.in_sessions.lock().expect("timer") += clock.elapsed();
        let clock = std::time::Instant::now();
        let row_bound = pipeline.dp.as_ref().map(|dp| dp.bounds.max_rows_per_table);
        let frames = aggregate::bucket_tables(&sessions, &self.tables, row_bound, b as u32)
            .map_err(polars_err("tables"))?;
        let (partials, frames): (Vec<_>, Vec<_>) = frames
            .into_iter()
            .map(|(partial, incidence)| (partial, incidence.filter(|_| pipeline.dp.is_none())))
            .unzip();
        *self.in_tables.lock().expect("timer") += clock.elapsed();
        Ok(Some(BucketOutput {
            visits: sessions.visits.height() as u64,
            partials,
            frames,
            strings: sessions.strings,
            records,
        }))
    }
}

/// A reduced bucket whose row-visitor frames are sealed in the spill: how many bytes they
/// took and how long (LOGVEIL_PROFILE).
struct ReducedBucket {
    output: BucketOutput,
    frame_bytes: usize,
    frame_time: std::time::Duration,
}

/// Reduces every bucket on `workers` threads (a bucket's Polars queries are small, so
/// buckets side by side use the cores better than one bucket's queries alone) and hands each
/// result to `take` in bucket order, so what the merge sees does not depend on the threads.
/// A bucket's row-visitor frames are sealed in the spill by its worker, not held (a frame
/// shares its strings' buffers with the bucket's sessions: holding it would hold them all).
fn reduce_buckets(
    reducer: &Reducer<'_, '_>,
    spill: &SpillDir,
    excluded: &HashSet<u32>,
    workers: u16,
    mut take: impl FnMut(Option<ReducedBucket>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    type Reduced = Result<Option<ReducedBucket>, Failure>;
    let one = |b: usize| -> Reduced {
        let events = spill.read_bucket(b, excluded).map_err(|e| {
            Failure::new(exit::FAILED, format!("cannot read spilled bucket {b}: {e}"))
        })?;
        let read_err =
            |e| Failure::new(exit::FAILED, format!("cannot read spilled bucket {b}: {e}"));
        let history = spill.read_history(b).map_err(read_err)?;
        let identities = spill.read_identities(b).map_err(read_err)?;
        let Some(mut output) = reducer.reduce(b, events, &history, &identities)? else {
            return Ok(None);
        };
        let t0 = std::time::Instant::now();
        let frames = std::mem::take(&mut output.frames);
        let records = std::mem::take(&mut output.records);
        let spill_err = |e| Failure::new(exit::FAILED, format!("cannot write spill: {e}"));
        let bytes = spill
            .write_table_frames(b, frames, &output.strings)
            .map_err(spill_err)?;
        spill
            .write_visits(b, visitors::by_day(&records))
            .map_err(spill_err)?;
        Ok(Some(ReducedBucket {
            output,
            frame_bytes: bytes,
            frame_time: t0.elapsed(),
        }))
    };
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let buckets = spill.buckets;
    let workers = usize::from(workers).clamp(1, buckets);
    std::thread::scope(|scope| {
        // Unbounded: a worker blocked on a full channel would hold a thread of the pool that
        // the merge below needs for its own queries.
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Reduced)>();
        let (next, stop, one) = (&next, &stop, &one);
        // The workers are jobs on Polars' own thread pool, so a bucket's queries run on the
        // thread that asked (and its pool), not handed to the pool's threads and waited for.
        scope.spawn(move || {
            polars_core::runtime::THREAD_POOL.scope(|pool| {
                for _ in 0..workers {
                    let tx = tx.clone();
                    pool.spawn(move |_| {
                        while !stop.load(Ordering::Relaxed) {
                            let b = next.fetch_add(1, Ordering::Relaxed);
                            if b >= buckets {
                                break;
                            }
                            if tx.send((b, one(b))).is_err() {
                                break;
                            }
                        }
                    });
                }
                drop(tx);
            });
        });
        // Results wait here until every bucket before them has been taken.
        let mut waiting: BTreeMap<usize, Reduced> = BTreeMap::new();
        let mut due = 0;
        let mut first_error = None;
        for (b, result) in rx {
            waiting.insert(b, result);
            while let Some(result) = waiting.remove(&due) {
                let taken = result.and_then(&mut take);
                due += 1;
                if let Err(e) = taken {
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

fn polars_err(what: &str) -> impl Fn(polars::prelude::PolarsError) -> Failure {
    let what = what.to_string();
    move |e| Failure::new(exit::FAILED, format!("aggregation {what} failed: {e}"))
}

/// The merge stage's sums: the buckets' partial tables added up, a batch at a time (one merge
/// per bucket would re-add the whole running total each time).
pub struct Merger {
    tables: Vec<TableName>,
    totals: Vec<Option<polars::prelude::DataFrame>>,
    pending: Vec<Vec<polars::prelude::DataFrame>>,
}

impl Merger {
    pub fn new(tables: Vec<TableName>) -> Merger {
        let n = tables.len();
        Merger {
            tables,
            totals: vec![None; n],
            pending: vec![Vec::new(); n],
        }
    }

    /// Adds one bucket's partials (one per table, in the order of [`Plan::tables`]).
    pub fn add(&mut self, partials: Vec<polars::prelude::DataFrame>) -> Result<(), Failure> {
        for (i, partial) in partials.into_iter().enumerate() {
            self.pending[i].push(partial);
            if self.pending[i].len() >= MERGE_BATCH {
                self.merge_pending(i)?;
            }
        }
        Ok(())
    }

    fn merge_pending(&mut self, i: usize) -> Result<(), Failure> {
        let mut parts = std::mem::take(&mut self.pending[i]);
        parts.extend(self.totals[i].take());
        let table = self.tables[i];
        self.totals[i] = Some(aggregate::merge(table, parts).map_err(polars_err(table.as_str()))?);
        Ok(())
    }

    pub fn finish(mut self) -> Result<Vec<Option<polars::prelude::DataFrame>>, Failure> {
        for i in 0..self.tables.len() {
            if !self.pending[i].is_empty() {
                self.merge_pending(i)?;
            }
        }
        Ok(self.totals)
    }
}

/// Everything the reduce stage gave, summed: what the merge needs beside the summary.
pub struct Reduced {
    pub days: (Day, Day),
    /// Per table of [`Plan::tables`], the merged partials (`None`: no bucket had rows).
    pub totals: Vec<Option<polars::prelude::DataFrame>>,
    pub visits: u64,
    /// Distinct (epoch, pseudonym) pairs of the run (returning visitors).
    pub clients_seen: usize,
    pub buckets: usize,
    pub notes: Vec<String>,
}

/// A bucket's row-visitor frames of some tables (by index in [`Plan::tables`]; `None` for a
/// table without one) and its texts.
pub type FrameSource<'f> =
    dyn Fn(usize, &[u64]) -> std::io::Result<aggregate::events::RowVisitorFrames> + Sync + 'f;

/// Appends a bucket's visits of a day for the visit log, in the log's encoding
/// ([`visitors::DayVisits`]), to the buffer.
pub type VisitSource<'f> = dyn Fn(usize, Day, &mut Vec<u8>) -> std::io::Result<()> + Sync + 'f;

/// Where [`finish`] reads what the reduce stage left on disk, bucket by bucket, rather than
/// hold it: the row-visitor frames and the visits for the visit log.
pub struct Sources<'f> {
    pub frame: &'f FrameSource<'f>,
    pub visits: &'f VisitSource<'f>,
    /// Called once the frames and the visits have been read: nothing reads them after.
    pub done: &'f (dyn Fn() + Sync),
}

/// Merge and publish: the privacy rules once, on the totals; then staging, audit, the
/// ledger, the visit log, the commit and the report.
pub fn finish(
    plan: &Plan<'_>,
    summary: Summary,
    reduced: Reduced,
    sources: &Sources<'_>,
    out: PathBuf,
    phase: &Phases,
) -> Result<RunReport, Failure> {
    let read_frame = sources.frame;
    let pipeline = plan.pipeline;
    let options = plan.options;
    let keys = &*plan.keys;
    let lookback = plan.lookback;
    let lookback_days = plan.lookback_days();
    let tz = &pipeline.time_zone;
    let reach = plan.reach;
    let tables = plan.tables();
    let days = reduced.days;
    let Summary {
        mut record,
        mut notes,
        coverage,
        touched,
        ..
    } = summary;
    notes.extend(reduced.notes);
    record.visits = reduced.visits;
    let visit_log = VisitLog::new(&pipeline.state_dir);
    let usage = |e: pseudonymise::keys::KeyError| Failure::new(exit::USAGE, e.to_string());
    if record.visits == 0 {
        notes.push(format!(
            "no visit starts between {} and {} in these inputs: the published tables are empty",
            days.0, days.1
        ));
    }
    let mut merged = Vec::new();
    for (table, total) in tables.iter().zip(reduced.totals) {
        let rows = match total {
            Some(total) => aggregate::rows(*table, &total).map_err(polars_err(table.as_str()))?,
            None => Vec::new(),
        };
        merged.push((*table, rows));
    }
    let merged_index: HashMap<(usize, Day, Vec<aggregate::KeyValue>), Vec<i64>> = merged
        .iter()
        .enumerate()
        .flat_map(|(t, (_, rows))| {
            rows.iter()
                .map(move |r| ((t, r.day, r.keys.clone()), r.measures.clone()))
        })
        .collect();
    // The exact measures of unions of rows, for every table that asks in a round of the k
    // rule. Every measure but the visitors is a sum over the rows (each source row belongs to
    // one row), so it comes from the merged totals. The distinct visitors come from the
    // buckets' sealed row-visitor frames: buckets are disjoint in visitors, so their counts
    // add up. Nothing goes back to the events or the sessions.
    let workers = usize::from(plan.workers);
    let mut other = |requests: &[disclose::UnionRequest]|
     -> anyhow::Result<Vec<BTreeMap<disclose::Unit, Vec<i64>>>> {
        // Each table's frame slot ([`aggregate::frame_slot`]: the tables counted from visits
        // share one), each slot read once.
        let wanted: Vec<u64> = requests
            .iter()
            .map(|(table, _)| aggregate::frame_slot(&tables, *table) as u64)
            .collect();
        let mut slots = wanted.clone();
        slots.sort_unstable();
        slots.dedup();
        let folded = requests
            .iter()
            .map(|(table, keys)| aggregate::keys_frame(*table, keys))
            .collect::<polars::prelude::PolarsResult<Vec<_>>>()?;
        // Each bucket's frames of every table asking, read on the worker threads (the
        // bucket's texts once), its counts summed in bucket order.
        let per_bucket = crate::threads::in_parallel(reduced.buckets, workers, |b| {
            let read = read_frame(b, &slots)?;
            // The bucket's text -> id map, made once for all the tables asking.
            let ids = aggregate::events::TextIds::new();
            let frame_of = |slot: &u64| read.frames[slots.binary_search(slot).expect("read")].clone();
            requests
                .iter()
                .zip(&folded)
                .zip(wanted.iter().map(frame_of))
                .map(|(((table, _), folded), incidence)| match incidence {
                    None => Ok(BTreeMap::new()),
                    Some(incidence) => {
                        let folded = read.texts.encode_with(&ids, folded.clone())?;
                        aggregate::union_visitors(&incidence, *table, folded, &read.texts)
                            .map_err(anyhow::Error::from)
                    }
                })
                .collect::<anyhow::Result<Vec<_>>>()
        });
        let mut visitors: Vec<BTreeMap<disclose::Unit, i64>> = vec![BTreeMap::new(); requests.len()];
        for counts in per_bucket {
            for (total, counts) in visitors.iter_mut().zip(counts?) {
                for (unit, n) in counts {
                    *total.entry(unit).or_default() += n;
                }
            }
        }
        let mut answers = Vec::with_capacity(requests.len());
        for ((table, keys), visitors) in requests.iter().zip(visitors) {
            let t = tables.iter().position(|x| x == table).expect("a table");
            let mut sums: BTreeMap<disclose::Unit, Vec<i64>> = BTreeMap::new();
            for (day, kv) in keys {
                if let Some(m) = merged_index.get(&(t, *day, kv.clone())) {
                    let unit = (*day, kv[..table.group_keys()].to_vec());
                    let e = sums.entry(unit).or_insert_with(|| vec![0; m.len()]);
                    e.iter_mut().zip(m).for_each(|(a, v)| *a += v);
                }
            }
            for (unit, e) in sums.iter_mut() {
                e[0] = visitors.get(unit).copied().unwrap_or(0);
            }
            answers.push(sums);
        }
        Ok(answers)
    };
    phase.mark("merge");
    let true_rows = merged.clone();
    let mut public = disclose::PublicKeys::new(&pipeline.goals, lookback_days);
    public.epochs = (days.0.0..=days.1.0)
        .map(|d| (Day(d), plan.epoch_of(Day(d))))
        .collect();
    let (release, counts) = match &pipeline.dp {
        None => disclose::disclose_batched(merged, pipeline.k, days, &public, &mut other)
            .map_err(|e| Failure::new(exit::FAILED, format!("disclosure failed: {e}")))?,
        Some(dp) => {
            let release_key = |day: Day| keys.master_for(day).map(|m| *m.release_key(day));
            let (release, counts, tables) =
                disclose::disclose_dp(merged, dp, pipeline.k, days, &public, &release_key)
                    .map_err(|e| Failure::new(exit::FAILED, format!("disclosure failed: {e}")))?;
            record.differential_privacy =
                Some(serde_json::json!({ "settings": dp, "tables": tables }));
            (release, counts)
        }
    };
    record.disclosure = counts
        .iter()
        .map(|(t, c)| (t.to_string(), c.into()))
        .collect();

    // Which days to (re)publish: a partial day never replaces a complete one unless forced.
    let published = output::published_days(&out).map_err(failed)?;
    let mut to_publish = BTreeSet::new();
    if options.since_last && touched.is_empty() {
        notes.push(
            "--since-last: no input is new or changed since the last run; nothing to publish"
                .into(),
        );
    }
    for day in (days.0.0..=days.1.0).map(Day) {
        let partial = coverage.is_none_or(|(from, to)| {
            from > day_start(tz, day) - reach || to < day_start(tz, day.next()) + reach
        });
        let name = day.to_string();
        let keep_old = partial && published.get(&name) == Some(&false) && !options.force;
        if options.since_last && !touched.contains(&day) {
            continue;
        }
        if keep_old {
            notes.push(format!(
                "{name}: the inputs cover only part of the day and a complete {name} is already published; kept it (use --force to replace it)"
            ));
        } else {
            to_publish.insert(day);
        }
        record.dates.push(DateInfo {
            date: name,
            partial,
            published: !keep_old,
        });
    }
    record.notes = notes;
    record.finished_at = jiff::Timestamp::now().to_string();
    if let Some(costs) = &plan.costs {
        record
            .notes
            .extend(unattached_costs(costs, &release, &to_publish));
    }
    // Stage, audit the staged files independently, and only then publish.
    phase.mark("disclose (unions from the row-visitor frames)");
    // The visit log of the published days, before the commit: a run that fails after this
    // leaves state that a re-run replaces (decision 19). Written on a thread of its own
    // while the tables are staged, audited and charged (it needs none of them), so a run
    // that the audit or the privacy ledger stops has written it too: the visits it holds
    // happened whether or not their tables are released.
    let buckets = reduced.buckets;
    let written = std::thread::scope(|scope| -> Result<Option<Vec<String>>, Failure> {
        let (log, log_days) = (&visit_log, &to_publish);
        let log_writer = lookback.map(|l| {
            scope.spawn(move || write_visit_log(log, keys, l, log_days, buckets, sources.visits))
        });
        let staging = output::stage(
            &out,
            &release,
            &to_publish,
            plan.costs.as_ref(),
            &mut record,
            usize::from(plan.workers),
        )
        .map_err(failed)?;
        phase.mark("write Parquet");
        let audit = crate::audit::audit_staged(&staging, &record).map_err(failed)?;
        phase.mark("audit the staged files");
        if !audit.passed() {
            output::discard(&out, &record.run_id);
            return Err(Failure::new(
                exit::AUDIT_FAILED,
                format!(
                    "the output audit failed ({}); nothing was published. This is a bug in logveil: please report the findings, which name no value: {}",
                    audit.findings.len(),
                    audit
                        .findings
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
        // The privacy ledger: charge ε for every table and day whose pre-noise content is new, or
        // release nothing. Saved before the files become visible, so no release goes uncharged.
        if let Some(dp) = &pipeline.dp {
            let mut ledger = Ledger::load(&pipeline.state_dir).map_err(failed)?;
            let mut releases = Vec::new();
            for (table, rows) in &true_rows {
                for day in &to_publish {
                    let Some(master) = keys.master_for(*day) else {
                        continue;
                    };
                    let mut h = blake3::Hasher::new_keyed(&master.ledger_key(*day));
                    for r in rows.iter().filter(|r| r.day == *day) {
                        h.update(format!("{:?}|{:?}\n", r.keys, r.measures).as_bytes());
                    }
                    releases.push(ledger::Release {
                        table: table.as_str().to_string(),
                        date: *day,
                        epsilon: dp.epsilon,
                        digest: h.finalize().to_hex().to_string(),
                    });
                }
            }
            let charged =
                match ledger.charge(&releases, dp.epsilon_budget, dp.window_days, &record.run_id) {
                    Ok(c) => c,
                    Err(e @ ledger::LedgerError::Spent { .. }) => {
                        output::discard(&out, &record.run_id);
                        return Err(Failure::new(exit::BUDGET_SPENT, e.to_string()));
                    }
                    Err(e) => {
                        output::discard(&out, &record.run_id);
                        return Err(failed(e));
                    }
                };
            if let Some(v) = record.differential_privacy.as_mut() {
                v["epsilon_charged"] = serde_json::json!(charged);
            }
            ledger.save(&pipeline.state_dir).map_err(failed)?;
        }
        match log_writer {
            Some(writer) => {
                let _mark = PhaseEnd(
                    phase,
                    "visit log (write, the rest of its time beside the tables)",
                );
                writer
                    .join()
                    .expect("the visit log's writer panicked")
                    .map(Some)
            }
            None => Ok(None),
        }
    });
    (sources.done)();
    let written = written?;
    if let (Some(l), Some(written)) = (lookback, written) {
        let stale: Vec<String> = visit_log
            .days_after(days.1)
            .map_err(failed)?
            .iter()
            .map(Day::to_string)
            .collect();
        if !stale.is_empty() {
            record.notes.push(format!(
                "returning visitors: {} later day(s) were computed before this re-run and are stale until re-run: {}",
                stale.len(),
                stale.join(", ")
            ));
        }
        let mut destroyed = Vec::new();
        if plan.managed_ring
            && let KeySource::Ring(dir) = &plan.source
            && let Some(current) = keys.epoch_start(days.1, lookback)
            && let Some(previous) = keys.epoch_start(current.prev(), lookback)
        {
            destroyed = KeyRing::destroy_before(dir, previous).map_err(usage)?;
            if !destroyed.is_empty() {
                // Their visit log can no longer be read; it goes now, not at the next run.
                let keys_now = KeySet::Ring(KeyRing::open_managed(dir).map_err(usage)?);
                visit_log.expire(&keys_now, days.1, l).map_err(failed)?;
            }
        }
        record.returning_visitors = Some(serde_json::json!({
            "lookback_days": l,
            "epochs": (days.0.0..=days.1.0)
                .map(|d| (Day(d).to_string(), plan.epoch_of(Day(d)).to_string()))
                .collect::<BTreeMap<String, String>>(),
            "clients_seen": reduced.clients_seen,
            "log_days_written": written,
            "stale_dates": stale,
            "masters_destroyed": destroyed.iter().map(Day::to_string).collect::<Vec<_>>(),
        }));
        record.processing.derived[0] =
            format!("visitor pseudonym: keyed BLAKE3 under a key per {l}-day epoch, 64 bits");
        record.processing.retention[1] = format!(
            "pseudonyms: the visit log under the state dir, sealed per epoch, at most {} days, destroyed with the epoch's master",
            visitors::retention_days(l)
        );
    }
    if !pipeline.goals.is_empty() || plan.costs.is_some() {
        record.conversions = Some(serde_json::json!({
            "currency": pipeline.currency,
            "goals": pipeline.goals.goals.iter().map(|g| serde_json::json!({
                "name": g.name,
                "steps": g.steps.iter().map(|m| pipeline.goals.matchers[*m].describe()).collect::<Vec<_>>(),
                "value_minor": g.value,
            })).collect::<Vec<_>>(),
            "funnels": pipeline.goals.funnels.iter().map(|f| serde_json::json!({
                "name": f.name,
                "steps": f.steps.iter().map(|m| pipeline.goals.matchers[*m].describe()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "costs": pipeline.costs.as_ref().map(|p| p.display().to_string()),
            "attribution_lookback_days": lookback_days,
        }));
    }
    let record_path = output::commit(&out, &record).map_err(failed)?;
    phase.mark("publish");
    // The report, from the published tables and records only (this run's included), listed
    // in the run record with its hash.
    if let Some(lang) = pipeline.report {
        let _mark = PhaseEnd(phase, "report");
        let report = crate::report::build(&out, None, None, Some(lang)).map_err(failed)?;
        let info = output::write_report(&out, &report.html).map_err(failed)?;
        record.files.push(info);
        output::rewrite_record(&out, &record).map_err(failed)?;
    }
    Ok(RunReport {
        record,
        record_path,
        output: out,
    })
}

/// Writes the visit log's file of each day in `days`: the day's visits, bucket by bucket (the
/// order the run had them in), one bucket's at a time sealed on as they come (a day's file
/// used to be sealed whole, which held the day's visits in memory). Returns the days written.
fn write_visit_log(
    visit_log: &VisitLog,
    keys: &KeySet,
    lookback: u32,
    days: &BTreeSet<Day>,
    buckets: usize,
    visits: &VisitSource<'_>,
) -> Result<Vec<String>, Failure> {
    let mut written = Vec::new();
    let mut bucket_visits = Vec::new();
    for day in days {
        let mut writer = visit_log.day_writer(keys, lookback, *day).map_err(failed)?;
        for b in 0..buckets {
            bucket_visits.clear();
            visits(b, *day, &mut bucket_visits).map_err(|e| {
                Failure::new(
                    exit::FAILED,
                    format!("cannot read bucket {b}'s visits of {day} from the spill: {e}"),
                )
            })?;
            writer.push(&bucket_visits).map_err(failed)?;
        }
        writer.commit().map_err(failed)?;
        written.push(day.to_string());
    }
    Ok(written)
}

/// Notes for the ad costs no published campaigns row carries: campaigns without a visit on a
/// day with no `(other)` row (a cost is never dropped silently).
fn unattached_costs(
    costs: &crate::costs::Costs,
    release: &disclose::Publishable,
    days: &BTreeSet<Day>,
) -> Vec<String> {
    let Some((_, by_day)) = release
        .tables()
        .iter()
        .find(|(t, _)| *t == TableName::Campaigns)
    else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    for day in days {
        let rows = by_day.get(day).map_or(&[][..], Vec::as_slice);
        if rows.iter().any(|r| r.is_other) {
            continue;
        }
        let key = |r: &disclose::ReleasedRow, i: usize| match &r.keys[i] {
            aggregate::KeyValue::Str(s) => s.clone(),
            aggregate::KeyValue::Int(_) => None,
        };
        let (mut lost, mut n) = (0i64, 0);
        for ((_, src, med, camp), cost) in costs.of_day(*day) {
            let shown = rows
                .iter()
                .any(|r| key(r, 0) == *src && key(r, 1) == *med && key(r, 2) == *camp);
            if !shown {
                lost += cost;
                n += 1;
            }
        }
        if n > 0 {
            notes.push(format!(
                "{day}: {n} campaign(s) in the ad-spend file had no visit and no (other) row to carry their cost ({lost} minor units in all): not in the campaigns table"
            ));
        }
    }
    notes
}

/// What one input file gave.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct FileResult {
    index: u32,
    info: InputInfo,
    /// BLAKE3 of the decompressed content; `None` when the run has no other input to compare.
    #[serde(with = "hash_hex")]
    digest: Option<blake3::Hash>,
    read: u64,
    parsed: u64,
    pageviews: u64,
    filtered: BTreeMap<FilterRule, u64>,
    rejected: BTreeMap<Reject, (u64, Vec<u64>)>,
    /// First and last timestamp of the placed lines.
    coverage: Option<(i64, i64)>,
    /// First and last local day of the pageviews.
    days: Option<(Day, Day)>,
    /// Days no master of the key ring covers (their lines were not pseudonymised).
    missing_key: BTreeSet<Day>,
}

/// One worker's files, the key epochs it used and the clients it saw.
type WorkerOutput = (Vec<FileResult>, Vec<(Day, String)>, Identities);

/// Runs the shard stage: this thread reads the files in order and cuts them into blocks of
/// whole lines; `workers` threads parse and pseudonymise the blocks and spill their events.
/// Whatever thread handles a line, its result is the same (ties are broken by file and line
/// number), so the outputs do not depend on the number of threads.
pub fn shard(
    plan: &Plan<'_>,
    indices: &[u32],
    keys: &Arc<KeySet>,
    spill_dir: &std::path::Path,
    run_key: &[u8; 32],
    progress: Option<&indicatif::ProgressBar>,
) -> Result<ShardOutput, Failure> {
    let files = &plan.decisions.files;
    let format = plan.pipeline.format;
    let settings = &plan.settings;
    let workers = plan.workers;
    let started = std::time::Instant::now();
    let (mut total_lines, mut total_bytes) = (0u64, 0u64);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u32, ingest::Format, reader::Chunk)>(
        usize::from(workers) * 2,
    );
    let rx = std::sync::Mutex::new(rx);
    // Blocks' buffers, returned by the workers for the reader to fill again.
    let (recycle_tx, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut metas: Vec<(u32, InputInfo, Option<blake3::Hash>)> = Vec::new();
    let mut read_error: Option<Failure> = None;
    // The workers' notes of the clients they see fold into one table.
    let notes = visitors::IdentityNotes::default();
    let outcomes: Vec<Result<WorkerOutput, Failure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let rx = &rx;
                let recycle = recycle_tx.clone();
                let notes = notes.sharing();
                scope.spawn(move || -> Result<WorkerOutput, Failure> {
                    let mut ps =
                        Pseudonymiser::new(keys.clone(), settings.clone()).with_notes(notes);
                    let spill_failed = |e: std::io::Error| {
                        Failure::new(exit::FAILED, format!("cannot write spill: {e}"))
                    };
                    // A worker that cannot write still drains its blocks, so the reader
                    // never waits on a full channel.
                    let (mut writer, mut error) = match SpillWriter::create(
                        spill_dir,
                        run_key,
                        usize::from(settings.buckets),
                    ) {
                        Ok(writer) => (Some(writer), None),
                        Err(e) => (None, Some(spill_failed(e))),
                    };
                    let mut parts: BTreeMap<u32, FileResult> = BTreeMap::new();
                    loop {
                        let next = rx.lock().expect("not poisoned").recv();
                        let Ok((index, format, chunk)) = next else {
                            break;
                        };
                        let Some(writer) = writer.as_mut().filter(|_| error.is_none()) else {
                            continue; // keep draining so the reader never blocks
                        };
                        let part = parts.entry(index).or_insert_with(|| FileResult::new(index));
                        if let Err(f) =
                            process_chunk(format, &chunk, settings, &mut ps, writer, part)
                        {
                            error = Some(f);
                        }
                        // The block's buffer goes back to the reader for another block.
                        let _ = recycle.send(chunk.data);
                    }
                    if let Some(f) = error {
                        return Err(f);
                    }
                    if let Some(writer) = writer {
                        writer.finish().map_err(spill_failed)?;
                    }
                    let identities = ps.take_identities();
                    Ok((parts.into_values().collect(), ps.epoch_ids(), identities))
                })
            })
            .collect();
        let chosen: Vec<PathBuf> = indices.iter().map(|&i| files[i as usize].clone()).collect();
        // Contents are compared only between a run's inputs (decision 11): a run of one input
        // skips the hash.
        let mut inputs = reader::Inputs::new(&chosen, files.len() > 1);
        'files: for (position, (&index, path)) in indices.iter().zip(&chosen).enumerate() {
            let index = index as usize;
            let shown = path.display().to_string();
            let unreadable = |e: std::io::Error, line: Option<u64>| {
                let at = line.map(|l| format!(" after line {l}")).unwrap_or_default();
                Failure::new(
                    exit::FAILED,
                    format!(
                        "input {shown} is unreadable or corrupt{at}: {e}; nothing was published (fix or remove the file and run again)"
                    ),
                )
            };
            let size = match std::fs::metadata(path) {
                Ok(m) => m.len(),
                // Standard input has no size; an object has the size its listing gave.
                Err(_) if path.as_os_str() == reader::STDIN => 0,
                Err(_) if path.to_string_lossy().starts_with("s3://") => {
                    crate::store::listed(&path.to_string_lossy()).map_or(0, |s| s.size)
                }
                Err(e) => {
                    read_error = Some(unreadable(e, None));
                    break;
                }
            };
            let mut chunks = match inputs.open(position) {
                Ok(c) => c,
                Err(e) => {
                    read_error = Some(unreadable(e, None));
                    break;
                }
            };
            let mut lines = 0;
            let mut file_format = (format != ingest::Format::Auto).then_some(format);
            let mut w3c_layout: Option<ingest::w3c::Layout> = None;
            loop {
                match chunks.next_chunk_in(recycled.try_recv().unwrap_or_default()) {
                    Ok(Some(mut chunk)) => {
                        let first = chunk.first_line == 1;
                        let chunk_format =
                            *file_format.get_or_insert_with(|| ingest::detect(&chunk.data));
                        // A file in another format fails at once, not after every line of it
                        // has been rejected.
                        // (A custom format is checked by its own compile, not sampled here.)
                        if first
                            && format != ingest::Format::Auto
                            && format != ingest::Format::Custom
                            && format != ingest::Format::Json
                        {
                            let (placed, sampled) = ingest::fit(format, &chunk.data);
                            if sampled >= 10 && placed * 10 < sampled {
                                let guess = ingest::detect(&chunk.data);
                                let hint = if ingest::fit(guess, &chunk.data).0 > placed {
                                    format!("`format = \"auto\"` would choose `{}`", guess.name())
                                } else {
                                    "no format logveil knows reads them either".to_string()
                                };
                                read_error = Some(Failure::new(
                                    exit::FAILED,
                                    format!(
                                        "input {shown} does not look like `{}` logs: {placed} of its first {sampled} lines could be read that way ({hint}); nothing was published",
                                        format.name(),
                                    ),
                                ));
                                break 'files;
                            }
                        }
                        if let Some(bar) = progress {
                            let bytes = chunks.bytes_read();
                            let secs = started.elapsed().as_secs_f64().max(1e-3);
                            let done = total_lines + chunks.lines();
                            bar.set_message(format!(
                                "file {}/{} · {} MB · {} lines · {:.0} k lines/s",
                                index + 1,
                                files.len(),
                                (total_bytes + bytes) >> 20,
                                done,
                                done as f64 / secs / 1e3
                            ));
                            bar.tick();
                        }
                        lines = chunks.lines();
                        if matches!(
                            chunk_format,
                            ingest::Format::W3c | ingest::Format::Cloudfront
                        ) {
                            // The layout in force at this block's start, for the worker; and
                            // after it, for the next block.
                            chunk.w3c_layout = w3c_layout.clone();
                            if let Some(l) = ingest::w3c::last_layout(&chunk.data) {
                                w3c_layout = Some(l);
                            }
                        }
                        if tx.send((index as u32, chunk_format, chunk)).is_err() {
                            break 'files;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        read_error = Some(unreadable(e, Some(lines)));
                        break 'files;
                    }
                }
            }
            let (digest, decompressed) = chunks.content_digest();
            total_lines += lines;
            total_bytes += decompressed;
            let info = InputInfo {
                path: shown.clone(),
                size_bytes: size,
                decompressed_bytes: decompressed,
                gzip: chunks.compression == reader::Compression::Gzip,
                compression: chunks.compression.name().to_string(),
                format: file_format.unwrap_or(format).name().to_string(),
                lines,
                duplicate_of: None,
            };
            metas.push((index as u32, info, digest));
        }
        drop(tx);
        handles
            .into_iter()
            .map(|h| h.join().expect("an ingest worker panicked"))
            .collect()
    });
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(f) = read_error {
        return Err(f);
    }
    let mut by_file: BTreeMap<u32, FileResult> = BTreeMap::new();
    let mut epoch_ids = BTreeMap::new();
    // The workers folded their notes into the shared table; the last holder takes it.
    let mut identities = notes.finish();
    for outcome in outcomes {
        let (parts, ids, seen) = outcome?;
        epoch_ids.extend(ids);
        identities.absorb(seen);
        for part in parts {
            by_file
                .entry(part.index)
                .or_insert_with(|| FileResult::new(part.index))
                .absorb(part);
        }
    }
    let mut results = Vec::new();
    for (index, info, digest) in metas {
        let mut r = by_file
            .remove(&index)
            .unwrap_or_else(|| FileResult::new(index));
        r.read = info.lines;
        r.info = info;
        r.digest = digest;
        for (_, numbers) in r.rejected.values_mut() {
            numbers.sort_unstable();
            numbers.truncate(MAX_LINE_NUMBERS);
        }
        results.push(r);
    }
    Ok(ShardOutput {
        results,
        epoch_ids,
        identities,
    })
}

/// A BLAKE3 hash as hex (or null) in the shard stage's summaries.
mod hash_hex {
    pub fn serialize<S: serde::Serializer>(
        h: &Option<blake3::Hash>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match h {
            Some(h) => s.serialize_some(h.to_hex().as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<blake3::Hash>, D::Error> {
        <Option<String> as serde::Deserialize>::deserialize(d)?
            .map(|hex| blake3::Hash::from_hex(hex).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl FileResult {
    /// The input's number in the plan.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Days no master of the key ring covers.
    pub fn missing_key(&self) -> &BTreeSet<Day> {
        &self.missing_key
    }

    fn new(index: u32) -> FileResult {
        FileResult {
            index,
            info: InputInfo::default(),
            digest: None,
            read: 0,
            parsed: 0,
            pageviews: 0,
            filtered: BTreeMap::new(),
            rejected: BTreeMap::new(),
            coverage: None,
            days: None,
            missing_key: BTreeSet::new(),
        }
    }

    /// Adds another worker's counts for the same file.
    fn absorb(&mut self, other: FileResult) {
        self.read += other.read;
        self.parsed += other.parsed;
        self.pageviews += other.pageviews;
        for (rule, n) in other.filtered {
            *self.filtered.entry(rule).or_default() += n;
        }
        for (reason, (n, numbers)) in other.rejected {
            let e = self.rejected.entry(reason).or_default();
            e.0 += n;
            e.1.extend(numbers);
        }
        self.coverage = merge_range(self.coverage, other.coverage);
        self.days = merge_range(self.days, other.days);
        self.missing_key.extend(other.missing_key);
    }
}

fn merge_range<T: Ord + Copy>(a: Option<(T, T)>, b: Option<(T, T)>) -> Option<(T, T)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (x, None) | (None, x) => x,
    }
}

/// Parses and pseudonymises one block of lines, spilling its pageviews.
fn process_chunk(
    format: ingest::Format,
    chunk: &reader::Chunk,
    settings: &pseudonymise::Settings,
    ps: &mut Pseudonymiser,
    writer: &mut SpillWriter,
    r: &mut FileResult,
) -> Result<(), Failure> {
    let mut too_long = chunk.too_long.iter().peekable();
    let mut scratch = ingest::json::Scratch::default();
    scratch.w3c_layout = chunk.w3c_layout.clone();
    scratch.time_zone = Some(settings.time_zone.clone());
    scratch.haproxy_captures = settings.haproxy_captures.to_vec();
    scratch.custom = settings.custom_format.clone();
    scratch.json_fields = settings.json_fields.clone();
    // Filtered lines counted here by rule (most lines are filtered: a map's lookup each
    // cost more than the count), added to the file's counts after the chunk.
    let mut filtered = [0u64; FilterRule::ALL.len()];
    for (i, raw) in reader::lines(&chunk.data).enumerate() {
        let line_no = chunk.first_line + i as u64;
        let result = if too_long.peek() == Some(&&line_no) {
            too_long.next();
            Err(Reject::LineTooLong)
        } else {
            let text = raw.strip_suffix(b"\n").unwrap_or(raw);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            ingest::parse_line(format, text, &mut scratch).map(|rec| {
                r.coverage = merge_range(r.coverage, Some((rec.ts, rec.ts)));
                ps.process(&rec)
            })
        };
        match result {
            // Directives (W3C headers) are read, not rejected, and are no pageview.
            Err(Reject::Directive) => {
                r.parsed += 1;
                filtered[FilterRule::Directive as usize] += 1;
            }
            Err(reason) => {
                let entry = r.rejected.entry(reason).or_default();
                entry.0 += 1;
                if entry.1.len() < MAX_LINE_NUMBERS {
                    entry.1.push(line_no);
                }
            }
            Ok(outcome) => {
                r.parsed += 1;
                match outcome {
                    Outcome::Pageview(event) => {
                        let day = event.day;
                        r.days = merge_range(r.days, Some((day, day)));
                        r.pageviews += 1;
                        // Input order breaks ties between pageviews of one second, whatever
                        // the key: file index, then line number.
                        let seq = (u64::from(r.index) << 40) | line_no;
                        writer.push(seq, &event).map_err(|e| {
                            Failure::new(exit::FAILED, format!("cannot write spill: {e}"))
                        })?;
                    }
                    Outcome::Filtered(rule) => filtered[rule as usize] += 1,
                    // Counted; the run stops (or, with a managed ring, adds the master and
                    // starts over) once the shard has seen every day that lacks one.
                    Outcome::MissingKey(day) => {
                        r.missing_key.insert(day);
                    }
                }
            }
        }
    }
    for (rule, n) in FilterRule::ALL.into_iter().zip(filtered) {
        if n > 0 {
            *r.filtered.entry(rule).or_default() += n;
        }
    }
    Ok(())
}

/// Phase timings on stderr when `LOGVEIL_PROFILE` is set (names, wall and CPU seconds, peak
/// memory only).
pub struct Phases {
    on: bool,
    last: std::cell::Cell<std::time::Instant>,
    cpu: std::cell::Cell<f64>,
}

impl Phases {
    pub fn start() -> Phases {
        let on = std::env::var_os("LOGVEIL_PROFILE").is_some();
        Phases {
            on,
            last: std::cell::Cell::new(std::time::Instant::now()),
            cpu: std::cell::Cell::new(if on { process_cpu_s() } else { 0.0 }),
        }
    }

    pub fn mark(&self, name: &str) {
        if self.on {
            let now = std::time::Instant::now();
            // Peak memory so far, from the kernel (Linux only).
            let hwm = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("VmHWM:"))
                        .map(|l| l[6..].trim().to_string())
                })
                .unwrap_or_default();
            let cpu = process_cpu_s();
            let _ = writeln!(
                std::io::stderr(),
                "profile: {name}: {:.2} s (CPU {:.2} s, peak memory so far {hwm})",
                (now - self.last.get()).as_secs_f64(),
                cpu - self.cpu.get(),
            );
            self.last.set(now);
            self.cpu.set(cpu);
        }
    }
}

/// CPU seconds (user and system, all threads) the process has used so far, from the kernel
/// (Linux only; 0 elsewhere). Clock ticks are taken as 100 per second, as on every Linux
/// this runs on.
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces, so split after its ')'):
    // utime and stime are the 14th and 15th fields of the line, the 12th and 13th here.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// Marks the end of a phase when dropped (a phase with several ways out).
struct PhaseEnd<'a>(&'a Phases, &'static str);

impl Drop for PhaseEnd<'_> {
    fn drop(&mut self) {
        self.0.mark(self.1);
    }
}

/// UTC second of local midnight starting `day` in `tz`.
pub fn day_start(tz: &jiff::tz::TimeZone, day: Day) -> i64 {
    let (y, m, d) = day.civil();
    jiff::civil::Date::new(y as i16, m as i8, d as i8)
        .and_then(|date| date.to_zoned(tz.clone()))
        .map(|z| z.timestamp().as_second())
        .unwrap_or(i64::from(day.0) * 86_400)
}

fn run_id(at: jiff::Timestamp) -> String {
    let mut suffix = [0u8; 3];
    let _ = getrandom::fill(&mut suffix);
    // Fixed-width and time-ordered, so run records sort by name in the order they ran.
    format!(
        "{}{:06}Z-{}",
        at.strftime("%Y%m%dT%H%M%S."),
        at.subsec_microsecond(),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}
