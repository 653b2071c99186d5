//! Pseudonymise: [`RawRecord`] → [`Event`], immediately after parsing.
//!
//! This is the boundary of personal data. A record enters with a client address, a user
//! agent, a full request target and a referrer URL; an [`Event`] leaves with a keyed visitor
//! pseudonym, a normalised path without query, a referrer host, a user-agent class and
//! campaign values. No field of `Event` can hold the raw address, user agent, query string or
//! click-id value: the type is the guarantee, and nothing downstream ever sees a `RawRecord`.
//!
//! Filters (bots, static assets, non-page requests, status classes) run here too, so only
//! pageviews travel on, each filtered line counted by its rule.

pub mod campaign;
pub mod keyring;
pub mod keys;
pub mod path;
mod placed;
pub mod referrer;
pub mod useragent;

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use crate::day::Day;
use crate::ingest::RawRecord;
pub use campaign::{Campaign, CampaignRules, channel_of};
use keyring::KeySet;
use keys::EpochKey;
use path::PathRules;
use referrer::{HostLists, ReferrerClassifier};
use useragent::UaClassifier;

/// The channel vocabulary shared by every table (decision 10).
pub mod channel {
    pub const DIRECT: &str = "direct";
    pub const ORGANIC_SEARCH: &str = "organic_search";
    pub const PAID_SEARCH: &str = "paid_search";
    pub const ORGANIC_SOCIAL: &str = "organic_social";
    pub const PAID_SOCIAL: &str = "paid_social";
    pub const EMAIL: &str = "email";
    pub const REFERRAL: &str = "referral";
    pub const DISPLAY: &str = "display";
    pub const INTERNAL: &str = "internal";
    pub const OTHER: &str = "other";
    pub const ALL: [&str; 10] = [
        DIRECT,
        ORGANIC_SEARCH,
        PAID_SEARCH,
        ORGANIC_SOCIAL,
        PAID_SOCIAL,
        EMAIL,
        REFERRAL,
        DISPLAY,
        INTERNAL,
        OTHER,
    ];
}

/// A pageview, pseudonymised. Everything downstream works on these.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// UTC seconds.
    pub ts: i64,
    /// Local day (pipeline time zone) and local hour 0–23.
    pub day: Day,
    pub hour: u8,
    /// Pseudonym under the key of `day`.
    pub visitor: u64,
    /// Pseudonym under the previous day's key, for events early enough after local midnight to
    /// continue a visit that started the day before (decision 2). In memory only.
    pub link: Option<u64>,
    /// The partition of the client's events (see [`Settings::buckets`]).
    pub bucket: u16,
    pub path: Arc<str>,
    pub referrer_host: Option<Arc<str>>,
    pub channel: &'static str,
    pub browser: Arc<str>,
    pub os: Arc<str>,
    pub device_type: &'static str,
    pub utm_source: Option<Arc<str>>,
    pub utm_medium: Option<Arc<str>>,
    pub utm_campaign: Option<Arc<str>>,
    pub utm_term: Option<Arc<str>>,
    pub utm_content: Option<Arc<str>>,
    /// Which kind of click id the request carried (`gclid`, `yclid`, …), never its value.
    pub click_id: Option<&'static str>,
    /// The goal and funnel matchers the path satisfies, one bit each ([`crate::goals`]).
    pub steps: u64,
}

/// A pageview as [`Pseudonymiser::process`] hands it to the spill: an [`Event`] whose path,
/// referrer, browser and OS are borrowed from the pseudonymiser's caches, not counted copies (touching
/// each text's shared count was a cache miss a pageview: 2 % of a run's CPU, `perf`).
#[derive(Debug, Clone, PartialEq)]
pub struct PageviewRef<'a> {
    pub ts: i64,
    pub day: Day,
    pub hour: u8,
    pub visitor: u64,
    pub link: Option<u64>,
    pub bucket: u16,
    pub path: &'a Arc<str>,
    pub referrer_host: Option<&'a Arc<str>>,
    pub channel: &'static str,
    pub browser: &'a Arc<str>,
    pub os: &'a Arc<str>,
    pub device_type: &'static str,
    pub utm_source: Option<Arc<str>>,
    pub utm_medium: Option<Arc<str>>,
    pub utm_campaign: Option<Arc<str>>,
    pub utm_term: Option<Arc<str>>,
    pub utm_content: Option<Arc<str>>,
    pub click_id: Option<&'static str>,
    pub steps: u64,
}

#[cfg(test)]
impl Event {
    /// This event as the spill takes it (the tests' events; a run's come from `process`).
    pub(crate) fn as_ref(&self) -> PageviewRef<'_> {
        PageviewRef {
            ts: self.ts,
            day: self.day,
            hour: self.hour,
            visitor: self.visitor,
            link: self.link,
            bucket: self.bucket,
            path: &self.path,
            referrer_host: self.referrer_host.as_ref(),
            channel: self.channel,
            browser: &self.browser,
            os: &self.os,
            device_type: self.device_type,
            utm_source: self.utm_source.clone(),
            utm_medium: self.utm_medium.clone(),
            utm_campaign: self.utm_campaign.clone(),
            utm_term: self.utm_term.clone(),
            utm_content: self.utm_content.clone(),
            click_id: self.click_id,
            steps: self.steps,
        }
    }
}

impl PageviewRef<'_> {
    /// The event this pageview is, its texts shared.
    pub fn to_event(&self) -> Event {
        Event {
            ts: self.ts,
            day: self.day,
            hour: self.hour,
            visitor: self.visitor,
            link: self.link,
            bucket: self.bucket,
            path: self.path.clone(),
            referrer_host: self.referrer_host.cloned(),
            channel: self.channel,
            browser: self.browser.clone(),
            os: self.os.clone(),
            device_type: self.device_type,
            utm_source: self.utm_source.clone(),
            utm_medium: self.utm_medium.clone(),
            utm_campaign: self.utm_campaign.clone(),
            utm_term: self.utm_term.clone(),
            utm_content: self.utm_content.clone(),
            click_id: self.click_id,
            steps: self.steps,
        }
    }
}

