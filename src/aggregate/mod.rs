//! Aggregate: pageview events → visits → additive partial tables, with Polars.
//!
//! Every statistic is a lazy Polars query over the visits and pageviews. Visits are cut by
//! one pass in Rust over the event frame, which comes sorted by client and time
//! ([`visit_starts`]; the same rules as the Polars query [`visit_plan`], which its tests
//! compare it with, at a fraction of the cost), and goal steps are matched the same way. The
//! tables this stage returns are *partial*: integer counts and sums only (no ratios, no k),
//! and `visitors` is a distinct count that stays additive across partials because one
//! client's events always land in one partial (decision 3). Merging partials is a sum by key;
//! the privacy rules are applied once, afterwards, by `disclose`.
//!
//! Counting rules (decision 8): everything of a visit belongs to the day and hour its first
//! pageview falls on, in the pipeline's time zone, and a visit's visitor is its pseudonym of
//! that day. A visit ends after `timeout` without a pageview and is cut at `max_visit`.

pub mod events;
pub mod frames;
pub mod spill;

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::day::Day;
use crate::goals::Goals;

/// Where disclosure settles rows together: a day and the values of the table's group keys
/// ([`TableName::group_keys`]; none for most tables).
pub type Unit = (Day, Vec<KeyValue>);

/// A row key value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyValue {
    Int(i64),
    Str(Option<String>),
}

/// A merged row: day, keys, additive measures (in [`TableName::measures`] order, `visitors`
/// first). What `disclose` works on: plain values, no Polars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub day: Day,
    pub keys: Vec<KeyValue>,
    pub measures: Vec<i64>,
}

impl Row {
    pub fn visitors(&self) -> i64 {
        self.measures[0]
    }
}

/// The released tables, their keys and their additive measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableName {
    Overview,
    Hourly,
    Pages,
    Referrers,
    Devices,
    Channels,
    Campaigns,
    CampaignGoals,
    Goals,
    Funnels,
    Attribution,
    Loyalty,
    Uniques,
}

pub const TABLES: [TableName; 13] = [
    TableName::Overview,
    TableName::Hourly,
    TableName::Pages,
    TableName::Referrers,
    TableName::Devices,
    TableName::Channels,
    TableName::Campaigns,
    TableName::CampaignGoals,
    TableName::Goals,
    TableName::Funnels,
    TableName::Attribution,
    TableName::Loyalty,
    TableName::Uniques,
];

/// Row keys holding integers (every other key is a string).
pub const INT_KEYS: [&str; 2] = ["hour", "step"];

/// Attribution models (docs/TABLES.md); the `attribution` table lists them in key order.
pub const MODELS: [&str; 5] = [
    "first_touch",
    "last_touch",
    "last_non_direct",
    "linear",
    "position_based",
];

