//! The Parquet writer settings and the released schemas. One place, so every file is written
//! the same way: zstd, full column statistics, one row group, rows in key order, columns in
//! the documented order (docs/TABLES.md).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use polars::prelude::*;

use super::OutputError;
use crate::aggregate::{self, TableName};
use crate::disclose::ReleasedRow;

/// Bytes buffered before a write to a released file (larger writes go straight through).
const WRITE_BUFFER: usize = 64 << 10;

/// What a table's derived columns need beyond its own rows, for one day.
#[derive(Debug, Default, Clone, Copy)]
pub struct DayContext<'a> {
    pub day: Option<crate::day::Day>,
    /// The day's released `overview.visits` (the denominator of a goal's conversion rate).
    pub day_visits: Option<i64>,
    pub costs: Option<&'a crate::costs::Costs>,
}

/// Writes one table's rows of one day. Not synced: the caller syncs the files it wrote
/// together ([`super::stage`]).
pub fn write_table(
    table: TableName,
    rows: &[ReleasedRow],
    noisy: bool,
    ctx: &DayContext<'_>,
    path: &Path,
) -> Result<(), OutputError> {
    let parquet_err = |e: PolarsError| OutputError::Parquet {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut df = frame(table, rows, noisy, ctx).map_err(parquet_err)?;
    let file = File::create(path).map_err(super::io_err(path))?;
    // Buffered: the writer puts the footer's Thrift fields one `write` each (thousands of
    // system calls a file, `strace -c`), and a small file is written in one call.
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    ParquetWriter::new(&mut out)
        .with_compression(ParquetCompression::Zstd(None))
        .with_statistics(StatisticsOptions::full())
        .with_row_group_size(Some(1 << 20))
        .finish(&mut df)
        .map_err(parquet_err)?;
    out.flush().map_err(super::io_err(path))?;
    Ok(())
}

fn ratio(num: &[Option<i64>], den: &[Option<i64>]) -> Vec<Option<f64>> {
    num.iter()
        .zip(den)
        .map(|(n, d)| match (n, d) {
            (Some(n), Some(d)) if *d > 0 => Some(*n as f64 / *d as f64),
            _ => None,
        })
        .collect()
}

/// The released frame: keys, measures, the table's ratios, then `is_other` or `suppressed`.
/// Column names are part of the public interface: users' SQL depends on them.
pub fn frame(
    table: TableName,
    rows: &[ReleasedRow],
    noisy: bool,
    ctx: &DayContext<'_>,
) -> PolarsResult<DataFrame> {
    let mut columns = Vec::new();
    for (i, key) in table.keys().iter().enumerate() {
        columns.push(aggregate::key_column(key, rows.iter().map(|r| &r.keys[i])));
    }
    let measure = |name: &str| -> Vec<Option<i64>> {
        let idx = table
            .measures()
            .iter()
            .position(|m| *m == name)
            .expect("known measure");
        rows.iter().map(|r| r.measures[idx]).collect()
    };
    for name in table.measures().iter().filter(|m| **m != "duration_s_sum") {
        if *name == "conversions_micro" {
            columns.push(Column::new(
                "conversions".into(),
                measure(name)
                    .iter()
                    .map(|m| m.map(|v| v as f64 / 1e6))
                    .collect::<Vec<Option<f64>>>(),
            ));
        }
        columns.push(Column::new((*name).into(), measure(name)));
    }
    match table {
        TableName::Overview => {
            let visits = measure("visits");
            columns.push(Column::new(
                "bounce_rate".into(),
                ratio(&measure("bounces"), &visits),
            ));
            columns.push(Column::new(
                "mean_visit_duration_s".into(),
                ratio(&measure("duration_s_sum"), &visits),
            ));
            columns.push(Column::new(
                "pageviews_per_visit".into(),
                ratio(&measure("pageviews"), &visits),
            ));
        }
        TableName::Channels | TableName::Campaigns => {
            let visits = measure("visits");
            columns.push(Column::new(
                "bounce_rate".into(),
                ratio(&measure("bounces"), &visits),
            ));
            columns.push(Column::new(
                "conversion_rate".into(),
                ratio(&measure("converting_visits"), &visits),
            ));
            if table == TableName::Campaigns {
                columns.extend(cost_columns(rows, &visits, &measure, ctx));
            }
        }
        TableName::Goals => {
            let day_visits = vec![ctx.day_visits; rows.len()];
            columns.push(Column::new(
                "conversion_rate".into(),
                ratio(&measure("conversions"), &day_visits),
            ));
        }
        TableName::Funnels => {
            let visits = measure("visits");
            let mut drop_off = vec![None; rows.len()];
            for i in 0..rows.len() {
                let next = rows.iter().position(|r| {
                    r.keys[0] == rows[i].keys[0]
                        && matches!((&r.keys[1], &rows[i].keys[1]),
                            (aggregate::KeyValue::Int(a), aggregate::KeyValue::Int(b)) if *a == b + 1)
                });
                if let (Some(j), Some(here)) = (next, visits[i])
                    && let Some(there) = visits[j]
                {
                    // Noisy counts (differential privacy) can rise from a step to the next.
                    drop_off[i] = Some((here - there).max(0));
                }
            }
            columns.push(Column::new("drop_off".into(), drop_off.clone()));
            columns.push(Column::new(
                "drop_off_rate".into(),
                ratio(&drop_off, &visits),
            ));
        }
        _ => {}
    }
    if table.public_keys() {
        columns.push(Column::new(
            "suppressed".into(),
            rows.iter().map(|r| r.suppressed).collect::<Vec<bool>>(),
        ));
    } else {
        columns.push(Column::new(
            "is_other".into(),
            rows.iter().map(|r| r.is_other).collect::<Vec<bool>>(),
        ));
    }
    if noisy {
        columns.push(Column::new(
            "noise_scale".into(),
            rows.iter()
                .map(|r| r.noise_scale)
                .collect::<Vec<Option<f64>>>(),
        ));
    }
    DataFrame::new(rows.len(), columns)
}

/// `cost`, `cost_per_visit`, `cpa` and `roas` of the campaigns rows of one day. A campaign's
/// cost stands on its row with the most visits (a campaign may arrive through several
/// channels), and its ratios use all its rows; the cost of campaigns folded into `(other)`
/// (or without any visit that day) stands on the `(other)` row.
fn cost_columns(
    rows: &[ReleasedRow],
    visits: &[Option<i64>],
    measure: &dyn Fn(&str) -> Vec<Option<i64>>,
    ctx: &DayContext<'_>,
) -> Vec<Column> {
    let n = rows.len();
    let conversions = measure("conversions");
    let value = measure("value");
    let mut cost: Vec<Option<i64>> = vec![None; n];
    let mut cpv = vec![None; n];
    let mut cpa = vec![None; n];
    let mut roas = vec![None; n];
    let str_key = |r: &ReleasedRow, i: usize| match &r.keys[i] {
        aggregate::KeyValue::Str(s) => s.clone(),
        aggregate::KeyValue::Int(_) => None,
    };
    if let (Some(costs), Some(day)) = (ctx.costs, ctx.day) {
        let mut other_cost = 0i64;
        for ((_, src, med, camp), c) in costs.of_day(day) {
            let mine: Vec<usize> = (0..n)
                .filter(|i| {
                    !rows[*i].is_other
                        && str_key(&rows[*i], 0) == *src
                        && str_key(&rows[*i], 1) == *med
                        && str_key(&rows[*i], 2) == *camp
                })
                .collect();
            let Some(&top) = mine
                .iter()
                .max_by_key(|i| (visits[**i], std::cmp::Reverse(**i)))
            else {
                other_cost += c;
                continue;
            };
            let sum = |m: &[Option<i64>]| mine.iter().filter_map(|i| m[*i]).sum::<i64>();
            cost[top] = Some(*c);
            let per = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
            cpv[top] = per(*c, sum(visits));
            cpa[top] = per(*c, sum(&conversions));
            roas[top] = per(sum(&value), *c);
        }
        if other_cost > 0
            && let Some(o) = rows.iter().position(|r| r.is_other)
        {
            let per =
                |num: i64, den: Option<i64>| den.filter(|d| *d > 0).map(|d| num as f64 / d as f64);
            cost[o] = Some(other_cost);
            cpv[o] = per(other_cost, visits[o]);
            cpa[o] = per(other_cost, conversions[o]);
            roas[o] = value[o].and_then(|v| (other_cost > 0).then(|| v as f64 / other_cost as f64));
        }
    }
    vec![
        Column::new("cost".into(), cost),
        Column::new("cost_per_visit".into(), cpv),
        Column::new("cpa".into(), cpa),
        Column::new("roas".into(), roas),
    ]
}
