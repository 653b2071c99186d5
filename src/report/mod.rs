//! `logveil report` and `logveil show`: what marketing and product teams read.
//!
//! The report is one self-contained HTML file built from an output directory's released
//! Parquet tables and run records only ([`data`]): it can never show more than the anonymous
//! outputs do. Charts are inline SVG ([`svg`]) and every number is also in a plain table, so the
//! file reads without scripts, prints, and works with a screen reader; the one small script
//! only sorts tables. A Content-Security-Policy with the hashes of the inline style and script
//! forbids everything else (no request leaves the file). Labels, numbers and dates follow the
//! reader's language ([`i18n`]).
//!
//! Periods: by default the last 30 published days (fewer when fewer exist), compared with the
//! period of equal length just before it. Figures over several days are sums of the daily
//! released figures; visitors summed over days are not distinct people, and the report says so.

pub mod data;
pub mod i18n;
pub mod svg;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use base64::Engine;

use crate::day::Day;
use data::Published;
use i18n::Lang;
use svg::escape;

/// What a report covers.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    pub from: Day,
    pub to: Day,
}

impl Period {
    fn days(self) -> impl Iterator<Item = Day> {
        (self.from.0..=self.to.0).map(Day)
    }

    fn len(self) -> i32 {
        self.to.0 - self.from.0 + 1
    }

    fn previous(self) -> Period {
        Period {
            from: Day(self.from.0 - self.len()),
            to: Day(self.from.0 - 1),
        }
    }
}

/// The default period: the last 30 days up to the latest published date, or what `from` and
/// `to` say. `None` when nothing is published.
pub fn period(published: &Published, from: Option<Day>, to: Option<Day>) -> Option<Period> {
    let dates = published.dates();
    let last = to.or_else(|| dates.last().copied())?;
    let first = from.unwrap_or_else(|| {
        let earliest = dates.first().copied().unwrap_or(last);
        Day(earliest.0.max(last.0 - 29))
    });
    (first <= last).then_some(Period {
        from: first,
        to: last,
    })
}

/// Sums of a table's released rows over a period, by keys: (values summed, any part hidden,
/// an `(other)` row, the largest noise scale).
#[derive(Debug, Clone, Default)]
pub struct Summed {
    pub values: BTreeMap<String, f64>,
    pub hidden: bool,
    pub other: bool,
    pub noise: Option<f64>,
}

impl Summed {
    pub fn get(&self, c: &str) -> Option<f64> {
        self.values.get(c).copied()
    }
}

pub fn sum_rows(p: &Published, table: &str, period: Period) -> BTreeMap<Vec<String>, Summed> {
    let mut out: BTreeMap<Vec<String>, Summed> = BTreeMap::new();
    for day in period.days() {
        for r in p.rows(table, day) {
            let e = out.entry(r.keys.clone()).or_default();
            e.hidden |= r.suppressed;
            e.other |= r.other;
            e.noise = match (e.noise, r.noise_scale) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            for (c, v) in &r.values {
                if let Some(v) = v {
                    *e.values.entry(c.clone()).or_default() += v;
                }
            }
        }
    }
    out
}

/// The headline figures of a period (sums of released daily figures).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Headline {
    pub visitors: f64,
    pub visits: f64,
    pub pageviews: f64,
    pub bounces: f64,
    pub duration_s: f64,
    pub conversions: f64,
    pub converting_visits: f64,
    pub value: f64,
    pub cost: f64,
    pub days_hidden: u32,
}

impl Headline {
    pub fn of(p: &Published, period: Period) -> Headline {
        let mut h = Headline::default();
        for day in period.days() {
            let Some(r) = p.rows("overview", day).first() else {
                continue;
            };
            if r.suppressed {
                h.days_hidden += 1;
                continue;
            }
            let visits = r.get("visits").unwrap_or(0.0);
            h.visitors += r.get("visitors").unwrap_or(0.0);
            h.visits += visits;
            h.pageviews += r.get("pageviews").unwrap_or(0.0);
            h.bounces += r.get("bounces").unwrap_or(0.0);
            h.duration_s += r.get("mean_visit_duration_s").unwrap_or(0.0) * visits;
        }
        for s in sum_rows(p, "channels", period).values() {
            h.conversions += s.get("conversions").unwrap_or(0.0);
            h.converting_visits += s.get("converting_visits").unwrap_or(0.0);
            h.value += s.get("value").unwrap_or(0.0);
        }
        for s in sum_rows(p, "campaigns", period).values() {
            h.cost += s.get("cost").unwrap_or(0.0);
        }
        h
    }
}

