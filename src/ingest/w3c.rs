//! W3C extended log files (IIS, and any server writing them): the `#Fields:` directive says
//! which field each column holds, and it may change in the middle of a file (an IIS restart
//! with other settings). Columns are separated by spaces (IIS) or tabs (CloudFront's
//! variant); `-` is an empty field. The user agent writes `+` for spaces, and CloudFront
//! percent-encodes it: both are undone (decision 20), so the same browser classifies the same
//! in every format.
//!
//! The parser keeps the layout of the latest `#Fields:` line in its [`Layout`]; the shard
//! stage hands each block of lines the layout in force at its start, so blocks still parse in
//! parallel.

use super::{RawRecord, Reject};

/// Which column holds what, from a `#Fields:` directive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    date: Option<usize>,
    time: Option<usize>,
    client: Option<usize>,
    method: Option<usize>,
    stem: Option<usize>,
    query: Option<usize>,
    status: Option<usize>,
    bytes: Option<usize>,
    referrer: Option<usize>,
    user_agent: Option<usize>,
    host: Option<usize>,
    /// CloudFront's `x-host-header`: the Host the viewer sent (the site), where `cs(Host)`
    /// is the distribution's own domain.
    host_header: Option<usize>,
    forwarded: Option<usize>,
    columns: usize,
    /// CloudFront names the edge location that served the request.
    edge: bool,
}

impl Layout {
    /// The layout of a `#Fields:` line; `None` for any other line.
    pub fn from_directive(line: &[u8]) -> Option<Layout> {
        let rest = line.strip_prefix(b"#Fields:")?;
        let mut l = Layout::default();
        for (i, name) in rest
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|f| !f.is_empty())
            .enumerate()
        {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let slot = match name.as_str() {
                "date" => &mut l.date,
                "time" => &mut l.time,
                "c-ip" => &mut l.client,
                "cs-method" => &mut l.method,
                "cs-uri-stem" => &mut l.stem,
                "cs-uri-query" => &mut l.query,
                "sc-status" => &mut l.status,
                "sc-bytes" => &mut l.bytes,
                "cs(referer)" | "cs(referrer)" => &mut l.referrer,
                "cs(user-agent)" => &mut l.user_agent,
                "cs-host" | "cs(host)" => &mut l.host,
                "x-host-header" => &mut l.host_header,
                "cs(x-forwarded-for)" | "x-forwarded-for" => &mut l.forwarded,
                "x-edge-location" => {
                    l.edge = true;
                    l.columns = i + 1;
                    continue;
                }
                _ => {
                    l.columns = i + 1;
                    continue;
                }
            };
            *slot = Some(i);
            l.columns = i + 1;
        }
        Some(l)
    }

    /// Whether this is CloudFront's layout.
    pub fn is_cloudfront(&self) -> bool {
        self.edge
    }

    /// Whether it has what a pageview needs.
    pub fn usable(&self) -> bool {
        self.date.is_some() && self.time.is_some() && self.client.is_some() && self.stem.is_some()
    }
}

/// The layout in force after the last `#Fields:` line of `block`, if it has one.
pub fn last_layout(block: &[u8]) -> Option<Layout> {
    block
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|l| Layout::from_directive(l.trim_ascii()))
}

/// Parses one data line under `layout`. `scratch` receives the target (stem and query joined)
/// and the unescaped user agent.
pub fn parse_line<'a>(
    line: &'a [u8],
    layout: &Layout,
    scratch: &'a mut [Vec<u8>; 2],
) -> Result<RawRecord<'a>, Reject> {
    if !layout.usable() {
        return Err(Reject::Truncated);
    }
    let cols: Vec<&'a [u8]> = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty())
        .collect();
    if cols.len() < layout.columns {
        return Err(Reject::Truncated);
    }
    let get = |i: Option<usize>| -> Option<&'a [u8]> {
        i.and_then(|i| cols.get(i).copied()).filter(|v| *v != b"-")
    };
    let ts = timestamp(get(layout.date), get(layout.time)).ok_or(Reject::BadTimestamp)?;
    let client = get(layout.client).ok_or(Reject::BadClient)?;
    let status = match get(layout.status) {
        Some(s) => super::status_code(s).ok_or(Reject::BadStatus)?,
        None => 200,
    };
    let bytes = get(layout.bytes)
        .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
        .unwrap_or(0);
    let [target_buf, ua_buf] = scratch;
    let target = get(layout.stem).map(|stem| {
        target_buf.clear();
        target_buf.extend_from_slice(stem);
        if let Some(q) = get(layout.query) {
            target_buf.push(b'?');
            target_buf.extend_from_slice(q);
        }
        &target_buf[..]
    });
    let user_agent = get(layout.user_agent).map(|ua| {
        ua_buf.clear();
        ua_buf.extend(ua.iter().map(|b| if *b == b'+' { b' ' } else { *b }));
        if ua_buf.contains(&b'%') {
            let decoded: Vec<u8> = percent_encoding::percent_decode(ua_buf).collect();
            *ua_buf = decoded;
        }
        &ua_buf[..]
    });
    Ok(RawRecord {
        vhost: get(layout.host_header).or(get(layout.host)),
        client,
        ts,
        method: get(layout.method),
        target,
        status,
        bytes,
        referrer: get(layout.referrer),
        user_agent,
        forwarded_for: get(layout.forwarded),
    })
}

