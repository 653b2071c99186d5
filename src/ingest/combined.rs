//! The fast byte parser for the NCSA family: `common`, `combined` and their vhost variants.
//!
//! Works on `&[u8]` and returns borrowed fields; it never allocates and never copies a line.
//! A line is rejected only when it cannot be placed (decision 11): its structure cannot be
//! read or its timestamp is unreadable. Anything odd inside the request line is left for the
//! pseudonymise stage, which decides whether the line is a pageview.

use super::{Format, RawRecord, Reject, timestamp};

/// Parses one line (without its line terminator).
pub fn parse_line(format: Format, line: &[u8]) -> Result<RawRecord<'_>, Reject> {
    let line = trim_ascii(line);
    if line.is_empty() {
        return Err(Reject::BlankLine);
    }
    let mut cur = Cursor { s: line, pos: 0 };
    let vhost = match format {
        Format::VhostCombined | Format::VhostCommon => {
            let v = cur.token().ok_or(Reject::Truncated)?;
            Some(strip_port(v))
        }
        _ => None,
    };
    let client = cur.token().ok_or(Reject::Truncated)?;
    if client == b"-" {
        return Err(Reject::BadClient);
    }
    // %l and %u: identd and user; never used (a user name is personal data) and never kept.
    cur.token().ok_or(Reject::Truncated)?;
    cur.token().ok_or(Reject::Truncated)?;
    if cur.at_end() {
        return Err(Reject::Truncated);
    }
    let ts = cur.bracketed().ok_or(Reject::BadTimestamp)?;
    let ts = timestamp::parse_clf(ts).ok_or(Reject::BadTimestamp)?;
    let request = cur.quoted()?.ok_or(Reject::BadRequestField)?;
    let status = cur.token().ok_or(Reject::Truncated)?;
    let status = parse_status(status).ok_or(Reject::BadStatus)?;
    let bytes = match cur.token() {
        Some(b"-") => 0,
        Some(b) => parse_u64(b).ok_or(Reject::BadSize)?,
        None => return Err(Reject::Truncated),
    };
    let (referrer, user_agent) = match format {
        Format::Combined | Format::VhostCombined | Format::Traefik => {
            // A `common` line inside a combined log simply has neither field.
            let referrer = cur.quoted()?;
            let user_agent = if referrer.is_some() {
                cur.quoted()?
            } else {
                None
            };
            (referrer, user_agent)
        }
        _ => (None, None),
    };
    let (method, target) = split_request(request);
    Ok(RawRecord {
        vhost,
        client,
        ts,
        method,
        target,
        status,
        bytes,
        referrer: referrer.filter(|r| *r != b"-" && !r.is_empty()),
        user_agent: user_agent.filter(|u| *u != b"-" && !u.is_empty()),
        forwarded_for: None,
    })
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&mut self) -> bool {
        self.skip_spaces();
        self.pos >= self.s.len()
    }

    fn skip_spaces(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos] == b' ' {
            self.pos += 1;
        }
    }

    /// The next space-delimited token, or `None` at the end of the line.
    fn token(&mut self) -> Option<&'a [u8]> {
        self.skip_spaces();
        if self.pos >= self.s.len() {
            return None;
        }
        let start = self.pos;
        let end = memchr::memchr(b' ', &self.s[start..]).map_or(self.s.len(), |i| start + i);
        self.pos = end;
        Some(&self.s[start..end])
    }

    /// `[...]`: the inside of the brackets.
    fn bracketed(&mut self) -> Option<&'a [u8]> {
        self.skip_spaces();
        if self.s.get(self.pos) != Some(&b'[') {
            return None;
        }
        let start = self.pos + 1;
        let end = start + memchr::memchr(b']', &self.s[start..])?;
        self.pos = end + 1;
        Some(&self.s[start..end])
    }

    /// `"..."` with backslash escapes. `Ok(None)` when the line ends or the next field is not
    /// quoted; `Err(Truncated)` when a quote opens and never closes.
    fn quoted(&mut self) -> Result<Option<&'a [u8]>, Reject> {
        self.skip_spaces();
        if self.s.get(self.pos) != Some(&b'"') {
            return Ok(None);
        }
        let start = self.pos + 1;
        let mut i = start;
        // Jump from quote or backslash to the next (memchr2), not byte by byte: user agents
        // and referrers are the longest fields of a line.
        while i < self.s.len() {
            let Some(k) = memchr::memchr2(b'"', b'\\', &self.s[i..]) else {
                break;
            };
            let at = i + k;
            if self.s[at] == b'"' {
                self.pos = at + 1;
                return Ok(Some(&self.s[start..at]));
            }
            i = at + 2; // a backslash escapes the next byte
        }
        Err(Reject::Truncated)
    }
}

