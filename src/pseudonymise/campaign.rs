//! Campaign values and the channel of a pageview.
//!
//! Only the five utm_* parameters and the *kind* of a click id are read from a query string;
//! every other parameter is dropped unread, and a click id's value never leaves this module
//! (it identifies one ad click, so one person). Values are trimmed, NFC-normalised and
//! case-folded; identifier-shaped values become placeholders (decision 15); a source's known
//! aliases become one name (`fb`, `m.facebook.com` → `facebook`; `ya.ru`, `yandex.com` →
//! `yandex`). The rules (aliases, source kinds, media) are data: `data/sources.toml`.
//!
//! The channel follows GA4's default channel grouping, in our vocabulary (decision 10), with
//! Russian networks first-class. In order: the utm_medium decides when it names a channel
//! (paid media split into search, social and display by the source or referrer); then a click
//! id (`yclid`, `gclid`, `msclkid` → paid search; `ysclid` → organic search, since Yandex adds
//! it to organic results; `fbclid` → organic social, since Facebook adds it to every outbound
//! link; TikTok, X, LinkedIn and VK ad click ids → paid social); then the kind of the
//! utm_source; then the referrer's kind; a tagged visit with nothing recognisable is `other`,
//! an untagged one without referrer `direct`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use super::channel::*;
use super::referrer::{HostKind, HostLists};
use crate::identifiers;

/// The campaign values of a request's query string.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Campaign {
    pub source: Option<Arc<str>>,
    pub medium: Option<Arc<str>>,
    pub campaign: Option<Arc<str>>,
    pub term: Option<Arc<str>>,
    pub content: Option<Arc<str>>,
    pub click_id: Option<&'static str>,
}

/// Click-id parameters, in priority order (the first present wins), with the channel each
/// implies when no utm_medium says otherwise.
const CLICK_IDS: &[(&str, &str)] = &[
    ("gclid", PAID_SEARCH),
    ("gbraid", PAID_SEARCH),
    ("wbraid", PAID_SEARCH),
    ("yclid", PAID_SEARCH),
    ("msclkid", PAID_SEARCH),
    ("dclid", DISPLAY),
    ("ttclid", PAID_SOCIAL),
    ("twclid", PAID_SOCIAL),
    ("li_fat_id", PAID_SOCIAL),
    ("rb_clickid", PAID_SOCIAL),
    ("vkclid", PAID_SOCIAL),
    ("ysclid", ORGANIC_SEARCH),
    ("fbclid", ORGANIC_SOCIAL),
    ("igshid", ORGANIC_SOCIAL),
];

/// Campaign rules as written: `data/sources.toml`, or a pipeline's `[campaign_rules]` table
/// (same keys, every one optional), which adds to and overrides the built-in rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignRulesFile {
    /// Canonical source name → its aliases.
    #[serde(default)]
    pub aliases: HashMap<String, Vec<String>>,
    /// Source names by kind (the same three lists as referrer hosts).
    #[serde(default)]
    pub kinds: HostLists,
    #[serde(default)]
    pub media: MediaFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaFile {
    #[serde(default)]
    pub paid: Vec<String>,
    #[serde(default)]
    pub display: Vec<String>,
    #[serde(default)]
    pub social: Vec<String>,
    #[serde(default)]
    pub email: Vec<String>,
    #[serde(default)]
    pub organic: Vec<String>,
    #[serde(default)]
    pub referral: Vec<String>,
}

/// The campaign rules in force: built in, extended by the pipeline.
#[derive(Debug, Clone)]
pub struct CampaignRules {
    alias: HashMap<String, Arc<str>>,
    kind: HashMap<String, HostKind>,
    medium: HashMap<String, Medium>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Medium {
    Paid,
    Display,
    Social,
    Email,
    Organic,
    Referral,
}

static BUILTIN: LazyLock<CampaignRules> = LazyLock::new(|| {
    let file: CampaignRulesFile =
        toml::from_str(include_str!("../../data/sources.toml")).expect("data/sources.toml");
    let mut rules = CampaignRules {
        alias: HashMap::new(),
        kind: HashMap::new(),
        medium: HashMap::new(),
    };
    rules.extend(&file);
    rules
});

impl CampaignRules {
    pub fn builtin() -> CampaignRules {
        BUILTIN.clone()
    }

