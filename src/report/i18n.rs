//! Russian and English: labels, numbers and dates as a reader of each language expects them
//! (`1 234,5` and `24.11.2026` in Russian; `1,234.5` and `Nov 24, 2026` in English).

use crate::day::Day;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Lang {
    Ru,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "ru" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// A label by key; the key itself when there is none (never a blank).
    pub fn t(self, key: &str) -> &'static str {
        LABELS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, ru, en)| match self {
                Lang::Ru => *ru,
                Lang::En => *en,
            })
            .unwrap_or("?")
    }

    /// A number with `decimals` digits: `1 234,5` (ru, narrow no-break space) or `1,234.5`.
    pub fn number(self, v: f64, decimals: usize) -> String {
        let text = format!("{:.*}", decimals, v.abs());
        let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
        let (group, point) = match self {
            Lang::Ru => ('\u{202f}', ','),
            Lang::En => (',', '.'),
        };
        let mut out = String::new();
        for (i, c) in int.chars().enumerate() {
            if i > 0 && (int.len() - i) % 3 == 0 {
                out.push(group);
            }
            out.push(c);
        }
        if !frac.is_empty() {
            out.push(point);
            out.push_str(frac);
        }
        if v < 0.0 && out.chars().any(|c| c != '0' && c.is_ascii_digit()) {
            out.insert(0, '−');
        }
        out
    }

    pub fn int(self, v: f64) -> String {
        self.number(v.round(), 0)
    }

    pub fn percent(self, share: f64) -> String {
        match self {
            Lang::Ru => format!("{}\u{a0}%", self.number(share * 100.0, 1)),
            Lang::En => format!("{}%", self.number(share * 100.0, 1)),
        }
    }

    /// A change between two periods: `+12,5 %`, or `—` without a base.
    pub fn change(self, now: f64, before: f64) -> String {
        if before <= 0.0 {
            return "—".into();
        }
        let c = (now - before) / before;
        let sign = if c > 0.0 { "+" } else { "" };
        format!("{sign}{}", self.percent(c))
    }

    pub fn date(self, d: Day) -> String {
        let (y, m, day) = d.civil();
        match self {
            Lang::Ru => format!("{day:02}.{m:02}.{y}"),
            Lang::En => format!("{} {day}, {y}", MONTHS_EN[(m - 1) as usize]),
        }
    }

    /// `ноябрь 2026` / `November 2026`.
    pub fn month(self, d: Day) -> String {
        let (y, m, _) = d.civil();
        match self {
            Lang::Ru => format!("{} {y}", MONTHS_RU[(m - 1) as usize]),
            Lang::En => format!("{} {y}", MONTHS_EN_LONG[(m - 1) as usize]),
        }
    }

    pub fn weekday(self, i: usize) -> &'static str {
        match self {
            Lang::Ru => ["пн", "вт", "ср", "чт", "пт", "сб", "вс"][i % 7],
            Lang::En => ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][i % 7],
        }
    }

    /// Seconds as `4 мин 23 с` / `4 min 23 s`.
    pub fn duration(self, secs: f64) -> String {
        let s = secs.round() as i64;
        let (m, s) = (s / 60, s % 60);
        match self {
            Lang::Ru if m > 0 => format!("{m}\u{a0}мин {s}\u{a0}с"),
            Lang::Ru => format!("{s}\u{a0}с"),
            Lang::En if m > 0 => format!("{m}\u{a0}min {s}\u{a0}s"),
            Lang::En => format!("{s}\u{a0}s"),
        }
    }
}

const MONTHS_EN: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const MONTHS_EN_LONG: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_RU: [&str; 12] = [
    "январь",
    "февраль",
    "март",
    "апрель",
    "май",
    "июнь",
    "июль",
    "август",
    "сентябрь",
    "октябрь",
    "ноябрь",
    "декабрь",
];

