//! Request target → the page path that may be published (decision 15).
//!
//! The query string and fragment are dropped here, with the click ids and personal values
//! they carry. Percent-decoding is limited to unreserved ASCII and valid UTF-8 sequences, so
//! `/%D0%BA%D0%B0%D1%82%D0%B0%D0%BB%D0%BE%D0%B3` and `/каталог` are one page, while `%2F`,
//! `%3F`, `%23`, `%25` and control bytes stay encoded (upper-case hex) and cannot change the
//! path's structure. Then NFC, duplicate slashes collapsed, and identifier-shaped segments
//! replaced by placeholders, with the pipeline's own rules last.

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::identifiers;

/// A pipeline rule: matching paths are rewritten with `replace` (`$1`-style groups allowed).
#[derive(Debug, Clone)]
pub struct PathRule {
    pub pattern: Regex,
    pub replace: String,
}

/// Path normalisation settings from the pipeline.
#[derive(Debug, Clone, Default)]
pub struct PathRules {
    /// Applied, in order, after the built-in identifier test.
    pub rewrite: Vec<PathRule>,
    /// Segments matching one of these are never replaced by a placeholder.
    pub keep_segments: Vec<Regex>,
}

/// The path of a request target, or `None` when the target is not a path (`*`, `host:443`).
pub fn normalise(target: &[u8], rules: &PathRules) -> Option<String> {
    let mut path = target;
    // Absolute-form targets (proxy requests): keep the path part only.
    if let Some(rest) = strip_scheme(path) {
        path = match memchr::memchr(b'/', rest) {
            Some(i) => &rest[i..],
            None => b"/",
        };
    }
    if path.first() != Some(&b'/') {
        return None;
    }
    let end = memchr::memchr2(b'?', b'#', path).unwrap_or(path.len());
    let decoded = decode(&path[..end]);
    let nfc: String = if decoded.is_ascii() {
        decoded
    } else {
        decoded.nfc().collect()
    };
    let mut out = String::with_capacity(nfc.len());
    for segment in nfc.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        let kept = rules.keep_segments.iter().any(|r| r.is_match(segment));
        match identifiers::classify(segment) {
            Some(kind) if !kept => out.push_str(kind.placeholder()),
            _ => out.push_str(segment),
        }
    }
    if out.is_empty() || nfc.ends_with('/') {
        out.push('/');
    }
    for rule in &rules.rewrite {
        if rule.pattern.is_match(&out) {
            out = rule
                .pattern
                .replace_all(&out, rule.replace.as_str())
                .into_owned();
        }
    }
    Some(out)
}

fn strip_scheme(target: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://"] {
        if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

/// One byte of the path: decoded from `%XX`, or as it was logged.
#[derive(Clone, Copy)]
struct PathByte {
    value: u8,
    was_encoded: bool,
}

fn decode(path: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%'
            && i + 2 < path.len()
            && let (Some(h), Some(l)) = (hex(path[i + 1]), hex(path[i + 2]))
        {
            bytes.push(PathByte {
                value: h << 4 | l,
                was_encoded: true,
            });
            i += 3;
            continue;
        }
        bytes.push(PathByte {
            value: b,
            was_encoded: false,
        });
        i += 1;
    }
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.value < 0x80 {
            let c = b.value;
            let unreserved = c.is_ascii_alphanumeric() || b"-._~".contains(&c);
            let printable = (0x21..0x7f).contains(&c);
            let keep_raw = if b.was_encoded {
                unreserved
            } else {
                // A literal `%` that did not start an escape is encoded so it cannot form one.
                printable && c != b'%'
            };
            if keep_raw {
                out.push(char::from(c));
            } else {
                push_encoded(&mut out, c);
            }
            i += 1;
            continue;
        }
        // A run of non-ASCII bytes: valid UTF-8 is kept as text, anything else encoded.
        let start = i;
        while i < bytes.len() && bytes[i].value >= 0x80 {
            i += 1;
        }
        let run: Vec<u8> = bytes[start..i].iter().map(|b| b.value).collect();
        for chunk in run.utf8_chunks() {
            for ch in chunk.valid().chars() {
                if ch.is_control() {
                    let mut buf = [0u8; 4];
                    for &c in ch.encode_utf8(&mut buf).as_bytes() {
                        push_encoded(&mut out, c);
                    }
                } else {
                    out.push(ch);
                }
            }
            for &c in chunk.invalid() {
                push_encoded(&mut out, c);
            }
        }
    }
    out
}

