//! A run's stages as separate commands over a work directory, so that an engine — Spark, a
//! shell with `xargs -P`, Kubernetes Indexed Jobs — runs them as tasks and gets the files
//! `logveil run` writes, byte for byte (docs/SCALING.md has the contract).
//!
//! `logveil run` is these same stages in one process (`pipeline::run_in`): the functions
//! below only move each stage's inputs and outputs through files. The stages:
//!
//! 1. `plan` (once): the pipeline, the options and the state dir's manifest become the
//!    run's [`Decisions`] (inputs in order, bucket count, run id) in `plan.json`, and a
//!    random run key (`run.key`, 0600) that seals every intermediate of the run.
//! 2. `shard` (per group of inputs): parse, pseudonymise, bucket. `shard/<task>/` holds the
//!    sealed events of every bucket and a sealed summary (counts, key epochs, clients).
//! 3. `gather` (once): the summaries added up; the input manifest and the visit log updated
//!    and read; `gather/b<b>.bin` holds what bucket `b`'s reduce needs of them.
//! 4. `reduce` (per bucket): sessions and additive partial tables; `reduce/<b>/`.
//! 5. `merge` (once): the partials summed, k or noise once, globally, then the publication
//!    exactly as `logveil run` does it. The work directory is removed when it succeeds.
//!
//! Raw log lines, addresses and user agents never leave a shard task: everything after it is
//! pseudonymous and sealed (ChaCha20-Poly1305 under keys derived from the run key, which
//! never leaves the work directory and the tasks' copies of it). Every task writes into a
//! fresh directory and renames it into place, so a task killed half-way and run again leaves
//! one complete output, and a retried task's output is the same.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::aggregate::{events, spill};
use crate::config::{KeySource, Pipeline};
use crate::day::Day;
use crate::pipeline::{
    self, Decisions, Failure, FileResult, Merger, Phases, Plan, Reduced, Reducer, RunOptions,
    RunReport, exit,
};
use crate::pseudonymise::keyring::DerivedKeys;
use crate::visitors::{self, History, Identities};

const PLAN: &str = "plan.json";
const RUN_KEY: &str = "run.key";
const EPHEMERAL_KEY: &str = "ephemeral.key";
/// The keys derived for the shard tasks (0600): never a master.
const DERIVED_KEYS: &str = "keys.derived";
const GATHER: &str = "gather.json";

/// `plan.json`: what every later stage rebuilds its [`Plan`] from.
#[derive(Debug, Serialize, Deserialize)]
struct PlanFile {
    /// The pipeline as planned: its text, where it came from, the directory its relative
    /// paths resolve against (absolute), and its default name. Tasks need no pipeline file.
    pipeline_text: String,
    pipeline_origin: String,
    pipeline_base: PathBuf,
    pipeline_name: Option<String>,
    buckets: u16,
    output: Option<PathBuf>,
    key_file: Option<PathBuf>,
    key_dir: Option<PathBuf>,
    force: bool,
    since_last: bool,
    threads: Option<usize>,
    /// The key is an ephemeral one made by `plan` (`ephemeral.key` in the work directory).
    ephemeral: bool,
    decisions: Decisions,
}

/// `gather.json`: the run's days and what the reduce and merge stages need of the summaries.
#[derive(Debug, Serialize, Deserialize)]
struct GatherFile {
    days: Option<(Day, Day)>,
    excluded: BTreeSet<u32>,
    clients_seen: usize,
    notes: Vec<String>,
    /// Each day's pseudonym epoch: all a reduce task knows of the keys.
    epochs: BTreeMap<Day, Day>,
    /// The state dir as gather left it (visit log, ledger, key ring): merge publishes only if
    /// no other run changed it in between.
    state: String,
}

/// Notes of a gather that asked for the shard stage again, for the run record.
const RESHARD_NOTES: &str = "reshard-notes.json";

/// A reduce task's `meta.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ReduceMeta {
    bucket: usize,
    visits: u64,
    /// No events and no clients of the visit log: no partials.
    empty: bool,
}

/// What `stage plan` tells the engine.
pub struct PlanInfo {
    pub run_id: String,
    pub files: Vec<PathBuf>,
    pub buckets: usize,
}

/// A staged run's work directory.
pub struct Work {
    dir: PathBuf,
}

fn io_failure(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::FAILED, format!("{what}: {e}"))
}

