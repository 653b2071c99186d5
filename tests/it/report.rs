//! `logveil report` and `logveil show`: the numbers they show are the released tables'
//! numbers; the report is one offline file under a strict Content-Security-Policy; it renders
//! in a real headless browser without console errors.

use std::path::{Path, PathBuf};

use crate::helpers::*;

/// The hand-worked sample (2026-11-03 and 2026-11-04, k = 2), with `[report]` on (English).
fn run_small_with_report(dir: &Path) -> PathBuf {
    let small = repo().join("sample-data/small");
    let text = std::fs::read_to_string(small.join("pipeline.toml")).unwrap();
    let text = text.replace(
        "inputs = [\"access.log\"]",
        &format!("inputs = [{:?}]", small.join("access.log")),
    ) + "\n[report]\nlang = \"en\"\n";
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    let out = dir.join("out");
    let o = run(&p, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn figures(html: &str) -> serde_json::Value {
    let start = html
        .find("<script type=\"application/json\" id=\"figures\">")
        .expect("the figures block")
        + "<script type=\"application/json\" id=\"figures\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

/// Sum of a column of a table over the sample's two days, released rows only.
fn parquet_sum(out: &Path, table: &str, column: &str) -> f64 {
    ["2026-11-03", "2026-11-04"]
        .iter()
        .map(|d| {
            let t = table_of(out, table, d);
            ints(&t, column).iter().flatten().sum::<i64>() as f64
        })
        .sum()
}

fn table_of(out: &Path, name: &str, day: &str) -> polars::prelude::DataFrame {
    table(out, name, day)
}

#[test]
fn report_holds_exactly_the_numbers_of_the_parquet_tables() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_with_report(dir.path());
    // `logveil run` wrote it, listed it in the run record, and the audit accepts it.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let record = run_record(&out);
    assert!(
        record["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "report.html")
    );
    let a = logveil().arg("audit").arg(&out).output().unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stdout));

    let f = figures(&html);
    assert_eq!(f["period"], serde_json::json!(["2026-11-03", "2026-11-04"]));
    let h = &f["headline"];
    // EXPECTED.md: 7 visits, 13 pageviews, 3 bounces, 6 visitors on the 3rd; nothing on the 4th.
    for (key, column) in [
        ("visits", "visits"),
        ("pageviews", "pageviews"),
        ("bounces", "bounces"),
        ("visitors", "visitors"),
    ] {
        assert_eq!(
            h[key].as_f64(),
            Some(parquet_sum(&out, "overview", column)),
            "{key}"
        );
    }
    assert_eq!(h["visits"].as_f64(), Some(7.0));
    // Every released pages row, summed over the days, is in the figures, and in the HTML.
    let pages = f["pages"].as_array().unwrap();
    let t = table_of(&out, "pages", "2026-11-03");
    let (paths, views) = (strs(&t, "path"), ints(&t, "pageviews"));
    for (p, v) in paths.iter().zip(&views) {
        let p = p.clone().unwrap();
        let row = pages
            .iter()
            .find(|r| r["keys"][0] == p.as_str())
            .unwrap_or_else(|| panic!("{p} missing"));
        assert_eq!(
            row["values"]["pageviews"].as_f64(),
            Some(v.unwrap() as f64),
            "{p}"
        );
        let shown = if p == "(other)" {
            "(other)".to_string()
        } else {
            p.clone()
        };
        assert!(
            html.contains(&format!("<td>{}</td>", shown.replace('&', "&amp;"))),
            "{p}"
        );
    }
    // The daily table shows the 3rd's visits as the formatted number, with its value.
    assert!(html.contains("<td>Nov 3, 2026</td><td class=\"num\" data-v=\"7\">7</td>"));
}

#[test]
fn report_is_one_offline_file_under_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_with_report(dir.path());
    let ru = dir.path().join("ru.html");
    let o = logveil()
        .arg("report")
        .arg(&out)
        .args(["--lang", "ru", "-o"])
        .arg(&ru)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&ru).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"ru\">"));
    assert!(html.contains("content=\"default-src 'none'; style-src 'sha256-"));
    // No request to any host: no URL in an attribute, no external resource element.
    for bad in [
        "src=\"http",
        "href=\"http",
        "url(",
        "@import",
        "<link",
        "<iframe",
        "<img",
    ] {
        assert!(!html.contains(bad), "{bad}");
    }
    // No inline style attributes or event handlers (the policy would block them).
    for bad in [" style=\"", " onclick=", " onload="] {
        assert!(!html.contains(bad), "{bad}");
    }
    // Russian dates and labels.
    assert!(html.contains("03.11.2026") && html.contains("Визиты"));
    assert!(html.len() < 2 << 20);
}

