//! delt: curate language-model training data with SQL.
//!
//! The crate embeds a DataFusion [`SessionContext`](datafusion::prelude::SessionContext)
//! with the DELT stages registered as SQL functions:
//!
//! * ordering: `ORDER BY fold_order(score, L [, 'asc' | 'desc' | 'zigzag'])` and
//!   `ORDER BY shuffle_order(seed)`;
//! * selection: `WHERE top_k(score, k)`, `WHERE top_r(score, r)` (threshold selection is a
//!   plain `WHERE score > t`).
//!
//! [`DeltSession`] builds such a context; [`Runner`] executes SQL text the way the `delt`
//! command line does (parameters, `COPY` with ordered, atomic, sharded output, S3 options).
//!
//! ```no_run
//! # async fn demo() -> Result<(), delt::DeltError> {
//! let ctx = delt::DeltSession::new().with_threads(2).build()?;
//! let mut runner = delt::Runner::new(ctx);
//! runner
//!     .run_sql("COPY (SELECT * FROM 'docs.parquet' ORDER BY fold_order(score, 3)) TO 'out.parquet'")
//!     .await?;
//! # Ok(()) }
//! ```

pub mod create_function;
pub mod diagnose;
pub mod direct_file;
pub mod efficacy;
pub mod encodings;
pub mod error;
pub mod fold;
pub mod fold_in_memory;
pub mod functions;
pub mod in_order;
pub mod jsonl;
pub mod jsonl_decoder;
pub mod jsonl_encoder;
pub mod key_runs;
pub mod local_files;
pub mod lqs;
pub mod object_stores;
pub mod order_key;
pub mod output;
pub mod params;
pub mod parquet_writer;
pub mod planner;
pub mod plugin_host;
pub mod progress;
pub mod rewrite;
pub mod runner;
pub mod select;
pub mod session;
pub mod shuffle;
pub mod spill;
pub mod stage;
pub mod view_text;

pub use error::DeltError;
pub use runner::Runner;
pub use session::DeltSession;
