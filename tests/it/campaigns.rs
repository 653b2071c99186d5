//! Campaigns, goals, funnels, attribution and ad spend on a hand-worked day.
//!
//! Five people (A–E), each with a twin who does exactly the same from another address, so
//! that every row has at least k = 2 visitors and the figures below are the k rule's figures
//! too. Each expectation is worked out by hand in the comments, from the rules in
//! docs/TABLES.md, not by running logveil.
//!
//! Times are UTC on 2026-11-10; every visitor uses desktop Firefox.
//!
//! | visit | pageviews (time, path, referrer)                                   | channel        | campaign (source/medium/campaign) |
//! |-------|--------------------------------------------------------------------|----------------|-----------------------------------|
//! | A1    | 10:00 `/?utm_source=Ya.ru&utm_medium=CPC&utm_campaign=Autumn&yclid=…` (yandex.ru), 10:01 /catalog/shoes (internal), 10:02 /cart | paid_search | yandex/cpc/autumn |
//! | A2    | 10:05 `/?utm_source=vk&utm_medium=social&utm_campaign=promo` (vk.com): a new campaign starts a new visit (decision 9), 10:06 /cart, 10:07 /checkout/done | organic_social | vk/social/promo |
//! | B1    | 11:00 `/?utm_source=yandex&…autumn` (yandex.ru), 11:01 `/catalog/boots?…autumn` (the same campaign continues the visit), 11:02 /cart, 11:03 /checkout/done | paid_search | yandex/cpc/autumn |
//! | C1    | 12:00 / (no referrer): a bounce                                     | direct         | none                              |
//! | C2    | 15:00 `/catalog/x?gclid=…` (google.com), 15:01 /cart, 15:02 /checkout/done | paid_search (gclid) | none                 |
//! | D1    | 13:00 `/?utm_source=vk&utm_medium=social&utm_campaign=promo` (vk.com): a bounce | organic_social | vk/social/promo        |
//! | E1    | 14:00 /about (no referrer): a bounce                                | direct         | none                              |
//!
//! Goals: `order` = /checkout/done after /cart, worth 1500.00 (150 000 kopecks);
//! `catalog_view` = any path with the prefix /catalog/. Converted: A1 catalog_view; A2 order;
//! B1 both; C2 both. Funnel `checkout` = /catalog/* → /cart → /checkout/done: A1 reaches step
//! 2, B1 and C2 step 3, A2 none (no catalog page first).

use std::path::{Path, PathBuf};

use crate::helpers::*;

const DAY: &str = "10/Nov/2026";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// (person, time, target, referrer)
const PAGEVIEWS: &[(u8, &str, &str, &str)] = &[
    (
        1,
        "10:00:00",
        "/?utm_source=Ya.ru&utm_medium=CPC&utm_campaign=Autumn&yclid=777888999",
        "https://yandex.ru/search/?text=shoes",
    ),
    (1, "10:01:00", "/catalog/shoes", "https://example.ru/"),
    (1, "10:02:00", "/cart", "https://example.ru/catalog/shoes"),
    (
        1,
        "10:05:00",
        "/?utm_source=vk&utm_medium=social&utm_campaign=promo",
        "https://vk.com/",
    ),
    (1, "10:06:00", "/cart", "https://example.ru/"),
    (1, "10:07:00", "/checkout/done", "https://example.ru/cart"),
    (
        2,
        "11:00:00",
        "/?utm_source=yandex&utm_medium=cpc&utm_campaign=autumn",
        "https://yandex.ru/",
    ),
    (
        2,
        "11:01:00",
        "/catalog/boots?utm_source=yandex&utm_medium=cpc&utm_campaign=autumn",
        "https://example.ru/",
    ),
    (2, "11:02:00", "/cart", "https://example.ru/catalog/boots"),
    (2, "11:03:00", "/checkout/done", "https://example.ru/cart"),
    (3, "12:00:00", "/", "-"),
    (
        3,
        "15:00:00",
        "/catalog/x?gclid=abc123def456",
        "https://www.google.com/",
    ),
    (3, "15:01:00", "/cart", "https://example.ru/catalog/x"),
    (3, "15:02:00", "/checkout/done", "https://example.ru/cart"),
    (
        4,
        "13:00:00",
        "/?utm_source=vk&utm_medium=social&utm_campaign=promo",
        "https://vk.com/",
    ),
    (5, "14:00:00", "/about", "-"),
];

