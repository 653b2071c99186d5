//! Key rings: one master key per period, for crypto-shredding by period (decision 1).
//!
//! A key ring is a directory (mode 0700) of master key files named by the first day of their
//! period, `YYYY-MM-DD.key` (mode 0600, written by [`MasterKey::write_new`]). The master in
//! force on day D is the one with the latest start ≤ D; its period ends where the next one
//! starts. `logveil key rotate` adds the next master; `logveil key destroy --before D` deletes
//! every master whose period ended on or before D (overwritten, then removed): the pseudonyms of
//! those days can never be recomputed, whoever holds the raw logs. Each action appends a line
//! to `key-log.jsonl` in the ring: time, action, period start and the period's public epoch id,
//! never key material.

use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, BTreeSet};

use super::keys::{EpochKey, KeyError, MasterKey};
use crate::day::Day;

const LOG: &str = "key-log.jsonl";

/// The masters a run may use: one for every date, or a ring of periods; or, in a staged
/// run's shard tasks, only the keys derived from them for the days the run reads.
pub enum KeySet {
    Single(MasterKey),
    Ring(KeyRing),
    Derived(DerivedKeys),
}

impl KeySet {
    /// The master in force on `day`, if any (never in a shard task's derived keys).
    pub fn master_for(&self, day: Day) -> Option<&MasterKey> {
        match self {
            KeySet::Single(m) => Some(m),
            KeySet::Ring(r) => r.master_for(day),
            KeySet::Derived(_) => None,
        }
    }

    pub fn epoch_key(&self, day: Day) -> Option<EpochKey> {
        match self {
            KeySet::Derived(d) => d.epochs.get(&day).map(|(k, _)| EpochKey::from_bytes(*k)),
            _ => self.master_for(day).map(|m| m.epoch_key(day)),
        }
    }

    pub fn epoch_id(&self, day: Day) -> Option<String> {
        match self {
            KeySet::Derived(d) => d.epochs.get(&day).map(|(_, id)| id.clone()),
            _ => self.master_for(day).map(|m| m.epoch_id(day)),
        }
    }

    /// The pseudonym epoch of `day` and its visitor key; `None` when no master covers the
    /// day, or when a managed ring (one master per epoch) lacks the epoch's own master.
    pub fn pseudonym_epoch(
        &self,
        day: Day,
        lookback: Option<u32>,
        managed: bool,
    ) -> Option<(Day, EpochKey)> {
        if let KeySet::Derived(d) = self {
            let epoch = *d.days.get(&day)?;
            return Some((epoch, self.epoch_key(epoch)?));
        }
        let epoch = self.epoch_start(day, lookback)?;
        let period = self.period_of(day).map(|(start, _)| start);
        if managed && period != Some(crate::visitors::grid_epoch(day, lookback.unwrap_or(1))) {
            return None;
        }
        Some((epoch, self.epoch_key(epoch)?))
    }

    /// What a shard task needs of these keys to pseudonymise events of `days` (its primary
    /// days), and nothing more: the bucket key, the pseudonym epoch of each primary day, of the
    /// day before it (a visit crossing midnight is linked under both) and of the last day of
    /// the epoch before (returning visitors look a client up there too), and each of those
    /// epochs' visitor key and public id. Primary days without a master are left out (the
    /// task reports them, as with the masters). Release, ledger and state keys are not
    /// derived: they stay with the masters.
    pub fn derive_for(
        &self,
        days: impl IntoIterator<Item = Day>,
        lookback: Option<u32>,
        managed: bool,
    ) -> DerivedKeys {
        let mut out = DerivedKeys {
            generation: 0,
            bucket_key: self.run_bucket_key(),
            primary: BTreeSet::new(),
            days: BTreeMap::new(),
            epochs: BTreeMap::new(),
        };
        for day in days {
            let Some((epoch, _)) = self.pseudonym_epoch(day, lookback, managed) else {
                continue;
            };
            out.primary.insert(day);
            for d in [day, day.prev(), epoch.prev()] {
                let Some((epoch, key)) = self.pseudonym_epoch(d, lookback, managed) else {
                    continue;
                };
                let id = self.epoch_id(epoch).unwrap_or_default();
                out.days.insert(d, epoch);
                out.epochs.insert(epoch, (*key.bytes(), id));
            }
        }
        out
    }

