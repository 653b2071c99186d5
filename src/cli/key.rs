//! `logveil key rotate|destroy|list`: the key ring's life cycle.

use std::fmt::Write;
use std::path::PathBuf;

use clap::Subcommand;

use crate::day::Day;
use crate::pipeline::{Failure, exit};
use crate::pseudonymise::keyring::KeyRing;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a new master key whose period starts on --from (default: today, UTC).
    Rotate {
        #[arg(long)]
        key_dir: PathBuf,
        #[arg(long, value_parser = parse_day)]
        from: Option<Day>,
    },
    /// Delete (overwrite, then remove) every master whose period ended on or before --before:
    /// the pseudonyms of those days can never be recomputed.
    Destroy {
        #[arg(long)]
        key_dir: PathBuf,
        #[arg(long, value_parser = parse_day)]
        before: Day,
    },
    /// List the periods of a key ring with their public epoch ids.
    List {
        #[arg(long)]
        key_dir: PathBuf,
    },
}

fn parse_day(s: &str) -> Result<Day, String> {
    Day::parse(s).ok_or_else(|| format!("{s:?} is not a date like 2026-11-24"))
}

pub fn key(command: KeyCommand) -> Result<String, Failure> {
    let usage = |e: crate::pseudonymise::keys::KeyError| Failure::new(exit::USAGE, e.to_string());
    match command {
        KeyCommand::Rotate { key_dir, from } => {
            let from = from.unwrap_or_else(today);
            let id = KeyRing::rotate(&key_dir, from).map_err(usage)?;
            Ok(format!(
                "added a master key to {} for the period starting {from} (epoch id {id})\n",
                key_dir.display()
            ))
        }
        KeyCommand::Destroy { key_dir, before } => {
            let gone = KeyRing::destroy_before(&key_dir, before).map_err(usage)?;
            if gone.is_empty() {
                return Ok(format!(
                    "no period of {} ended on or before {before}\n",
                    key_dir.display()
                ));
            }
            let list: Vec<String> = gone.iter().map(Day::to_string).collect();
            Ok(format!(
                "destroyed the master keys of the periods starting {} in {}\n",
                list.join(", "),
                key_dir.display()
            ))
        }
        KeyCommand::List { key_dir } => {
            let ring = KeyRing::open(&key_dir).map_err(usage)?;
            let mut s = String::new();
            for start in ring.periods() {
                let id = ring
                    .master_for(start)
                    .map(|m| m.epoch_id(start))
                    .unwrap_or_default();
                let _ = writeln!(s, "{start}  epoch id {id}");
            }
            Ok(s)
        }
    }
}

fn today() -> Day {
    let now = jiff::Timestamp::now().as_second();
    Day(now.div_euclid(86_400) as i32)
}
