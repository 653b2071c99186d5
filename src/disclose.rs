//! Disclose: merged tables → only rows that pass the privacy rules ([`Publishable`]).
//!
//! Rules (decision 13), applied once, to merged totals, never to partials:
//! - every released row has at least `k` distinct visitors, whatever it carries;
//! - tables whose keys are all public (`overview`, `hourly`) list every key; a row under `k`
//!   keeps its keys with null measures and `suppressed = true`, and further rows are
//!   suppressed, smallest first (ties by key), until the suppressed rows together reach `k`
//!   (or hide nobody at all), so the released total minus the released rows never isolates a
//!   small group; tables whose rows partition by their first key (loyalty's dimensions, a
//!   funnel's steps, uniques' periods) settle this within each group;
//! - tables with data-dependent keys (`pages`, `referrers`, `devices`) fold rows under `k` into
//!   one `is_other` row per day, whose visitors are counted exactly by a second pass. If that
//!   row is still under `k`, the smallest released row is folded in as well (the union then
//!   has at least `k` visitors); only a day with no released row at all drops its small rows,
//!   and the drop is counted.
//!
//! [`Publishable`] can only be made here, and `output` accepts nothing else.

use std::collections::BTreeMap;

use crate::aggregate::{KeyValue, Row, TableName};
use crate::day::Day;

pub use crate::aggregate::Unit;

/// Computes the exact measures of the union of rows: given (day, keys) pairs of one table,
/// the measures of their union per [`Unit`] (a second pass over the partials).
pub type OtherRows<'a> =
    dyn FnMut(TableName, &[(Day, Vec<KeyValue>)]) -> anyhow::Result<BTreeMap<Unit, Vec<i64>>> + 'a;

fn unit_of(table: TableName, day: Day, keys: &[KeyValue]) -> Unit {
    (day, keys[..table.group_keys()].to_vec())
}

/// A released row. `measures` are `None` only in suppressed rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasedRow {
    pub keys: Vec<KeyValue>,
    pub measures: Vec<Option<i64>>,
    pub is_other: bool,
    pub suppressed: bool,
    /// With differential privacy: the discrete Laplace scale of the `visitors` noise.
    pub noise_scale: Option<f64>,
}

/// What disclosure did to one table, for the run record.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DisclosureCounts {
    pub rows_released: u64,
    pub rows_suppressed: u64,
    pub rows_folded: u64,
    pub other_rows: u64,
    pub rows_dropped: u64,
}

/// Tables that passed the privacy rules, by table and day.
#[derive(Debug)]
pub struct Publishable {
    tables: Vec<(TableName, BTreeMap<Day, Vec<ReleasedRow>>)>,
    days: (Day, Day),
    noisy: bool,
}

impl Publishable {
    pub fn tables(&self) -> &[(TableName, BTreeMap<Day, Vec<ReleasedRow>>)] {
        &self.tables
    }

    /// The days this release covers (each gets a file per table, empty or not).
    pub fn days(&self) -> (Day, Day) {
        self.days
    }

    /// The released `overview.visits` of a day (null when suppressed).
    pub fn day_visits(&self, day: Day) -> Option<i64> {
        self.tables
            .iter()
            .find(|(t, _)| *t == TableName::Overview)
            .and_then(|(_, by_day)| by_day.get(&day))
            .and_then(|rows| rows.first())
            .and_then(|r| r.measures.get(1).copied().flatten())
    }

    /// Whether rows carry differential-privacy noise (and a `noise_scale` column).
    pub fn noisy(&self) -> bool {
        self.noisy
    }
}

/// Every key of the tables whose keys are public, per day: what is listed whether or not
/// anyone visited (decision 13).
#[derive(Debug, Clone, Default)]
pub struct PublicKeys {
    pub goals: Vec<String>,
    pub funnels: Vec<(String, usize)>,
    /// The loyalty buckets' upper end: the lookback.
    pub lookback_days: u32,
    /// The epoch of each day (uniques start no earlier).
    pub epochs: BTreeMap<Day, Day>,
}

impl PublicKeys {
    pub fn new(goals: &crate::goals::Goals, lookback_days: u32) -> PublicKeys {
        PublicKeys {
            goals: goals.goals.iter().map(|g| g.name.clone()).collect(),
            funnels: goals
                .funnels
                .iter()
                .map(|f| (f.name.clone(), f.steps.len()))
                .collect(),
            lookback_days,
            epochs: BTreeMap::new(),
        }
    }