    /// Adds a pipeline's rules; an entry given again takes the new meaning.
    pub fn extend(&mut self, file: &CampaignRulesFile) {
        let fold = |s: &str| s.trim().to_lowercase();
        for (name, aliases) in &file.aliases {
            let canonical: Arc<str> = Arc::from(fold(name));
            for a in aliases {
                self.alias.insert(fold(a), canonical.clone());
            }
        }
        for (list, k) in [
            (&file.kinds.search, HostKind::Search),
            (&file.kinds.social, HostKind::Social),
            (&file.kinds.email, HostKind::Email),
        ] {
            self.kind.extend(list.iter().map(|n| (fold(n), k)));
        }
        let m = &file.media;
        for (list, medium) in [
            (&m.paid, Medium::Paid),
            (&m.display, Medium::Display),
            (&m.social, Medium::Social),
            (&m.email, Medium::Email),
            (&m.organic, Medium::Organic),
            (&m.referral, Medium::Referral),
        ] {
            self.medium.extend(list.iter().map(|n| (fold(n), medium)));
        }
    }

    /// The campaign of a query string.
    pub fn parse(&self, query: &[u8]) -> Campaign {
        self.parse_with(query, &mut UtmValues::default())
    }

    /// [`Self::parse`], with the values normalised so far kept in `values`: a repeated
    /// value costs a lookup, and every pageview of it shares one `Arc` (which the spill
    /// numbers by address).
    pub fn parse_with(&self, query: &[u8], values: &mut UtmValues) -> Campaign {
        let mut c = Campaign::default();
        for (k, v) in url::form_urlencoded::parse(query) {
            let slot = match &*k {
                "utm_source" => &mut c.source,
                "utm_medium" => &mut c.medium,
                "utm_campaign" => &mut c.campaign,
                "utm_term" => &mut c.term,
                "utm_content" => &mut c.content,
                other => {
                    let rank = |id: &str| CLICK_IDS.iter().position(|(i, _)| *i == id);
                    if let Some(kind) = CLICK_IDS.iter().find(|(id, _)| *id == other)
                        && !v.is_empty()
                        && c.click_id.is_none_or(|cur| rank(kind.0) < rank(cur))
                    {
                        c.click_id = Some(kind.0);
                    }
                    continue;
                }
            };
            if slot.is_none() {
                *slot = values.normalised(&v);
            }
        }
        if let Some(s) = &c.source
            && let Some(canonical) = self.alias.get(&**s)
        {
            c.source = Some(canonical.clone());
        }
        c
    }

    /// A utm value as the tables hold it (as [`CampaignRules::parse`] leaves it): for
    /// ad-spend files.
    pub fn normalise_utm(&self, key: &str, value: &str) -> Option<Arc<str>> {
        let v = campaign_value(value)?;
        if key == "utm_source"
            && let Some(canonical) = self.alias.get(&*v)
        {
            return Some(canonical.clone());
        }
        Some(v)
    }

    /// The kind of the source named by utm_source: from the rules, or, for a source written
    /// as a host (`zen.yandex.ru`), from the referrer host lists.
    pub fn source_kind(
        &self,
        c: &Campaign,
        hosts: &mut super::referrer::ReferrerClassifier,
    ) -> Option<HostKind> {
        let s = c.source.as_deref()?;
        if let Some(k) = self.kind.get(s) {
            return Some(*k);
        }
        if s.contains('.') && !s.contains(['/', ' ']) {
            return hosts
                .classify(format!("https://{s}/").as_bytes())
                .map(|r| r.kind)
                .filter(|k| *k != HostKind::Other);
        }
        None
    }

