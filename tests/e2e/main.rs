//! End-to-end tests: the real `delt` binary on real Parquet and JSONL files, checked against
//! reference implementations written here straight from the DELT semantics.

mod cluster;
mod common;
mod efficacy;
mod errors;
mod export;
mod jsonl_input;
mod lqs;
mod ordering;
mod output;
mod params;
mod plugins;
mod reliability;
mod resume;
mod s3;
mod scorers;
mod selection;