/// A rendered report and the figures it shows (also embedded, as JSON, in the file).
pub struct Report {
    pub html: String,
    pub figures: serde_json::Value,
}

/// Builds the report of `out` for a period.
pub fn build(
    out: &Path,
    from: Option<Day>,
    to: Option<Day>,
    lang: Option<Lang>,
) -> Result<Report, data::ReadError> {
    let p = Published::read(out, None, None)?;
    let lang = lang
        .or_else(|| {
            p.records
                .last()
                .and_then(|r| r.pipeline.report_lang.as_deref())
                .and_then(Lang::parse)
        })
        .unwrap_or(Lang::Ru);
    Ok(render(&p, period(&p, from, to), lang))
}

fn money(lang: Lang, minor: f64, currency: &str) -> String {
    let digits = crate::costs::minor_digits(currency) as i32;
    format!(
        "{}\u{a0}{currency}",
        lang.number(minor / 10f64.powi(digits), digits as usize)
    )
}

/// A table of cells; `numeric` columns sort as numbers.
struct Table {
    head: Vec<(String, bool)>,
    rows: Vec<Vec<(String, Option<f64>)>>,
}

impl Table {
    fn new(head: &[(&str, bool)], lang: Lang) -> Table {
        Table {
            head: head
                .iter()
                .map(|(k, n)| (lang.t(k).to_string(), *n))
                .collect(),
            rows: Vec::new(),
        }
    }

    fn html(&self) -> String {
        let mut s = String::from("<div class=\"scroll\"><table class=\"sortable\"><thead><tr>");
        for (h, numeric) in &self.head {
            let _ = write!(
                s,
                "<th scope=\"col\"{}>{}</th>",
                if *numeric { " class=\"num\"" } else { "" },
                escape(h)
            );
        }
        s.push_str("</tr></thead><tbody>");
        for row in &self.rows {
            s.push_str("<tr>");
            for (text, v) in row {
                match v {
                    Some(v) => {
                        let _ = write!(s, "<td class=\"num\" data-v=\"{v}\">{}</td>", escape(text));
                    }
                    None => {
                        let _ = write!(s, "<td>{}</td>", escape(text));
                    }
                }
            }
            s.push_str("</tr>");
        }
        s.push_str("</tbody></table></div>");
        s
    }
}

/// A number cell (the sum of its released days), or the reason it is blank: hidden on every
/// day by the k rule, or absent.
fn cell(
    lang: Lang,
    v: Option<f64>,
    hidden: bool,
    fmt: impl Fn(f64) -> String,
) -> (String, Option<f64>) {
    match v {
        Some(v) => (fmt(v), Some(v)),
        None if hidden => (lang.t("suppressed").to_string(), None),
        None => ("—".to_string(), None),
    }
}

fn key_label(lang: Lang, k: &str) -> String {
    match k {
        "(other)" => lang.t("other_row").to_string(),
        "" => "—".to_string(),
        k if crate::pseudonymise::channel::ALL.contains(&k)
            || crate::aggregate::MODELS.contains(&k)
            || [
                "new",
                "returning",
                "visitor_type",
                "visit_number",
                "days_since_last_visit",
                "week",
                "month",
            ]
            .contains(&k) =>
        {
            lang.t(k).to_string()
        }
        k => k.to_string(),
    }
}

/// ± at 95 % of a discrete Laplace noise of scale `b`: b·ln 20.
fn plus_minus(lang: Lang, noise: Option<f64>) -> String {
    noise.map_or(String::new(), |b| format!(" ±{}", lang.int(b * 20f64.ln())))
}