/// `GET /path?query HTTP/1.1` → (method, target). Anything else (a TLS handshake sent to a
/// plain-text port, `-`, a lone word) gives `None`: the line is placed but is no pageview.
///
/// The usual request, three parts between single spaces, is cut by two `memchr` calls and a
/// look at the method's few bytes; the rest goes the general way ([`split_request_general`]),
/// which the tests hold this to.
fn split_request(request: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let usual = || {
        let first = memchr::memchr(b' ', request).filter(|&i| i > 0)?;
        let rest = &request[first + 1..];
        let second = memchr::memchr(b' ', rest).filter(|&i| i > 0)?;
        let protocol = &rest[second + 1..];
        (protocol.starts_with(b"HTTP/") && !protocol.contains(&b' '))
            .then(|| (&request[..first], &rest[..second]))
    };
    match usual() {
        Some((method, target)) => {
            if method.len() <= 16 && method.iter().all(u8::is_ascii_uppercase) {
                (Some(method), Some(target))
            } else {
                (None, None)
            }
        }
        None => split_request_general(request),
    }
}

/// [`split_request`] for any request line: parts between runs of spaces.
fn split_request_general(request: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let mut parts = request.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let method = parts
        .next()
        .filter(|m| m.iter().all(u8::is_ascii_uppercase) && m.len() <= 16);
    let target = parts.next();
    let protocol_ok = match parts.next() {
        None => true,
        Some(p) => p.starts_with(b"HTTP/") && parts.next().is_none(),
    };
    match (method, target) {
        (Some(m), Some(t)) if protocol_ok => (Some(m), Some(t)),
        (Some(m), _) => (Some(m), None),
        _ => (None, None),
    }
}

