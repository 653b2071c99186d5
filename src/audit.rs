//! `logveil audit`: an independent check of an output directory (decision 16, issue 4).
//!
//! It trusts nothing the writer says except the committed run records it is asked to check
//! against. It reads Parquet with the `parquet` crate's record API (not with Polars, which
//! wrote the files), holds its own allowlist of tables, columns and types (not derived from
//! the writer's table definitions), and checks:
//!
//! - **layout**: `<table>/date=YYYY-MM-DD/part-0.parquet`, table on the allowlist;
//! - **schema**: exactly the allowlisted columns, in order, with their types;
//! - **identifiers**: no string value holds an IP address, an e-mail address, a user-agent
//!   string, a UUID, a long digit run, a high-entropy token, a click id or a URL with a query
//!   (the test of [`crate::identifiers`], plus address parsing and user-agent shapes); no count
//!   is negative or as large as a 64-bit pseudonym;
//! - **k**: every row that is not suppressed has at least the k of the run record that lists
//!   the file; a suppressed row carries no measure;
//! - **provenance**: every file is listed, with its BLAKE3, in a committed run record.
//!
//! A finding names the file, column, row and rule, never the value: the value may be the leak.
//! `logveil run` audits its staged files before moving any into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parquet::basic::Type as Physical;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use crate::identifiers::{self, IdentifierKind};
use crate::record::RunRecord;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Int32,
    Int64,
    Float64,
    Str,
    Bool,
}

/// The released tables and their columns: the audit's own list. A new table or column must
/// be added here deliberately.
const ALLOWLIST: &[(&str, &[(&str, Kind)])] = &[
    (
        "overview",
        &[
            ("visitors", Kind::Int64),
            ("visits", Kind::Int64),
            ("pageviews", Kind::Int64),
            ("bounces", Kind::Int64),
            ("bounce_rate", Kind::Float64),
            ("mean_visit_duration_s", Kind::Float64),
            ("pageviews_per_visit", Kind::Float64),
            ("suppressed", Kind::Bool),
        ],
    ),
    (
        "hourly",
        &[
            ("hour", Kind::Int32),
            ("visitors", Kind::Int64),
            ("visits", Kind::Int64),
            ("pageviews", Kind::Int64),
            ("suppressed", Kind::Bool),
        ],
    ),
    (
        "pages",
        &[
            ("path", Kind::Str),
            ("visitors", Kind::Int64),
            ("pageviews", Kind::Int64),
            ("entries", Kind::Int64),
            ("exits", Kind::Int64),
            ("is_other", Kind::Bool),
        ],
    ),
    (
        "referrers",
        &[
            ("channel", Kind::Str),
            ("referrer_host", Kind::Str),
            ("visitors", Kind::Int64),
            ("visits", Kind::Int64),
            ("is_other", Kind::Bool),
        ],
    ),
    (
        "devices",
        &[
            ("device_type", Kind::Str),
            ("browser", Kind::Str),
            ("os", Kind::Str),
            ("visitors", Kind::Int64),
            ("visits", Kind::Int64),
            ("is_other", Kind::Bool),
        ],
    ),
    (
        "channels",
        &[
            ("channel", Kind::Str),
            ("visitors", Kind::Int64),
            ("visits", Kind::Int64),
            ("pageviews", Kind::Int64),
            ("bounces", Kind::Int64),
            ("conversions", Kind::Int64),
            ("converting_visits", Kind::Int64),
            ("value", Kind::Int64),
            ("bounce_rate", Kind::Float64),
            ("conversion_rate", Kind::Float64),
            ("suppressed", Kind::Bool),
        ],
    ),
    (
        "campaigns",
        &[
            ("utm_source", Kind::Str),
            ("utm_medium", Kind::Str),
            ("utm_campaign", Kind::Str),
            ("channel", Kind::Str),
            ("visitors", Kind::Int64),
            ("visits", Kind::Int64),
            ("pageviews", Kind::Int64),
            ("bounces", Kind::Int64),
            ("conversions", Kind::Int64),
            ("converting_visits", Kind::Int64),
            ("value", Kind::Int64),
            ("bounce_rate", Kind::Float64),
            ("conversion_rate", Kind::Float64),
            ("cost", Kind::Int64),
            ("cost_per_visit", Kind::Float64),
            ("cpa", Kind::Float64),
            ("roas", Kind::Float64),
            ("is_other", Kind::Bool),
        ],
    ),
    (
        "campaign_goals",
        &[
            ("goal", Kind::Str),
            ("utm_source", Kind::Str),
            ("utm_medium", Kind::Str),
            ("utm_campaign", Kind::Str),
            ("channel", Kind::Str),
            ("visitors", Kind::Int64),
            ("conversions", Kind::Int64),
            ("value", Kind::Int64),
            ("is_other", Kind::Bool),
        ],
    ),
    (
        "goals",
        &[
            ("goal", Kind::Str),
            ("visitors", Kind::Int64),
            ("conversions", Kind::Int64),
            ("value", Kind::Int64),
            ("conversion_rate", Kind::Float64),
            ("suppressed", Kind::Bool),
        ],
    ),
    (
        "funnels",
        &[
            ("funnel", Kind::Str),
            ("step", Kind::Int32),
            ("visitors", Kind::Int64),
            ("visits", Kind::Int64),
            ("drop_off", Kind::Int64),
            ("drop_off_rate", Kind::Float64),
            ("suppressed", Kind::Bool),
        ],
    ),
    (
        "attribution",
        &[
            ("model", Kind::Str),
            ("goal", Kind::Str),
            ("utm_source", Kind::Str),
            ("utm_medium", Kind::Str),
            ("utm_campaign", Kind::Str),
            ("channel", Kind::Str),
            ("visitors", Kind::Int64),
            ("conversions", Kind::Float64),
            ("conversions_micro", Kind::Int64),
            ("value", Kind::Int64),
            ("is_other", Kind::Bool),
        ],
    ),
    (
        "loyalty",
        &[
            ("dimension", Kind::Str),
            ("bucket", Kind::Str),
            ("visitors", Kind::Int64),
            ("visits", Kind::Int64),
            ("suppressed", Kind::Bool),
        ],
    ),
    (
        "uniques",
        &[
            ("period", Kind::Str),
            ("period_start", Kind::Str),
            ("visitors", Kind::Int64),
            ("suppressed", Kind::Bool),
        ],
    ),
];