impl Work {
    pub fn new(dir: &Path) -> Work {
        Work {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, Failure> {
        let path = self.path(name);
        fs::read(&path).map_err(|e| {
            Failure::new(
                exit::FAILED,
                format!(
                    "cannot read {} of the work directory: {e}; did the stage before this one finish?",
                    path.display()
                ),
            )
        })
    }

    fn run_key(&self) -> Result<[u8; 32], Failure> {
        self.read(RUN_KEY)?.try_into().map_err(|_| {
            Failure::new(
                exit::FAILED,
                format!("{} is not a run key", self.path(RUN_KEY).display()),
            )
        })
    }

    /// Writes `dir` through a fresh sibling and a rename, replacing an earlier attempt's.
    fn publish_dir(
        &self,
        dir: &Path,
        fill: impl FnOnce(&Path) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let parent = dir.parent().expect("under the work dir");
        crate::state::private_dir(parent).map_err(|e| io_failure(parent.display(), e))?;
        let name = dir.file_name().expect("a name").to_string_lossy();
        let tmp = parent.join(format!(".{name}.{}", random_hex()?));
        crate::state::private_dir(&tmp).map_err(|e| io_failure(tmp.display(), e))?;
        let filled = fill(&tmp);
        if let Err(f) = filled {
            let _ = fs::remove_dir_all(&tmp);
            return Err(f);
        }
        // A retried task replaces the output of an earlier attempt whole.
        if dir.exists() {
            let old = parent.join(format!(".{name}.old.{}", random_hex()?));
            fs::rename(dir, &old).map_err(|e| io_failure(dir.display(), e))?;
            let _ = fs::remove_dir_all(&old);
        }
        fs::rename(&tmp, dir).map_err(|e| io_failure(dir.display(), e))
    }
}

fn random_hex() -> Result<String, Failure> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| io_failure("randomness", e))?;
    Ok(b.iter().map(|b| format!("{b:02x}")).collect())
}

/// Seals an intermediate: MAGIC ‖ salt ‖ ciphertext ‖ tag, under a key derived from the run
/// key and the salt, bound to `role` (what it is and whose it is).
fn seal(run_key: &[u8; 32], role: &str, mut plain: Vec<u8>) -> Result<Vec<u8>, Failure> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| io_failure("randomness", e))?;
    blob_key(run_key, &salt)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(role.as_bytes()),
            &mut plain,
        )
        .map_err(|_| io_failure(role, "sealing failed"))?;
    let mut out = Vec::with_capacity(8 + 16 + plain.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&plain);
    Ok(out)
}

fn open(run_key: &[u8; 32], role: &str, sealed: Vec<u8>) -> Result<Vec<u8>, Failure> {
    let bad = || {
        Failure::new(
            exit::FAILED,
            format!(
                "{role} of the work directory failed authentication: it belongs to another run or was changed"
            ),
        )
    };
    if sealed.len() < 24 || &sealed[..8] != MAGIC {
        return Err(bad());
    }
    let salt: [u8; 16] = sealed[8..24].try_into().expect("16 bytes");
    let mut body = sealed[24..].to_vec();
    let n = blob_key(run_key, &salt)
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(role.as_bytes()),
            &mut body,
        )
        .map_err(|_| bad())?
        .len();
    body.truncate(n);
    Ok(body)
}

const MAGIC: &[u8; 8] = b"LVSTAGE1";

fn blob_key(run_key: &[u8; 32], salt: &[u8; 16]) -> LessSafeKey {
    let mut material = [0u8; 48];
    material[..32].copy_from_slice(run_key);
    material[32..].copy_from_slice(salt);
    let key = blake3::derive_key("logveil 2026 staged intermediate v1", &material);
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte key"))
}

/// Length-prefixed parts in one buffer.
fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn split_parts(mut b: &[u8]) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::new();
    while !b.is_empty() {
        let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
        parts.push(b.get(8..8 + n)?);
        b = &b[8 + n..];
    }
    Some(parts)
}

fn corrupt(what: &str) -> Failure {
    Failure::new(
        exit::FAILED,
        format!("{what} of the work directory is corrupt; run its stage again"),
    )
}