impl TableName {
    pub fn as_str(self) -> &'static str {
        match self {
            TableName::Overview => "overview",
            TableName::Hourly => "hourly",
            TableName::Pages => "pages",
            TableName::Referrers => "referrers",
            TableName::Devices => "devices",
            TableName::Channels => "channels",
            TableName::Campaigns => "campaigns",
            TableName::CampaignGoals => "campaign_goals",
            TableName::Goals => "goals",
            TableName::Funnels => "funnels",
            TableName::Attribution => "attribution",
            TableName::Loyalty => "loyalty",
            TableName::Uniques => "uniques",
        }
    }

    /// Row keys (besides the date partition).
    pub fn keys(self) -> &'static [&'static str] {
        const CAMPAIGN: &[&str] = &["utm_source", "utm_medium", "utm_campaign", "channel"];
        match self {
            TableName::Overview => &[],
            TableName::Hourly => &["hour"],
            TableName::Pages => &["path"],
            TableName::Referrers => &["channel", "referrer_host"],
            TableName::Devices => &["device_type", "browser", "os"],
            TableName::Channels => &["channel"],
            TableName::Campaigns => CAMPAIGN,
            TableName::CampaignGoals => &[
                "goal",
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "channel",
            ],
            TableName::Goals => &["goal"],
            TableName::Funnels => &["funnel", "step"],
            TableName::Attribution => &[
                "model",
                "goal",
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "channel",
            ],
            TableName::Loyalty => &["dimension", "bucket"],
            TableName::Uniques => &["period", "period_start"],
        }
    }

    /// Additive measures, `visitors` first.
    pub fn measures(self) -> &'static [&'static str] {
        match self {
            TableName::Overview => &[
                "visitors",
                "visits",
                "pageviews",
                "bounces",
                "duration_s_sum",
            ],
            TableName::Hourly => &["visitors", "visits", "pageviews"],
            TableName::Pages => &["visitors", "pageviews", "entries", "exits"],
            TableName::Referrers | TableName::Devices => &["visitors", "visits"],
            TableName::Channels | TableName::Campaigns => &[
                "visitors",
                "visits",
                "pageviews",
                "bounces",
                "conversions",
                "converting_visits",
                "value",
            ],
            TableName::CampaignGoals | TableName::Goals => &["visitors", "conversions", "value"],
            TableName::Funnels | TableName::Loyalty => &["visitors", "visits"],
            TableName::Attribution => &["visitors", "conversions_micro", "value"],
            TableName::Uniques => &["visitors"],
        }
    }

    /// Whether every possible key is public (listed in full, suppressed rather than folded).
    pub fn public_keys(self) -> bool {
        matches!(
            self,
            TableName::Overview
                | TableName::Hourly
                | TableName::Channels
                | TableName::Goals
                | TableName::Funnels
                | TableName::Loyalty
                | TableName::Uniques
        )
    }

    /// Tables with public keys whose rows partition (or nest) by their first key: suppression
    /// is settled within each group, since each group's rows add up to a published total.
    pub fn suppression_groups(self) -> bool {
        matches!(
            self,
            TableName::Funnels | TableName::Loyalty | TableName::Uniques
        )
    }

    /// Leading keys that are public within a data-dependent table (a model, a goal): small
    /// rows are folded into one `(other)` row per value of these, never across them.
    pub fn fold_group_keys(self) -> usize {
        match self {
            TableName::CampaignGoals => 1,
            TableName::Attribution => 2,
            _ => 0,
        }
    }

    /// Leading keys that form the units disclosure settles on their own (with the day): the
    /// fold groups, or a public table's suppression group.
    pub fn group_keys(self) -> usize {
        if self.public_keys() {
            usize::from(self.suppression_groups())
        } else {
            self.fold_group_keys()
        }
    }

    /// The frame a table is counted from.
    fn source_frame(self) -> Source {
        match self {
            TableName::Pages => Source::Pageviews,
            TableName::CampaignGoals | TableName::Goals => Source::Conversions,
            TableName::Funnels => Source::FunnelSteps,
            TableName::Attribution => Source::Attribution,
            TableName::Loyalty => Source::Loyalty,
            TableName::Uniques => Source::Uniques,
            _ => Source::Visits,
        }
    }

    /// Whether a visitor's rows in this table are bounded per visit rather than per path
    /// (the differential-privacy row bound of [`per_visitor_plan`]).
    /// Whether the table's source frame holds at most one row per visitor and table row, so
    /// grouping it by row and visitor changes nothing: `uniques`, whose rows
    /// [`crate::visitors::derive`] makes once per client, day and period (2.7 M rows at 5 M
    /// lines, the largest source frame).
    fn distinct_per_visitor(self) -> bool {
        self == TableName::Uniques
    }

    fn bounded_by_visit(self) -> bool {
        self.source_frame() == Source::Visits && !self.keys().is_empty()
    }

    /// The measures except `visitors` over one visitor's rows of a table row (every one a
    /// sum or count, so the row's measure is the sum over its visitors): what
    /// [`per_visitor_plan`] aggregates.
    fn measure_exprs(self) -> Vec<Expr> {
        let m = |e: Expr, name: &str| e.cast(DataType::Int64).alias(name);
        let visits = m(len(), "visits");
        match self {
            TableName::Overview => vec![
                visits,
                m(col("pageviews").sum(), "pageviews"),
                m(col("pageviews").eq(lit(1u32)).sum(), "bounces"),
                m((col("end") - col("start")).sum(), "duration_s_sum"),
            ],
            TableName::Hourly => vec![visits, m(col("pageviews").sum(), "pageviews")],
            TableName::Pages => vec![
                m(len(), "pageviews"),
                m(col("is_entry").sum(), "entries"),
                m(col("is_exit").sum(), "exits"),
            ],
            TableName::Referrers | TableName::Devices => vec![visits],
            TableName::Channels | TableName::Campaigns => vec![
                visits,
                m(col("pageviews").sum(), "pageviews"),
                m(col("pageviews").eq(lit(1u32)).sum(), "bounces"),
                m(col("conversions").sum(), "conversions"),
                m(col("conversions").gt(lit(0i64)).sum(), "converting_visits"),
                m(col("value").sum(), "value"),
            ],
            TableName::CampaignGoals | TableName::Goals => {
                vec![m(len(), "conversions"), m(col("value").sum(), "value")]
            }
            TableName::Funnels | TableName::Loyalty => vec![visits],
            TableName::Attribution => vec![
                m(col("credit").sum(), "conversions_micro"),
                m(col("value").sum(), "value"),
            ],
            TableName::Uniques => vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Visits,
    Pageviews,
    Conversions,
    FunnelSteps,
    Attribution,
    Loyalty,
    Uniques,
}

/// Visits and what is counted from them, restricted to the days being reported.
pub struct Sessions {
    /// One row per visit: visit_id, visitor, day, hour, start, end, pageviews, channel,
    /// referrer_host, device_type, browser, os, utm_source, utm_medium, utm_campaign,
    /// conversions, value, and one `_g{i}` / `_f{f}_{j}` flag per goal and funnel step.
    pub visits: DataFrame,
    /// One row per pageview: visit_id, visitor and day of its visit, path, is_entry, is_exit.
    pub pageviews: DataFrame,
    /// One row per visit and goal it converted: visit_id, visitor, day, goal, value and the
    /// visit's campaign and channel.
    pub conversions: DataFrame,
    /// One row per visit and funnel step it reached: visitor, day, funnel, step (1-based).
    pub funnel_steps: DataFrame,
    /// Attribution credit: visitor, day (of the conversion), model, goal, the touch's
    /// utm_source, utm_medium, utm_campaign, channel, credit (millionths of a conversion) and
    /// value (minor units). Filled by [`crate::visitors`].
    pub attribution: DataFrame,
    /// One row per visit and loyalty dimension: visitor, day, dimension, bucket.
    pub loyalty: DataFrame,
    /// One row per visitor and period: visitor, day, period, period_start.
    pub uniques: DataFrame,
    /// What the id columns ([`events::ID_COLUMNS`]) stand for.
    pub strings: events::Strings,
}

impl Sessions {
    /// Derives the goal frames from `visits` (with its `_g`/`_f` flags).
    pub fn new(
        visits: DataFrame,
        pageviews: DataFrame,
        mut strings: events::Strings,
        goals: &Goals,
    ) -> PolarsResult<Sessions> {
        let mut conversions = lit(0i64);
        let mut value = lit(0i64);
        for (i, g) in goals.goals.iter().enumerate() {
            let hit = col(goal_column(i)).cast(DataType::Int64);
            conversions = conversions + hit.clone();
            value = value + hit * lit(g.value);
        }
        let visits = visits
            .lazy()
            .with_columns([conversions.alias("conversions"), value.alias("value")])
            .collect()?;
        let mut per_goal = Vec::new();
        for (i, g) in goals.goals.iter().enumerate() {
            per_goal.push(visits.clone().lazy().filter(col(goal_column(i))).select([
                col("visit_id"),
                col("visitor"),
                col("day"),
                id_lit(strings.id(&g.name)).alias("goal"),
                lit(g.value).alias("value"),
                col("utm_source"),
                col("utm_medium"),
                col("utm_campaign"),
                col("channel"),
            ]));
        }
        let conversions = match per_goal.is_empty() {
            true => empty_frame(&[
                ("visit_id", DataType::UInt32),
                ("visitor", DataType::UInt64),
                ("day", DataType::Int32),
                ("goal", DataType::UInt32),
                ("value", DataType::Int64),
                ("utm_source", DataType::UInt32),
                ("utm_medium", DataType::UInt32),
                ("utm_campaign", DataType::UInt32),
                ("channel", DataType::UInt32),
            ])?,
            false => concat(per_goal, UnionArgs::default())?.collect()?,
        };
        let mut per_step = Vec::new();
        for (f, funnel) in goals.funnels.iter().enumerate() {
            let name = strings.id(&funnel.name);
            for j in 0..funnel.steps.len() {
                per_step.push(
                    visits
                        .clone()
                        .lazy()
                        .filter(col(funnel_column(f, j)))
                        .select([
                            col("visitor"),
                            col("day"),
                            id_lit(name).alias("funnel"),
                            lit(j as i32 + 1).alias("step"),
                        ]),
                );
            }
        }
        let funnel_steps = match per_step.is_empty() {
            true => empty_frame(&[
                ("visitor", DataType::UInt64),
                ("day", DataType::Int32),
                ("funnel", DataType::UInt32),
                ("step", DataType::Int32),
            ])?,
            false => concat(per_step, UnionArgs::default())?.collect()?,
        };
        Ok(Sessions {
            visits,
            pageviews,
            conversions,
            funnel_steps,
            attribution: empty_attribution()?,
            loyalty: empty_frame(&[
                ("visitor", DataType::UInt64),
                ("day", DataType::Int32),
                ("dimension", DataType::UInt32),
                ("bucket", DataType::UInt32),
            ])?,
            uniques: empty_frame(&[
                ("visitor", DataType::UInt64),
                ("day", DataType::Int32),
                ("period", DataType::UInt32),
                ("period_start", DataType::UInt32),
            ])?,
            strings,
        })
    }

    /// The frame a table is counted from.
    pub fn source(&self, table: TableName) -> &DataFrame {
        match table.source_frame() {
            Source::Visits => &self.visits,
            Source::Pageviews => &self.pageviews,
            Source::Conversions => &self.conversions,
            Source::FunnelSteps => &self.funnel_steps,
            Source::Attribution => &self.attribution,
            Source::Loyalty => &self.loyalty,
            Source::Uniques => &self.uniques,
        }
    }

    /// Rows held, for the session cache's accounting.
    pub fn rows(&self) -> usize {
        self.visits.height()
            + self.pageviews.height()
            + self.conversions.height()
            + self.funnel_steps.height()
            + self.attribution.height()
            + self.loyalty.height()
            + self.uniques.height()
    }
}

/// A text's id as a `UInt32` literal (a bare `lit` of a `u32` is a dynamic integer, which
/// Polars makes an `Int32` column).
fn id_lit(id: u32) -> Expr {
    lit(id).cast(DataType::UInt32)
}

/// An empty frame with these columns.
pub fn empty_frame(columns: &[(&str, DataType)]) -> PolarsResult<DataFrame> {
    DataFrame::new(
        0,
        columns
            .iter()
            .map(|(n, t)| Column::new_empty((*n).into(), t))
            .collect(),
    )
}

pub fn empty_attribution() -> PolarsResult<DataFrame> {
    empty_frame(&[
        ("visitor", DataType::UInt64),
        ("day", DataType::Int32),
        ("model", DataType::UInt32),
        ("goal", DataType::UInt32),
        ("utm_source", DataType::UInt32),
        ("utm_medium", DataType::UInt32),
        ("utm_campaign", DataType::UInt32),
        ("channel", DataType::UInt32),
        ("credit", DataType::Int64),
        ("value", DataType::Int64),
    ])
}

/// The columns that name a row of `table`: `day` and the table's keys.
fn row_columns(table: TableName) -> Vec<Expr> {
    let mut columns = vec![col("day")];
    columns.extend(table.keys().iter().map(|k| col(*k)));
    columns
}

/// The per-visit goal and funnel columns `sessionise` adds: `_g{i}` (goal i converted) and
/// `_f{f}_{j}` (step j of funnel f reached, 0-based).
fn goal_column(i: usize) -> String {
    format!("_g{i}")
}

fn funnel_column(f: usize, j: usize) -> String {
    format!("_f{f}_{j}")
}

/// One boolean column per visit (in `visit_id` order, visit 1 first) and goal or funnel step:
/// whether the visit reached the goal's steps (matcher indices, bits of `steps`) in that order
/// (`_g{i}`), or the first j + 1 steps of funnel f (`_f{f}_{j}`). `sorted` is
/// [`visit_plan`]'s result: rows in visit order, so a visit is one contiguous block.
///
/// One pass over the rows whose path some matcher takes, each sequence advanced greedily: a
/// step is reached at the first row after the previous step's that matches it, and the first
/// such row is always the best one to take. This is Polars' per-visit window (the least row
/// per step) done by hand: eight windows per bucket cost more than the rest of the sessions.
fn step_flags(
    visit_ids: &[u32],
    steps: &UInt64Chunked,
    goals: &Goals,
    visits: usize,
) -> PolarsResult<Vec<Column>> {
    /// A goal's or funnel's matcher indices, and per step the flag column it sets (none for
    /// a goal's inner steps).
    type Sequence<'g> = (&'g [usize], Vec<Option<Vec<bool>>>);
    let mut sequences: Vec<Sequence<'_>> = Vec::new();
    let mut names = Vec::new();
    for (i, g) in goals.goals.iter().enumerate() {
        let flags = (0..g.steps.len())
            .map(|j| (j + 1 == g.steps.len()).then(|| vec![false; visits]))
            .collect();
        sequences.push((&g.steps, flags));
        names.push(goal_column(i));
    }
    for (f, funnel) in goals.funnels.iter().enumerate() {
        let flags = funnel
            .steps
            .iter()
            .map(|_| Some(vec![false; visits]))
            .collect();
        sequences.push((&funnel.steps, flags));
        names.extend((0..funnel.steps.len()).map(|j| funnel_column(f, j)));
    }
    if sequences.is_empty() {
        return Ok(Vec::new());
    }
    let mut reached = vec![0usize; sequences.len()];
    let mut current = 0u32;
    for (&id, bits) in visit_ids.iter().zip(steps.into_no_null_iter()) {
        if bits == 0 {
            continue;
        }
        if id != current {
            current = id;
            reached.fill(0);
        }
        let visit = id as usize - 1;
        for ((sequence, flags), k) in sequences.iter_mut().zip(reached.iter_mut()) {
            if let Some(&m) = sequence.get(*k)
                && (bits >> m) & 1 == 1
            {
                if let Some(flag) = &mut flags[*k] {
                    flag[visit] = true;
                }
                *k += 1;
            }
        }
    }
    let flags = sequences
        .into_iter()
        .flat_map(|(_, flags)| flags.into_iter().flatten());
    Ok(names
        .into_iter()
        .zip(flags)
        .map(|(name, flag)| Column::new(name.into(), flag))
        .collect())
}