    /// Whether events of `day` can be pseudonymised here with everything they need: always
    /// with masters; with derived keys, only on the primary days they were derived for.
    pub fn covers(&self, day: Day) -> bool {
        match self {
            KeySet::Derived(d) => d.primary.contains(&day),
            _ => true,
        }
    }

    /// The period in force on `day` (its start) and its master. A single key is one period.
    pub fn period_of(&self, day: Day) -> Option<(Day, &MasterKey)> {
        match self {
            KeySet::Single(m) => Some((Day(0), m)),
            KeySet::Derived(_) => None,
            KeySet::Ring(r) => r
                .masters
                .iter()
                .rev()
                .find(|(start, _)| *start <= day)
                .map(|(d, m)| (*d, m)),
        }
    }

    /// The first day of the pseudonym epoch holding `day`: the day itself (a fresh pseudonym
    /// every day), or with `lookback` days, the period's start plus whole lookbacks
    /// (decision 2). `None` when no master covers the day.
    pub fn epoch_start(&self, day: Day, lookback: Option<u32>) -> Option<Day> {
        if let KeySet::Derived(d) = self {
            return d.days.get(&day).copied();
        }
        let (period, _) = self.period_of(day)?;
        Some(match lookback {
            None => day,
            Some(l) => {
                let l = l.max(1) as i32;
                Day(period.0 + (day.0 - period.0).div_euclid(l) * l)
            }
        })
    }

    /// The bucket key of a run: derived from the newest master, so that every event of a run,
    /// whatever its day, is partitioned the same way (a visit crossing the midnight where a
    /// new period starts stays in one bucket).
    pub fn run_bucket_key(&self) -> [u8; 32] {
        match self {
            KeySet::Single(m) => *m.bucket_key(Day(0)),
            KeySet::Derived(d) => d.bucket_key,
            // An empty (managed, new) ring pseudonymises nothing: every day misses its key.
            KeySet::Ring(r) => match r.masters.last() {
                Some((start, m)) => *m.bucket_key(*start),
                None => [0; 32],
            },
        }
    }
}

/// Keys derived from the masters for a staged run's shard tasks (decision 7): they can
/// pseudonymise the days listed, and nothing else; the masters never leave the driver.
#[derive(Clone)]
pub struct DerivedKeys {
    /// How many times a staged run derived its keys again (days its inputs reached beyond
    /// the first derivation): shard outputs made under an older generation are stale.
    generation: u32,
    bucket_key: [u8; 32],
    /// The days whose events these keys pseudonymise (with their neighbours' keys).
    primary: BTreeSet<Day>,
    /// Each day's pseudonym epoch.
    days: BTreeMap<Day, Day>,
    /// Each epoch's visitor key and public id.
    epochs: BTreeMap<Day, ([u8; 32], String)>,
}

impl DerivedKeys {
    /// As text, for a 0600 file: one line per item, keys in hex.
    pub fn to_text(&self) -> zeroize::Zeroizing<String> {
        let hex = |b: &[u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut s = zeroize::Zeroizing::new(String::from("logveil derived keys v1\n"));
        s.push_str(&format!("generation {}\n", self.generation));
        s.push_str(&format!("bucket {}\n", hex(&self.bucket_key)));
        for day in &self.primary {
            s.push_str(&format!("primary {day}\n"));
        }
        for (day, epoch) in &self.days {
            s.push_str(&format!("day {day} {epoch}\n"));
        }
        for (epoch, (key, id)) in &self.epochs {
            s.push_str(&format!("epoch {epoch} {} {id}\n", hex(key)));
        }
        s
    }

    /// The keys [`Self::to_text`] wrote.
    pub fn from_text(text: &str) -> Option<DerivedKeys> {
        let unhex = |s: &str| super::keys::parse_hex::<32>(s.as_bytes());
        let mut lines = text.lines();
        if lines.next()? != "logveil derived keys v1" {
            return None;
        }
        let mut keys = DerivedKeys {
            generation: 0,
            bucket_key: [0; 32],
            primary: BTreeSet::new(),
            days: BTreeMap::new(),
            epochs: BTreeMap::new(),
        };
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            match f[..] {
                ["generation", g] => keys.generation = g.parse().ok()?,
                ["bucket", k] => keys.bucket_key = unhex(k)?,
                ["primary", d] => {
                    keys.primary.insert(Day::parse(d)?);
                }
                ["day", d, e] => {
                    keys.days.insert(Day::parse(d)?, Day::parse(e)?);
                }
                ["epoch", e, k, id] => {
                    keys.epochs
                        .insert(Day::parse(e)?, (unhex(k)?, id.to_string()));
                }
                _ => return None,
            }
        }
        Some(keys)
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// These keys as the given generation.
    pub fn with_generation(mut self, generation: u32) -> DerivedKeys {
        self.generation = generation;
        self
    }

    /// The days these keys pseudonymise.
    pub fn days(&self) -> impl Iterator<Item = Day> + '_ {
        self.primary.iter().copied()
    }

