//! Reading and writing data: the JSON lines format (reader, decoder, encoder), the Parquet
//! writer and its column encodings, local files (memory-mapped reads, `O_DIRECT` writes),
//! object stores (S3 and the local registry) and the output of `COPY`: ordered, atomic,
//! sharded.
//!
//! Owns: `jsonl`, `parquet_writer`, `encodings`, `local_files`, `direct_file`,
//! `object_stores`, `output`, `training` (the trainer formats: Megatron's indexed dataset and flat
//! token shards), `owner` (who made a temporary file, recorded in its name) and
//! `in_order` (blocking work whose results are taken in the order it started, which the
//! writers and the in-memory fold share).
//! May import: the crate's error type only. Never `stages` or `sql`: a reader or writer does
//! not know which stage feeds it.

pub mod direct_file;
pub mod encodings;
pub mod in_order;
pub mod jsonl;
pub mod local_files;
pub mod object_stores;
pub mod output;
pub mod owner;
pub mod parquet_writer;
pub mod training;