    /// The channel of a pageview from its campaign values, the kind of its utm_source and the
    /// kind of its referrer (module docs).
    pub fn channel_of(
        &self,
        c: &Campaign,
        referrer: Option<HostKind>,
        source: Option<HostKind>,
    ) -> &'static str {
        let social = source == Some(HostKind::Social)
            || (source.is_none() && referrer == Some(HostKind::Social));
        if let Some(medium) = c.medium.as_deref() {
            match self.medium.get(medium) {
                Some(Medium::Email) => return EMAIL,
                Some(Medium::Paid) if social => return PAID_SOCIAL,
                Some(Medium::Paid) => return PAID_SEARCH,
                Some(Medium::Display) => return DISPLAY,
                Some(Medium::Social) => return ORGANIC_SOCIAL,
                Some(Medium::Organic) => return ORGANIC_SEARCH,
                Some(Medium::Referral) => return REFERRAL,
                None => {}
            }
        }
        if let Some(id) = c.click_id
            && let Some((_, channel)) = CLICK_IDS.iter().find(|(i, _)| *i == id)
        {
            return channel;
        }
        match source {
            Some(HostKind::Search) => return ORGANIC_SEARCH,
            Some(HostKind::Social) => return ORGANIC_SOCIAL,
            Some(HostKind::Email) => return EMAIL,
            _ => {}
        }
        if c.source
            .as_deref()
            .is_some_and(|s| !self.kind.contains_key(s))
            && c.medium.is_none()
            && referrer.is_none()
        {
            return OTHER;
        }
        match referrer {
            Some(HostKind::Search) => ORGANIC_SEARCH,
            Some(HostKind::Social) => ORGANIC_SOCIAL,
            Some(HostKind::Email) => EMAIL,
            Some(HostKind::Internal) if !c.is_tagged() => INTERNAL,
            Some(HostKind::Internal | HostKind::Other) => REFERRAL,
            None if c.is_tagged() => OTHER,
            None => DIRECT,
        }
    }
}

impl Campaign {
    /// [`CampaignRules::parse`] with the built-in rules.
    pub fn parse(query: &[u8]) -> Campaign {
        BUILTIN.parse(query)
    }

    /// Whether the pageview carries a campaign (decision 9: such a pageview starts a new visit
    /// when it differs from the running visit's).
    pub fn is_tagged(&self) -> bool {
        self.source.is_some() || self.medium.is_some() || self.campaign.is_some()
    }
}

/// utm values as [`campaign_value`] normalised them, by raw (decoded) value; cleared when it
/// holds [`UTM_VALUES_BYTES`], so distinct values without end cannot grow it.
#[derive(Default)]
pub struct UtmValues {
    normalised: foldhash::HashMap<String, Option<Arc<str>>>,
    bytes: usize,
}

const UTM_VALUES_BYTES: usize = 4 << 20;

impl UtmValues {
    fn normalised(&mut self, raw: &str) -> Option<Arc<str>> {
        if let Some(hit) = self.normalised.get(raw) {
            return hit.clone();
        }
        let value = campaign_value(raw);
        self.bytes += 2 * raw.len() + 64;
        if self.bytes > UTM_VALUES_BYTES {
            self.normalised.clear();
            self.bytes = 2 * raw.len() + 64;
        }
        self.normalised.insert(raw.to_string(), value.clone());
        value
    }
}

/// Case-folded, trimmed, NFC; identifier-shaped values become placeholders (decision 15).
fn campaign_value(v: &str) -> Option<Arc<str>> {
    let v = v.trim();
    // ASCII (most tags) is its own NFC and lower-cases byte by byte: the same result as the
    // general path below, without its per-character work.
    let v: String = if v.is_ascii() {
        v.to_ascii_lowercase()
    } else {
        v.nfc().collect::<String>().to_lowercase()
    };
    if v.is_empty() {
        return None;
    }
    let v = match identifiers::classify(&v) {
        Some(kind) => kind.placeholder(),
        None if v.len() <= 100 => &v,
        None => &v.chars().take(100).collect::<String>(),
    };
    Some(Arc::from(v))
}

