//! Integration tests: one binary, so Polars is linked once (STYLE.md §1).

mod audit;
mod campaigns;
mod channels;
mod cli;
mod dp;
mod formats;
mod helpers;
mod kill;
mod parse;
mod privacy;
mod realistic;
mod report;
mod returning;
mod s3;
mod small;
mod stages;