/// Cuts events into visits. `days`: the first and last day whose visits are kept (visits
/// starting on other days are left to the runs of those days). A visit ends after
/// `timeout_s` without a pageview, is cut at `max_visit_s`, and a pageview carrying a campaign
/// other than the running visit's starts a new one (decision 9).
pub fn sessionise(
    events: events::EventFrame,
    timeout_s: i64,
    max_visit_s: i64,
    days: (Day, Day),
    goals: &Goals,
) -> PolarsResult<Sessions> {
    // The event frame comes in session order (`EventColumns::into_frame`).
    let starts = visit_starts(&events.frame, timeout_s, max_visit_s)?;
    sessions_of(events.frame, &starts, events.strings, days, goals)
}

/// The query that cuts one partition's events into visits: sorted by client and time, each
/// pageview with its `visit_id`, entry and exit flags and its visit's visitor and day. The
/// rules [`visit_starts`] follows, as a Polars query: the second method its tests compare
/// with, and what `examples/sessions_engines.rs` runs on Polars' engines to compare them with
/// partitioning by client (docs/PERFORMANCE.md).
pub fn visit_plan(events: LazyFrame, timeout_s: i64, max_visit_s: i64) -> PolarsResult<LazyFrame> {
    let sorted = events.sort(
        ["session_key", "ts", "seq"],
        SortMultipleOptions::default().with_maintain_order(true),
    );
    Ok(sorted
        .with_columns([(col("session_key")
            .neq(col("session_key").shift(lit(1)))
            .fill_null(lit(true))
            .or((col("ts") - col("ts").shift(lit(1)))
                .gt(lit(timeout_s))
                .fill_null(lit(true))))
        .alias("idle_start")])
        // The running campaign: the last tag seen before this pageview in the same stretch
        // of activity (0: none yet). A tagged pageview that differs from it starts a visit.
        .with_columns([when(col("idle_start").and(col("campaign_tag").is_null()))
            .then(lit(0u64))
            .otherwise(col("campaign_tag"))
            .fill_null_with_strategy(FillNullStrategy::Forward(None))
            .shift(lit(1))
            .alias("_running_tag")])
        .with_columns([col("idle_start")
            .or(col("campaign_tag").is_not_null().and(
                col("_running_tag")
                    .is_null()
                    .or(col("_running_tag").neq(col("campaign_tag"))),
            ))
            .alias("gap_start")])
        .with_columns([(col("ts") - first_of_run(col("ts"), col("gap_start")))
            .floor_div(lit(max_visit_s))
            .alias("chunk")])
        .with_columns([col("gap_start")
            .or(col("chunk")
                .neq(col("chunk").shift(lit(1)))
                .fill_null(lit(true)))
            .alias("is_entry")])
        .with_columns([
            col("is_entry")
                .cast(DataType::UInt32)
                .cum_sum(false)
                .alias("visit_id"),
            col("is_entry")
                .shift(lit(-1))
                .fill_null(lit(true))
                .alias("is_exit"),
            first_of_run(col("visitor"), col("is_entry")).alias("visit_visitor"),
            first_of_run(col("day"), col("is_entry")).alias("visit_day"),
        ]))
}

/// In a frame of contiguous runs (rows sorted so that each run is one block), the value of
/// `value` at the first row of each row's run; `starts` marks a run's first row and the first
/// row of the frame is always one. Equal to `value.first().over(run)`, without hashing.
fn first_of_run(value: Expr, starts: Expr) -> Expr {
    when(starts)
        .then(value)
        .otherwise(lit(NULL))
        .fill_null_with_strategy(FillNullStrategy::Forward(None))
}

/// The first row of each visit in an event frame in session order (by `session_key`, `ts`,
/// `seq`): one pass over three columns. A row starts a visit when it starts a stretch of
/// activity (another client, or more than `timeout_s` since the client's last pageview), when
/// it carries a campaign other than the one running in its stretch (the last tag seen, none
/// when the stretch began untagged), or when it falls in a later `max_visit_s` window counted
/// from the start of its stretch or campaign. The same rules as [`visit_plan`], which took
/// seven passes of Polars expressions (shifts, forward fills, a cumulative sum) and 0.2–0.25 s
/// of the 38 buckets' 1.5 CPU seconds on the 5 M-line benchmark.
fn visit_starts(frame: &DataFrame, timeout_s: i64, max_visit_s: i64) -> PolarsResult<Vec<IdxSize>> {
    let keys = frame.column("session_key")?.u64()?.rechunk();
    let ts = frame.column("ts")?.i64()?.rechunk();
    let (keys, ts) = (keys.cont_slice()?, ts.cont_slice()?);
    let tags = frame.column("campaign_tag")?.u64()?;
    let mut starts = Vec::new();
    let mut running: Option<u64> = None;
    // The start of the current stretch or campaign, and the last row's `max_visit_s` window.
    let (mut since, mut window) = (0i64, 0i64);
    for (i, tag) in tags.iter().enumerate() {
        let idle_start = i == 0 || keys[i] != keys[i - 1] || ts[i] - ts[i - 1] > timeout_s;
        let gap_start = idle_start || (tag.is_some() && tag != running);
        if idle_start {
            running = Some(tag.unwrap_or(0));
        } else if tag.is_some() {
            running = tag;
        }
        if gap_start {
            since = ts[i];
        }
        let chunk = (ts[i] - since).div_euclid(max_visit_s);
        if gap_start || chunk != window {
            starts.push(i as IdxSize);
        }
        window = chunk;
    }
    Ok(starts)
}

/// What a visit takes from its first pageview, beside its visitor, day, hour and start.
const VISIT_ATTRIBUTES: [&str; 8] = [
    "channel",
    "referrer_host",
    "device_type",
    "browser",
    "os",
    "utm_source",
    "utm_medium",
    "utm_campaign",
];

/// The visits and the frames counted from them: `frame` is the event frame in session order
/// and `starts` the first row of each of its visits ([`visit_starts`]). A visit is the block
/// of rows from its start to the next: its first row carries what it is counted by, its last
/// its end. Visit `v` (from 1, in row order) has `visit_id` v.
fn sessions_of(
    frame: DataFrame,
    starts: &[IdxSize],
    strings: events::Strings,
    days: (Day, Day),
    goals: &Goals,
) -> PolarsResult<Sessions> {
    let height = frame.height();
    let count = starts.len();
    let ends: Vec<usize> = (1..=count)
        .map(|v| starts.get(v).map_or(height, |&s| s as usize))
        .collect();
    let mut visit_ids = Vec::with_capacity(height);
    for (v, (&start, &end)) in starts.iter().zip(&ends).enumerate() {
        visit_ids.resize(visit_ids.len() + end - start as usize, v as u32 + 1);
    }
    let flags = step_flags(&visit_ids, frame.column("steps")?.u64()?, goals, count)?;
    let ts = frame.column("ts")?.i64()?.rechunk();
    let ts = ts.cont_slice()?;
    let first = IdxCa::from_vec("".into(), starts.to_vec());
    let mut entry_columns = vec!["visitor", "day", "hour", "ts"];
    entry_columns.extend(VISIT_ATTRIBUTES);
    let mut visits = frame.select(entry_columns)?.take(&first)?;
    visits.rename("ts", "start".into())?;
    let visit_id: Vec<u32> = (1..=count as u32).collect();
    visits.insert_column(0, Column::new("visit_id".into(), visit_id))?;
    let end: Vec<i64> = ends.iter().map(|&e| ts[e - 1]).collect();
    visits.insert_column(5, Column::new("end".into(), end))?;
    let pageviews: Vec<IdxSize> = starts
        .iter()
        .zip(&ends)
        .map(|(&s, &e)| (e - s as usize) as IdxSize)
        .collect();
    visits.insert_column(6, Column::new("pageviews".into(), pageviews))?;
    visits.hstack_mut(&flags)?;
    // The visits of the days computed, and their pageviews (a visit's rows are contiguous).
    let visit_days = visits.column("day")?.i32()?.rechunk();
    let visit_days = visit_days.cont_slice()?;
    let kept: Vec<bool> = visit_days
        .iter()
        .map(|d| (days.0.0..=days.1.0).contains(d))
        .collect();
    let visitors = visits.column("visitor")?.u64()?.rechunk();
    let visitors = visitors.cont_slice()?;
    let mut rows = Vec::new();
    let mut pageview_columns = PageviewColumns::default();
    for (v, (&start, &end)) in starts.iter().zip(&ends).enumerate() {
        if !kept[v] {
            continue;
        }
        rows.extend(start..end as IdxSize);
        pageview_columns.push_visit(
            v as u32 + 1,
            visitors[v],
            visit_days[v],
            end - start as usize,
        );
    }
    let paths = frame
        .column("path")?
        .take(&IdxCa::from_vec("".into(), rows))?;
    let pageviews = pageview_columns.into_frame(paths)?;
    let visits = match kept.iter().all(|&k| k) {
        true => visits,
        false => visits.filter(&BooleanChunked::from_slice("".into(), &kept))?,
    };
    Sessions::new(visits, pageviews, strings, goals)
}

