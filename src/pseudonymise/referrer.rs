//! Referrer URL → published referrer host and the kind of site it is.
//!
//! Only the host survives: the path and query of a referrer can carry search terms, session
//! ids or e-mail addresses. The published host is the registrable domain (eTLD+1 by the public
//! suffix list), shown in Unicode (`пример.рф`, not `xn--e1afmkfd.xn--p1ai`), so private
//! sub-domains (`ivan.example-blogs.ru`) are not published on their own. The host lists are
//! data (`data/channels.toml`, extendable per pipeline), matched by longest entry.

use std::sync::Arc;

use serde::Deserialize;

/// Where a referrer points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Search,
    Social,
    Email,
    Internal,
    Other,
}

/// The host lists of `data/channels.toml` (and a pipeline's `[channels]` table).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLists {
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub social: Vec<String>,
    #[serde(default)]
    pub email: Vec<String>,
}

impl HostLists {
    /// The lists compiled into logveil.
    pub fn builtin() -> HostLists {
        toml::from_str(include_str!("../../data/channels.toml"))
            .expect("data/channels.toml is valid")
    }

    pub fn extend(&mut self, other: &HostLists) {
        self.search.extend(other.search.iter().cloned());
        self.social.extend(other.social.iter().cloned());
        self.email.extend(other.email.iter().cloned());
    }
}

/// The published form of a referrer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerInfo {
    pub host: Arc<str>,
    pub kind: HostKind,
}

pub struct ReferrerClassifier {
    suffix_rules: Vec<(String, HostKind)>,
    wildcard_rules: Vec<(String, HostKind)>,
    site_hosts: Vec<String>,
    /// Raw host → its class.
    cache: super::placed::Placed<Option<ReferrerInfo>>,
}

impl ReferrerClassifier {
    pub fn new(lists: &HostLists, site_hosts: &[String]) -> ReferrerClassifier {
        let mut suffix_rules = Vec::new();
        let mut wildcard_rules = Vec::new();
        for (entries, kind) in [
            (&lists.search, HostKind::Search),
            (&lists.social, HostKind::Social),
            (&lists.email, HostKind::Email),
        ] {
            for e in entries {
                let e = e.trim().to_ascii_lowercase();
                match e.strip_suffix(".*") {
                    Some(label) => wildcard_rules.push((label.to_string(), kind)),
                    None => suffix_rules.push((e, kind)),
                }
            }
        }
        ReferrerClassifier {
            suffix_rules,
            wildcard_rules,
            site_hosts: site_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            cache: super::placed::Placed::new(),
        }
    }

    /// Classifies a raw referrer (as logged). `None` for an empty referrer or one without a host.
    pub fn classify(&mut self, referrer: &[u8]) -> Option<ReferrerInfo> {
        let at = self.classify_at(referrer)?;
        self.at(at).clone()
    }

    /// [`Self::classify`] as a place in this classifier, which [`Self::at`] reads until the
    /// next call (the pageview's event borrows the host from there); `None` without a host.
    pub fn classify_at(&mut self, referrer: &[u8]) -> Option<usize> {
        let host = raw_host(referrer)?;
        if let Some(at) = self.cache.find(host) {
            return Some(at);
        }
        let app = referrer.starts_with(b"android-app://");
        let mut info = self.classify_host(host);
        if app && let Some(i) = info.as_mut() {
            // An Android package name is not a domain: publish it whole.
            i.host = Arc::from(String::from_utf8_lossy(host).to_ascii_lowercase());
        }
        if self.cache.len() > 1_000_000 {
            self.cache.clear();
        }
        Some(self.cache.insert(host, info))
    }

    /// The class at a place [`Self::classify_at`] gave.
    pub fn at(&self, at: usize) -> &Option<ReferrerInfo> {
        &self.cache[at]
    }

