//! Goals and funnels: which pageviews count as conversions, as the pipeline defines them.
//!
//! A goal is a path reached in a visit (exact, prefix or glob), optionally only after other
//! paths in order (a funnel of any length whose last step is the goal), with an optional value
//! in minor currency units. A funnel is a named list of steps. Each distinct path pattern is a
//! *matcher*; the pseudonymise stage tests a pageview's normalised path against every matcher
//! once per distinct path (cached) and carries the result as a bit set (`Event::steps`), so
//! the aggregate stage never sees a pattern and the per-line cost is a lookup.
//!
//! Counting (docs/TABLES.md): a goal converts at most once per visit; step n of a funnel is
//! reached in a visit when steps 1..n are reached in that order (other pageviews may come
//! between them).

use glob::{MatchOptions, Pattern};
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

/// At most this many distinct patterns across goals and funnels (one bit each).
pub const MAX_MATCHERS: usize = 64;

/// How a pattern matches a normalised path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Glob(Pattern),
}

impl PathMatch {
    /// A step as written in a pipeline: a glob when it holds `*`, `?` or `[`, else exact.
    pub fn parse(text: &str, kind: Option<&str>) -> Result<PathMatch, String> {
        let text: String = text.trim().nfc().collect();
        if !text.starts_with('/') {
            return Err(format!("path {text:?} must start with '/'"));
        }
        let is_glob = text.contains(['*', '?', '[']);
        match kind {
            Some("exact") => Ok(PathMatch::Exact(text)),
            Some("prefix") => Ok(PathMatch::Prefix(text)),
            Some("glob") => glob(&text),
            None if is_glob => glob(&text),
            None => Ok(PathMatch::Exact(text)),
            Some(other) => Err(format!(
                "match = {other:?}: use \"exact\", \"prefix\" or \"glob\""
            )),
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Glob(g) => g.matches_with(
                path,
                MatchOptions {
                    case_sensitive: true,
                    require_literal_separator: true,
                    require_literal_leading_dot: false,
                },
            ),
        }
    }

    /// The text the pipeline gave, for messages and the run record.
    pub fn describe(&self) -> String {
        match self {
            PathMatch::Exact(p) => p.clone(),
            PathMatch::Prefix(p) => format!("{p}…"),
            PathMatch::Glob(g) => g.as_str().to_string(),
        }
    }
}

fn glob(text: &str) -> Result<PathMatch, String> {
    Pattern::new(text)
        .map(PathMatch::Glob)
        .map_err(|e| format!("glob {text:?}: {e}"))
}

/// A goal: its steps are matcher indices, the goal path last.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub name: String,
    pub steps: Vec<usize>,
    /// Value of one conversion in minor currency units (kopecks, cents).
    pub value: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Funnel {
    pub name: String,
    pub steps: Vec<usize>,
}