    pub fn of(&self, table: TableName, day: Day) -> Vec<Vec<KeyValue>> {
        let s = |v: &str| KeyValue::Str(Some(v.to_string()));
        match table {
            TableName::Hourly => (0..24).map(|h| vec![KeyValue::Int(h)]).collect(),
            TableName::Channels => crate::pseudonymise::channel::ALL
                .iter()
                .map(|c| vec![s(c)])
                .collect(),
            TableName::Goals => self.goals.iter().map(|g| vec![s(g)]).collect(),
            TableName::Funnels => self
                .funnels
                .iter()
                .flat_map(|(name, n)| (1..=*n as i64).map(|j| vec![s(name), KeyValue::Int(j)]))
                .collect(),
            TableName::Loyalty => crate::visitors::loyalty_buckets(self.lookback_days)
                .into_iter()
                .map(|(d, b)| vec![s(d), s(&b)])
                .collect(),
            TableName::Uniques => {
                crate::visitors::periods(day, self.epochs.get(&day).copied().unwrap_or(day))
                    .into_iter()
                    .map(|(p, start)| vec![s(p), s(&start.to_string())])
                    .collect()
            }
            _ => vec![vec![]],
        }
    }
}

/// The exact measures of unions of rows, for several tables at once: for each request (a
/// table and (day, keys) pairs of its rows), the measures of their union per [`Unit`]. The
/// pipeline answers a batch with one pass over the buckets.
pub type OtherBatch<'a> =
    dyn FnMut(&[UnionRequest]) -> anyhow::Result<Vec<BTreeMap<Unit, Vec<i64>>>> + 'a;

/// A table and the (day, keys) of the rows whose union it needs measured.
pub type UnionRequest = (TableName, Vec<(Day, Vec<KeyValue>)>);

/// Builds the publishable release. `other` computes the exact measures of folded rows:
/// given (day, keys) pairs of one table, the measures of their union per unit.
pub fn disclose(
    merged: Vec<(TableName, Vec<Row>)>,
    k: u32,
    days: (Day, Day),
    public: &PublicKeys,
    mut other: impl FnMut(
        TableName,
        &[(Day, Vec<KeyValue>)],
    ) -> anyhow::Result<BTreeMap<Unit, Vec<i64>>>,
) -> anyhow::Result<(Publishable, BTreeMap<&'static str, DisclosureCounts>)> {
    disclose_batched(merged, k, days, public, &mut |requests| {
        requests.iter().map(|(t, keys)| other(*t, keys)).collect()
    })
}

/// [`disclose`] with the unions of every table asked for together: the tables are settled
/// in lockstep, so a run takes as many second passes as its most demanding table (usually
/// one or two), not their sum.
pub fn disclose_batched(
    merged: Vec<(TableName, Vec<Row>)>,
    k: u32,
    days: (Day, Day),
    public: &PublicKeys,
    other: &mut OtherBatch<'_>,
) -> anyhow::Result<(Publishable, BTreeMap<&'static str, DisclosureCounts>)> {
    let k = i64::from(k);
    let mut settling: Vec<Settling> = merged
        .into_iter()
        .map(|(table, rows)| {
            if table.public_keys() {
                Settling::Public(Suppression::new(
                    table,
                    &rows,
                    k,
                    &units(table, days, public),
                ))
            } else {
                Settling::Folded(Folding::new(table, rows, k))
            }
        })
        .collect();
    loop {
        let mut asking = Vec::new();
        let mut requests = Vec::new();
        for (i, s) in settling.iter().enumerate() {
            if let Some(keys) = s.request() {
                asking.push(i);
                requests.push((s.table(), keys));
            }
        }
        if requests.is_empty() {
            break;
        }
        let answers = other(&requests)?;
        for (i, answer) in asking.into_iter().zip(answers) {
            settling[i].answer(answer);
        }
    }
    let mut tables = Vec::new();
    let mut counts = BTreeMap::new();
    for s in settling {
        let table = s.table();
        let mut c = DisclosureCounts::default();
        let by_day = match s {
            Settling::Public(p) => p.release(&mut c),
            Settling::Folded(f) => f.release(&mut c),
        };
        tables.push((table, by_day));
        counts.insert(table.as_str(), c);
    }
    Ok((
        Publishable {
            tables,
            days,
            noisy: false,
        },
        counts,
    ))
}

