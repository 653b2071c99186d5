//! JSON access logs: nginx's `escape=json` `log_format` with nginx's own variable names, and
//! Caddy v2's structured access log.
//!
//! One JSON object per line, read with serde_json into borrowed fields: a value without
//! escapes stays a slice of the line; a value with escapes (`\"` in a user agent, `\u0430` in
//! a Cyrillic path) is unescaped into the per-worker [`Scratch`], reused line after line. Like
//! every parser here, a line that cannot be placed is a [`Reject`] reason, never its text.

use std::borrow::Cow;

use serde::Deserialize;

use super::{RawRecord, Reject};

/// Per-worker parsing state, reused from line to line: owned buffers for unescaped values
/// (one per field), and the W3C layout in force.
#[derive(Debug, Default)]
pub struct Scratch {
    fields: [Vec<u8>; FIELDS],
    pub w3c_layout: Option<super::w3c::Layout>,
    pub w3c_buffers: [Vec<u8>; 2],
    /// HAProxy: the local time zone of its dates, and its captured request headers.
    /// `None`: UTC.
    pub time_zone: Option<jiff::tz::TimeZone>,
    pub haproxy_captures: Vec<super::haproxy::Capture>,
    /// `format = "custom"`: the compiled `log_format`, and a buffer for path + query.
    pub custom: Option<std::sync::Arc<super::custom::CustomFormat>>,
    pub custom_uri: Vec<u8>,
    /// `format = "json"`: the pipeline's field mapping.
    pub json_fields: Option<std::sync::Arc<JsonFields>>,
}

const FIELDS: usize = 7;
const CLIENT: usize = 0;
const METHOD: usize = 1;
const TARGET: usize = 2;
const REFERRER: usize = 3;
const USER_AGENT: usize = 4;
const FORWARDED: usize = 5;
const HOST: usize = 6;

/// A JSON scalar that may be written as a string or a number (`"status": "200"` or `200`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    Number(f64),
}

impl Scalar<'_> {
    fn number(&self) -> Option<f64> {
        match self {
            Scalar::Number(n) => Some(*n),
            Scalar::Text(t) => t.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct Nginx<'a> {
    #[serde(borrow, default)]
    remote_addr: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    time_local: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    time_iso8601: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request_method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request_uri: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    body_bytes_sent: Option<Scalar<'a>>,
    #[serde(borrow, default)]
    http_referer: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    http_user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    http_x_forwarded_for: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    host: Option<Cow<'a, str>>,
}

/// Traefik's JSON access log (default field names; request headers kept as `request_<Name>`).
#[derive(Deserialize)]
struct Traefik<'a> {
    #[serde(rename = "ClientHost", borrow, default)]
    client_host: Option<Cow<'a, str>>,
    #[serde(rename = "StartUTC", borrow, default)]
    start_utc: Option<Cow<'a, str>>,
    #[serde(rename = "RequestMethod", borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(rename = "RequestPath", borrow, default)]
    path: Option<Cow<'a, str>>,
    #[serde(rename = "RequestHost", borrow, default)]
    host: Option<Cow<'a, str>>,
    #[serde(rename = "DownstreamStatus", default)]
    status: Option<f64>,
    #[serde(rename = "DownstreamContentSize", default)]
    size: Option<f64>,
    #[serde(rename = "request_Referer", borrow, default)]
    referrer: Option<Cow<'a, str>>,
    #[serde(rename = "request_User-Agent", borrow, default)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(rename = "request_X-Forwarded-For", borrow, default)]
    forwarded: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Caddy<'a> {
    #[serde(borrow)]
    ts: Scalar<'a>,
    #[serde(borrow)]
    request: CaddyRequest<'a>,
    #[serde(default)]
    status: Option<f64>,
    #[serde(default)]
    size: Option<f64>,
}