#[cfg(test)]
impl Event {
    /// A desktop Firefox pageview for tests; `ts` in UTC, local time = UTC.
    pub(crate) fn for_test(ts: i64, visitor: u64, path: &str) -> Event {
        Event {
            ts,
            day: Day(ts.div_euclid(86_400) as i32),
            hour: (ts.rem_euclid(86_400) / 3600) as u8,
            visitor,
            link: None,
            bucket: 0,
            path: Arc::from(path),
            referrer_host: None,
            channel: channel::DIRECT,
            browser: Arc::from("Firefox"),
            os: Arc::from("Linux"),
            device_type: "desktop",
            utm_source: None,
            utm_medium: None,
            utm_campaign: None,
            utm_term: None,
            utm_content: None,
            click_id: None,
            steps: 0,
        }
    }
}

/// The filter rules, in the order they are tried. Their names go into the run record.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum FilterRule {
    /// A directive line (W3C `#Fields:` …), not a request.
    Directive,
    OutsideDateWindow,
    OtherSite,
    NonPageRequest,
    Status,
    StaticAsset,
    Bot,
}

impl FilterRule {
    /// Every rule, in declaration order (`rule as usize` is its place here).
    pub const ALL: [FilterRule; 7] = [
        FilterRule::Directive,
        FilterRule::OutsideDateWindow,
        FilterRule::OtherSite,
        FilterRule::NonPageRequest,
        FilterRule::Status,
        FilterRule::StaticAsset,
        FilterRule::Bot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FilterRule::Directive => "directive_line",
            FilterRule::OutsideDateWindow => "outside_date_window",
            FilterRule::OtherSite => "other_site",
            FilterRule::NonPageRequest => "non_page_request",
            FilterRule::Status => "status",
            FilterRule::StaticAsset => "static_asset",
            FilterRule::Bot => "bot",
        }
    }
}

/// Which filters are on (each can be switched off, as in Matomo's importer).
#[derive(Debug, Clone)]
pub struct Filters {
    pub bots: bool,
    pub static_assets: bool,
    pub asset_extensions: Vec<String>,
    pub non_page_requests: bool,
    /// Allowed statuses: `2xx`-style classes or exact codes. Empty: every status is allowed.
    pub status_classes: Vec<String>,
}

pub const DEFAULT_ASSET_EXTENSIONS: &[&str] = &[
    "css", "js", "mjs", "map", "png", "jpg", "jpeg", "gif", "svg", "ico", "webp", "avif", "bmp",
    "tif", "tiff", "woff", "woff2", "ttf", "otf", "eot", "mp4", "webm", "mp3", "ogg", "wav",
    "json", "xml", "txt", "pdf", "zip", "gz", "rar", "7z", "exe", "dmg", "apk", "csv", "xls",
    "xlsx", "doc", "docx",
];

impl Default for Filters {
    fn default() -> Self {
        Filters {
            bots: true,
            static_assets: true,
            asset_extensions: DEFAULT_ASSET_EXTENSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            non_page_requests: true,
            status_classes: vec!["2xx".into(), "304".into()],
        }
    }
}

/// [`Filters::status_allowed`] for statuses below 1024 (every one a parser passes is below
/// 1000), one bit each, worked out once per pseudonymiser rather than per line.
struct StatusTable([u64; 16]);

impl StatusTable {
    fn new(filters: &Filters) -> StatusTable {
        let mut bits = [0u64; 16];
        for status in 0..1024u16 {
            if filters.status_allowed(status) {
                bits[usize::from(status) / 64] |= 1 << (status % 64);
            }
        }
        StatusTable(bits)
    }

    fn allows(&self, status: u16, filters: &Filters) -> bool {
        match self.0.get(usize::from(status) / 64) {
            Some(word) => word & (1 << (status % 64)) != 0,
            None => filters.status_allowed(status),
        }
    }
}