pub fn render(p: &Published, period: Option<Period>, lang: Lang) -> Report {
    let currency = p
        .records
        .last()
        .and_then(|r| r.conversions.as_ref())
        .and_then(|c| c["currency"].as_str())
        .unwrap_or("RUB")
        .to_string();
    let mut body = String::new();
    let mut figures = serde_json::Map::new();
    let title = lang.t("title");
    let Some(period) = period else {
        let _ = write!(body, "<h1>{title}</h1><p>{}</p>", lang.t("no_data"));
        return finish(lang, title, &body, serde_json::Value::Object(figures));
    };
    let noisy = p
        .tables
        .values()
        .flat_map(|d| d.values())
        .flatten()
        .any(|r| r.noise_scale.is_some());
    let _ = write!(
        body,
        "<header><h1>{title}{}</h1><p class=\"period\">{}: {} — {} ({} {})</p></header>",
        // A period within one month is named by it: «ноябрь 2026».
        if period.from.civil().1 == period.to.civil().1
            && period.from.civil().0 == period.to.civil().0
        {
            format!(" · {}", lang.month(period.from))
        } else {
            String::new()
        },
        lang.t("period"),
        lang.date(period.from),
        lang.date(period.to),
        lang.t("previous"),
        format_args!(
            "{} — {}",
            lang.date(period.previous().from),
            lang.date(period.previous().to)
        )
    );
    if noisy {
        let _ = write!(body, "<p class=\"note\">{}</p>", lang.t("dp_note"));
    }

    // Headline.
    let now = Headline::of(p, period);
    let before = Headline::of(p, period.previous());
    figures.insert(
        "period".into(),
        serde_json::json!([period.from.to_string(), period.to.to_string()]),
    );
    figures.insert(
        "headline".into(),
        serde_json::to_value(&now).unwrap_or_default(),
    );
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mut cards: Vec<(&str, String, String)> = vec![
        (
            "visitors_sum",
            lang.int(now.visitors),
            lang.change(now.visitors, before.visitors),
        ),
        (
            "visits",
            lang.int(now.visits),
            lang.change(now.visits, before.visits),
        ),
        (
            "pageviews",
            lang.int(now.pageviews),
            lang.change(now.pageviews, before.pageviews),
        ),
        (
            "bounce_rate",
            lang.percent(ratio(now.bounces, now.visits)),
            lang.change(
                ratio(now.bounces, now.visits),
                ratio(before.bounces, before.visits),
            ),
        ),
        (
            "duration",
            lang.duration(ratio(now.duration_s, now.visits)),
            lang.change(
                ratio(now.duration_s, now.visits),
                ratio(before.duration_s, before.visits),
            ),
        ),
        (
            "conversions",
            lang.int(now.conversions),
            lang.change(now.conversions, before.conversions),
        ),
        (
            "conversion_rate",
            lang.percent(ratio(now.converting_visits, now.visits)),
            lang.change(
                ratio(now.converting_visits, now.visits),
                ratio(before.converting_visits, before.visits),
            ),
        ),
    ];
    if now.cost > 0.0 {
        cards.push((
            "cost",
            money(lang, now.cost, &currency),
            lang.change(now.cost, before.cost),
        ));
        cards.push((
            "cpa",
            money(lang, ratio(now.cost, now.conversions), &currency),
            lang.change(
                ratio(now.cost, now.conversions),
                ratio(before.cost, before.conversions),
            ),
        ));
        cards.push((
            "roas",
            lang.number(ratio(now.value, now.cost), 2),
            lang.change(ratio(now.value, now.cost), ratio(before.value, before.cost)),
        ));
    }
    body.push_str("<section class=\"cards\">");
    for (k, v, c) in &cards {
        let _ = write!(
            body,
            "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div><div class=\"change\">{} {}</div></div>",
            lang.t(k),
            escape(v),
            escape(c),
            lang.t("previous")
        );
    }
    body.push_str("</section>");
    let _ = write!(body, "<p class=\"note\">{}</p>", lang.t("sum_note"));

    // Visits and visitors per day.
    let days: Vec<Day> = period.days().collect();
    let labels: Vec<String> = days.iter().map(|d| lang.date(*d)).collect();
    let daily = |c: &str| -> Vec<Option<f64>> {
        days.iter()
            .map(|d| p.rows("overview", *d).first().and_then(|r| r.get(c)))
            .collect()
    };
    let (visits_d, visitors_d) = (daily("visits"), daily("visitors"));
    let _ = write!(body, "<section><h2>{}</h2>", lang.t("daily"));
    body.push_str(&svg::lines(
        lang.t("daily"),
        &labels,
        &[
            (lang.t("visits").to_string(), visits_d.clone()),
            (lang.t("visitors").to_string(), visitors_d.clone()),
        ],
    ));
    let mut t = Table::new(
        &[
            ("date", false),
            ("visits", true),
            ("visitors", true),
            ("pageviews", true),
            ("bounce_rate", true),
        ],
        lang,
    );
    for (i, d) in days.iter().enumerate() {
        let r = p.rows("overview", *d).first();
        let hidden = r.is_some_and(|r| r.suppressed);
        t.rows.push(vec![
            (lang.date(*d), None),
            cell(lang, visits_d[i], hidden, |v| lang.int(v)),
            cell(lang, visitors_d[i], hidden, |v| lang.int(v)),
            cell(lang, r.and_then(|r| r.get("pageviews")), hidden, |v| {
                lang.int(v)
            }),
            cell(lang, r.and_then(|r| r.get("bounce_rate")), hidden, |v| {
                lang.percent(v)
            }),
        ]);
    }
    body.push_str(&t.html());
    body.push_str("</section>");

    // Hour × weekday heat map (the pipeline's time zone).
    let mut grid = [[Some(0.0f64); 24]; 7];
    for d in &days {
        let weekday = (d.0 + 3).rem_euclid(7) as usize;
        for r in p.rows("hourly", *d) {
            let hour: usize = r.keys.first().and_then(|h| h.parse().ok()).unwrap_or(0);
            let slot = &mut grid[weekday][hour.min(23)];
            *slot = match (*slot, r.get("visits")) {
                (Some(a), Some(v)) if !r.suppressed => Some(a + v),
                (_, _) if r.suppressed => None,
                (a, _) => a,
            };
        }
    }
    let weekdays: [&str; 7] = std::array::from_fn(|i| lang.weekday(i));
    let _ = write!(body, "<section><h2>{}</h2>", lang.t("heatmap"));
    body.push_str(&svg::heatmap(lang.t("heatmap"), &weekdays, &grid));
    let mut t = Table::new(&[("hour", false)], lang);
    t.head
        .extend(weekdays.iter().map(|w| (w.to_string(), true)));
    for hour in 0..24 {
        let mut row = vec![(format!("{hour:02}:00"), None)];
        for day in &grid {
            row.push(cell(lang, day[hour], day[hour].is_none(), |v| lang.int(v)));
        }
        t.rows.push(row);
    }
    body.push_str(&t.html());
    body.push_str("</section>");

    // Channels: totals, and their daily trend.
    let channels = sum_rows(p, "channels", period);
    figures.insert("channels".into(), summed_json(&channels));
    let _ = write!(body, "<section><h2>{}</h2>", lang.t("channels"));
    let items: Vec<(String, Option<f64>, String)> = channels
        .iter()
        .map(|(k, s)| {
            let v = s.get("visits");
            let shown = v.map_or(lang.t("suppressed").to_string(), |v| lang.int(v));
            (key_label(lang, &k[0]), v, shown)
        })
        .collect();
    body.push_str(&svg::bars(lang.t("channels"), &items));
    let series: Vec<(String, Vec<Option<f64>>)> = channels
        .keys()
        .filter(|k| channels[*k].get("visits").is_some_and(|v| v > 0.0))
        .map(|k| {
            let v = days
                .iter()
                .map(|d| {
                    p.rows("channels", *d)
                        .iter()
                        .find(|r| r.keys == *k && !r.suppressed)
                        .and_then(|r| r.get("visits"))
                })
                .collect();
            (key_label(lang, &k[0]), v)
        })
        .collect();
    body.push_str(&svg::lines(lang.t("channel_trend"), &labels, &series));
    // The trend's numbers: days × channels.
    let mut t = Table::new(&[("date", false)], lang);
    t.head
        .extend(series.iter().map(|(name, _)| (name.clone(), true)));
    for (i, d) in days.iter().enumerate() {
        let mut row = vec![(lang.date(*d), None)];
        row.extend(
            series
                .iter()
                .map(|(_, v)| cell(lang, v[i], true, |v| lang.int(v))),
        );
        t.rows.push(row);
    }
    body.push_str(&t.html());
    let mut t = Table::new(
        &[
            ("channel", false),
            ("visits", true),
            ("visitors_sum", true),
            ("conversions", true),
            ("conversion_rate", true),
        ],
        lang,
    );
    for (k, s) in &channels {
        t.rows.push(vec![
            (key_label(lang, &k[0]), None),
            cell(lang, s.get("visits"), s.hidden, |v| {
                format!("{}{}", lang.int(v), plus_minus(lang, s.noise))
            }),
            cell(lang, s.get("visitors"), s.hidden, |v| lang.int(v)),
            cell(lang, s.get("conversions"), s.hidden, |v| lang.int(v)),
            cell(
                lang,
                s.get("converting_visits")
                    .zip(s.get("visits"))
                    .map(|(a, b)| ratio(a, b)),
                s.hidden,
                |v| lang.percent(v),
            ),
        ]);
    }
    body.push_str(&t.html());
    body.push_str("</section>");

    // Campaigns, sortable; attribution by model for the top campaigns.
    let campaigns = sum_rows(p, "campaigns", period);
    figures.insert("campaigns".into(), summed_json(&campaigns));
    if !campaigns.is_empty() {
        let _ = write!(body, "<section><h2>{}</h2>", lang.t("campaigns"));
        let mut t = Table::new(
            &[
                ("source", false),
                ("medium", false),
                ("campaign", false),
                ("channel", false),
                ("visits", true),
                ("bounce_rate", true),
                ("conversions", true),
                ("conversion_rate", true),
                ("value", true),
                ("cost", true),
                ("cpa", true),
                ("roas", true),
            ],
            lang,
        );
        let mut by_visits: Vec<(&Vec<String>, &Summed)> = campaigns.iter().collect();
        by_visits.sort_by(|a, b| {
            b.1.get("visits")
                .partial_cmp(&a.1.get("visits"))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for (k, s) in by_visits {
            let visits = s.get("visits").unwrap_or(0.0);
            let cost = s.get("cost");
            t.rows.push(vec![
                (key_label(lang, &k[0]), None),
                (key_label(lang, &k[1]), None),
                (key_label(lang, &k[2]), None),
                (key_label(lang, &k[3]), None),
                cell(lang, s.get("visits"), false, |v| {
                    format!("{}{}", lang.int(v), plus_minus(lang, s.noise))
                }),
                cell(
                    lang,
                    s.get("bounces").map(|b| ratio(b, visits)),
                    false,
                    |v| lang.percent(v),
                ),
                cell(lang, s.get("conversions"), false, |v| lang.int(v)),
                cell(
                    lang,
                    s.get("converting_visits").map(|c| ratio(c, visits)),
                    false,
                    |v| lang.percent(v),
                ),
                cell(lang, s.get("value"), false, |v| money(lang, v, &currency)),
                cell(lang, cost, false, |v| money(lang, v, &currency)),
                cell(
                    lang,
                    cost.zip(s.get("conversions"))
                        .filter(|(_, c)| *c > 0.0)
                        .map(|(a, c)| a / c),
                    false,
                    |v| money(lang, v, &currency),
                ),
                cell(
                    lang,
                    cost.filter(|c| *c > 0.0)
                        .map(|c| s.get("value").unwrap_or(0.0) / c),
                    false,
                    |v| lang.number(v, 2),
                ),
            ]);
        }
        body.push_str(&t.html());
        let attribution = sum_rows(p, "attribution", period);
        if !attribution.is_empty() {
            let _ = write!(body, "<h3>{}</h3>", lang.t("attribution"));
            // Rows: (goal, source, medium, campaign, channel); columns: the models.
            let mut side: BTreeMap<Vec<String>, BTreeMap<String, f64>> = BTreeMap::new();
            for (k, s) in &attribution {
                let e = side.entry(k[1..].to_vec()).or_default();
                *e.entry(k[0].clone()).or_default() +=
                    s.get("conversions_micro").unwrap_or(0.0) / 1e6;
            }
            let mut top: Vec<(&Vec<String>, &BTreeMap<String, f64>)> = side.iter().collect();
            top.sort_by(|a, b| {
                let l = |m: &BTreeMap<String, f64>| m.get("last_touch").copied().unwrap_or(0.0);
                l(b.1)
                    .partial_cmp(&l(a.1))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let mut t = Table::new(
                &[
                    ("goal", false),
                    ("source", false),
                    ("medium", false),
                    ("campaign", false),
                    ("channel", false),
                ],
                lang,
            );
            t.head.extend(
                crate::aggregate::MODELS
                    .iter()
                    .map(|m| (lang.t(m).to_string(), true)),
            );
            for (k, models) in top.into_iter().take(20) {
                let mut row: Vec<(String, Option<f64>)> =
                    k.iter().map(|v| (key_label(lang, v), None)).collect();
                for m in crate::aggregate::MODELS {
                    let v = models.get(m).copied();
                    row.push(cell(lang, v, false, |v| lang.number(v, 2)));
                }
                t.rows.push(row);
            }
            body.push_str(&t.html());
        }
        body.push_str("</section>");
    }

    // Goals and funnels.
    let goals = sum_rows(p, "goals", period);
    figures.insert("goals".into(), summed_json(&goals));
    if !goals.is_empty() {
        let _ = write!(body, "<section><h2>{}</h2>", lang.t("goals"));
        let mut t = Table::new(
            &[
                ("goal", false),
                ("conversions", true),
                ("visitors_sum", true),
                ("value", true),
                ("conversion_rate", true),
            ],
            lang,
        );
        for (k, s) in &goals {
            t.rows.push(vec![
                (k[0].clone(), None),
                cell(lang, s.get("conversions"), s.hidden, |v| lang.int(v)),
                cell(lang, s.get("visitors"), s.hidden, |v| lang.int(v)),
                cell(lang, s.get("value"), s.hidden, |v| {
                    money(lang, v, &currency)
                }),
                cell(
                    lang,
                    s.get("conversions").map(|c| ratio(c, now.visits)),
                    s.hidden,
                    |v| lang.percent(v),
                ),
            ]);
        }
        body.push_str(&t.html());
        body.push_str("</section>");
    }
    let funnels = sum_rows(p, "funnels", period);
    figures.insert("funnels".into(), summed_json(&funnels));
    if !funnels.is_empty() {
        let _ = write!(body, "<section><h2>{}</h2>", lang.t("funnels"));
        let mut names: Vec<&String> = funnels.keys().map(|k| &k[0]).collect();
        names.dedup();
        for name in names {
            let mut steps: Vec<(i64, &Summed)> = funnels
                .iter()
                .filter(|(k, _)| &k[0] == name)
                .map(|(k, s)| (k[1].parse().unwrap_or(0), s))
                .collect();
            steps.sort_by_key(|(j, _)| *j);
            let _ = write!(body, "<h3>{}</h3>", escape(name));
            let items: Vec<(String, Option<f64>, String)> = steps
                .iter()
                .map(|(j, s)| {
                    let v = s.get("visits");
                    (
                        format!("{} {j}", lang.t("step")),
                        v,
                        v.map_or(lang.t("suppressed").to_string(), |v| lang.int(v)),
                    )
                })
                .collect();
            body.push_str(&svg::bars(name, &items));
            let mut t = Table::new(
                &[("step", false), ("visits", true), ("drop_off", true)],
                lang,
            );
            for (i, (j, s)) in steps.iter().enumerate() {
                let next = steps.get(i + 1).and_then(|(_, n)| n.get("visits"));
                let here = s.get("visits");
                t.rows.push(vec![
                    (j.to_string(), None),
                    cell(lang, here, s.hidden, |v| lang.int(v)),
                    cell(
                        lang,
                        here.zip(next).map(|(a, b)| (a - b).max(0.0)),
                        false,
                        |v| lang.int(v),
                    ),
                ]);
            }
            body.push_str(&t.html());
        }
        body.push_str("</section>");
    }

    // Pages, referrers, devices.
    for (table, title, key_names, measure) in [
        ("pages", "pages", vec!["path"], "pageviews"),
        (
            "referrers",
            "referrers",
            vec!["channel", "referrer"],
            "visits",
        ),
        (
            "devices",
            "devices",
            vec!["device", "browser", "os"],
            "visits",
        ),
    ] {
        let rows = sum_rows(p, table, period);
        figures.insert(table.into(), summed_json(&rows));
        if rows.is_empty() {
            continue;
        }
        let _ = write!(body, "<section><h2>{}</h2>", lang.t(title));
        let mut head: Vec<(&str, bool)> = key_names.iter().map(|k| (*k, false)).collect();
        head.push((measure, true));
        if table == "pages" {
            head.extend([("entries", true), ("exits", true)]);
        }
        let mut t = Table::new(&head, lang);
        let mut top: Vec<(&Vec<String>, &Summed)> = rows.iter().collect();
        top.sort_by(|a, b| {
            b.1.get(measure)
                .partial_cmp(&a.1.get(measure))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for (k, s) in top.into_iter().take(25) {
            let mut row: Vec<(String, Option<f64>)> =
                k.iter().map(|v| (key_label(lang, v), None)).collect();
            row.push(cell(lang, s.get(measure), false, |v| lang.int(v)));
            if table == "pages" {
                row.push(cell(lang, s.get("entries"), false, |v| lang.int(v)));
                row.push(cell(lang, s.get("exits"), false, |v| lang.int(v)));
            }
            t.rows.push(row);
        }
        body.push_str(&t.html());
        body.push_str("</section>");
    }

    // New and returning visitors.
    let loyalty = sum_rows(p, "loyalty", period);
    figures.insert("loyalty".into(), summed_json(&loyalty));
    if !loyalty.is_empty() {
        let _ = write!(body, "<section><h2>{}</h2>", lang.t("loyalty"));
        let items: Vec<(String, Option<f64>, String)> = loyalty
            .iter()
            .map(|(k, s)| {
                let v = s.get("visits");
                (
                    format!("{}: {}", key_label(lang, &k[0]), key_label(lang, &k[1])),
                    v,
                    v.map_or(lang.t("suppressed").to_string(), |v| lang.int(v)),
                )
            })
            .collect();
        body.push_str(&svg::bars(lang.t("loyalty"), &items));
        let mut t = Table::new(
            &[
                ("dimension", false),
                ("bucket", false),
                ("visits", true),
                ("visitors_sum", true),
            ],
            lang,
        );
        for (k, s) in &loyalty {
            t.rows.push(vec![
                (key_label(lang, &k[0]), None),
                (key_label(lang, &k[1]), None),
                cell(lang, s.get("visits"), s.hidden, |v| lang.int(v)),
                cell(lang, s.get("visitors"), s.hidden, |v| lang.int(v)),
            ]);
        }
        body.push_str(&t.html());
        if let Some(last) = p
            .tables
            .get("uniques")
            .and_then(|d| d.range(..=period.to).next_back())
        {
            let mut t = Table::new(
                &[("uniques", false), ("from", false), ("visitors", true)],
                lang,
            );
            for r in last.1 {
                t.rows.push(vec![
                    (key_label(lang, &r.keys[0]), None),
                    (
                        r.keys
                            .get(1)
                            .and_then(|d| Day::parse(d))
                            .map_or_else(String::new, |d| lang.date(d)),
                        None,
                    ),
                    cell(lang, r.get("visitors"), r.suppressed, |v| lang.int(v)),
                ]);
            }
            let _ = write!(
                body,
                "<h3>{} ({})</h3>",
                lang.t("uniques"),
                lang.date(*last.0)
            );
            body.push_str(&t.html());
        }
        body.push_str("</section>");
    }

    // Data quality, per committed run that published a day of the period.
    let _ = write!(body, "<section><h2>{}</h2>", lang.t("quality"));
    let mut t = Table::new(
        &[
            ("run", false),
            ("dates", false),
            ("lines_read", true),
            ("lines_parsed", true),
            ("lines_rejected", true),
            ("reasons", false),
        ],
        lang,
    );
    let mut seen = std::collections::BTreeSet::new();
    for d in period.days() {
        if let Some(r) = p.record_of(d)
            && seen.insert(r.run_id.clone())
        {
            let dates: Vec<String> = r
                .dates
                .iter()
                .filter(|x| x.published)
                .map(|x| x.date.clone())
                .collect();
            let reasons: Vec<String> = r
                .lines
                .rejected_by_reason
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.count))
                .collect();
            t.rows.push(vec![
                (r.run_id.clone(), None),
                (dates.join(", "), None),
                cell(lang, Some(r.lines.read as f64), false, |v| lang.int(v)),
                cell(lang, Some(r.lines.parsed as f64), false, |v| lang.int(v)),
                cell(lang, Some(r.lines.rejected as f64), false, |v| lang.int(v)),
                (reasons.join("; "), None),
            ]);
        }
    }
    body.push_str(&t.html());
    body.push_str("</section>");

    // Privacy footer: k, ε spent, key epochs, from the run records.
    let ks: std::collections::BTreeSet<u32> = seen
        .iter()
        .filter_map(|id| p.records.iter().find(|r| &r.run_id == id))
        .map(|r| r.pipeline.k)
        .collect();
    let epsilon: f64 = p
        .records
        .iter()
        .filter(|r| seen.contains(&r.run_id))
        .filter_map(|r| r.differential_privacy.as_ref())
        .filter_map(|d| d["epsilon_charged"].as_f64())
        .sum();
    let epochs: std::collections::BTreeSet<String> = p
        .records
        .iter()
        .filter(|r| seen.contains(&r.run_id))
        .flat_map(|r| r.key_epochs.iter().map(|(d, id)| format!("{d}: {id}")))
        .collect();
    let ks: Vec<String> = ks.iter().map(u32::to_string).collect();
    let _ = write!(
        body,
        "<footer><h2>{}</h2><p>{}</p><p>k = {}. {}: {}. {}: {}.</p><p>{}</p></footer>",
        lang.t("privacy"),
        lang.t("k_note"),
        ks.join(", "),
        lang.t("epsilon"),
        lang.number(epsilon, 3),
        lang.t("epochs"),
        escape(&epochs.into_iter().collect::<Vec<_>>().join(", ")),
        lang.t("generated"),
    );
    finish(lang, title, &body, serde_json::Value::Object(figures))
}

fn summed_json(rows: &BTreeMap<Vec<String>, Summed>) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|(k, s)| {
                serde_json::json!({
                    "keys": k,
                    "values": s.values,
                    "hidden": s.hidden,
                    "other": s.other,
                })
            })
            .collect(),
    )
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Arial,sans-serif;margin:0 auto;max-width:1100px;padding:16px;color:#222;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
.period,.note{color:#555}.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:140px}.card .label{font-size:.85em;color:#555}
.card .value{font-size:1.4em;font-weight:600}.card .change{font-size:.8em;color:#555}
.chart{width:100%;height:auto;max-width:760px;display:block;margin:8px 0}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.85em;margin:8px 0}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6;cursor:pointer}.num{text-align:right;font-variant-numeric:tabular-nums}
footer{margin-top:2em;color:#444;font-size:.9em}
@media print{@page{size:A4;margin:12mm}body{max-width:none;padding:0}.scroll{overflow:visible}section{break-inside:avoid-page}th{cursor:auto}}
"#;

/// Sorts a table by the clicked column (numbers by their `data-v`), and marks the page ready.
const SCRIPT: &str = r#"
document.querySelectorAll("table.sortable th").forEach(function(th,col){th.addEventListener("click",function(){var tb=th.closest("table").tBodies[0];var rows=Array.prototype.slice.call(tb.rows);var num=th.classList.contains("num");var dir=th.getAttribute("aria-sort")==="descending"?1:-1;rows.sort(function(a,b){var x=a.cells[col],y=b.cells[col];if(num){return dir*((parseFloat(x.getAttribute("data-v"))||0)-(parseFloat(y.getAttribute("data-v"))||0));}return dir*x.textContent.localeCompare(y.textContent);});rows.forEach(function(r){tb.appendChild(r);});th.closest("tr").querySelectorAll("th").forEach(function(h){h.removeAttribute("aria-sort");});th.setAttribute("aria-sort",dir===1?"ascending":"descending");});});
document.documentElement.setAttribute("data-ready","1");
"#;

fn csp_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

fn finish(lang: Lang, title: &str, body: &str, figures: serde_json::Value) -> Report {
    // The figures as JSON, for scripts and tests; `<` escaped so nothing can end the element.
    let json = serde_json::to_string(&figures)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"{code}\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src {style_hash}; script-src {script_hash}; img-src data:; base-uri 'none'; form-action 'none'\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title><style>{STYLE}</style></head>\
<body>{body}<script type=\"application/json\" id=\"figures\">{json}</script><script>{SCRIPT}</script></body></html>\n",
        code = lang.code(),
        style_hash = csp_hash(STYLE),
        script_hash = csp_hash(SCRIPT),
        title = escape(title),
    );
    Report { html, figures }
}