    /// Only the pseudonym epoch of each day: no key at all. What a reduce task needs (visits
    /// are grouped by epoch there) and all it gets.
    pub fn epochs_only(days: BTreeMap<Day, Day>) -> DerivedKeys {
        DerivedKeys {
            generation: 0,
            bucket_key: [0; 32],
            primary: BTreeSet::new(),
            days,
            epochs: BTreeMap::new(),
        }
    }
}

impl Drop for DerivedKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.bucket_key.zeroize();
        for (k, _) in self.epochs.values_mut() {
            k.zeroize();
        }
    }
}

pub struct KeyRing {
    dir: PathBuf,
    /// Sorted by period start.
    masters: Vec<(Day, MasterKey)>,
}

impl KeyRing {
    /// Opens a ring, checking the directory's and every key file's permissions.
    pub fn open(dir: &Path) -> Result<KeyRing, KeyError> {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        check_private_dir(dir)?;
        let mut masters = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| KeyError::Read {
                    path: shown.clone(),
                    source,
                })?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(stem) = name.strip_suffix(".key") else {
                continue;
            };
            let start = Day::parse(stem).ok_or_else(|| KeyError::RingName {
                path: path.display().to_string(),
            })?;
            masters.push((start, MasterKey::read(&path)?));
        }
        if masters.is_empty() {
            return Err(KeyError::EmptyRing { path: shown });
        }
        masters.sort_by_key(|(d, _)| *d);
        Ok(KeyRing {
            dir: dir.to_path_buf(),
            masters,
        })
    }

    pub fn master_for(&self, day: Day) -> Option<&MasterKey> {
        self.masters
            .iter()
            .rev()
            .find(|(start, _)| *start <= day)
            .map(|(_, m)| m)
    }

    /// Period starts, oldest first.
    pub fn periods(&self) -> Vec<Day> {
        self.masters.iter().map(|(d, _)| *d).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens a ring that runs manage (`manage_keys`): created when missing, possibly empty.
    pub fn open_managed(dir: &Path) -> Result<KeyRing, KeyError> {
        create_private_dir(dir)?;
        match KeyRing::open(dir) {
            Err(KeyError::EmptyRing { .. }) => Ok(KeyRing {
                dir: dir.to_path_buf(),
                masters: Vec::new(),
            }),
            other => other,
        }
    }

    /// Period starts whose masters were destroyed (from the ring's log): never created again.
    pub fn destroyed(dir: &Path) -> Vec<Day> {
        std::fs::read_to_string(dir.join(LOG))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["action"] == "destroy")
            .filter_map(|v| v["period_start"].as_str().and_then(Day::parse))
            .collect()
    }

    /// Adds a master whose period starts on `from` (creating the ring if needed). A period
    /// whose master was destroyed is never given a new one: its pseudonyms stay unrecomputable.
    pub fn rotate(dir: &Path, from: Day) -> Result<String, KeyError> {
        create_private_dir(dir)?;
        if KeyRing::destroyed(dir).contains(&from) {
            return Err(KeyError::Destroyed {
                path: dir.display().to_string(),
                period: from.to_string(),
            });
        }
        let path = dir.join(format!("{from}.key"));
        MasterKey::write_new(&path)?;
        let id = MasterKey::read(&path)?.epoch_id(from);
        append_log(dir, "rotate", from, &id)?;
        Ok(id)
    }

    /// Destroys every master whose period ended on or before `before` (its successor starts
    /// on or before `before`). The master in force on `before` and later ones are kept.
    pub fn destroy_before(dir: &Path, before: Day) -> Result<Vec<Day>, KeyError> {
        let ring = KeyRing::open(dir)?;
        let starts = ring.periods();
        let mut destroyed = Vec::new();
        for (i, start) in starts.iter().enumerate() {
            let ended = starts.get(i + 1).is_some_and(|next| *next <= before);
            if !ended {
                continue;
            }
            let id = ring.masters[i].1.epoch_id(*start);
            let path = dir.join(format!("{start}.key"));
            shred(&path)?;
            append_log(dir, "destroy", *start, &id)?;
            destroyed.push(*start);
        }
        Ok(destroyed)
    }
}