#[derive(Deserialize)]
struct CaddyRequest<'a> {
    #[serde(borrow, default)]
    client_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    remote_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    host: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    headers: std::collections::HashMap<Cow<'a, str>, Vec<Cow<'a, str>>>,
}

/// The fields of a record before they are pinned to the line or the scratch buffers.
#[derive(Default)]
struct Fields<'a> {
    text: [Option<Cow<'a, str>>; FIELDS],
    ts: i64,
    status: u16,
    bytes: u64,
}

/// A value that means "none" in access logs.
fn present(v: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    v.filter(|s| !s.is_empty() && s != "-")
}

fn iso_or_epoch(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_second());
    }
    s.trim().parse::<f64>().ok().map(|f| f.floor() as i64)
}

/// Parses one nginx `escape=json` line.
pub fn parse_nginx<'a>(line: &'a [u8], scratch: &'a mut Scratch) -> Result<RawRecord<'a>, Reject> {
    let n: Nginx<'a> = serde_json::from_slice(line).map_err(|_| Reject::Truncated)?;
    let ts = match (&n.time_iso8601, &n.time_local) {
        (Some(iso), _) => iso_or_epoch(iso),
        (None, Some(local)) => super::timestamp::parse_clf(local.as_bytes()),
        (None, None) => None,
    }
    .ok_or(Reject::BadTimestamp)?;
    let status = n
        .status
        .as_ref()
        .and_then(Scalar::number)
        .filter(|s| (0.0..1000.0).contains(s))
        .ok_or(Reject::BadStatus)? as u16;
    let bytes = n
        .body_bytes_sent
        .as_ref()
        .and_then(Scalar::number)
        .map_or(0, |b| b.max(0.0) as u64);
    // `$request` ("GET /path HTTP/1.1") or `$request_method` + `$request_uri`.
    let (method, target) = match (n.request_method, n.request_uri, n.request) {
        (Some(m), Some(u), _) => (Some(m), Some(u)),
        (_, _, Some(r)) => split_request(r),
        _ => (None, None),
    };
    let mut f = Fields {
        ts,
        status,
        bytes,
        ..Fields::default()
    };
    f.text[CLIENT] = Some(present(n.remote_addr).ok_or(Reject::BadClient)?);
    f.text[METHOD] = present(method);
    f.text[TARGET] = present(target);
    f.text[REFERRER] = present(n.http_referer);
    f.text[USER_AGENT] = present(n.http_user_agent);
    f.text[FORWARDED] = present(n.http_x_forwarded_for);
    f.text[HOST] = present(n.host);
    Ok(pin(f, scratch))
}

/// Parses one Traefik JSON access-log line.
pub fn parse_traefik<'a>(
    line: &'a [u8],
    scratch: &'a mut Scratch,
) -> Result<RawRecord<'a>, Reject> {
    let t: Traefik<'a> = serde_json::from_slice(line).map_err(|_| Reject::Truncated)?;
    let ts = t
        .start_utc
        .as_deref()
        .and_then(iso_or_epoch)
        .ok_or(Reject::BadTimestamp)?;
    let status = t
        .status
        .filter(|s| (0.0..1000.0).contains(s))
        .ok_or(Reject::BadStatus)? as u16;
    let mut f = Fields {
        ts,
        status,
        bytes: t.size.map_or(0, |s| s.max(0.0) as u64),
        ..Fields::default()
    };
    f.text[CLIENT] = Some(present(t.client_host).ok_or(Reject::BadClient)?);
    f.text[METHOD] = present(t.method);
    f.text[TARGET] = present(t.path);
    f.text[REFERRER] = present(t.referrer);
    f.text[USER_AGENT] = present(t.user_agent);
    f.text[FORWARDED] = present(t.forwarded);
    f.text[HOST] = present(t.host);
    Ok(pin(f, scratch))
}

