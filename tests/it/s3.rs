//! Output directories in an S3-compatible bucket: `logveil report` and `logveil show` read
//! `s3://bucket/prefix` exactly as they read the same files on disk. A local moto server
//! (PyPI `moto[server]`, installed into the test venv) stands in for S3.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};

use crate::helpers::*;

struct Moto {
    child: Child,
    endpoint: String,
    // One server at a time: tests that pick free ports concurrently could otherwise end up
    // talking to each other's server.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static MOTO: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Option<(Moto, std::path::PathBuf)> {
    let guard = MOTO.lock().unwrap_or_else(|e| e.into_inner());
    let venv = python_venv(&["moto[server]"])?;
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(venv.join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        _one_at_a_time: guard,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Ours, not another process that took the port first.
            if moto.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            return Some((moto, venv));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// The binary, pointed at a store by the standard AWS variables.
fn logveil_s3(endpoint: &str) -> assert_cmd::Command {
    let mut cmd = logveil();
    cmd.env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
    cmd
}

/// A copy of the realistic sample's three gzip logs in `dir/logs`.
fn realistic_logs(dir: &Path) -> std::path::PathBuf {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for f in std::fs::read_dir(repo().join("sample-data/realistic")).unwrap() {
        let f = f.unwrap().path();
        if f.to_string_lossy().ends_with(".log.gz") {
            std::fs::copy(&f, logs.join(f.file_name().unwrap())).unwrap();
        }
    }
    logs
}

/// Uploads every file under `dir` to `s3://bucket/prefix/…` with boto3.
fn upload(venv: &Path, endpoint: &str, dir: &Path, bucket: &str, prefix: &str) {
    let script = r#"
import os, sys, boto3
endpoint, root, bucket, prefix = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket=bucket)
for base, _, files in os.walk(root):
    for f in files:
        path = os.path.join(base, f)
        s3.upload_file(path, bucket, prefix + "/" + os.path.relpath(path, root))
"#;
    let o = Command::new(venv.join("bin/python"))
        .args(["-c", script, endpoint])
        .arg(dir)
        .args([bucket, prefix])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn s3_report_and_show_read_a_bucket_like_a_directory() {
    let Some((moto, venv)) = moto() else {
        eprintln!("SKIPPED s3_report_and_show: moto[server] could not be installed or started");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&repo().join("sample-data/small/pipeline.toml"), &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    upload(&venv, &moto.endpoint, &out, "analytics", "sites/example");
    let with_s3 = |args: &[&str]| logveil_s3(&moto.endpoint).args(args).output().unwrap();
    let local = dir.path().join("local.html");
    let remote = dir.path().join("remote.html");
    let o = logveil()
        .arg("report")
        .arg(&out)
        .args(["--lang", "en", "-o"])
        .arg(&local)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = with_s3(&[
        "report",
        "s3://analytics/sites/example",
        "--lang",
        "en",
        "-o",
        remote.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&local).unwrap(),
        std::fs::read_to_string(&remote).unwrap(),
        "the same report from the bucket as from the directory"
    );
    // Without -o, the report is PUT next to the tables.
    let o = with_s3(&["report", "s3://analytics/sites/example", "--lang", "en"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("s3://analytics/sites/example/report.html")
    );
    let o = with_s3(&[
        "show",
        "s3://analytics/sites/example",
        "--date",
        "2026-11-03",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["overview"][0]["visits"], 7);
    // A prefix with no output is a usage error, not an empty report.
    let o = with_s3(&["show", "s3://analytics/nothing-here"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `--input 's3://bucket/prefix/*.log.gz'`: objects listed by a glob over their keys and
/// streamed (gzip decoded on the way); the same files as the same logs on disk.
#[test]
fn s3_inputs_give_the_files_of_the_same_logs_on_disk() {
    let Some((moto, venv)) = moto() else {
        eprintln!("SKIPPED s3_inputs: moto[server] could not be installed or started");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let logs = realistic_logs(dir.path());
    std::fs::write(logs.join("notes.txt"), "not a log").unwrap();
    upload(&venv, &moto.endpoint, &logs, "weblogs", "nginx/example");
    let pipeline = repo().join("sample-data/small/pipeline.toml");
    let run_with = |input: &str, out: &std::path::Path| {
        let o = logveil_s3(&moto.endpoint)
            .args(["run", "--pipeline"])
            .arg(&pipeline)
            .arg("--output")
            .arg(out)
            .args(["--input", input])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("test"),
            "no credential printed"
        );
    };
    let local = dir.path().join("local");
    run_with(&format!("{}/*.log.gz", logs.display()), &local);
    let remote = dir.path().join("remote");
    run_with("s3://weblogs/nginx/example/*.log.gz", &remote);
    assert!(!parquet_hashes(&local).is_empty());
    assert_eq!(parquet_hashes(&remote), parquet_hashes(&local));
    let r = run_record(&remote);
    assert_eq!(
        r["inputs"].as_array().unwrap().len(),
        3,
        "the glob matched the three logs"
    );
    assert_eq!(r["inputs"][0]["compression"], "gzip");
}

/// `run --output s3://bucket/prefix`: the published objects keep the local layout (tables by
/// date, run records), `show` reads them back, and a re-run sees the earlier records.
#[test]
fn s3_outputs_keep_the_local_layout() {
    let Some((moto, venv)) = moto() else {
        eprintln!("SKIPPED s3_outputs: moto[server] could not be installed or started");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    upload(&venv, &moto.endpoint, &empty, "analytics-out", "x");
    let pipeline = repo().join("sample-data/small/pipeline.toml");
    let s3 = |args: &[&str]| logveil_s3(&moto.endpoint).args(args).output().unwrap();
    let p = pipeline.to_str().unwrap();
    let o = s3(&[
        "run",
        "--pipeline",
        p,
        "--output",
        "s3://analytics-out/site",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("s3://analytics-out/site/_runs/"));
    let local = dir.path().join("local");
    assert!(run(&pipeline, &local, &[]).status.success());
    let show = |out: &str| {
        let o = s3(&["show", out, "--date", "2026-11-03", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let mut remote = show("s3://analytics-out/site");
    let mut here = show(local.to_str().unwrap());
    remote["date"] = serde_json::Value::Null;
    here["date"] = serde_json::Value::Null;
    assert_eq!(remote, here);
    // A re-run of one date replaces it in place and leaves two committed run records.
    let o = s3(&[
        "run",
        "--pipeline",
        p,
        "--output",
        "s3://analytics-out/site",
        "--date",
        "2026-11-03",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = std::process::Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys,boto3;s3=boto3.client('s3',endpoint_url=sys.argv[1],aws_access_key_id='t',aws_secret_access_key='t',region_name='us-east-1');print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='analytics-out',Prefix='site/')['Contents']))",
            &moto.endpoint,
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(
        keys.lines()
            .filter(|k| k.starts_with("site/_runs/"))
            .count(),
        2,
        "{keys}"
    );
    assert!(keys.contains("site/overview/date=2026-11-03/part-0.parquet"));
    assert!(!keys.contains("_staging"), "{keys}");
}

/// A missing bucket, or a store that cannot be reached: a clear error naming the location,
/// never the secret key, a non-zero exit, and nothing published.
#[test]
fn s3_errors_name_the_location_and_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = repo().join("sample-data/small/pipeline.toml");
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = dir.path().join("out");
    let o = logveil()
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
        .env("AWS_SECRET_ACCESS_KEY", "very-secret-key-value")
        .env("AWS_REGION", "us-east-1")
        .args(["run", "--pipeline"])
        .arg(&pipeline)
        .arg("--output")
        .arg(&out)
        .args(["--input", "s3://no-such-bucket/logs/*.gz"])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s3://no-such-bucket/logs/*.gz"), "{err}");
    assert!(!err.contains("very-secret-key-value"), "{err}");
    assert!(!out.join("overview").exists());
}

/// The keys under `s3://bucket/prefix/`, listed with boto3.
fn keys(venv: &Path, endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let o = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sys,boto3;s3=boto3.client('s3',endpoint_url=sys.argv[1],aws_access_key_id='t',aws_secret_access_key='t',region_name='us-east-1');print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket=sys.argv[2],Prefix=sys.argv[3]).get('Contents',[])))",
            endpoint,
            bucket,
            prefix,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A run killed while it PUTs its files leaves a pending record and its lock behind; the
/// next run on the same state dir takes its own stale lock over, finishes that publication,
/// then runs: no pending record or lock remains, every published object matches a
/// committed record (the audit checks each file's hash), and the tables equal a local run's.
/// A run that holds the lock from elsewhere makes another exit 3 with nothing changed.
#[test]
fn s3_publication_is_locked_and_a_killed_one_is_finished_by_the_next_run() {
    let Some((moto, venv)) = moto() else {
        eprintln!("SKIPPED s3_publication: moto[server] could not be installed or started");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    upload(&venv, &moto.endpoint, &empty, "published", "x");
    let pipeline = repo().join("sample-data/small/pipeline.toml");
    let target = "s3://published/site";
    let state = dir.path().join("xdg");
    let s3_run = |fault: Option<&str>| {
        let mut cmd = logveil_s3(&moto.endpoint);
        cmd.env("XDG_STATE_HOME", &state)
            .args(["run", "--pipeline"])
            .arg(&pipeline)
            .args(["--output", target]);
        if let Some(n) = fault {
            cmd.env("LOGVEIL_FAULT_EXIT_AFTER_PUTS", n);
        }
        cmd.output().unwrap()
    };
    let o = s3_run(None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let finishes_the_interrupted_one = |o: &std::process::Output| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("finished the interrupted publication of run"),
            "{err}"
        );
    };
    let o = s3_run(Some("4"));
    assert_eq!(o.status.code(), Some(137), "stopped after its 4th PUT");
    let left = keys(&venv, &moto.endpoint, "published", "site/_runs/");
    assert!(
        left.iter().any(|k| k.ends_with(".pending.json")),
        "{left:?}"
    );
    assert!(left.contains(&"site/_runs/.lock".to_string()), "{left:?}");

    // Another machine's run is refused while the lock stands.
    let o = logveil_s3(&moto.endpoint)
        .env("XDG_STATE_HOME", dir.path().join("elsewhere"))
        .args(["run", "--pipeline"])
        .arg(&pipeline)
        .args(["--output", target])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s3://published/site/_runs/.lock"), "{err}");
    assert_eq!(
        keys(&venv, &moto.endpoint, "published", "site/_runs/"),
        left
    );

    finishes_the_interrupted_one(&s3_run(None));
    let runs = keys(&venv, &moto.endpoint, "published", "site/_runs/");
    assert_eq!(
        runs.len(),
        3,
        "three committed records, nothing else: {runs:?}"
    );
    assert!(
        runs.iter()
            .all(|k| k.ends_with(".json") && !k.ends_with(".pending.json"))
    );
    let o = logveil_s3(&moto.endpoint)
        .args(["audit", target])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let local = dir.path().join("local");
    assert!(run(&pipeline, &local, &[]).status.success());
    let show = |out: &str| {
        let o = logveil_s3(&moto.endpoint)
            .args(["show", out, "--date", "2026-11-03", "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["date"] = serde_json::Value::Null;
        v
    };
    assert_eq!(show(target), show(local.to_str().unwrap()));
    // Nothing of the publication is left in the state dir.
    let publish = state.join("logveil/small/publish");
    assert_eq!(std::fs::read_dir(&publish).unwrap().count(), 0);

    // Killed after its local commit, before its first PUT: the store shows nothing of it,
    // and the next run publishes it from the state dir's copy first.
    let o = s3_run(Some("0"));
    assert_eq!(o.status.code(), Some(137));
    let left = keys(&venv, &moto.endpoint, "published", "site/_runs/");
    assert!(
        !left.iter().any(|k| k.ends_with(".pending.json")),
        "{left:?}"
    );
    finishes_the_interrupted_one(&s3_run(None));
    let runs = keys(&venv, &moto.endpoint, "published", "site/_runs/");
    assert_eq!(
        runs.len(),
        5,
        "the interrupted run's record and the new one: {runs:?}"
    );
}

/// The pipeline's `[s3]` table (endpoint, region, plain HTTP, a private credentials file)
/// reaches a store without any AWS variable; a credentials file others can read is refused,
/// and the secret is never printed. Objects enter the input manifest by ETag, so a `--date`
/// run skips the objects that cannot hold the date.
#[test]
fn s3_settings_come_from_the_pipeline_and_objects_enter_the_manifest() {
    let Some((moto, venv)) = moto() else {
        eprintln!("SKIPPED s3_settings: moto[server] could not be installed or started");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let logs = realistic_logs(dir.path());
    upload(&venv, &moto.endpoint, &logs, "weblogs", "nginx");
    let creds = dir.path().join("s3.toml");
    std::fs::write(
        &creds,
        "access_key_id = \"AKIAPIPELINE\"\nsecret_access_key = \"pipeline-secret-value\"\n",
    )
    .unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            "site = \"example.ru\"\nsite_hosts = [\"example.ru\", \"www.example.ru\", \"shop.example.ru\"]\n\
             inputs = [\"s3://weblogs/nginx/*.log.gz\"]\ntime_zone = \"Europe/Moscow\"\n\
             key = \"ephemeral\"\nk = 5\nstate_dir = \"state\"\n\
             [s3]\nendpoint = \"{}\"\nregion = \"ru-central1\"\nallow_http = true\ncredentials_file = \"s3.toml\"\n",
            moto.endpoint
        ),
    )
    .unwrap();
    // No AWS variable at all: everything comes from the pipeline.
    let bare = |out: &Path, extra: &[&str]| {
        let mut cmd = logveil();
        for v in [
            "AWS_ENDPOINT",
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_ALLOW_HTTP",
        ] {
            cmd.env_remove(v);
        }
        cmd.args(["run", "--pipeline"])
            .arg(&p)
            .arg("--output")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = bare(&dir.path().join("refused"), &[]);
        assert_ne!(o.status.code(), Some(0));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("s3.toml") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains("pipeline-secret-value"), "{err}");
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let all = dir.path().join("all");
    let o = bare(&all, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = run_record(&all);
    assert_eq!(r["inputs"].as_array().unwrap().len(), 3);
    assert!(
        r["inputs"][0]["size_bytes"].as_u64().unwrap() > 0,
        "the listed size"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/manifest.json")).unwrap())
            .unwrap();
    let entry = &manifest["inputs"]["s3://weblogs/nginx/access-2026-11-04.log.gz"];
    assert!(entry["etag"].is_string(), "{manifest}");
    // A missing bucket, as input or as output: an error naming it, and nothing published.
    let before = parquet_hashes(&all);
    let o = bare(&all, &["--input", "s3://no-such-bucket/logs/*.gz"]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s3://no-such-bucket/logs/*.gz"), "{err}");
    assert!(!err.contains("pipeline-secret-value"), "{err}");
    assert_eq!(parquet_hashes(&all), before, "previous outputs untouched");
    let o = bare(Path::new("s3://no-such-bucket/site"), &[]);
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s3://no-such-bucket/site"), "{err}");
    let day = dir.path().join("day");
    let o = bare(&day, &["--date", "2026-11-02"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = run_record(&day);
    assert_eq!(
        r["inputs"].as_array().unwrap().len(),
        2,
        "the 4 November object is not read: {}",
        r["inputs"]
    );
}

/// A staged run (`contrib/stages.sh`) over objects: every stage lists them again (sizes for the
/// run record, versions for the manifest); the tables equal `logveil run`'s over the same
/// objects, and a staged run publishing to the store passes the audit and shows the same day.
#[test]
fn s3_a_staged_run_reads_and_publishes_objects_as_logveil_run_does() {
    let Some((moto, venv)) = moto() else {
        eprintln!("SKIPPED s3_a_staged_run: moto[server] could not be installed or started");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let logs = realistic_logs(dir.path());
    upload(&venv, &moto.endpoint, &logs, "weblogs", "nginx/example");
    upload(
        &venv,
        &moto.endpoint,
        &dir.path().join("empty"),
        "published",
        "x",
    );
    let pipeline = repo().join("sample-data/small/pipeline.toml");
    let input = "s3://weblogs/nginx/example/*.log.gz";
    let single = dir.path().join("single");
    let o = logveil_s3(&moto.endpoint)
        .args(["run", "--pipeline"])
        .arg(&pipeline)
        .arg("--output")
        .arg(&single)
        .args(["--input", input])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let staged = |out: &str, n: &str| {
        let o = Command::new(repo().join("contrib/stages.sh"))
            .env("XDG_STATE_HOME", dir.path().join(format!("xdg-{n}")))
            .env("AWS_ENDPOINT", &moto.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .args([
                "--logveil",
                env!("CARGO_BIN_EXE_logveil"),
                "--tasks",
                "2",
                "--",
            ])
            .arg("--pipeline")
            .arg(&pipeline)
            .args(["--input", input, "--output", out, "--buckets", "3"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let local = dir.path().join("staged");
    staged(local.to_str().unwrap(), "a");
    assert_eq!(parquet_hashes(&local), parquet_hashes(&single));
    let record = run_record(&local);
    let inputs = record["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 3);
    assert!(
        inputs.iter().all(|i| i["size_bytes"].as_u64() > Some(0)),
        "{inputs:?}"
    );
    // The manifest knows the objects (a later --date run can skip them).
    let manifest = std::fs::read_to_string(dir.path().join("xdg-a/logveil/small/manifest.json"))
        .unwrap_or_default();
    assert!(
        manifest.contains("s3://weblogs/nginx/example/"),
        "{manifest}"
    );

    staged("s3://published/site", "b");
    let audit = logveil_s3(&moto.endpoint)
        .args(["audit", "s3://published/site"])
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let show = |out: &str| {
        let o = logveil_s3(&moto.endpoint)
            .args(["show", out, "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(show("s3://published/site"), show(single.to_str().unwrap()));
}