/// Counts above this cannot be counts of one site's day; a 64-bit pseudonym almost always is.
const MAX_PLAUSIBLE_COUNT: i64 = 1 << 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Relative to the audited directory.
    pub file: String,
    pub column: Option<String>,
    /// 0-based row.
    pub row: Option<usize>,
    pub rule: &'static str,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.rule)?;
        if let Some(c) = &self.column {
            write!(f, ", column {c}")?;
        }
        if let Some(r) = self.row {
            write!(f, ", row {r}")?;
        }
        Ok(())
    }
}

/// Files and rows checked per table, and the findings.
#[derive(Debug, Default)]
pub struct AuditReport {
    pub tables: BTreeMap<String, (u64, u64)>,
    pub findings: Vec<Finding>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }

    /// One line per table, then one per finding.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (table, (files, rows)) in &self.tables {
            let bad = self
                .findings
                .iter()
                .filter(|f| f.file.starts_with(&format!("{table}/")))
                .count();
            let verdict = if bad == 0 {
                "ok".to_string()
            } else {
                format!("FAILED ({bad} findings)")
            };
            s.push_str(&format!("{table}: {files} files, {rows} rows: {verdict}\n"));
        }
        for f in &self.findings {
            s.push_str(&format!("finding: {f}\n"));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot audit {path}: {message}")]
    Io { path: String, message: String },
}

/// What a file is expected to be: listed in a record with this hash, under this k.
struct Expected {
    blake3: String,
    k: u32,
}

/// Audits a published output directory against its committed run records (the latest record
/// that lists a file is the one it must match).
pub fn audit_dir(out: &Path) -> Result<AuditReport, AuditError> {
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    let runs = out.join("_runs");
    let mut records: Vec<PathBuf> = match std::fs::read_dir(&runs) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                n.ends_with(".json") && !n.ends_with(".pending.json")
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    records.sort();
    for path in records {
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|e| io(&path, e))?;
        for f in record.files {
            expected.insert(
                f.path,
                Expected {
                    blake3: f.blake3,
                    k: record.pipeline.k,
                },
            );
        }
    }
    let files = data_files(out)?;
    Ok(audit_files(out, &files, &expected))
}

/// Audits the files a run staged under `root`, against the record it is about to commit.
pub fn audit_staged(root: &Path, record: &RunRecord) -> Result<AuditReport, AuditError> {
    let expected = record
        .files
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                Expected {
                    blake3: f.blake3.clone(),
                    k: record.pipeline.k,
                },
            )
        })
        .collect();
    let files = data_files(root)?;
    Ok(audit_files(root, &files, &expected))
}

