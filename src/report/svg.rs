//! Charts as inline SVG, drawn here rather than by a script: they appear offline, in print and
//! under a strict Content-Security-Policy, and every number they show is also in a table.
//! Colours are presentation attributes (no `style` attributes, which the policy forbids).

use std::fmt::Write;

/// A palette that stays distinct in print and for common colour-vision deficiencies.
pub const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Lines over the days; a missing (hidden) point breaks its line.
pub fn lines(title: &str, x_labels: &[String], series: &[(String, Vec<Option<f64>>)]) -> String {
    let (w, h, left, bottom, top) = (760.0, 260.0, 56.0, 28.0, 24.0);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b))
        .max(1.0);
    // Whole-number ticks: a step of at least 1.
    let tick = (max / 4.0).ceil().max(1.0);
    let max = tick * 4.0;
    let n = x_labels.len().max(1);
    let x = |i: usize| left + (w - left - 12.0) * (i as f64 + 0.5) / n as f64;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / max);
    let mut s = open_svg(title, w, h);
    for k in 0..=4 {
        let v = tick * k as f64;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
            w - 12.0,
            left - 4.0,
            y(v) + 3.0,
            v.round(),
            y = y(v)
        );
    }
    let step = (n / 10).max(1);
    for (i, label) in x_labels.iter().enumerate().filter(|(i, _)| i % step == 0) {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle" fill="#555">{}</text>"##,
            x(i),
            h - 8.0,
            escape(label)
        );
    }
    for (j, (name, values)) in series.iter().enumerate() {
        let colour = PALETTE[j % PALETTE.len()];
        let mut path = String::new();
        let mut pen_up = true;
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_up { "M" } else { "L" },
                        x(i),
                        y(*v)
                    );
                    pen_up = false;
                }
                None => pen_up = true,
            }
        }
        let _ = write!(
            s,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"><title>{}</title></path>"#,
            escape(name)
        );
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                    x(i),
                    y(*v)
                );
            }
        }
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{colour}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            left + 150.0 * j as f64,
            4,
            left + 14.0 + 150.0 * j as f64,
            13,
            escape(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars with their values written at their ends.
pub fn bars(title: &str, items: &[(String, Option<f64>, String)]) -> String {
    let row = 22.0;
    let (w, label_w) = (760.0, 220.0);
    let h = row * items.len() as f64 + 8.0;
    let max = items
        .iter()
        .filter_map(|(_, v, _)| *v)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let mut s = open_svg(title, w, h);
    for (i, (label, value, shown)) in items.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let _ = write!(
            s,
            r##"<text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#333">{}</text>"##,
            label_w - 6.0,
            y + 14.0,
            escape(label)
        );
        let len = value.map_or(0.0, |v| (w - label_w - 90.0) * v / max);
        let fill = if value.is_some() { PALETTE[0] } else { "#ccc" };
        let _ = write!(
            s,
            r##"<rect x="{label_w}" y="{:.1}" width="{:.1}" height="16" fill="{fill}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#333">{}</text>"##,
            y + 2.0,
            len.max(1.0),
            label_w + len + 4.0,
            y + 14.0,
            escape(shown)
        );
    }
    s.push_str("</svg>");
    s
}

/// Weekday × hour; darker is more. Hidden cells are hatched grey.
pub fn heatmap(title: &str, weekdays: &[&str; 7], grid: &[[Option<f64>; 24]; 7]) -> String {
    let (cell_w, cell_h, left, top) = (28.0, 22.0, 40.0, 18.0);
    let w = left + cell_w * 24.0 + 4.0;
    let h = top + cell_h * 7.0 + 4.0;
    let max = grid
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f64, |a, b| a.max(*b))
        .max(1.0);
    let mut s = open_svg(title, w, h);
    for hour in 0..24 {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="12" font-size="9" text-anchor="middle" fill="#555">{hour}</text>"##,
            left + cell_w * (hour as f64 + 0.5)
        );
    }
    for (d, name) in weekdays.iter().enumerate() {
        let y = top + cell_h * d as f64;
        let _ = write!(
            s,
            r##"<text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#333">{}</text>"##,
            left - 4.0,
            y + 15.0,
            escape(name)
        );
        for (hour, v) in grid[d].iter().enumerate() {
            let x = left + cell_w * hour as f64;
            let (fill, label) = match v {
                Some(v) => {
                    // White to deep blue.
                    let t = v / max;
                    let c = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
                    (
                        format!(
                            "#{:02x}{:02x}{:02x}",
                            c(255.0, 8.0),
                            c(255.0, 48.0),
                            c(255.0, 107.0)
                        ),
                        format!("{v}"),
                    )
                }
                None => ("#cccccc".to_string(), "—".to_string()),
            };
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{}" height="{}" fill="{fill}" stroke="#fff"><title>{} {hour}:00 — {label}</title></rect>"##,
                cell_w - 1.0,
                cell_h - 1.0,
                escape(name)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The opening tag of a chart, titled for screen readers.
fn open_svg(title: &str, w: f64, h: f64) -> String {
    format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="c-{id}"><title id="c-{id}">{t}</title>"#,
        id = slug(title),
        t = escape(title)
    )
}

fn slug(title: &str) -> String {
    let h = blake3::hash(title.as_bytes()).to_hex();
    h[..8].to_string()
}
