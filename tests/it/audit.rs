//! `logveil audit` catches each kind of leak planted in a copy of a good output, one test per
//! kind, and passes the good outputs of both samples.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::helpers::*;

const PAGES: &str = "pages/date=2026-11-03/part-0.parquet";
const REFERRERS: &str = "referrers/date=2026-11-03/part-0.parquet";
const DEVICES: &str = "devices/date=2026-11-03/part-0.parquet";

fn good_output() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&repo().join("sample-data/small/pipeline.toml"), &out, &[]);
    assert!(o.status.success());
    (dir, out)
}

fn audit(out: &Path) -> (Option<i32>, String) {
    let o = logveil().arg("audit").arg(out).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

fn write_parquet(df: &mut DataFrame, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    ParquetWriter::new(f).finish(df).unwrap();
}

/// Rewrites one file with `edit` and, when `rehash`, updates its hash in the run record so
/// that only the planted content can be what the audit finds.
fn rewrite(out: &Path, rel: &str, rehash: bool, edit: impl FnOnce(&mut DataFrame)) {
    let path = out.join(rel);
    let mut df = read_parquet(&path);
    edit(&mut df);
    write_parquet(&mut df, &path);
    if rehash {
        let runs = files_under(&out.join("_runs"));
        let record_path = runs
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        let mut record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(record_path).unwrap()).unwrap();
        let hash = blake3::hash(&std::fs::read(&path).unwrap())
            .to_hex()
            .to_string();
        for f in record["files"].as_array_mut().unwrap() {
            if f["path"] == rel {
                f["blake3"] = hash.clone().into();
            }
        }
        std::fs::write(record_path, serde_json::to_string(&record).unwrap()).unwrap();
    }
}

fn set_str(df: &mut DataFrame, column: &str, row: usize, value: &str) {
    let mut v = strs(df, column);
    v[row] = Some(value.to_string());
    df.replace(column, Column::new(column.into(), v)).unwrap();
}

fn set_int(df: &mut DataFrame, column: &str, row: usize, value: Option<i64>) {
    let mut v = ints(df, column);
    v[row] = value;
    df.replace(column, Column::new(column.into(), v)).unwrap();
}

/// Plants `value` and checks the audit fails with `rule` and never prints the value.
fn assert_caught(out: &Path, rule: &str, value: Option<&str>) {
    let (code, text) = audit(out);
    assert_eq!(code, Some(5), "{text}");
    assert!(
        text.contains(&format!(": {rule}")),
        "{rule} not reported:\n{text}"
    );
    if let Some(v) = value {
        assert!(!text.contains(v), "the audit echoed the leaked value");
    }
}