/// `logveil stage plan`: decides the run and writes `plan.json` and `run.key` into a new
/// (or empty) work directory.
pub fn plan(
    pipeline_path: Option<&Path>,
    pipeline: &Pipeline,
    options: &RunOptions,
    work: &Path,
) -> Result<PlanInfo, Failure> {
    if work.join(PLAN).exists() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} already holds a planned run; every run needs a fresh work directory",
                work.display()
            ),
        ));
    }
    // Pseudonymous intermediates never sit with published outputs or in the state dir.
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let out = options.output.as_ref().unwrap_or(&pipeline.output);
    for (other, what) in [(out, "output"), (&pipeline.state_dir, "state dir")] {
        if !other.to_string_lossy().starts_with("s3://")
            && absolute(work).starts_with(absolute(other))
        {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "the work directory {} is inside the {what} {}; give one outside it",
                    work.display(),
                    other.display()
                ),
            ));
        }
    }
    crate::state::private_dir(work).map_err(|e| io_failure(work.display(), e))?;
    let w = Work::new(work);
    let mut options = options.clone();
    // An ephemeral key is still one key for the whole run: made here, kept in the work dir
    // (0600), gone with it.
    let source = match (&options.key_file, &options.key_dir) {
        (Some(p), _) => KeySource::File(p.clone()),
        (None, Some(d)) => KeySource::Ring(d.clone()),
        (None, None) => pipeline.key.clone(),
    };
    let ephemeral = source == KeySource::Ephemeral && pipeline.returning.is_none();
    if ephemeral {
        let path = std::path::absolute(w.path(EPHEMERAL_KEY)).unwrap_or(w.path(EPHEMERAL_KEY));
        crate::pseudonymise::keys::MasterKey::write_new(&path)
            .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
        options.key_file = Some(path);
    }
    // The manifest is read under the state dir's lock, as a run reads it.
    let state_lock = pipeline::lock_state(pipeline)?;
    let decisions = pipeline::decide(pipeline, &options)?;
    drop(state_lock);
    if decisions
        .files
        .iter()
        .any(|f| f.as_os_str() == crate::ingest::reader::STDIN)
    {
        return Err(Failure::new(
            exit::USAGE,
            "a staged run reads files or objects that every task can open, not standard input",
        ));
    }
    // Keys, costs and settings are checked now, not by the first task that needs them.
    let plan = Plan::new(pipeline, &options, decisions.clone(), true)?;
    let info = PlanInfo {
        run_id: decisions.run_id.clone(),
        files: decisions.files.clone(),
        buckets: decisions.buckets,
    };
    let derived = plan.derive_keys(plan.likely_days());
    write_private(&w.path(DERIVED_KEYS), derived.to_text().as_bytes())?;
    drop(plan);
    // Local paths become absolute (tasks run elsewhere); store URLs stay as they are.
    let absolute = |p: &Option<PathBuf>| {
        p.as_ref().map(|p| {
            if p.to_string_lossy().starts_with("s3://") {
                p.clone()
            } else {
                std::path::absolute(p).unwrap_or_else(|_| p.clone())
            }
        })
    };
    let (pipeline_text, pipeline_base, pipeline_name) = match pipeline_path {
        Some(p) => (
            fs::read_to_string(p).map_err(|e| io_failure(p.display(), e))?,
            p.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            p.file_stem().map(|s| s.to_string_lossy().into_owned()),
        ),
        None => (
            crate::config::DEMO_PIPELINE.to_string(),
            PathBuf::from("pipelines"),
            Some("demo".to_string()),
        ),
    };
    if blake3::hash(pipeline_text.as_bytes()).to_hex().as_str() != pipeline.hash {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "the pipeline {} changed while it was planned",
                pipeline.origin
            ),
        ));
    }
    let file = PlanFile {
        pipeline_text,
        pipeline_origin: pipeline.origin.clone(),
        pipeline_base: std::path::absolute(&pipeline_base).unwrap_or(pipeline_base),
        pipeline_name,
        buckets: pipeline.buckets,
        output: absolute(&options.output),
        key_file: absolute(&options.key_file),
        key_dir: absolute(&options.key_dir),
        force: options.force,
        since_last: options.since_last,
        threads: options.threads,
        ephemeral,
        decisions,
    };
    let mut run_key = [0u8; 32];
    getrandom::fill(&mut run_key).map_err(|e| io_failure("randomness", e))?;
    write_private(&w.path(RUN_KEY), &run_key)?;
    let json = serde_json::to_vec_pretty(&file).expect("a plan serialises");
    write_private(&w.path(PLAN), &json)?;
    Ok(info)
}

/// Writes a 0600 file through a fresh sibling and a rename: a reader never sees half of it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}", random_hex()?));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(io_failure(path.display(), e));
    }
    Ok(())
}

/// A stage's view of the planned run: the pipeline as planned and the options.
pub struct Planned {
    pub pipeline: Pipeline,
    pub options: RunOptions,
    ephemeral: bool,
    decisions: Decisions,
    run_key: [u8; 32],
    work: Work,
}

