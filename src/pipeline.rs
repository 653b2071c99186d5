//! Orchestration only: ingest → pseudonymise → aggregate → disclose → output.
//!
//! `logveil run` is the three stages the Spark job runs as tasks (shard: parse and
//! pseudonymise; reduce: sessions and additive partial tables; merge: sums, then the privacy
//! rules once), here in one process with one partial.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::PathBuf;

use crate::aggregate::{self, TABLES, TableName, events::EventColumns};
use crate::config::{KeySource, Pipeline};
use crate::day::Day;
use crate::disclose;
use crate::ingest::{self, Reject, reader, reader::Line};
use crate::ledger::{self, Ledger};
use crate::output;
use crate::pseudonymise::keyring::{KeyRing, KeySet};
use crate::pseudonymise::{self, FilterRule, Outcome, Pseudonymiser, keys::MasterKey};
use crate::record::{self, DateInfo, InputInfo, RunRecord};

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
    /// Replace a complete published day with a partial one.
    pub force: bool,
}

/// What a run did.
pub struct RunReport {
    pub record: RunRecord,
    pub record_path: PathBuf,
    pub output: PathBuf,
}

/// Line numbers kept per file and reason in the run record.
const MAX_LINE_NUMBERS: usize = 100;

pub fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<RunReport, Failure> {
    let started_at = jiff::Timestamp::now();
    let out = options
        .output
        .clone()
        .unwrap_or_else(|| pipeline.output.clone());
    fs::create_dir_all(&out).map_err(|e| {
        Failure::new(
            exit::FAILED,
            format!("cannot create output directory {}: {e}", out.display()),
        )
    })?;
    let _lock = output::lock(&out).map_err(|e| match e {
        output::OutputError::Locked(_) => Failure::new(exit::LOCKED, e.to_string()),
        _ => failed(e),
    })?;
    let mut notes = output::recover(&out).map_err(failed)?;

    let usage = |e: pseudonymise::keys::KeyError| Failure::new(exit::USAGE, e.to_string());
    let source = match (&options.key_file, &options.key_dir) {
        (Some(path), _) => KeySource::File(path.clone()),
        (None, Some(dir)) => KeySource::Ring(dir.clone()),
        (None, None) => pipeline.key.clone(),
    };
    let (keys, key_mode) = match &source {
        KeySource::File(path) => (
            KeySet::Single(MasterKey::read(path).map_err(usage)?),
            "key_file",
        ),
        KeySource::Ring(dir) => (KeySet::Ring(KeyRing::open(dir).map_err(usage)?), "key_ring"),
        KeySource::Ephemeral => (
            KeySet::Single(MasterKey::generate().map_err(failed)?),
            "ephemeral",
        ),
    };

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
    let files =
        reader::expand_inputs(&patterns).map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;

    let mut ps = Pseudonymiser::new(
        keys,
        pseudonymise::Settings {
            time_zone: tz.clone(),
            filters: pipeline.filters.clone(),
            path_rules: pipeline.path_rules.clone(),
            host_lists: pipeline.host_lists.clone(),
            site_hosts: pipeline.site_hosts.clone(),
            check_vhost: matches!(
                pipeline.format,
                ingest::Format::VhostCombined | ingest::Format::VhostCommon
            ),
            link_window_s: reach,
            window,
        },
    );

    let mut record = RunRecord {
        logveil_version: env!("CARGO_PKG_VERSION").to_string(),
        run_id: run_id(started_at),
        started_at: started_at.to_string(),
        key_mode: key_mode.to_string(),
        pipeline: record::PipelineInfo {
            name: pipeline.name.clone(),
            origin: pipeline.origin.clone(),
            blake3: pipeline.hash.clone(),
            site: pipeline.site.clone(),
            time_zone: pipeline.time_zone_name.clone(),
            k: pipeline.k,
            session_timeout_s: pipeline.session_timeout_s,
            max_visit_s: pipeline.max_visit_s,
        },
        ..RunRecord::default()
    };

    // Ingest and pseudonymise, file by file. A file's lines count only once its whole content
    // has been read: an identical earlier file makes it a duplicate, a read error fails the run.
    let mut events = EventColumns::default();
    let mut seen_content: HashMap<blake3::Hash, String> = HashMap::new();
    let mut filtered: BTreeMap<FilterRule, u64> = BTreeMap::new();
    let mut rejected: BTreeMap<Reject, record::RejectInfo> = BTreeMap::new();
    let mut coverage: Option<(i64, i64)> = None;
    let mut seq = 0u64;
    for path in &files {
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
        let size = fs::metadata(path).map_err(|e| unreadable(e, None))?.len();
        let mut lines = reader::LineReader::open(path).map_err(|e| unreadable(e, None))?;
        let mut batch = EventColumns::default();
        let mut file_filtered: BTreeMap<FilterRule, u64> = BTreeMap::new();
        let mut file_rejected: BTreeMap<Reject, (u64, Vec<u64>)> = BTreeMap::new();
        let mut file_coverage: Option<(i64, i64)> = None;
        let (mut read, mut parsed) = (0u64, 0u64);
        let mut last_line = 0;
        loop {
            let next = lines
                .next_line()
                .map_err(|e| unreadable(e, Some(last_line)))?;
            let Some((line_no, line)) = next else { break };
            last_line = line_no;
            read += 1;
            let result = match line {
                Line::TooLong => Err(Reject::LineTooLong),
                Line::Text(text) => ingest::parse_line(pipeline.format, text).map(|rec| {
                    file_coverage = Some(match file_coverage {
                        None => (rec.ts, rec.ts),
                        Some((a, b)) => (a.min(rec.ts), b.max(rec.ts)),
                    });
                    ps.process(&rec)
                }),
            };
            match result {
                Err(reason) => {
                    let entry = file_rejected.entry(reason).or_default();
                    entry.0 += 1;
                    if entry.1.len() < MAX_LINE_NUMBERS {
                        entry.1.push(line_no);
                    }
                }
                Ok(outcome) => {
                    parsed += 1;
                    match outcome {
                        Outcome::Pageview(event) => {
                            batch.push(seq, *event);
                            seq += 1;
                        }
                        Outcome::Filtered(rule) => *file_filtered.entry(rule).or_default() += 1,
                        Outcome::MissingKey(day) => {
                            let ring = match &source {
                                KeySource::Ring(dir) => dir.display().to_string(),
                                _ => String::new(),
                            };
                            return Err(Failure::new(
                                exit::USAGE,
                                format!(
                                    "no master key in the key ring {ring} covers {day} (found at {shown} line {line_no}); add one with `logveil key rotate --key-dir {ring} --from DATE` or leave that day out with --date. Nothing was published"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        let (digest, decompressed) = lines.content_digest();
        let duplicate_of = seen_content.get(&digest).cloned();
        record.inputs.push(InputInfo {
            path: shown.clone(),
            size_bytes: size,
            decompressed_bytes: decompressed,
            gzip: lines.compressed,
            lines: read,
            duplicate_of: duplicate_of.clone(),
        });
        if let Some(first) = duplicate_of {
            notes.push(format!(
                "{shown} has the same content as {first}; its lines were counted once"
            ));
            continue;
        }
        seen_content.insert(digest, shown.clone());
        record.lines.read += read;
        record.lines.parsed += parsed;
        for (rule, n) in file_filtered {
            *filtered.entry(rule).or_default() += n;
        }
        for (reason, (n, line_numbers)) in file_rejected {
            record.lines.rejected += n;
            let info = rejected.entry(reason).or_default();
            info.count += n;
            info.lines.insert(shown.clone(), line_numbers);
        }
        if let Some((a, b)) = file_coverage {
            coverage = Some(coverage.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
        events.append(batch);
    }
    record.lines.rejected_by_reason = rejected
        .into_iter()
        .map(|(r, i)| (r.name().to_string(), i))
        .collect();
    record.filtered = filtered
        .iter()
        .map(|(r, n)| (r.name().to_string(), *n))
        .collect();
    record.pageviews = events.len() as u64;
    record.key_epochs = ps
        .epoch_ids()
        .into_iter()
        .map(|(d, id)| (d.to_string(), id))
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

    let days = match target {
        Some(d) => Some((d, d)),
        None if events.is_empty() => None,
        None => events.day_range(),
    };
    let Some(days) = days else {
        notes.push("no pageviews in the inputs: nothing was published".into());
        record.notes = notes;
        record.finished_at = jiff::Timestamp::now().to_string();
        let record_path = output::write_record_only(&out, &record).map_err(failed)?;
        return Ok(RunReport {
            record,
            record_path,
            output: out,
        });
    };

    // Aggregate and merge (one partial in a single-process run), then disclose.
    let polars_err = |what: &str| {
        let what = what.to_string();
        move |e: polars::prelude::PolarsError| {
            Failure::new(exit::FAILED, format!("aggregation {what} failed: {e}"))
        }
    };
    let frame = events.into_frame().map_err(polars_err("event frame"))?;
    let mut sessions = aggregate::sessionise(
        frame,
        pipeline.session_timeout_s,
        pipeline.max_visit_s,
        days,
    )
    .map_err(polars_err("sessions"))?;
    if let Some(dp) = &pipeline.dp {
        sessions = aggregate::bound_contributions(sessions, &dp.bounds)
            .map_err(polars_err("contribution bounds"))?;
    }
    record.visits = sessions.visits.height() as u64;
    if record.visits == 0 {
        notes.push(format!(
            "no visit starts between {} and {} in these inputs: the published tables are empty",
            days.0, days.1
        ));
    }
    let mut merged = Vec::new();
    for table in TABLES {
        let partial =
            aggregate::partial_table(&sessions, table).map_err(polars_err(table.as_str()))?;
        let total = aggregate::merge(table, vec![partial]).map_err(polars_err(table.as_str()))?;
        merged.push((
            table,
            aggregate::rows(table, &total).map_err(polars_err(table.as_str()))?,
        ));
    }
    let true_rows = merged.clone();
    let (release, counts) = match &pipeline.dp {
        None => disclose::disclose(merged, pipeline.k, days, |table: TableName, keys| {
            let folded = aggregate::keys_frame(table, keys)?;
            let other = aggregate::other_rows(&sessions, table, folded)?;
            Ok(aggregate::day_measures(table, &other)?)
        })
        .map_err(|e| Failure::new(exit::FAILED, format!("disclosure failed: {e}")))?,
        Some(dp) => {
            let keys = ps.keys();
            let release_key = |day: Day| keys.master_for(day).map(|m| *m.release_key(day));
            let (release, counts, tables) =
                disclose::disclose_dp(merged, dp, pipeline.k, days, &release_key)
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
    for day in (days.0.0..=days.1.0).map(Day) {
        let partial = coverage.is_none_or(|(from, to)| {
            from > day_start(tz, day) - reach || to < day_start(tz, day.next()) + reach
        });
        let name = day.to_string();
        let keep_old = partial && published.get(&name) == Some(&false) && !options.force;
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
    // Stage, audit the staged files independently, and only then publish.
    let staging = output::stage(&out, &release, &to_publish, &mut record).map_err(failed)?;
    let audit = crate::audit::audit_staged(&staging, &record).map_err(failed)?;
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
                let Some(master) = ps.keys().master_for(*day) else {
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
    let record_path = output::commit(&out, &record).map_err(failed)?;
    Ok(RunReport {
        record,
        record_path,
        output: out,
    })
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