fn shred(path: &Path) -> Result<(), KeyError> {
    let shown = path.display().to_string();
    let write_err = |source| KeyError::Write {
        path: shown.clone(),
        source,
    };
    let len = std::fs::metadata(path).map_err(write_err)?.len() as usize;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(write_err)?;
    f.write_all(&vec![0u8; len])
        .and_then(|()| f.sync_all())
        .map_err(write_err)?;
    drop(f);
    std::fs::remove_file(path).map_err(write_err)
}

fn append_log(dir: &Path, action: &str, period_start: Day, epoch_id: &str) -> Result<(), KeyError> {
    let path = dir.join(LOG);
    let shown = path.display().to_string();
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&path).map_err(|source| KeyError::Write {
        path: shown.clone(),
        source,
    })?;
    let line = serde_json::json!({
        "at": jiff::Timestamp::now().to_string(),
        "action": action,
        "period_start": period_start.to_string(),
        "epoch_id": epoch_id,
    });
    writeln!(f, "{line}")
        .and_then(|()| f.sync_all())
        .map_err(|source| KeyError::Write {
            path: shown,
            source,
        })
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    let shown = dir.display().to_string();
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|source| KeyError::Write {
            path: shown,
            source,
        })?;
    }
    check_private_dir(dir)
}

fn check_private_dir(dir: &Path) -> Result<(), KeyError> {
    super::keys::check_private(
        std::fs::metadata(dir),
        &dir.display().to_string(),
        "chmod 700",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    #[test]
    fn keyring_periods_rotation_and_destruction() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ring");
        KeyRing::rotate(&dir, d("2026-10-01")).unwrap();
        KeyRing::rotate(&dir, d("2026-11-01")).unwrap();
        KeyRing::rotate(&dir, d("2026-12-01")).unwrap();
        let ring = KeyRing::open(&dir).unwrap();
        assert!(ring.master_for(d("2026-09-30")).is_none());
        let oct = ring
            .master_for(d("2026-10-31"))
            .unwrap()
            .epoch_id(d("2026-10-31"));
        let nov = ring
            .master_for(d("2026-11-01"))
            .unwrap()
            .epoch_id(d("2026-10-31"));
        assert_ne!(oct, nov, "a new period has a new master");
        // 2026-11-15: October's period ended (November started on the 1st) → destroyed.
        assert_eq!(
            KeyRing::destroy_before(&dir, d("2026-11-15")).unwrap(),
            vec![d("2026-10-01")]
        );
        let ring = KeyRing::open(&dir).unwrap();
        assert_eq!(ring.periods(), vec![d("2026-11-01"), d("2026-12-01")]);
        assert!(
            ring.master_for(d("2026-10-31")).is_none(),
            "October can never be recomputed"
        );
        assert!(!dir.join("2026-10-01.key").exists());
        // The log has the three rotations and the destruction, and no key material.
        let log = std::fs::read_to_string(dir.join(LOG)).unwrap();
        assert_eq!(log.lines().count(), 4);
        assert!(log.lines().last().unwrap().contains("\"destroy\""));
        for k in ["2026-11-01.key", "2026-12-01.key"] {
            let hex = std::fs::read_to_string(dir.join(k)).unwrap();
            assert!(!log.contains(hex.trim()));
        }
        // The last master is never destroyed: its period has not ended.
        assert!(KeyRing::destroy_before(&dir, d("2030-01-01")).unwrap() == vec![d("2026-11-01")]);
        assert_eq!(
            KeyRing::open(&dir).unwrap().periods(),
            vec![d("2026-12-01")]
        );
    }

    #[test]
    fn keyring_refuses_an_open_directory_and_bad_names() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ring");
        KeyRing::rotate(&dir, d("2026-10-01")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            KeyRing::open(&dir),
            Err(KeyError::Permissions { .. })
        ));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.join("latest.key"), "x").unwrap();
        assert!(matches!(
            KeyRing::open(&dir),
            Err(KeyError::RingName { .. })
        ));
        let empty = tmp.path().join("empty");
        create_private_dir(&empty).unwrap();
        assert!(matches!(
            KeyRing::open(&empty),
            Err(KeyError::EmptyRing { .. })
        ));
    }
}
