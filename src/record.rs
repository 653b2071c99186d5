//! The run record (`OUT/_runs/<run id>.json`): the record of processing that 152-FZ's
//! depersonalisation rules ask for. It names what was read, what was rejected and filtered
//! and why, what the privacy rules suppressed, which key epochs were used (by public id) and
//! every file published with its BLAKE3 hash. It never holds an identifier of a person: no
//! address, user agent, URL, pseudonym or line text, only counts, line numbers and names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::disclose::DisclosureCounts;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunRecord {
    pub logveil_version: String,
    pub run_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub pipeline: PipelineInfo,
    /// The days this run released (`YYYY-MM-DD`), or was asked to.
    pub dates: Vec<DateInfo>,
    pub inputs: Vec<InputInfo>,
    pub lines: LineCounts,
    /// Placed lines that are not pageviews, by filter rule.
    pub filtered: BTreeMap<String, u64>,
    pub pageviews: u64,
    pub visits: u64,
    pub disclosure: BTreeMap<String, DisclosureCountsRecord>,
    /// Public ids of the key epochs used: `derive_key(fingerprint context, master ‖ day)`,
    /// truncated; they cannot be used to recompute a pseudonym.
    pub key_epochs: BTreeMap<String, String>,
    pub key_mode: String,
    /// What was read, dropped and derived: the depersonalisation actions of this run.
    #[serde(default)]
    pub processing: Processing,
    /// Differential privacy: settings, per-table ε, sensitivities, noise scales, thresholds,
    /// and the ε this run charged to the ledger. Absent when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential_privacy: Option<serde_json::Value>,
    /// Returning visitors: lookback, epochs, the visit-log days written and expired, and later
    /// days made stale by re-running an earlier one. Absent when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returning_visitors: Option<serde_json::Value>,
    /// Goals and funnels as defined, and the ad-spend file used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversions: Option<serde_json::Value>,
    pub notes: Vec<String>,
    pub files: Vec<FileInfo>,
}

/// The depersonalisation applied by every run (152-FZ asks that each action be recorded).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Processing {
    pub fields_read: Vec<String>,
    pub dropped_at_parse: Vec<String>,
    pub derived: Vec<String>,
    pub retention: Vec<String>,
}

impl Default for Processing {
    fn default() -> Self {
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Processing {
            fields_read: v(&[
                "client address (%h)",
                "timestamp (%t)",
                "request line (%r)",
                "status (%>s)",
                "response size (%b)",
                "referrer",
                "user agent",
                "virtual host (vhost formats)",
            ]),
            dropped_at_parse: v(&[
                "identd and user name (%l, %u): skipped unread",
                "client address: used only as input to the keyed visitor pseudonym",
                "user agent: used only for the pseudonym and the browser/OS/device class",
                "query string and fragment: only the campaign (UTM) parameters read; click-id values never kept",
                "referrer path and query: only the host kept",
                "response size: not used",
                "X-Forwarded-For (JSON formats): only the one client address chosen by trusted_proxies is used, as the pseudonym's input",
            ]),
            derived: v(&[
                "visitor pseudonym: keyed BLAKE3 under a per-day key, 64 bits, in memory only",
                "path: normalised, identifier-shaped segments replaced by placeholders",
                "referrer host: registrable domain; channel from the campaign medium, click-id kind and referrer kind",
                "browser family, OS family, device type (uap-core, crawler-user-agents, device rules)",
                "local day and hour in the pipeline's time zone",
            ]),
            retention: v(&[
                "raw lines: never stored by logveil",
                "pseudonyms and events: process memory for the run only",
                "outputs: aggregate tables under the k rule (and noise when differential privacy is on)",
                "key files: until deleted (`logveil key destroy` for key rings)",
            ]),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineInfo {
    pub name: String,
    pub origin: String,
    pub blake3: String,
    pub site: String,
    pub time_zone: String,
    pub k: u32,
    pub session_timeout_s: i64,
    pub max_visit_s: i64,
    /// Language of `report.html` (`[report]` in the pipeline), and the default of
    /// `logveil report`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_lang: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DateInfo {
    pub date: String,
    /// The inputs do not cover the whole span that day's visits can occupy (decision 8).
    pub partial: bool,
    /// Whether this run replaced the day's published files.
    pub published: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InputInfo {
    pub path: String,
    pub size_bytes: u64,
    pub decompressed_bytes: u64,
    pub gzip: bool,
    /// `none`, `gzip`, `zstd` or `bzip2` (by magic bytes).
    #[serde(default)]
    pub compression: String,
    /// The format its lines were read in (`format = "auto"` chooses per input).
    #[serde(default)]
    pub format: String,
    pub lines: u64,
    /// `true` when an earlier input had identical content: its lines were counted once.
    pub duplicate_of: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LineCounts {
    pub read: u64,
    pub parsed: u64,
    pub rejected: u64,
    /// Rejected lines by reason, with where they are (at most 100 line numbers per file and
    /// reason). Never their text.
    pub rejected_by_reason: BTreeMap<String, RejectInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RejectInfo {
    pub count: u64,
    /// file path → first line numbers.
    pub lines: BTreeMap<String, Vec<u64>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DisclosureCountsRecord {
    pub rows_released: u64,
    pub rows_suppressed: u64,
    pub rows_folded: u64,
    pub other_rows: u64,
    pub rows_dropped: u64,
}

impl From<&DisclosureCounts> for DisclosureCountsRecord {
    fn from(c: &DisclosureCounts) -> Self {
        DisclosureCountsRecord {
            rows_released: c.rows_released,
            rows_suppressed: c.rows_suppressed,
            rows_folded: c.rows_folded,
            other_rows: c.other_rows,
            rows_dropped: c.rows_dropped,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileInfo {
    /// Relative to the output directory.
    pub path: String,
    pub rows: u64,
    pub blake3: String,
}
