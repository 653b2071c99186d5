//! logveil turns raw web-server access logs into anonymous analytics tables.
//!
//! The flow goes one way, one module per stage:
//!
//! 1. [`ingest`] reads files (plain or gzip) and parses lines into borrowed raw records;
//! 2. [`pseudonymise`] turns each record into an [`pseudonymise::Event`] at once: keyed
//!    BLAKE3 visitor pseudonym, normalised path, referrer host, user-agent class. The raw
//!    address, user agent, query string and click-id values end here;
//! 3. [`aggregate`] builds visits and additive partial tables with Polars ([`goals`] says
//!    which visits convert; [`visitors`] adds what earlier visits tell: new and returning
//!    visitors, attribution across visits, from an encrypted visit log);
//! 4. [`disclose`] applies the privacy rules (k distinct visitors per row) to merged totals;
//! 5. [`output`] writes the released tables as Parquet, atomically, with a run record.
//!
//! [`pipeline`] strings the stages together; [`audit`] checks outputs independently of the
//! writer (and gates every publication); [`cli`] parses arguments and prints.

pub mod aggregate;
pub mod audit;
pub mod cli;
pub mod config;
pub mod costs;
pub mod day;
pub mod disclose;
pub mod dp;
pub mod goals;
pub mod identifiers;
pub mod ingest;
pub mod ledger;
pub mod manifest;
pub mod output;
pub mod pipeline;
pub mod pseudonymise;
pub mod record;
pub mod report;
pub mod stages;
pub mod state;
pub mod store;
pub mod threads;
pub mod visitors;

/// Tests' random inputs: a deterministic generator (xorshift64) from `seed`, each call the
/// next number, so a failing case is the same on every run.
#[cfg(test)]
pub(crate) fn test_numbers(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
