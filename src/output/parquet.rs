//! The Parquet writer settings and the released schemas. One place, so every file is written
//! the same way: zstd, full column statistics, one row group, rows in key order, columns in
//! the documented order (docs/TABLES.md).

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use super::OutputError;
use crate::aggregate::{self, TableName};
use crate::disclose::ReleasedRow;

/// Writes one table's rows of one day.
pub fn write_table(
    table: TableName,
    rows: &[ReleasedRow],
    noisy: bool,
    path: &Path,
) -> Result<(), OutputError> {
    let parquet_err = |e: PolarsError| OutputError::Parquet {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut df = frame(table, rows, noisy).map_err(parquet_err)?;
    let mut file = File::create(path).map_err(super::io_err(path))?;
    ParquetWriter::new(&mut file)
        .with_compression(ParquetCompression::Zstd(None))
        .with_statistics(StatisticsOptions::full())
        .with_row_group_size(Some(1 << 20))
        .finish(&mut df)
        .map_err(parquet_err)?;
    file.sync_all().map_err(super::io_err(path))
}

/// The released frame: keys, measures (overview adds its ratios), then `is_other` or
/// `suppressed`. Column names are part of the public interface: users' SQL depends on them.
pub fn frame(table: TableName, rows: &[ReleasedRow], noisy: bool) -> PolarsResult<DataFrame> {
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
        columns.push(Column::new((*name).into(), measure(name)));
    }
    if table == TableName::Overview {
        let ratio = |num: &[Option<i64>], den: &[Option<i64>]| -> Vec<Option<f64>> {
            num.iter()
                .zip(den)
                .map(|(n, d)| match (n, d) {
                    (Some(n), Some(d)) if *d > 0 => Some(*n as f64 / *d as f64),
                    _ => None,
                })
                .collect()
        };
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