impl Filters {
    fn status_allowed(&self, status: u16) -> bool {
        // The status's decimal digits, as `to_string` would give them, without allocating
        // (this runs once per line). Statuses are below 1000 (the parsers check).
        let mut buf = [0u8; 5];
        let (mut n, mut at) = (status, buf.len());
        loop {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let digits = &buf[at..];
        self.status_classes.is_empty()
            || self.status_classes.iter().any(|c| {
                let c = c.as_bytes();
                c.len() == 3
                    && c.iter()
                        .zip(digits)
                        .all(|(p, s)| p == s || p.eq_ignore_ascii_case(&b'x'))
            })
    }
}

/// What the pseudonymiser needs from the pipeline.
#[derive(Clone)]
pub struct Settings {
    pub time_zone: jiff::tz::TimeZone,
    pub filters: Filters,
    pub path_rules: PathRules,
    pub host_lists: HostLists,
    pub site_hosts: Vec<String>,
    /// Lines of other hosts are skipped when the format carries a vhost.
    pub check_vhost: bool,
    /// Seconds after local midnight during which an event may continue yesterday's visit.
    pub link_window_s: i64,
    /// Only events with `window.0 <= ts < window.1` (UTC seconds) are kept.
    pub window: Option<(i64, i64)>,
    /// Number of buckets events are partitioned into (by a keyed hash of the client).
    pub buckets: u16,
    /// Goal and funnel paths, tested once per distinct path.
    pub goals: Arc<crate::goals::Goals>,
    /// utm aliases, source kinds and media (built in, extended by the pipeline).
    pub campaign_rules: Arc<campaign::CampaignRules>,
    /// Returning visitors on: pseudonym epochs of this many days (else one day), and every
    /// client noted in [`crate::visitors::Identities`] under this and the previous epoch.
    pub epoch_days: Option<u32>,
    /// `format = "json"`: the field mapping.
    pub json_fields: Option<Arc<crate::ingest::json::JsonFields>>,
    /// `format = "custom"`: the compiled `log_format`.
    pub custom_format: Option<Arc<crate::ingest::custom::CustomFormat>>,
    /// HAProxy's captured request headers, in the configuration's order.
    pub haproxy_captures: Arc<Vec<crate::ingest::haproxy::Capture>>,
    /// Proxies whose `X-Forwarded-For` is believed (empty: the connection's address is the
    /// client).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// A managed key ring: every epoch needs its own master, starting on the epoch grid
    /// (`epoch_days` from 1970-01-01); a day whose master starts elsewhere is missing.
    pub managed_keys: bool,
}

impl Settings {
    /// The defaults a pipeline starts from, for a site and a time zone: default filters,
    /// the built-in host lists and campaign rules, one bucket, no goals, no returning
    /// visitors, combined logs without proxies (tests, benches and examples start here).
    pub fn defaults(site_hosts: &[&str], time_zone: jiff::tz::TimeZone) -> Settings {
        Settings {
            time_zone,
            filters: Filters::default(),
            path_rules: PathRules::default(),
            host_lists: HostLists::builtin(),
            site_hosts: site_hosts.iter().map(|h| h.to_string()).collect(),
            check_vhost: false,
            link_window_s: 6 * 3600 + 1800,
            window: None,
            buckets: 1,
            goals: Default::default(),
            campaign_rules: Arc::new(campaign::CampaignRules::builtin()),
            epoch_days: None,
            managed_keys: false,
            trusted_proxies: Default::default(),
            haproxy_captures: Default::default(),
            custom_format: None,
            json_fields: None,
        }
    }
}

/// Unboxed: a box per pageview measured no faster (`benches/ab.sh`, fifteenth session), and
/// the pageview only borrows its texts.
#[allow(clippy::large_enum_variant)]
pub enum Outcome<'a> {
    Pageview(PageviewRef<'a>),
    Filtered(FilterRule),
    /// The key ring has no master for this day: the run cannot pseudonymise it.
    MissingKey(Day),
}

pub struct Pseudonymiser {
    keys: Arc<KeySet>,
    bucket_key: zeroize::Zeroizing<[u8; 32]>,
    /// Epoch keys derived so far, by day (`None`: no master covers the day), with the
    /// epoch's first day.
    epoch_keys: HashMap<Day, Option<(Day, EpochKey, bool)>>,
    /// Whether a day pseudonymises under the same key as the day before it, by day
    /// ([`Self::link`]).
    same_key_as_prev: HashMap<Day, bool>,
    identities: crate::visitors::IdentityNotes,
    user_agents: UaClassifier,
    referrers: ReferrerClassifier,
    /// Raw path → its class (`None`: not a page), within [`PATH_CACHE_BYTES`].
    paths: placed::Placed<Option<PathClass>>,
    path_bytes: usize,
    /// Clients met lately, as (epoch, pseudonym, bucket), in slots chosen by the pseudonym.
    /// Within an epoch a pseudonym names one client, so a hit gives its bucket without the
    /// bucket hash and says its identities are already noted (noting again changes nothing).
    recent: Vec<(i32, u64, u16)>,
    /// (number + 1, digest) of recent user agents ([`Self::agent_digest`]); 0: empty.
    agent_digests: Vec<(u64, u64)>,
    pseudonyms: PseudonymCache,
    statuses: StatusTable,
    /// utm values normalised so far.
    utm_values: campaign::UtmValues,
    settings: Settings,
}

/// Slots of [`Pseudonymiser::recent`] (16 bytes each: 16 KiB per worker). Few: the cache of
/// pseudonyms in front of it takes a client's repeat pageviews, so most clients reaching it
/// are new, and a table of 2 MiB cost a cache miss each (`perf`: 90 % of `hash_client`'s own
/// time on one load) for the few hashes its hits saved (shard 0.97x at 16 KiB).
const RECENT_SLOTS: usize = 1 << 10;
const AGENT_DIGEST_SLOTS: usize = 1 << 12;

/// The pseudonyms and buckets of clients met lately, by (address, user-agent number, day):
/// a client's pageviews come close together in a log, so most pageviews find theirs here
/// and skip the keyed hashes (BLAKE3 over the address and the whole user agent). One slot
/// per hash of the key, overwritten on a miss; small enough (4,096 slots of 48 bytes) to stay
/// in the core's cache, unlike [`Pseudonymiser::recent`]. Addresses only: a host-name client
/// is hashed every time. The addresses stay in this worker's memory, like the raw lines it
/// parses, and go nowhere else.
struct PseudonymCache {
    slots: Vec<PseudonymSlot>,
}

#[derive(Clone, Copy, Default)]
struct PseudonymSlot {
    /// 0 for an empty slot (addresses have 4 or 16 bytes).
    len: u8,
    address: [u8; 16],
    user_agent: u64,
    day: i32,
    visitor: u64,
    bucket: u16,
}

const PSEUDONYM_SLOT_BITS: u32 = 12;

impl PseudonymCache {
    fn new() -> PseudonymCache {
        PseudonymCache {
            slots: vec![PseudonymSlot::default(); 1 << PSEUDONYM_SLOT_BITS],
        }
    }

