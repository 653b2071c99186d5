//! Calendar days in the pipeline's time zone, as days since 1970-01-01.
//!
//! A day is both the Hive partition of every table (`date=YYYY-MM-DD`) and the epoch of the
//! visitor key, so one small type carries it through the stages.

use std::fmt;

use crate::ingest::timestamp::days_from_civil;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Day(pub i32);

impl Day {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Day> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            b[r].iter().try_fold(0i64, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
            })
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let day = Day(days_from_civil(y, m, d) as i32);
        // Round-trip rejects 2023-02-30 and month 13.
        (day.civil() == (y, m, d)).then_some(day)
    }

    /// (year, month, day) of this day (Howard Hinnant's `civil_from_days`).
    pub fn civil(self) -> (i64, i64, i64) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    pub fn prev(self) -> Day {
        Day(self.0 - 1)
    }

    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_round_trips() {
        for s in [
            "1970-01-01",
            "2000-02-29",
            "2026-11-24",
            "1969-12-31",
            "2100-03-01",
        ] {
            assert_eq!(Day::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Day::parse("1970-01-02"), Some(Day(1)));
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-1-01",
            "yesterday",
            "2026-11-24x",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
    }
}
