//! [`Event`]s → a Polars frame, and the cross-midnight linking of visitors.
//!
//! Columns are built directly from the events, one vector per column, so the frame costs
//! about as much memory as the events themselves. Every text column of the sessions and
//! tables ([`ID_COLUMNS`]: path, referrer host, browser, OS, channel, device type, the utm
//! values, and the goal, model, funnel, loyalty and period names made later) is held as ids
//! into the bucket's [`Strings`]: every sort, window and group-by then compares and hashes a
//! `u32` instead of encoding text, the row-visitor frames stored for disclosure are numbers
//! only, and the text comes back only in the tables' small results ([`Strings::decode`]).

use polars::prelude::*;

use crate::pseudonymise::Event;

/// Columns held as ids into the bucket's [`Strings`], one id space for all of them.
pub const ID_COLUMNS: [&str; 16] = [
    "path",
    "referrer_host",
    "browser",
    "os",
    "channel",
    "device_type",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "goal",
    "model",
    "funnel",
    "dimension",
    "bucket",
    "period",
    "period_start",
];

/// The distinct texts of a bucket's [`ID_COLUMNS`], numbered in the order first met.
#[derive(Default)]
pub struct Dictionary {
    ids: foldhash::HashMap<Box<[u8]>, u32>,
    values: Vec<Box<str>>,
}

impl Dictionary {
    /// The id of `text`, numbering it if it is new.
    pub fn id(&mut self, text: &str) -> u32 {
        match self.ids.get(text.as_bytes()) {
            Some(&id) => id,
            None => self.add(text),
        }
    }

    /// The id of UTF-8 `bytes` (checked only when they are new).
    pub fn id_of_utf8(&mut self, bytes: &[u8]) -> Result<u32, std::str::Utf8Error> {
        match self.ids.get(bytes) {
            Some(&id) => Ok(id),
            None => Ok(self.add(std::str::from_utf8(bytes)?)),
        }
    }