#[test]
fn report_of_the_demo_stays_small_and_shows_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = logveil()
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .args(["run", "--pipeline"])
        .arg(repo().join("pipelines/demo.toml"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = dir.path().join("r.html");
    let o = logveil()
        .arg("report")
        .arg(&out)
        .args(["--lang", "en", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.len() < 2 << 20, "{} bytes", html.len());
    for section in [
        "Visits and visitors per day",
        "Visits by hour and weekday",
        "Channels",
        "Campaigns",
        "Attribution by model",
        "Goals",
        "Funnels",
        "Pages",
        "Referrers",
        "New and returning visitors",
        "Data quality",
        "Privacy",
    ] {
        assert!(html.contains(&format!(">{section}<")), "{section}");
    }
    assert!(html.contains("k = 5"));
    // Costs exist in the demo: CPA and ROAS are in the headline.
    assert!(html.contains(">CPA<") && html.contains(">ROAS<"));
    // Data quality names rejections by reason, never a line.
    assert!(html.contains("truncated: "));
}

#[test]
fn show_prints_aligned_tables_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_with_report(dir.path());
    let o = logveil()
        .arg("show")
        .arg(&out)
        .args(["--date", "2026-11-03"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(!text.contains('\x1b'), "no colour when piped");
    assert!(text.contains("overview") && text.contains("pages"));
    let o = logveil()
        .arg("show")
        .arg(&out)
        .args(["--date", "2026-11-03", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = table(&out, "overview", "2026-11-03");
    assert_eq!(v["overview"][0]["visits"], ints(&t, "visits")[0].unwrap());
    let o = logveil()
        .arg("show")
        .arg(&out)
        .args(["--date", "2026-12-01"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// Chromium from Debian, installed when missing (decision 23); `None` when it cannot be.
fn chromium() -> Option<PathBuf> {
    debian_tool(
        "chromium",
        &["chromium", "chromium-browser", "google-chrome"],
    )
}

#[test]
fn report_renders_in_a_headless_browser_without_console_errors() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED report_renders_in_a_headless_browser: no chromium, and `apt-get install chromium` failed here"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = run_small_with_report(dir.path());
    let page = format!("file://{}", out.join("report.html").display());
    let profile = dir.path().join("profile");
    let chrome = |extra: &[&str]| {
        std::process::Command::new("timeout")
            .arg("90")
            .arg(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&page)
            .output()
            .unwrap()
    };
    // The DOM after scripts ran: the sorting script marks the page ready (so the policy's
    // script hash is right), and every chart is there.
    let o = chrome(&["--dump-dom", "--virtual-time-budget=3000"]);
    let dom = String::from_utf8_lossy(&o.stdout);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the script did not run: {log}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(
        dom.matches("<svg").count(),
        html.matches("<svg").count(),
        "every chart is drawn"
    );
    assert!(html.matches("<svg").count() >= 4);
    for bad in [
        "Refused to",
        "Uncaught",
        "CONSOLE(",
        "Content Security Policy",
    ] {
        assert!(!log.contains(bad), "console: {log}");
    }
    // A screenshot, kept as a test artefact.
    let artefacts = repo().join("target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let o = chrome(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,2400",
        "--hide-scrollbars",
    ]);
    assert!(
        shot.metadata().is_ok_and(|m| m.len() > 10_000),
        "no screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
