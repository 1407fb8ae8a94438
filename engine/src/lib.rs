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
//! The modules follow the path of a query (see `docs/architecture.md`): [`sql`] parses and
//! plans it, [`stages`] execute the DELT nodes, [`io`] reads inputs and writes `COPY` output,
//! [`plugins`] hosts scorer libraries; [`cluster`] runs the same SQL on a Ballista cluster;
//! [`lqs`] and [`efficacy`] are the jobs around the pipeline and [`cli`] the `delt` command
//! line.
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

pub mod cli;
pub mod cluster;
pub mod efficacy;
pub mod error;
pub mod io;
pub mod lqs;
pub mod plugins;
pub mod progress;
pub mod sql;
pub mod stages;

pub use error::DeltError;
pub use sql::runner::Runner;
pub use sql::session::DeltSession;