/// `2026-11-03` and `10:00:00` (UTC, as W3C logs are) → seconds since the epoch.
fn timestamp(date: Option<&[u8]>, time: Option<&[u8]>) -> Option<i64> {
    let date = std::str::from_utf8(date?).ok()?;
    let time = std::str::from_utf8(time?).ok()?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let mut t = time.split(':');
    let (h, min, s): (i64, i64, f64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s >= 61.0 {
        return None;
    }
    let days = super::timestamp::days_from_civil(y, m, day);
    Some(days * 86_400 + h * 3600 + min * 60 + s as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[u8] = b"#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken";

    #[test]
    fn iis_line_with_plus_spaces_and_a_query() {
        let layout = Layout::from_directive(FIELDS).unwrap();
        let mut s: [Vec<u8>; 2] = Default::default();
        let line = b"2026-11-03 07:00:00 10.0.0.5 GET /catalog/phones utm_source=yandex 443 - 2001:db8::9 Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64) https://yandex.ru/ 200 0 0 15";
        let r = parse_line(line, &layout, &mut s).unwrap();
        assert_eq!(r.client, b"2001:db8::9");
        assert_eq!(r.ts, 1_793_689_200);
        assert_eq!(r.target, Some(&b"/catalog/phones?utm_source=yandex"[..]));
        assert_eq!(
            r.user_agent,
            Some(&b"Mozilla/5.0 (Windows NT 10.0; Win64; x64)"[..])
        );
        assert_eq!(r.referrer, Some(&b"https://yandex.ru/"[..]));
        assert_eq!(r.status, 200);
        // A short line under the layout is truncated; no layout yet, nothing is readable.
        assert_eq!(
            parse_line(b"2026-11-03 07:00:00", &layout, &mut s).err(),
            Some(Reject::Truncated)
        );
        assert!(parse_line(line, &Layout::default(), &mut s).is_err());
    }

    #[test]
    fn cloudfront_tabs_and_percent_encoded_agents() {
        let layout = Layout::from_directive(b"#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) cs(User-Agent) cs-uri-query").unwrap();
        let mut s: [Vec<u8>; 2] = Default::default();
        let line = b"2026-11-03\t07:00:00\tFRA56-C1\t512\t192.0.2.1\tGET\td111.cloudfront.net\t/\t200\t-\tMozilla/5.0%20(X11;%20Linux)\t-";
        let r = parse_line(line, &layout, &mut s).unwrap();
        assert_eq!(r.user_agent, Some(&b"Mozilla/5.0 (X11; Linux)"[..]));
        assert_eq!(r.target, Some(&b"/"[..]));
        assert_eq!(r.referrer, None);
        assert_eq!(r.vhost, Some(&b"d111.cloudfront.net"[..]));
        // With `x-host-header`, the site's own host name is the host.
        let layout = Layout::from_directive(b"#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status x-host-header").unwrap();
        let line = b"2026-11-03\t07:00:00\tFRA56-C1\t512\t192.0.2.1\tGET\td111.cloudfront.net\t/\t200\twww.example.ru";
        let r = parse_line(line, &layout, &mut s).unwrap();
        assert_eq!(r.vhost, Some(&b"www.example.ru"[..]));
    }

    #[test]
    fn last_layout_of_a_block() {
        let block = [FIELDS, b"\n2026-11-03 ...\n#Fields: date time c-ip cs-uri-stem\n2026-11-03 07:00:00 192.0.2.1 /\n"].concat();
        let l = last_layout(&block).unwrap();
        assert_eq!(l.columns, 4);
        assert!(l.usable());
    }
}