/// The pageview frame's columns other than `path`, filled visit by visit.
#[derive(Default)]
struct PageviewColumns {
    visit_id: Vec<u32>,
    visitor: Vec<u64>,
    day: Vec<i32>,
    is_entry: Vec<bool>,
    is_exit: Vec<bool>,
}

impl PageviewColumns {
    /// The `pageviews` rows of visit `id`.
    fn push_visit(&mut self, id: u32, visitor: u64, day: i32, pageviews: usize) {
        let total = self.visit_id.len() + pageviews;
        self.visit_id.resize(total, id);
        self.visitor.resize(total, visitor);
        self.day.resize(total, day);
        self.is_entry.push(true);
        self.is_entry.resize(total, false);
        self.is_exit.resize(total - 1, false);
        self.is_exit.push(true);
    }

    fn into_frame(self, path: Column) -> PolarsResult<DataFrame> {
        DataFrame::new(
            self.visit_id.len(),
            vec![
                Column::new("visit_id".into(), self.visit_id),
                Column::new("visitor".into(), self.visitor),
                Column::new("day".into(), self.day),
                path,
                Column::new("is_entry".into(), self.is_entry),
                Column::new("is_exit".into(), self.is_exit),
            ],
        )
    }
}

/// One partial table: `day`, the table's keys, its measures (Int64). With `row_bound`
/// (differential privacy), a visitor's visits count in at most that many rows of the table per
/// day: the rows of their earliest visits.
pub fn partial_table(
    sessions: &Sessions,
    table: TableName,
    row_bound: Option<u32>,
) -> PolarsResult<DataFrame> {
    let per_visitor = per_visitor_plan(sessions, table, row_bound)?;
    let partial = partial_of_per_visitor(per_visitor, table).collect()?;
    sessions.strings.decode(partial)
}

/// A table's rows per visitor: `day`, the table's keys, `visitor` and the table's measures
/// except `visitors`, summed over that visitor's rows; the partial table is one more
/// group-by, by row, over it, `visitors` a count of its rows ([`partial_table`], and
/// [`bucket_tables`] with a row bound). With `row_bound` (differential privacy), a visitor's
/// visits count in at most that many rows of the table per day.
fn per_visitor_plan(
    sessions: &Sessions,
    table: TableName,
    row_bound: Option<u32>,
) -> PolarsResult<LazyFrame> {
    let source = sessions.source(table);
    let mut row_of_visitor = row_columns(table);
    row_of_visitor.push(col("visitor"));
    let mut rows = source.clone().lazy();
    if let (Some(m), true) = (row_bound, table.bounded_by_visit()) {
        // Pages are bounded in `bound_contributions` (first distinct paths).
        rows = keep_first_rows(rows, row_of_visitor.clone(), "start", m)?;
    }
    if table.distinct_per_visitor() && table.measure_exprs().is_empty() {
        return Ok(rows.select(row_of_visitor));
    }
    Ok(rows.group_by(row_of_visitor).agg(table.measure_exprs()))
}

/// The partial table from a [`per_visitor_plan`]'s rows: one row per table row, `visitors`
/// the number of its visitors (rows of the per-visitor frame), every other measure a sum.
fn partial_of_per_visitor(per_visitor: LazyFrame, table: TableName) -> LazyFrame {
    let mut sums = vec![len().cast(DataType::Int64).alias("visitors")];
    sums.extend(table.measures()[1..].iter().map(|m| col(*m).sum()));
    per_visitor.group_by(row_columns(table)).agg(sums)
}

/// Every table's partial and row-visitor frame of one bucket: `(partial, row_visitors)` per
/// table. The row-visitor frame says which visitors each row has in this bucket: (day, keys,
/// visitor, `_bucket`), a pair possibly more than once. Buckets are disjoint in visitors, so
/// the distinct visitors of any union of rows is the sum over buckets of the distinct visitors
/// of its rows here: what the k rule's unions are counted from, without going back to the
/// sessions. Without a row bound a table's partial is grouped once, from its source, and its
/// frame is the source's key and visitor columns; with one (differential privacy, no frames
/// needed) and for `uniques`, the rows are grouped by row and visitor first
/// ([`per_visitor_plan`]) and the partial from those. The tables' plans run together in each
/// round, so the per-query overhead is paid per round, not per table. The partials get their
/// text back (they are merged across buckets); the row-visitor frames keep the bucket's ids
/// (see [`events::RowVisitorFrames`]), which makes them cheaper to store.
pub fn bucket_tables(
    sessions: &Sessions,
    tables: &[TableName],
    row_bound: Option<u32>,
    bucket: u32,
) -> PolarsResult<Vec<(DataFrame, Option<DataFrame>)>> {
    // Without a row bound a table's rows are grouped once, straight from its source, its
    // visitors a distinct count; its row-visitor frame is the source's key and visitor columns
    // as they are (a visitor may repeat within a row: the unions count distinct visitors). A
    // visitor has nearly one source row per table row (the per-visitor frames were 88-99 % of
    // their sources on the 5 M log), so grouping by row and visitor first bought little and
    // cost two thirds of the tables' time.
    let direct = |t: TableName| row_bound.is_none() && !t.distinct_per_visitor();
    let plans = tables
        .iter()
        .map(|t| {
            if direct(*t) {
                let mut aggs = vec![
                    col("visitor")
                        .n_unique()
                        .cast(DataType::Int64)
                        .alias("visitors"),
                ];
                aggs.extend(t.measure_exprs());
                let mut columns = row_columns(*t);
                columns.extend(t.measures().iter().map(|m| col(*m)));
                let source = sessions.source(*t).clone().lazy();
                Ok(source
                    .group_by(row_columns(*t))
                    .agg(aggs)
                    .select(columns)
                    .logical_plan)
            } else {
                Ok(per_visitor_plan(sessions, *t, row_bound)?.logical_plan)
            }
        })
        .collect::<PolarsResult<Vec<_>>>()?;
    let first = LazyFrame::collect_all_with_engine(plans, Engine::InMemory, OptFlags::default())?;
    // The tables grouped by row and visitor above still need their rows.
    let plans = first
        .iter()
        .zip(tables)
        .filter(|(_, t)| !direct(**t))
        .map(|(rows, t)| partial_of_per_visitor(rows.clone().lazy(), *t).logical_plan)
        .collect();
    let mut second =
        LazyFrame::collect_all_with_engine(plans, Engine::InMemory, OptFlags::default())?
            .into_iter();
    first
        .into_iter()
        .zip(tables)
        .enumerate()
        .map(|(i, (frame, t))| {
            let mut keys: Vec<&str> = vec!["day"];
            let (partial, visitors) = if direct(*t) && t.source_frame() == Source::Visits {
                // One frame of every visit key (the hour and what a visit takes from its first
                // pageview) for all the tables counted from visits, stored in the first one's
                // slot ([`frame_slot`]).
                if frame_slot(tables, *t) != i {
                    return Ok((sessions.strings.decode(frame)?, None));
                }
                keys.push("hour");
                keys.extend(VISIT_ATTRIBUTES);
                keys.push("visitor");
                (frame, sessions.source(*t).select(keys)?)
            } else if direct(*t) {
                keys.extend(t.keys());
                keys.push("visitor");
                (frame, sessions.source(*t).select(keys)?)
            } else {
                keys.extend(t.keys());
                keys.push("visitor");
                let partial = second.next().expect("a partial per grouped table");
                (partial, frame.select(keys)?)
            };
            let mut visitors = visitors;
            let bucket = Scalar::new(DataType::UInt32, AnyValue::UInt32(bucket));
            let height = visitors.height();
            visitors.with_column(Column::new_scalar("_bucket".into(), bucket, height))?;
            Ok((sessions.strings.decode(partial)?, Some(visitors)))
        })
        .collect()
}

/// Where table `t`'s row-visitor frame is stored among `tables`' ([`bucket_tables`]): its own
/// place, or for a table counted from visits the place of the first such table, whose frame
/// holds every visit key (one frame of the visits instead of six: the visitor and day columns
/// were most of their bytes). Without a row bound only: with one (differential privacy) every
/// table has a frame of its own, and no union is counted from them.
pub fn frame_slot(tables: &[TableName], t: TableName) -> usize {
    let shared = |x: &TableName| x.source_frame() == Source::Visits;
    let own = tables
        .iter()
        .position(|x| *x == t)
        .expect("a table of the run");
    match shared(&t) {
        true => tables.iter().position(shared).unwrap_or(own),
        false => own,
    }
}

