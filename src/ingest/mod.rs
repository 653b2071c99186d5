//! Ingest: files → lines → borrowed [`RawRecord`]s.
//!
//! This stage knows nothing of keys, Polars or outputs. It owns reading (plain or gzip,
//! detected by magic bytes, streamed with bounded memory), the line-length cap and the
//! format parsers. A line it cannot place is reported as a [`Reject`] reason and a line
//! number, never as text: log lines hold IP addresses and user agents.

pub mod alb;
pub mod combined;
pub mod custom;
pub mod haproxy;
pub mod json;
pub mod reader;
pub mod timestamp;
pub mod w3c;

use serde::{Deserialize, Serialize};

/// The access-log formats logveil reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// NCSA combined (`%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`), Apache's and
    /// nginx's default. Lines in `common` format inside a combined log are accepted.
    Combined,
    /// NCSA common (`%h %l %u %t "%r" %>s %b`): no referrer, no user agent.
    Common,
    /// Apache's `vhost_combined`: `%v:%p` before the combined fields.
    VhostCombined,
    /// `%v` before the common fields (Matomo's `common_vhost`).
    VhostCommon,
    /// nginx `log_format … escape=json` with nginx's variable names as keys (`remote_addr`,
    /// `time_local` or `time_iso8601`, `request` or `request_method` + `request_uri`, `status`,
    /// `body_bytes_sent`, `http_referer`, `http_user_agent`, `http_x_forwarded_for`, `host`).
    NginxJson,
    /// Caddy v2's JSON access log (`ts` as epoch seconds or ISO 8601).
    Caddy,
    /// W3C extended (IIS, CloudFront): columns named by `#Fields:` lines, which may change
    /// within a file.
    W3c,
    /// Amazon CloudFront standard logs: W3C, tab-separated, user agents percent-encoded.
    Cloudfront,
    /// Traefik's access log in CLF: combined, then request count, router, backend URL and
    /// duration (ignored).
    Traefik,
    /// AWS Application Load Balancer access logs.
    Alb,
    /// HAProxy `option httplog` (with or without the syslog prefix; captured headers).
    Haproxy,
    /// The pipeline's `log_format`: an Apache `LogFormat` or nginx `log_format` string.
    Custom,
    /// JSON of any other shape, through the pipeline's `[json_fields]` mapping.
    Json,
    /// Traefik's JSON access log (`ClientHost`, `StartUTC`, `RequestMethod`, `RequestPath`,
    /// `DownstreamStatus`, headers as `request_User-Agent` …).
    TraefikJson,
    /// Chosen per input from its first lines ([`detect`]); the choice is in the run record.
    Auto,
}

/// The formats `auto` chooses from, in the order ties are broken.
pub const NAMED: [Format; 12] = [
    Format::Traefik,
    Format::Combined,
    Format::VhostCombined,
    Format::Common,
    Format::VhostCommon,
    Format::NginxJson,
    Format::Caddy,
    Format::TraefikJson,
    Format::Alb,
    Format::Haproxy,
    Format::Cloudfront,
    Format::W3c,
];

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Combined => "combined",
            Format::Common => "common",
            Format::VhostCombined => "vhost_combined",
            Format::VhostCommon => "vhost_common",
            Format::NginxJson => "nginx_json",
            Format::Caddy => "caddy",
            Format::W3c => "w3c",
            Format::Cloudfront => "cloudfront",
            Format::Traefik => "traefik",
            Format::TraefikJson => "traefik_json",
            Format::Alb => "alb",
            Format::Haproxy => "haproxy",
            Format::Custom => "custom",
            Format::Json => "json",
            Format::Auto => "auto",
        }
    }
}

/// The format of a block of lines (the first of an input): the named format that places the
/// most of its first 50 non-blank lines with every field it has (ties by [`NAMED`]'s order).
/// `combined` when nothing fits (its rejections then say why).
pub fn detect(block: &[u8]) -> Format {
    let lines = sample(block);
    let mut scratch = json::Scratch::default();
    let mut best = (Format::Combined, 0usize);
    for f in NAMED {
        let score = lines
            .iter()
            .filter(|l| {
                let Ok(client_ok) =
                    parse_line(f, l, &mut scratch).map(|r| looks_like_address(r.client))
                else {
                    return false;
                };
                // Under the wrong format the client field is a host name or a dash.
                // Combined lines carry the quoted referrer and user agent (even as "-");
                // common lines, which combined also reads, do not.
                let quotes = l.iter().filter(|b| **b == b'"').count();
                let cloudfront = scratch
                    .w3c_layout
                    .as_ref()
                    .is_some_and(w3c::Layout::is_cloudfront);
                let full = match f {
                    Format::Combined | Format::VhostCombined => quotes >= 6,
                    // Traefik adds a count, two quoted names and a duration in ms.
                    Format::Traefik => quotes >= 10 && l.ends_with(b"ms"),
                    // CloudFront's layout names its edge location.
                    Format::Cloudfront => cloudfront,
                    Format::W3c => !cloudfront,
                    _ => true,
                };
                full && client_ok
            })
            .count();
        if score > best.1 {
            best = (f, score);
        }
    }
    best.0
}