    /// The slot of a key: Fibonacci hashing of its parts folded into one word (the slot is
    /// checked against the whole key, so a collision only costs a miss).
    fn slot(address: &[u8; 16], user_agent: u64, day: Day) -> usize {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let a = u64::from_le_bytes(address[..8].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(address[8..].try_into().expect("8 bytes"));
        let folded = a ^ b.rotate_left(29) ^ user_agent.wrapping_mul(K) ^ ((day.0 as u64) << 40);
        (folded.wrapping_mul(K) >> (64 - PSEUDONYM_SLOT_BITS)) as usize
    }

    /// The cached (pseudonym, bucket) of a key; on a miss, the slot to [`Self::store`] the
    /// answer in (`None`: a host name, not cached).
    fn find(
        &self,
        client: &keys::CanonicalClient,
        user_agent: u64,
        day: Day,
    ) -> Result<(u64, u16), Option<usize>> {
        let keys::CanonicalClient::Address { bytes, len } = client else {
            return Err(None);
        };
        let slot = Self::slot(bytes, user_agent, day);
        let s = &self.slots[slot];
        if s.len == *len && s.address == *bytes && s.user_agent == user_agent && s.day == day.0 {
            Ok((s.visitor, s.bucket))
        } else {
            Err(Some(slot))
        }
    }

    /// Stores a key's answer in the slot [`Self::find`] gave for it.
    fn store(
        &mut self,
        slot: usize,
        client: &keys::CanonicalClient,
        user_agent: u64,
        day: Day,
        got: (u64, u16),
    ) {
        if let keys::CanonicalClient::Address { bytes, len } = client {
            self.slots[slot] = PseudonymSlot {
                len: *len,
                address: *bytes,
                user_agent,
                day: day.0,
                visitor: got.0,
                bucket: got.1,
            };
        }
    }
}

impl Pseudonymiser {
    pub fn new(keys: Arc<KeySet>, settings: Settings) -> Pseudonymiser {
        Pseudonymiser {
            bucket_key: zeroize::Zeroizing::new(keys.run_bucket_key()),
            keys,
            epoch_keys: HashMap::new(),
            same_key_as_prev: HashMap::new(),
            identities: Default::default(),
            user_agents: UaClassifier::new(),
            referrers: ReferrerClassifier::new(&settings.host_lists, &settings.site_hosts),
            paths: placed::Placed::new(),
            path_bytes: 0,
            recent: vec![(i32::MIN, 0, 0); RECENT_SLOTS],
            agent_digests: vec![(0, 0); AGENT_DIGEST_SLOTS],
            pseudonyms: PseudonymCache::new(),
            statuses: StatusTable::new(&settings.filters),
            utm_values: Default::default(),
            settings,
        }
    }

    /// The masters in use (for keys derived for other purposes, e.g. release noise).
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The bucket of a client: a keyed hash under the run's bucket key, so one client's
    /// events share a bucket across midnight.
    #[cfg(test)]
    fn bucket(&self, client: &[u8], user_agent: &[u8]) -> u16 {
        let digest = self.agent_digest_of(user_agent);
        self.bucket_of_canonical(keys::canonical_client(client).as_bytes(), digest)
    }

    /// The bucket of a client (canonical form) whose user agent has `agent_digest`
    /// ([`Self::agent_digest`]): the keyed hash of the address and the agent's digest, one
    /// BLAKE3 block where the address and the whole user agent took three.
    fn bucket_of_canonical(&self, canonical: &[u8], agent_digest: u64) -> u16 {
        if self.settings.buckets <= 1 {
            return 0;
        }
        let client_len = (canonical.len() as u32).to_le_bytes();
        let pieces = [&client_len[..], canonical, &agent_digest.to_le_bytes(), &[]];
        let v = keys::keyed_hash_u64(&self.bucket_key, pieces);
        (v % u64::from(self.settings.buckets)) as u16
    }

    /// The keyed digest of a user agent under the bucket key, cached by the agent's number
    /// ([`UaClassifier::classify_numbered`]): a site's clients share a few thousand agents.
    fn agent_digest(&mut self, number: u64, user_agent: &[u8]) -> u64 {
        let slot = number as usize % AGENT_DIGEST_SLOTS;
        match self.agent_digests[slot] {
            (n, digest) if n == number + 1 => digest,
            _ => {
                let digest = self.agent_digest_of(user_agent);
                self.agent_digests[slot] = (number + 1, digest);
                digest
            }
        }
    }

    fn agent_digest_of(&self, user_agent: &[u8]) -> u64 {
        let len = (user_agent.len() as u32).to_le_bytes();
        keys::keyed_hash_u64(&self.bucket_key, [&len, user_agent, &[], &[]])
    }

    /// Public ids of the key epochs used so far, by epoch start (for the run record).
    pub fn epoch_ids(&self) -> Vec<(Day, String)> {
        let mut epochs: Vec<Day> = self
            .epoch_keys
            .values()
            .filter_map(|k| k.as_ref().map(|(e, _, _)| *e))
            .collect();
        epochs.sort();
        epochs.dedup();
        epochs
            .into_iter()
            .filter_map(|e| Some((e, self.keys.epoch_id(e)?)))
            .collect()
    }

    /// This pseudonymiser noting its clients in `notes` (which may share their table with
    /// other workers' notes: [`crate::visitors::IdentityNotes::sharing`]).
    pub fn with_notes(mut self, notes: crate::visitors::IdentityNotes) -> Pseudonymiser {
        self.identities = notes;
        self
    }

    /// The clients seen, under their epochs' pseudonyms (returning visitors only).
    pub fn take_identities(&mut self) -> crate::visitors::Identities {
        std::mem::take(&mut self.identities).finish()
    }

    /// Local (day, hour, seconds since local midnight) of a UTC timestamp.
    pub fn local_time(&self, ts: i64) -> (Day, u8, i64) {
        local_time(&self.settings.time_zone, ts)
    }