/// Sums partial tables by key: the merge stage. Valid because every measure is additive
/// (visitors included, since partials never share a client).
pub fn merge(table: TableName, partials: Vec<DataFrame>) -> PolarsResult<DataFrame> {
    let frames: Vec<LazyFrame> = partials.into_iter().map(IntoLazy::lazy).collect();
    let by = row_columns(table);
    let sums: Vec<Expr> = table.measures().iter().map(|m| col(*m).sum()).collect();
    let mut sort_by = vec!["day"];
    sort_by.extend(table.keys());
    concat(frames, UnionArgs::default())?
        .group_by(by)
        .agg(sums)
        .sort(
            sort_by,
            SortMultipleOptions::default().with_nulls_last(false),
        )
        .collect()
}

/// Distinct visitors per unit of the union of `folded` rows in one bucket's row-visitor
/// frame ([`bucket_tables`]). The frame keeps the bucket's ids, and so must `folded` (see
/// [`events::Texts::encode`]); `texts` turns the units' ids back into text.
///
/// One pass over the frame: each row's day and keys looked up among the folded rows', the
/// (unit, visitor) pairs of the rows found sorted and counted. Polars' join and two
/// group-bys did the same for 0.3 of the disclose stage's 0.43 CPU seconds on the 5 M-line
/// benchmark (456 small queries: 38 buckets, 6 tables, 2 rounds); the test compares them.
pub fn union_visitors(
    incidence: &DataFrame,
    table: TableName,
    folded: DataFrame,
    texts: &events::Texts,
) -> PolarsResult<BTreeMap<Unit, i64>> {
    let mut names = vec!["day"];
    names.extend(table.keys());
    let wanted: foldhash::HashSet<RowCode> = row_codes(&folded, &names)?.into_iter().collect();
    let unit_width = 1 + table.group_keys();
    let visitors = incidence.column("visitor")?.u64()?.rechunk();
    let visitors = visitors.cont_slice()?;
    // Each unit met: its number, and a row of it (to read its day and group keys from).
    let mut units: foldhash::HashMap<RowCode, u32> = Default::default();
    let mut unit_rows: Vec<IdxSize> = Vec::new();
    let mut pairs: Vec<(u32, u64)> = Vec::new();
    let incidence = one_chunk(incidence);
    let columns = CodeColumns::new(&incidence, &names)?;
    for (i, &visitor) in visitors.iter().enumerate() {
        let code = columns.code(i);
        if !wanted.contains(&code) {
            continue;
        }
        let mut unit = code;
        unit.0[unit_width..].fill(0);
        let next = units.len() as u32;
        let n = *units.entry(unit).or_insert_with(|| {
            unit_rows.push(i as IdxSize);
            next
        });
        pairs.push((n, visitor));
    }
    pairs.sort_unstable();
    pairs.dedup();
    let mut counts = vec![0i64; units.len()];
    for (n, _) in pairs {
        counts[n as usize] += 1;
    }
    let unit_names: Vec<&str> = names[..unit_width].to_vec();
    let unit_frame = incidence
        .select(unit_names)?
        .take(&IdxCa::from_vec("".into(), unit_rows))?;
    let units = unit_keys(table, &texts.decode(unit_frame)?)?;
    Ok(units.into_iter().zip(counts).collect())
}

/// A row's day and keys as numbers (at most six keys), for [`union_visitors`]' lookups: an
/// `Int32` or `UInt32` value (a day, an hour or step, a text's id) with bit 32 set, a null as
/// 0, unused places 0.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RowCode([u64; 7]);

impl std::hash::Hash for RowCode {
    /// The seven numbers folded into one (distinct odd multipliers) and that hashed: one
    /// hash of a word a row instead of one of 56 bytes. Codes that fold alike are still told
    /// apart by `Eq`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        const MULTIPLIERS: [u64; 7] = [
            0x9e37_79b9_7f4a_7c15,
            0xc2b2_ae3d_27d4_eb4f,
            0x1656_67b1_9e37_79f9,
            0xd6e8_feb8_6659_fd93,
            0xa076_1d64_78bd_642f,
            0xe703_7ed1_a0b4_28db,
            0x8ebc_6af0_9c88_c6e3,
        ];
        let folded = self
            .0
            .iter()
            .zip(MULTIPLIERS)
            .fold(0u64, |h, (v, m)| h ^ v.wrapping_mul(m));
        state.write_u64(folded);
    }
}

/// The key columns of a frame, read in place for [`RowCode`]s row by row.
struct CodeColumns<'a> {
    columns: Vec<CodeValues<'a>>,
}

enum CodeValues<'a> {
    Int32(&'a <Int32Type as PolarsDataType>::Array),
    UInt32(&'a <UInt32Type as PolarsDataType>::Array),
    /// A frame of no rows has no chunk to read.
    Empty,
}

impl<'a> CodeColumns<'a> {
    /// `frame`'s `columns` (at most seven, each `Int32` or `UInt32`, in one chunk: frames
    /// decoded from the spill are; [`row_codes`] rechunks others).
    fn new(frame: &'a DataFrame, columns: &[&str]) -> PolarsResult<CodeColumns<'a>> {
        polars_ensure!(columns.len() <= 7, ComputeError: "more than 6 keys in a row code");
        let columns = columns
            .iter()
            .map(|name| {
                let column = frame.column(name)?.as_materialized_series();
                polars_ensure!(
                    column.n_chunks() <= 1,
                    ComputeError: "column `{name}` in more than one chunk"
                );
                Ok(match column.dtype() {
                    DataType::Int32 => column
                        .i32()?
                        .downcast_iter()
                        .next()
                        .map_or(CodeValues::Empty, CodeValues::Int32),
                    DataType::UInt32 => column
                        .u32()?
                        .downcast_iter()
                        .next()
                        .map_or(CodeValues::Empty, CodeValues::UInt32),
                    other => {
                        polars_bail!(ComputeError: "column `{name}` of type {other} in a row code")
                    }
                })
            })
            .collect::<PolarsResult<_>>()?;
        Ok(CodeColumns { columns })
    }

    fn code(&self, row: usize) -> RowCode {
        let mut code = [0u64; 7];
        for (c, values) in code.iter_mut().zip(&self.columns) {
            let v = match values {
                CodeValues::Int32(a) => a.get(row).map(|v| v as u32),
                CodeValues::UInt32(a) => a.get(row),
                CodeValues::Empty => None,
            };
            *c = v.map_or(0, |v| u64::from(v) | 1 << 32);
        }
        RowCode(code)
    }
}

/// `frame` with every column in one chunk (itself when it is).
fn one_chunk(frame: &DataFrame) -> std::borrow::Cow<'_, DataFrame> {
    if frame.columns().iter().all(|c| c.n_chunks() <= 1) {
        return std::borrow::Cow::Borrowed(frame);
    }
    let mut frame = frame.clone();
    frame.rechunk_mut();
    std::borrow::Cow::Owned(frame)
}

/// The [`RowCode`] of each row of `frame` over `columns`.
fn row_codes(frame: &DataFrame, columns: &[&str]) -> PolarsResult<Vec<RowCode>> {
    let frame = one_chunk(frame);
    let columns = CodeColumns::new(&frame, columns)?;
    Ok((0..frame.height()).map(|i| columns.code(i)).collect())
}

/// The unit (day and group keys) of each row of a frame grouped by [`unit_columns`].
fn unit_keys(table: TableName, df: &DataFrame) -> PolarsResult<Vec<Unit>> {
    let day = df.column("day")?.i32()?;
    let groups: Vec<&Column> = table.keys()[..table.group_keys()]
        .iter()
        .map(|k| df.column(k))
        .collect::<PolarsResult<_>>()?;
    (0..df.height())
        .map(|i| {
            let keys = groups
                .iter()
                .map(|c| key_value(c, i))
                .collect::<PolarsResult<Vec<_>>>()?;
            Ok((Day(day.get(i).unwrap_or(0)), keys))
        })
        .collect()
}

fn key_value(c: &Column, i: usize) -> PolarsResult<KeyValue> {
    Ok(match c.dtype() {
        DataType::Int32 => KeyValue::Int(i64::from(c.i32()?.get(i).unwrap_or(-1))),
        _ => KeyValue::Str(c.str()?.get(i).map(str::to_string)),
    })
}

/// A merged table's frame → rows.
pub fn rows(table: TableName, df: &DataFrame) -> PolarsResult<Vec<Row>> {
    let day = df.column("day")?.i32()?;
    let keys: Vec<&Column> = table
        .keys()
        .iter()
        .map(|k| df.column(k))
        .collect::<PolarsResult<_>>()?;
    let measures: Vec<&Int64Chunked> = table
        .measures()
        .iter()
        .map(|m| df.column(m)?.i64())
        .collect::<PolarsResult<_>>()?;
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let mut key_values = Vec::with_capacity(keys.len());
        for c in &keys {
            key_values.push(key_value(c, i)?);
        }
        out.push(Row {
            day: Day(day.get(i).unwrap_or(0)),
            keys: key_values,
            measures: measures.iter().map(|m| m.get(i).unwrap_or(0)).collect(),
        });
    }
    Ok(out)
}

