//! Pipeline definitions: `pipelines/*.toml` (raw, [`PipelineFile`]) → [`Pipeline`] (validated,
//! defaults applied, paths resolved).
//!
//! What describes the data goes in the file; run-time choices (which date, where to write
//! this time, which key file) are command-line flags that override it. Unknown keys are
//! errors that name the key, with line and column: a typo must never silently switch a
//! privacy rule off.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::goals::{FunnelFile, GoalFile, Goals};
use crate::ingest::Format;
use crate::pseudonymise::Filters;
use crate::pseudonymise::campaign::{CampaignRules, CampaignRulesFile};
use crate::pseudonymise::path::{PathRule, PathRules};
use crate::pseudonymise::referrer::HostLists;

/// The demo pipeline, compiled in so `logveil run` works with no set-up. Its relative paths
/// resolve as if it were at `./pipelines/demo.toml`.
pub const DEMO_PIPELINE: &str = include_str!("../pipelines/demo.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read pipeline {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("pipeline {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Name of the pipeline (default: the file name without `.toml`).
    pub name: Option<String>,
    /// The site this pipeline measures (one pipeline is one site).
    pub site: String,
    /// Host names of the site: referrers from these are `internal`; with a vhost format, lines
    /// of other hosts are skipped. Default: `[site, "www." + site]`.
    pub site_hosts: Option<Vec<String>>,
    /// Input files, directories or globs, relative to the pipeline file.
    pub inputs: Vec<String>,
    /// `combined` (default), `common`, `vhost_combined`, `vhost_common`.
    pub format: Option<Format>,
    /// IANA time zone for dates and hours (default `UTC`).
    pub time_zone: Option<String>,
    /// `"ephemeral"` (a fresh random key per run, never written) or a key file path.
    pub key: Option<String>,
    /// A key ring directory (one master per period, `logveil key rotate`); instead of `key`.
    pub key_dir: Option<String>,
    /// Gap that ends a visit (default `30m`).
    pub session_timeout: Option<String>,
    /// Longest visit before it is cut (default `6h`).
    pub max_visit: Option<String>,
    /// Minimum distinct visitors behind every released row (default 5, at least 2).
    pub k: Option<u32>,
    /// Output directory, relative to the pipeline file (default `out`).
    pub output: Option<String>,
    /// The run fails when more than this share of lines is rejected (default 0.5).
    pub max_rejected_share: Option<f64>,
    /// Where pseudonymous state and the privacy ledger live (default
    /// `$XDG_STATE_HOME/logveil/<name>`); never inside the output directory.
    pub state_dir: Option<String>,
    pub filters: Option<FiltersFile>,
    pub paths: Option<PathsFile>,
    pub channels: Option<HostLists>,
    /// Partitions of the clients, processed a few at a time (one per thread; default 8): more buckets, less
    /// memory. Outputs do not depend on it.
    pub buckets: Option<u16>,
    /// Differential privacy: present = on.
    pub differential_privacy: Option<DpFile>,
    /// Conversions: `[[goals]]` (name, path, match, after, value).
    #[serde(default)]
    pub goals: Vec<GoalFile>,
    /// `[[funnels]]` (name, steps).
    #[serde(default)]
    pub funnels: Vec<FunnelFile>,
    /// ISO 4217 code of goal values and ad costs (default `RUB`).
    pub currency: Option<String>,
    /// Ad spend CSV (date,utm_source,utm_medium,utm_campaign,cost,currency), relative to the
    /// pipeline file.
    pub costs: Option<String>,
    /// New and returning visitors, attribution across visits: present = on.
    pub returning_visitors: Option<ReturningFile>,
    /// utm_source aliases, source kinds and utm_medium classes, added to data/sources.toml.
    pub campaign_rules: Option<CampaignRulesFile>,
    /// Write `report.html` into the output after each run: present = on.
    pub report: Option<ReportFile>,
    /// Proxies and load balancers (CIDRs) whose `X-Forwarded-For` is believed: the client is
    /// the right-most address of the chain that is not one of them.
    pub trusted_proxies: Option<Vec<String>>,
    /// `format = "haproxy"`: the captured request headers in the configuration's order
    /// (default `["Host", "User-Agent", "Referer"]`).
    pub haproxy_captures: Option<Vec<String>>,
    /// An Apache `LogFormat` or nginx `log_format` string, pasted from the server's config
    /// (implies `format = "custom"`).
    pub log_format: Option<String>,
    /// `format = "json"`: which key holds each field.
    pub json_fields: Option<crate::ingest::json::JsonFields>,
    /// Object store settings for `s3://` inputs and outputs; the standard AWS environment
    /// variables, when set, win.
    pub s3: Option<S3File>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3File {
    /// e.g. `https://storage.yandexcloud.net` (default: AWS).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (default false).
    pub allow_http: Option<bool>,
    /// A 0600 TOML file with `access_key_id` and `secret_access_key`, relative to the
    /// pipeline file: secrets never sit in the pipeline itself.
    pub credentials_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportFile {
    /// `ru` (default) or `en`.
    pub lang: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturningFile {
    /// How far back a visitor is recognised, days (default 30): also the key epoch's length
    /// and the attribution lookback.
    pub lookback_days: Option<u32>,
    /// Let runs add and destroy the key ring's masters as epochs begin and end (default false;
    /// without it `logveil key rotate` / `key destroy` must be run by the operator).
    pub manage_keys: Option<bool>,
}

/// Returning visitors and attribution across visits (docs/PRIVACY.md, "Previous visits").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Returning {
    pub lookback_days: u32,
    pub manage_keys: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpFile {
    /// ε each table may spend over the rolling window.
    pub epsilon_budget: f64,
    /// Length of the rolling window, days (default 30).
    pub dp_window_days: Option<u32>,
    /// ε per table per released day (default: budget / window days).
    pub epsilon: Option<f64>,
    /// δ for releasing rows with data-dependent keys (default 1e-6).
    pub delta: Option<f64>,
    /// Contribution bounds per visitor and day (defaults 4, 10, 5, "30m").
    pub max_visits_per_day: Option<u32>,
    pub max_pageviews_per_visit: Option<u32>,
    pub max_rows_per_table: Option<u32>,
    pub max_visit_duration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersFile {
    pub bots: Option<bool>,
    pub static_assets: Option<bool>,
    pub asset_extensions: Option<Vec<String>>,
    pub non_page_requests: Option<bool>,
    /// e.g. `["2xx", "304"]`; an empty list switches the status filter off.
    pub status_classes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsFile {
    #[serde(default)]
    pub rewrite: Vec<PathRuleFile>,
    #[serde(default)]
    pub keep_segments: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRuleFile {
    pub pattern: String,
    pub replace: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Ephemeral,
    File(PathBuf),
    Ring(PathBuf),
}

/// A validated pipeline.
#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    /// Where the definition came from (a path, or `<embedded demo>`).
    pub origin: String,
    /// BLAKE3 of the definition's text, for the run record.
    pub hash: String,
    pub site: String,
    pub site_hosts: Vec<String>,
    pub inputs: Vec<PathBuf>,
    pub format: Format,
    pub time_zone_name: String,
    pub time_zone: jiff::tz::TimeZone,
    pub key: KeySource,
    pub session_timeout_s: i64,
    pub max_visit_s: i64,
    pub k: u32,
    pub output: PathBuf,
    pub max_rejected_share: f64,
    pub filters: Filters,
    pub path_rules: PathRules,
    pub host_lists: HostLists,
    pub state_dir: PathBuf,
    pub buckets: u16,
    pub dp: Option<crate::dp::DpSettings>,
    pub goals: Goals,
    pub currency: String,
    pub costs: Option<PathBuf>,
    pub returning: Option<Returning>,
    pub campaign_rules: CampaignRules,
    /// Write `report.html` after each run, in this language.
    pub report: Option<crate::report::i18n::Lang>,
    pub s3: crate::store::S3Settings,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub haproxy_captures: Vec<crate::ingest::haproxy::Capture>,
    pub custom_format: Option<crate::ingest::custom::CustomFormat>,
    pub json_fields: Option<crate::ingest::json::JsonFields>,
}

impl Pipeline {
    /// Loads a pipeline file, or the embedded demo when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Pipeline, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let base = p
                    .parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                Pipeline::parse(&text, &p.display().to_string(), &base, stem)
            }
            None => Pipeline::parse(
                DEMO_PIPELINE,
                "<embedded demo pipeline>",
                Path::new("pipelines"),
                Some("demo".into()),
            ),
        }
    }

    /// Parses and validates a pipeline's text; relative paths resolve against `base`.
    pub fn parse(
        text: &str,
        origin: &str,
        base: &Path,
        default_name: Option<String>,
    ) -> Result<Pipeline, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let file: PipelineFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        // Store URLs and `-` (standard input) are inputs or an output, never local state.
        for (field, value) in [
            ("state_dir", file.state_dir.as_deref()),
            ("key", file.key.as_deref()),
            ("key_dir", file.key_dir.as_deref()),
            ("costs", file.costs.as_deref()),
            (
                "s3.credentials_file",
                file.s3.as_ref().and_then(|s| s.credentials_file.as_deref()),
            ),
        ] {
            if let Some(v) = value
                && (v.trim() == "-" || v.trim_start().starts_with("s3://"))
            {
                return Err(invalid(format!(
                    "`{field}` must be a local path, not {v:?}"
                )));
            }
        }
        // Relative paths are relative to the pipeline file; store URLs and `-` (standard
        // input) stand as they are.
        let resolve = |p: &str| {
            let p = PathBuf::from(p);
            if p.is_absolute() || p.as_os_str() == "-" || p.to_string_lossy().starts_with("s3://") {
                p
            } else {
                lexically_normal(&base.join(p))
            }
        };
        let site = file.site.trim().to_ascii_lowercase();
        if site.is_empty() {
            return Err(invalid(
                "`site` must name the site, e.g. \"example.ru\"".into(),
            ));
        }
        let site_hosts = file
            .site_hosts
            .unwrap_or_else(|| vec![site.clone(), format!("www.{site}")])
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if file.inputs.is_empty() {
            return Err(invalid("`inputs` lists no files".into()));
        }
        let time_zone_name = file.time_zone.unwrap_or_else(|| "UTC".into());
        let time_zone = jiff::tz::TimeZone::get(&time_zone_name).map_err(|_| {
            invalid(format!(
                "unknown time zone {time_zone_name:?}: use an IANA name such as \"Europe/Moscow\""
            ))
        })?;
        let name = file
            .name
            .clone()
            .or(default_name)
            .unwrap_or_else(|| "pipeline".into());
        let state_dir = match &file.state_dir {
            Some(dir) => resolve(dir),
            None => default_state_dir(&name),
        };
        let returning = match &file.returning_visitors {
            None => None,
            Some(r) => {
                let lookback_days = r.lookback_days.unwrap_or(30);
                if !(1..=400).contains(&lookback_days) {
                    return Err(invalid(format!(
                        "`returning_visitors.lookback_days` = {lookback_days}: use 1 to 400"
                    )));
                }
                Some(Returning {
                    lookback_days,
                    manage_keys: r.manage_keys.unwrap_or(false),
                })
            }
        };
        let managed_ring = returning.is_some_and(|r| r.manage_keys);
        if managed_ring && file.key.is_some() {
            return Err(invalid(
                "`manage_keys` manages a key ring: use `key_dir` (or neither, for one under the state dir), not `key`".into(),
            ));
        }
        let key = match (file.key.as_deref().map(str::trim), &file.key_dir) {
            (Some(_), Some(_)) => return Err(invalid("give `key` or `key_dir`, not both".into())),
            (None, Some(dir)) => KeySource::Ring(resolve(dir)),
            (None, None) if managed_ring => KeySource::Ring(state_dir.join("keys")),
            (Some("ephemeral"), None) => KeySource::Ephemeral,
            (Some(""), None) | (None, None) => {
                return Err(invalid(
                    "`key` must be \"ephemeral\" or a key file path (or give `key_dir`)".into(),
                ));
            }
            (Some(p), None) => KeySource::File(resolve(p)),
        };
        let session_timeout_s =
            duration("session_timeout", file.session_timeout.as_deref(), 1800).map_err(&invalid)?;
        let max_visit_s =
            duration("max_visit", file.max_visit.as_deref(), 6 * 3600).map_err(&invalid)?;
        if max_visit_s <= session_timeout_s {
            return Err(invalid(
                "`max_visit` must be longer than `session_timeout`".into(),
            ));
        }
        if max_visit_s > 24 * 3600 {
            return Err(invalid("`max_visit` must be at most 24h".into()));
        }
        let k = file.k.unwrap_or(5);
        if k < 2 {
            return Err(invalid(format!(
                "`k` = {k} protects nobody; use 2 or more (default 5)"
            )));
        }
        let max_rejected_share = file.max_rejected_share.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&max_rejected_share) {
            return Err(invalid(
                "`max_rejected_share` must be between 0 and 1".into(),
            ));
        }
        let mut filters = Filters::default();
        if let Some(f) = file.filters {
            filters.bots = f.bots.unwrap_or(filters.bots);
            filters.static_assets = f.static_assets.unwrap_or(filters.static_assets);
            filters.non_page_requests = f.non_page_requests.unwrap_or(filters.non_page_requests);
            if let Some(ext) = f.asset_extensions {
                filters.asset_extensions = ext;
            }
            if let Some(classes) = f.status_classes {
                for c in &classes {
                    let ok = c.len() == 3
                        && c.as_bytes()[0].is_ascii_digit()
                        && c.bytes()
                            .all(|b| b.is_ascii_digit() || b == b'x' || b == b'X');
                    if !ok {
                        return Err(invalid(format!(
                            "status class {c:?} is not like \"2xx\" or \"304\""
                        )));
                    }
                }
                filters.status_classes = classes;
            }
        }
        let mut path_rules = PathRules::default();
        if let Some(p) = file.paths {
            for r in p.rewrite {
                let pattern = regex::Regex::new(&r.pattern)
                    .map_err(|e| invalid(format!("paths.rewrite pattern {:?}: {e}", r.pattern)))?;
                path_rules.rewrite.push(PathRule {
                    pattern,
                    replace: r.replace,
                });
            }
            for s in p.keep_segments {
                let re = regex::Regex::new(&s)
                    .map_err(|e| invalid(format!("paths.keep_segments pattern {s:?}: {e}")))?;
                path_rules.keep_segments.push(re);
            }
        }
        if returning.is_some() && key == KeySource::Ephemeral {
            return Err(invalid(
                "returning visitors need a lasting key: set `key` to a key file, or `key_dir`, or `manage_keys = true` under [returning_visitors]".into(),
            ));
        }
        let currency = file
            .currency
            .as_deref()
            .unwrap_or("RUB")
            .trim()
            .to_ascii_uppercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(format!(
                "`currency` = {currency:?} is not an ISO 4217 code such as \"RUB\""
            )));
        }
        let goals = Goals::from_files(
            &file.goals,
            &file.funnels,
            crate::costs::minor_digits(&currency),
        )
        .map_err(&invalid)?;
        let dp = match &file.differential_privacy {
            None => None,
            Some(d) => {
                if key == KeySource::Ephemeral {
                    return Err(invalid(
                        "differential privacy needs a lasting key (its ledger and noise are keyed): set `key` to a key file or `key_dir`".into(),
                    ));
                }
                let window_days = d.dp_window_days.unwrap_or(30);
                if window_days == 0 || !(d.epsilon_budget > 0.0 && d.epsilon_budget <= 100.0) {
                    return Err(invalid(
                        "`epsilon_budget` must be in (0, 100] and `dp_window_days` at least 1"
                            .into(),
                    ));
                }
                let epsilon = d
                    .epsilon
                    .unwrap_or(d.epsilon_budget / f64::from(window_days));
                let delta = d.delta.unwrap_or(1e-6);
                if !(epsilon > 0.0 && epsilon <= d.epsilon_budget && delta > 0.0 && delta < 0.01) {
                    return Err(invalid(
                        "`epsilon` must be in (0, epsilon_budget] and `delta` in (0, 0.01)".into(),
                    ));
                }
                let max_duration_s =
                    duration("max_visit_duration", d.max_visit_duration.as_deref(), 1800)
                        .map_err(&invalid)?;
                let bounds = crate::dp::Bounds {
                    max_visits_per_day: d.max_visits_per_day.unwrap_or(4).max(1),
                    max_pageviews_per_visit: d.max_pageviews_per_visit.unwrap_or(10).max(1),
                    max_rows_per_table: d.max_rows_per_table.unwrap_or(5).max(1),
                    max_duration_s,
                    goals: goals.goals.len() as u32,
                    funnel_steps: goals.funnels.iter().map(|f| f.steps.len() as u32).sum(),
                    max_goal_value: goals.max_value(),
                };
                Some(crate::dp::DpSettings {
                    epsilon_budget: d.epsilon_budget,
                    window_days,
                    epsilon,
                    delta,
                    bounds,
                })
            }
        };
        let mut host_lists = HostLists::builtin();
        if let Some(extra) = &file.channels {
            host_lists.extend(extra);
        }
        Ok(Pipeline {
            name,
            origin: origin.to_string(),
            hash: blake3::hash(text.as_bytes()).to_hex().to_string(),
            site,
            site_hosts,
            inputs: file.inputs.iter().map(|p| resolve(p)).collect(),
            format: match (&file.log_format, file.format) {
                (Some(_), None | Some(Format::Custom)) => Format::Custom,
                (Some(_), Some(other)) => {
                    return Err(invalid(format!(
                        "`log_format` is given, so `format` must be \"custom\" (or left out), not {:?}",
                        other.name()
                    )));
                }
                (None, Some(Format::Custom)) => {
                    return Err(invalid(
                        "`format = \"custom\"` needs `log_format` (an Apache LogFormat or nginx log_format string)".into(),
                    ));
                }
                (None, None) if file.json_fields.is_some() => Format::Json,
                (None, f) => f.unwrap_or(Format::Combined),
            },
            json_fields: match (&file.json_fields, file.format) {
                (Some(m), None | Some(Format::Json)) => {
                    m.validate().map_err(&invalid)?;
                    Some(m.clone())
                }
                (Some(_), Some(_)) => {
                    return Err(invalid("`[json_fields]` goes with `format = \"json\"`".into()));
                }
                (None, Some(Format::Json)) => {
                    return Err(invalid(
                        "`format = \"json\"` needs a `[json_fields]` table (client, time, request or url, …)".into(),
                    ));
                }
                (None, _) => None,
            },
            custom_format: match &file.log_format {
                None => None,
                Some(text) => Some(
                    crate::ingest::custom::CustomFormat::compile(text)
                        .map_err(|e| invalid(format!("log_format: {e}")))?,
                ),
            },
            time_zone_name,
            time_zone,
            key,
            session_timeout_s,
            max_visit_s,
            k,
            output: resolve(file.output.as_deref().unwrap_or("out")),
            max_rejected_share,
            filters,
            path_rules,
            host_lists,
            state_dir,
            buckets: match file.buckets {
                None => 8,
                Some(b @ 1..=4096) => b,
                Some(b) => return Err(invalid(format!("`buckets` = {b}: use 1 to 4096"))),
            },
            dp,
            goals,
            currency,
            costs: file.costs.as_deref().map(resolve),
            returning,
            haproxy_captures: file
                .haproxy_captures
                .iter()
                .flatten()
                .map(|h| crate::ingest::haproxy::Capture::parse(h))
                .collect(),
            trusted_proxies: match &file.trusted_proxies {
                None => Vec::new(),
                Some(list) => list
                    .iter()
                    .map(|c| {
                        let c = c.trim();
                        c.parse::<ipnet::IpNet>()
                            .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                            .map_err(|_| {
                                invalid(format!(
                                    "trusted_proxies: {c:?} is not an address or a CIDR such as \"10.0.0.0/8\""
                                ))
                            })
                    })
                    .collect::<Result<_, _>>()?,
            },
            s3: match &file.s3 {
                None => crate::store::S3Settings::default(),
                Some(f) => {
                    if let Some(e) = &f.endpoint
                        && !(e.starts_with("https://") || e.starts_with("http://"))
                    {
                        return Err(invalid(format!(
                            "s3.endpoint {e:?} must be an http:// or https:// URL"
                        )));
                    }
                    if f.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"))
                        && f.allow_http != Some(true)
                    {
                        return Err(invalid(
                            "s3.endpoint is plain http://: set `allow_http = true` to mean it".into(),
                        ));
                    }
                    crate::store::S3Settings {
                        endpoint: f.endpoint.clone(),
                        region: f.region.clone(),
                        allow_http: f.allow_http,
                        credentials_file: f.credentials_file.as_deref().map(resolve),
                    }
                }
            },
            report: match &file.report {
                None => None,
                Some(r) => Some(
                    crate::report::i18n::Lang::parse(r.lang.as_deref().unwrap_or("ru"))
                        .ok_or_else(|| invalid("`report.lang` must be \"ru\" or \"en\"".into()))?,
                ),
            },
            campaign_rules: {
                let mut rules = CampaignRules::builtin();
                if let Some(extra) = &file.campaign_rules {
                    rules.extend(extra);
                }
                rules
            },
        })
    }
}

