//! The staged run (`logveil stage …`, chained by `contrib/stages.sh` with `xargs -P 2`) is
//! the engine-free version of the Spark job's contract: whatever the bucket count and however
//! the inputs are split over tasks, its tables are byte-identical to `logveil run`'s; a task
//! killed and run again changes nothing; nothing raw is ever in the work directory, which is
//! gone when the job ends.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::*;

/// The demo pipeline over `inputs`, with its own state dir under `dir`.
fn pipeline(dir: &Path, name: &str, inputs: &str) -> PathBuf {
    let demo = std::fs::read_to_string(repo().join("pipelines/demo.toml")).unwrap();
    let text = demo
        .replace(
            "inputs = [\"../sample-data/realistic/*.log.gz\"]",
            &format!("inputs = [\"{inputs}\"]\nstate_dir = \"state-{name}\""),
        )
        .replace(
            "costs = \"../sample-data/realistic/costs.csv\"",
            &format!(
                "costs = \"{}/sample-data/realistic/costs.csv\"",
                repo().display()
            ),
        )
        .replace("name = \"demo\"", &format!("name = \"{name}\""));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The three sample days cut into 7 files (in their order; some gzip, some plain).
fn split_inputs(dir: &Path) -> PathBuf {
    let parts = dir.join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    let mut lines: Vec<u8> = Vec::new();
    for day in ["02", "03", "04"] {
        let gz = std::fs::File::open(
            repo().join(format!("sample-data/realistic/access-2026-11-{day}.log.gz")),
        )
        .unwrap();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut lines)
            .unwrap();
    }
    let all: Vec<&[u8]> = lines.split_inclusive(|&b| b == b'\n').collect();
    let per = all.len().div_ceil(7);
    for (i, chunk) in all.chunks(per).enumerate() {
        let bytes: Vec<u8> = chunk.concat();
        if i % 2 == 0 {
            let f = std::fs::File::create(parts.join(format!("part-{i}.log.gz"))).unwrap();
            let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::fs::write(parts.join(format!("part-{i}.log")), bytes).unwrap();
        }
    }
    parts
}

/// `contrib/stages.sh` with `tasks` shard tasks, 2 at a time, over `pipeline` into `out`.
fn stages_sh(
    dir: &Path,
    work: &Path,
    tasks: usize,
    pipeline: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(repo().join("contrib/stages.sh"))
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .args(["--logveil", env!("CARGO_BIN_EXE_logveil")])
        .args(["--tasks", &tasks.to_string(), "--parallel", "2", "--work"])
        .arg(work)
        .args(["--", "--pipeline"])
        .arg(pipeline)
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// `contrib/stages.sh` over `staged` into `out` must publish what a single run published in
/// `single_out`, and leave no work directory; returns the published files' hashes.
fn assert_staged_equals_single(
    dir: &Path,
    single_out: &Path,
    staged: &Path,
    out: &Path,
    tasks: usize,
    extra: &[&str],
) -> std::collections::BTreeMap<String, String> {
    let work = dir.join("work");
    ok(&stages_sh(dir, &work, tasks, staged, out, extra));
    let hashes = parquet_hashes(out);
    assert_eq!(parquet_hashes(single_out), hashes);
    assert!(!work.exists(), "the work directory outlived the job");
    hashes
}

/// `logveil stage ARGS --work WORK`.
fn stage(work: &Path, args: &[&str]) -> std::process::Output {
    logveil()
        .arg("stage")
        .args(args)
        .arg("--work")
        .arg(work)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn staged_runs_are_byte_identical_to_logveil_run_for_any_buckets_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let parts = split_inputs(dir.path());
    let glob = format!("{}/part-*", parts.display());
    let p = pipeline(dir.path(), "single", &glob);
    let out = dir.path().join("out-run");
    let o = run(&p, &out, &[]);
    ok(&o);
    let expected = parquet_hashes(&out);
    // 4 days × 13 tables.
    assert_eq!(expected.len(), 52, "{expected:?}");

    for (buckets, tasks) in [(3, 3), (11, 2)] {
        let name = format!("staged-{buckets}");
        let p = pipeline(dir.path(), &name, &glob);
        let out = dir.path().join(format!("out-{name}"));
        let work = dir.path().join(format!("work-{name}"));
        let o = stages_sh(
            dir.path(),
            &work,
            tasks,
            &p,
            &out,
            &["--buckets", &buckets.to_string()],
        );
        ok(&o);
        let printed = String::from_utf8_lossy(&o.stdout);
        assert!(printed.contains("visits: 5489"), "{printed}");
        assert_eq!(
            parquet_hashes(&out),
            expected,
            "{buckets} buckets, {tasks} shard tasks"
        );
        assert!(!work.exists(), "the work directory outlived the job");
        // The run record says what the single run's says of lines and visits.
        let (a, b) = (run_record(&dir.path().join("out-run")), run_record(&out));
        for field in ["lines", "pageviews", "visits", "disclosure", "inputs"] {
            assert_eq!(a[field], b[field], "{field}");
        }
    }
}

/// Nightly: a second day on top of the first one's visit log (returning visitors,
/// attribution across runs) is the same staged as single.
#[test]
fn a_staged_nightly_run_reads_the_visit_log_as_logveil_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let glob = format!("{}/sample-data/realistic/*.log.gz", repo().display());
    let single = pipeline(dir.path(), "single", &glob);
    let staged = pipeline(dir.path(), "staged", &glob);
    let (out_single, out_staged) = (dir.path().join("o1"), dir.path().join("o2"));
    for date in ["2026-11-02", "2026-11-03"] {
        ok(&run(&single, &out_single, &["--date", date]));
        let o = stages_sh(
            dir.path(),
            &dir.path().join("work"),
            2,
            &staged,
            &out_staged,
            &["--date", date, "--buckets", "4"],
        );
        ok(&o);
    }
    let (a, b) = (parquet_hashes(&out_single), parquet_hashes(&out_staged));
    assert_eq!(a.len(), 26);
    assert_eq!(a, b);
    // The second day did see returning visitors (from the first day's visit log).
    let loyalty = table(&out_staged, "loyalty", "2026-11-03");
    let returning = strs(&loyalty, "dimension")
        .iter()
        .zip(strs(&loyalty, "bucket"))
        .zip(ints(&loyalty, "visitors"))
        .find(|((d, b), _)| {
            d.as_deref() == Some("visitor_type") && b.as_deref() == Some("returning")
        })
        .and_then(|(_, v)| v);
    assert!(returning.is_some_and(|v| v > 0), "{loyalty:?}");
}

