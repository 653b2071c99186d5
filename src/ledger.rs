//! The privacy-budget ledger: how much ε each table has spent, per released date, so that
//! repeated releases cannot exceed the budget (decision 5).
//!
//! Accounting (basic sequential composition, per table): every release of a table for a date
//! whose pre-noise content is new costs that release's ε; a release whose pre-noise content is
//! unchanged costs nothing (its noise is the same, so it reveals nothing new). The budget holds
//! over a rolling window: the ε charged for the dates in the `window_days` days ending with the
//! released date may not exceed `epsilon_budget`. A run that would exceed it releases nothing
//! (exit code 4). The content digest is keyed (under a key derived from the master), so the
//! ledger cannot be used to test guesses about the data.
//!
//! The ledger lives in the pipeline's state dir (0700), as `ledger.json` (0600), rewritten
//! atomically.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::day::Day;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub entries: Vec<Charge>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Charge {
    pub table: String,
    pub date: String,
    pub epsilon: f64,
    /// Keyed BLAKE3 of the table's pre-noise rows for that date.
    pub digest: String,
    pub run_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot use the privacy ledger {path}: {message}")]
    Io { path: String, message: String },
    #[error(
        "the privacy budget is spent: releasing {table} for {date} would bring ε over the {window_days} days ending that date to {would:.3}, above the budget {budget}; nothing was released"
    )]
    Spent {
        table: String,
        date: String,
        window_days: u32,
        would: f64,
        budget: f64,
    },
}

/// A release to account for.
pub struct Release {
    pub table: String,
    pub date: Day,
    pub epsilon: f64,
    pub digest: String,
}

impl Ledger {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("ledger.json")
    }

    pub fn load(state_dir: &Path) -> Result<Ledger, LedgerError> {
        let path = Ledger::path(state_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| io(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Charges every release whose content is new, or refuses them all.
    pub fn charge(
        &mut self,
        releases: &[Release],
        budget: f64,
        window_days: u32,
        run_id: &str,
    ) -> Result<f64, LedgerError> {
        let mut added = Vec::new();
        for r in releases {
            let date = r.date.to_string();
            let known = self
                .entries
                .iter()
                .chain(&added)
                .any(|c: &Charge| c.table == r.table && c.date == date && c.digest == r.digest);
            if known {
                continue;
            }
            added.push(Charge {
                table: r.table.clone(),
                date,
                epsilon: r.epsilon,
                digest: r.digest.clone(),
                run_id: run_id.to_string(),
            });
        }
        for c in &added {
            let day = Day::parse(&c.date).expect("own format");
            // Every window the new charge falls in: those ending on its date and the
            // `window_days − 1` days after it.
            let worst = (0..window_days as i32)
                .map(|shift| {
                    let end = Day(day.0 + shift);
                    let start = Day(end.0 - window_days as i32 + 1);
                    self.entries
                        .iter()
                        .chain(&added)
                        .filter(|e| e.table == c.table)
                        .filter(|e| Day::parse(&e.date).is_some_and(|d| d >= start && d <= end))
                        .map(|e| e.epsilon)
                        .sum::<f64>()
                })
                .fold(0.0, f64::max);
            if worst > budget + 1e-9 {
                return Err(LedgerError::Spent {
                    table: c.table.clone(),
                    date: c.date.clone(),
                    window_days,
                    would: worst,
                    budget,
                });
            }
        }
        let total = added.iter().fold(0.0, |sum, c| sum + c.epsilon);
        self.entries.extend(added);
        Ok(total)
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), LedgerError> {
        let path = Ledger::path(state_dir);
        crate::state::private_dir(state_dir).map_err(|e| io(state_dir, e))?;
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self).expect("serialises");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = options.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| io(&path, e))
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(table: &str, date: &str, eps: f64, digest: &str) -> Release {
        Release {
            table: table.into(),
            date: Day::parse(date).unwrap(),
            epsilon: eps,
            digest: digest.into(),
        }
    }

    #[test]
    fn ledger_charges_new_content_only_and_refuses_over_budget() {
        let mut l = Ledger::default();
        // Budget 1.0 over 3 days, 0.4 per release.
        assert_eq!(
            l.charge(&[rel("pages", "2026-11-01", 0.4, "a")], 1.0, 3, "r1")
                .unwrap(),
            0.4
        );
        // The same content again: free.
        assert_eq!(
            l.charge(&[rel("pages", "2026-11-01", 0.4, "a")], 1.0, 3, "r2")
                .unwrap(),
            0.0
        );
        // Changed content for the same date: charged again (differencing).
        assert_eq!(
            l.charge(&[rel("pages", "2026-11-01", 0.4, "b")], 1.0, 3, "r3")
                .unwrap(),
            0.4
        );
        // Another table has its own budget.
        assert!(
            l.charge(&[rel("hourly", "2026-11-01", 0.4, "a")], 1.0, 3, "r4")
                .is_ok()
        );
        // 0.8 spent in the window ending 2026-11-03: a third 0.4 would exceed 1.0.
        let err = l
            .charge(&[rel("pages", "2026-11-03", 0.4, "c")], 1.0, 3, "r5")
            .unwrap_err();
        assert!(matches!(err, LedgerError::Spent { .. }));
        assert_eq!(l.entries.len(), 3, "a refused charge records nothing");
        // 2026-11-04's window (02..04) no longer holds the 01 charges.
        assert!(
            l.charge(&[rel("pages", "2026-11-04", 0.4, "d")], 1.0, 3, "r6")
                .is_ok()
        );
    }

    #[test]
    fn ledger_round_trips_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let mut l = Ledger::load(&state).unwrap();
        l.charge(&[rel("pages", "2026-11-01", 0.4, "a")], 1.0, 3, "r1")
            .unwrap();
        l.save(&state).unwrap();
        assert_eq!(Ledger::load(&state).unwrap().entries, l.entries);
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(Ledger::path(&state))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
}