    fn add(&mut self, text: &str) -> u32 {
        let id = u32::try_from(self.values.len())
            .ok()
            .filter(|&id| id != NO_ID)
            .expect("fewer than 2^32 - 1 texts in a bucket");
        self.values.push(text.into());
        self.ids.insert(text.as_bytes().into(), id);
        id
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A bucket's texts: its [`Dictionary`], which still numbers the texts made after the event
/// frame (goal, model, loyalty and period names), and the Polars column that turns ids back
/// into text, made when first needed and again only after a new text.
#[derive(Default)]
pub struct Strings {
    dictionary: Dictionary,
    texts: std::sync::OnceLock<Texts>,
}

impl Strings {
    fn new(dictionary: Dictionary) -> Strings {
        Strings {
            dictionary,
            texts: Default::default(),
        }
    }

    /// The id of `text`, numbering it if it is new.
    pub fn id(&mut self, text: &str) -> u32 {
        let known = self.dictionary.len();
        let id = self.dictionary.id(text);
        if self.dictionary.len() != known {
            self.texts.take();
        }
        id
    }

    /// The text of `id`, `None` for an id this bucket never gave.
    pub fn text(&self, id: u32) -> Option<&str> {
        self.dictionary.values.get(id as usize).map(|s| &**s)
    }

    /// The texts in id order, as [`Texts::decode`] uses them.
    pub fn texts(&self) -> &Texts {
        self.texts
            .get_or_init(|| Texts(self.dictionary.values.iter().map(|s| Some(&**s)).collect()))
    }

    /// The texts as a one-column frame (`text`, in id order), to store beside frames that
    /// keep their ids.
    pub fn to_frame(&self) -> DataFrame {
        self.texts().to_frame()
    }

    /// `frame` with each of its [`ID_COLUMNS`] (ids, null for none) replaced by the text
    /// the ids stand for; other columns untouched.
    pub fn decode(&self, frame: DataFrame) -> PolarsResult<DataFrame> {
        self.texts().decode(frame)
    }
}

/// A bucket's texts in id order, fixed: what decodes its frames.
#[derive(Clone, Default)]
pub struct Texts(StringChunked);

impl Texts {
    /// The texts as a one-column frame, `text`, in id order.
    pub fn to_frame(&self) -> DataFrame {
        self.0
            .clone()
            .with_name("text".into())
            .into_series()
            .into_frame()
    }

    /// The texts [`Self::to_frame`] stored.
    pub fn from_frame(frame: &DataFrame) -> PolarsResult<Texts> {
        Ok(Texts(frame.column("text")?.str()?.clone()))
    }

    /// `frame` with each of its [`ID_COLUMNS`] (ids, null for none) replaced by the text
    /// the ids stand for; other columns untouched.
    pub fn decode(&self, mut frame: DataFrame) -> PolarsResult<DataFrame> {
        for name in ID_COLUMNS {
            let Ok(ids) = frame.column(name) else {
                continue;
            };
            let text = self.0.take(ids.idx()?)?.with_name(name.into());
            frame.replace(name, text.into_column())?;
        }
        Ok(frame)
    }

    /// The inverse of [`Self::decode`]: `frame` with each of its [`ID_COLUMNS`] (text, null
    /// for none) replaced by the id of its text in this bucket. A text the bucket never gave
    /// gets [`NO_ID`], which no row has, so it matches nothing.
    pub fn encode(&self, frame: DataFrame) -> PolarsResult<DataFrame> {
        self.encode_with(&TextIds::new(), frame)
    }

    /// [`Self::encode`] with the text -> id map in `ids`, made on first need and kept there:
    /// the frames of several tables asked of one bucket share one map.
    pub fn encode_with<'t>(
        &'t self,
        ids: &TextIds<'t>,
        mut frame: DataFrame,
    ) -> PolarsResult<DataFrame> {
        for name in ID_COLUMNS {
            let Ok(column) = frame.column(name) else {
                continue;
            };
            let ids = ids.get_or_init(|| {
                let numbered = self.0.iter().enumerate();
                numbered.filter_map(|(i, t)| Some((t?, i as u32))).collect()
            });
            let encoded: UInt32Chunked = column
                .str()?
                .iter()
                .map(|t| t.map(|t| ids.get(t).copied().unwrap_or(NO_ID)))
                .collect();
            frame.replace(name, encoded.with_name(name.into()).into_column())?;
        }
        Ok(frame)
    }
}

/// A bucket's text -> id map for [`Texts::encode_with`], made when first needed.
pub type TextIds<'t> = std::cell::OnceCell<foldhash::HashMap<&'t str, u32>>;

/// The id [`Texts::encode`] gives a text its bucket does not have: a bucket numbers fewer
/// texts than this.
pub const NO_ID: u32 = u32::MAX;

/// Whether `frame` has any of the [`ID_COLUMNS`].
pub fn has_ids(frame: &DataFrame) -> bool {
    ID_COLUMNS.iter().any(|c| frame.column(c).is_ok())
}

/// Some of a bucket's stored row-visitor frames, their ids kept, and the texts the ids stand
/// for (read once for all of them, and only when one has ids; empty otherwise). The k rule's
/// unions are counted on the ids ([`super::union_visitors`]): the rows asked for are turned into
/// the bucket's ids ([`Texts::encode`]), not the frames into text.
pub struct RowVisitorFrames {
    pub frames: Vec<Option<DataFrame>>,
    pub texts: Texts,
}

impl RowVisitorFrames {
    /// `frames` as stored, with the texts `texts` reads (the bucket's [`Strings::to_frame`]).
    pub fn new(
        frames: Vec<Option<DataFrame>>,
        texts: impl FnOnce() -> std::io::Result<Option<DataFrame>>,
    ) -> std::io::Result<RowVisitorFrames> {
        if !frames.iter().flatten().any(has_ids) {
            return Ok(RowVisitorFrames {
                frames,
                texts: Texts::default(),
            });
        }
        let texts = texts()?.ok_or_else(|| {
            std::io::Error::other("a bucket's texts are missing beside its row-visitor frames")
        })?;
        let texts = Texts::from_frame(&texts).map_err(std::io::Error::other)?;
        Ok(RowVisitorFrames { frames, texts })
    }
}

/// A bucket's event frame and the texts its id columns stand for.
pub struct EventFrame {
    pub frame: DataFrame,
    pub strings: Strings,
}

/// Column builders for a batch of events. The spill's decoder fills them directly.
#[derive(Default)]
pub struct EventColumns {
    pub(super) seq: Vec<u64>,
    pub(super) ts: Vec<i64>,
    pub(super) day: Vec<i32>,
    pub(super) hour: Vec<i32>,
    pub(super) visitor: Vec<u64>,
    pub(super) link: Vec<Option<u64>>,
    pub(super) path: Vec<u32>,
    pub(super) referrer_host: Vec<Option<u32>>,
    pub(super) channel: Vec<u32>,
    pub(super) device_type: Vec<u32>,
    pub(super) browser: Vec<u32>,
    pub(super) os: Vec<u32>,
    pub(super) utm_source: Vec<Option<u32>>,
    pub(super) utm_medium: Vec<Option<u32>>,
    pub(super) utm_campaign: Vec<Option<u32>>,
    pub(super) steps: Vec<u64>,
    pub(super) strings: Dictionary,
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
        self.path.push(self.strings.id(&e.path));
        let referrer_host = e.referrer_host.map(|h| self.strings.id(&h));
        self.referrer_host.push(referrer_host);
        self.channel.push(self.strings.id(e.channel));
        self.device_type.push(self.strings.id(e.device_type));
        self.browser.push(self.strings.id(&e.browser));
        self.os.push(self.strings.id(&e.os));
        for (column, value) in [
            (&mut self.utm_source, &e.utm_source),
            (&mut self.utm_medium, &e.utm_medium),
            (&mut self.utm_campaign, &e.utm_campaign),
        ] {
            column.push(value.as_ref().map(|v| self.strings.id(v)));
        }
        self.steps.push(e.steps);
    }