fn io(path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Every file under `root` except names starting with `_` or `.` (run records, staging, locks).
fn data_files(root: &Path) -> Result<Vec<String>, AuditError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let path = entry.map_err(|e| io(&dir, e))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Audits every file, side by side on the cores (each file read and checked on its own), the
/// findings in file order.
fn audit_files(
    root: &Path,
    files: &[String],
    expected: &BTreeMap<String, Expected>,
) -> AuditReport {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let parts = crate::threads::in_parallel(files.len(), workers, |i| {
        audit_file(root, &files[i], expected)
    });
    let mut report = AuditReport::default();
    for part in parts {
        for (table, (files, rows)) in part.tables {
            let entry = report.tables.entry(table).or_default();
            entry.0 += files;
            entry.1 += rows;
        }
        report.findings.extend(part.findings);
    }
    report
}

/// The audit of one file: its table's file and row counts and its findings.
fn audit_file(root: &Path, rel: &str, expected: &BTreeMap<String, Expected>) -> AuditReport {
    let mut report = AuditReport::default();
    let finding = |rule, column: Option<&str>, row| Finding {
        file: rel.to_string(),
        column: column.map(str::to_string),
        row,
        rule,
    };
    // The report is derived from the tables; it must be the one a run record lists.
    if rel == crate::output::REPORT_FILE {
        let listed = expected.get(rel).map(|e| e.blake3.clone());
        let actual = std::fs::read(root.join(rel))
            .map(|b| blake3::hash(&b).to_hex().to_string())
            .ok();
        match (listed, actual) {
            (None, _) => report.findings.push(finding("no_run_record", None, None)),
            (Some(l), Some(a)) if l == a => {}
            _ => report.findings.push(finding("hash_mismatch", None, None)),
        }
        return report;
    }
    let parts: Vec<&str> = rel.split('/').collect();
    let table = parts[0].to_string();
    let entry = report.tables.entry(table.clone()).or_default();
    entry.0 += 1;
    let layout_ok = parts.len() == 3
        && parts[1]
            .strip_prefix("date=")
            .and_then(crate::day::Day::parse)
            .is_some()
        && parts[2] == "part-0.parquet";
    let Some((_, columns)) = ALLOWLIST.iter().find(|(t, _)| *t == table) else {
        report
            .findings
            .push(finding("table_not_allowed", None, None));
        return report;
    };
    if !layout_ok {
        report.findings.push(finding("bad_layout", None, None));
        return report;
    }
    let path = root.join(rel);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(_) => {
            report.findings.push(finding("unreadable", None, None));
            return report;
        }
    };
    let k = match expected.get(rel) {
        None => {
            report.findings.push(finding("no_run_record", None, None));
            None
        }
        Some(e) if e.blake3 != blake3::hash(&bytes).to_hex().as_str() => {
            report.findings.push(finding("hash_mismatch", None, None));
            Some(e.k)
        }
        Some(e) => Some(e.k),
    };
    let reader = match SerializedFileReader::new(bytes::Bytes::from(bytes)) {
        Ok(r) => r,
        Err(_) => {
            report.findings.push(finding("not_parquet", None, None));
            return report;
        }
    };
    // Schema: names, order, physical types.
    let schema = reader.metadata().file_metadata().schema_descr();
    let got: Vec<(String, Physical)> = schema
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.physical_type()))
        .collect();
    let mut want: Vec<(String, Physical)> = columns
        .iter()
        .map(|(n, k)| {
            let p = match k {
                Kind::Int32 => Physical::INT32,
                Kind::Int64 => Physical::INT64,
                Kind::Float64 => Physical::DOUBLE,
                Kind::Str => Physical::BYTE_ARRAY,
                Kind::Bool => Physical::BOOLEAN,
            };
            (n.to_string(), p)
        })
        .collect();
    // Differential-privacy releases add a trailing `noise_scale` column.
    let noisy = got.len() == want.len() + 1
        && got.last() == Some(&("noise_scale".to_string(), Physical::DOUBLE));
    if noisy {
        want.push(("noise_scale".to_string(), Physical::DOUBLE));
    }
    if got != want {
        let extra = got.iter().find(|c| !want.contains(c)).map(|c| c.0.as_str());
        report
            .findings
            .push(finding("schema_not_allowed", extra, None));
        return report;
    }
    let rows = match reader.get_row_iter(None) {
        Ok(rows) => rows,
        Err(_) => {
            report.findings.push(finding("unreadable", None, None));
            return report;
        }
    };
    let mut n = 0u64;
    for (i, row) in rows.enumerate() {
        n += 1;
        let Ok(row) = row else {
            report.findings.push(finding("unreadable", None, Some(i)));
            break;
        };
        let mut visitors = None;
        let mut suppressed = false;
        let mut any_measure = false;
        let mut declared_noise = false;
        for (name, field) in row.get_column_iter() {
            match field {
                Field::Str(s) => {
                    if let Some(rule) = identifier_rule(s) {
                        report.findings.push(finding(rule, Some(name), Some(i)));
                    }
                }
                Field::Long(v) => {
                    any_measure = true;
                    // Millionths of a conversion run 10⁶ times larger than counts.
                    let max = if name.ends_with("_micro") {
                        MAX_PLAUSIBLE_COUNT.saturating_mul(1 << 20)
                    } else {
                        MAX_PLAUSIBLE_COUNT
                    };
                    if *v < 0 || *v > max {
                        report
                            .findings
                            .push(finding("implausible_count", Some(name), Some(i)));
                    }
                    if name == "visitors" {
                        visitors = Some(*v);
                    }
                }
                Field::Double(_) if name == "noise_scale" => declared_noise = true,
                Field::Double(_) => any_measure = true,
                Field::Bool(b) if name == "suppressed" => suppressed = *b,
                _ => {}
            }
        }
        if suppressed {
            if any_measure {
                report
                    .findings
                    .push(finding("suppressed_row_has_values", None, Some(i)));
            }
        } else if let Some(k) = k
            && !declared_noise
            && visitors.is_none_or(|v| v < i64::from(k))
        {
            report
                .findings
                .push(finding("below_k", Some("visitors"), Some(i)));
        }
    }
    entry.1 += n;
    report
}