fn write_fixture(dir: &Path) -> PathBuf {
    let mut log = String::new();
    for twin in 1..=2 {
        for (person, time, target, referrer) in PAGEVIEWS {
            log.push_str(&format!(
                "10.0.{person}.{twin} - - [{DAY}:{time} +0000] \"GET {target} HTTP/1.1\" 200 512 \"{referrer}\" \"{FIREFOX}\"\n"
            ));
        }
    }
    std::fs::write(dir.join("access.log"), log).unwrap();
    std::fs::write(
        dir.join("costs.csv"),
        "date,utm_source,utm_medium,utm_campaign,cost,currency\n\
         2026-11-10,Ya.ru,CPC,Autumn,\"1 000,00\",RUB\n\
         2026-11-10,google,cpc,winter,500,RUB\n\
         2026-11-11,yandex,cpc,autumn,999,RUB\n",
    )
    .unwrap();
    let p = dir.join("pipeline.toml");
    std::fs::write(
        &p,
        r#"
name = "campaigns"
site = "example.ru"
inputs = ["access.log"]
time_zone = "UTC"
key = "ephemeral"
k = 2
output = "out"
state_dir = "state"
costs = "costs.csv"

[[goals]]
name = "order"
path = "/checkout/done"
after = ["/cart"]
value = 1500.0

[[goals]]
name = "catalog_view"
path = "/catalog/"
match = "prefix"

[[funnels]]
name = "checkout"
steps = ["/catalog/*", "/cart", "/checkout/done"]
"#,
    )
    .unwrap();
    p
}