/// (day, keys) pairs → a frame to join on, typed like the sessions' columns.
pub fn keys_frame(table: TableName, keys: &[Unit]) -> PolarsResult<DataFrame> {
    let mut columns = vec![Column::new(
        "day".into(),
        keys.iter().map(|(d, _)| d.0).collect::<Vec<i32>>(),
    )];
    for (i, name) in table.keys().iter().enumerate() {
        columns.push(key_column(name, keys.iter().map(|(_, k)| &k[i])));
    }
    DataFrame::new(keys.len(), columns)
}

/// One key column: [`INT_KEYS`] are Int32, every other key a string.
pub fn key_column<'a>(name: &str, values: impl Iterator<Item = &'a KeyValue>) -> Column {
    if INT_KEYS.contains(&name) {
        let v: Vec<Option<i32>> = values
            .map(|k| match k {
                KeyValue::Int(h) => Some(*h as i32),
                KeyValue::Str(_) => None,
            })
            .collect();
        Column::new(name.into(), v)
    } else {
        let v: Vec<Option<&str>> = values
            .map(|k| match k {
                KeyValue::Str(s) => s.as_deref(),
                KeyValue::Int(_) => None,
            })
            .collect();
        Column::new(name.into(), v)
    }
}

/// Keeps, per visitor and day, only the rows of the first `bound` distinct values of `row`
/// (the columns naming a row, `visitor` and `day` among them), first by `order`.
fn keep_first_rows(
    frame: LazyFrame,
    row: Vec<Expr>,
    order: &str,
    bound: u32,
) -> PolarsResult<LazyFrame> {
    let dense = RankOptions {
        method: RankMethod::Dense,
        descending: false,
    };
    Ok(frame
        .with_columns([col(order).min().over(row)?.alias("_row_first")])
        .with_columns([col("_row_first")
            .rank(dense, None)
            .over([col("visitor"), col("day")])?
            .alias("_row_rank")])
        .filter(col("_row_rank").lt_eq(lit(bound)))
        .drop(by_name(["_row_first", "_row_rank"], true, false)))
}