    /// The frame the aggregate queries run on, in session order: by `session_key`, time and
    /// input position (`seq`, unique, so the order is total). `session_key` links one client's
    /// events across a day boundary (see [`link_sessions`]); `visitor` stays the day's
    /// pseudonym. Sorted here, one tuple per event, and every column gathered once while it is
    /// built: Polars' sort of the frame by three columns (row-encoded) and its gather of all
    /// of them cost twice as much.
    pub fn into_frame(self) -> PolarsResult<EventFrame> {
        let session_key = link_sessions(&self.day, &self.visitor, &self.link);
        let campaign_tag = campaign_tags(&self);
        let height = self.ts.len();
        let order = session_order(&session_key, &self.ts, &self.seq);
        let frame = DataFrame::new(
            height,
            vec![
                Column::new("seq".into(), gather(&self.seq, &order)),
                Column::new("ts".into(), gather(&self.ts, &order)),
                Column::new("day".into(), gather(&self.day, &order)),
                Column::new("hour".into(), gather(&self.hour, &order)),
                Column::new("visitor".into(), gather(&self.visitor, &order)),
                Column::new("session_key".into(), gather(&session_key, &order)),
                Column::new("path".into(), gather(&self.path, &order)),
                gather_optional::<UInt32Type>("referrer_host", &self.referrer_host, &order),
                Column::new("channel".into(), gather(&self.channel, &order)),
                Column::new("device_type".into(), gather(&self.device_type, &order)),
                Column::new("browser".into(), gather(&self.browser, &order)),
                Column::new("os".into(), gather(&self.os, &order)),
                gather_optional::<UInt32Type>("utm_source", &self.utm_source, &order),
                gather_optional::<UInt32Type>("utm_medium", &self.utm_medium, &order),
                gather_optional::<UInt32Type>("utm_campaign", &self.utm_campaign, &order),
                gather_optional::<UInt64Type>("campaign_tag", &campaign_tag, &order),
                Column::new("steps".into(), gather(&self.steps, &order)),
            ],
        )?;
        Ok(EventFrame {
            frame,
            strings: Strings::new(self.strings),
        })
    }
}

/// The positions of the events in session order: by session key, time and input position.
fn session_order(session_key: &[u64], ts: &[i64], seq: &[u64]) -> Vec<u32> {
    let mut keyed: Vec<(u64, i64, u64, u32)> = (0..ts.len())
        .map(|i| (session_key[i], ts[i], seq[i], i as u32))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(.., i)| i).collect()
}

fn gather<T: Copy>(values: &[T], order: &[u32]) -> Vec<T> {
    order.iter().map(|&i| values[i as usize]).collect()
}

/// [`gather`] of optional values, as a column built from its values and a validity bitmap:
/// built from the options themselves, Polars pushed them one at a time, which was a fifth
/// of this stage's time (`perf`, the 5 M-line benchmark).
fn gather_optional<T: PolarsNumericType>(
    name: &str,
    values: &[Option<T::Native>],
    order: &[u32],
) -> Column {
    let valid: BooleanChunked = order
        .iter()
        .map(|&i| values[i as usize].is_some())
        .collect();
    let bitmap = valid.downcast_iter().next().map(|a| a.values().clone());
    let values: Vec<T::Native> = order
        .iter()
        .map(|&i| values[i as usize].unwrap_or_default())
        .collect();
    ChunkedArray::<T>::from_vec_validity(name.into(), values, bitmap).into_column()
}

