//! The hand-worked sample: every number of every table, as worked out in
//! sample-data/small/EXPECTED.md (by hand, not by running logveil).

use crate::helpers::*;

fn run_small() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&repo().join("sample-data/small/pipeline.toml"), &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (dir, out)
}

#[test]
fn small_overview() {
    let (_d, out) = run_small();
    let t = table(&out, "overview", "2026-11-03");
    assert_eq!(
        names(&t),
        [
            "visitors",
            "visits",
            "pageviews",
            "bounces",
            "bounce_rate",
            "mean_visit_duration_s",
            "pageviews_per_visit",
            "suppressed"
        ]
    );
    assert_eq!(ints(&t, "visitors"), [Some(6)]);
    assert_eq!(ints(&t, "visits"), [Some(7)]);
    assert_eq!(ints(&t, "pageviews"), [Some(13)]);
    assert_eq!(ints(&t, "bounces"), [Some(3)]);
    assert_eq!(floats(&t, "bounce_rate"), [Some(3.0 / 7.0)]);
    assert_eq!(floats(&t, "mean_visit_duration_s"), [Some(2580.0 / 7.0)]);
    assert_eq!(floats(&t, "pageviews_per_visit"), [Some(13.0 / 7.0)]);
    assert_eq!(bools(&t, "suppressed"), [Some(false)]);

    // The next day has no visit of its own: its one row is suppressed, measures null.
    let t = table(&out, "overview", "2026-11-04");
    assert_eq!(ints(&t, "visitors"), [None]);
    assert_eq!(floats(&t, "bounce_rate"), [None]);
    assert_eq!(bools(&t, "suppressed"), [Some(true)]);
}

#[test]
fn small_hourly() {
    let (_d, out) = run_small();
    let t = table(&out, "hourly", "2026-11-03");
    assert_eq!(
        names(&t),
        ["hour", "visitors", "visits", "pageviews", "suppressed"]
    );
    let hours: Vec<Option<i32>> = t.column("hour").unwrap().i32().unwrap().iter().collect();
    assert_eq!(hours, (0..24).map(Some).collect::<Vec<_>>());
    let mut want_visitors = vec![None; 24];
    let mut want_visits = vec![None; 24];
    let mut want_pageviews = vec![None; 24];
    let mut want_suppressed = vec![Some(true); 24];
    for (h, visitors, visits, pageviews) in [(10, 2, 2, 6), (12, 2, 2, 3)] {
        want_visitors[h] = Some(visitors);
        want_visits[h] = Some(visits);
        want_pageviews[h] = Some(pageviews);
        want_suppressed[h] = Some(false);
    }
    assert_eq!(ints(&t, "visitors"), want_visitors);
    assert_eq!(ints(&t, "visits"), want_visits);
    assert_eq!(ints(&t, "pageviews"), want_pageviews);
    assert_eq!(bools(&t, "suppressed"), want_suppressed);
    let t = table(&out, "hourly", "2026-11-04");
    assert_eq!(bools(&t, "suppressed"), vec![Some(true); 24]);
}

#[test]
fn small_pages() {
    let (_d, out) = run_small();
    let t = table(&out, "pages", "2026-11-03");
    assert_eq!(
        names(&t),
        [
            "path",
            "visitors",
            "pageviews",
            "entries",
            "exits",
            "is_other"
        ]
    );
    assert_eq!(
        strs(&t, "path"),
        some(&["/", "/catalog", "/каталог", "(other)"])
    );
    assert_eq!(ints(&t, "pageviews"), [Some(4), Some(5), Some(2), Some(2)]);
    assert_eq!(ints(&t, "visitors"), [Some(3), Some(4), Some(2), Some(2)]);
    assert_eq!(ints(&t, "entries"), [Some(4), Some(1), Some(1), Some(1)]);
    assert_eq!(ints(&t, "exits"), [Some(2), Some(3), Some(1), Some(1)]);
    assert_eq!(
        bools(&t, "is_other"),
        [Some(false), Some(false), Some(false), Some(true)]
    );
    assert_eq!(table(&out, "pages", "2026-11-04").height(), 0);
}

#[test]
fn small_referrers() {
    let (_d, out) = run_small();
    let t = table(&out, "referrers", "2026-11-03");
    assert_eq!(
        names(&t),
        ["channel", "referrer_host", "visitors", "visits", "is_other"]
    );
    assert_eq!(strs(&t, "channel"), some(&["organic_search", "(other)"]));
    assert_eq!(strs(&t, "referrer_host"), some(&["google.com", "(other)"]));
    assert_eq!(ints(&t, "visits"), [Some(2), Some(5)]);
    assert_eq!(ints(&t, "visitors"), [Some(2), Some(4)]);
    assert_eq!(bools(&t, "is_other"), [Some(false), Some(true)]);
}

#[test]
fn small_devices() {
    let (_d, out) = run_small();
    let t = table(&out, "devices", "2026-11-03");
    assert_eq!(
        names(&t),
        [
            "device_type",
            "browser",
            "os",
            "visitors",
            "visits",
            "is_other"
        ]
    );
    assert_eq!(strs(&t, "device_type"), some(&["desktop", "(other)"]));
    assert_eq!(strs(&t, "browser"), some(&["Chrome", "(other)"]));
    assert_eq!(strs(&t, "os"), some(&["Windows", "(other)"]));
    assert_eq!(ints(&t, "visits"), [Some(3), Some(4)]);
    assert_eq!(ints(&t, "visitors"), [Some(2), Some(4)]);
}

#[test]
fn small_run_record() {
    let (_d, out) = run_small();
    let r = run_record(&out);
    assert_eq!(r["lines"]["read"], 21);
    assert_eq!(r["lines"]["parsed"], 17);
    assert_eq!(r["lines"]["rejected"], 4);
    let by = &r["lines"]["rejected_by_reason"];
    assert_eq!(by["blank_line"]["count"], 1);
    assert_eq!(by["bad_timestamp"]["count"], 2);
    assert_eq!(by["truncated"]["count"], 1);
    let file = repo()
        .join("sample-data/small/access.log")
        .display()
        .to_string();
    assert_eq!(by["blank_line"]["lines"][&file], serde_json::json!([11]));
    assert_eq!(
        by["bad_timestamp"]["lines"][&file],
        serde_json::json!([13, 16])
    );
    assert_eq!(by["truncated"]["lines"][&file], serde_json::json!([19]));
    assert_eq!(
        r["filtered"],
        serde_json::json!({"bot": 1, "static_asset": 1, "non_page_request": 1, "status": 1})
    );
    assert_eq!(r["pageviews"], 13);
    assert_eq!(r["visits"], 7);
    assert_eq!(r["pipeline"]["k"], 2);
    assert_eq!(r["pipeline"]["time_zone"], "Europe/Moscow");
    assert_eq!(r["key_mode"], "ephemeral");
    assert_eq!(r["disclosure"]["pages"]["rows_folded"], 2);
    assert_eq!(r["disclosure"]["hourly"]["rows_suppressed"], 22 + 24);
    let dates = record_dates(&r);
    assert_eq!(dates, ["2026-11-03", "2026-11-04"]);
    // Ten files (5 tables × 2 days), each listed with its BLAKE3.
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 11 * 2);
    for f in files {
        let bytes = std::fs::read(out.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(
            f["blake3"].as_str().unwrap(),
            blake3::hash(&bytes).to_hex().as_str()
        );
    }
}