impl Planned {
    pub fn load(work: &Path) -> Result<Planned, Failure> {
        let w = Work::new(work);
        let file: PlanFile =
            serde_json::from_slice(&w.read(PLAN)?).map_err(|_| corrupt("plan.json"))?;
        let mut pipeline = Pipeline::parse(
            &file.pipeline_text,
            &file.pipeline_origin,
            &file.pipeline_base,
            file.pipeline_name.clone(),
        )
        .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
        pipeline.buckets = file.buckets;
        let options = RunOptions {
            inputs: file.decisions.files.clone(),
            output: file.output,
            key_file: file.key_file,
            key_dir: file.key_dir,
            date: None,
            threads: file.threads,
            progress: None,
            force: file.force,
            since_last: file.since_last,
        };
        Ok(Planned {
            pipeline,
            options,
            ephemeral: file.ephemeral,
            decisions: file.decisions,
            run_key: w.run_key()?,
            work: w,
        })
    }

    /// The plan; `with_costs` for the merge, the only stage that reads the ad-spend file.
    fn plan(&self, with_costs: bool) -> Result<Plan<'_>, Failure> {
        let mut plan = Plan::new(
            &self.pipeline,
            &self.options,
            self.decisions.clone(),
            with_costs,
        )?;
        if self.ephemeral {
            plan.set_key_mode("ephemeral");
        }
        Ok(plan)
    }

    /// Object-store inputs are listed again in this process: their sizes and versions (for
    /// the run record and the manifest) come from the listing.
    fn list_objects(&self) -> Result<(), Failure> {
        let objects: Vec<PathBuf> = self
            .decisions
            .files
            .iter()
            .filter(|f| f.to_string_lossy().starts_with("s3://"))
            .cloned()
            .collect();
        if !objects.is_empty() {
            crate::store::configure(self.pipeline.s3.clone());
            crate::ingest::reader::expand_inputs(&objects)
                .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
        }
        Ok(())
    }

    /// A shard task's keys: derived for the run's days, never a master.
    fn derived_keys(&self) -> Result<DerivedKeys, Failure> {
        let text =
            String::from_utf8(self.work.read(DERIVED_KEYS)?).map_err(|_| corrupt(DERIVED_KEYS))?;
        let text = zeroize::Zeroizing::new(text);
        DerivedKeys::from_text(&text).ok_or_else(|| corrupt(DERIVED_KEYS))
    }

    /// Each finished shard task's name and directory, by name.
    fn shard_dirs(&self) -> Result<Vec<(String, PathBuf)>, Failure> {
        let root = self.work.path("shard");
        let mut dirs = Vec::new();
        if let Ok(entries) = fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    dirs.push((name, entry.path()));
                }
            }
        }
        dirs.sort();
        Ok(dirs)
    }

    /// Every shard task's summary, checked to cover each planned input exactly once.
    /// `with_clients`: also add up the clients seen (gather needs them, merge does not).
    fn summaries(&self, with_clients: bool) -> Result<Summaries, Failure> {
        let mut spilled: Vec<(String, String, u64)> = Vec::new();
        let mut generations = BTreeSet::new();
        let mut results: BTreeMap<u32, FileResult> = BTreeMap::new();
        let mut epoch_ids = BTreeMap::new();
        let mut identities = Identities::default();
        for (task, dir) in self.shard_dirs()? {
            let role = format!("shard {task} summary");
            let sealed = fs::read(dir.join("summary.bin")).map_err(|e| {
                io_failure(
                    format!("shard task {task} did not finish ({})", dir.display()),
                    e,
                )
            })?;
            let plain = open(&self.run_key, &role, sealed)?;
            let parts = split_parts(&plain).ok_or_else(|| corrupt(&role))?;
            let [json, ids] = parts[..] else {
                return Err(corrupt(&role));
            };
            let (rs, epochs, files, generation): ShardSummary =
                serde_json::from_slice(json).map_err(|_| corrupt(&role))?;
            generations.insert(generation);
            spilled.extend(
                files
                    .into_iter()
                    .map(|(name, size)| (task.clone(), name, size)),
            );
            for r in rs {
                let index = r.index();
                if results.insert(index, r).is_some() {
                    return Err(Failure::new(
                        exit::FAILED,
                        format!(
                            "input {} was sharded by two tasks; give each input to one task",
                            self.decisions.files[index as usize].display()
                        ),
                    ));
                }
            }
            epoch_ids.extend(epochs);
            if with_clients {
                identities.absorb(Identities::from_bytes(ids).ok_or_else(|| corrupt(&role))?);
            }
        }
        for (i, f) in self.decisions.files.iter().enumerate() {
            if !results.contains_key(&(i as u32)) {
                return Err(Failure::new(
                    exit::FAILED,
                    format!(
                        "input {} (number {i}) was not sharded: every planned input must go to one shard task",
                        f.display()
                    ),
                ));
            }
        }
        Ok(Summaries {
            results: results.into_values().collect(),
            epoch_ids,
            identities,
            spilled,
            generations,
        })
    }

    fn gathered(&self) -> Result<GatherFile, Failure> {
        serde_json::from_slice(&self.work.read(GATHER)?).map_err(|_| corrupt(GATHER))
    }
}

