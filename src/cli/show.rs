//! `logveil show OUT [--date D] [--json]`: a quick look over SSH at one day's headline and top
//! rows, as aligned tables (coloured on a terminal, plain when piped), or JSON for scripts.

use std::fmt::Write;
use std::io::IsTerminal;
use std::path::Path;

use crate::day::Day;
use crate::pipeline::{Failure, exit};
use crate::report::data::{Published, Row};
use crate::report::i18n::Lang;

const TOP: usize = 10;

pub fn show(out: &Path, date: Option<Day>, json: bool) -> Result<String, Failure> {
    let local = super::LocalOutput::open(out)?;
    let p = Published::read(local.path(), None, None)
        .map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    let Some(day) = date.or_else(|| p.dates().last().copied()) else {
        return Err(Failure::new(
            exit::USAGE,
            format!("nothing is published in {}", out.display()),
        ));
    };
    if !p.dates().contains(&day) {
        return Err(Failure::new(
            exit::USAGE,
            format!("{day} is not published in {}", out.display()),
        ));
    }
    let sections: [(&str, &[&str]); 5] = [
        (
            "overview",
            &[
                "visitors",
                "visits",
                "pageviews",
                "bounce_rate",
                "mean_visit_duration_s",
            ],
        ),
        (
            "channels",
            &["visitors", "visits", "conversions", "conversion_rate"],
        ),
        (
            "campaigns",
            &["visitors", "visits", "conversions", "cost", "roas"],
        ),
        ("pages", &["visitors", "pageviews"]),
        ("referrers", &["visitors", "visits"]),
    ];
    if json {
        let mut v = serde_json::Map::new();
        v.insert("date".into(), day.to_string().into());
        for (table, columns) in sections {
            let rows: Vec<serde_json::Value> = top(p.rows(table, day), columns)
                .into_iter()
                .map(|r| {
                    let mut m = serde_json::Map::new();
                    for (k, name) in r.keys.iter().zip(crate::report::data::key_columns(table)) {
                        let v = if k.is_empty() {
                            serde_json::Value::Null
                        } else {
                            k.clone().into()
                        };
                        m.insert((*name).into(), v);
                    }
                    for c in columns {
                        let v = match r.get(c) {
                            Some(v) if v.fract() == 0.0 && v.abs() < 9e15 => (v as i64).into(),
                            Some(v) => v.into(),
                            None => serde_json::Value::Null,
                        };
                        m.insert((*c).into(), v);
                    }
                    m.insert("suppressed".into(), r.suppressed.into());
                    m.insert("is_other".into(), r.other.into());
                    serde_json::Value::Object(m)
                })
                .collect();
            v.insert(table.into(), rows.into());
        }
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n");
    }
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let bold = |s: &str| {
        if colour {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let dim = |s: &str| {
        if colour {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let lang = Lang::En;
    let mut s = String::new();
    let _ = writeln!(s, "{}", bold(&format!("{} · {day}", out.display())));
    for (table, columns) in sections {
        let rows = top(p.rows(table, day), columns);
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n{}", bold(table));
        let keys = crate::report::data::key_columns(table);
        let mut grid: Vec<Vec<String>> = vec![
            keys.iter()
                .chain(columns.iter())
                .map(|c| c.to_string())
                .collect(),
        ];
        for r in &rows {
            let mut line: Vec<String> = r
                .keys
                .iter()
                .map(|k| if k.is_empty() { "-".into() } else { k.clone() })
                .collect();
            for c in columns {
                line.push(match r.get(c) {
                    _ if r.suppressed => "hidden".into(),
                    Some(v) if c.ends_with("_rate") => lang.percent(v),
                    Some(v) if v.fract() != 0.0 => lang.number(v, 2),
                    Some(v) => lang.int(v),
                    None => "-".into(),
                });
            }
            grid.push(line);
        }
        let widths: Vec<usize> = (0..grid[0].len())
            .map(|i| grid.iter().map(|l| l[i].chars().count()).max().unwrap_or(0))
            .collect();
        for (n, line) in grid.iter().enumerate() {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i < keys.len() {
                    let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
                } else {
                    let _ = write!(text, "{}{cell}  ", " ".repeat(pad));
                }
            }
            let text = text.trim_end().to_string();
            let _ = writeln!(s, "  {}", if n == 0 { dim(&text) } else { text });
        }
    }
    Ok(s)
}

/// The first `TOP` rows by the first measure, released rows first, `(other)` last.
fn top<'a>(rows: &'a [Row], columns: &[&str]) -> Vec<&'a Row> {
    let mut v: Vec<&Row> = rows.iter().collect();
    let by = columns
        .get(1)
        .or(columns.first())
        .copied()
        .unwrap_or("visitors");
    v.sort_by(|a, b| {
        (a.other, a.suppressed).cmp(&(b.other, b.suppressed)).then(
            b.get(by)
                .partial_cmp(&a.get(by))
                .unwrap_or(std::cmp::Ordering::Equal),
        )
    });
    v.truncate(TOP);
    v
}