/// One key per client for sessionisation, joining a client's pseudonym of day D to its
/// pseudonym of day D−1 when an early event of D carries (as `link`) a D−1 pseudonym that was
/// seen on D−1: the batch form of Plausible's "check yesterday's salt" (decision 2). Chains
/// over several days resolve to the earliest pseudonym. The keys live only in memory.
pub fn link_sessions(day: &[i32], visitor: &[u64], link: &[Option<u64>]) -> Vec<u64> {
    // The (day before, pseudonym) pairs that early events carry: few, so the bucket's events
    // are checked against them, not all put in a set.
    let wanted: foldhash::HashSet<(i32, u64)> = (0..day.len())
        .filter_map(|i| link[i].map(|l| (day[i] - 1, l)))
        .collect();
    if wanted.is_empty() {
        return visitor.to_vec();
    }
    let seen: foldhash::HashSet<(i32, u64)> = (0..day.len())
        .map(|i| (day[i], visitor[i]))
        .filter(|k| wanted.contains(k))
        .collect();
    // parent[(day, visitor)] = (day - 1, pseudonym on that day)
    let mut parent: foldhash::HashMap<(i32, u64), (i32, u64)> = Default::default();
    for i in 0..day.len() {
        if let Some(l) = link[i]
            && seen.contains(&(day[i] - 1, l))
        {
            parent.insert((day[i], visitor[i]), (day[i] - 1, l));
        }
    }
    if parent.is_empty() {
        return visitor.to_vec();
    }
    let root = |mut node: (i32, u64)| {
        while let Some(&up) = parent.get(&node) {
            node = up;
        }
        node.1
    };
    (0..day.len()).map(|i| root((day[i], visitor[i]))).collect()
}