    pub fn process(&mut self, rec: &RawRecord<'_>) -> Outcome<'_> {
        use FilterRule::*;
        if let Some((from, to)) = self.settings.window
            && (rec.ts < from || rec.ts >= to)
        {
            return Outcome::Filtered(OutsideDateWindow);
        }
        if self.settings.check_vhost
            && let Some(vhost) = rec.vhost
        {
            let vhost = String::from_utf8_lossy(vhost).to_ascii_lowercase();
            if !self.settings.site_hosts.contains(&vhost) {
                return Outcome::Filtered(OtherSite);
            }
        }
        let get = rec.method == Some(b"GET");
        let target = match rec.target {
            Some(t) => t,
            None => return Outcome::Filtered(NonPageRequest),
        };
        if self.settings.filters.non_page_requests && !get {
            return Outcome::Filtered(NonPageRequest);
        }
        if !self.statuses.allows(rec.status, &self.settings.filters) {
            return Outcome::Filtered(Status);
        }
        let (path_part, query) = match memchr::memchr(b'?', target) {
            Some(i) => (&target[..i], Some(&target[i + 1..])),
            None => (target, None),
        };
        let path_at = self.path(path_part);
        let Some(PathClass { steps, asset, .. }) = self.paths[path_at] else {
            return Outcome::Filtered(NonPageRequest);
        };
        if asset {
            return Outcome::Filtered(StaticAsset);
        }
        let ua_at = self.user_agents.classify_at(rec.user_agent);
        let (ua, ua_number) = self.user_agents.at(ua_at);
        if self.settings.filters.bots && ua.is_bot {
            return Outcome::Filtered(Bot);
        }
        let (device_type, ua_number) = (ua.device_type, *ua_number);

        let (day, hour, since_midnight) = self.local_time(rec.ts);
        let user_agent = rec.user_agent.unwrap_or(b"");
        let client = client_address(
            rec.client,
            rec.forwarded_for,
            &self.settings.trusted_proxies,
        );
        let rec = &RawRecord {
            client,
            ..rec.clone()
        };
        // Canonicalised once (an address parsed, no allocation for an IP) for every hash.
        let client = keys::canonical_client(rec.client);
        let (visitor, bucket) = match self.pseudonyms.find(&client, ua_number, day) {
            Ok(hit) => hit,
            Err(slot) => {
                let Some(got) = self.hash_client(client.as_bytes(), (user_agent, ua_number), day)
                else {
                    return Outcome::MissingKey(day);
                };
                if let Some(slot) = slot {
                    self.pseudonyms.store(slot, &client, ua_number, day, got);
                }
                got
            }
        };
        let link = if since_midnight < self.settings.link_window_s {
            self.link(day, visitor, client.as_bytes(), user_agent)
        } else {
            None
        };
        let rules = &self.settings.campaign_rules;
        let campaign = query
            .map(|q| rules.parse_with(q, &mut self.utm_values))
            .unwrap_or_default();
        // The source's kind first: it may classify a host, and the referrer's place in the
        // classifier holds only until its next call.
        let source_kind = rules.source_kind(&campaign, &mut self.referrers);
        let referrer_at = rec.referrer.and_then(|r| self.referrers.classify_at(r));
        let referrer = referrer_at.and_then(|at| self.referrers.at(at).as_ref());
        let channel = rules.channel_of(&campaign, referrer.map(|r| r.kind), source_kind);
        // Borrowed from the caches only now that nothing else is looked up.
        let path = &self.paths[path_at].as_ref().expect("a page's class").path;
        let (ua, _) = self.user_agents.at(ua_at);
        Outcome::Pageview(PageviewRef {
            ts: rec.ts,
            day,
            hour,
            visitor,
            link,
            bucket,
            path,
            referrer_host: referrer.map(|r| &r.host),
            channel,
            browser: &ua.browser,
            os: &ua.os,
            device_type,
            utm_source: campaign.source,
            utm_medium: campaign.medium,
            utm_campaign: campaign.campaign,
            utm_term: campaign.term,
            utm_content: campaign.content,
            click_id: campaign.click_id,
            steps,
        })
    }

    /// The pseudonym on the day before `day` of the client (canonical form) whose pseudonym
    /// on `day` is `visitor`, for a pageview early enough to continue a visit begun then;
    /// `None` when no key covers that day. Within an epoch both days have one key, and so
    /// one pseudonym: hashed again only on an epoch's first day (pageviews of the first hours
    /// after midnight, a quarter of a day's, each hashed the client a second time).
    fn link(&mut self, day: Day, visitor: u64, canonical: &[u8], user_agent: &[u8]) -> Option<u64> {
        let same = match self.same_key_as_prev.get(&day) {
            Some(&same) => same,
            None => {
                self.epoch_key(day);
                self.epoch_key(day.prev());
                let same = match (self.epoch_keys.get(&day), self.epoch_keys.get(&day.prev())) {
                    (Some(Some((_, today, _))), Some(Some((_, before, _)))) => {
                        today.bytes() == before.bytes()
                    }
                    _ => false,
                };
                self.same_key_as_prev.insert(day, same);
                same
            }
        };
        if same {
            return Some(visitor);
        }
        self.epoch_key(day.prev())
            .map(|(_, key, _)| key.visitor_of_canonical(canonical, user_agent))
    }

    /// The pseudonym of a client (canonical form) on `day` and its bucket, noting its
    /// identities for returning visitors; `None` when no key covers the day.
    fn hash_client(
        &mut self,
        canonical: &[u8],
        (user_agent, agent_number): (&[u8], u64),
        day: Day,
    ) -> Option<(u64, u16)> {
        let (epoch, visitor) = match self.epoch_key(day) {
            Some((epoch, key, true)) => (*epoch, key.visitor_of_canonical(canonical, user_agent)),
            _ => return None,
        };
        let slot = visitor as usize % RECENT_SLOTS;
        let bucket = match self.recent[slot] {
            (e, v, bucket) if e == epoch.0 && v == visitor => bucket,
            _ => {
                let digest = self.agent_digest(agent_number, user_agent);
                let bucket = self.bucket_of_canonical(canonical, digest);
                self.recent[slot] = (epoch.0, visitor, bucket);
                // Noted on every miss of the recent clients (noting again changes nothing):
                // a client's later pageviews mostly hit, and skip the notes and a hash.
                if self.settings.epoch_days.is_some() {
                    self.identities.note(epoch, visitor, bucket, visitor, epoch);
                    // The same client under the previous epoch's pseudonym, to find its earlier
                    // visits in the visit log (decision 2).
                    if let Some((prev_epoch, prev)) = self
                        .epoch_key(epoch.prev())
                        .map(|(e, key, _)| (*e, key.visitor_of_canonical(canonical, user_agent)))
                    {
                        self.identities
                            .note(prev_epoch, prev, bucket, visitor, epoch);
                    }
                }
                bucket
            }
        };
        Some((visitor, bucket))
    }

    /// The pseudonym epoch of `day` and its key, and whether events of `day` itself may be
    /// pseudonymised with them (derived keys hold some days only as a neighbour's). Cached
    /// per day: looked up once per pageview.
    fn epoch_key(&mut self, day: Day) -> Option<(&Day, &EpochKey, bool)> {
        let keys = &self.keys;
        let lookback = self.settings.epoch_days;
        let managed = self.settings.managed_keys;
        self.epoch_keys
            .entry(day)
            .or_insert_with(|| {
                keys.pseudonym_epoch(day, lookback, managed)
                    .map(|(e, k)| (e, k, keys.covers(day)))
            })
            .as_ref()
            .map(|(e, k, covered)| (e, k, *covered))
    }

    /// The class of a raw path (query cut off), cached per raw path: normalising it (percent
    /// decoding, Unicode normalisation), its goal matchers and the asset check are done once
    /// per distinct path, not once per pageview.
    /// Returned as its place in `paths`, valid until the next call (the pageview's event
    /// borrows the path from there).
    fn path(&mut self, raw: &[u8]) -> usize {
        if let Some(at) = self.paths.find(raw) {
            return at;
        }
        let class = path::normalise(raw, &self.settings.path_rules).map(|p| PathClass {
            steps: self.settings.goals.steps_of(&p),
            asset: self.settings.filters.static_assets && self.is_asset(&p),
            path: Arc::from(p),
        });
        let bytes = PATH_ENTRY_BYTES + raw.len() + class.as_ref().map_or(0, |c| c.path.len());
        if self.path_bytes + bytes > PATH_CACHE_BYTES {
            self.paths.clear();
            self.path_bytes = 0;
        }
        self.path_bytes += bytes;
        self.paths.insert(raw, class)
    }

    fn is_asset(&self, path: &str) -> bool {
        let last = path.rsplit('/').next().unwrap_or("");
        match last.rsplit_once('.') {
            Some((_, ext)) => self
                .settings
                .filters
                .asset_extensions
                .iter()
                .any(|e| e.eq_ignore_ascii_case(ext)),
            None => false,
        }
    }
}

/// A raw path's normalised form, its goal and funnel matchers (one bit each) and whether the
/// asset filter drops it.
#[derive(Clone)]
struct PathClass {
    path: Arc<str>,
    steps: u64,
    asset: bool,
}

/// The path cache's budget per worker: cleared when full, so a site with millions of distinct
/// paths (ids in URLs) cannot grow it without bound.
const PATH_CACHE_BYTES: usize = 16 << 20;
/// A cache entry's bytes besides its two texts (map slot, vector and `Arc` headers).
const PATH_ENTRY_BYTES: usize = 96;

/// The client behind trusted proxies: walking the `X-Forwarded-For` chain (with the
/// connection's address last) from the right, the first address that is not a trusted proxy.
/// Without trusted proxies, or when the chain holds nothing else, the connection's address.
pub fn client_address<'a>(
    connection: &'a [u8],
    forwarded_for: Option<&'a [u8]>,
    trusted: &[ipnet::IpNet],
) -> &'a [u8] {
    let parse = |b: &[u8]| -> Option<std::net::IpAddr> {
        let s = std::str::from_utf8(b).ok()?.trim();
        let s = s.trim_start_matches('[');
        let s = s.split(']').next().unwrap_or(s);
        s.parse().ok()
    };
    let is_trusted = |b: &[u8]| parse(b).is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip)));
    if trusted.is_empty() || !is_trusted(connection) {
        return connection;
    }
    let Some(chain) = forwarded_for else {
        return connection;
    };
    for hop in chain.rsplit(|b| *b == b',') {
        let hop = hop.trim_ascii();
        if hop.is_empty() || hop == b"unknown" {
            continue;
        }
        if parse(hop).is_none() {
            // Not an address: the chain cannot be believed beyond this point.
            return connection;
        }
        if !is_trusted(hop) {
            return hop;
        }
    }
    connection
}