/// `$XDG_STATE_HOME/logveil/<name>`, else `~/.local/state/logveil/<name>`.
fn default_state_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from(".logveil-state"));
    base.join("logveil").join(name)
}

/// `pipelines/../out` → `out`, without touching the file system (the path may not exist yet).
fn lexically_normal(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

/// `90s`, `30m`, `6h`, `1h30m` → seconds.
fn duration(key: &str, text: Option<&str>, default: i64) -> Result<i64, String> {
    let Some(text) = text else { return Ok(default) };
    let bad = || format!("`{key}` = {text:?} is not a duration like \"30m\", \"6h\" or \"1h30m\"");
    let mut total = 0i64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: i64 = number.parse().map_err(|_| bad())?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() || total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "site = \"example.ru\"\ninputs = [\"logs/*.log\"]\nkey = \"ephemeral\"\n";

    #[test]
    fn config_store_urls_and_stdin_stand_as_they_are() {
        let text = "site = \"example.ru\"\ninputs = [\"s3://logs/nginx/*.gz\", \"-\", \"a.log\"]\nkey = \"ephemeral\"\noutput = \"s3://out/site\"\n";
        let p = Pipeline::parse(text, "t.toml", Path::new("/etc/lv"), None).unwrap();
        assert_eq!(
            p.inputs,
            ["s3://logs/nginx/*.gz", "-", "/etc/lv/a.log"].map(PathBuf::from)
        );
        assert_eq!(p.output, PathBuf::from("s3://out/site"));
    }

    #[test]
    fn config_defaults_and_resolution() {
        let p = Pipeline::parse(MINIMAL, "t.toml", Path::new("/etc/lv"), Some("t".into())).unwrap();
        assert_eq!(p.inputs, vec![PathBuf::from("/etc/lv/logs/*.log")]);
        assert_eq!(p.output, PathBuf::from("/etc/lv/out"));
        assert_eq!((p.session_timeout_s, p.max_visit_s, p.k), (1800, 21_600, 5));
        assert_eq!(p.site_hosts, vec!["example.ru", "www.example.ru"]);
        assert_eq!(p.key, KeySource::Ephemeral);
    }

    #[test]
    fn config_unknown_key_is_named_with_its_line() {
        let text = format!("{MINIMAL}[filters]\nbot = false\n");
        let err = Pipeline::parse(&text, "t.toml", Path::new("."), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `bot`"), "{err}");
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn config_bad_values() {
        for (extra, needle) in [
            ("time_zone = \"Mars/Olympus\"\n", "unknown time zone"),
            ("k = 1\n", "protects nobody"),
            ("session_timeout = \"half an hour\"\n", "not a duration"),
            ("max_visit = \"10m\"\n", "longer than"),
            ("[filters]\nstatus_classes = [\"ok\"]\n", "status class"),
            (
                "state_dir = \"s3://b/state\"\n",
                "`state_dir` must be a local path",
            ),
            ("costs = \"-\"\n", "`costs` must be a local path"),
            (
                "[s3]\ncredentials_file = \"s3://b/creds\"\n",
                "`s3.credentials_file` must be a local path",
            ),
            (
                "[s3]\nendpoint = \"http://127.0.0.1:9000\"\n",
                "allow_http = true",
            ),
        ] {
            let err = Pipeline::parse(&format!("{MINIMAL}{extra}"), "t.toml", Path::new("."), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn config_durations() {
        assert_eq!(duration("x", Some("1h30m"), 0), Ok(5400));
        assert_eq!(duration("x", Some("90s"), 0), Ok(90));
        assert!(duration("x", Some("30"), 0).is_err());
        assert!(duration("x", Some("0m"), 0).is_err());
    }
}