/// A shard task's summary: per input, its counts; the key epochs used; its bucket files
/// (name, size), so a reduce task knows it has every one of them, whole.
/// And the generation of the derived keys it used.
type ShardSummary = (
    Vec<FileResult>,
    BTreeMap<Day, String>,
    Vec<(String, u64)>,
    u32,
);

/// Every shard task's summary, added up.
struct Summaries {
    results: Vec<FileResult>,
    epoch_ids: BTreeMap<Day, String>,
    identities: Identities,
    /// (task, file name, size) of every bucket file.
    spilled: Vec<(String, String, u64)>,
    /// The generations of the derived keys the tasks used.
    generations: BTreeSet<u32>,
}

/// A fingerprint of the state a run reads and rewrites (visit log, ledger, a key ring kept in
/// the state dir): names, sizes and modification times.
fn state_fingerprint(state_dir: &Path) -> String {
    let mut h = blake3::Hasher::new();
    let mut stack: Vec<PathBuf> = ["visitors", "ledger.json", "keys"]
        .iter()
        .map(|n| state_dir.join(n))
        .collect();
    let mut seen = Vec::new();
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
            continue;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        seen.push((p.display().to_string(), meta.len(), modified));
    }
    seen.sort();
    for (p, len, modified) in seen {
        h.update(format!("{p}\0{len}\0{modified}\n").as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Parses `0,3,5-7` into input numbers.
pub fn parse_indices(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?} is not an input number or a range like 3-7");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// `logveil stage shard`: parses and pseudonymises the inputs `indices` (numbers of the
/// plan's inputs) into `shard/<task>/`.
pub fn shard(work: &Path, task: &str, indices: &[u32]) -> Result<(), Failure> {
    if task.is_empty()
        || !task
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Failure::new(
            exit::USAGE,
            "--task names a directory: letters, digits, - and _ only",
        ));
    }
    let planned = Planned::load(work)?;
    let n = planned.decisions.files.len() as u32;
    if let Some(bad) = indices.iter().find(|i| **i >= n) {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "input number {bad} is not planned: the plan has {n} input(s), 0 to {}",
                n.saturating_sub(1)
            ),
        ));
    }
    planned.list_objects()?;
    let keys = planned.derived_keys()?;
    let generation = keys.generation();
    let plan = Plan::with_derived_keys(
        &planned.pipeline,
        &planned.options,
        planned.decisions.clone(),
        keys,
    )?;
    let dir = planned.work.path("shard").join(task);
    planned.work.publish_dir(&dir, |tmp| {
        let out = pipeline::shard(&plan, indices, &plan.keys, tmp, &planned.run_key, None)?;
        let mut files = Vec::new();
        for entry in fs::read_dir(tmp).map_err(|e| io_failure(tmp.display(), e))? {
            let entry = entry.map_err(|e| io_failure(tmp.display(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().map_err(|e| io_failure(&name, e))?.len();
            files.push((name, size));
        }
        files.sort();
        let json = serde_json::to_vec(&(&out.results, &out.epoch_ids, &files, generation))
            .expect("serialises");
        let ids = out.identities.to_bytes();
        let sealed = seal(
            &planned.run_key,
            &format!("shard {task} summary"),
            join_parts(&[&json, &ids]),
        )?;
        write_private(&tmp.join("summary.bin"), &sealed)
    })
}

/// What `gather` says.
pub enum Gathered {
    /// The days to compute (`None`: no pageview; reduce has nothing to do).
    Days(Option<(Day, Day)>),
    /// A managed key ring gained masters: run the shard stage again, then gather.
    Reshard(Vec<String>),
}

/// `logveil stage gather`: adds up the shard tasks' summaries, updates the input manifest,
/// reads the visit log, and writes what each bucket's reduce needs.
pub fn gather(work: &Path) -> Result<Gathered, Failure> {
    let planned = Planned::load(work)?;
    let _lock = pipeline::lock_state(&planned.pipeline)?;
    let mut plan = planned.plan(false)?;
    planned.list_objects()?;
    let Summaries {
        results,
        epoch_ids,
        identities,
        spilled,
        generations,
    } = planned.summaries(true)?;
    let derived_now = planned.derived_keys()?;
    let current = derived_now.generation();
    let reshard = |notes: Vec<String>| -> Result<Gathered, Failure> {
        write_private(
            &planned.work.path(RESHARD_NOTES),
            &serde_json::to_vec(&notes).expect("serialises"),
        )?;
        let _ = fs::remove_dir_all(planned.work.path("shard"));
        Ok(Gathered::Reshard(notes))
    };
    if generations.iter().any(|g| *g != current) {
        // Outputs of shard tasks that ran before the keys were last derived (a gather killed
        // before it removed them, or tasks run too early): the shard stage runs again.
        let mut notes: Vec<String> = fs::read(planned.work.path(RESHARD_NOTES))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        notes.push(
            "shard outputs from before the keys were last derived were dropped; the shard stage runs again".into(),
        );
        return reshard(notes);
    }
    let missing: BTreeSet<Day> = results
        .iter()
        .flat_map(|r| r.missing_key().iter().copied())
        .collect();
    if !missing.is_empty() {
        // Days outside the keys derived so far: derive theirs (a managed ring first gains
        // the masters it lacks; any other source without a master fails as a run does), and
        // the shard stage runs again. Once only: the same inputs reach the same days.
        let again = current > 0;
        let mut notes = Vec::new();
        let uncovered = plan.uncovered(&missing);
        plan.add_missing_masters(&uncovered, again, &mut notes)?;
        if again {
            return Err(Failure::new(
                exit::FAILED,
                "the shard stage still reports days without keys after running again; plan the run again",
            ));
        }
        let mut days: BTreeSet<Day> = derived_now.days().collect();
        days.extend(missing.iter().copied());
        // The new keys first: killed after this, the next gather finds the shard outputs
        // stale and asks for the shard stage again.
        let derived = plan.derive_keys(days).with_generation(current + 1);
        write_private(
            &planned.work.path(DERIVED_KEYS),
            derived.to_text().as_bytes(),
        )?;
        notes.push(format!(
            "keys derived for {} more day(s) the inputs reach ({} to {}); the shard stage runs again",
            missing.len(),
            missing.first().expect("not empty"),
            missing.last().expect("not empty"),
        ));
        return reshard(notes);
    }
    let mut notes: Vec<String> = fs::read(planned.work.path(RESHARD_NOTES))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    pipeline::update_manifest(&plan, &results, &mut notes);
    let buckets = planned.decisions.buckets;
    let summary = pipeline::summarize(&plan, &results, &epoch_ids, buckets, Vec::new())?;
    let mut file = GatherFile {
        days: summary.days,
        excluded: summary.excluded.iter().copied().collect(),
        clients_seen: identities.len(),
        notes,
        epochs: summary.days.map(|d| plan.epochs_of(d)).unwrap_or_default(),
        state: String::new(),
    };
    let dir = planned.work.path("gather");
    if let Some(days) = summary.days {
        // Each bucket's history as the parts the load hands on, one after another (a reduce
        // task reads them back as one history).
        let mut histories = vec![Vec::new(); buckets];
        pipeline::load_histories(
            &plan,
            days,
            &identities,
            buckets,
            &mut file.notes,
            &mut |b, part| {
                histories[b].extend(part.into_bytes());
                Ok(())
            },
        )?;
        planned.work.publish_dir(&dir, |tmp| {
            for (b, history) in histories.iter().enumerate() {
                let ids = identities.of_bucket(b, buckets).to_bytes();
                let suffix = format!("-b{b}.bin");
                let files: Vec<&(String, String, u64)> = spilled
                    .iter()
                    .filter(|(_, n, _)| n.ends_with(&suffix))
                    .collect();
                let files = serde_json::to_vec(&files).expect("serialises");
                let role = format!("bucket {b} context");
                let sealed = seal(
                    &planned.run_key,
                    &role,
                    join_parts(&[&ids, history, &files]),
                )?;
                write_private(&tmp.join(format!("b{b}.bin")), &sealed)?;
            }
            Ok(())
        })?;
    }
    file.state = state_fingerprint(&planned.pipeline.state_dir);
    let json = serde_json::to_vec_pretty(&file).expect("serialises");
    write_private(&planned.work.path(GATHER), &json)?;
    Ok(Gathered::Days(summary.days))
}

/// `logveil stage reduce`: bucket `b`'s sessions and partial tables into `reduce/<b>/`.
pub fn reduce(work: &Path, b: usize) -> Result<(), Failure> {
    let planned = Planned::load(work)?;
    let buckets = planned.decisions.buckets;
    if b >= buckets {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "bucket {b} is not planned: the plan has {buckets} bucket(s), 0 to {}",
                buckets - 1
            ),
        ));
    }
    let gathered = planned.gathered()?;
    // A reduce task holds no key at all: only each day's pseudonym epoch.
    let plan = Plan::with_derived_keys(
        &planned.pipeline,
        &planned.options,
        planned.decisions.clone(),
        DerivedKeys::epochs_only(gathered.epochs.clone()),
    )?;
    let dir = planned.work.path("reduce").join(b.to_string());
    let Some(days) = gathered.days else {
        return planned
            .work
            .publish_dir(&dir, |tmp| write_meta(tmp, b, 0, true));
    };
    let role = format!("bucket {b} context");
    let context = open(
        &planned.run_key,
        &role,
        planned.work.read(&format!("gather/b{b}.bin"))?,
    )?;
    let parts = split_parts(&context).ok_or_else(|| corrupt(&role))?;
    let [ids, history, files] = parts[..] else {
        return Err(corrupt(&role));
    };
    let identities = Identities::from_bytes(ids).ok_or_else(|| corrupt(&role))?;
    let history = History::from_bytes(history).ok_or_else(|| corrupt(&role))?;
    // Every bucket file the shard tasks wrote, whole, and no other.
    let expected: BTreeSet<(String, String, u64)> = serde_json::from_slice::<Vec<_>>(files)
        .map_err(|_| corrupt(&role))?
        .into_iter()
        .collect();
    let suffix = format!("-b{b}.bin");
    let mut found = BTreeSet::new();
    for (task, dir) in planned.shard_dirs()? {
        for entry in fs::read_dir(&dir)
            .map_err(|e| io_failure(dir.display(), e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("w-") && name.ends_with(&suffix) {
                let size = entry.metadata().map_err(|e| io_failure(&name, e))?.len();
                found.insert((task.clone(), name, size));
            }
        }
    }
    if found != expected {
        let missing = expected.difference(&found).count();
        let unexpected = found.difference(&expected).count();
        return Err(Failure::new(
            exit::FAILED,
            format!(
                "bucket {b}: {missing} of the shard tasks' files are missing or cut short and {unexpected} are not theirs; run the shard stage again"
            ),
        ));
    }
    let excluded = gathered.excluded.iter().copied().collect();
    let dirs: Vec<PathBuf> = planned.shard_dirs()?.into_iter().map(|(_, d)| d).collect();
    let events = spill::read_bucket(&dirs, &planned.run_key, b, &excluded)
        .map_err(|e| io_failure(format!("cannot read the shard tasks' bucket {b}"), e))?;
    let reducer = Reducer::new(&plan, days);
    let output = reducer.reduce(b, events, &history, &identities)?;
    planned.work.publish_dir(&dir, |tmp| {
        let Some(output) = output else {
            return write_meta(tmp, b, 0, true);
        };
        let mut partials = Vec::new();
        for p in output.partials {
            partials.push(spill::frame_bytes(&p).map_err(|e| io_failure("a partial", e))?);
        }
        let refs: Vec<&[u8]> = partials.iter().map(Vec::as_slice).collect();
        let sealed = seal(
            &planned.run_key,
            &format!("bucket {b} partials"),
            join_parts(&refs),
        )?;
        write_private(&tmp.join("partials.bin"), &sealed)?;
        let mut any_frame = false;
        for (t, frame) in output.frames.into_iter().enumerate() {
            if let Some(frame) = frame {
                let bytes =
                    spill::frame_bytes(&frame).map_err(|e| io_failure("a row-visitor frame", e))?;
                let sealed = seal(&planned.run_key, &format!("bucket {b} frame {t}"), bytes)?;
                write_private(&tmp.join(format!("f{t}.bin")), &sealed)?;
                any_frame = true;
            }
        }
        if any_frame {
            let bytes = spill::frame_bytes(&output.strings.to_frame())
                .map_err(|e| io_failure("a bucket's texts", e))?;
            let sealed = seal(&planned.run_key, &format!("bucket {b} texts"), bytes)?;
            write_private(&tmp.join("texts.bin"), &sealed)?;
        }
        for (day, visits) in visitors::by_day(&output.records) {
            let sealed = seal(
                &planned.run_key,
                &format!("bucket {b} visits {day}"),
                visits,
            )?;
            write_private(&tmp.join(format!("visits-{day}.bin")), &sealed)?;
        }
        write_meta(tmp, b, output.visits, false)
    })
}