fn run_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_fixture(dir.path());
    let out = dir.path().join("out");
    let o = run(&p, &out, &["--date", "2026-11-10"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (dir, out)
}

const D: &str = "2026-11-10";

fn n(v: &[i64]) -> Vec<Option<i64>> {
    v.iter().map(|x| Some(*x)).collect()
}

#[test]
fn campaigns_overview_counts_the_campaign_split() {
    let (_d, out) = run_fixture();
    let t = table(&out, "overview", D);
    // 7 visits per twin (A's two visits are split by the campaign change), 10 visitors.
    assert_eq!(ints(&t, "visitors"), n(&[10]));
    assert_eq!(ints(&t, "visits"), n(&[14]));
    // Pageviews 3+3+4+1+3+1+1 = 16 per twin; bounces C1, D1, E1.
    assert_eq!(ints(&t, "pageviews"), n(&[32]));
    assert_eq!(ints(&t, "bounces"), n(&[6]));
}

#[test]
fn campaigns_channels() {
    let (_d, out) = run_fixture();
    let t = table(&out, "channels", D);
    let channels = strs(&t, "channel");
    assert_eq!(channels.len(), 10, "every channel is listed");
    let row = |c: &str| {
        channels
            .iter()
            .position(|x| x.as_deref() == Some(c))
            .unwrap()
    };
    // paid_search: A1, B1, C2 (twice). Pageviews 3+4+3; conversions A1 1 + B1 2 + C2 2;
    // value B1 + C2 = 300 000 kopecks, doubled.
    let p = row("paid_search");
    assert_eq!(ints(&t, "visitors")[p], Some(6));
    assert_eq!(ints(&t, "visits")[p], Some(6));
    assert_eq!(ints(&t, "pageviews")[p], Some(20));
    assert_eq!(ints(&t, "bounces")[p], Some(0));
    assert_eq!(ints(&t, "conversions")[p], Some(10));
    assert_eq!(ints(&t, "converting_visits")[p], Some(6));
    assert_eq!(ints(&t, "value")[p], Some(600_000));
    assert_eq!(floats(&t, "conversion_rate")[p], Some(1.0));
    // organic_social: A2 and D1 (a bounce): conversions 1 (A2's order).
    let s = row("organic_social");
    assert_eq!(ints(&t, "visitors")[s], Some(4));
    assert_eq!(ints(&t, "pageviews")[s], Some(8));
    assert_eq!(ints(&t, "bounces")[s], Some(2));
    assert_eq!(ints(&t, "conversions")[s], Some(2));
    assert_eq!(ints(&t, "value")[s], Some(300_000));
    assert_eq!(floats(&t, "bounce_rate")[s], Some(0.5));
    // direct: C1 and E1. The 7 empty channels are suppressed but hide nobody, so no released
    // row has to join them.
    let d = row("direct");
    assert_eq!(bools(&t, "suppressed")[d], Some(false));
    assert_eq!(ints(&t, "visits")[d], Some(4));
    assert_eq!(ints(&t, "bounces")[d], Some(4));
    let e = row("email");
    assert_eq!(bools(&t, "suppressed")[e], Some(true));
    assert_eq!(ints(&t, "visits")[e], None);
}

#[test]
fn campaigns_table_with_costs() {
    let (_d, out) = run_fixture();
    let t = table(&out, "campaigns", D);
    // Rows in key order, nulls first: (-,-,-,direct), (-,-,-,paid_search), vk, yandex.
    assert_eq!(
        strs(&t, "utm_source"),
        [None, None, Some("vk".into()), Some("yandex".into())]
    );
    assert_eq!(
        strs(&t, "utm_campaign"),
        [None, None, Some("promo".into()), Some("autumn".into())],
        "Ya.ru / CPC / Autumn became yandex / cpc / autumn"
    );
    assert_eq!(
        strs(&t, "channel"),
        some(&["direct", "paid_search", "organic_social", "paid_search"])
    );
    assert_eq!(ints(&t, "visitors"), n(&[4, 2, 4, 4]));
    assert_eq!(ints(&t, "visits"), n(&[4, 2, 4, 4]));
    assert_eq!(ints(&t, "pageviews"), n(&[4, 6, 8, 14]));
    assert_eq!(ints(&t, "bounces"), n(&[4, 0, 2, 0]));
    // yandex: A1 (catalog_view) + B1 (both) = 3 per twin.
    assert_eq!(ints(&t, "conversions"), n(&[0, 4, 2, 6]));
    assert_eq!(ints(&t, "converting_visits"), n(&[0, 2, 2, 4]));
    assert_eq!(ints(&t, "value"), n(&[0, 300_000, 300_000, 300_000]));
    assert_eq!(bools(&t, "is_other"), [Some(false); 4]);
    // Cost: 1 000,00 roubles for yandex/cpc/autumn on the 10th (the 11th's row and google's
    // campaign without visits do not land here).
    assert_eq!(ints(&t, "cost"), [None, None, None, Some(100_000)]);
    assert_eq!(floats(&t, "cost_per_visit")[3], Some(25_000.0));
    assert_eq!(floats(&t, "cpa")[3], Some(100_000.0 / 6.0));
    assert_eq!(floats(&t, "roas")[3], Some(3.0));
    assert_eq!(floats(&t, "roas")[0], None);
    // google/cpc/winter had no visit and there is no (other) row: the record says so.
    let notes = run_record(&out)["notes"].to_string();
    assert!(
        notes.contains("2026-11-10: 1 campaign(s) in the ad-spend file had no visit"),
        "{notes}"
    );
    assert!(notes.contains("(50000 minor units in all)"), "{notes}");
}

#[test]
fn campaigns_goals_funnels_and_campaign_goals() {
    let (_d, out) = run_fixture();
    let g = table(&out, "goals", D);
    assert_eq!(strs(&g, "goal"), some(&["order", "catalog_view"]));
    // order: A2, B1, C2; catalog_view: A1, B1, C2 (twice each) of 14 visits.
    assert_eq!(ints(&g, "conversions"), n(&[6, 6]));
    assert_eq!(ints(&g, "visitors"), n(&[6, 6]));
    assert_eq!(ints(&g, "value"), n(&[900_000, 0]));
    assert_eq!(floats(&g, "conversion_rate"), [Some(6.0 / 14.0); 2]);

    let f = table(&out, "funnels", D);
    let steps: Vec<i32> = f
        .column("step")
        .unwrap()
        .i32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(steps, [1, 2, 3]);
    assert_eq!(ints(&f, "visits"), n(&[6, 6, 4]));
    assert_eq!(ints(&f, "visitors"), n(&[6, 6, 4]));
    assert_eq!(ints(&f, "drop_off"), [Some(0), Some(2), None]);
    assert_eq!(
        floats(&f, "drop_off_rate"),
        [Some(0.0), Some(2.0 / 6.0), None]
    );

    let c = table(&out, "campaign_goals", D);
    assert_eq!(
        strs(&c, "goal"),
        some(&["catalog_view", "catalog_view", "order", "order", "order"])
    );
    assert_eq!(
        strs(&c, "utm_source"),
        [
            None,
            Some("yandex".into()),
            None,
            Some("vk".into()),
            Some("yandex".into())
        ]
    );
    assert_eq!(ints(&c, "visitors"), n(&[2, 4, 2, 2, 2]));
    assert_eq!(ints(&c, "conversions"), n(&[2, 4, 2, 2, 2]));
    assert_eq!(ints(&c, "value"), n(&[0, 0, 300_000, 300_000, 300_000]));
}

/// Rows of one model and goal: (source, channel, visitors, millionths, value).
fn attribution(
    out: &Path,
    model: &str,
    goal: &str,
) -> Vec<(Option<String>, String, i64, i64, i64)> {
    let t = table(out, "attribution", D);
    let (m, g, s, c) = (
        strs(&t, "model"),
        strs(&t, "goal"),
        strs(&t, "utm_source"),
        strs(&t, "channel"),
    );
    let (v, cr, val) = (
        ints(&t, "visitors"),
        ints(&t, "conversions_micro"),
        ints(&t, "value"),
    );
    (0..t.height())
        .filter(|i| m[*i].as_deref() == Some(model) && g[*i].as_deref() == Some(goal))
        .map(|i| {
            (
                s[i].clone(),
                c[i].clone().unwrap(),
                v[i].unwrap(),
                cr[i].unwrap(),
                val[i].unwrap(),
            )
        })
        .collect()
}

#[test]
fn campaigns_attribution_models_over_a_multi_visit_path() {
    let (_d, out) = run_fixture();
    let row = |s: Option<&str>, c: &str, v: i64, cr: i64, val: i64| {
        (s.map(str::to_string), c.to_string(), v, cr, val)
    };
    // Paths of the order conversions: A: [A1 yandex paid, A2 vk social]; B: [B1 yandex];
    // C: [C1 direct, C2 paid (gclid)]. Each conversion is worth 150 000.
    // First touch: A → A1 (yandex), B → B1 (yandex), C → C1 (direct).
    assert_eq!(
        attribution(&out, "first_touch", "order"),
        [
            row(None, "direct", 2, 2_000_000, 300_000),
            row(Some("yandex"), "paid_search", 4, 4_000_000, 600_000),
        ]
    );
    // Last touch and last non-direct touch: A2 (vk), B1, C2 (the last is never direct here).
    for model in ["last_touch", "last_non_direct"] {
        assert_eq!(
            attribution(&out, model, "order"),
            [
                row(None, "paid_search", 2, 2_000_000, 300_000),
                row(Some("vk"), "organic_social", 2, 2_000_000, 300_000),
                row(Some("yandex"), "paid_search", 2, 2_000_000, 300_000),
            ],
            "{model}"
        );
    }
    // Linear and position-based (40/20/40, which over two touches is half and half): A's
    // conversion splits between yandex and vk, C's between direct and paid search.
    for model in ["linear", "position_based"] {
        assert_eq!(
            attribution(&out, model, "order"),
            [
                row(None, "direct", 2, 1_000_000, 150_000),
                row(None, "paid_search", 2, 1_000_000, 150_000),
                row(Some("vk"), "organic_social", 2, 1_000_000, 150_000),
                row(Some("yandex"), "paid_search", 4, 3_000_000, 450_000),
            ],
            "{model}"
        );
    }
    // Every model hands out exactly the 6 conversions of the day.
    for model in [
        "first_touch",
        "last_touch",
        "last_non_direct",
        "linear",
        "position_based",
    ] {
        let total: i64 = attribution(&out, model, "order").iter().map(|r| r.3).sum();
        assert_eq!(total, 6_000_000, "{model}");
    }
}

#[test]
fn campaigns_no_click_id_or_query_value_in_outputs() {
    let (dir, out) = run_fixture();
    for file in files_under(&out) {
        let bytes = std::fs::read(&file).unwrap();
        for secret in ["777888999", "abc123def456", "yclid", "gclid", "text=shoes"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {}",
                file.display()
            );
        }
    }
    // The spill is gone and no state was kept (returning visitors are off).
    let state = dir.path().join("state");
    assert!(!state.join("visitors").exists());
}

#[test]
fn campaigns_bad_cost_file_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_fixture(dir.path());
    std::fs::write(
        dir.path().join("costs.csv"),
        "date,utm_source,utm_medium,utm_campaign,cost,currency\n2026-11-10,yandex,cpc,autumn,12.345,RUB\n",
    )
    .unwrap();
    let o = run(&p, &dir.path().join("out"), &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("costs.csv, line 2, column cost"), "{err}");
}
