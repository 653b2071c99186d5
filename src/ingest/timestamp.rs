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
    let day = digits(&s[0..2])?;
    let month = month(&s[3..6])?;
    let year = digits(&s[7..11])?;
    let hour = digits(&s[12..14])?;
    let minute = digits(&s[15..17])?;
    let second = digits(&s[18..20])?;
    let sign = match s[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let off_h = digits(&s[22..24])?;
    let off_m = digits(&s[24..26])?;
    if day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if off_h > 18 || off_m > 59 {
        return None;
    }
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(local - sign * (off_h * 3600 + off_m * 60))
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

    #[test]
    fn days_from_civil_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