fn write_meta(dir: &Path, bucket: usize, visits: u64, empty: bool) -> Result<(), Failure> {
    let meta = ReduceMeta {
        bucket,
        visits,
        empty,
    };
    write_private(
        &dir.join("meta.json"),
        &serde_json::to_vec(&meta).expect("serialises"),
    )
}

/// `logveil stage merge`: sums the partials, applies the privacy rules once and publishes,
/// as `logveil run` does; then removes the work directory.
pub fn merge(work: &Path) -> Result<RunReport, Failure> {
    let planned = Planned::load(work)?;
    let report = pipeline::publish_with(&planned.pipeline, &planned.options, |out| {
        merge_into(&planned, out)
    })?;
    let _ = fs::remove_dir_all(work);
    Ok(report)
}

fn merge_into(planned: &Planned, out: PathBuf) -> Result<RunReport, Failure> {
    let gathered = planned.gathered()?;
    if state_fingerprint(&planned.pipeline.state_dir) != gathered.state {
        return Err(Failure::new(
            exit::LOCKED,
            format!(
                "another run changed the state dir {} after this run's gather (its visit log, ledger or keys); nothing was published: run the job again",
                planned.pipeline.state_dir.display()
            ),
        ));
    }
    let (_lock, notes) = pipeline::open_output(&planned.pipeline, &out)?;
    let plan = planned.plan(true)?;
    let phase = Phases::start();
    // The inputs' sizes and versions are in the summaries already: no listing, and the clients
    // seen (gather counted them) are not decoded again.
    let Summaries {
        results, epoch_ids, ..
    } = planned.summaries(false)?;
    let buckets = planned.decisions.buckets;
    let mut notes = notes;
    notes.extend(gathered.notes.iter().cloned());
    let summary = pipeline::summarize(&plan, &results, &epoch_ids, buckets, notes)?;
    let Some(days) = summary.days else {
        return pipeline::publish_nothing(summary, out);
    };
    let mut merger = Merger::new(plan.tables());
    let mut visits = 0u64;
    let reduce_dir = |b: usize| planned.work.path("reduce").join(b.to_string());
    for b in 0..buckets {
        let meta: ReduceMeta =
            serde_json::from_slice(&planned.work.read(&format!("reduce/{b}/meta.json"))?)
                .map_err(|_| corrupt("a reduce task's meta.json"))?;
        if meta.bucket != b {
            return Err(corrupt("a reduce task's meta.json"));
        }
        if meta.empty {
            continue;
        }
        visits += meta.visits;
        let role = format!("bucket {b} partials");
        let plain = open(
            &planned.run_key,
            &role,
            planned.work.read(&format!("reduce/{b}/partials.bin"))?,
        )?;
        let mut partials = Vec::new();
        for part in split_parts(&plain).ok_or_else(|| corrupt(&role))? {
            partials.push(spill::frame_of(part).map_err(|_| corrupt(&role))?);
        }
        merger.add(partials)?;
    }
    let totals = merger.finish()?;
    phase.mark("merge (partials read and summed)");
    let reduced = Reduced {
        days,
        totals,
        visits,
        clients_seen: gathered.clients_seen,
        buckets,
        notes: Vec::new(),
    };
    let read_plain = |b: usize, file: &str, role: &str| -> std::io::Result<Option<Vec<u8>>> {
        let sealed = match fs::read(reduce_dir(b).join(file)) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        open(&planned.run_key, role, sealed)
            .map(Some)
            .map_err(|f| std::io::Error::other(f.message))
    };
    let read_sealed = |b: usize, file: &str, role: &str| -> std::io::Result<Option<_>> {
        read_plain(b, file, role)?
            .map(|plain| spill::frame_of(&plain))
            .transpose()
    };
    let read_frame = |b: usize, tables: &[u64]| {
        let frames = tables
            .iter()
            .map(|t| read_sealed(b, &format!("f{t}.bin"), &format!("bucket {b} frame {t}")))
            .collect::<std::io::Result<Vec<_>>>()?;
        events::RowVisitorFrames::new(frames, || {
            read_sealed(b, "texts.bin", &format!("bucket {b} texts"))
        })
    };
    // A bucket's visits of a day: its file, or none (an empty bucket, a day without visits).
    let read_visits = |b: usize, day: Day, out: &mut Vec<u8>| {
        let file = format!("visits-{day}.bin");
        if let Some(plain) = read_plain(b, &file, &format!("bucket {b} visits {day}"))? {
            out.extend_from_slice(&plain);
        }
        Ok(())
    };
    let sources = pipeline::Sources {
        frame: &read_frame,
        visits: &read_visits,
        done: &|| {},
    };
    pipeline::finish(&plan, summary, reduced, &sources, out, &phase)
}