/// The first 50 non-blank lines of a block: what format detection looks at.
fn sample(block: &[u8]) -> Vec<&[u8]> {
    block
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty())
        .take(50)
        .collect()
}

/// (lines placed, lines sampled) of the first 50 non-blank lines of `block` in `format`.
pub fn fit(format: Format, block: &[u8]) -> (usize, usize) {
    let lines = sample(block);
    let mut scratch = json::Scratch::default();
    let placed = lines
        .iter()
        .filter(|l| parse_line(format, l, &mut scratch).is_ok())
        .count();
    (placed, lines.len())
}

/// An IP address (v4 or v6), as a client field should be under the right format.
fn looks_like_address(client: &[u8]) -> bool {
    std::str::from_utf8(client)
        .ok()
        .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok())
}

impl Format {
    /// Whether lines carry the site's host name (checked against `site_hosts`).
    pub fn has_vhost(self) -> bool {
        matches!(
            self,
            Format::VhostCombined
                | Format::VhostCommon
                | Format::NginxJson
                | Format::Caddy
                | Format::W3c
                | Format::Cloudfront
                | Format::TraefikJson
                | Format::Alb
                | Format::Haproxy
                | Format::Custom
                | Format::Json
                | Format::Auto
        )
    }
}

/// One parsed line. Every field borrows from the line buffer; none outlives the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord<'a> {
    pub vhost: Option<&'a [u8]>,
    /// `%h`: usually an IP address, possibly a host name when lookups are on.
    pub client: &'a [u8],
    /// Seconds since the Unix epoch, UTC.
    pub ts: i64,
    pub method: Option<&'a [u8]>,
    /// The request target with its query string, as logged.
    pub target: Option<&'a [u8]>,
    pub status: u16,
    pub bytes: u64,
    pub referrer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// The `X-Forwarded-For` header as logged, when the format has it (used only with
    /// `trusted_proxies`, then dropped).
    pub forwarded_for: Option<&'a [u8]>,
}

/// A logged status: digits under 1000 (0 for a connection closed before any response).
pub(crate) fn status_code(s: &[u8]) -> Option<u16> {
    std::str::from_utf8(s)
        .ok()?
        .parse::<u16>()
        .ok()
        .filter(|s| *s < 1000)
}

/// Why a line could not be placed. The names are written to the run record.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Reject {
    BlankLine,
    Truncated,
    BadClient,
    BadTimestamp,
    BadRequestField,
    BadStatus,
    BadSize,
    LineTooLong,
    /// Not a log line but a directive (W3C `#Fields:`, `#Version:` …): counted apart, neither
    /// a pageview nor a rejection.
    Directive,
}

impl Reject {
    pub fn name(self) -> &'static str {
        match self {
            Reject::BlankLine => "blank_line",
            Reject::Truncated => "truncated",
            Reject::BadClient => "bad_client",
            Reject::BadTimestamp => "bad_timestamp",
            Reject::BadRequestField => "bad_request_field",
            Reject::BadStatus => "bad_status",
            Reject::BadSize => "bad_size",
            Reject::LineTooLong => "line_too_long",
            Reject::Directive => "directive",
        }
    }
}

/// Parses one line in the given format. JSON values with escapes are unescaped into
/// `scratch` (one per worker, reused), so the record borrows from the line or from it.
pub fn parse_line<'a>(
    format: Format,
    line: &'a [u8],
    scratch: &'a mut json::Scratch,
) -> Result<RawRecord<'a>, Reject> {
    match format {
        Format::NginxJson => json::parse_nginx(line.trim_ascii(), scratch),
        Format::Caddy => json::parse_caddy(line.trim_ascii(), scratch),
        Format::TraefikJson => json::parse_traefik(line.trim_ascii(), scratch),
        Format::Alb => alb::parse_line(line.trim_ascii()),
        Format::Json => match scratch.json_fields.clone() {
            Some(map) => json::parse_mapped(line.trim_ascii(), &map, scratch),
            None => Err(Reject::Truncated),
        },
        Format::Custom => {
            // The record borrows the line and the scratch's path buffer only.
            let json::Scratch {
                custom, custom_uri, ..
            } = scratch;
            match custom {
                Some(f) => f.parse(line.trim_ascii(), custom_uri),
                None => Err(Reject::Truncated),
            }
        }
        Format::Haproxy => {
            let captures: &[haproxy::Capture] = if scratch.haproxy_captures.is_empty() {
                &haproxy::DEFAULT_CAPTURES
            } else {
                &scratch.haproxy_captures
            };
            let tz = scratch.time_zone.clone().unwrap_or(jiff::tz::TimeZone::UTC);
            haproxy::parse_line(line.trim_ascii(), captures, &tz)
        }
        Format::W3c | Format::Cloudfront => {
            let line = line.trim_ascii();
            if line.starts_with(b"#") {
                if let Some(layout) = w3c::Layout::from_directive(line) {
                    scratch.w3c_layout = Some(layout);
                }
                return Err(Reject::Directive);
            }
            let layout = scratch.w3c_layout.clone().unwrap_or_default();
            w3c::parse_line(line, &layout, &mut scratch.w3c_buffers)
        }
        Format::Auto => unreachable!("`auto` is resolved per input before parsing"),
        _ => combined::parse_line(format, line),
    }
}