/// One table on its way through the k rule.
enum Settling {
    Public(Suppression),
    Folded(Folding),
}

impl Settling {
    fn table(&self) -> TableName {
        match self {
            Settling::Public(p) => p.table,
            Settling::Folded(f) => f.table,
        }
    }

    /// The rows whose union the table needs measured next, if any.
    fn request(&self) -> Option<Vec<(Day, Vec<KeyValue>)>> {
        match self {
            Settling::Public(p) => p.request(),
            Settling::Folded(f) => f.request(),
        }
    }

    fn answer(&mut self, union: BTreeMap<Unit, Vec<i64>>) {
        match self {
            Settling::Public(p) => p.answer(union),
            Settling::Folded(f) => f.answer(union),
        }
    }
}

/// The keys of a public-key table by unit: per day and group, the keys settled together (all
/// of them, or those sharing a first key: see [`TableName::suppression_groups`]).
fn units(
    table: TableName,
    days: (Day, Day),
    public: &PublicKeys,
) -> BTreeMap<Unit, Vec<Vec<KeyValue>>> {
    let mut units: BTreeMap<Unit, Vec<Vec<KeyValue>>> = BTreeMap::new();
    for day in (days.0.0..=days.1.0).map(Day) {
        for keys in public.of(table, day) {
            units
                .entry(unit_of(table, day, &keys))
                .or_default()
                .push(keys);
        }
    }
    units
}

/// A public-key table: every key listed; rows under k suppressed, then, while the suppressed
/// rows of a unit hide between 1 and k − 1 distinct visitors (counted exactly over their union:
/// one person may stand behind several hours), the smallest released row too.
struct Suppression {
    table: TableName,
    k: i64,
    by_unit: BTreeMap<Unit, (Vec<Row>, Vec<bool>)>,
    done: bool,
}

impl Suppression {
    fn new(
        table: TableName,
        rows: &[Row],
        k: i64,
        keys_by_unit: &BTreeMap<Unit, Vec<Vec<KeyValue>>>,
    ) -> Suppression {
        let zero = vec![0i64; table.measures().len()];
        let mut by_unit = BTreeMap::new();
        for (unit, all_keys) in keys_by_unit {
            let day = unit.0;
            let full: Vec<Row> = all_keys
                .iter()
                .map(|keys| {
                    rows.iter()
                        .find(|r| r.day == day && &r.keys == keys)
                        .cloned()
                        .unwrap_or(Row {
                            day,
                            keys: keys.clone(),
                            measures: zero.clone(),
                        })
                })
                .collect();
            let suppressed = full.iter().map(|r| r.visitors() < k).collect();
            by_unit.insert(unit.clone(), (full, suppressed));
        }
        Suppression {
            table,
            k,
            by_unit,
            done: false,
        }
    }

    fn request(&self) -> Option<Vec<(Day, Vec<KeyValue>)>> {
        if self.done {
            return None;
        }
        let hidden: Vec<(Day, Vec<KeyValue>)> = self
            .by_unit
            .iter()
            .flat_map(|((d, _), (full, sup))| {
                full.iter()
                    .zip(sup)
                    .filter(|(_, s)| **s)
                    .map(move |(r, _)| (*d, r.keys.clone()))
            })
            .collect();
        (!hidden.is_empty()).then_some(hidden)
    }

    fn answer(&mut self, union: BTreeMap<Unit, Vec<i64>>) {
        let mut changed = false;
        for (unit, (full, sup)) in self.by_unit.iter_mut() {
            let any = sup.iter().any(|s| *s);
            let hidden_visitors = union.get(unit).map_or(0, |m| m[0]);
            // Rows hiding nobody (all zero) protect no one and need no company.
            if !any || hidden_visitors == 0 || hidden_visitors >= self.k {
                continue;
            }
            let next = (0..full.len()).filter(|i| !sup[*i]).min_by(|a, b| {
                (full[*a].visitors(), &full[*a].keys).cmp(&(full[*b].visitors(), &full[*b].keys))
            });
            if let Some(i) = next {
                sup[i] = true;
                changed = true;
            }
        }
        self.done = !changed;
    }

