//! Custom formats: an Apache `LogFormat` string (`%h %l %u %t "%r" %>s %b …`) or an nginx
//! `log_format` directive (`$remote_addr - $remote_user [$time_local] "$request" …`, also a
//! JSON one) pasted as it stands in the server's configuration, compiled once into a list of
//! literals and fields. A line is then cut at the literals, left to right, byte by byte — no
//! regular expression per line. A field between quotes runs to the next unescaped quote, so
//! escaped quotes inside a user agent do not cut it. Unknown directives are an error naming
//! them; known ones logveil has no use for are skipped.

use super::{RawRecord, Reject, timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Client,
    TimeClf,
    TimeClfBracketed,
    TimeIso,
    TimeEpoch,
    Request,
    Method,
    /// Path and query (`$request_uri`, `%U%q` together).
    Uri,
    Path,
    Query,
    Status,
    Bytes,
    Referrer,
    UserAgent,
    Forwarded,
    Host,
    /// nginx's `$is_args` (`?` when there is a query): only between `$uri` and `$args`.
    IsArgs,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(Vec<u8>),
    Field(Field),
}

/// A compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomFormat {
    tokens: Vec<Token>,
}

fn apache(directive: &str) -> Option<Field> {
    Some(match directive {
        "h" | "a" | "{c}a" => Field::Client,
        "t" => Field::TimeClfBracketed,
        "r" => Field::Request,
        "m" => Field::Method,
        "U" => Field::Path,
        "q" => Field::Query,
        ">s" | "s" => Field::Status,
        "b" | "B" | "O" => Field::Bytes,
        "{Referer}i" | "{referer}i" => Field::Referrer,
        "{User-Agent}i" | "{User-agent}i" | "{user-agent}i" => Field::UserAgent,
        "{X-Forwarded-For}i" | "{x-forwarded-for}i" => Field::Forwarded,
        "v" | "V" | "{Host}i" | "{host}i" => Field::Host,
        "l" | "u" | "p" | "D" | "T" | "I" | "S" | "H" | "P" | "k" | "L" | "R" | "X" | "f" | "A"
        | "e" | "n" | "{ms}T" | "{us}T" => Field::Skip,
        d if d.starts_with('{')
            && (d.ends_with('i')
                || d.ends_with('o')
                || d.ends_with('e')
                || d.ends_with('C')
                || d.ends_with('n')) =>
        {
            Field::Skip
        }
        _ => return None,
    })
}

fn nginx(variable: &str) -> Option<Field> {
    Some(match variable {
        "remote_addr" | "realip_remote_addr" | "binary_remote_addr" => Field::Client,
        "time_local" => Field::TimeClf,
        "time_iso8601" => Field::TimeIso,
        "msec" => Field::TimeEpoch,
        "request" => Field::Request,
        "request_method" => Field::Method,
        "request_uri" => Field::Uri,
        "uri" | "document_uri" => Field::Path,
        "is_args" => Field::IsArgs,
        "args" | "query_string" => Field::Query,
        "status" => Field::Status,
        "body_bytes_sent" | "bytes_sent" => Field::Bytes,
        "http_referer" => Field::Referrer,
        "http_user_agent" => Field::UserAgent,
        "http_x_forwarded_for" | "proxy_add_x_forwarded_for" => Field::Forwarded,
        "host" | "http_host" | "server_name" => Field::Host,
        v if v.starts_with("http_")
            || v.starts_with("upstream_")
            || v.starts_with("ssl_")
            || v.starts_with("sent_http_")
            || v.starts_with("cookie_")
            || v.starts_with("arg_") =>
        {
            Field::Skip
        }
        "remote_user"
        | "remote_port"
        | "request_time"
        | "request_length"
        | "server_protocol"
        | "server_port"
        | "server_addr"
        | "scheme"
        | "connection"
        | "connection_requests"
        | "pipe"
        | "gzip_ratio"
        | "request_id"
        | "hostname"
        | "pid"
        | "time_iso8601_ms"
        | "bytes_received"
        | "content_type"
        | "content_length"
        | "remote_port_" => Field::Skip,
        _ => return None,
    })
}

