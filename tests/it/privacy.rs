//! The privacy invariant: no raw address, user agent, query value, click id, pseudonym or key
//! reaches an output file, the run record, stdout or stderr.
//!
//! Parquet pages are compressed, so each file is checked twice: its raw bytes (metadata,
//! statistics) and every decoded cell value.

use std::path::Path;

use logveil::day::Day;
use logveil::pseudonymise::keys::MasterKey;
use polars::prelude::*;

use crate::helpers::*;

/// Strings of the hand-worked sample that must never appear.
fn forbidden_small() -> Vec<String> {
    let mut v: Vec<String> = [
        "192.0.2.10",
        "192.0.2.11",
        "192.0.2.99",
        "198.51.100.20",
        "198.51.100.21",
        "203.0.113.7",
        "2001:db8::5",
        // user agents, whole and by their distinctive parts
        "Mozilla/5.0",
        "AppleWebKit",
        "YaBrowser/23.11",
        "Firefox/121.0",
        "SM-A536B",
        "YandexBot/3.0",
        "iPhone OS 17_1",
        // query values, click ids, referrer paths and search terms, raw identifiers in paths
        "5551234567",
        "yclid",
        "page=2",
        "utm_source=",
        "utm_medium=",
        "918273645",
        "search?q",
        "text=",
        "телефон",
        "%D1%82%D0%B5",
        "inbox",
        "/trunc",
        "this is not a log line",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.sort();
    v
}

/// Every cell of a Parquet file as text.
fn cells(path: &Path) -> Vec<String> {
    let df = read_parquet(path);
    let mut out = Vec::new();
    for c in df.columns() {
        let s = c.as_materialized_series().cast(&DataType::String).unwrap();
        out.extend(s.str().unwrap().iter().flatten().map(str::to_string));
        out.push(c.name().to_string());
    }
    out
}

fn assert_clean(
    out: &Path,
    extra_text: &[&str],
    forbidden: &[String],
    forbidden_bytes: &[Vec<u8>],
) {
    let mut checked = 0;
    for file in files_under(out) {
        let bytes = std::fs::read(&file).unwrap();
        let mut texts = vec![String::from_utf8_lossy(&bytes).into_owned()];
        if file.extension().is_some_and(|e| e == "parquet") {
            texts.extend(cells(&file));
        }
        for t in &texts {
            for f in forbidden {
                assert!(!t.contains(f.as_str()), "{f:?} found in {}", file.display());
            }
        }
        for fb in forbidden_bytes {
            assert!(
                !bytes.windows(fb.len()).any(|w| w == fb.as_slice()),
                "key or pseudonym bytes in {}",
                file.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "expected outputs to scan, found {checked}");
    for t in extra_text {
        for f in forbidden {
            assert!(
                !t.contains(f.as_str()),
                "{f:?} found in the program's output"
            );
        }
    }
}

#[test]
fn privacy_no_identifier_in_any_output_of_the_small_sample() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("master.key");
    let o = logveil().arg("keygen").arg(&key_path).output().unwrap();
    assert!(o.status.success());
    let key_hex = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_string();
    let key_bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let out = dir.path().join("out");
    let o = run(
        &repo().join("sample-data/small/pipeline.toml"),
        &out,
        &["--key-file", key_path.to_str().unwrap()],
    );
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();

    // The pseudonyms this key gives the sample's visitors, in every form they could take.
    let master = MasterKey::from_bytes(key_bytes.clone().try_into().unwrap());
    let mut forbidden = forbidden_small();
    forbidden.push(key_hex.clone());
    forbidden.push(key_hex.to_uppercase());
    let mut forbidden_bytes = vec![key_bytes.clone()];
    let clients = [
        (
            "192.0.2.10",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        ),
        (
            "2001:db8::5",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        ),
    ];
    for day in ["2026-11-02", "2026-11-03", "2026-11-04"] {
        let ek = master.epoch_key(Day::parse(day).unwrap());
        for (ip, ua) in clients {
            let p = ek.visitor(ip.as_bytes(), ua.as_bytes());
            forbidden.push(p.to_string());
            forbidden.push(format!("{p:016x}"));
            forbidden_bytes.push(p.to_le_bytes().to_vec());
            forbidden_bytes.push(p.to_be_bytes().to_vec());
        }
    }
    assert_clean(&out, &[&stdout, &stderr], &forbidden, &forbidden_bytes);
}

/// The progress line (files, MB, lines, lines/s) is drawn only on a terminal, and it holds
/// counts only: under a pseudo-terminal (util-linux's `script`) it appears, with none of the
/// sample's addresses, agents or query values; with stderr a pipe (cron, CI) nothing is drawn.
#[test]
fn privacy_progress_line_on_a_terminal_only_and_without_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = repo().join("sample-data/small/pipeline.toml");
    let o = run(&pipeline, &dir.path().join("piped"), &[]);
    assert!(o.status.success());
    let piped = String::from_utf8_lossy(&o.stderr);
    assert!(
        !piped.contains("lines/s"),
        "progress drawn on a pipe: {piped}"
    );

    let Some(script) = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
    else {
        eprintln!("skipped: util-linux's `script` (Debian's bsdutils) is not installed");
        return;
    };
    let command = format!(
        "{} run --pipeline {} --output {}",
        assert_cmd::cargo::cargo_bin("logveil").display(),
        pipeline.display(),
        dir.path().join("tty").display()
    );
    let o = std::process::Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    assert!(
        screen.contains("file 1/") && screen.contains("lines/s"),
        "no progress line on a terminal: {screen}"
    );
    for f in forbidden_small() {
        assert!(!screen.contains(f.as_str()), "{f:?} on the terminal");
    }
}

#[test]
fn privacy_rejected_lines_are_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bad.log");
    // Every line is garbage holding a recognisable secret: the run fails at once (no line
    // of the sample fits the format), and neither its error nor anything written may echo a
    // line.
    let secret = "SECRET-192.0.2.200-ivan.petrov@mail.ru";
    let lines: String = (0..10).map(|i| format!("{secret} garbage {i}\n")).collect();
    std::fs::write(&log, lines).unwrap();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        "site = \"example.ru\"\ninputs = [\"bad.log\"]\nkey = \"ephemeral\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(&pipeline, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("0 of its first 10 lines could be read")
            && stderr.contains("no format logveil knows reads them either"),
        "{stderr}"
    );
    for text in [
        stderr.to_string(),
        String::from_utf8_lossy(&o.stdout).to_string(),
    ] {
        assert!(
            !text.contains("SECRET") && !text.contains("192.0.2.200") && !text.contains("ivan"),
            "{text}"
        );
    }
    for f in files_under(&out) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("SECRET"),
            "{}",
            f.display()
        );
    }
}

#[test]
fn privacy_schema_has_no_identifier_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(
        run(&repo().join("sample-data/small/pipeline.toml"), &out, &[])
            .status
            .success()
    );
    for f in files_under(&out)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
    {
        for name in names(&read_parquet(&f)) {
            for bad in [
                "ip",
                "client",
                "user_agent",
                "visitor_id",
                "pseudonym",
                "query",
                "url",
                "session",
                "date",
            ] {
                assert_ne!(name, bad, "{}", f.display());
            }
        }
    }
}