/// Parses one Caddy v2 access-log line (`ts` as epoch seconds or an ISO-8601 string).
pub fn parse_caddy<'a>(line: &'a [u8], scratch: &'a mut Scratch) -> Result<RawRecord<'a>, Reject> {
    let c: Caddy<'a> = serde_json::from_slice(line).map_err(|_| Reject::Truncated)?;
    let ts = match &c.ts {
        Scalar::Number(n) => Some(n.floor() as i64),
        Scalar::Text(t) => iso_or_epoch(t),
    }
    .ok_or(Reject::BadTimestamp)?;
    let status = c
        .status
        .filter(|s| (0.0..1000.0).contains(s))
        .ok_or(Reject::BadStatus)? as u16;
    let mut r = c.request;
    let mut header = |name: &str| -> Option<Cow<'a, str>> {
        let key = r
            .headers
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .cloned()?;
        let values = r.headers.remove(&key)?;
        let mut it = values.into_iter();
        let first = it.next()?;
        // Repeated headers join as the server would forward them.
        let rest: Vec<Cow<'a, str>> = it.collect();
        if rest.is_empty() {
            Some(first)
        } else {
            let mut all = first.into_owned();
            for v in rest {
                all.push_str(", ");
                all.push_str(&v);
            }
            Some(Cow::Owned(all))
        }
    };
    let (referrer, user_agent, forwarded) = (
        header("Referer"),
        header("User-Agent"),
        header("X-Forwarded-For"),
    );
    let mut f = Fields {
        ts,
        status,
        bytes: c.size.map_or(0, |s| s.max(0.0) as u64),
        ..Fields::default()
    };
    // Caddy's `client_ip` already honours its own trusted proxies; `remote_ip` is the peer.
    f.text[CLIENT] = Some(
        present(r.remote_ip.take())
            .or(present(r.client_ip.take()))
            .ok_or(Reject::BadClient)?,
    );
    f.text[METHOD] = present(r.method.take());
    f.text[TARGET] = present(r.uri.take());
    f.text[REFERRER] = present(referrer);
    f.text[USER_AGENT] = present(user_agent);
    f.text[FORWARDED] = present(forwarded);
    f.text[HOST] = present(r.host.take());
    Ok(pin(f, scratch))
}

fn split_request(r: Cow<'_, str>) -> (Option<Cow<'_, str>>, Option<Cow<'_, str>>) {
    match r {
        Cow::Borrowed(s) => {
            let mut parts = s.split(' ');
            (
                parts.next().map(Cow::Borrowed),
                parts.next().map(Cow::Borrowed),
            )
        }
        Cow::Owned(s) => {
            let mut parts = s.split(' ');
            (
                parts.next().map(|p| Cow::Owned(p.to_string())),
                parts.next().map(|p| Cow::Owned(p.to_string())),
            )
        }
    }
}