/// A number naming each event's campaign (source, medium, campaign), null when untagged: what
/// decision 9 compares to split visits, within one bucket (a client's events are all in one).
/// The bucket's campaigns numbered from 1 in the order first met: the visit cutter's running
/// tag uses 0 for "no campaign yet", so a campaign numbered 0 would not split a visit that
/// began untagged, and whether it did would hang on which campaign the bucket met first
/// (that is, on the order the shard's writers' files were read).
fn campaign_tags(c: &EventColumns) -> Vec<Option<u64>> {
    let mut numbers: foldhash::HashMap<[Option<u32>; 3], u64> = Default::default();
    (0..c.ts.len())
        .map(|i| {
            let parts = [c.utm_source[i], c.utm_medium[i], c.utm_campaign[i]];
            if parts.iter().all(Option::is_none) {
                return None;
            }
            let next = numbers.len() as u64 + 1;
            Some(*numbers.entry(parts).or_insert(next))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts are numbered once, in the order first met, in one id space for every id
    /// column; decoding gives back the text (Cyrillic included) and keeps nulls null.
    #[test]
    fn id_columns_decode_to_their_texts() {
        let mut d = Dictionary::default();
        assert_eq!(d.id("/каталог"), 0);
        assert_eq!(d.id_of_utf8("yandex.ru".as_bytes()).unwrap(), 1);
        assert_eq!(d.id_of_utf8("/каталог".as_bytes()).unwrap(), 0);
        assert_eq!(d.id("Chrome"), 2);
        assert!(d.id_of_utf8(&[0xff, 0xfe]).is_err(), "not UTF-8");
        assert_eq!(d.len(), 3);
        let frame = df!(
            "day" => [1i32, 1, 2],
            "path" => [0u32, 0, 1],
            "referrer_host" => [Some(1u32), None, Some(0)],
            "browser" => [2u32, 2, 2],
            "hour" => [3i32, 4, 5],
        )
        .unwrap();
        let text = Strings::new(d).decode(frame).unwrap();
        let want = df!(
            "day" => [1i32, 1, 2],
            "path" => ["/каталог", "/каталог", "yandex.ru"],
            "referrer_host" => [Some("yandex.ru"), None, Some("/каталог")],
            "browser" => ["Chrome", "Chrome", "Chrome"],
            "hour" => [3i32, 4, 5],
        )
        .unwrap();
        assert_eq!(text, want);
    }

    /// Texts numbered after a frame was decoded (derive's goal and period names) decode too:
    /// the column form is made again after a new text, not kept stale.
    #[test]
    fn strings_take_new_texts_after_decoding() {
        let mut strings = Strings::default();
        let path = strings.id("/a");
        let frame = df!("path" => [path]).unwrap();
        assert_eq!(
            strings.decode(frame).unwrap(),
            df!("path" => ["/a"]).unwrap()
        );
        let goal = strings.id("покупка");
        assert_eq!(strings.id("/a"), path);
        let frame = df!("goal" => [goal], "path" => [path]).unwrap();
        let want = df!("goal" => ["покупка"], "path" => ["/a"]).unwrap();
        assert_eq!(strings.decode(frame).unwrap(), want);
        assert_eq!(strings.text(goal), Some("покупка"));
        assert_eq!(strings.text(goal + 1), None);
        assert_eq!(strings.to_frame().height(), 2);
    }

    /// Stored frames come with the texts stored beside them, read once and only when a frame
    /// has ids; texts missing where they are needed are an error. Rows asked for by text get
    /// the bucket's ids (a text the bucket lacks: [`NO_ID`], nulls stay null), and decoding
    /// gives the text back.
    #[test]
    fn stored_frames_come_with_their_texts_and_rows_are_asked_for_by_id() {
        let mut d = Dictionary::default();
        d.id("/a");
        d.id("/б");
        let stored = Texts::from_frame(&Strings::new(d).to_frame()).unwrap();
        let frame = df!("day" => [3i32, 3], "path" => [1u32, 0], "visitor" => [7u64, 8]).unwrap();
        let no_ids = df!("day" => [3i32], "hour" => [5i32], "visitor" => [7u64]).unwrap();
        let mut reads = 0;
        let read = RowVisitorFrames::new(
            vec![Some(frame.clone()), None, Some(no_ids.clone())],
            || {
                reads += 1;
                Ok(Some(stored.to_frame()))
            },
        )
        .unwrap();
        assert_eq!(reads, 1);
        assert_eq!(
            read.frames,
            vec![Some(frame.clone()), None, Some(no_ids.clone())]
        );
        let want = df!("day" => [3i32, 3], "path" => ["/б", "/a"], "visitor" => [7u64, 8]).unwrap();
        assert_eq!(read.texts.decode(frame.clone()).unwrap(), want);
        let asked = df!("day" => [3i32, 3, 4], "path" => [Some("/a"), None, Some("/в")]).unwrap();
        let want = df!("day" => [3i32, 3, 4], "path" => [Some(0u32), None, Some(NO_ID)]).unwrap();
        assert_eq!(read.texts.encode(asked.clone()).unwrap(), want);
        // One map for several frames: made by the first that has ids, used by the next.
        let ids = TextIds::new();
        let hours = df!("day" => [3i32], "hour" => [5i32]).unwrap();
        assert_eq!(read.texts.encode_with(&ids, hours.clone()).unwrap(), hours);
        assert!(ids.get().is_none());
        assert_eq!(read.texts.encode_with(&ids, asked.clone()).unwrap(), want);
        assert_eq!(ids.get().map(|m| m.len()), Some(2)); // "/a" and "/б"
        assert_eq!(read.texts.encode_with(&ids, asked).unwrap(), want);
        let unread = || -> std::io::Result<Option<DataFrame>> { panic!("texts read") };
        let read = RowVisitorFrames::new(vec![Some(no_ids.clone()), None], unread).unwrap();
        assert_eq!(read.frames, vec![Some(no_ids), None]);
        assert!(RowVisitorFrames::new(vec![Some(frame)], || Ok(None)).is_err());
    }

    /// The event frame comes in session order, as Polars sorts it (the second method): by
    /// session key (a client linked across midnight under its earlier pseudonym), time, and
    /// input position for pageviews in the same second; every column moved with its row.
    #[test]
    fn event_frame_is_in_session_order() {
        use crate::pseudonymise::Event;
        let mut cols = EventColumns::default();
        let midnight = 20_000 * 86_400;
        // (seq, ts, visitor, link, path), in an order the spill might give.
        let events = [
            (7, midnight + 30, 9, Some(5), "/b"), // day 2, linked to visitor 5 of day 1
            (3, midnight - 60, 5, None, "/a"),
            (9, midnight + 30, 9, None, "/c"), // same second, later in the input
            (1, midnight - 10, 4, None, "/x"),
            (4, midnight - 90, 5, None, "/z"),
            (2, midnight - 10, 4, None, "/y"),
        ];
        for (seq, ts, visitor, link, path) in events {
            let mut e = Event::for_test(ts, visitor, path);
            e.link = link;
            cols.push(seq, e);
        }
        let EventFrame { frame, strings } = cols.into_frame().unwrap();
        let by_polars = frame
            .reverse()
            .sort(["session_key", "ts", "seq"], Default::default())
            .unwrap();
        assert_eq!(frame, by_polars);
        let frame = strings.decode(frame).unwrap();
        let paths: Vec<Option<&str>> = frame
            .column("path")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .collect();
        let want = ["/x", "/y", "/z", "/a", "/b", "/c"];
        assert_eq!(paths, want.map(Some));
        let keys: Vec<u64> = frame
            .column("session_key")
            .unwrap()
            .u64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(keys, [4, 4, 5, 5, 5, 5]);
    }

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
