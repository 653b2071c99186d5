//! A run killed at any moment (`kill -9`) leaves the previous outputs as they were, and the
//! next run completes normally with the same files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::helpers::*;

/// The published files: staging and run records (names starting with `_`) are not.
fn published(out: &Path) -> BTreeMap<String, String> {
    files_under(out)
        .into_iter()
        .filter(|p| {
            let rel = p.strip_prefix(out).unwrap().to_string_lossy().into_owned();
            !rel.starts_with('_') && rel != "report.html"
        })
        .map(|p| {
            let rel = p.strip_prefix(out).unwrap().display().to_string();
            (
                rel,
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn kill_at_any_moment_leaves_outputs_intact_and_the_next_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            "site = \"example.ru\"\nsite_hosts = [\"example.ru\", \"www.example.ru\", \"shop.example.ru\"]\n\
             inputs = [\"{}/sample-data/realistic/*.log.gz\"]\ntime_zone = \"Europe/Moscow\"\n\
             key = \"ephemeral\"\nk = 5\noutput = \"out\"\nstate_dir = \"state\"\n",
            repo().display()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(&p, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = published(&out);
    assert!(before.len() > 20);
    let bin = env!("CARGO_BIN_EXE_logveil");
    for delay_ms in [30u64, 120, 300, 700, 1500, 2500] {
        let mut child = std::process::Command::new(bin)
            .env("XDG_STATE_HOME", dir.path().join("xdg"))
            .args(["run", "--pipeline"])
            .arg(&p)
            .arg("--output")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL: no destructor, no cleanup.
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(published(&out), before, "after a kill at {delay_ms} ms");
    }
    // The next run recovers (pending record, staging, stale spill) and completes.
    let o = run(&p, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(published(&out), before);
    assert!(!out.join("_staging").exists(), "no staging left");
    let pending = files_under(&out.join("_runs"))
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".pending.json"))
        .count();
    assert_eq!(pending, 0);
    let spill = dir.path().join("state/spill");
    assert!(
        !spill.exists() || std::fs::read_dir(&spill).unwrap().next().is_none(),
        "the killed runs' encrypted spill is gone"
    );
    let a = logveil().arg("audit").arg(&out).output().unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stdout));
}
