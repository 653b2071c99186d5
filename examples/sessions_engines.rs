//! Sessions on one machine: partitioning the pseudonymous events by client (what logveil
//! does) against one query over all of them, on Polars' in-memory and streaming engines.
//! Run by `benches/sessions.sh`, which reports time and peak memory per mode; the findings
//! are in docs/PERFORMANCE.md.
//!
//!   sessions_engines prepare LOG EVENTS.parquet     parse + pseudonymise a combined log (an
//!                                                   ephemeral key) and write its events
//!   sessions_engines in-memory EVENTS.parquet       one query, in-memory engine
//!   sessions_engines streaming EVENTS.parquet       one query, streaming engine (scan → sink)
//!   sessions_engines partitioned EVENTS.parquet N   N partitions by client, one at a time
//!
//! Each mode prints the visits it found, so the modes can be checked against each other. The
//! events file is pseudonymous (the script deletes it); it is a benchmark input, not an
//! output of logveil.

use std::io::BufRead;
use std::time::Instant;

use logveil::aggregate::{events::EventColumns, visit_plan};
use logveil::ingest::{Format, parse_line};
use logveil::pseudonymise::{self, Pseudonymiser, keyring::KeySet, keys::MasterKey};
use polars::prelude::*;

const TIMEOUT_S: i64 = 1800;
const MAX_VISIT_S: i64 = 6 * 3600;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let visits = match args.first().map(String::as_str) {
        Some("prepare") if args.len() == 3 => {
            let n = prepare(&args[1], &args[2])?;
            println!("events: {n}");
            return Ok(());
        }
        Some("in-memory") if args.len() == 2 => {
            let events = LazyFrame::scan_parquet(args[1].as_str().into(), Default::default())?;
            count_visits(events, Engine::InMemory)?
        }
        Some("streaming") if args.len() == 2 => {
            let events = LazyFrame::scan_parquet(args[1].as_str().into(), Default::default())?;
            count_visits(events, Engine::Streaming)?
        }
        Some("partitioned") if args.len() == 3 => {
            let parts: u64 = args[2].parse()?;
            let mut visits = 0;
            for p in 0..parts {
                // A partition is the clients whose session key (the client's pseudonym, linked
                // across midnight) falls in it: all of a visit's pageviews are in one, as in
                // logveil's buckets (a keyed hash of the client, the same on every day).
                let events = LazyFrame::scan_parquet(args[1].as_str().into(), Default::default())?
                    .filter((col("session_key") % lit(parts)).eq(lit(p)));
                visits += count_visits(events, Engine::InMemory)?;
            }
            visits
        }
        _ => {
            eprintln!(
                "usage: sessions_engines prepare LOG EVENTS | in-memory EVENTS | streaming EVENTS | partitioned EVENTS N"
            );
            std::process::exit(2);
        }
    };
    println!(
        "visits: {visits}  time: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The visits of `events`: [`visit_plan`] and a count of its entries, on `engine`.
fn count_visits(events: LazyFrame, engine: Engine) -> PolarsResult<u64> {
    let counted = visit_plan(events, TIMEOUT_S, MAX_VISIT_S)?
        .select([col("is_entry").cast(DataType::UInt64).sum()])
        .collect_with_engine(engine)?
        .unwrap_single();
    Ok(counted.column("is_entry")?.u64()?.get(0).unwrap_or(0))
}

/// Parses and pseudonymises a combined log as `logveil run` would (its default filters, the
/// realistic sample's site), and writes the pageview events.
fn prepare(log: &str, out: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let settings = pseudonymise::Settings {
        link_window_s: MAX_VISIT_S + TIMEOUT_S,
        ..pseudonymise::Settings::defaults(
            &["example.ru", "www.example.ru", "shop.example.ru"],
            jiff::tz::TimeZone::get("Europe/Moscow")?,
        )
    };
    let mut ps = Pseudonymiser::new(
        std::sync::Arc::new(KeySet::Single(MasterKey::generate()?)),
        settings,
    );
    let mut cols = EventColumns::default();
    let mut scratch = logveil::ingest::json::Scratch::default();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(log)?);
    let mut line = Vec::new();
    let mut seq = 0u64;
    while reader.read_until(b'\n', &mut line)? > 0 {
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Ok(rec) = parse_line(Format::Combined, text, &mut scratch)
            && let pseudonymise::Outcome::Pageview(e) = ps.process(&rec)
        {
            cols.push(seq, e.to_event());
        }
        seq += 1;
        line.clear();
    }
    let n = cols.len();
    let mut frame = cols.into_frame()?.frame;
    ParquetWriter::new(std::fs::File::create(out)?).finish(&mut frame)?;
    Ok(n)
}
