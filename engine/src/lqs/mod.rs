//! The LQS workflow around the SQL engine: `delt lqs annotate` labels proxy documents with
//! Learnability-Quality Scores from a proxy LM's training trajectory; `delt lqs fit` learns
//! those labels with an encoder and a linear head and writes the scorer directory that
//! `lqs_score(text)` loads. The math is in `delt_models::annotate`; this module reads the
//! inputs (any file delt reads, through the engine), trains the tokenizer, reports progress
//! and writes the outputs.

//!
//! Owns: reading the texts (`texts`), the annotation job (`annotate`), the scorer fit (`fit`).
//! May import: the crate's error and progress types; reads go through a DataFusion
//! `SessionContext`, never through `sql` or `stages` internals.

mod annotate;
mod fit;
mod texts;

pub use annotate::{AnnotateJob, Annotated, annotate_texts, write_labels};
pub use fit::{FitJob, FitReport, fit, ridge, spearman};
pub use texts::{Texts, read_texts};