fn push_encoded(out: &mut String, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(c >> 4)]));
    out.push(char::from(HEX[usize::from(c & 15)]));
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Option<String> {
        normalise(s.as_bytes(), &PathRules::default())
    }

    #[test]
    fn path_query_fragment_and_slashes() {
        assert_eq!(
            n("/a/b?utm_source=x&gclid=abc#top").as_deref(),
            Some("/a/b")
        );
        assert_eq!(n("//a///b/").as_deref(), Some("/a/b/"));
        assert_eq!(n("/").as_deref(), Some("/"));
        assert_eq!(n("/?q=1").as_deref(), Some("/"));
        assert_eq!(n("https://example.ru/x?y").as_deref(), Some("/x"));
        assert_eq!(n("*"), None);
        assert_eq!(n("example.ru:443"), None);
    }

    #[test]
    fn path_percent_decoding_rules() {
        // Cyrillic, encoded or raw, is one page.
        let encoded = "/%D0%BA%D0%B0%D1%82%D0%B0%D0%BB%D0%BE%D0%B3";
        assert_eq!(n(encoded).as_deref(), Some("/каталог"));
        assert_eq!(n("/каталог").as_deref(), Some("/каталог"));
        // Unreserved ASCII decodes; reserved and % stay encoded, upper-case.
        assert_eq!(n("/%7euser/%41b").as_deref(), Some("/~user/Ab"));
        assert_eq!(n("/a%2fb%3f%23%25").as_deref(), Some("/a%2Fb%3F%23%25"));
        // Invalid UTF-8 stays encoded; a control byte is encoded; a bare % is encoded.
        assert_eq!(n("/%D0%ZZ").as_deref(), Some("/%D0%25ZZ"));
        assert_eq!(n("/a%00b").as_deref(), Some("/a%00b"));
        assert_eq!(n("/100%").as_deref(), Some("/100%25"));
        assert_eq!(n("/a b").as_deref(), Some("/a%20b"));
    }

    #[test]
    fn path_nfc() {
        // "й" as и + combining breve (NFD) becomes the single code point (NFC).
        let nfd = "/%D0%B8%CC%86";
        assert_eq!(n(nfd).as_deref(), Some("/й"));
    }

    #[test]
    fn path_identifier_segments() {
        assert_eq!(
            n("/orders/918273645/edit").as_deref(),
            Some("/orders/:id/edit")
        );
        assert_eq!(
            n("/unsubscribe/user@example.ru").as_deref(),
            Some("/unsubscribe/:email")
        );
        assert_eq!(
            n("/unsubscribe/user%40example.ru").as_deref(),
            Some("/unsubscribe/:email")
        );
        assert_eq!(
            n("/reset/9f86d081884c7d659a2feaa0c55ad015").as_deref(),
            Some("/reset/:token")
        );
        assert_eq!(
            n("/u/123e4567-e89b-12d3-a456-426614174000").as_deref(),
            Some("/u/:uuid")
        );
        assert_eq!(
            n("/blog/how-to-configure-nginx").as_deref(),
            Some("/blog/how-to-configure-nginx")
        );
    }

    #[test]
    fn path_pipeline_rules() {
        let rules = PathRules {
            rewrite: vec![PathRule {
                pattern: Regex::new("^/users/[^/]+").unwrap(),
                replace: "/users/:user".into(),
            }],
            keep_segments: vec![Regex::new("^sku[0-9]+$").unwrap()],
        };
        assert_eq!(
            normalise(b"/users/ivan.petrov/posts", &rules).as_deref(),
            Some("/users/:user/posts")
        );
        assert_eq!(
            normalise(b"/p/sku1234567", &rules).as_deref(),
            Some("/p/sku1234567")
        );
    }
}