/// (key, Russian, English).
const LABELS: &[(&str, &str, &str)] = &[
    ("title", "Отчёт о посещаемости", "Traffic report"),
    ("period", "Период", "Period"),
    ("previous", "к предыдущему периоду", "vs previous period"),
    ("visitors", "Посетители", "Visitors"),
    (
        "visitors_sum",
        "Посетители (сумма по дням)",
        "Visitors (sum of days)",
    ),
    ("visits", "Визиты", "Visits"),
    ("pageviews", "Просмотры", "Pageviews"),
    ("bounce_rate", "Отказы", "Bounce rate"),
    ("duration", "Время на сайте", "Visit duration"),
    ("depth", "Глубина просмотра", "Pages per visit"),
    ("conversions", "Конверсии", "Conversions"),
    ("conversion_rate", "Конверсия", "Conversion rate"),
    ("value", "Ценность", "Value"),
    ("cost", "Расход", "Cost"),
    ("cpa", "CPA", "CPA"),
    ("roas", "ROAS", "ROAS"),
    ("cost_per_visit", "Цена визита", "Cost per visit"),
    (
        "daily",
        "Визиты и посетители по дням",
        "Visits and visitors per day",
    ),
    (
        "heatmap",
        "Визиты по часам и дням недели",
        "Visits by hour and weekday",
    ),
    ("hour", "Час", "Hour"),
    ("date", "Дата", "Date"),
    ("channels", "Каналы", "Channels"),
    ("channel", "Канал", "Channel"),
    (
        "channel_trend",
        "Визиты по каналам и дням",
        "Visits per channel and day",
    ),
    ("campaigns", "Кампании", "Campaigns"),
    ("source", "Источник", "Source"),
    ("medium", "Канал (utm_medium)", "Medium"),
    ("campaign", "Кампания", "Campaign"),
    (
        "attribution",
        "Атрибуция по моделям",
        "Attribution by model",
    ),
    ("goals", "Цели", "Goals"),
    ("goal", "Цель", "Goal"),
    ("funnels", "Воронки", "Funnels"),
    ("step", "Шаг", "Step"),
    ("drop_off", "Отвал", "Drop-off"),
    ("pages", "Страницы", "Pages"),
    ("path", "Страница", "Page"),
    ("entries", "Входы", "Entries"),
    ("exits", "Выходы", "Exits"),
    ("referrers", "Сайты-источники", "Referrers"),
    ("referrer", "Сайт", "Referring site"),
    (
        "devices",
        "Устройства, браузеры, ОС",
        "Devices, browsers, OS",
    ),
    ("device", "Устройство", "Device"),
    ("browser", "Браузер", "Browser"),
    ("os", "ОС", "OS"),
    (
        "loyalty",
        "Новые и вернувшиеся",
        "New and returning visitors",
    ),
    ("dimension", "Разрез", "Dimension"),
    ("bucket", "Группа", "Bucket"),
    ("quality", "Качество данных", "Data quality"),
    ("run", "Запуск", "Run"),
    ("dates", "Даты", "Dates"),
    ("lines_read", "Строк прочитано", "Lines read"),
    ("lines_parsed", "Разобрано", "Parsed"),
    ("lines_rejected", "Отклонено", "Rejected"),
    ("reasons", "Причины", "Reasons"),
    ("privacy", "Конфиденциальность", "Privacy"),
    ("suppressed", "скрыто (меньше k)", "hidden (under k)"),
    ("other_row", "(прочие)", "(other)"),
    (
        "k_note",
        "Каждая показанная строка описывает не меньше k разных посетителей; меньшие группы скрыты или объединены в «(прочие)».",
        "Every row shown stands for at least k distinct visitors; smaller groups are hidden or merged into “(other)”.",
    ),
    (
        "dp_note",
        "Значения содержат шум дифференциальной приватности; ± — 95-процентный интервал шума, итоги не точны.",
        "Values carry differential-privacy noise; ± is the noise's 95% interval, and totals are not exact.",
    ),
    ("epsilon", "Израсходовано ε", "ε spent"),
    ("epochs", "Эпохи ключей", "Key epochs"),
    (
        "no_data",
        "Нет данных за период.",
        "No data for this period.",
    ),
    (
        "sum_note",
        "Посетители за несколько дней — сумма дневных значений, не уникальные люди.",
        "Visitors over several days are the sum of daily figures, not distinct people.",
    ),
    ("model", "Модель", "Model"),
    ("first_touch", "Первое касание", "First touch"),
    ("last_touch", "Последнее касание", "Last touch"),
    ("last_non_direct", "Последний непрямой", "Last non-direct"),
    ("linear", "Линейная", "Linear"),
    ("position_based", "С учётом позиции", "Position-based"),
    ("direct", "Прямые заходы", "Direct"),
    ("organic_search", "Поиск", "Organic search"),
    ("paid_search", "Платный поиск", "Paid search"),
    ("organic_social", "Соцсети", "Organic social"),
    ("paid_social", "Реклама в соцсетях", "Paid social"),
    ("email", "Почта", "Email"),
    ("referral", "Переходы с сайтов", "Referral"),
    ("display", "Медийная реклама", "Display"),
    ("internal", "Внутренние", "Internal"),
    ("other", "Другое", "Other"),
    ("visitor_type", "Тип посетителя", "Visitor type"),
    ("visit_number", "Номер визита", "Visit number"),
    (
        "days_since_last_visit",
        "Дней с прошлого визита",
        "Days since last visit",
    ),
    ("new", "Новые", "New"),
    ("returning", "Вернувшиеся", "Returning"),
    ("uniques", "Уникальные посетители", "Unique visitors"),
    ("week", "Неделя", "Week"),
    ("month", "Месяц", "Month"),
    ("from", "с", "from"),
    (
        "generated",
        "Создан logveil из опубликованных таблиц",
        "Made by logveil from the published tables",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_dates_per_language() {
        assert_eq!(Lang::Ru.number(1234.5, 1), "1\u{202f}234,5");
        assert_eq!(Lang::En.number(1234.5, 1), "1,234.5");
        assert_eq!(Lang::En.int(1_234_567.0), "1,234,567");
        assert_eq!(Lang::Ru.int(999.0), "999");
        assert_eq!(Lang::En.number(-0.04, 1), "0.0", "no negative zero");
        assert_eq!(Lang::Ru.percent(0.125), "12,5\u{a0}%");
        assert_eq!(Lang::En.change(110.0, 100.0), "+10.0%");
        assert_eq!(Lang::En.change(1.0, 0.0), "—");
        let d = Day::parse("2026-11-24").unwrap();
        assert_eq!(Lang::Ru.date(d), "24.11.2026");
        assert_eq!(Lang::En.date(d), "Nov 24, 2026");
        assert_eq!(Lang::Ru.month(d), "ноябрь 2026");
        assert_eq!(Lang::Ru.duration(263.6), "4\u{a0}мин 24\u{a0}с");
        for (key, ru, en) in LABELS {
            assert!(!ru.is_empty() && !en.is_empty(), "{key}");
        }
    }
}