    fn release(self, c: &mut DisclosureCounts) -> BTreeMap<Day, Vec<ReleasedRow>> {
        let mut out: BTreeMap<Day, Vec<ReleasedRow>> = BTreeMap::new();
        for ((day, _), (full, suppressed)) in self.by_unit {
            let released = full.into_iter().zip(suppressed).map(|(r, s)| {
                if s {
                    c.rows_suppressed += 1;
                } else {
                    c.rows_released += 1;
                }
                ReleasedRow {
                    keys: r.keys,
                    measures: if s {
                        vec![None; r.measures.len()]
                    } else {
                        r.measures.into_iter().map(Some).collect()
                    },
                    is_other: false,
                    suppressed: s,
                    noise_scale: None,
                }
            });
            out.entry(day).or_default().extend(released);
        }
        out
    }
}

/// A table with data-dependent keys: rows under k folded into one `(other)` row per unit;
/// when that row is itself under k, the unit's smallest released row is folded in too (one
/// refold, after which the union holds at least k visitors or the unit has no released row).
struct Folding {
    table: TableName,
    k: i64,
    by_unit: BTreeMap<Unit, (Vec<Row>, Vec<Row>)>,
    others: Option<BTreeMap<Unit, Vec<i64>>>,
    refolded: bool,
}

impl Folding {
    fn new(table: TableName, rows: Vec<Row>, k: i64) -> Folding {
        let mut by_unit: BTreeMap<Unit, (Vec<Row>, Vec<Row>)> = BTreeMap::new();
        for r in rows {
            let entry = by_unit.entry(unit_of(table, r.day, &r.keys)).or_default();
            if r.visitors() >= k {
                entry.0.push(r)
            } else {
                entry.1.push(r)
            }
        }
        Folding {
            table,
            k,
            by_unit,
            others: None,
            refolded: false,
        }
    }

    fn folded_keys(&self) -> Vec<(Day, Vec<KeyValue>)> {
        self.by_unit
            .iter()
            .flat_map(|((d, _), (_, small))| small.iter().map(move |r| (*d, r.keys.clone())))
            .collect()
    }

    fn request(&self) -> Option<Vec<(Day, Vec<KeyValue>)>> {
        match (&self.others, self.refolded) {
            // First pass; or the refold changed the folded rows.
            (None, _) => Some(self.folded_keys()).filter(|k| !k.is_empty()),
            (Some(_), _) => None,
        }
    }

    fn answer(&mut self, others: BTreeMap<Unit, Vec<i64>>) {
        if self.refolded {
            self.others = Some(others);
            return;
        }
        // Units whose (other) row is under k: fold their smallest released row in as well.
        let mut refold = false;
        for (unit, (big, small)) in self.by_unit.iter_mut() {
            let under = !small.is_empty() && others.get(unit).is_none_or(|m| m[0] < self.k);
            if under && !big.is_empty() {
                let i = (0..big.len())
                    .min_by(|a, b| {
                        (big[*a].visitors(), &big[*a].keys)
                            .cmp(&(big[*b].visitors(), &big[*b].keys))
                    })
                    .expect("non-empty");
                small.push(big.remove(i));
                refold = true;
            }
        }
        self.refolded = true;
        // Without a refold the first answer stands; with one, ask again.
        self.others = (!refold).then_some(others);
    }

    fn release(self, c: &mut DisclosureCounts) -> BTreeMap<Day, Vec<ReleasedRow>> {
        let others = self.others.unwrap_or_default();
        let mut out: BTreeMap<Day, Vec<ReleasedRow>> = BTreeMap::new();
        for (unit, (big, small)) in self.by_unit {
            let (day, prefix) = (unit.0, &unit.1);
            let mut released: Vec<ReleasedRow> = big
                .into_iter()
                .map(|r| ReleasedRow {
                    keys: r.keys,
                    measures: r.measures.into_iter().map(Some).collect(),
                    is_other: false,
                    suppressed: false,
                    noise_scale: None,
                })
                .collect();
            c.rows_released += released.len() as u64;
            if !small.is_empty() {
                match others.get(&unit).filter(|m| m[0] >= self.k) {
                    Some(measures) => {
                        c.rows_folded += small.len() as u64;
                        c.other_rows += 1;
                        released.push(ReleasedRow {
                            keys: prefix
                                .iter()
                                .cloned()
                                .chain(
                                    self.table.keys()[prefix.len()..]
                                        .iter()
                                        .map(|_| KeyValue::Str(Some("(other)".into()))),
                                )
                                .collect(),
                            measures: measures.iter().copied().map(Some).collect(),
                            is_other: true,
                            suppressed: false,
                            noise_scale: None,
                        });
                    }
                    None => c.rows_dropped += small.len() as u64,
                }
            }
            out.entry(day).or_default().extend(released);
        }
        out
    }
}