/// Enforces the differential-privacy contribution bounds on one partial's sessions, before
/// any table is computed: per visitor and day at most `max_visits_per_day` visits (the
/// earliest), per visit at most `max_pageviews_per_visit` pageviews (the first) and a duration
/// of at most `max_duration_s`, and at most `max_rows_per_table` distinct paths (the first
/// ones seen).
pub fn bound_contributions(
    s: Sessions,
    b: &crate::dp::Bounds,
    goals: &Goals,
) -> PolarsResult<Sessions> {
    let n = b.max_visits_per_day;
    let p = b.max_pageviews_per_visit;
    let visits = s
        .visits
        .lazy()
        .sort(
            ["visitor", "day", "start", "visit_id"],
            SortMultipleOptions::default(),
        )
        .with_columns([col("visit_id")
            .cum_count(false)
            .over([col("visitor"), col("day")])?
            .alias("visit_rank")])
        .filter(col("visit_rank").lt_eq(lit(n)))
        .with_columns([
            when(col("pageviews").gt(lit(p)))
                .then(lit(p))
                .otherwise(col("pageviews"))
                .alias("pageviews"),
            when((col("end") - col("start")).gt(lit(b.max_duration_s)))
                .then(col("start") + lit(b.max_duration_s))
                .otherwise(col("end"))
                .alias("end"),
        ])
        .drop(by_name(["visit_rank"], true, false))
        .sort(["visit_id"], SortMultipleOptions::default())
        .collect()?;
    let kept = visits.clone().lazy().select([col("visit_id")]);
    let bounded = s
        .pageviews
        .lazy()
        .with_row_index("row", None)
        .join(
            kept,
            [col("visit_id")],
            [col("visit_id")],
            JoinArgs::new(JoinType::Inner),
        )
        .sort(["row"], SortMultipleOptions::default())
        .with_columns([col("row")
            .cum_count(false)
            .over([col("visit_id")])?
            .alias("pv_rank")])
        .filter(col("pv_rank").lt_eq(lit(p)));
    let pageviews = keep_first_rows(
        bounded,
        vec![col("visitor"), col("day"), col("path")],
        "row",
        b.max_rows_per_table,
    )?
    .sort(["row"], SortMultipleOptions::default())
    .select([
        col("visit_id"),
        col("visitor"),
        col("day"),
        col("path"),
        col("is_entry"),
        col("is_exit"),
    ])
    .collect()?;
    Sessions::new(visits, pageviews, s.strings, goals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseudonymise::Event;

    fn event(ts: i64, visitor: u64, path: &str) -> Event {
        Event::for_test(ts, visitor, path)
    }

    /// The sessions of `(seq, event)` rows pushed in the order given (a 30-minute timeout,
    /// 6-hour visits, day 0, no goals).
    fn sessions_of<'r>(rows: impl IntoIterator<Item = &'r (u64, Event)>) -> Sessions {
        let mut cols = events::EventColumns::default();
        for (seq, e) in rows {
            cols.push(*seq, e.clone());
        }
        sessionise(
            cols.into_frame().unwrap(),
            1800,
            6 * 3600,
            (Day(0), Day(0)),
            &Goals::default(),
        )
        .unwrap()
    }

    /// Without a row bound every table's partial is grouped straight from its source; the
    /// second method groups by row and visitor first ([`partial_table`]). Random visitors
    /// with repeat pageviews, referrers and campaigns in one day: every partial equal, and each
    /// row-visitor frame holds the per-visitor rows' (row, visitor) pairs, repeats aside.
    #[test]
    fn partials_grouped_once_equal_grouped_by_visitor_first() {
        let mut next = crate::test_numbers(0x007a_b1e5);
        let rows: Vec<(u64, Event)> = (0..3_000u64)
            .map(|i| {
                let r = next();
                let mut e = Event::for_test(
                    (r % 86_000) as i64,
                    r >> 40 & 31,
                    ["/", "/a", "/b", "/каталог"][(r >> 8) as usize % 4],
                );
                e.referrer_host = (r >> 12 & 1 == 1)
                    .then(|| Arc::from(["yandex.ru", "vk.com"][(r >> 13 & 1) as usize]));
                e.utm_source = (r >> 14 & 3 == 0).then(|| Arc::from("yandex"));
                e.browser = Arc::from(["Chrome", "Firefox"][(r >> 15 & 1) as usize]);
                (i, e)
            })
            .collect();
        let s = sessions_of(&rows);
        // The tables up to `campaigns`: these sessions have no goals, so the rest are empty.
        let tables = &TABLES[..=TABLES
            .iter()
            .position(|t| *t == TableName::Campaigns)
            .unwrap()];
        assert_eq!(tables.len(), 7);
        let got = bucket_tables(&s, tables, None, 0).unwrap();
        let sorted = |df: DataFrame, t: TableName| {
            let mut by = vec!["day"];
            by.extend(t.keys());
            by.push("visitor");
            by.retain(|c| df.column(c).is_ok());
            df.sort(by, SortMultipleOptions::default().with_nulls_last(false))
                .unwrap()
        };
        let frames: Vec<Option<DataFrame>> = got.iter().map(|(_, f)| f.clone()).collect();
        // The tables counted from visits share the first one's frame, which has their keys.
        assert!(
            frames[0].is_some() && frames[1].is_none(),
            "overview's slot holds the visits'"
        );
        for (t, (partial, _)) in tables.iter().zip(got) {
            let frame = frames[frame_slot(tables, *t)].clone().expect("a frame");
            let want = partial_table(&s, *t, None).unwrap();
            assert!(want.height() > 0, "{t:?}");
            assert!(
                sorted(partial, *t).equals_missing(&sorted(want, *t)),
                "{t:?}"
            );
            let mut keys: Vec<&str> = vec!["day"];
            keys.extend(t.keys());
            keys.push("visitor");
            let pairs = |df: DataFrame| {
                let df = df
                    .select(keys.clone())
                    .unwrap()
                    .unique_stable(None, UniqueKeepStrategy::First, None)
                    .unwrap();
                sorted(df, *t)
            };
            let per_visitor = per_visitor_plan(&s, *t, None).unwrap().collect().unwrap();
            assert!(pairs(frame).equals_missing(&pairs(per_visitor)), "{t:?}");
        }
    }

    /// Goal `g` = matcher 0 then matcher 1; funnel `f` = matchers 0, 1, 2. Worked by hand per
    /// visit (rows in time order, each row's matchers):
    /// 1: {1} {0} {1}        → g yes (0 then a later 1); f steps 1, 2
    /// 2: {1}                → nothing (step 1 before step 0 does not count)
    /// 3: {0,1}              → g no (one row cannot be two steps); f step 1
    /// 4: no matching row    → nothing
    /// 5: {0} {} {1} {2} {0} → g yes; f steps 1, 2, 3
    /// 6: {2} {1} {0}        → g no; f step 1 (the order is what counts)
    #[test]
    fn step_flags_follow_the_order_within_each_visit() {
        let b = |ms: &[u64]| ms.iter().map(|m| 1u64 << m).sum::<u64>();
        let rows: Vec<(u32, u64)> = vec![
            (1, b(&[1])),
            (1, b(&[0])),
            (1, b(&[1])),
            (2, b(&[1])),
            (3, b(&[0, 1])),
            (4, 0),
            (4, 0),
            (5, b(&[0])),
            (5, 0),
            (5, b(&[1])),
            (5, b(&[2])),
            (5, b(&[0])),
            (6, b(&[2])),
            (6, b(&[1])),
            (6, b(&[0])),
        ];
        let visit_ids: Vec<u32> = rows.iter().map(|r| r.0).collect();
        let steps = UInt64Chunked::from_vec("steps".into(), rows.iter().map(|r| r.1).collect());
        let goals = Goals {
            matchers: Vec::new(),
            goals: vec![crate::goals::Goal {
                name: "g".into(),
                steps: vec![0, 1],
                value: 0,
            }],
            funnels: vec![crate::goals::Funnel {
                name: "f".into(),
                steps: vec![0, 1, 2],
            }],
        };
        let flags = step_flags(&visit_ids, &steps, &goals, 6).unwrap();
        let got: Vec<(String, Vec<bool>)> = flags
            .iter()
            .map(|c| {
                let flag = c.bool().unwrap();
                let v = (0..flag.len()).map(|i| flag.get(i) == Some(true)).collect();
                (c.name().to_string(), v)
            })
            .collect();
        let want = [
            ("_g0", [true, false, false, false, true, false]),
            ("_f0_0", [true, false, true, false, true, true]),
            ("_f0_1", [true, false, false, false, true, false]),
            ("_f0_2", [false, false, false, false, true, false]),
        ];
        let want: Vec<(String, Vec<bool>)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
        assert_eq!(got, want);
    }

    /// One visitor with 2 000 visits of 3 pageviews over 12 distinct paths in one day, and
    /// another with one visit: the bounds leave the first 4 visits, 10 pageviews per visit at
    /// most, and 5 distinct paths per visitor.
    #[test]
    fn bound_contributions_on_a_visitor_with_thousands_of_visits() {
        let mut cols = events::EventColumns::default();
        let mut seq = 0;
        for v in 0..2000i64 {
            for p in 0..3i64 {
                let path = format!("/p{}", (v * 3 + p) % 12);
                cols.push(seq, event(v * 40 + p, 1, &path));
                seq += 1;
            }
        }
        for p in 0..12i64 {
            cols.push(seq, event(50_000 + p, 2, &format!("/q{p}")));
            seq += 1;
        }
        let frame = cols.into_frame().unwrap();
        // Timeout 30 s: each visitor-1 burst (3 pageviews in 3 s, 40 s apart) is one visit.
        let s = sessionise(frame, 30, 3600, (Day(0), Day(0)), &Goals::default()).unwrap();
        assert_eq!(s.visits.height(), 2001);
        let bounds = crate::dp::Bounds {
            max_visits_per_day: 4,
            max_pageviews_per_visit: 10,
            max_rows_per_table: 5,
            max_duration_s: 1800,
            goals: 0,
            funnel_steps: 0,
            max_goal_value: 0,
        };
        let b = bound_contributions(s, &bounds, &Goals::default()).unwrap();
        assert_eq!(
            b.visits.height(),
            5,
            "4 visits of visitor 1, 1 of visitor 2"
        );
        let pv = |visitor: u64| -> Vec<String> {
            let df = b
                .pageviews
                .clone()
                .lazy()
                .filter(col("visitor").eq(lit(visitor)))
                .collect()
                .unwrap();
            let df = b.strings.decode(df).unwrap();
            df.column("path")
                .unwrap()
                .str()
                .unwrap()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect()
        };
        // Visitor 1: 4 visits × 3 pageviews over paths /p0../p11 in order: the first 5
        // distinct paths are /p0../p4, so 5 of the 12 pageviews remain.
        assert_eq!(pv(1), ["/p0", "/p1", "/p2", "/p3", "/p4"]);
        // Visitor 2: 12 pageviews in one visit → 10 kept → 5 distinct paths.
        assert_eq!(pv(2), ["/q0", "/q1", "/q2", "/q3", "/q4"]);
        let pageviews: Vec<i64> = b
            .visits
            .column("pageviews")
            .unwrap()
            .cast(&DataType::Int64)
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .map(|v| v.unwrap())
            .collect();
        assert_eq!(
            pageviews.iter().max(),
            Some(&10),
            "pageviews per visit capped at 10"
        );
    }

    /// With a row bound of 2, a visitor whose 4 visits start in 4 different hours counts in
    /// the hours of its first 2 visits only; another visitor is untouched.
    /// Decision 9 whatever order a bucket's events come in: client 1's untagged pageview and,
    /// a minute later, one tagged with campaign X are two visits; client 2 (campaign Y) one.
    /// The rows are pushed with X met first and with Y met first (the spill gives a bucket's
    /// events in the order its writers' files are read).
    #[test]
    fn a_campaign_splits_an_untagged_visit_whichever_campaign_comes_first() {
        let tagged = |ts: i64, visitor: u64, campaign: &str| {
            let mut e = event(ts, visitor, "/a");
            e.utm_source = Some(Arc::from("yandex"));
            e.utm_campaign = Some(Arc::from(campaign));
            e
        };
        let rows = [
            (0u64, event(1000, 1, "/a")),
            (1, tagged(1060, 1, "x")),
            (2, tagged(1000, 2, "y")),
        ];
        for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
            let s = sessions_of(order.map(|i| &rows[i]));
            let visitors = s.visits.column("visitor").unwrap().u64().unwrap();
            let per = |v: u64| {
                (0..visitors.len())
                    .filter(|&i| visitors.get(i) == Some(v))
                    .count()
            };
            assert_eq!((per(1), per(2)), (2, 1), "rows pushed in order {order:?}");
        }
    }

    /// Visits do not depend on the order a bucket's events arrive in (the spill's files are
    /// read in an order of random names): random events of a few clients, with and without
    /// campaigns, in many seconds shared, cut the same in shuffled orders.
    #[test]
    fn visits_do_not_depend_on_the_order_events_arrive_in() {
        let mut next = crate::test_numbers(0x2545_f491_4f6c_dd1du64);
        let campaigns = [None, None, None, Some("x"), Some("y"), Some("z")];
        let rows: Vec<(u64, Event)> = (0..600u64)
            .map(|seq| {
                let r = next();
                let mut e = event(1000 + (r % 7200) as i64, r >> 60, "/a");
                if let Some(c) = campaigns[(r >> 20) as usize % campaigns.len()] {
                    e.utm_source = Some(Arc::from("yandex"));
                    e.utm_campaign = Some(Arc::from(c));
                }
                (seq, e)
            })
            .collect();
        let visits = |order: &[usize]| {
            let s = sessions_of(order.iter().map(|&i| &rows[i]));
            let v = s.visits.column("visitor").unwrap().u64().unwrap();
            let t = s.visits.column("start").unwrap().i64().unwrap();
            let mut pairs: Vec<(u64, i64)> = (0..v.len())
                .map(|i| (v.get(i).unwrap(), t.get(i).unwrap()))
                .collect();
            pairs.sort_unstable();
            pairs
        };
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let want = visits(&order);
        assert!(
            want.len() > 16,
            "{} visits: the campaigns split some",
            want.len()
        );
        for _ in 0..20 {
            for i in (1..order.len()).rev() {
                order.swap(i, next() as usize % (i + 1));
            }
            assert_eq!(visits(&order), want);
        }
    }

    /// The visits cut by hand ([`visit_starts`]) are the Polars query's ([`visit_plan`]):
    /// each visit's visitor, day, hour, start, end, pageviews and first-pageview attributes
    /// equal a group-by of the query's rows by visit, and the pageviews its rows of the days
    /// kept. Random pageviews of 8 clients over two days: stretches longer than the 1-hour
    /// cut, campaigns switching mid-stretch, seconds shared, and each client's day-1 pseudonym
    /// linked to its day-0 one in the first two hours of day 1 (visits across midnight).
    #[test]
    fn visits_cut_by_hand_equal_the_polars_query() {
        let mut next = crate::test_numbers(0x5e55_1035);
        let campaigns = [None, None, None, None, Some("x"), Some("y")];
        let rows: Vec<(u64, Event)> = (0..5_000u64)
            .map(|seq| {
                let r = next();
                let (client, ts) = (r >> 61, (r % 172_800) as i64);
                let day = ts / 86_400;
                let mut e = event(
                    ts,
                    client * 10 + day as u64,
                    ["/a", "/б"][(r >> 8 & 1) as usize],
                );
                e.link = (day == 1 && ts < 86_400 + 7200).then_some(client * 10);
                if let Some(c) = campaigns[(r >> 20) as usize % campaigns.len()] {
                    e.utm_source = Some(Arc::from("yandex"));
                    e.utm_campaign = Some(Arc::from(c));
                }
                e.browser = Arc::from(["Chrome", "Firefox"][(r >> 30 & 1) as usize]);
                (seq, e)
            })
            .collect();
        // At the edges: a gap of exactly the timeout (same visit), one second more (a new
        // one), and pageviews either side of the hour's cut.
        let mut rows = rows;
        for (i, (ts, visitor)) in [
            (100, 90),
            (1900, 90),
            (3701, 90),
            (0, 91),
            (3599, 91),
            (3600, 91),
        ]
        .into_iter()
        .enumerate()
        {
            rows.push((10_000 + i as u64, event(ts, visitor, "/a")));
        }
        let frame = || {
            let mut cols = events::EventColumns::default();
            for (seq, e) in &rows {
                cols.push(*seq, e.clone());
            }
            cols.into_frame().unwrap()
        };
        let (timeout, max) = (1800, 3600);
        let plan = visit_plan(frame().frame.lazy(), timeout, max).unwrap();
        let s = sessionise(frame(), timeout, max, (Day(0), Day(0)), &Goals::default()).unwrap();
        let mut attributes = vec![
            col("visit_visitor").first().alias("visitor"),
            col("visit_day").first().alias("day"),
            col("hour").first(),
            col("ts").first().alias("start"),
            col("ts").last().alias("end"),
            len().alias("pageviews"),
        ];
        attributes.extend(VISIT_ATTRIBUTES.map(|a| col(a).first()));
        let want = plan
            .clone()
            .group_by_stable([col("visit_id").cast(DataType::UInt32)])
            .agg(attributes)
            .filter(col("day").eq(lit(0)))
            .collect()
            .unwrap();
        let got = s
            .visits
            .select(want.get_column_names().into_iter().cloned())
            .unwrap();
        assert!(got.equals_missing(&want), "{got}\n{want}");
        let visits = plan
            .clone()
            .select([col("is_entry").sum()])
            .collect()
            .unwrap();
        let all = visits
            .column("is_entry")
            .unwrap()
            .cast(&DataType::UInt64)
            .unwrap();
        let all = all.u64().unwrap().get(0).unwrap() as usize;
        // What the fixture covers: visits of day 1 left out, visits cut at the hour or by
        // a campaign within a stretch, visits running past midnight.
        assert!(
            all > want.height() && want.height() > 200,
            "{all} {}",
            want.height()
        );
        let long = s
            .visits
            .clone()
            .lazy()
            .filter((col("end") - col("start")).gt(lit(3000i64)));
        assert!(long.collect().unwrap().height() > 10);
        let late = s
            .visits
            .clone()
            .lazy()
            .filter(col("end").gt_eq(lit(86_400i64)));
        assert!(late.collect().unwrap().height() > 0);
        let want = plan
            .filter(col("visit_day").eq(lit(0)))
            .select([
                col("visit_id").cast(DataType::UInt32),
                col("visit_visitor").alias("visitor"),
                col("visit_day").alias("day"),
                col("path"),
                col("is_entry"),
                col("is_exit"),
            ])
            .collect()
            .unwrap();
        assert!(s.pageviews.equals_missing(&want), "{}\n{want}", s.pageviews);
    }

    /// [`union_visitors`] by Polars: the rows asked for joined (null keys match), grouped by
    /// unit and visitor, then by unit.
    fn union_by_polars(
        incidence: &DataFrame,
        table: TableName,
        folded: DataFrame,
        texts: &events::Texts,
    ) -> BTreeMap<Unit, i64> {
        let on = row_columns(table);
        let mut args = JoinArgs::new(JoinType::Inner);
        args.nulls_equal = true;
        let mut units = vec![col("day")];
        units.extend(table.keys()[..table.group_keys()].iter().map(|k| col(*k)));
        let mut with_visitor = units.clone();
        with_visitor.push(col("visitor"));
        let df = incidence
            .clone()
            .lazy()
            .join(folded.lazy(), on.clone(), on, args)
            .group_by(with_visitor)
            .agg([len().alias("_n")])
            .group_by(units)
            .agg([len().cast(DataType::Int64).alias("visitors")])
            .collect()
            .unwrap();
        let df = texts.decode(df).unwrap();
        let visitors = df.column("visitors").unwrap().i64().unwrap();
        let keys = unit_keys(table, &df).unwrap();
        (keys.into_iter().enumerate())
            .map(|(i, u)| (u, visitors.get(i).unwrap()))
            .collect()
    }

    /// The unions counted by hand equal Polars' on random row-visitor frames: `attribution`
    /// (two group keys, text ids with nulls), `hourly` (an integer key) and `funnels` (a
    /// group key and an integer key); folded rows that are in the frame, repeated, absent,
    /// or carry a text the bucket does not have.
    #[test]
    fn unions_by_hand_equal_polars() {
        let mut next = crate::test_numbers(0x0417_0a5e);
        let texts = events::Texts::from_frame(
            &df!("text" => (0..12).map(|i| format!("t{i}")).collect::<Vec<_>>()).unwrap(),
        )
        .unwrap();
        for table in [
            TableName::Attribution,
            TableName::Hourly,
            TableName::Funnels,
        ] {
            let n = 3_000;
            let mut rows: Vec<Vec<Option<u32>>> = Vec::new();
            let mut columns = vec![Column::new(
                "day".into(),
                (0..n)
                    .map(|_| 20_000 + (next() % 3) as i32)
                    .collect::<Vec<i32>>(),
            )];
            for key in table.keys() {
                let values: Vec<Option<u32>> = (0..n)
                    .map(|_| {
                        let r = next();
                        (!r.is_multiple_of(5)).then_some((r >> 8) as u32 % 4)
                    })
                    .collect();
                rows.push(values.clone());
                columns.push(match INT_KEYS.contains(key) {
                    true => Column::new(
                        (*key).into(),
                        values
                            .iter()
                            .map(|v| v.map(|v| v as i32))
                            .collect::<Vec<_>>(),
                    ),
                    false => Column::new((*key).into(), values),
                });
            }
            columns.push(Column::new(
                "visitor".into(),
                (0..n).map(|_| next() % 200).collect::<Vec<u64>>(),
            ));
            let incidence = DataFrame::new(n, columns).unwrap();
            // Every third row of the frame's first 300 (repeats likely), and rows that match
            // nothing: an unknown text's id, a day not in the frame.
            let mut picked: Vec<IdxSize> = (0..300).step_by(3).collect();
            picked.push(1);
            let mut folded = incidence
                .drop("visitor")
                .unwrap()
                .take(&IdxCa::from_vec("".into(), picked))
                .unwrap();
            let mut absent = folded.head(Some(2));
            absent.apply("day", |c| c + 9).unwrap();
            folded.vstack_mut(&absent).unwrap();
            if let Some(k) = table.keys().iter().find(|k| !INT_KEYS.contains(k)) {
                let mut unknown = folded.head(Some(1));
                let id = Column::new((*k).into(), [events::NO_ID]);
                unknown.replace(k, id).unwrap();
                folded.vstack_mut(&unknown).unwrap();
            }
            let want = union_by_polars(&incidence, table, folded.clone(), &texts);
            let got = union_visitors(&incidence, table, folded, &texts).unwrap();
            assert!(want.len() >= 3, "{table:?}: {} units", want.len());
            assert!(want.values().any(|&v| v > 1), "{table:?}: visitors repeat");
            assert_eq!(got, want, "{table:?}");
        }
    }

    /// A bucket with clients of the visit log but no events of its own is sessionised too
    /// (its clients still count in the uniques): no visits, no pageviews, no error.
    #[test]
    fn no_events_no_visits() {
        let s = sessions_of(&[]);
        assert_eq!((s.visits.height(), s.pageviews.height()), (0, 0));
        assert!(s.visits.column("pageviews").is_ok());
        assert!(s.pageviews.column("path").is_ok());
    }

    #[test]
    fn partial_table_row_bound_per_visitor() {
        let mut rows: Vec<(u64, Event)> = [9i64, 11, 13, 15]
            .iter()
            .enumerate()
            .map(|(i, hour)| (i as u64, event(hour * 3600, 1, "/a")))
            .collect();
        rows.push((10, event(15 * 3600 + 60, 2, "/b")));
        let s = sessions_of(&rows);
        let hours = |bound: Option<u32>| -> Vec<(i32, i64)> {
            let df = partial_table(&s, TableName::Hourly, bound)
                .unwrap()
                .sort(["hour"], SortMultipleOptions::default())
                .unwrap();
            let h = df.column("hour").unwrap().i32().unwrap();
            let v = df.column("visits").unwrap().i64().unwrap();
            (0..df.height())
                .map(|i| (h.get(i).unwrap(), v.get(i).unwrap()))
                .collect()
        };
        assert_eq!(hours(None), vec![(9, 1), (11, 1), (13, 1), (15, 2)]);
        assert_eq!(hours(Some(2)), vec![(9, 1), (11, 1), (15, 1)]);
    }
}
