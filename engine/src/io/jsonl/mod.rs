//! JSON lines, read and written: `format` (the `json`/`jsonl` format DataFusion plans with),
//! `decoder` (the one-pass reader of flat lines), `encoder` (the writer `COPY` uses) and
//! `view_text` (string views into the mapped input, gathered before encoding).

pub mod decoder;
pub mod encoder;
pub mod format;
pub mod view_text;

pub use format::{JsonLinesFormat, JsonLinesFormatFactory};
