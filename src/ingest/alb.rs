//! AWS Application Load Balancer access logs: space-separated fields, some quoted, the client
//! as `address:port`, the request with its absolute URL (`GET https://host:443/path HTTP/1.1`).
//! ALB logs no referrer. The target is cut to its path and query; the host becomes the
//! virtual host (checked against `site_hosts`).

use super::{RawRecord, Reject};

/// The fields of a line, quoted ones without their quotes (escaped quotes left as logged).
fn fields(line: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(30);
    let mut i = 0;
    while i < line.len() {
        if line[i] == b' ' {
            i += 1;
            continue;
        }
        if line[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < line.len() && !(line[j] == b'"' && line[j - 1] != b'\\') {
                j += 1;
            }
            out.push(&line[start..j.min(line.len())]);
            i = j + 1;
        } else {
            let start = i;
            while i < line.len() && line[i] != b' ' {
                i += 1;
            }
            out.push(&line[start..i]);
        }
    }
    out
}

/// Parses one ALB line.
pub fn parse_line(line: &[u8]) -> Result<RawRecord<'_>, Reject> {
    let f = fields(line);
    if f.len() < 14 {
        return Err(Reject::Truncated);
    }
    let kind = f[0];
    if !matches!(kind, b"http" | b"https" | b"h2" | b"grpcs" | b"ws" | b"wss") {
        return Err(Reject::Truncated);
    }
    let ts = std::str::from_utf8(f[1])
        .ok()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .ok_or(Reject::BadTimestamp)?
        .as_second();
    // `address:port`; an IPv6 address keeps its own colons.
    let client = match f[3].iter().rposition(|b| *b == b':') {
        Some(i) if i > 0 => &f[3][..i],
        _ => return Err(Reject::BadClient),
    };
    let status = match f[8] {
        b"-" => 0,
        s => super::status_code(s).ok_or(Reject::BadStatus)?,
    };
    let bytes = std::str::from_utf8(f[11])
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let request = f[12];
    let mut parts = request.splitn(3, |b| *b == b' ');
    let method = parts.next().filter(|m| !m.is_empty() && *m != b"-");
    let url = parts.next();
    let (host, target) = match url {
        Some(u) => split_url(u),
        None => (None, None),
    };
    let user_agent = Some(f[13]).filter(|u| !u.is_empty() && *u != b"-");
    Ok(RawRecord {
        vhost: host,
        client,
        ts,
        method,
        target,
        status,
        bytes,
        referrer: None,
        user_agent,
        forwarded_for: None,
    })
}

/// `https://host:443/path?q` → (host, `/path?q`).
fn split_url(url: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let Some(after) = url
        .windows(3)
        .position(|w| w == b"://")
        .map(|i| &url[i + 3..])
    else {
        return (None, Some(url));
    };
    let path_at = after.iter().position(|b| *b == b'/').unwrap_or(after.len());
    let authority = &after[..path_at];
    let host = match authority.iter().rposition(|b| *b == b':') {
        Some(i) if !authority.contains(&b']') || authority[i - 1] == b']' => &authority[..i],
        _ => authority,
    };
    let path = if path_at < after.len() {
        &after[path_at..]
    } else {
        &b"/"[..]
    };
    (Some(host), Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alb_line_with_ipv6_client_and_absolute_url() {
        let line = br#"https 2026-11-03T07:00:00.186641Z app/my-lb/50dc6c495c0c9188 2001:db8::7:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 "GET https://example.ru:443/catalog?utm_source=ya HTTP/1.1" "Mozilla/5.0 (X11; Linux x86_64)" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 "Root=1-58337262-36d228ad5d99923122bbe354" "example.ru" "-" 0 2026-11-03T07:00:00.000000Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-""#;
        let r = parse_line(line).unwrap();
        assert_eq!(r.client, b"2001:db8::7");
        assert_eq!(r.ts, 1_793_689_200);
        assert_eq!(r.method, Some(&b"GET"[..]));
        assert_eq!(r.target, Some(&b"/catalog?utm_source=ya"[..]));
        assert_eq!(r.vhost, Some(&b"example.ru"[..]));
        assert_eq!(r.user_agent, Some(&b"Mozilla/5.0 (X11; Linux x86_64)"[..]));
        assert_eq!((r.status, r.bytes), (200, 366));
        // A request the balancer answered itself, without a target: status from the ELB.
        let line = br#"http 2026-11-03T07:00:01.000000Z app/my-lb/1 192.0.2.1:5000 - -1 -1 -1 503 - 10 0 "GET http://example.ru:80/ HTTP/1.1" "-" - - - "Root=1" "-" "-" 0 2026-11-03T07:00:01.000000Z "forward" "-" "-" "-" "-" "-" "-""#;
        let r = parse_line(line).unwrap();
        assert_eq!((r.status, r.user_agent), (503, None));
        assert_eq!(parse_line(b"http garbage").err(), Some(Reject::Truncated));
    }
}
