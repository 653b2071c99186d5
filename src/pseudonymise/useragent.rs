//! User agent → (browser family, OS family, device type, is-bot), from uap-core's regexes
//! (the ua-parser project's data, Apache-2.0, via the `ua-parser` crate) and the
//! crawler-user-agents pattern list (MIT). The raw user agent goes no further than this.
//!
//! Parsing a user agent costs tens of microseconds, but a day of logs holds few distinct
//! user agents, so results are cached per run.

use std::sync::Arc;

use serde::Deserialize;

/// What is kept of a user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaClass {
    pub browser: Arc<str>,
    pub os: Arc<str>,
    pub device_type: &'static str,
    pub is_bot: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceRules {
    rule: Vec<DeviceRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceRule {
    device_type: String,
    #[serde(default)]
    device_family: Vec<String>,
    #[serde(default)]
    os_family: Vec<String>,
    #[serde(default)]
    ua_contains: Vec<String>,
    #[serde(default)]
    ua_lacks: Vec<String>,
}

/// The compiled matchers: hundreds of regexes, a few hundred milliseconds to build, so built
/// once per process and shared by every worker (each keeps its own cache).
struct Matchers {
    uap: ua_parser::Extractor<'static>,
    /// The device parsers after the first [`DEVICE_PARSERS_FIRST`], compiled beside them:
    /// the 628 device parsers alone took 79 ms on one thread while the shard's workers
    /// waited. A device is the first matching parser's, so the first part is tried first.
    dev_rest: ua_parser::device::Extractor<'static>,
    crawlers: regex::Regex,
    rules: Vec<DeviceRule>,
}

/// How many device parsers the first part holds ([`Matchers::dev_rest`]).
const DEVICE_PARSERS_FIRST: usize = 314;

static MATCHERS: std::sync::LazyLock<Matchers> = std::sync::LazyLock::new(Matchers::new);

pub struct UaClassifier {
    matchers: &'static Matchers,
    /// Raw user agent → its class and number ([`Self::classify_at`]).
    cache: super::placed::Placed<(UaClass, u64)>,
    /// Numbers handed out so far.
    numbered: u64,
}

const DEVICE_TYPES: [&str; 4] = ["desktop", "mobile", "tablet", "bot"];

impl Matchers {
    fn new() -> Matchers {
        let regexes: ua_parser::Regexes<'static> =
            serde_json::from_str(include_str!("../../data/uap/regexes.json"))
                .expect("data/uap/regexes.json is valid");
        // The four sets of patterns compile side by side: otherwise about 0.12 s of one core
        // at every run's start on the benchmark machine.
        let ua_parser::Regexes {
            user_agent_parsers,
            os_parsers,
            device_parsers,
        } = regexes;
        let mut device_parsers = device_parsers;
        let device_rest = device_parsers.split_off(DEVICE_PARSERS_FIRST.min(device_parsers.len()));
        let (ua, os, dev, dev_rest, crawlers) = std::thread::scope(|scope| {
            // One uap-core domain's parsers into its extractor, on a thread of its own.
            macro_rules! compile {
                ($parsers:expr, $domain:ident, $what:literal) => {
                    scope.spawn(|| {
                        let builder = $parsers
                            .into_iter()
                            .try_fold(ua_parser::$domain::Builder::new(), |b, p| b.push(p));
                        let built = builder.map(|b| b.build());
                        built.ok().and_then(Result::ok).expect($what)
                    })
                };
            }
            let ua = compile!(
                user_agent_parsers,
                user_agent,
                "uap-core user-agent regexes compile"
            );
            let os = compile!(os_parsers, os, "uap-core OS regexes compile");
            let dev = compile!(device_parsers, device, "uap-core device regexes compile");
            let dev_rest = compile!(device_rest, device, "uap-core device regexes compile");
            let patterns: Vec<String> =
                serde_json::from_str(include_str!("../../data/crawler-user-agents/patterns.json"))
                    .expect("data/crawler-user-agents/patterns.json is valid");
            let crawlers = regex::RegexBuilder::new(&patterns.join("|"))
                .size_limit(256 << 20)
                .dfa_size_limit(64 << 20)
                .build()
                .expect("crawler patterns compile");
            let panicked = "a pattern compiler panicked";
            let ua = ua.join().expect(panicked);
            let os = os.join().expect(panicked);
            let dev = dev.join().expect(panicked);
            (ua, os, dev, dev_rest.join().expect(panicked), crawlers)
        });
        let uap = ua_parser::Extractor { ua, os, dev };
        // The compilers' scratch memory, freed into their threads' arenas, back to the system
        // (it stood on top of the shard's peak: 7 MiB more on the 20 M-line benchmark).
        crate::threads::release_free_memory();
        let rules: DeviceRules = toml::from_str(include_str!("../../data/device_types.toml"))
            .expect("data/device_types.toml is valid");
        for r in &rules.rule {
            assert!(
                DEVICE_TYPES.contains(&r.device_type.as_str()),
                "unknown device type"
            );
        }
        Matchers {
            uap,
            dev_rest,
            crawlers,
            rules: rules.rule,
        }
    }
}

impl Matchers {
    /// The device family of a user agent: the first matching parser's, the parts in order.
    fn device(&self, text: &str) -> String {
        let found = self.uap.dev.extract(text);
        let found = found.or_else(|| self.dev_rest.extract(text));
        found.map_or_else(|| "Other".to_string(), |v| v.device.into_owned())
    }
}

/// Starts compiling the matchers on a thread of their own, so that the compile overlaps the
/// run's set-up (keys, state, the first blocks read) instead of holding up the first worker.
pub fn compile_in_background() {
    std::thread::spawn(|| std::sync::LazyLock::force(&MATCHERS));
}

impl UaClassifier {
    pub fn new() -> UaClassifier {
        UaClassifier {
            matchers: &MATCHERS,
            cache: super::placed::Placed::new(),
            numbered: 0,
        }
    }

    pub fn classify(&mut self, user_agent: Option<&[u8]>) -> UaClass {
        self.classify_numbered(user_agent).0
    }

    /// The class of a user agent and a number that stands for the raw user agent in this
    /// classifier: equal numbers, equal user agents (a number is never reused, not even after
    /// the cache is cleared). The pseudonymiser keys its recent clients by it.
    pub fn classify_numbered(&mut self, user_agent: Option<&[u8]>) -> (UaClass, u64) {
        let at = self.classify_at(user_agent);
        self.at(at).clone()
    }

    /// [`Self::classify_numbered`] as a place in this classifier, which [`Self::at`] reads
    /// until the next call: the pseudonymiser's events borrow their texts from it, where a
    /// copy of the class touched each text's shared count (a cache miss a pageview).
    pub fn classify_at(&mut self, user_agent: Option<&[u8]>) -> usize {
        let raw = user_agent.unwrap_or(b"");
        if let Some(at) = self.cache.find(raw) {
            return at;
        }
        let class = (self.classify_uncached(raw), self.numbered);
        self.numbered += 1;
        if self.cache.len() > 200_000 {
            self.cache.clear();
        }
        self.cache.insert(raw, class)
    }

    /// The class and number at a place [`Self::classify_at`] gave.
    pub fn at(&self, at: usize) -> &(UaClass, u64) {
        &self.cache[at]
    }

    fn classify_uncached(&self, raw: &[u8]) -> UaClass {
        let m = self.matchers;
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if text.is_empty() {
            return UaClass {
                browser: Arc::from("(none)"),
                os: Arc::from("(none)"),
                device_type: "bot",
                is_bot: true,
            };
        }
        let browser = m
            .uap
            .ua
            .extract(text)
            .map_or_else(|| "Other".to_string(), |v| v.family.into_owned());
        let os = m
            .uap
            .os
            .extract(text)
            .map_or_else(|| "Other".to_string(), |v| v.os.into_owned());
        let device = m.device(text);
        let is_bot = device == "Spider" || m.crawlers.is_match(text);
        let device_type = if is_bot {
            "bot"
        } else {
            m.rules
                .iter()
                .find(|r| {
                    (r.device_family.is_empty() || r.device_family.contains(&device))
                        && (r.os_family.is_empty() || r.os_family.contains(&os))
                        && (r.ua_contains.is_empty()
                            || r.ua_contains.iter().any(|s| text.contains(s.as_str())))
                        && !r.ua_lacks.iter().any(|s| text.contains(s.as_str()))
                })
                .map_or("desktop", |r| {
                    DEVICE_TYPES
                        .iter()
                        .copied()
                        .find(|t| *t == r.device_type)
                        .unwrap_or("desktop")
                })
        };
        UaClass {
            browser: Arc::from(browser),
            os: Arc::from(os),
            device_type,
            is_bot,
        }
    }
}

impl Default for UaClassifier {
    fn default() -> Self {
        UaClassifier::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_classes() {
        let mut c = UaClassifier::new();
        let cases: [(&str, &str, &str, &str, bool); 8] = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "Chrome",
                "Windows",
                "desktop",
                false,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                "Mobile Safari",
                "iOS",
                "mobile",
                false,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                "Mobile Safari",
                "iOS",
                "tablet",
                false,
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 YaBrowser/23.11.0.0 Mobile Safari/537.36",
                "Yandex Browser",
                "Android",
                "mobile",
                false,
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                "Firefox",
                "Linux",
                "desktop",
                false,
            ),
            (
                "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
                "YandexBot",
                "Other",
                "bot",
                true,
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "Googlebot",
                "Other",
                "bot",
                true,
            ),
            ("curl/8.4.0", "curl", "Other", "bot", true),
        ];
        for (ua, browser, os, device, bot) in cases {
            let got = c.classify(Some(ua.as_bytes()));
            assert_eq!(
                (&*got.browser, &*got.os, got.device_type, got.is_bot),
                (browser, os, device, bot),
                "{ua}"
            );
        }
        assert!(c.classify(None).is_bot);
    }

    /// The device parsers compiled in two parts find what one extractor of them all finds.
    #[test]
    fn device_parts_equal_one_extractor() {
        let regexes: ua_parser::Regexes<'static> =
            serde_json::from_str(include_str!("../../data/uap/regexes.json")).unwrap();
        let whole = regexes
            .device_parsers
            .into_iter()
            .try_fold(ua_parser::device::Builder::new(), |b, p| b.push(p))
            .unwrap()
            .build()
            .unwrap();
        let agents = [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 YaBrowser/23.11.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 12; Redmi Note 11) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/119 like Chrome/119 Safari/537.36",
            "Mozilla/5.0 (Linux; Android 10; HUAWEI P30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118 Mobile Safari/537.36",
            "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76 TV Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70 Edge/18",
            "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)",
            "Mozilla/5.0 (Linux; U; Android 4.0.4; ru-ru; Nokia_X) AppleWebKit/534.30",
            "Opera/9.80 (J2ME/MIDP; Opera Mini/4.2; U; ru) Presto/2.8.119 Version/11.10",
            "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            "curl/8.4.0",
            "",
        ];
        let m = &*MATCHERS;
        let mut rest = 0;
        for ua in agents {
            let want = whole
                .extract(ua)
                .map_or_else(|| "Other".to_string(), |v| v.device.into_owned());
            assert_eq!(m.device(ua), want, "{ua}");
            rest +=
                usize::from(m.uap.dev.extract(ua).is_none() && m.dev_rest.extract(ua).is_some());
        }
        assert!(rest > 0, "some agents are found by the second part only");
    }
}
