//! The access-log timestamp `10/Oct/2000:13:55:36 -0700` → seconds since the Unix epoch (UTC).
//!
//! Hand-written because it runs once per line: a general date parser costs ten times more
//! (see `../shared/DEPENDENCIES.md`). Conversion to the pipeline's time zone happens later,
//! in the pseudonymise stage, where the epoch of the key is chosen.

/// Parses the inside of the brackets of `%t`. Returns `None` for anything that is not a valid
/// calendar time with a `±hhmm` offset.
pub fn parse_clf(s: &[u8]) -> Option<i64> {
    // dd/Mon/yyyy:hh:mm:ss ±hhmm  (26 bytes)
    if s.len() != 26 || s[2] != b'/' || s[6] != b'/' || s[11] != b':' || s[14] != b':' {
        return None;
    }
    if s[17] != b':' || s[20] != b' ' {
        return None;
    }
    let hour = digits(&s[12..14])?;
    let minute = digits(&s[15..17])?;
    let second = digits(&s[18..20])?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let date: [u8; 11] = s[..11].try_into().expect("11 bytes");
    let zone: [u8; 5] = s[21..].try_into().expect("5 bytes");
    // Lines come in time order, so most share the previous line's date and offset: the
    // calendar arithmetic is done once per (date, offset), per thread.
    let base = match LAST_DAY.get() {
        (d, z, base) if d == date && z == zone => base,
        _ => {
            let base = day_start(&date, &zone)?;
            LAST_DAY.set((date, zone, base));
            base
        }
    };
    Some(base + hour * 3600 + minute * 60 + second)
}

thread_local! {
    /// The last (date, offset) [`parse_clf`] read on this thread and its [`day_start`].
    static LAST_DAY: std::cell::Cell<([u8; 11], [u8; 5], i64)> =
        const { std::cell::Cell::new(([0; 11], [0; 5], 0)) };
}

/// `dd/Mon/yyyy` at 00:00 in the offset `±hhmm`, as seconds since the Unix epoch (UTC).
fn day_start(date: &[u8; 11], zone: &[u8; 5]) -> Option<i64> {
    let day = digits(&date[0..2])?;
    let month = month(&date[3..6])?;
    let year = digits(&date[7..11])?;
    let sign = match zone[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let off_h = digits(&zone[1..3])?;
    let off_m = digits(&zone[3..5])?;
    if day == 0 || day > days_in_month(year, month) || off_h > 18 || off_m > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 - sign * (off_h * 3600 + off_m * 60))
}

fn digits(s: &[u8]) -> Option<i64> {
    let mut n = 0i64;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(b - b'0');
    }
    Some(n)
}

fn month(s: &[u8]) -> Option<i64> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    MONTHS
        .iter()
        .position(|m| m.as_slice() == s)
        .map(|i| i as i64 + 1)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_apache_docs_example() {
        // The Apache docs' example; 2000-10-10T20:55:36Z is 971211336 (date -u -d @971211336).
        assert_eq!(parse_clf(b"10/Oct/2000:13:55:36 -0700"), Some(971_211_336));
    }

    #[test]
    fn timestamp_offsets_and_leap_day() {
        assert_eq!(parse_clf(b"01/Jan/1970:03:00:00 +0300"), Some(0));
        assert_eq!(parse_clf(b"01/Jan/1970:00:00:00 +0000"), Some(0));
        // 2024-02-29T00:00:00Z = 1709164800
        assert_eq!(
            parse_clf(b"29/Feb/2024:00:00:00 +0000"),
            Some(1_709_164_800)
        );
        assert_eq!(parse_clf(b"29/Feb/2023:00:00:00 +0000"), None);
        // India, +05:30
        assert_eq!(parse_clf(b"01/Jan/1970:05:30:00 +0530"), Some(0));
    }

    #[test]
    fn timestamp_rejects_garbage() {
        for bad in [
            &b"10/Oct/2000:13:55:36"[..],
            b"10/Okt/2000:13:55:36 -0700",
            b"32/Oct/2000:13:55:36 -0700",
            b"10/Oct/2000:24:55:36 -0700",
            b"10/Oct/2000:13:55:36 *0700",
            b"1O/Oct/2000:13:55:36 -0700",
            b"",
        ] {
            assert_eq!(parse_clf(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Against jiff's parser, on calls in an order that hits and misses the per-thread
    /// (date, offset) cache: valid times, invalid times on a cached date, invalid dates and
    /// offsets after a valid one.
    #[test]
    fn timestamp_agrees_with_jiff_hit_or_miss() {
        let jiff_of = |t: &str| {
            jiff::fmt::strtime::parse("%d/%b/%Y:%H:%M:%S %z", t)
                .ok()
                .and_then(|p| p.to_timestamp().ok())
                .map(|ts| ts.as_second())
        };
        let mut next = crate::test_numbers(0x2545_f491_4f6c_dd1du64);
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let mut checked = 0;
        for _ in 0..50_000 {
            let x = next();
            let day = 26 + (x % 6); // 26..31: month ends and invalid days
            let month = months[(x >> 4) as usize % 12];
            let year = [2023, 2024, 2100, 2000][(x >> 8) as usize % 4];
            let hour = (x >> 12) % 25; // 24 is invalid
            let minute = (x >> 20) % 61;
            let second = (x >> 28) % 60;
            let zone =
                ["+0300", "-0700", "+0000", "+0530", "+1900", "*0300"][(x >> 36) as usize % 6];
            let t = format!("{day:02}/{month}/{year}:{hour:02}:{minute:02}:{second:02} {zone}");
            // Minute 60 and offsets beyond ±18 hours are ours to refuse (jiff allows ±25 h).
            let want = if minute > 59 || zone == "+1900" {
                None
            } else {
                jiff_of(&t)
            };
            assert_eq!(parse_clf(t.as_bytes()), want, "{t}");
            checked += usize::from(want.is_some());
        }
        assert!(checked > 20_000, "mostly valid times: {checked}");
    }

    #[test]
    fn days_from_civil_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
