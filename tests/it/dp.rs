//! Differential privacy end to end: noise declared in every row, the same release re-run is
//! free and identical, changed content is charged again, an over-budget run releases nothing,
//! and a DP pipeline refuses an ephemeral key.

use std::path::{Path, PathBuf};

use crate::helpers::*;

fn dp_pipeline(dir: &Path, budget: f64, window: u32) -> PathBuf {
    let key = dir.join("master.key");
    if !key.exists() {
        keygen(&key);
    }
    let p = dir.join("dp.toml");
    std::fs::write(
        &p,
        format!(
            "site = \"example.ru\"\nsite_hosts = [\"example.ru\", \"www.example.ru\", \"shop.example.ru\"]\n\
             inputs = [{:?}]\ntime_zone = \"Europe/Moscow\"\nkey = \"master.key\"\nstate_dir = \"state\"\n\
             [differential_privacy]\nepsilon_budget = {budget}\ndp_window_days = {window}\nepsilon = 1.0\n",
            repo().join("sample-data/realistic/*.log.gz")
        ),
    )
    .unwrap();
    p
}

fn ledger_len(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("state/ledger.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["entries"].as_array().unwrap().len()
}

#[test]
fn dp_release_rerun_change_and_budget() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Budget 3 over 3 days at ε = 1 per table per day: the first run's 4 days fit (each
    // 3-day window holds at most 3 charges of 1.0).
    let p = dp_pipeline(dir.path(), 3.0, 3);
    let o = run(&p, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ledger_len(dir.path()), 11 * 4, "11 tables × 4 days charged");

    // Every row declares its noise; the audit accepts declared noise in place of k.
    let pages = table(&out, "pages", "2026-11-03");
    assert!(names(&pages).contains(&"noise_scale".to_string()));
    assert!(
        floats(&pages, "noise_scale")
            .iter()
            .all(|s| *s == Some(20.0)),
        "scale = 5 pages / (1/4)"
    );
    let hourly = table(&out, "hourly", "2026-11-03");
    assert_eq!(hourly.height(), 24);
    assert!(
        bools(&hourly, "suppressed")
            .iter()
            .all(|s| *s == Some(false))
    );
    let o = logveil().arg("audit").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = run_record(&out);
    assert_eq!(
        r["differential_privacy"]["tables"]["pages"]["rows_per_visitor"],
        5
    );
    assert!(
        r["differential_privacy"]["tables"]["pages"]["threshold"]
            .as_f64()
            .unwrap()
            > 5.0
    );

    // The same data again: the same noise (no averaging), and no new charge.
    let before: Vec<Vec<u8>> = files_under(&out)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let o = run(&p, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after: Vec<Vec<u8>> = files_under(&out)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert_eq!(before, after);
    assert_eq!(ledger_len(dir.path()), 11 * 4);
    assert_eq!(
        run_record(&out)["differential_privacy"]["epsilon_charged"],
        0.0
    );

    // Changed content for 2026-11-03 (one input left out) is a new release: with 3 days'
    // worth of ε already in its windows it would exceed the budget, so nothing is released.
    let overview = std::fs::read(out.join("overview/date=2026-11-03/part-0.parquet")).unwrap();
    let one = repo().join("sample-data/realistic/access-2026-11-03.log.gz");
    let o = run(
        &p,
        &out,
        &[
            "--date",
            "2026-11-03",
            "--input",
            one.to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("privacy budget is spent"));
    assert_eq!(
        std::fs::read(out.join("overview/date=2026-11-03/part-0.parquet")).unwrap(),
        overview
    );
    assert_eq!(
        ledger_len(dir.path()),
        11 * 4,
        "a refused run charges nothing"
    );
    assert!(!out.join("_staging").exists());

    // With a larger budget the changed day is released and charged again.
    let p = dp_pipeline(dir.path(), 10.0, 3);
    let o = run(
        &p,
        &out,
        &[
            "--date",
            "2026-11-03",
            "--input",
            one.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The 7 tables whose content changed are charged again; the 4 goal tables (no goals in
    // this pipeline: empty before and after) are not.
    assert_eq!(ledger_len(dir.path()), 44 + 7);
    assert_eq!(
        run_record(&out)["differential_privacy"]["epsilon_charged"],
        7.0
    );
}

#[test]
fn dp_refuses_an_ephemeral_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "site = \"example.ru\"\ninputs = [\"a.log\"]\nkey = \"ephemeral\"\n[differential_privacy]\nepsilon_budget = 1.0\n",
    )
    .unwrap();
    let o = run(&p, &dir.path().join("out"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lasting key"));
}