#[test]
fn audit_passes_good_outputs() {
    let (_d, out) = good_output();
    let (code, text) = audit(&out);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("pages: 2 files, 4 rows: ok"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    assert!(
        run(&repo().join("pipelines/demo.toml"), &demo, &[])
            .status
            .success()
    );
    assert_eq!(audit(&demo).0, Some(0));
}

macro_rules! planted_string {
    ($name:ident, $file:expr, $column:expr, $value:expr, $rule:expr) => {
        #[test]
        fn $name() {
            let (_d, out) = good_output();
            rewrite(&out, $file, true, |df| set_str(df, $column, 0, $value));
            assert_caught(&out, $rule, Some($value));
        }
    };
}

planted_string!(
    audit_catches_ipv4_in_a_path,
    PAGES,
    "path",
    "/u/192.0.2.1",
    "ip_address"
);
planted_string!(
    audit_catches_ipv6_as_a_host,
    REFERRERS,
    "referrer_host",
    "2001:db8::5",
    "ip_address"
);
planted_string!(
    audit_catches_an_email,
    PAGES,
    "path",
    "/unsubscribe/ivan.petrov@mail.ru",
    "email"
);
planted_string!(
    audit_catches_a_user_agent,
    DEVICES,
    "browser",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
    "user_agent"
);
planted_string!(
    audit_catches_a_hex_token,
    PAGES,
    "path",
    "/reset/9f86d081884c7d659a2feaa0c55ad015",
    "token"
);
planted_string!(
    audit_catches_a_base64_token,
    PAGES,
    "path",
    "/s/eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    "token"
);
planted_string!(
    audit_catches_a_click_id,
    PAGES,
    "path",
    "/?yclid=5551234567",
    "click_id_or_query"
);
planted_string!(
    audit_catches_a_url_with_query,
    REFERRERS,
    "referrer_host",
    "https://yandex.ru/search?text=ivan",
    "url_with_query"
);
planted_string!(
    audit_catches_a_digit_run,
    PAGES,
    "path",
    "/orders/918273645",
    "digit_run"
);

#[test]
fn audit_catches_an_extra_column() {
    let (_d, out) = good_output();
    rewrite(&out, PAGES, true, |df| {
        let n = df.height();
        df.with_column(Column::new("visitor_id".into(), vec![7i64; n]))
            .unwrap();
    });
    assert_caught(&out, "schema_not_allowed", None);
}

#[test]
fn audit_catches_a_table_not_on_the_allowlist() {
    let (_d, out) = good_output();
    let mut df = read_parquet(&out.join(PAGES));
    write_parquet(
        &mut df,
        &out.join("visitors/date=2026-11-03/part-0.parquet"),
    );
    assert_caught(&out, "table_not_allowed", None);
}

#[test]
fn audit_catches_a_row_under_k() {
    let (_d, out) = good_output();
    rewrite(&out, PAGES, true, |df| set_int(df, "visitors", 0, Some(1)));
    assert_caught(&out, "below_k", None);
}

#[test]
fn audit_catches_a_suppressed_row_with_values() {
    let (_d, out) = good_output();
    rewrite(
        &out,
        "overview/date=2026-11-04/part-0.parquet",
        true,
        |df| set_int(df, "visitors", 0, Some(0)),
    );
    assert_caught(&out, "suppressed_row_has_values", None);
}

#[test]
fn audit_catches_a_pseudonym_shaped_count() {
    let (_d, out) = good_output();
    rewrite(&out, PAGES, true, |df| {
        set_int(df, "pageviews", 1, Some(8_234_567_890_123_456_789))
    });
    assert_caught(&out, "implausible_count", Some("8234567890123456789"));
}

#[test]
fn audit_catches_a_file_no_run_record_lists() {
    let (_d, out) = good_output();
    let mut df = read_parquet(&out.join(PAGES));
    write_parquet(&mut df, &out.join("pages/date=2026-11-05/part-0.parquet"));
    assert_caught(&out, "no_run_record", None);
}

#[test]
fn audit_catches_a_file_changed_after_its_run() {
    let (_d, out) = good_output();
    rewrite(&out, PAGES, false, |df| {
        set_int(df, "pageviews", 0, Some(5))
    });
    assert_caught(&out, "hash_mismatch", None);
}

#[test]
fn audit_gates_publication_a_leaking_rule_publishes_nothing() {
    // A pipeline rule that writes an address into a path: the run's own audit of its staged
    // files refuses the release (exit 5) and the previous outputs stay as they were.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let small = repo().join("sample-data/small");
    assert!(
        run(&small.join("pipeline.toml"), &out, &[])
            .status
            .success()
    );
    let before = std::fs::read(out.join(PAGES)).unwrap();
    let text = std::fs::read_to_string(small.join("pipeline.toml")).unwrap();
    let p = dir.path().join("leaky.toml");
    std::fs::write(
        &p,
        format!(
            "{}\n[paths]\nrewrite = [{{ pattern = \"^/catalog$\", replace = \"/from/192.0.2.77\" }}]\n",
            text.replace("inputs = [\"access.log\"]", &format!("inputs = [{:?}]", small.join("access.log")))
        ),
    )
    .unwrap();
    let o = run(&p, &out, &[]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ip_address") && err.contains("nothing was published"),
        "{err}"
    );
    assert!(!err.contains("192.0.2.77"));
    assert_eq!(std::fs::read(out.join(PAGES)).unwrap(), before);
    assert!(!out.join("_staging").exists());
}