pub fn local_time(tz: &jiff::tz::TimeZone, ts: i64) -> (Day, u8, i64) {
    let offset = jiff::Timestamp::from_second(ts)
        .map(|t| tz.to_offset(t).seconds())
        .unwrap_or(0);
    let local = ts + i64::from(offset);
    let day = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    (Day(day as i32), (secs / 3600) as u8, secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let f = Filters::default();
        assert!(f.status_allowed(200) && f.status_allowed(204) && f.status_allowed(304));
        assert!(!f.status_allowed(301) && !f.status_allowed(404) && !f.status_allowed(500));
        let all = Filters {
            status_classes: vec![],
            ..Filters::default()
        };
        assert!(all.status_allowed(500));
        // Against the rule on the status's decimal text, for every status a parser passes.
        let odd = Filters {
            status_classes: vec!["2xx".into(), "30X".into(), "0xx".into(), "4".into()],
            ..Filters::default()
        };
        for status in 0..1000u16 {
            let text = status.to_string();
            let want = odd.status_classes.iter().any(|c| {
                c.len() == 3
                    && c.bytes()
                        .zip(text.bytes())
                        .all(|(p, s)| p == s || p.eq_ignore_ascii_case(&b'x'))
            });
            assert_eq!(odd.status_allowed(status), want, "{status}");
        }
        assert!(odd.status_allowed(0) && odd.status_allowed(305) && !odd.status_allowed(310));
        // The per-pseudonymiser table answers as the rule does, and past it defers to it.
        for f in [&odd, &all, &Filters::default()] {
            let table = StatusTable::new(f);
            for status in (0..1100u16).chain([u16::MAX]) {
                assert_eq!(
                    table.allows(status, f),
                    f.status_allowed(status),
                    "{status}"
                );
            }
        }
    }

    #[test]
    fn local_time_in_moscow_and_new_york() {
        let msk = jiff::tz::TimeZone::get("Europe/Moscow").unwrap();
        // 2026-11-24T21:30:00Z is 00:30 on the 25th in Moscow (UTC+3).
        let ts = 1_795_555_800;
        let (day, hour, secs) = local_time(&msk, ts);
        assert_eq!(
            (day.to_string(), hour, secs),
            ("2026-11-25".to_string(), 0, 1800)
        );
        let ny = jiff::tz::TimeZone::get("America/New_York").unwrap();
        let (day, hour, _) = local_time(&ny, ts);
        assert_eq!((day.to_string(), hour), ("2026-11-24".to_string(), 16));
    }

    /// `FilterRule::ALL` lists every rule at its place (the shard counts filtered lines in an
    /// array indexed by `rule as usize`). The match is exhaustive: a new rule does not compile
    /// here until it is placed.
    #[test]
    fn filter_rules_in_declaration_order() {
        for (i, rule) in FilterRule::ALL.into_iter().enumerate() {
            let place = match rule {
                FilterRule::Directive => 0,
                FilterRule::OutsideDateWindow => 1,
                FilterRule::OtherSite => 2,
                FilterRule::NonPageRequest => 3,
                FilterRule::Status => 4,
                FilterRule::StaticAsset => 5,
                FilterRule::Bot => 6,
            };
            assert_eq!((rule as usize, place), (i, i), "{rule:?}");
        }
    }

    #[test]
    fn buckets_spread_clients_and_keep_each_client_in_one() {
        let settings = Settings {
            link_window_s: 0,
            buckets: 37,
            ..Settings::defaults(&["example.ru"], jiff::tz::TimeZone::UTC)
        };
        let keys = Arc::new(KeySet::Single(keys::MasterKey::from_bytes([3; 32])));
        let ps = Pseudonymiser::new(keys, settings);
        let mut seen = std::collections::HashSet::new();
        for i in 0..5000u32 {
            let client = format!("198.51.{}.{}", i / 256, i % 256);
            let b = ps.bucket(client.as_bytes(), b"UA");
            assert!(b < 37);
            assert_eq!(b, ps.bucket(client.as_bytes(), b"UA"));
            seen.insert(b);
        }
        assert_eq!(seen.len(), 37, "every bucket is used");
    }

    /// The pageview of `GET /catalog/` by `client` with `agent` at `ts` (UTC seconds).
    fn pageview(ps: &mut Pseudonymiser, client: &str, agent: &str, ts: i64) -> Event {
        let rec = RawRecord {
            vhost: None,
            client: client.as_bytes(),
            ts,
            method: Some(b"GET"),
            target: Some(b"/catalog/"),
            status: 200,
            bytes: 0,
            referrer: None,
            user_agent: Some(agent.as_bytes()),
            forwarded_for: None,
        };
        let Outcome::Pageview(e) = ps.process(&rec) else {
            panic!("a pageview");
        };
        e.to_event()
    }

    /// A pageview's link (its client's pseudonym under the day before's key) is the hash
    /// under that key, whether the two days share a key (within an epoch: the visitor's own
    /// pseudonym, not hashed again) or not (an epoch's first day; every day with daily keys).
    #[test]
    fn links_equal_the_previous_days_pseudonyms() {
        let agent = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0";
        let day0 = 1_795_478_400; // 2026-11-24T00:00:00Z
        for lookback in [None, Some(30)] {
            let settings = Settings {
                epoch_days: lookback,
                ..Settings::defaults(&["example.ru"], jiff::tz::TimeZone::UTC)
            };
            let keys = Arc::new(KeySet::Single(keys::MasterKey::from_bytes([5; 32])));
            let mut ps = Pseudonymiser::new(keys, settings);
            let (mut same, mut other) = (0, 0);
            for d in 0..70i64 {
                for (client, at) in [("198.51.100.7", 3600), ("2001:db8::7", 2 * 3600)] {
                    let e = pageview(&mut ps, client, agent, day0 + d * 86_400 + at);
                    let (_, before) = ps
                        .keys()
                        .pseudonym_epoch(e.day.prev(), lookback, false)
                        .unwrap();
                    let want = before.visitor(client.as_bytes(), agent.as_bytes());
                    assert_eq!(
                        e.link,
                        Some(want),
                        "{client} on day {d}, lookback {lookback:?}"
                    );
                    if want == e.visitor {
                        same += 1;
                    } else {
                        other += 1;
                    }
                }
            }
            match lookback {
                None => assert_eq!((same, other), (0, 140)),
                // Epochs of 30 days from 2026-10-04: 70 days from 2026-11-24 hold three
                // first days (2026-12-03, 2027-01-02, 2027-02-01), two pageviews each.
                Some(_) => assert_eq!((same, other), (134, 6)),
            }
        }
    }

    /// Pseudonyms and buckets from the cache of recent clients are those hashed afresh: many
    /// more clients and user agents than slots (so slots are overwritten), pageviews in a
    /// scrambled order over two days, one address under several user agents, IPv6, an IPv4-mapped IPv6 address (the
    /// same client as its IPv4 form) and host names (never cached).
    #[test]
    fn cached_pseudonyms_equal_fresh_hashes() {
        let settings = Settings {
            buckets: 37,
            ..Settings::defaults(&["example.ru"], jiff::tz::TimeZone::UTC)
        };
        let keys = Arc::new(KeySet::Single(keys::MasterKey::from_bytes([3; 32])));
        let mut ps = Pseudonymiser::new(keys, settings);
        let mut clients: Vec<String> = (0..6000)
            .map(|i| format!("198.51.{}.{}", i / 256, i % 256))
            .collect();
        clients.extend((0..200).map(|i| format!("2001:db8::{i:x}")));
        clients.extend((0..50).map(|i| format!("host-{i}.example.ru")));
        clients.push("::ffff:198.51.0.7".to_string());
        // Three common agents and many rare ones (more than the agent digests' slots).
        let mut agents: Vec<String> = [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/120.0",
            "Mozilla/5.0 (Linux; Android 14) Chrome/120.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) Safari/605.1.15",
        ]
        .map(String::from)
        .to_vec();
        agents.extend(
            (0..2 * AGENT_DIGEST_SLOTS).map(|i| format!("Mozilla/5.0 (X11; Linux) Rare/{i}")),
        );
        let day0 = 1_795_478_400; // 2026-11-24T00:00:00Z
        let mut next = crate::test_numbers(0x2545_f491_4f6c_dd1du64);
        let mut checked = 0;
        for _ in 0..60_000 {
            let x = next();
            // Mostly recent clients (cache hits), sometimes any client (misses).
            let i = if x.is_multiple_of(4) {
                (x >> 8) as usize
            } else {
                (x >> 8) as usize % 300
            };
            let client = &clients[i % clients.len()];
            let agent = match (x >> 32) % 8 {
                0 => &agents[(x >> 35) as usize % agents.len()],
                k => &agents[k as usize % 3],
            };
            let ts = day0 + 7200 + (x >> 40) as i64 % 2 * 86_400;
            let e = pageview(&mut ps, client, agent, ts);
            let (_, key) = ps.keys().pseudonym_epoch(e.day, None, false).unwrap();
            assert_eq!(e.visitor, key.visitor(client.as_bytes(), agent.as_bytes()));
            assert_eq!(e.bucket, ps.bucket(client.as_bytes(), agent.as_bytes()));
            checked += 1;
        }
        assert_eq!(checked, 60_000);
        // One client, one cache key.
        assert_eq!(
            keys::canonical_client(b"::ffff:198.51.0.7"),
            keys::canonical_client(b"198.51.0.7")
        );
    }

    /// The path cache stays within its budget however many distinct paths come, and a path's
    /// class (normalised text, asset or not) is the same from the cache, after a clear, and
    /// when computed afresh.
    #[test]
    fn path_cache_keeps_its_budget_and_its_answers() {
        let settings = Settings::defaults(&["example.ru"], jiff::tz::TimeZone::UTC);
        let keys = Arc::new(KeySet::Single(keys::MasterKey::from_bytes([3; 32])));
        let mut ps = Pseudonymiser::new(keys, settings);
        let class = |ps: &mut Pseudonymiser, raw: &[u8]| {
            let at = ps.path(raw);
            ps.paths[at].as_ref().map(|c| (c.path.to_string(), c.asset))
        };
        let cyrillic = "/%D0%BA%D0%B0%D1%82%D0%B0%D0%BB%D0%BE%D0%B3/".as_bytes();
        let want_page = Some(("/каталог/".to_string(), false));
        let want_asset = Some(("/static/app.JS".to_string(), true));
        assert_eq!(class(&mut ps, cyrillic), want_page);
        assert_eq!(class(&mut ps, b"/static/app.JS"), want_asset);
        let long = "x".repeat(2000);
        for i in 0..20_000 {
            let raw = format!("/item/{i}/{long}");
            assert_eq!(class(&mut ps, raw.as_bytes()).unwrap().0, raw);
            assert!(ps.path_bytes <= PATH_CACHE_BYTES);
        }
        assert!(ps.paths.len() < 20_000, "the cache was cleared on the way");
        assert_eq!(class(&mut ps, cyrillic), want_page);
        assert_eq!(class(&mut ps, b"/static/app.JS"), want_asset);
        assert_eq!(class(&mut ps, cyrillic), want_page);
    }
}