/// Pins every field to the line (borrowed) or to its scratch buffer (unescaped).
fn pin<'a>(f: Fields<'a>, scratch: &'a mut Scratch) -> RawRecord<'a> {
    let mut borrowed: [Option<&'a [u8]>; FIELDS] = [None; FIELDS];
    let mut owned = [false; FIELDS];
    for (i, v) in f.text.into_iter().enumerate() {
        match v {
            Some(Cow::Borrowed(s)) => borrowed[i] = Some(s.as_bytes()),
            Some(Cow::Owned(s)) => {
                scratch.fields[i].clear();
                scratch.fields[i].extend_from_slice(s.as_bytes());
                owned[i] = true;
            }
            None => {}
        }
    }
    let scratch: &'a Scratch = scratch;
    let field = |i: usize| -> Option<&'a [u8]> {
        if owned[i] {
            Some(&scratch.fields[i][..])
        } else {
            borrowed[i]
        }
    };
    RawRecord {
        vhost: field(HOST),
        client: field(CLIENT).unwrap_or(b""),
        ts: f.ts,
        method: field(METHOD),
        target: field(TARGET),
        status: f.status,
        bytes: f.bytes,
        referrer: field(REFERRER),
        user_agent: field(USER_AGENT),
        forwarded_for: field(FORWARDED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_json_with_escapes_and_both_time_fields() {
        let line = br#"{"time_local":"03/Nov/2026:10:00:00 +0300","remote_addr":"2001:db8::7","request":"GET /\u043a\u0430\u0442\u0430\u043b\u043e\u0433?utm_source=ya HTTP/1.1","status":"200","body_bytes_sent":"512","http_referer":"https://yandex.ru/","http_user_agent":"Mozilla/5.0 \"quoted\"","http_x_forwarded_for":"-"}"#;
        let mut s = Scratch::default();
        let r = parse_nginx(line, &mut s).unwrap();
        assert_eq!(r.client, b"2001:db8::7");
        assert_eq!(r.ts, 1_793_689_200, "10:00 +03:00 is 07:00 UTC");
        assert_eq!(r.method, Some(&b"GET"[..]));
        assert_eq!(r.target, Some("/каталог?utm_source=ya".as_bytes()));
        assert_eq!(r.user_agent, Some(&b"Mozilla/5.0 \"quoted\""[..]));
        assert_eq!(r.status, 200);
        assert_eq!(r.forwarded_for, None, "\"-\" is no header");
        let iso = br#"{"time_iso8601":"2026-11-03T10:00:00+03:00","remote_addr":"198.51.100.7","request_method":"GET","request_uri":"/","status":200,"body_bytes_sent":0,"http_user_agent":"","http_x_forwarded_for":"203.0.113.9, 10.0.0.2"}"#;
        let r = parse_nginx(iso, &mut s).unwrap();
        assert_eq!(r.ts, 1_793_689_200);
        assert_eq!(r.user_agent, None);
        assert_eq!(r.forwarded_for, Some(&b"203.0.113.9, 10.0.0.2"[..]));
        assert_eq!(
            parse_nginx(b"{\"remote_addr\":", &mut s).err(),
            Some(Reject::Truncated)
        );
        assert_eq!(
            parse_nginx(br#"{"remote_addr":"1.2.3.4","status":"200"}"#, &mut s).err(),
            Some(Reject::BadTimestamp)
        );
    }

    #[test]
    fn caddy_epoch_and_iso_timestamps_and_headers() {
        let epoch = br#"{"level":"info","ts":1795579200.5312,"logger":"http.log.access","msg":"handled request","request":{"remote_ip":"192.0.2.10","remote_port":"41342","client_ip":"192.0.2.10","proto":"HTTP/1.1","method":"GET","host":"example.ru","uri":"/blog/?utm_medium=email","headers":{"User-Agent":["Mozilla/5.0"],"Referer":["https://vk.com/"],"X-Forwarded-For":["203.0.113.1"]}},"bytes_read":0,"duration":0.0003,"size":12,"status":200}"#;
        let mut s = Scratch::default();
        let r = parse_caddy(epoch, &mut s).unwrap();
        assert_eq!(r.ts, 1_795_579_200);
        assert_eq!(r.client, b"192.0.2.10");
        assert_eq!(r.referrer, Some(&b"https://vk.com/"[..]));
        assert_eq!(r.forwarded_for, Some(&b"203.0.113.1"[..]));
        assert_eq!(r.vhost, Some(&b"example.ru"[..]));
        let iso = br#"{"ts":"2026-11-03T10:00:00.123Z","request":{"remote_ip":"192.0.2.11","method":"GET","uri":"/","headers":{}},"size":0,"status":304}"#;
        let r = parse_caddy(iso, &mut s).unwrap();
        assert_eq!(r.ts, 1_793_700_000);
        assert_eq!(r.status, 304);
        assert_eq!(r.user_agent, None);
    }
}

/// `format = "json"`: which key (dotted for nested objects, `request.remote_ip`) holds each
/// field of a JSON log of any other shape (`[json_fields]` in the pipeline).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFields {
    pub client: String,
    pub time: String,
    /// `iso8601` (default), `epoch` (seconds, fractions allowed), `epoch_ms`, or `clf`.
    pub time_format: Option<String>,
    /// The whole request line (`GET /a HTTP/1.1`), or `method` and `url` apart.
    pub request: Option<String>,
    pub method: Option<String>,
    pub url: Option<String>,
    pub status: Option<String>,
    pub bytes: Option<String>,
    pub referrer: Option<String>,
    pub user_agent: Option<String>,
    pub forwarded_for: Option<String>,
    pub host: Option<String>,
}

impl JsonFields {
    /// Checks the mapping: the client, the time, and a request or URL are needed.
    pub fn validate(&self) -> Result<(), String> {
        if self.request.is_none() && self.url.is_none() {
            return Err("[json_fields] needs `request` or `url`".into());
        }
        match self.time_format.as_deref() {
            None | Some("iso8601" | "epoch" | "epoch_ms" | "clf") => Ok(()),
            Some(other) => Err(format!(
                "[json_fields] time_format = {other:?}: use iso8601, epoch, epoch_ms or clf"
            )),
        }
    }
}

fn lookup<'v>(v: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        // A header captured as a list of values (Caddy-like): the first.
        serde_json::Value::Array(a) => a.first().and_then(text),
        _ => None,
    }
}