/// Every goal and funnel of a pipeline, and the distinct matchers they use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Goals {
    pub matchers: Vec<PathMatch>,
    pub goals: Vec<Goal>,
    pub funnels: Vec<Funnel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalFile {
    pub name: String,
    /// The path that completes the goal.
    pub path: String,
    /// `exact` (default, or `glob` when the path holds `*`, `?` or `[`), `prefix`, `glob`.
    #[serde(rename = "match")]
    pub match_kind: Option<String>,
    /// Paths that must come first, in this order, in the same visit.
    #[serde(default)]
    pub after: Vec<String>,
    /// Value of a conversion in major currency units (e.g. 1500.50 roubles).
    pub value: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelFile {
    pub name: String,
    pub steps: Vec<String>,
}

impl Goals {
    pub fn is_empty(&self) -> bool {
        self.goals.is_empty() && self.funnels.is_empty()
    }

    /// Validates the pipeline's `[[goals]]` and `[[funnels]]`; values are converted to minor
    /// units with `minor_digits` decimals (2 for roubles).
    pub fn from_files(
        goals: &[GoalFile],
        funnels: &[FunnelFile],
        minor_digits: u32,
    ) -> Result<Goals, String> {
        let mut out = Goals::default();
        let mut names = std::collections::BTreeSet::new();
        for g in goals {
            let name = checked_name("goal", &g.name, &mut names)?;
            let mut steps = Vec::new();
            for a in &g.after {
                let m = PathMatch::parse(a, None).map_err(|e| format!("goal {name:?}: {e}"))?;
                steps.push(out.matcher(m)?);
            }
            let last = PathMatch::parse(&g.path, g.match_kind.as_deref())
                .map_err(|e| format!("goal {name:?}: {e}"))?;
            steps.push(out.matcher(last)?);
            let value = match g.value {
                None => 0,
                Some(v) if v.is_finite() && (0.0..1e12).contains(&v) => {
                    (v * 10f64.powi(minor_digits as i32)).round() as i64
                }
                Some(v) => {
                    return Err(format!(
                        "goal {name:?}: value {v} must be a non-negative amount"
                    ));
                }
            };
            out.goals.push(Goal { name, steps, value });
        }
        let mut funnel_names = std::collections::BTreeSet::new();
        for f in funnels {
            let name = checked_name("funnel", &f.name, &mut funnel_names)?;
            if f.steps.len() < 2 {
                return Err(format!("funnel {name:?} needs at least two steps"));
            }
            let mut steps = Vec::new();
            for s in &f.steps {
                let m = PathMatch::parse(s, None).map_err(|e| format!("funnel {name:?}: {e}"))?;
                steps.push(out.matcher(m)?);
            }
            out.funnels.push(Funnel { name, steps });
        }
        Ok(out)
    }

    fn matcher(&mut self, m: PathMatch) -> Result<usize, String> {
        if let Some(i) = self.matchers.iter().position(|x| *x == m) {
            return Ok(i);
        }
        if self.matchers.len() == MAX_MATCHERS {
            return Err(format!(
                "goals and funnels use more than {MAX_MATCHERS} distinct paths"
            ));
        }
        self.matchers.push(m);
        Ok(self.matchers.len() - 1)
    }

    /// The bit set of matchers a normalised path satisfies.
    pub fn steps_of(&self, path: &str) -> u64 {
        self.matchers
            .iter()
            .enumerate()
            .filter(|(_, m)| m.matches(path))
            .fold(0, |acc, (i, _)| acc | 1 << i)
    }

    /// The largest value of one conversion (for differential-privacy bounds).
    pub fn max_value(&self) -> i64 {
        self.goals.iter().map(|g| g.value).max().unwrap_or(0)
    }
}

fn checked_name(
    what: &str,
    name: &str,
    seen: &mut std::collections::BTreeSet<String>,
) -> Result<String, String> {
    let name = name.trim().to_string();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' ' | '.'));
    if !ok {
        return Err(format!(
            "{what} name {name:?} must be 1-64 letters, digits, spaces, '-', '_' or '.'"
        ));
    }
    if !seen.insert(name.clone()) {
        return Err(format!("{what} name {name:?} is used twice"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_exact_prefix_glob_and_cyrillic() {
        let exact = PathMatch::parse("/checkout/done", None).unwrap();
        assert!(exact.matches("/checkout/done"));
        assert!(!exact.matches("/checkout/done/x"));
        let prefix = PathMatch::parse("/blog/", Some("prefix")).unwrap();
        assert!(prefix.matches("/blog/a/b"));
        assert!(!prefix.matches("/blo"));
        let glob = PathMatch::parse("/order/*/done", None).unwrap();
        assert!(glob.matches("/order/:id/done"));
        assert!(!glob.matches("/order/a/b/done"), "* stops at /");
        let deep = PathMatch::parse("/docs/**", None).unwrap();
        assert!(deep.matches("/docs/a/b/c"));
        let cyr = PathMatch::parse("/корзина/оплата", None).unwrap();
        assert!(cyr.matches("/корзина/оплата"));
        assert!(PathMatch::parse("cart", None).is_err());
        assert!(PathMatch::parse("/x", Some("regex")).is_err());
    }

    #[test]
    fn goals_share_matchers_and_values_are_minor_units() {
        let goals = [GoalFile {
            name: "order".into(),
            path: "/done".into(),
            match_kind: None,
            after: vec!["/cart".into()],
            value: Some(1500.5),
        }];
        let funnels = [FunnelFile {
            name: "checkout".into(),
            steps: vec!["/catalog/*".into(), "/cart".into(), "/done".into()],
        }];
        let g = Goals::from_files(&goals, &funnels, 2).unwrap();
        assert_eq!(g.matchers.len(), 3, "/cart and /done are shared");
        assert_eq!(g.goals[0].steps, vec![0, 1]);
        assert_eq!(g.goals[0].value, 150_050);
        assert_eq!(g.funnels[0].steps, vec![2, 0, 1]);
        assert_eq!(g.steps_of("/cart"), 0b001);
        assert_eq!(g.steps_of("/catalog/shoes"), 0b100);
        assert_eq!(g.steps_of("/"), 0);
        let dup = [
            FunnelFile {
                name: "a".into(),
                steps: vec!["/x".into(), "/y".into()],
            },
            FunnelFile {
                name: "a".into(),
                steps: vec!["/x".into(), "/y".into()],
            },
        ];
        assert!(Goals::from_files(&[], &dup, 2).is_err());
    }
}
