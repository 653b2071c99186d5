//! Previous visits across nightly runs: new and returning visitors, visit numbers, days since
//! the last visit, week and month uniques, attribution across days and epochs, and the state
//! destroyed with its epoch's master.
//!
//! A key ring with two periods, 2026-11-09 and 2026-11-12, and `lookback_days = 3`: epoch A
//! is 9–11 November, epoch B 12–14 November. Each person has a twin (another address, same
//! behaviour), so k = 2 hides nothing but the empty rows. Every visit is at 10:00 UTC.
//!
//! | person | 10th                        | 11th                      | 12th                            | 13th |
//! |--------|-----------------------------|---------------------------|---------------------------------|------|
//! | P      | / via yandex cpc autumn     | / via google (organic)    | /cart → /checkout/done (direct) | /    |
//! | Q      | /                           | /                         | —                               | /    |
//! | R      | —                           | —                         | /                               | —    |
//!
//! Runs: --date 10, 11, 12 (nightly), then the master of epoch A is destroyed, then 13.

use std::path::{Path, PathBuf};

use crate::helpers::*;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn line(person: u8, twin: u8, day: u32, time: &str, target: &str, referrer: &str) -> String {
    format!(
        "10.1.{person}.{twin} - - [{day}/Nov/2026:{time} +0000] \"GET {target} HTTP/1.1\" 200 512 \"{referrer}\" \"{FIREFOX}\"\n"
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    pipeline: PathBuf,
    out: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (p, q, r) = (1u8, 2u8, 3u8);
        let mut days: [String; 4] = Default::default();
        for twin in 1..=2 {
            days[0] += &line(
                p,
                twin,
                10,
                "10:00:00",
                "/?utm_source=yandex&utm_medium=cpc&utm_campaign=autumn&yclid=5550001112",
                "https://yandex.ru/",
            );
            days[0] += &line(q, twin, 10, "10:00:00", "/", "-");
            days[1] += &line(p, twin, 11, "10:00:00", "/", "https://www.google.com/");
            days[1] += &line(q, twin, 11, "10:00:00", "/", "-");
            days[2] += &line(p, twin, 12, "10:00:00", "/cart", "-");
            days[2] += &line(
                p,
                twin,
                12,
                "10:01:00",
                "/checkout/done",
                "https://example.ru/",
            );
            days[2] += &line(r, twin, 12, "10:00:00", "/", "-");
            days[3] += &line(p, twin, 13, "10:00:00", "/", "-");
            days[3] += &line(q, twin, 13, "10:00:00", "/", "-");
        }
        for (i, text) in days.iter().enumerate() {
            std::fs::write(dir.path().join(format!("access-{}.log", 10 + i)), text).unwrap();
        }
        let pipeline = dir.path().join("pipeline.toml");
        std::fs::write(
            &pipeline,
            r#"
name = "returning"
site = "example.ru"
inputs = ["access-*.log"]
time_zone = "UTC"
key_dir = "ring"
k = 2
output = "out"
state_dir = "state"

[[goals]]
name = "order"
path = "/checkout/done"
after = ["/cart"]
value = 1500.0

[returning_visitors]
lookback_days = 3
"#,
        )
        .unwrap();
        for from in ["2026-11-09", "2026-11-12"] {
            let o = logveil()
                .args(["key", "rotate", "--key-dir"])
                .arg(dir.path().join("ring"))
                .args(["--from", from])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let out = dir.path().join("out");
        Fixture { dir, pipeline, out }
    }

    fn run(&self, date: &str) -> serde_json::Value {
        let o = run(&self.pipeline, &self.out, &["--date", date]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        run_record(&self.out)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// (dimension, bucket) → (visitors, visits) of the released loyalty rows of a day.
fn loyalty(out: &Path, day: &str) -> Vec<(String, String, i64, i64)> {
    let t = table(out, "loyalty", day);
    let (d, b, v, n, s) = (
        strs(&t, "dimension"),
        strs(&t, "bucket"),
        ints(&t, "visitors"),
        ints(&t, "visits"),
        bools(&t, "suppressed"),
    );
    (0..t.height())
        .filter(|i| s[*i] == Some(false))
        .map(|i| {
            (
                d[i].clone().unwrap(),
                b[i].clone().unwrap(),
                v[i].unwrap(),
                n[i].unwrap(),
            )
        })
        .collect()
}

fn row(d: &str, b: &str, visitors: i64, visits: i64) -> (String, String, i64, i64) {
    (d.into(), b.into(), visitors, visits)
}

/// (period, period_start, visitors).
fn uniques(out: &Path, day: &str) -> Vec<(String, String, i64)> {
    let t = table(out, "uniques", day);
    let (p, s, v) = (
        strs(&t, "period"),
        strs(&t, "period_start"),
        ints(&t, "visitors"),
    );
    (0..t.height())
        .map(|i| (p[i].clone().unwrap(), s[i].clone().unwrap(), v[i].unwrap()))
        .collect()
}

fn u(p: &str, s: &str, v: i64) -> (String, String, i64) {
    (p.into(), s.into(), v)
}

#[test]
fn returning_visitors_across_nightly_runs_and_epochs() {
    let f = Fixture::new();
    f.run("2026-11-10");
    f.run("2026-11-11");
    f.run("2026-11-12");
    let out = &f.out;
    // 10th: everyone is new, on a first visit; no visit has a previous one.
    assert_eq!(
        loyalty(out, "2026-11-10"),
        [
            row("visit_number", "1", 4, 4),
            row("visitor_type", "new", 4, 4),
        ]
    );
    // 11th: P and Q return after one day, on their second visit.
    assert_eq!(
        loyalty(out, "2026-11-11"),
        [
            row("days_since_last_visit", "1", 4, 4),
            row("visit_number", "2", 4, 4),
            row("visitor_type", "returning", 4, 4),
        ]
    );
    // 12th, the first day of epoch B: P is found under epoch A's pseudonym (third visit in
    // the 3-day lookback, one day since the last); R is new.
    assert_eq!(
        loyalty(out, "2026-11-12"),
        [
            row("days_since_last_visit", "1", 2, 2),
            row("visit_number", "1", 2, 2),
            row("visit_number", "3-4", 2, 2),
            row("visitor_type", "new", 2, 2),
            row("visitor_type", "returning", 2, 2),
        ]
    );
    // Uniques (rows in key order: month, week): exact within an epoch, so the 12th's week and month start with epoch B.
    assert_eq!(
        uniques(out, "2026-11-11"),
        [u("month", "2026-11-09", 4), u("week", "2026-11-09", 4)]
    );
    assert_eq!(
        uniques(out, "2026-11-12"),
        [u("month", "2026-11-12", 4), u("week", "2026-11-12", 4)]
    );

    // P's order on the 12th, over its three touches: yandex cpc (10th), google organic (11th),
    // direct (12th). Value 150 000 kopecks.
    let t = table(out, "attribution", "2026-11-12");
    let (m, c, cr, val, v) = (
        strs(&t, "model"),
        strs(&t, "channel"),
        ints(&t, "conversions_micro"),
        ints(&t, "value"),
        ints(&t, "visitors"),
    );
    let credit = |model: &str| -> Vec<(String, i64, i64)> {
        (0..t.height())
            .filter(|i| m[*i].as_deref() == Some(model))
            .map(|i| (c[i].clone().unwrap(), cr[i].unwrap(), val[i].unwrap()))
            .collect()
    };
    let r = |ch: &str, micro: i64, value: i64| (ch.to_string(), micro * 2, value * 2);
    assert_eq!(
        credit("first_touch"),
        [r("paid_search", 1_000_000, 150_000)]
    );
    assert_eq!(credit("last_touch"), [r("direct", 1_000_000, 150_000)]);
    assert_eq!(
        credit("last_non_direct"),
        [r("organic_search", 1_000_000, 150_000)]
    );
    // Linear: thirds, the spare millionth to the earliest touch (largest remainder).
    assert_eq!(
        credit("linear"),
        [
            r("direct", 333_333, 50_000),
            r("organic_search", 333_333, 50_000),
            r("paid_search", 333_334, 50_000),
        ]
    );
    assert_eq!(
        credit("position_based"),
        [
            r("direct", 400_000, 60_000),
            r("organic_search", 200_000, 30_000),
            r("paid_search", 400_000, 60_000),
        ]
    );
    assert!(v.iter().all(|x| *x == Some(2)));

    // The visit log is sealed: no campaign value, click id or address in the clear.
    let log_files: Vec<PathBuf> = files_under(&f.state().join("visitors"));
    assert_eq!(log_files.len(), 3, "one file per day: {log_files:?}");
    for file in &log_files {
        let bytes = std::fs::read(file).unwrap();
        for secret in ["yandex", "autumn", "5550001112", "10.1.", "google"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {}",
                file.display()
            );
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // Re-running the 11th replaces its contribution: the same tables, and the 12th is
    // reported stale (it was computed from the 11th's earlier state).
    let before = std::fs::read(out.join("loyalty/date=2026-11-11/part-0.parquet")).unwrap();
    let rec = f.run("2026-11-11");
    let after = std::fs::read(out.join("loyalty/date=2026-11-11/part-0.parquet")).unwrap();
    assert_eq!(before, after);
    assert_eq!(
        rec["returning_visitors"]["stale_dates"],
        serde_json::json!(["2026-11-12"])
    );

    // Epoch A's master is destroyed: its visit log becomes unreadable and is deleted, and
    // the 13th cannot link Q (seen only in epoch A) any more. P is still found through the
    // 12th (epoch B).
    let o = logveil()
        .args(["key", "destroy", "--key-dir"])
        .arg(f.dir.path().join("ring"))
        .args(["--before", "2026-11-13"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    f.run("2026-11-13");
    assert!(
        !f.state().join("visitors/2026-11-09").exists(),
        "epoch A's state is gone with its key"
    );
    assert_eq!(
        loyalty(out, "2026-11-13"),
        [
            row("days_since_last_visit", "1", 2, 2),
            row("visit_number", "1", 2, 2),
            row("visit_number", "2", 2, 2),
            row("visitor_type", "new", 2, 2),
            row("visitor_type", "returning", 2, 2),
        ]
    );
    // Week and month of the 13th: P and R (12th), P and Q (13th).
    assert_eq!(
        uniques(out, "2026-11-13"),
        [u("month", "2026-11-12", 6), u("week", "2026-11-12", 6)]
    );
    // A destroyed period is never re-created: re-running the 11th now fails.
    let o = run(&f.pipeline, &f.out, &["--date", "2026-11-11"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn returning_visitors_refuse_an_ephemeral_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "site = \"example.ru\"\ninputs = [\"x.log\"]\nkey = \"ephemeral\"\n[returning_visitors]\n",
    )
    .unwrap();
    let o = logveil()
        .arg("validate")
        .arg("--pipeline")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("returning visitors need a lasting key"));
}

/// A managed key ring (`manage_keys`, no key given): a master per 3-day epoch on the grid
/// from 1970-01-01 (9, 12, 15 November), added as the runs reach them; once the epoch of the
/// 15th begins, the master of the 9th's epoch (two epochs back) is destroyed with its visit log.
#[test]
fn returning_visitors_with_a_managed_key_ring() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = String::new();
    for twin in 1..=2 {
        for day in [10, 12, 15] {
            log += &line(1, twin, day, "10:00:00", "/", "-");
        }
    }
    std::fs::write(dir.path().join("access.log"), log).unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "site = \"example.ru\"\ninputs = [\"access.log\"]\ntime_zone = \"UTC\"\nk = 2\n\
         output = \"out\"\nstate_dir = \"state\"\n\
         [returning_visitors]\nlookback_days = 3\nmanage_keys = true\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let ring = dir.path().join("state/keys");
    let masters = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&ring)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".key"))
            .collect();
        v.sort();
        v
    };
    for (date, want) in [
        ("2026-11-10", vec!["2026-11-09.key"]),
        ("2026-11-12", vec!["2026-11-09.key", "2026-11-12.key"]),
        ("2026-11-15", vec!["2026-11-12.key", "2026-11-15.key"]),
    ] {
        let o = run(&pipeline, &out, &["--date", date]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(masters(), want, "after {date}");
    }
    assert!(!dir.path().join("state/visitors/2026-11-09").exists());
    // The 12th's visit (epoch of the 12th, the previous one) still makes P a returning visitor.
    assert_eq!(
        loyalty(&out, "2026-11-15")
            .into_iter()
            .filter(|r| r.0 == "visitor_type")
            .collect::<Vec<_>>(),
        [row("visitor_type", "returning", 2, 2)]
    );
    let r = run_record(&out);
    assert_eq!(
        r["returning_visitors"]["masters_destroyed"],
        serde_json::json!(["2026-11-09"])
    );
    // The destroyed period is never given a new master: its date cannot be re-run.
    let o = run(&pipeline, &out, &["--date", "2026-11-10"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