/// [`CampaignRules::channel_of`] with the built-in rules.
pub fn channel_of(
    c: &Campaign,
    referrer: Option<HostKind>,
    source: Option<HostKind>,
) -> &'static str {
    BUILTIN.channel_of(c, referrer, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_values_aliases_and_click_ids() {
        let c = Campaign::parse(b"utm_source=%20Ya.RU%20&utm_medium=CPC&utm_campaign=%D0%BE%D1%81%D0%B5%D0%BD%D1%8C&yclid=12345678901&gclid=&x=1");
        assert_eq!(c.source.as_deref(), Some("yandex"), "ya.ru is yandex");
        assert_eq!(c.medium.as_deref(), Some("cpc"));
        assert_eq!(c.campaign.as_deref(), Some("осень"));
        assert_eq!(c.click_id, Some("yclid"), "an empty gclid is no click id");
        let c = Campaign::parse(b"utm_content=ivan.petrov%40mail.ru&utm_term=9f86d081884c7d659a2f");
        assert_eq!(c.content.as_deref(), Some(":email"));
        assert_eq!(c.term.as_deref(), Some(":token"));
        for fb in ["fb", "m.facebook.com", "Facebook.com"] {
            let q = format!("utm_source={fb}");
            assert_eq!(
                Campaign::parse(q.as_bytes()).source.as_deref(),
                Some("facebook")
            );
        }
        let both = Campaign::parse(b"fbclid=abc&gclid=def");
        assert_eq!(both.click_id, Some("gclid"), "gclid outranks fbclid");
        let c = Campaign::parse(b"utm_source=newsletter&utm_campaign=");
        assert!(c.campaign.is_none() && c.is_tagged());
    }

    /// The ASCII fast path of `campaign_value` against the general rule (trim, NFC, lower
    /// case, placeholders, 100 characters).
    #[test]
    fn campaign_values_fast_path_equals_the_general_rule() {
        fn general(v: &str) -> Option<Arc<str>> {
            let v: String = v.trim().nfc().collect::<String>().to_lowercase();
            if v.is_empty() {
                return None;
            }
            Some(Arc::from(match identifiers::classify(&v) {
                Some(kind) => kind.placeholder().to_string(),
                None => v.chars().take(100).collect::<String>(),
            }))
        }
        let long = format!("Spring_{}", "AbC".repeat(60));
        let long_cyrillic = "Осень".repeat(30);
        for v in [
            "",
            "  ",
            "\x0b CPC \x0c",
            "Yandex",
            "ya.ru",
            " MiXeD-Case_42 ",
            &long,
            "осень",
            " Осень2026 ",
            "e\u{301}te",
            "ÉTÉ",
            &long_cyrillic,
            "user@example.com",
            "550e8400-e29b-41d4-a716-446655440000",
            "79161234567",
            "\t\n",
            "a\u{a0}",
        ] {
            assert_eq!(campaign_value(v), general(v), "{v:?}");
        }
    }

    /// Parsing with kept values gives the same campaigns as without, and a repeated value
    /// is one shared `Arc`.
    #[test]
    fn kept_utm_values_change_nothing_but_sharing() {
        let rules = CampaignRules::builtin();
        let mut values = UtmValues::default();
        let queries: [&[u8]; 4] = [
            b"utm_source=Yandex&utm_medium=CPC&utm_campaign=%D0%BE%D1%81%D0%B5%D0%BD%D1%8C",
            b"utm_source=yandex&utm_campaign=ivan%40mail.ru&gclid=x",
            b"utm_source=Yandex&utm_medium=cpc",
            b"utm_medium=&utm_source=%20vk%20",
        ];
        let mut seen = Vec::new();
        for _ in 0..3 {
            for q in queries {
                let kept = rules.parse_with(q, &mut values);
                let fresh = rules.parse(q);
                assert_eq!(
                    (&kept.source, &kept.medium, &kept.campaign, kept.click_id),
                    (
                        &fresh.source,
                        &fresh.medium,
                        &fresh.campaign,
                        fresh.click_id
                    )
                );
                seen.push(kept.source.clone());
            }
        }
        let (a, b) = (seen[0].as_ref().unwrap(), seen[4].as_ref().unwrap());
        assert!(Arc::ptr_eq(a, b), "the same raw value, one Arc");
    }

    #[test]
    fn pipeline_rules_extend_the_builtin_ones() {
        let mut rules = CampaignRules::builtin();
        let extra: CampaignRulesFile = toml::from_str(
            r#"
            aliases = { sber = ["sberads", "SberAds.ru"] }
            kinds = { search = ["sber"] }
            media = { paid = ["promo-cpc"], email = ["digest"] }
            "#,
        )
        .unwrap();
        rules.extend(&extra);
        let c = rules.parse(b"utm_source=SberAds&utm_medium=promo-cpc");
        assert_eq!(c.source.as_deref(), Some("sber"));
        assert_eq!(
            rules.channel_of(&c, None, Some(HostKind::Search)),
            PAID_SEARCH
        );
        let c = rules.parse(b"utm_medium=digest");
        assert_eq!(rules.channel_of(&c, None, None), EMAIL);
        // The built-in rules are untouched.
        assert_eq!(
            channel_of(&Campaign::parse(b"utm_medium=digest"), None, None),
            OTHER
        );
    }

    #[test]
    fn channels_in_rule_order() {
        let with = |q: &str| Campaign::parse(q.as_bytes());
        let none = Campaign::default();
        use HostKind::*;
        assert_eq!(channel_of(&none, None, None), DIRECT);
        assert_eq!(channel_of(&none, Some(Search), None), ORGANIC_SEARCH);
        assert_eq!(channel_of(&none, Some(Social), None), ORGANIC_SOCIAL);
        assert_eq!(channel_of(&none, Some(Email), None), EMAIL);
        assert_eq!(channel_of(&none, Some(Internal), None), INTERNAL);
        assert_eq!(channel_of(&none, Some(Other), None), REFERRAL);
        assert_eq!(channel_of(&with("utm_medium=email"), None, None), EMAIL);
        // Paid media: search unless the source (or, lacking a known source, the referrer)
        // is social.
        let cpc = with("utm_source=vk&utm_medium=cpc");
        assert_eq!(channel_of(&cpc, Some(Search), Some(Social)), PAID_SOCIAL);
        let cpc = with("utm_source=yandex&utm_medium=cpc");
        assert_eq!(channel_of(&cpc, Some(Social), Some(Search)), PAID_SEARCH);
        assert_eq!(
            channel_of(&with("utm_medium=cpc"), Some(Social), None),
            PAID_SOCIAL
        );
        assert_eq!(
            channel_of(&with("yclid=1"), Some(Search), None),
            PAID_SEARCH
        );
        assert_eq!(
            channel_of(&with("ysclid=1"), Some(Search), None),
            ORGANIC_SEARCH
        );
        assert_eq!(
            channel_of(&with("fbclid=1"), Some(Social), None),
            ORGANIC_SOCIAL
        );
        assert_eq!(
            channel_of(&with("utm_medium=organic&gclid=1"), None, None),
            ORGANIC_SEARCH,
            "a utm_medium outranks a click id"
        );
        assert_eq!(
            channel_of(&with("utm_source=yandex"), None, Some(Search)),
            ORGANIC_SEARCH
        );
        assert_eq!(channel_of(&with("utm_source=x1"), None, None), OTHER);
        assert_eq!(channel_of(&with("utm_medium=banner"), None, None), DISPLAY);
        assert_eq!(
            channel_of(&with("utm_campaign=sale"), Some(Internal), None),
            REFERRAL,
            "a tagged link on the site itself is not internal navigation"
        );
    }
}
