//! Ad spend: an optional CSV per pipeline, joined to the `campaigns` table for cost, cost per
//! visit, CPA and ROAS.
//!
//! The file is the advertiser's own data (no personal data): one row per date and campaign,
//! `date,utm_source,utm_medium,utm_campaign,cost,currency`, a header line first. utm values are
//! normalised as the pageviews' are (case-folded, aliases: `ya.ru` → `yandex`), so a cost row
//! meets the visits of its campaign. Costs are kept in minor units (kopecks), exactly: `1234.5`,
//! `1234,50` and `1 234,50` are all 123 450. Several rows for one date and campaign add up. A
//! bad row is an error naming the file, line and column; nothing is guessed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::day::Day;
use crate::pseudonymise::campaign::CampaignRules;

/// (date, utm_source, utm_medium, utm_campaign) → cost in minor units.
pub type CostKey = (Day, Option<String>, Option<String>, Option<String>);

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Costs {
    pub by_campaign: BTreeMap<CostKey, i64>,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct CostError {
    pub path: String,
    pub line: u64,
    pub column: String,
    pub message: String,
}

impl CostError {
    fn describe(&self) -> String {
        if self.line == 0 {
            // The file itself: missing or unreadable.
            format!(
                "cannot read the ad spend file {}: {}; `costs` in the pipeline names it, relative to the pipeline file",
                self.path, self.message
            )
        } else {
            format!(
                "ad spend file {}, line {}, column {}: {}",
                self.path, self.line, self.column, self.message
            )
        }
    }
}

const COLUMNS: [&str; 6] = [
    "date",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "cost",
    "currency",
];

impl Costs {
    /// Reads a cost file; every cost must be in `currency` (the pipeline's). utm values are
    /// normalised by the pipeline's campaign `rules`, as the pageviews' are.
    pub fn read(path: &Path, currency: &str, rules: &CampaignRules) -> Result<Costs, CostError> {
        let shown = path.display().to_string();
        let err = |line: u64, column: &str, message: String| CostError {
            path: shown.clone(),
            line,
            column: column.to_string(),
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_path(path)
            .map_err(|e| err(0, "-", e.to_string()))?;
        let header = reader
            .headers()
            .map_err(|e| err(1, "-", e.to_string()))?
            .clone();
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if names != COLUMNS {
            return Err(err(
                1,
                "-",
                format!("the header must be {}", COLUMNS.join(",")),
            ));
        }
        let mut costs = Costs::default();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                err(line, "-", format!("not a valid CSV row ({e})"))
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |i: usize| record.get(i).unwrap_or("").trim();
            let date = Day::parse(field(0))
                .ok_or_else(|| err(line, "date", "not a date like 2026-11-24".to_string()))?;
            let cost = parse_minor(field(4), minor_digits(currency))
                .ok_or_else(|| err(line, "cost", "not an amount like 1234.50".to_string()))?;
            if !field(5).eq_ignore_ascii_case(currency) {
                return Err(err(
                    line,
                    "currency",
                    format!("{:?} is not the pipeline's currency {currency}", field(5)),
                ));
            }
            let utm =
                |i: usize, key: &str| rules.normalise_utm(key, field(i)).map(|v| v.to_string());
            let key = (
                date,
                utm(1, "utm_source"),
                utm(2, "utm_medium"),
                utm(3, "utm_campaign"),
            );
            if key.1.is_none() && key.2.is_none() && key.3.is_none() {
                return Err(err(
                    line,
                    "utm_campaign",
                    "a cost row names no campaign (utm_source, utm_medium and utm_campaign are all empty)".into(),
                ));
            }
            *costs.by_campaign.entry(key).or_default() += cost;
        }
        Ok(costs)
    }

    /// The costs of one day.
    pub fn of_day(&self, day: Day) -> impl Iterator<Item = (&CostKey, &i64)> {
        self.by_campaign
            .range((day, None, None, None)..)
            .take_while(move |(k, _)| k.0 == day)
    }
}

/// Decimal digits of a currency's minor unit (ISO 4217): 2 unless listed.
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `1234.5`, `1234,50`, `1 234,50`, `1234` → minor units of a currency with `digits` decimal
/// digits; no more decimals than that, not negative.
fn parse_minor(text: &str, digits: u32) -> Option<i64> {
    let t: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{a0}' && *c != '\u{202f}')
        .collect();
    let (int, frac) = match t.find([',', '.']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (&t[..], ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > digits as usize
        || int.len() > 15
    {
        return None;
    }
    let scale = 10i64.pow(digits);
    let frac_minor = if frac.is_empty() {
        0
    } else {
        frac.parse::<i64>().ok()? * 10i64.pow(digits - frac.len() as u32)
    };
    Some(int.parse::<i64>().ok()? * scale + frac_minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_in_minor_units() {
        assert_eq!(parse_minor("1234.5", 2), Some(123_450));
        assert_eq!(parse_minor("1234,50", 2), Some(123_450));
        assert_eq!(parse_minor("1 234,05", 2), Some(123_405));
        assert_eq!(parse_minor("0", 2), Some(0));
        assert_eq!(parse_minor("-5", 2), None);
        assert_eq!(parse_minor("1.234", 2), None);
        assert_eq!(parse_minor("12a", 2), None);
        assert_eq!(parse_minor("", 2), None);
        // Yen have no minor unit, dinars three decimals.
        assert_eq!(parse_minor("1500", minor_digits("JPY")), Some(1500));
        assert_eq!(parse_minor("1500.5", minor_digits("JPY")), None);
        assert_eq!(parse_minor("1.234", minor_digits("KWD")), Some(1234));
    }

    #[test]
    fn cost_file_rows_add_up_and_errors_name_line_and_column() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("costs.csv");
        std::fs::write(
            &p,
            "date,utm_source,utm_medium,utm_campaign,cost,currency\n\
             2026-11-02,Ya.ru,CPC,Осень,\"1 000,50\",RUB\n\
             2026-11-02,yandex,cpc,осень,99.5,rub\n\
             2026-11-03,vk,cpc,winter,10,RUB\n",
        )
        .unwrap();
        let c = Costs::read(&p, "RUB", &CampaignRules::builtin()).unwrap();
        let key = (
            Day::parse("2026-11-02").unwrap(),
            Some("yandex".to_string()),
            Some("cpc".to_string()),
            Some("осень".to_string()),
        );
        assert_eq!(c.by_campaign[&key], 100_050 + 9_950);
        assert_eq!(c.of_day(Day::parse("2026-11-03").unwrap()).count(), 1);

        let bad = |body: &str| {
            std::fs::write(&p, body).unwrap();
            Costs::read(&p, "RUB", &CampaignRules::builtin()).unwrap_err()
        };
        let e = bad(
            "date,utm_source,utm_medium,utm_campaign,cost,currency\n2026-11-02,a,b,c,1,RUB\n2026-13-02,a,b,c,1,RUB\n",
        );
        assert_eq!((e.line, e.column.as_str()), (3, "date"));
        let e = bad(
            "date,utm_source,utm_medium,utm_campaign,cost,currency\n2026-11-02,a,b,c,ten,RUB\n",
        );
        assert_eq!((e.line, e.column.as_str()), (2, "cost"));
        let e =
            bad("date,utm_source,utm_medium,utm_campaign,cost,currency\n2026-11-02,a,b,c,1,EUR\n");
        assert_eq!((e.line, e.column.as_str()), (2, "currency"));
        assert!(e.to_string().contains("costs.csv, line 2, column currency"));
        let e = bad("date,source,cost\n");
        assert_eq!(e.line, 1);
        let e = bad("date,utm_source,utm_medium,utm_campaign,cost,currency\n2026-11-02,a,b\n");
        assert_eq!(e.line, 2);
        // A missing file is named as such, with where its name comes from.
        let e = Costs::read(
            Path::new("/nonexistent/costs.csv"),
            "RUB",
            &CampaignRules::builtin(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("cannot read the ad spend file /nonexistent/costs.csv:")
                && e.contains("relative to the pipeline file"),
            "{e}"
        );
    }
}