/// What differential privacy did to one table, for the run record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DpTableRecord {
    pub epsilon: f64,
    pub delta: f64,
    pub rows_per_visitor: u64,
    /// L1 sensitivity and noise scale of each measure.
    pub sensitivity: BTreeMap<&'static str, u64>,
    pub noise_scale: BTreeMap<&'static str, f64>,
    /// Release threshold on noisy visitors (data-dependent keys only).
    pub threshold: Option<f64>,
}

/// A differential-privacy release, what it did per table, and its parameters per table.
pub type DpDisclosure = (
    Publishable,
    BTreeMap<&'static str, DisclosureCounts>,
    BTreeMap<&'static str, DpTableRecord>,
);

/// The differential-privacy release: noise on every measure, all public keys listed, rows
/// with data-dependent keys released only when their noisy visitors reach max(k, τ) (private
/// partition selection). No `(other)` row is formed: folded rows would be measured twice.
/// `release_key(day)` gives the noise key of a day.
pub fn disclose_dp(
    merged: Vec<(TableName, Vec<Row>)>,
    dp: &crate::dp::DpSettings,
    k: u32,
    days: (Day, Day),
    public: &PublicKeys,
    release_key: &dyn Fn(Day) -> Option<[u8; 32]>,
) -> anyhow::Result<DpDisclosure> {
    use crate::dp::{RandomStream, laplace_scale, threshold};
    let mut tables = Vec::new();
    let mut counts = BTreeMap::new();
    let mut records = BTreeMap::new();
    for (table, rows) in merged {
        let (rows_per_visitor, sensitivity) = dp.bounds.sensitivity(table);
        let eps_measure = dp.epsilon / sensitivity.len() as f64;
        let scales: Vec<(u64, u64)> = sensitivity
            .iter()
            .map(|s| laplace_scale((*s).max(1), eps_measure))
            .collect();
        let b: Vec<f64> = scales.iter().map(|(s, t)| *t as f64 / *s as f64).collect();
        let tau = (!table.public_keys()).then(|| threshold(b[0], dp.delta, rows_per_visitor));
        let mut c = DisclosureCounts::default();
        let mut by_day: BTreeMap<Day, Vec<ReleasedRow>> = BTreeMap::new();
        let all_rows: Vec<Row> = if table.public_keys() {
            (days.0.0..=days.1.0)
                .map(Day)
                .flat_map(|day| {
                    public
                        .of(table, day)
                        .iter()
                        .map(|kv| {
                            rows.iter()
                                .find(|r| r.day == day && &r.keys == kv)
                                .cloned()
                                .unwrap_or(Row {
                                    day,
                                    keys: kv.clone(),
                                    measures: vec![0; sensitivity.len()],
                                })
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        } else {
            rows
        };
        for row in all_rows {
            by_day.entry(row.day).or_default();
            let key = release_key(row.day).ok_or_else(|| {
                anyhow::anyhow!("no key covers {} for the release noise", row.day)
            })?;
            let noisy: Vec<i64> = row
                .measures
                .iter()
                .zip(table.measures())
                .zip(&scales)
                .map(|((value, measure), (s, t))| {
                    let label = format!(
                        "{}|{}|{:?}|{measure}|{value}",
                        table.as_str(),
                        row.day,
                        row.keys
                    );
                    (value
                        + RandomStream::for_cell(&key, label.as_bytes()).discrete_laplace(*s, *t))
                    .max(0)
                })
                .collect();
            let released = match tau {
                None => true,
                Some(tau) => noisy[0] as f64 >= tau.max(f64::from(k)),
            };
            if !released {
                c.rows_dropped += 1;
                continue;
            }
            c.rows_released += 1;
            by_day.entry(row.day).or_default().push(ReleasedRow {
                keys: row.keys,
                measures: noisy.into_iter().map(Some).collect(),
                is_other: false,
                suppressed: false,
                noise_scale: Some(b[0]),
            });
        }
        records.insert(
            table.as_str(),
            DpTableRecord {
                epsilon: dp.epsilon,
                delta: dp.delta,
                rows_per_visitor,
                sensitivity: table
                    .measures()
                    .iter()
                    .copied()
                    .zip(sensitivity.iter().copied())
                    .collect(),
                noise_scale: table
                    .measures()
                    .iter()
                    .copied()
                    .zip(b.iter().copied())
                    .collect(),
                threshold: tau,
            },
        );
        counts.insert(table.as_str(), c);
        tables.push((table, by_day));
    }
    Ok((
        Publishable {
            tables,
            days,
            noisy: true,
        },
        counts,
        records,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: i32, key: &str, visitors: i64) -> Row {
        Row {
            day: Day(day),
            keys: vec![KeyValue::Str(Some(key.into()))],
            measures: vec![visitors, visitors],
        }
    }

    fn hourly(rows: &[(i64, i64)]) -> Vec<Row> {
        rows.iter()
            .map(|&(h, v)| Row {
                day: Day(0),
                keys: vec![KeyValue::Int(h)],
                measures: vec![v, v, v],
            })
            .collect()
    }

    /// The union of hidden hours when every visitor is behind one hour only: the sum.
    fn distinct_sum(rows: Vec<Row>) -> Box<OtherRows<'static>> {
        Box::new(move |_, keys| {
            let v: i64 = rows
                .iter()
                .filter(|r| keys.iter().any(|(_, k)| *k == r.keys))
                .map(|r| r.visitors())
                .sum();
            Ok(BTreeMap::from([((Day(0), vec![]), vec![v, v, v])]))
        })
    }

    fn shown(p: &Publishable) -> Vec<usize> {
        let day = &p.tables()[0].1[&Day(0)];
        assert_eq!(day.len(), 24);
        (0..24).filter(|h| !day[*h].suppressed).collect()
    }

    #[test]
    fn disclose_hourly_suppresses_until_the_hidden_rows_reach_k() {
        // Hours 9 (7 visitors), 10 (3), 11 (2), 12 (9); k = 5. Rows under k: the 20 empty hours,
        // 10 and 11 → hidden 5 ≥ k, nothing more is suppressed.
        let rows = hourly(&[(9, 7), (10, 3), (11, 2), (12, 9)]);
        let (p, counts) = disclose(
            vec![(TableName::Hourly, rows.clone())],
            5,
            (Day(0), Day(0)),
            &PublicKeys::default(),
            distinct_sum(rows),
        )
        .unwrap();
        assert_eq!(shown(&p), vec![9, 12]);
        assert_eq!(counts["hourly"].rows_suppressed, 22);
        // Hour 10 with 4 visitors alone under k: hidden 4 < 5, so hour 9 (next smallest) goes too.
        let rows = hourly(&[(9, 7), (10, 4), (12, 9)]);
        let (p, _) = disclose(
            vec![(TableName::Hourly, rows.clone())],
            5,
            (Day(0), Day(0)),
            &PublicKeys::default(),
            distinct_sum(rows),
        )
        .unwrap();
        assert_eq!(shown(&p), vec![12]);
        let day = &p.tables()[0].1[&Day(0)];
        assert_eq!(day[12].measures, vec![Some(9), Some(9), Some(9)]);
        assert_eq!(day[9].measures, vec![None, None, None]);
    }

    #[test]
    fn disclose_hourly_counts_hidden_visitors_over_their_union() {
        // Hours 10 (3) and 11 (2) are the same 3 people: their union is 3 < 5, although
        // the sum is 5, so hour 9 is suppressed too.
        let rows = hourly(&[(9, 7), (10, 3), (11, 2), (12, 9)]);
        let union = |_: TableName, keys: &[(Day, Vec<KeyValue>)]| {
            let has = |h: i64| keys.iter().any(|(_, k)| k[0] == KeyValue::Int(h));
            let v = if has(9) {
                10
            } else if has(10) || has(11) {
                3
            } else {
                0
            };
            Ok(BTreeMap::from([((Day(0), vec![]), vec![v, v, v])]))
        };
        let (p, _) = disclose(
            vec![(TableName::Hourly, rows)],
            5,
            (Day(0), Day(0)),
            &PublicKeys::default(),
            union,
        )
        .unwrap();
        assert_eq!(shown(&p), vec![12]);
    }

    #[test]
    fn disclose_folds_small_rows_and_refolds_when_other_is_under_k() {
        let rows = vec![
            row(0, "/a", 10),
            row(0, "/b", 6),
            row(0, "/c", 2),
            row(0, "/d", 1),
        ];
        let mut calls = Vec::new();
        let (p, counts) = disclose(
            vec![(TableName::Pages, rows)],
            5,
            (Day(0), Day(0)),
            &PublicKeys::default(),
            |_: TableName, keys: &[(Day, Vec<KeyValue>)]| {
                calls.push(keys.len());
                // Union visitors: /c ∪ /d = 3 (under k); with /b added = 8.
                let v = if keys.len() == 2 { 3 } else { 8 };
                Ok(BTreeMap::from([((Day(0), vec![]), vec![v, v])]))
            },
        )
        .unwrap();
        assert_eq!(calls, vec![2, 3]);
        let day = &p.tables()[0].1[&Day(0)];
        assert_eq!(day.len(), 2);
        assert_eq!(day[0].keys, vec![KeyValue::Str(Some("/a".into()))]);
        assert!(day[1].is_other);
        assert_eq!(day[1].measures, vec![Some(8), Some(8)]);
        assert_eq!(
            counts["pages"],
            DisclosureCounts {
                rows_released: 1,
                rows_folded: 3,
                other_rows: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn disclose_drops_when_nothing_reaches_k() {
        let rows = vec![row(0, "/c", 2), row(0, "/d", 1)];
        let (p, counts) = disclose(
            vec![(TableName::Pages, rows)],
            5,
            (Day(0), Day(0)),
            &PublicKeys::default(),
            |_, _| Ok(BTreeMap::from([((Day(0), vec![]), vec![3, 3])])),
        )
        .unwrap();
        assert!(p.tables()[0].1[&Day(0)].is_empty());
        assert_eq!(counts["pages"].rows_dropped, 2);
    }

    /// Loyalty rows settle suppression within each dimension: "new" (2 visitors) is hidden,
    /// and since its dimension's rows add up to the day's visitors, "returning" is hidden as
    /// well; the visit-number dimension is settled on its own.
    #[test]
    fn disclose_public_groups_suppress_within_each_dimension() {
        let s = |v: &str| KeyValue::Str(Some(v.to_string()));
        let row = |d: &str, b: &str, v: i64| Row {
            day: Day(0),
            keys: vec![s(d), s(b)],
            measures: vec![v, v],
        };
        let rows = vec![
            row("visitor_type", "new", 2),
            row("visitor_type", "returning", 40),
            row("visit_number", "1", 30),
            row("visit_number", "2", 12),
        ];
        let public = PublicKeys {
            lookback_days: 30,
            ..Default::default()
        };
        let sum = rows.clone();
        let (p, _) = disclose(
            vec![(TableName::Loyalty, rows)],
            5,
            (Day(0), Day(0)),
            &public,
            move |_: TableName, keys: &[(Day, Vec<KeyValue>)]| {
                // Visitors summed per dimension (the unit of a loyalty row).
                let mut out: BTreeMap<Unit, Vec<i64>> = BTreeMap::new();
                for (day, k) in keys {
                    let v = sum
                        .iter()
                        .find(|r| r.keys == *k)
                        .map_or(0, |r| r.measures[0]);
                    let e = out.entry((*day, vec![k[0].clone()])).or_insert(vec![0, 0]);
                    e[0] += v;
                    e[1] += v;
                }
                Ok(out)
            },
        )
        .unwrap();
        let day = &p.tables()[0].1[&Day(0)];
        let state = |d: &str, b: &str| {
            day.iter()
                .find(|r| r.keys == vec![s(d), s(b)])
                .map(|r| r.suppressed)
                .unwrap()
        };
        assert!(state("visitor_type", "new") && state("visitor_type", "returning"));
        // Visit numbers: the empty buckets 3-4, 5-8, 9+ are suppressed but hide nobody, so
        // they need no company: 1 and 2 are released.
        assert!(!state("visit_number", "1") && !state("visit_number", "2"));
        assert!(state("visit_number", "9+"));
        assert!(
            state("days_since_last_visit", "0"),
            "empty rows are suppressed"
        );
    }
}
