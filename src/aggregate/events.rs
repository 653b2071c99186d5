//! [`Event`]s → a Polars frame, and the cross-midnight linking of visitors.
//!
//! Columns are built directly from the events, one vector per column, so the frame costs
//! about as much memory as the events themselves.

use std::collections::HashMap;

use polars::prelude::*;

use crate::pseudonymise::Event;

/// Column builders for a batch of events.
#[derive(Default)]
pub struct EventColumns {
    seq: Vec<u64>,
    ts: Vec<i64>,
    day: Vec<i32>,
    hour: Vec<i32>,
    visitor: Vec<u64>,
    link: Vec<Option<u64>>,
    path: Vec<std::sync::Arc<str>>,
    referrer_host: Vec<Option<std::sync::Arc<str>>>,
    channel: Vec<&'static str>,
    device_type: Vec<&'static str>,
    browser: Vec<std::sync::Arc<str>>,
    os: Vec<std::sync::Arc<str>>,
    utm_source: Vec<Option<std::sync::Arc<str>>>,
    utm_medium: Vec<Option<std::sync::Arc<str>>>,
    utm_campaign: Vec<Option<std::sync::Arc<str>>>,
    steps: Vec<u64>,
}

impl EventColumns {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// The first and last local day of the events.
    pub fn day_range(&self) -> Option<(crate::day::Day, crate::day::Day)> {
        let min = self.day.iter().min()?;
        let max = self.day.iter().max()?;
        Some((crate::day::Day(*min), crate::day::Day(*max)))
    }

    /// Appends one event; `seq` is its position in the input (files in sorted order, then
    /// line order), which breaks ties between pageviews of one visitor in the same second
    /// the same way whatever the key.
    pub fn push(&mut self, seq: u64, e: Event) {
        self.seq.push(seq);
        self.ts.push(e.ts);
        self.day.push(e.day.0);
        self.hour.push(i32::from(e.hour));
        self.visitor.push(e.visitor);
        self.link.push(e.link);
        self.path.push(e.path);
        self.referrer_host.push(e.referrer_host);
        self.channel.push(e.channel);
        self.device_type.push(e.device_type);
        self.browser.push(e.browser);
        self.os.push(e.os);
        self.utm_source.push(e.utm_source);
        self.utm_medium.push(e.utm_medium);
        self.utm_campaign.push(e.utm_campaign);
        self.steps.push(e.steps);
    }

    pub fn append(&mut self, mut other: EventColumns) {
        self.seq.append(&mut other.seq);
        self.ts.append(&mut other.ts);
        self.day.append(&mut other.day);
        self.hour.append(&mut other.hour);
        self.visitor.append(&mut other.visitor);
        self.link.append(&mut other.link);
        self.path.append(&mut other.path);
        self.referrer_host.append(&mut other.referrer_host);
        self.channel.append(&mut other.channel);
        self.device_type.append(&mut other.device_type);
        self.browser.append(&mut other.browser);
        self.os.append(&mut other.os);
        self.utm_source.append(&mut other.utm_source);
        self.utm_medium.append(&mut other.utm_medium);
        self.utm_campaign.append(&mut other.utm_campaign);
        self.steps.append(&mut other.steps);
    }

    /// The frame the aggregate queries run on. `session_key` links one client's events
    /// across a day boundary (see [`link_sessions`]); `visitor` stays the day's pseudonym.
    pub fn into_frame(self) -> PolarsResult<DataFrame> {
        let session_key = link_sessions(&self.day, &self.visitor, &self.link);
        let campaign_tag = campaign_tags(&self);
        let height = self.ts.len();
        DataFrame::new(
            height,
            vec![
                Column::new("seq".into(), self.seq),
                Column::new("ts".into(), self.ts),
                Column::new("day".into(), self.day),
                Column::new("hour".into(), self.hour),
                Column::new("visitor".into(), self.visitor),
                Column::new("session_key".into(), session_key),
                Column::new("path".into(), strs(&self.path)),
                Column::new("referrer_host".into(), opt_strs(&self.referrer_host)),
                Column::new("channel".into(), self.channel),
                Column::new("device_type".into(), self.device_type),
                Column::new("browser".into(), strs(&self.browser)),
                Column::new("os".into(), strs(&self.os)),
                Column::new("utm_source".into(), opt_strs(&self.utm_source)),
                Column::new("utm_medium".into(), opt_strs(&self.utm_medium)),
                Column::new("utm_campaign".into(), opt_strs(&self.utm_campaign)),
                Column::new("campaign_tag".into(), campaign_tag),
                Column::new("steps".into(), self.steps),
            ],
        )
    }
}

/// One key per client for sessionisation, joining a client's pseudonym of day D to its
/// pseudonym of day D−1 when an early event of D carries (as `link`) a D−1 pseudonym that was
/// seen on D−1: the batch form of Plausible's "check yesterday's salt" (decision 2). Chains
/// over several days resolve to the earliest pseudonym. The keys live only in memory.
pub fn link_sessions(day: &[i32], visitor: &[u64], link: &[Option<u64>]) -> Vec<u64> {
    let seen: std::collections::HashSet<(i32, u64)> =
        day.iter().copied().zip(visitor.iter().copied()).collect();
    // parent[(day, visitor)] = (day - 1, pseudonym on that day)
    let mut parent: HashMap<(i32, u64), (i32, u64)> = HashMap::new();
    for i in 0..day.len() {
        if let Some(l) = link[i]
            && seen.contains(&(day[i] - 1, l))
        {
            parent.insert((day[i], visitor[i]), (day[i] - 1, l));
        }
    }
    let root = |mut node: (i32, u64)| {
        while let Some(&up) = parent.get(&node) {
            node = up;
        }
        node.1
    };
    (0..day.len()).map(|i| root((day[i], visitor[i]))).collect()
}

fn strs(v: &[std::sync::Arc<str>]) -> Vec<&str> {
    v.iter().map(|s| &**s).collect()
}

fn opt_strs(v: &[Option<std::sync::Arc<str>>]) -> Vec<Option<&str>> {
    v.iter().map(|s| s.as_deref()).collect()
}

/// A number naming each event's campaign (source, medium, campaign), null when untagged: what
/// decision 9 compares to split visits. A plain hash of public values, the same in every run.
fn campaign_tags(c: &EventColumns) -> Vec<Option<u64>> {
    (0..c.ts.len())
        .map(|i| {
            let parts = [&c.utm_source[i], &c.utm_medium[i], &c.utm_campaign[i]];
            if parts.iter().all(|p| p.is_none()) {
                return None;
            }
            let mut h = blake3::Hasher::new();
            for p in parts {
                let s = p.as_deref().unwrap_or("");
                h.update(&(s.len() as u32).to_le_bytes());
                h.update(s.as_bytes());
            }
            Some(u64::from_le_bytes(
                h.finalize().as_bytes()[..8].try_into().expect("8 bytes"),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_sessions_joins_days_transitively() {
        // Client A: pseudonyms 10 (day 0), 20 (day 1, linked to 10), 30 (day 2, linked to 20).
        // Client B: 99 on day 1 whose link 98 was never seen on day 0: stays itself.
        let day = [0, 1, 1, 2, 1];
        let visitor = [10, 20, 20, 30, 99];
        let link = [None, Some(10), None, Some(20), Some(98)];
        assert_eq!(
            link_sessions(&day, &visitor, &link),
            vec![10, 10, 10, 10, 99]
        );
    }
}
