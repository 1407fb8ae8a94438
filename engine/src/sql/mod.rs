//! The SQL front end: a DataFusion session with the DELT functions, the rewrite of those
//! functions into stage nodes, their physical planning, `--param` values, and the runner that
//! executes SQL text statement by statement (COPY included) the way `delt sql` does.
//!
//! Owns: `session` (the `SessionStateBuilder` setup), `functions` (the SQL-visible names),
//! `rewrite` (the `AnalyzerRule`), `planner` (the `ExtensionPlanner`), `params`, `runner`,
//! `diagnose` (errors that name the input file), `tokenize` (the `tokenize` and `token_count`
//! functions), `export` (COPY to the trainer formats: the query, tokenized), `resume`
//! (`--resume`: a COPY in units kept in a job directory).
//! May import: `stages`, `io`, `plugins`, and the crate's error and progress types. Nothing
//! below it imports `sql`.

pub mod diagnose;
pub mod export;
pub mod functions;
pub mod params;
pub mod planner;
pub mod resume;
pub mod rewrite;
pub mod runner;
pub mod session;
pub mod tokenize;
