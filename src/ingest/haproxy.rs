//! HAProxy `option httplog` lines, with or without their syslog prefix:
//!
//! ```text
//! Feb  6 12:14:14 lb1 haproxy[14389]: 10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in \
//!   static/srv1 10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 {example.ru|Mozilla/5.0|-} {} \
//!   "GET /index.html HTTP/1.1"
//! ```
//!
//! The accept date has no UTC offset: HAProxy writes its host's local time, read here in the
//! pipeline's time zone. Request headers appear only when captured (`capture request header`),
//! `|`-separated in the first braces, in the order of the configuration: `Host`, `User-Agent`,
//! `Referer` unless the pipeline's `haproxy_captures` says otherwise.

use super::{RawRecord, Reject};

/// Which captured request header each `|`-separated slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    Host,
    UserAgent,
    Referer,
    ForwardedFor,
    Other,
}

impl Capture {
    pub fn parse(name: &str) -> Capture {
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => Capture::Host,
            "user-agent" => Capture::UserAgent,
            "referer" | "referrer" => Capture::Referer,
            "x-forwarded-for" => Capture::ForwardedFor,
            _ => Capture::Other,
        }
    }
}

pub const DEFAULT_CAPTURES: [Capture; 3] = [Capture::Host, Capture::UserAgent, Capture::Referer];

/// Parses one line; `offset_of(local seconds)` gives the UTC offset of a local time.
pub fn parse_line<'a>(
    line: &'a [u8],
    captures: &[Capture],
    tz: &jiff::tz::TimeZone,
) -> Result<RawRecord<'a>, Reject> {
    // The accept date: the first `[dd/Mon/yyyy:` after the client.
    let open = line
        .windows(2)
        .enumerate()
        .find(|(i, w)| w[0] == b'[' && line.get(i + 3) == Some(&b'/'))
        .map(|(i, _)| i)
        .ok_or(Reject::Truncated)?;
    let close = open
        + line[open..]
            .iter()
            .position(|b| *b == b']')
            .ok_or(Reject::Truncated)?;
    let client_port = line[..open]
        .trim_ascii_end()
        .rsplit(|b| *b == b' ')
        .next()
        .ok_or(Reject::BadClient)?;
    let client = match client_port.iter().rposition(|b| *b == b':') {
        Some(i) if i > 0 => &client_port[..i],
        _ => return Err(Reject::BadClient),
    };
    let ts = accept_date(&line[open + 1..close], tz).ok_or(Reject::BadTimestamp)?;
    let rest = &line[close + 1..];
    // frontend, backend/server, timers, status, bytes.
    let mut tokens = rest.split(|b| *b == b' ').filter(|t| !t.is_empty());
    let _frontend = tokens.next().ok_or(Reject::Truncated)?;
    let _backend = tokens.next().ok_or(Reject::Truncated)?;
    let _timers = tokens.next().ok_or(Reject::Truncated)?;
    let status = tokens.next().ok_or(Reject::Truncated)?;
    let status = match status {
        b"-1" => 0,
        s => super::status_code(s).ok_or(Reject::BadStatus)?,
    };
    let bytes = tokens
        .next()
        .and_then(|b| {
            std::str::from_utf8(b)
                .ok()?
                .trim_start_matches('+')
                .parse()
                .ok()
        })
        .ok_or(Reject::BadSize)?;
    // Captured request headers: the first `{…}` after the status, if any.
    let header = |wanted: Capture| -> Option<&'a [u8]> {
        let b = rest.iter().position(|c| *c == b'{')?;
        let e = b + rest[b..].iter().position(|c| *c == b'}')?;
        let slot = captures.iter().position(|c| *c == wanted)?;
        rest[b + 1..e]
            .split(|c| *c == b'|')
            .nth(slot)
            .filter(|v| !v.is_empty() && *v != b"-")
    };
    let (vhost, user_agent, referrer, forwarded_for) = (
        header(Capture::Host),
        header(Capture::UserAgent),
        header(Capture::Referer),
        header(Capture::ForwardedFor),
    );
    // The request: the last quoted field.
    let q_end = rest
        .iter()
        .rposition(|b| *b == b'"')
        .ok_or(Reject::BadRequestField)?;
    let q_start = rest[..q_end]
        .iter()
        .rposition(|b| *b == b'"')
        .ok_or(Reject::BadRequestField)?;
    let request = &rest[q_start + 1..q_end];
    let mut parts = request.splitn(3, |b| *b == b' ');
    let method = parts.next().filter(|m| !m.is_empty() && *m != b"<BADREQ>");
    let target = parts.next().filter(|t| t.starts_with(b"/"));
    Ok(RawRecord {
        vhost,
        client,
        ts,
        method,
        target,
        status,
        bytes,
        referrer,
        user_agent,
        forwarded_for,
    })
}

/// `06/Feb/2009:12:14:14.655` in `tz` → UTC seconds.
fn accept_date(s: &[u8], tz: &jiff::tz::TimeZone) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?;
    let s = s.split('.').next()?;
    let dt = jiff::fmt::strtime::parse("%d/%b/%Y:%H:%M:%S", s)
        .ok()?
        .to_datetime()
        .ok()?;
    Some(
        tz.to_ambiguous_zoned(dt)
            .compatible()
            .ok()?
            .timestamp()
            .as_second(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn httplog_with_syslog_prefix_and_captures() {
        let msk = jiff::tz::TimeZone::get("Europe/Moscow").unwrap();
        let line = br#"Nov  3 10:00:00 lb1 haproxy[14389]: 2001:db8::7:33317 [03/Nov/2026:10:00:00.655] http-in static/srv1 10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 {example.ru|Mozilla/5.0 (X11)|https://yandex.ru/} {} "GET /catalog?x=1 HTTP/1.1""#;
        let r = parse_line(line, &DEFAULT_CAPTURES, &msk).unwrap();
        assert_eq!(r.client, b"2001:db8::7");
        assert_eq!(r.ts, 1_793_689_200, "10:00 in Moscow");
        assert_eq!(r.target, Some(&b"/catalog?x=1"[..]));
        assert_eq!(r.vhost, Some(&b"example.ru"[..]));
        assert_eq!(r.user_agent, Some(&b"Mozilla/5.0 (X11)"[..]));
        assert_eq!(r.referrer, Some(&b"https://yandex.ru/"[..]));
        assert_eq!((r.status, r.bytes), (200, 2750));
        // No syslog prefix, no captures, an aborted request (-1).
        let line = br#"192.0.2.1:5000 [03/Nov/2026:10:00:01.000] http-in http-in/<NOSRV> -1/-1/-1/-1/0 -1 0 - - CR-- 1/1/0/0/0 0/0 "<BADREQ>""#;
        let r = parse_line(line, &DEFAULT_CAPTURES, &msk).unwrap();
        assert_eq!((r.status, r.method, r.user_agent), (0, None, None));
    }
}