/// A three-digit status, or `0`: what nginx and Apache log for a connection closed before a
/// response (placed and parsed; the status filter then keeps it out of the pageviews).
fn parse_status(s: &[u8]) -> Option<u16> {
    if s == b"0" {
        return Some(0);
    }
    if s.len() != 3 {
        return None;
    }
    let n = parse_u64(s)?;
    (100..=999).contains(&n).then_some(n as u16)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn strip_port(vhost: &[u8]) -> &[u8] {
    match memchr::memrchr(b':', vhost) {
        Some(i) if i + 1 < vhost.len() && vhost[i + 1..].iter().all(u8::is_ascii_digit) => {
            &vhost[..i]
        }
        _ => vhost,
    }
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMBINED: &[u8] = br#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?x=1 HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#;

    /// The usual request's short cut and the general way agree on requests made of the
    /// pieces of near misses (double spaces, lower-case methods, a missing or extra part).
    mod split_request_agrees {
        use super::*;
        use proptest::prelude::*;

        const PIECES: [&[u8]; 11] = [
            b" ",
            b"  ",
            b"GET",
            b"get",
            b"POST",
            b"/a?b=1",
            b"HTTP/1.1",
            b"HTTP",
            b"-",
            b"\\x16",
            b"A_VERY_LONG_METHOD",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            #[test]
            fn on_requests_of_pieces(picks in proptest::collection::vec(0..PIECES.len(), 0..8)) {
                let request: Vec<u8> = picks.iter().flat_map(|&i| PIECES[i].iter().copied()).collect();
                prop_assert_eq!(split_request(&request), split_request_general(&request));
            }
        }

        #[test]
        fn usual_and_unusual_requests() {
            for (request, want) in [
                (
                    &b"GET /a HTTP/1.1"[..],
                    (Some(&b"GET"[..]), Some(&b"/a"[..])),
                ),
                (b"GET  /a HTTP/1.1", (Some(b"GET"), Some(b"/a"))),
                (b" GET /a HTTP/1.1 ", (Some(b"GET"), Some(b"/a"))),
                (b"get /a HTTP/1.1", (None, None)),
                (b"GET /a HTTP/1.1 x", (Some(b"GET"), None)),
                (b"GET /a HTTP/", (Some(b"GET"), Some(b"/a"))),
                (b"GET /a SPDY/3", (Some(b"GET"), None)),
            ] {
                assert_eq!(
                    split_request(request),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(request)
                );
            }
        }
    }

    #[test]
    fn combined_line_fields() {
        let r = parse_line(Format::Combined, COMBINED).unwrap();
        assert_eq!(r.client, b"192.0.2.1");
        assert_eq!(r.ts, 971_211_336);
        assert_eq!(r.method, Some(&b"GET"[..]));
        assert_eq!(r.target, Some(&b"/apache_pb.gif?x=1"[..]));
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes, 2326);
        assert_eq!(r.referrer, Some(&b"http://www.example.com/start.html"[..]));
        assert_eq!(
            r.user_agent,
            Some(&b"Mozilla/4.08 [en] (Win98; I ;Nav)"[..])
        );
        assert_eq!(r.vhost, None);
    }

    #[test]
    fn common_line_in_combined_log() {
        let line = br#"2001:db8::1 - frank [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 304 -"#;
        let r = parse_line(Format::Combined, line).unwrap();
        assert_eq!(r.client, b"2001:db8::1");
        assert_eq!(r.bytes, 0);
        assert_eq!(r.status, 304);
        assert_eq!((r.referrer, r.user_agent), (None, None));
    }

    #[test]
    fn vhost_variants() {
        let line = br#"www.example.ru:443 198.51.100.7 - - [10/Oct/2000:13:55:36 +0300] "GET /a HTTP/2.0" 200 5 "-" "curl/8.0""#;
        let r = parse_line(Format::VhostCombined, line).unwrap();
        assert_eq!(r.vhost, Some(&b"www.example.ru"[..]));
        assert_eq!(r.client, b"198.51.100.7");
        assert_eq!(r.referrer, None);
        assert_eq!(r.user_agent, Some(&b"curl/8.0"[..]));
        let line =
            br#"example.ru 198.51.100.7 - - [10/Oct/2000:13:55:36 +0300] "GET /a HTTP/1.1" 200 5"#;
        let r = parse_line(Format::VhostCommon, line).unwrap();
        assert_eq!(r.vhost, Some(&b"example.ru"[..]));
    }

    #[test]
    fn escaped_quotes_inside_fields() {
        let line = br#"192.0.2.9 - - [10/Oct/2000:13:55:36 -0700] "GET /q\"x HTTP/1.1" 200 1 "-" "Agent \"quoted\" 1.0""#;
        let r = parse_line(Format::Combined, line).unwrap();
        assert_eq!(r.target, Some(&br#"/q\"x"#[..]));
        assert_eq!(r.user_agent, Some(&br#"Agent \"quoted\" 1.0"#[..]));
    }

    #[test]
    fn odd_request_lines_are_placed_not_rejected() {
        for (req, method, target) in [
            (&b"-"[..], None, None),
            (b"\\x16\\x03\\x01", None, None),
            (b"GET", Some(&b"GET"[..]), None),
            (
                b"GET /only-target",
                Some(b"GET"),
                Some(&b"/only-target"[..]),
            ),
            (b"GET / HTTP/1.1 extra", Some(b"GET"), None),
        ] {
            let mut line = br#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] ""#.to_vec();
            line.extend_from_slice(req);
            line.extend_from_slice(br#"" 400 0 "-" "-""#);
            let r = parse_line(Format::Combined, &line).unwrap();
            assert_eq!((r.method, r.target), (method, target));
        }
    }

    #[test]
    fn rejections_by_reason() {
        let cases: [(&[u8], Reject); 8] = [
            (b"   ", Reject::BlankLine),
            (b"192.0.2.1 - -", Reject::Truncated),
            (
                b"192.0.2.1 - - [10/Oct/2000:13:55:36] \"GET / HTTP/1.1\" 200 1",
                Reject::BadTimestamp,
            ),
            (
                b"192.0.2.1 - - 10/Oct/2000:13:55:36 -0700 \"GET / HTTP/1.1\" 200 1",
                Reject::BadTimestamp,
            ),
            (
                b"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] GET / 200 1",
                Reject::BadRequestField,
            ),
            (
                b"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 2000 1",
                Reject::BadStatus,
            ),
            (
                b"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 1k",
                Reject::BadSize,
            ),
            (
                b"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.1\" 200 1 \"http://a",
                Reject::Truncated,
            ),
        ];
        for (line, reason) in cases {
            assert_eq!(parse_line(Format::Combined, line).unwrap_err(), reason);
        }
    }

    /// Lines real servers write are placed and parsed, not rejected: they simply are not
    /// pageviews (the filters count them).
    #[test]
    fn lines_real_servers_write_are_parsed() {
        fn ok(line: &[u8]) -> RawRecord<'_> {
            parse_line(Format::Combined, line).unwrap()
        }
        // A connection closed before any response: status 0.
        let r =
            ok(b"192.0.2.1 - - [03/Nov/2026:10:00:00 +0300] \"GET / HTTP/1.1\" 0 0 \"-\" \"-\"");
        assert_eq!(r.status, 0);
        // No request line at all (a timed-out connection): "-" with 408.
        let r = ok(b"192.0.2.2 - - [03/Nov/2026:10:00:00 +0300] \"-\" 408 0 \"-\" \"-\"");
        assert_eq!((r.status, r.target), (408, None));
        // A TLS handshake sent to the plain-HTTP port: garbage bytes for a request.
        let r = ok(b"192.0.2.3 - - [03/Nov/2026:10:00:00 +0300] \"\\x16\\x03\\x01\\x00\\xa5\" 400 150 \"-\" \"-\"");
        assert_eq!(r.status, 400);
        // Escaped quotes inside the user agent, and bytes that are not UTF-8.
        let r = ok(b"2001:db8::1 - - [03/Nov/2026:10:00:00 +0300] \"GET /\xff HTTP/1.1\" 200 5 \"-\" \"A \\\"quoted\\\" \xc3 agent\"");
        assert_eq!(r.client, b"2001:db8::1");
        assert_eq!(r.target, Some(&b"/\xff"[..]));
        assert!(r.user_agent.unwrap().starts_with(b"A \\\"quoted"));
    }
}