#[cfg(test)]
mod proxy_tests {
    use super::client_address;

    #[test]
    fn client_behind_trusted_proxies_is_the_rightmost_untrusted_hop() {
        let trusted: Vec<ipnet::IpNet> = ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let xff = Some(&b"198.51.100.1, 203.0.113.9, 10.1.2.3"[..]);
        // From a trusted proxy: skip trusted hops from the right.
        assert_eq!(client_address(b"10.0.0.1", xff, &trusted), b"203.0.113.9");
        // A spoofed left-most entry is never reached while an untrusted hop stands right of it.
        // From an untrusted peer the header is not believed at all.
        assert_eq!(client_address(b"192.0.2.7", xff, &trusted), b"192.0.2.7");
        // No list: the connection's address, whatever the header.
        assert_eq!(client_address(b"10.0.0.1", xff, &[]), b"10.0.0.1");
        // IPv6 proxies, and a chain of only trusted hops.
        assert_eq!(
            client_address(
                b"2001:db8::1",
                Some(b"2a02:6b8::feed, 2001:db8::2"),
                &trusted
            ),
            b"2a02:6b8::feed"
        );
        assert_eq!(
            client_address(b"10.0.0.1", Some(b"10.9.9.9"), &trusted),
            b"10.0.0.1"
        );
        // Garbage in the chain: stop believing it.
        assert_eq!(
            client_address(b"10.0.0.1", Some(b"evil, 10.0.0.5"), &trusted),
            b"10.0.0.1"
        );
    }
}