    fn classify_host(&self, raw: &[u8]) -> Option<ReferrerInfo> {
        let ascii = std::str::from_utf8(raw).ok()?.to_ascii_lowercase();
        let ascii = ascii.trim_end_matches('.');
        // Hosts arrive either as punycode or as percent-encoded or raw UTF-8; `url`'s IDNA
        // mapping turns every form into the ASCII form used for matching.
        let decoded = percent_decode(ascii);
        let ascii = idna_ascii(&decoded)?;
        if ascii.is_empty() {
            return None;
        }
        let matches = |entry: &str| ascii == entry || ascii.ends_with(&format!(".{entry}"));
        if self.site_hosts.iter().any(|h| matches(h)) {
            return Some(ReferrerInfo {
                host: published(&ascii),
                kind: HostKind::Internal,
            });
        }
        let mut best: Option<(usize, HostKind)> = None;
        for (entry, kind) in &self.suffix_rules {
            if matches(entry) && best.is_none_or(|(len, _)| entry.len() > len) {
                best = Some((entry.len(), *kind));
            }
        }
        let kind = match best {
            Some((_, kind)) => kind,
            None => {
                let registrable = psl::domain_str(&ascii).unwrap_or(&ascii);
                let first_label = registrable.split('.').next().unwrap_or("");
                self.wildcard_rules
                    .iter()
                    .find(|(label, _)| label == first_label)
                    .map_or(HostKind::Other, |(_, kind)| *kind)
            }
        };
        Some(ReferrerInfo {
            host: published(&ascii),
            kind,
        })
    }
}

/// The host part of a referrer URL: after `scheme://`, before `/ ? #`, without user info and
/// port. Android app referrers (`android-app://org.telegram.messenger/`) give the package.
fn raw_host(referrer: &[u8]) -> Option<&[u8]> {
    let start = memchr::memmem::find(referrer, b"://")? + 3;
    let rest = &referrer[start..];
    let end = rest
        .iter()
        .position(|c| b"/?#\\".contains(c))
        .unwrap_or(rest.len());
    let mut host = &rest[..end];
    if let Some(at) = memchr::memrchr(b'@', host) {
        host = &host[at + 1..];
    }
    if host.first() == Some(&b'[') {
        // IPv6 literal: keep as is (it is classified as "other" and published as an address
        // never, see `published`).
        return Some(host);
    }
    if let Some(colon) = memchr::memrchr(b':', host) {
        host = &host[..colon];
    }
    (!host.is_empty()).then_some(host)
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    url::form_urlencoded::parse(format!("h={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn idna_ascii(host: &str) -> Option<String> {
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return Some(host.to_string());
    }
    url::Host::parse(host).ok().map(|h| h.to_string())
}

/// The registrable domain in Unicode. IP-address referrers are published as `(ip address)`:
/// an address is personal data even when it is a server's.
fn published(ascii: &str) -> Arc<str> {
    if ascii.starts_with('[') || ascii.parse::<std::net::IpAddr>().is_ok() {
        return Arc::from("(ip address)");
    }
    let registrable = psl::domain_str(ascii).unwrap_or(ascii);
    let (unicode, result) = idna::domain_to_unicode(registrable);
    Arc::from(if result.is_ok() {
        unicode
    } else {
        registrable.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(referrer: &str) -> Option<(String, HostKind)> {
        let mut c = ReferrerClassifier::new(&HostLists::builtin(), &["example.ru".to_string()]);
        c.classify(referrer.as_bytes())
            .map(|i| (i.host.to_string(), i.kind))
    }

    #[test]
    fn referrer_kinds_and_published_hosts() {
        use HostKind::*;
        let cases = [
            (
                "https://yandex.ru/search/?text=secret+words",
                "yandex.ru",
                Search,
            ),
            ("https://www.google.co.uk/", "google.co.uk", Search),
            ("https://ya.ru/", "ya.ru", Search),
            ("https://mail.yandex.ru/?uid=123#inbox", "yandex.ru", Email),
            ("https://e.mail.ru/inbox/", "mail.ru", Email),
            ("https://go.mail.ru/search?q=x", "mail.ru", Search),
            ("https://dzen.ru/a/xyz", "dzen.ru", Social),
            ("https://m.vk.com/away.php?to=x", "vk.com", Social),
            ("https://l.facebook.com/l.php?u=x", "facebook.com", Social),
            (
                "android-app://org.telegram.messenger/",
                "org.telegram.messenger",
                Social,
            ),
            ("https://www.example.ru/catalog", "example.ru", Internal),
            ("https://shop.example.ru/", "example.ru", Internal),
            ("https://user:pw@blog.other.org:8080/p", "other.org", Other),
            ("https://xn--e1afmkfd.xn--p1ai/", "пример.рф", Other),
            ("https://пример.рф/путь", "пример.рф", Other),
            ("http://198.51.100.23/x", "(ip address)", Other),
        ];
        for (referrer, host, kind) in cases {
            assert_eq!(
                classify(referrer),
                Some((host.to_string(), kind)),
                "{referrer}"
            );
        }
        assert_eq!(classify("-"), None);
        assert_eq!(classify("not a url"), None);
    }
}
