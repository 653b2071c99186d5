//! Per-line costs of the ingest and pseudonymise stages, on lines of the realistic sample.
//!
//! `cargo bench --bench ingest` (release). Compare the fast parser with the regex oracle in
//! the same group: the ratio is what matters, machines are noisy.

use std::hint::black_box;
use std::io::Read;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logveil::ingest::{Format, parse_line};
use logveil::pseudonymise::{self, Pseudonymiser, keyring::KeySet, keys::MasterKey};

fn sample_lines() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sample-data/realistic/access-2026-11-03.log.gz"
    );
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).expect("sample data"))
        .read_to_end(&mut text)
        .expect("gzip");
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l.len() < 4096)
        .map(<[u8]>::to_vec)
        .collect()
}

fn oracle() -> regex::bytes::Regex {
    regex::bytes::Regex::new(
        r#"^(\S+) \S+ \S+ \[([^\]]+)\] "([A-Z]+) (\S+) (HTTP/[0-9.]+)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"$"#,
    )
    .expect("regex")
}

fn bench_parse(c: &mut Criterion) {
    let lines = sample_lines();
    let bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let mut g = c.benchmark_group("ingest::combined");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("parse_line", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            let mut s = logveil::ingest::json::Scratch::default();
            for l in &lines {
                ok += usize::from(parse_line(Format::Combined, black_box(l), &mut s).is_ok());
            }
            assert!(ok > lines.len() * 9 / 10);
            ok
        })
    });
    let re = oracle();
    g.bench_function("regex_oracle", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for l in &lines {
                ok += usize::from(re.captures(black_box(l)).is_some());
            }
            assert!(ok > lines.len() * 8 / 10);
            ok
        })
    });
    g.finish();
}

fn bench_pseudonymise(c: &mut Criterion) {
    let lines = sample_lines();
    let mut g = c.benchmark_group("pseudonymise");
    g.throughput(Throughput::Elements(lines.len() as u64));
    let settings = || pseudonymise::Settings {
        buckets: 8,
        ..pseudonymise::Settings::defaults(
            &["example.ru", "www.example.ru"],
            jiff::tz::TimeZone::get("Europe/Moscow").expect("tz"),
        )
    };
    // Caches warm, as in a real run after its first thousand lines.
    let mut ps = Pseudonymiser::new(
        std::sync::Arc::new(KeySet::Single(MasterKey::from_bytes([42; 32]))),
        settings(),
    );
    g.bench_function("parse_and_process", |b| {
        b.iter(|| {
            let mut pageviews = 0usize;
            let mut s = logveil::ingest::json::Scratch::default();
            for l in &lines {
                if let Ok(rec) = parse_line(Format::Combined, l, &mut s)
                    && let pseudonymise::Outcome::Pageview(_) = ps.process(black_box(&rec))
                {
                    pageviews += 1;
                }
            }
            assert!(pageviews > 1000);
            pageviews
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse, bench_pseudonymise);
criterion_main!(benches);