/// Parses one line of a JSON log through the pipeline's field mapping.
pub fn parse_mapped<'a>(
    line: &'a [u8],
    map: &JsonFields,
    scratch: &'a mut Scratch,
) -> Result<RawRecord<'a>, Reject> {
    let v: serde_json::Value = serde_json::from_slice(line).map_err(|_| Reject::Truncated)?;
    let get = |key: &Option<String>| -> Option<String> {
        key.as_deref().and_then(|k| lookup(&v, k)).and_then(text)
    };
    let time = lookup(&v, &map.time).ok_or(Reject::BadTimestamp)?;
    let ts = match map.time_format.as_deref().unwrap_or("iso8601") {
        "epoch" => time
            .as_f64()
            .or_else(|| text(time)?.parse().ok())
            .map(|f| f.floor() as i64),
        "epoch_ms" => time
            .as_f64()
            .or_else(|| text(time)?.parse().ok())
            .map(|f| (f / 1000.0).floor() as i64),
        "clf" => text(time).and_then(|t| super::timestamp::parse_clf(t.as_bytes())),
        _ => text(time)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second()),
    }
    .ok_or(Reject::BadTimestamp)?;
    let status = match get(&map.status) {
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|s| (0.0..1000.0).contains(s))
            .ok_or(Reject::BadStatus)? as u16,
        None => 200,
    };
    let bytes = get(&map.bytes)
        .and_then(|b| b.parse::<f64>().ok())
        .map_or(0, |b| b.max(0.0) as u64);
    let (method, url) = match get(&map.request) {
        Some(r) => {
            let mut parts = r.splitn(3, ' ');
            (
                parts.next().map(str::to_string),
                parts.next().map(str::to_string),
            )
        }
        None => (get(&map.method), get(&map.url)),
    };
    let owned = |s: Option<String>| present(s.map(Cow::Owned));
    let mut f = Fields {
        ts,
        status,
        bytes,
        ..Fields::default()
    };
    f.text[CLIENT] = Some(owned(lookup(&v, &map.client).and_then(text)).ok_or(Reject::BadClient)?);
    f.text[METHOD] = owned(method);
    f.text[TARGET] = owned(url);
    f.text[REFERRER] = owned(get(&map.referrer));
    f.text[USER_AGENT] = owned(get(&map.user_agent));
    f.text[FORWARDED] = owned(get(&map.forwarded_for));
    f.text[HOST] = owned(get(&map.host));
    Ok(pin(f, scratch))
}