/// The rule a string value breaks, if any.
fn identifier_rule(value: &str) -> Option<&'static str> {
    let lower = value.to_ascii_lowercase();
    for id in ["gclid", "yclid", "ysclid", "fbclid", "msclkid", "utm_"] {
        if lower.contains(&format!("{id}=")) {
            return Some("click_id_or_query");
        }
    }
    if value.contains('?') && value.contains('=') {
        return Some("url_with_query");
    }
    if looks_like_user_agent(value) {
        return Some("user_agent");
    }
    for token in value.split(|c: char| c.is_whitespace() || "/?&=,;\"'()<>".contains(c)) {
        if token.is_empty() {
            continue;
        }
        let bare = token.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return Some("ip_address");
        }
        if let Some(kind) = identifiers::classify(token) {
            return Some(match kind {
                IdentifierKind::Email => "email",
                IdentifierKind::Uuid => "uuid",
                IdentifierKind::Id => "digit_run",
                IdentifierKind::Token => "token",
            });
        }
    }
    None
}

fn looks_like_user_agent(value: &str) -> bool {
    const PRODUCTS: [&str; 8] = [
        "mozilla/",
        "applewebkit/",
        "gecko/",
        "chrome/",
        "safari/",
        "curl/",
        "wget/",
        "python-requests/",
    ];
    let lower = value.to_ascii_lowercase();
    PRODUCTS.iter().any(|p| {
        lower
            .find(p)
            .is_some_and(|i| lower[i + p.len()..].starts_with(|c: char| c.is_ascii_digit()))
    }) || [
        "(windows nt",
        "(macintosh;",
        "(x11;",
        "(iphone;",
        "(linux; android",
        "(ipad;",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_identifier_rules() {
        for (v, rule) in [
            ("/u/192.0.2.1", "ip_address"),
            ("2001:db8::5", "ip_address"),
            ("[2001:db8::5]", "ip_address"),
            ("/unsubscribe/ivan@mail.ru", "email"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "user_agent"),
            ("curl/8.4.0", "user_agent"),
            ("/reset/9f86d081884c7d659a2feaa0c55ad015", "token"),
            ("/?yclid=5551234567", "click_id_or_query"),
            ("/search?q=phones", "url_with_query"),
            ("/orders/918273645", "digit_run"),
            ("/u/123e4567-e89b-12d3-a456-426614174000", "uuid"),
        ] {
            assert_eq!(identifier_rule(v), Some(rule), "{v}");
        }
    }

    #[test]
    fn audit_passes_ordinary_values() {
        for v in [
            "/",
            "/catalog",
            "/каталог",
            "/blog/how-to-configure-nginx",
            "/orders/:id",
            "/reset/:token",
            "(other)",
            "(ip address)",
            "yandex.ru",
            "пример.рф",
            "org.telegram.messenger",
            "Chrome",
            "Mobile Safari",
            "Yandex Browser",
            "Mac OS X",
            "organic_search",
            "desktop",
            "/product/iphone-15-pro-256gb",
            "Chrome Mobile WebView",
            "Samsung Internet",
        ] {
            assert_eq!(identifier_rule(v), None, "{v}");
        }
    }
}