/// The stage commands by hand, as an engine calls them: a shard task killed half-way and run
/// again, a reduce task run twice, and what the work directory holds meanwhile.
#[test]
fn retried_tasks_change_nothing_and_the_work_directory_holds_nothing_raw() {
    let dir = tempfile::tempdir().unwrap();
    let parts = split_inputs(dir.path());
    let glob = format!("{}/part-*", parts.display());
    let single = pipeline(dir.path(), "single", &glob);
    let out_single = dir.path().join("o1");
    ok(&run(&single, &out_single, &[]));

    let staged = pipeline(dir.path(), "staged", &glob);
    let out = dir.path().join("o2");
    let work = dir.path().join("work");
    let bin = env!("CARGO_BIN_EXE_logveil");
    let stage = |args: &[&str]| stage(&work, args);
    let o = stage(&[
        "plan",
        "--pipeline",
        staged.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--buckets",
        "3",
    ]);
    ok(&o);
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        plan.contains("files=7\n") && plan.contains("buckets=3\n"),
        "{plan}"
    );
    // A work directory inside the output is refused.
    let inside = self::stage(
        &out.join("work"),
        &[
            "plan",
            "--pipeline",
            staged.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(inside.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&inside.stderr).contains("inside the output"));
    // A second plan into the same work directory is refused.
    let again = stage(&["plan", "--pipeline", staged.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));

    // An input the plan does not have is a usage error, naming the range.
    let o = stage(&["shard", "--task", "x", "--inputs", "7"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 to 6"));

    // Task a: killed while it works, then run again to the end.
    let mut child = Command::new(bin)
        .args(["stage", "shard", "--task", "a", "--inputs", "0-3", "--work"])
        .arg(&work)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let _ = child.kill();
    let _ = child.wait();
    // A gather before every input is sharded names what is missing.
    let o = stage(&["gather"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("was not sharded"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    ok(&stage(&["shard", "--task", "a", "--inputs", "0-3"]));
    ok(&stage(&["shard", "--task", "b", "--inputs", "4,5,6"]));
    let mut gathered = stage(&["gather"]);
    ok(&gathered);
    if String::from_utf8_lossy(&gathered.stdout).trim() == "reshard" {
        // The managed key ring gained its masters: the shard stage once more.
        ok(&stage(&["shard", "--task", "a", "--inputs", "0-3"]));
        ok(&stage(&["shard", "--task", "b", "--inputs", "4,5,6"]));
        gathered = stage(&["gather"]);
        ok(&gathered);
    }
    assert_eq!(
        String::from_utf8_lossy(&gathered.stdout).trim(),
        "days=2026-11-02..2026-11-05"
    );
    // Merging before every bucket is reduced fails and says what to do.
    let o = stage(&["merge"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("did the stage before this one finish"));
    // A bucket file lost or cut short in transit is found before anything is computed.
    let file = files_under(&work.join("shard/b"))
        .into_iter()
        .find(|f| {
            f.to_string_lossy().ends_with("-b0.bin")
                && std::fs::metadata(f).is_ok_and(|m| m.len() > 0)
        })
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 1]).unwrap();
    let o = stage(&["reduce", "--bucket", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing or cut short"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(&file, &bytes).unwrap();
    for b in ["0", "1", "2", "1"] {
        ok(&stage(&["reduce", "--bucket", b]));
    }

    // Nothing in the work directory is raw: no address, user agent or log line in the clear.
    let raw = {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(
            std::fs::File::open(parts.join("part-0.log.gz")).unwrap(),
        )
        .read_to_string(&mut s)
        .unwrap();
        s
    };
    let first = raw.lines().find(|l| l.contains("Mozilla")).unwrap();
    let ip = first.split(' ').next().unwrap();
    let ua = first.rsplit('"').nth(1).unwrap();
    let mut files = 0;
    for f in files_under(&work) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for needle in [ip, ua, "Mozilla/5.0", "GET /", "utm_source"] {
            assert!(!text.contains(needle), "{} holds {needle:?}", f.display());
        }
        files += 1;
    }
    assert!(files > 20, "{files}");
    // Everything is private to the user running the job.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&work).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    let o = stage(&["merge"]);
    ok(&o);
    assert_eq!(parquet_hashes(&out), parquet_hashes(&out_single));
    assert!(!work.exists());
}

/// Shard and reduce tasks never read a master key: they run with the key file gone, and
/// what they get (`keys.derived`) does not hold it.
#[test]
fn tasks_run_without_the_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    keygen(&key);
    let hidden = dir.path().join("elsewhere.key");
    let p = keyed_pipeline(dir.path(), "p", key.to_str().unwrap(), "");
    let single = dir.path().join("single");
    ok(&run(&p, &single, &[]));
    let (out, work) = (dir.path().join("staged"), dir.path().join("work"));
    let stage = |args: &[&str]| {
        let o = stage(&work, args);
        ok(&o);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let plan = stage(&[
        "plan",
        "--pipeline",
        p.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--buckets",
        "2",
    ]);
    assert!(plan.contains("files=3\n"), "{plan}");
    let master = std::fs::read_to_string(&key).unwrap();
    let derived = std::fs::read_to_string(work.join("keys.derived")).unwrap();
    assert!(!derived.contains(master.trim()));
    std::fs::rename(&key, &hidden).unwrap();
    stage(&["shard", "--task", "all", "--inputs", "0-2"]);
    std::fs::rename(&hidden, &key).unwrap();
    let mut gathered = stage(&["gather"]);
    if gathered.trim() == "reshard" {
        std::fs::rename(&key, &hidden).unwrap();
        stage(&["shard", "--task", "all", "--inputs", "0-2"]);
        std::fs::rename(&hidden, &key).unwrap();
        gathered = stage(&["gather"]);
    }
    assert!(gathered.starts_with("days="), "{gathered}");
    std::fs::rename(&key, &hidden).unwrap();
    stage(&["reduce", "--bucket", "0"]);
    stage(&["reduce", "--bucket", "1"]);
    std::fs::rename(&hidden, &key).unwrap();
    stage(&["merge"]);
    assert_eq!(parquet_hashes(&out), parquet_hashes(&single));
}

/// A pipeline with its key in `dir` and `extra` settings, over the sample days.
fn keyed_pipeline(dir: &Path, name: &str, key: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nsite = \"example.ru\"\nsite_hosts = [\"example.ru\", \"www.example.ru\", \"shop.example.ru\"]\n\
             inputs = [\"{}/sample-data/realistic/*.log.gz\"]\ntime_zone = \"Europe/Moscow\"\n\
             key = \"{key}\"\nk = 5\nstate_dir = \"state-{name}\"\n{extra}",
            repo().display()
        ),
    )
    .unwrap();
    p
}

/// With differential privacy the noise is drawn once, at merge, from the same key and the
/// same totals: a staged run releases the same noisy files and charges the same ε.
#[test]
fn a_staged_run_with_differential_privacy_releases_the_same_noisy_files() {
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("master.key"));
    let dp = "[differential_privacy]\nepsilon_budget = 10.0\ndp_window_days = 3\nepsilon = 1.0\n";
    let single = keyed_pipeline(dir.path(), "single", "master.key", dp);
    let staged = keyed_pipeline(dir.path(), "staged", "master.key", dp);
    let (o1, o2) = (dir.path().join("o1"), dir.path().join("o2"));
    ok(&run(&single, &o1, &[]));
    let published =
        assert_staged_equals_single(dir.path(), &o1, &staged, &o2, 2, &["--buckets", "5"]);
    assert_eq!(published.len(), 44, "11 tables × 4 days");
    let ledger = |name: &str| -> serde_json::Value {
        let text =
            std::fs::read_to_string(dir.path().join(format!("state-{name}/ledger.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| serde_json::json!([e["table"], e["date"], e["epsilon"], e["digest"]]))
            .collect()
    };
    assert_eq!(ledger("single"), ledger("staged"));
}

/// An ephemeral key is one key for the whole staged run (made by `plan`, kept in the work
/// directory, gone with it): the tables equal a single run's.
#[test]
fn a_staged_run_with_an_ephemeral_key_keeps_one_key_for_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let single = keyed_pipeline(dir.path(), "single", "ephemeral", "");
    let staged = keyed_pipeline(dir.path(), "staged", "ephemeral", "");
    let (o1, o2) = (dir.path().join("o1"), dir.path().join("o2"));
    ok(&run(&single, &o1, &[]));
    assert_staged_equals_single(dir.path(), &o1, &staged, &o2, 3, &[]);
}

/// A run that changes the state dir (visit log, keys) between a staged run's gather and its
/// merge makes the merge refuse to publish (exit 3), rather than overwrite its visit log.
#[test]
fn a_merge_refuses_when_another_run_changed_the_state_between() {
    let dir = tempfile::tempdir().unwrap();
    let glob = format!("{}/sample-data/realistic/*.log.gz", repo().display());
    let p = pipeline(dir.path(), "shared", &glob);
    let work = dir.path().join("work");
    let out = dir.path().join("out");
    let stage = |args: &[&str]| stage(&work, args);
    // A first run makes the managed ring's masters, so the staged run needs no reshard.
    ok(&run(
        &p,
        &dir.path().join("first"),
        &["--date", "2026-11-02"],
    ));
    ok(&stage(&[
        "plan",
        "--pipeline",
        p.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--date",
        "2026-11-03",
        "--buckets",
        "2",
    ]));
    ok(&stage(&["shard", "--task", "all", "--inputs", "0-2"]));
    let gathered = stage(&["gather"]);
    ok(&gathered);
    assert!(String::from_utf8_lossy(&gathered.stdout).starts_with("days="));
    ok(&stage(&["reduce", "--bucket", "0"]));
    ok(&stage(&["reduce", "--bucket", "1"]));
    // Meanwhile, a run of the same pipeline rewrites a day of the visit log.
    ok(&run(
        &p,
        &dir.path().join("other"),
        &["--date", "2026-11-02"],
    ));
    let o = stage(&["merge"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("changed the state dir"));
    assert!(!out.exists(), "nothing was written to the output");
}

/// A gather that derived more keys and was killed before it removed the shard outputs made
/// with the old ones: the next gather finds those outputs stale and asks for the shard stage
/// again, rather than failing or using them.
#[test]
fn shard_outputs_made_before_the_keys_were_derived_again_are_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let glob = format!("{}/sample-data/realistic/*.log.gz", repo().display());
    // A new managed key ring: the first gather must add its masters and derive their keys.
    let p = pipeline(dir.path(), "fresh", &glob);
    let work = dir.path().join("work");
    let out = dir.path().join("out");
    ok(&stage(
        &work,
        &[
            "plan",
            "--pipeline",
            p.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--buckets",
            "2",
        ],
    ));
    let gather = || {
        let o = stage(&work, &["gather"]);
        ok(&o);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    ok(&stage(
        &work,
        &["shard", "--task", "all", "--inputs", "0-2"],
    ));
    let old = dir.path().join("old-shard");
    std::fs::rename(work.join("shard"), &old).unwrap();
    ok(&stage(
        &work,
        &["shard", "--task", "all", "--inputs", "0-2"],
    ));
    assert_eq!(gather(), "reshard");
    // As if the gather had been killed before removing them: the old outputs are back.
    std::fs::rename(&old, work.join("shard")).unwrap();
    assert_eq!(gather(), "reshard");
    assert!(!work.join("shard").exists());
    ok(&stage(
        &work,
        &["shard", "--task", "all", "--inputs", "0-2"],
    ));
    assert_eq!(gather(), "days=2026-11-02..2026-11-05");
    ok(&stage(&work, &["reduce", "--bucket", "0"]));
    ok(&stage(&work, &["reduce", "--bucket", "1"]));
    let o = stage(&work, &["merge"]);
    ok(&o);
    let record = run_record(&out);
    let notes = record["notes"].to_string();
    assert!(
        notes.contains("managed key ring: added the master"),
        "{notes}"
    );
    assert!(notes.contains("were dropped"), "{notes}");
}