impl CustomFormat {
    /// Compiles an Apache `LogFormat` string or an nginx `log_format` (with or without the
    /// `log_format name` prefix, its quotes, `escape=` and the final `;`).
    pub fn compile(text: &str) -> Result<CustomFormat, String> {
        let text = text.trim();
        if text.contains('$') && !text.contains('%') || text.starts_with("log_format") {
            Self::compile_nginx(text)
        } else {
            Self::compile_apache(text)
        }
    }

    fn compile_apache(text: &str) -> Result<CustomFormat, String> {
        let text = text
            .strip_prefix("LogFormat")
            .map(str::trim)
            .unwrap_or(text);
        // `LogFormat "…" nickname`: the quoted string.
        let text = if text.starts_with('"') {
            let end = text.rfind('"').filter(|e| *e > 0).unwrap_or(text.len());
            text[1..end].replace("\\\"", "\"")
        } else {
            text.to_string()
        };
        let mut tokens = Vec::new();
        let mut literal = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'%' {
                literal.push(b[i]);
                i += 1;
                continue;
            }
            if b.get(i + 1) == Some(&b'%') {
                literal.push(b'%');
                i += 2;
                continue;
            }
            // %[<>]?({…})?letter
            let start = i + 1;
            let mut j = start;
            while j < b.len() && matches!(b[j], b'<' | b'>') {
                j += 1;
            }
            if b.get(j) == Some(&b'{') {
                j += b[j..]
                    .iter()
                    .position(|c| *c == b'}')
                    .ok_or("an unclosed %{")?
                    + 1;
            }
            if j >= b.len() {
                return Err(format!("{text:?} ends inside a directive"));
            }
            let directive = &text[start..=j];
            let lookup = directive.trim_start_matches('<');
            let lookup = if lookup == ">s" {
                ">s"
            } else {
                lookup.trim_start_matches('>')
            };
            let field = apache(lookup)
                .ok_or_else(|| format!("unknown LogFormat directive %{directive}"))?;
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(Token::Field(field));
            i = j + 1;
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Self::checked(tokens)
    }

