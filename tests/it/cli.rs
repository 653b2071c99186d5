//! Commands, exit codes, atomic and idempotent publication, determinism.

use std::io::Write;
use std::path::PathBuf;

use crate::helpers::*;

fn small_pipeline() -> PathBuf {
    repo().join("sample-data/small/pipeline.toml")
}

#[test]
fn cli_keygen_mode_and_no_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let o = logveil().arg("keygen").arg(&key).output().unwrap();
    assert!(o.status.success());
    let first = std::fs::read_to_string(&key).unwrap();
    assert_eq!(first.trim().len(), 64);
    assert!(first.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let o = logveil().arg("keygen").arg(&key).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        first,
        "the key was not overwritten"
    );
    // Two keys differ.
    let other = dir.path().join("k2");
    keygen(&other);
    assert_ne!(std::fs::read_to_string(&other).unwrap(), first);
}

#[test]
fn cli_key_file_errors_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = dir.path().join("nope.key");
    let o = run(
        &small_pipeline(),
        &out,
        &["--key-file", missing.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("logveil keygen"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open = dir.path().join("open.key");
        keygen(&open);
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = run(
            &small_pipeline(),
            &out,
            &["--key-file", open.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("chmod 600"), "{err}");
        let key = std::fs::read_to_string(&open).unwrap();
        assert!(!err.contains(key.trim()), "the key must not be echoed");
    }
    assert!(
        !out.join("overview").exists(),
        "nothing is published on a key error"
    );
}

#[test]
fn cli_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "site = \"example.ru\"\ninputs = [\"a.log\"]\nkey = \"ephemeral\"\nsesion_timeout = \"30m\"\n").unwrap();
    let o = run(&p, &dir.path().join("out"), &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sesion_timeout") && err.contains("line 4"),
        "{err}"
    );
    let o = logveil()
        .args(["run", "--date", "2026-13-01"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn cli_missing_input_fails_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &small_pipeline(),
        &dir.path().join("out"),
        &["--input", "/nonexistent/*.log"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/*.log"));
}

#[test]
fn cli_output_is_deterministic_whatever_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    assert!(run(&small_pipeline(), &a, &[]).status.success());
    assert!(run(&small_pipeline(), &b, &[]).status.success());
    let key = dir.path().join("k");
    keygen(&key);
    assert!(
        run(
            &small_pipeline(),
            &c,
            &["--key-file", key.to_str().unwrap()]
        )
        .status
        .success()
    );
    let (ha, hb, hc) = (parquet_hashes(&a), parquet_hashes(&b), parquet_hashes(&c));
    assert_eq!(ha.len(), 11 * 2, "11 tables × 2 days");
    assert_eq!(ha, hb, "two ephemeral keys");
    assert_eq!(ha, hc, "ephemeral key vs key file");
}

#[test]
fn cli_rerun_of_a_date_replaces_that_date_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(run(&small_pipeline(), &out, &[]).status.success());
    let before = parquet_hashes(&out);
    // Plant a marker in the other day's partition: a re-run of 2026-11-03 must not touch it.
    let other_day = out.join("pages/date=2026-11-04/part-0.parquet");
    let other_bytes = std::fs::read(&other_day).unwrap();
    let mtime = std::fs::metadata(&other_day).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = run(&small_pipeline(), &out, &["--date", "2026-11-03"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = parquet_hashes(&out);
    assert_eq!(before, after, "the same inputs give the same files");
    assert_eq!(std::fs::read(&other_day).unwrap(), other_bytes);
    assert_eq!(
        std::fs::metadata(&other_day).unwrap().modified().unwrap(),
        mtime,
        "another day was rewritten"
    );
    let r = run_record(&out);
    let dates = record_dates(&r);
    assert_eq!(dates, ["2026-11-03"]);
    assert_eq!(
        r["files"].as_array().unwrap().len(),
        11,
        "one file per table"
    );
    // Two committed run records, no staging, no pending record.
    let runs: Vec<PathBuf> = files_under(&out.join("_runs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(runs.len(), 2);
    assert!(!out.join("_staging").exists());
}

#[test]
fn cli_corrupt_gzip_fails_and_keeps_previous_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(run(&small_pipeline(), &out, &[]).status.success());
    let before = parquet_hashes(&out);
    // A gzip file cut in half.
    let log = std::fs::read(repo().join("sample-data/small/access.log")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for _ in 0..50 {
        enc.write_all(&log).unwrap();
    }
    let gz = enc.finish().unwrap();
    let cut = dir.path().join("cut.log.gz");
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let o = run(&small_pipeline(), &out, &["--input", cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cut.log.gz") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_eq!(parquet_hashes(&out), before, "previous outputs untouched");
}

#[test]
fn cli_gzip_input_gives_the_same_tables_as_plain() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::read(repo().join("sample-data/small/access.log")).unwrap();
    let gz_path = dir.path().join("access.log.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&log).unwrap();
    std::fs::write(&gz_path, enc.finish().unwrap()).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert!(run(&small_pipeline(), &a, &[]).status.success());
    let o = run(
        &small_pipeline(),
        &b,
        &["--input", gz_path.to_str().unwrap()],
    );
    assert!(o.status.success());
    assert_eq!(parquet_hashes(&a), parquet_hashes(&b));
    assert_eq!(run_record(&b)["inputs"][0]["gzip"], true);
}

#[test]
fn cli_duplicate_inputs_are_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.log");
    std::fs::copy(repo().join("sample-data/small/access.log"), &copy).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert!(run(&small_pipeline(), &a, &[]).status.success());
    let original = repo().join("sample-data/small/access.log");
    let o = run(
        &small_pipeline(),
        &b,
        &[
            "--input",
            original.to_str().unwrap(),
            "--input",
            copy.to_str().unwrap(),
        ],
    );
    assert!(o.status.success());
    assert_eq!(parquet_hashes(&a), parquet_hashes(&b));
    let r = run_record(&b);
    assert_eq!(r["lines"]["read"], 21);
    assert!(r["inputs"][1]["duplicate_of"].is_string());
}

#[test]
fn cli_empty_input_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, b"").unwrap();
    let out = dir.path().join("out");
    let o = run(
        &small_pipeline(),
        &out,
        &["--input", empty.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing was published"));
    assert!(!out.join("overview").exists());
}

#[test]
fn cli_lock_held_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let _held = logveil::output::lock(&out).unwrap();
    let o = run(&small_pipeline(), &out, &[]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lock"));
}

#[test]
fn cli_interrupted_publication_is_finished_and_stale_staging_removed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(run(&small_pipeline(), &out, &[]).status.success());
    let good = parquet_hashes(&out);
    // Simulate a run killed after writing its pending record and one staged file, before
    // renaming: the staged file replaces the published one when the next run starts.
    let staged_rel = "pages/date=2026-11-04/part-0.parquet";
    let staged = out.join("_staging/run-x").join(staged_rel);
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::copy(out.join("pages/date=2026-11-03/part-0.parquet"), &staged).unwrap();
    let mut record = run_record(&out);
    record["run_id"] = "run-x".into();
    record["files"] = serde_json::json!([{"path": staged_rel, "rows": 4, "blake3": ""}]);
    std::fs::write(
        out.join("_runs/run-x.pending.json"),
        serde_json::to_string(&record).unwrap(),
    )
    .unwrap();
    // And a killed run that never got as far as its pending record.
    std::fs::create_dir_all(out.join("_staging/run-y/overview")).unwrap();
    std::fs::write(
        out.join("_staging/run-y/overview/half.parquet"),
        b"PAR1 half",
    )
    .unwrap();

    let o = logveil()
        .args(["run", "--pipeline"])
        .arg(small_pipeline())
        .arg("--output")
        .arg(&out)
        .args(["--date", "2026-11-03"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("finished the interrupted publication of run run-x"),
        "{stdout}"
    );
    assert!(
        stdout.contains("removed the staging of unfinished run run-y"),
        "{stdout}"
    );
    assert!(!out.join("_staging").exists());
    assert!(out.join("_runs/run-x.json").exists());
    let now = parquet_hashes(&out);
    assert_eq!(
        now[staged_rel], good["pages/date=2026-11-03/part-0.parquet"],
        "the staged file was moved into place"
    );
}

#[test]
fn cli_validate_and_run_every_pipeline_file() {
    for entry in std::fs::read_dir(repo().join("pipelines")).unwrap() {
        let p = entry.unwrap().path();
        let o = logveil()
            .arg("validate")
            .arg("--pipeline")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let dir = tempfile::tempdir().unwrap();
        let o = run(&p, &dir.path().join("out"), &[]);
        assert!(
            o.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            dir.path()
                .join("out/overview/date=2026-11-03/part-0.parquet")
                .exists()
        );
    }
    let o = logveil().arg("validate").output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("embedded demo"));
}

#[test]
fn cli_vhost_format_skips_other_sites_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
    let mut log = String::new();
    for (i, host) in [
        "example.ru:443",
        "www.example.ru:80",
        "other.org:443",
        "example.ru",
    ]
    .iter()
    .enumerate()
    {
        log.push_str(&format!(
            "{host} 192.0.2.{i} - - [03/Nov/2026:12:0{i}:00 +0300] \"GET /p{i} HTTP/1.1\" 200 10 \"-\" \"{ua}\"\n"
        ));
    }
    std::fs::write(dir.path().join("vhost.log"), log).unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "site = \"example.ru\"\ninputs = [\"vhost.log\"]\nformat = \"vhost_combined\"\nkey = \"ephemeral\"\nk = 2\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(&p, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = run_record(&out);
    assert_eq!(r["filtered"]["other_site"], 1);
    assert_eq!(r["pageviews"], 3);
    assert_eq!(
        ints(&table(&out, "overview", "2026-11-03"), "visitors"),
        [Some(3)]
    );
}

#[test]
fn cli_key_ring_rotation_run_and_destruction() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let ring_s = ring.to_str().unwrap();
    for from in ["2026-11-01", "2026-11-04"] {
        let o = logveil()
            .args(["key", "rotate", "--key-dir", ring_s, "--from", from])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // The small sample spans 2026-11-03 and -04: two periods, two masters.
    let out = dir.path().join("out");
    let o = run(&small_pipeline(), &out, &["--key-dir", ring_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = run_record(&out);
    assert_eq!(r["key_mode"], "key_ring");
    let baseline = dir.path().join("baseline");
    assert!(run(&small_pipeline(), &baseline, &[]).status.success());
    assert_eq!(
        parquet_hashes(&out),
        parquet_hashes(&baseline),
        "tables do not depend on the key"
    );
    // Destroying the period that ended on 2026-11-04 leaves no key for 2026-11-03: a run
    // that needs it fails with a usage error naming the day, and publishes nothing.
    let o = logveil()
        .args([
            "key",
            "destroy",
            "--key-dir",
            ring_s,
            "--before",
            "2026-11-04",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("2026-11-01"));
    let out2 = dir.path().join("out2");
    let o = run(&small_pipeline(), &out2, &["--key-dir", ring_s]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("covers 2026-11-03"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out2.join("overview").exists());
    let o = logveil()
        .args(["key", "list", "--key-dir", ring_s])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    assert_eq!(listed.lines().count(), 1);
    assert!(listed.starts_with("2026-11-04"));
    let log = std::fs::read_to_string(ring.join("key-log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
}

#[test]
fn cli_outputs_do_not_depend_on_buckets_or_threads() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let demo = repo().join("pipelines/demo.toml");
    let run_with = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let o = logveil()
            .env("XDG_STATE_HOME", &state)
            .args(["run", "--pipeline"])
            .arg(&demo)
            .arg("--output")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        parquet_hashes(&out)
    };
    let one = run_with("one", &["--buckets", "1", "--threads", "1"]);
    assert_eq!(run_with("five", &["--buckets", "5"]), one);
    assert_eq!(one.len(), 13 * 4, "13 tables with returning visitors on");
    assert_eq!(
        run_with("seven", &["--buckets", "7", "--threads", "2"]),
        one
    );
    assert_eq!(
        run_with("many", &["--buckets", "64", "--threads", "3"]),
        one
    );
    // The encrypted spill is gone once the run ends.
    let spill = state.join("logveil/demo/spill");
    assert!(!spill.exists() || std::fs::read_dir(&spill).unwrap().next().is_none());
}

#[test]
fn cli_state_dir_inside_the_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    let log = repo().join("sample-data/small/access.log");
    std::fs::write(
        &p,
        format!("site = \"example.ru\"\ninputs = [{log:?}]\nkey = \"ephemeral\"\noutput = \"out\"\nstate_dir = \"out/state\"\n"),
    )
    .unwrap();
    let o = logveil()
        .args(["run", "--pipeline"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("inside the output directory"));
}

/// zstd (two frames), bzip2 (two streams) and standard input give the very files the plain
/// log gives: compression is found by magic bytes, not by name, and no frame is lost.
#[test]
fn cli_zstd_bzip2_and_stdin_inputs_equal_the_plain_log() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::read(repo().join("sample-data/small/access.log")).unwrap();
    let half = log.len() / 2
        + log[log.len() / 2..]
            .iter()
            .position(|b| *b == b'\n')
            .unwrap()
        + 1;
    let plain = dir.path().join("plain");
    assert!(run(&small_pipeline(), &plain, &[]).status.success());
    let want = parquet_hashes(&plain);

    let mut zst = zstd::encode_all(&log[..half], 3).unwrap();
    zst.extend(zstd::encode_all(&log[half..], 3).unwrap());
    let zst_file = dir.path().join("access.log.1"); // no telling extension
    std::fs::write(&zst_file, zst).unwrap();
    let mut bz = Vec::new();
    for part in [&log[..half], &log[half..]] {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        e.write_all(part).unwrap();
        bz.extend(e.finish().unwrap());
    }
    let bz_file = dir.path().join("access.log.2");
    std::fs::write(&bz_file, bz).unwrap();
    for (name, file, compression) in [("zstd", &zst_file, "zstd"), ("bzip2", &bz_file, "bzip2")] {
        let out = dir.path().join(name);
        let o = run(
            &small_pipeline(),
            &out,
            &["--input", file.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(parquet_hashes(&out), want, "{name}");
        assert_eq!(run_record(&out)["inputs"][0]["compression"], compression);
    }

    let out = dir.path().join("stdin");
    let o = logveil()
        .args(["run", "--pipeline"])
        .arg(small_pipeline())
        .arg("--output")
        .arg(&out)
        .args(["--input", "-"])
        .write_stdin(log.clone())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(parquet_hashes(&out), want, "standard input");
    assert_eq!(run_record(&out)["inputs"][0]["path"], "-");
}

/// The input manifest: after a run has seen every input, a `--date` run reads only the
/// inputs that can hold events of the date's window, and publishes the same files.
#[test]
fn cli_date_runs_skip_inputs_the_manifest_rules_out() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    let pipeline = |state: &str| {
        format!(
            "site = \"example.ru\"\nsite_hosts = [\"example.ru\", \"www.example.ru\", \"shop.example.ru\"]\n\
             inputs = [\"{}/sample-data/realistic/*.log.gz\"]\ntime_zone = \"Europe/Moscow\"\n\
             key = \"ephemeral\"\nk = 5\nstate_dir = \"{state}\"\n",
            repo().display()
        )
    };
    std::fs::write(&p, pipeline("state")).unwrap();
    assert!(run(&p, &dir.path().join("all"), &[]).status.success());
    let out = dir.path().join("out");
    let o = run(&p, &out, &["--date", "2026-11-02"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = run_record(&out);
    assert_eq!(
        r["inputs"].as_array().unwrap().len(),
        2,
        "the 4 November log is not read"
    );
    assert!(r["notes"].to_string().contains("1 input(s) skipped"));
    // The same files as a run that reads everything (a fresh state dir, no manifest).
    let fresh = dir.path().join("fresh.toml");
    std::fs::write(&fresh, pipeline("fresh-state")).unwrap();
    let full = dir.path().join("full");
    assert!(
        run(&fresh, &full, &["--date", "2026-11-02"])
            .status
            .success()
    );
    assert_eq!(run_record(&full)["inputs"].as_array().unwrap().len(), 3);
    assert_eq!(parquet_hashes(&out), parquet_hashes(&full));
}

/// `--since-last`: the first run publishes every day; with nothing new, the next publishes
/// nothing; a log that grew gets its days recomputed.
#[test]
fn cli_since_last_publishes_only_days_of_new_or_changed_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::copy(repo().join("sample-data/small/access.log"), &log).unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "site = \"example.ru\"\ninputs = [\"access.log\"]\ntime_zone = \"Europe/Moscow\"\nkey = \"ephemeral\"\nk = 2\nstate_dir = \"state\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let dates = |extra: &[&str]| {
        let o = run(&p, &out, extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        record_dates(&run_record(&out))
    };
    assert_eq!(dates(&["--since-last"]), ["2026-11-03", "2026-11-04"]);
    let before = parquet_hashes(&out);
    assert!(dates(&["--since-last"]).is_empty(), "nothing new");
    assert!(
        run_record(&out)["notes"]
            .to_string()
            .contains("no input is new or changed")
    );
    assert_eq!(parquet_hashes(&out), before);
    // The log grows (a visit late on the 4th): its days are recomputed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("198.51.100.99 - - [04/Nov/2026:22:00:00 +0300] \"GET /late HTTP/1.1\" 200 5 \"-\" \"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\"\n");
    std::fs::write(&log, text).unwrap();
    let republished = dates(&["--since-last"]);
    assert!(
        republished.contains(&"2026-11-04".to_string()),
        "{republished:?}"
    );
}

/// Standard input is read once. When a managed key ring first meets an epoch without a
/// master, the run adds the master and would read its inputs again: with standard input it
/// stops instead, publishes nothing and says to run again; the second run gives the files
/// the same log read from a file gives (whatever the masters, the files are the same).
#[test]
fn cli_standard_input_is_never_read_twice_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let demo = repo().join("pipelines/demo.toml");
    let log = repo().join("sample-data/realistic/access-2026-11-03.log.gz");
    let from_stdin = |out: &std::path::Path| {
        logveil()
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .args(["run", "--pipeline"])
            .arg(&demo)
            .arg("--output")
            .arg(out)
            .args(["--input", "-"])
            .write_stdin(std::fs::read(&log).unwrap())
            .output()
            .unwrap()
    };
    let out = dir.path().join("stdin");
    let first = from_stdin(&out);
    assert_eq!(first.status.code(), Some(1));
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(err.contains("run the same command again"), "{err}");
    assert!(!out.join("overview").exists(), "nothing published");
    let second = from_stdin(&out);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let file = dir.path().join("file");
    let o = run(&demo, &file, &["--input", log.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!parquet_hashes(&file).is_empty());
    assert_eq!(parquet_hashes(&out), parquet_hashes(&file));
}
