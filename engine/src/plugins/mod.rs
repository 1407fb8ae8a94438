//! Scorer plugins: shared libraries behind delt's C ABI over the Arrow C Data Interface.
//!
//! Owns: `host` (loading a library with libloading, checking its manifest and ABI version,
//! calling its functions on Arrow arrays) and `create_function` (`CREATE FUNCTION ...
//! LANGUAGE delt AS 'library#function'` as a DataFusion `FunctionFactory`) and
//! `fatal_signal` (one line naming the plugin when a call crashes the process) and
//! `isolation` (a plugin's instances in child processes, so that a crash fails the query) and
//! `call` (a plugin function's definition, which a cluster ships to its executors) and
//! `remote_library` (a library named by an `s3://` URL, fetched into a local cache).
//! May import: the plugin SDK (`delt_plugin`) and DataFusion. Never a plugin's crate: the
//! engine only sees what crosses the C ABI.

pub mod call;
pub mod create_function;
pub mod fatal_signal;
pub mod host;
pub mod isolation;
pub mod remote_library;