    fn compile_nginx(text: &str) -> Result<CustomFormat, String> {
        // `log_format name [escape=…] '…' '…';` → the concatenated quoted strings.
        let body = if text.starts_with("log_format") {
            let mut out = String::new();
            let mut rest = text;
            while let Some(s) = rest.find(['\'', '"']) {
                let q = rest.as_bytes()[s] as char;
                let Some(e) = rest[s + 1..].find(q) else {
                    return Err("an unclosed quote in log_format".into());
                };
                out.push_str(&rest[s + 1..s + 1 + e]);
                rest = &rest[s + 1 + e + 1..];
            }
            out
        } else {
            text.to_string()
        };
        let mut tokens = Vec::new();
        let mut literal = Vec::new();
        let b = body.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' {
                literal.push(b[i]);
                i += 1;
                continue;
            }
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                let e = body[i + 2..].find('}').ok_or("an unclosed ${")? + i + 2;
                (&body[i + 2..e], e + 1)
            } else {
                let e = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(b.len(), |p| p + i + 1);
                (&body[i + 1..e], e)
            };
            let field =
                nginx(name).ok_or_else(|| format!("unknown log_format variable ${name}"))?;
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(Token::Field(field));
            i = next;
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Self::checked(tokens)
    }

    fn checked(mut tokens: Vec<Token>) -> Result<CustomFormat, String> {
        // A path right before its query (`%U%q`, `$uri$is_args$args`) is one URI field.
        let (path, query, is_args) = (
            Token::Field(Field::Path),
            Token::Field(Field::Query),
            Token::Field(Field::IsArgs),
        );
        let mut i = 0;
        while i < tokens.len() {
            let rest = &tokens[i..];
            let joined = if rest.starts_with(&[path.clone(), query.clone()]) {
                2
            } else if rest.starts_with(&[path.clone(), is_args.clone(), query.clone()]) {
                3
            } else {
                0
            };
            if joined > 0 {
                tokens.splice(i..i + joined, [Token::Field(Field::Uri)]);
            }
            i += 1;
        }
        if tokens.contains(&is_args) {
            return Err("$is_args is read only in `$uri$is_args$args`".into());
        }
        let has = |f: Field| tokens.contains(&Token::Field(f));
        if !has(Field::Client) {
            return Err("the format has no client address (%h / $remote_addr)".into());
        }
        if ![
            Field::TimeClf,
            Field::TimeClfBracketed,
            Field::TimeIso,
            Field::TimeEpoch,
        ]
        .iter()
        .any(|f| has(*f))
        {
            return Err("the format has no time (%t / $time_local / $time_iso8601 / $msec)".into());
        }
        if !(has(Field::Request) || has(Field::Uri) || has(Field::Path)) {
            return Err("the format has no request (%r / $request / $request_uri)".into());
        }
        for w in tokens.windows(2) {
            if matches!(w, [Token::Field(_), Token::Field(_)]) {
                return Err("two fields with nothing between them cannot be told apart".into());
            }
        }
        Ok(CustomFormat { tokens })
    }

    /// Parses one line. `uri` receives a path joined with its query when they are separate.
    pub fn parse<'a>(&self, line: &'a [u8], uri: &'a mut Vec<u8>) -> Result<RawRecord<'a>, Reject> {
        let mut values: Vec<(Field, &'a [u8])> = Vec::with_capacity(self.tokens.len());
        let mut at = 0usize;
        for (k, t) in self.tokens.iter().enumerate() {
            match t {
                Token::Literal(l) => {
                    if !line[at..].starts_with(l) {
                        return Err(Reject::Truncated);
                    }
                    at += l.len();
                }
                Token::Field(f) => {
                    let quoted = at > 0 && line[at - 1] == b'"';
                    let end = match self.tokens.get(k + 1) {
                        None => line.len(),
                        Some(Token::Literal(next)) => {
                            let mut from = at;
                            loop {
                                let Some(p) = find(&line[from..], next) else {
                                    return Err(Reject::Truncated);
                                };
                                let pos = from + p;
                                // Inside quotes, a quote escaped with a backslash is content.
                                if quoted
                                    && next.first() == Some(&b'"')
                                    && pos > 0
                                    && line[pos - 1] == b'\\'
                                {
                                    from = pos + 1;
                                    continue;
                                }
                                break pos;
                            }
                        }
                        Some(Token::Field(_)) => unreachable!("checked at compile"),
                    };
                    values.push((*f, &line[at..end]));
                    at = end;
                }
            }
        }
        let get = |f: Field| -> Option<&'a [u8]> {
            values
                .iter()
                .find(|(g, _)| *g == f)
                .map(|(_, v)| *v)
                .filter(|v| !v.is_empty() && *v != b"-")
        };
        let client = get(Field::Client).ok_or(Reject::BadClient)?;
        let ts = if let Some(t) = get(Field::TimeClfBracketed) {
            let t = t
                .strip_prefix(b"[")
                .and_then(|t| t.strip_suffix(b"]"))
                .unwrap_or(t);
            timestamp::parse_clf(t)
        } else if let Some(t) = get(Field::TimeClf) {
            timestamp::parse_clf(t)
        } else if let Some(t) = get(Field::TimeIso) {
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second())
        } else {
            get(Field::TimeEpoch)
                .and_then(|t| std::str::from_utf8(t).ok()?.parse::<f64>().ok())
                .map(|f| f.floor() as i64)
        }
        .ok_or(Reject::BadTimestamp)?;
        let status = match get(Field::Status) {
            Some(s) => super::status_code(s).ok_or(Reject::BadStatus)?,
            None => 200,
        };
        let bytes = get(Field::Bytes)
            .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
            .unwrap_or(0);
        let (mut method, mut target) = (get(Field::Method), None);
        if let Some(r) = get(Field::Request) {
            let mut parts = r.splitn(3, |b| *b == b' ');
            method = method.or(parts.next());
            target = parts.next();
        }
        if let Some(u) = get(Field::Uri) {
            target = Some(u);
        } else if let Some(p) = get(Field::Path) {
            uri.clear();
            uri.extend_from_slice(p);
            if let Some(q) = get(Field::Query) {
                uri.push(b'?');
                uri.extend_from_slice(q.strip_prefix(b"?").unwrap_or(q));
            }
            target = Some(&uri[..]);
        }
        Ok(RawRecord {
            vhost: get(Field::Host),
            client,
            ts,
            method,
            target,
            status,
            bytes,
            referrer: get(Field::Referrer),
            user_agent: get(Field::UserAgent),
            forwarded_for: get(Field::Forwarded),
        })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_and_nginx_strings_compile_and_parse() {
        let apache = CustomFormat::compile(r#"LogFormat "%v %h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\" %D" timed"#).unwrap();
        let mut buf = Vec::new();
        let line = br#"example.ru 2001:db8::1 - - [03/Nov/2026:10:00:00 +0300] "GET /a?b=1 HTTP/1.1" 200 512 "https://ya.ru/" "Mozilla/5.0 \"x\" y" 1234"#;
        let r = CustomFormat::parse(&apache, line, &mut buf).unwrap();
        assert_eq!(r.client, b"2001:db8::1");
        assert_eq!(r.vhost, Some(&b"example.ru"[..]));
        assert_eq!(r.target, Some(&b"/a?b=1"[..]));
        assert_eq!(r.user_agent, Some(&br#"Mozilla/5.0 \"x\" y"#[..]));
        assert_eq!(r.ts, 1_793_689_200);
        let nginx = CustomFormat::compile(
            r#"log_format main '$remote_addr [$time_iso8601] "$request_method $uri?$args" '
                              '$status "$http_user_agent" rt=$request_time';"#,
        )
        .unwrap();
        let line = br#"192.0.2.9 [2026-11-03T10:00:00+03:00] "GET /c?utm_source=vk" 304 "Mozilla/5.0" rt=0.003"#;
        let r = CustomFormat::parse(&nginx, line, &mut buf).unwrap();
        assert_eq!(r.target, Some(&b"/c?utm_source=vk"[..]));
        assert_eq!(r.status, 304);
        // A path and its query side by side are one field.
        for (text, protocol) in [
            (r#"%h %t "%m %U%q %H" %>s"#, " HTTP/1.1"),
            (
                r#"$remote_addr [$time_local] "$request_method $uri$is_args$args" $status"#,
                "",
            ),
        ] {
            let f = CustomFormat::compile(text).unwrap();
            for target in ["/a?b=1", "/a"] {
                let line = format!(
                    "192.0.2.1 [03/Nov/2026:10:00:00 +0300] \"GET {target}{protocol}\" 200"
                );
                let r = CustomFormat::parse(&f, line.as_bytes(), &mut buf).unwrap();
                assert_eq!(r.target, Some(target.as_bytes()), "{text} on {line}");
            }
        }
        assert!(
            CustomFormat::compile("%h %t \"%r\" %Z")
                .unwrap_err()
                .contains("%Z")
        );
        assert!(
            CustomFormat::compile("$remote_addr $time_local $request $nonsense")
                .unwrap_err()
                .contains("$nonsense")
        );
        assert!(
            CustomFormat::compile("%h%t \"%r\"").is_err(),
            "adjacent fields"
        );
    }
}
