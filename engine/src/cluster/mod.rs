//! Cluster mode: the same SQL on many hosts, on Apache DataFusion Ballista.
//!
//! A Ballista scheduler plans a query into stages and hands their tasks to executors; delt
//! runs Ballista's own scheduler and executor, extended with what delt adds to DataFusion:
//!
//! * its functions and plan nodes travel in the plans through delt's codecs ([`codec`]),
//!   plugin functions included, which every executor loads itself;
//! * the scheduler plans a fold so that everything below it (scan, scoring, keys) and the
//!   sort by key run as one task per input partition on the executors, and the fold merges
//!   the sorted streams in one task ([`crate::stages::fold::FoldStrategy::SortedStream`]); a
//!   selection's tasks sort their rows by position, and one task merges them in input order
//!   and keeps the best ([`crate::stages::select::SelectStrategy::Gathered`], rows spilling).
//!   The output equals a local run's,
//!   since the keys hold each row's position in the whole input, whichever task read it
//!   ([`crate::stages::order_key::PartitionStart`]);
//! * the client ([`client`]) is the `delt sql` runner over a Ballista session: statements,
//!   COPY, ordered and atomic output work as in a local run; JSON lines scans are shipped
//!   with DataFusion's reader ([`portable_scans`]);
//! * a COPY of a fold or a shuffle to a directory runs as two jobs in which the executors
//!   sort the rows into runs on shared storage and then write the output shards, one task
//!   each ([`fold_copy`], its plan nodes [`distributed_fold`], the run files [`sorted_runs`],
//!   the shards' rank arithmetic [`fold_layout`]).
//!
//! Owns: `codec`, `scheduler`, `executor`, `client`, `portable_scans`, `unavailable_function`,
//! `fold_copy`, `distributed_fold`, `sorted_runs`, `fold_layout`.
//! May import: `sql` (the session and planner), `stages`, `plugins`, `io`.

pub mod client;
pub mod codec;
pub mod distributed_fold;
pub mod executor;
pub mod fold_copy;
pub mod fold_layout;
pub mod portable_scans;
pub mod scheduler;
pub mod sorted_runs;
pub mod unavailable_function;

use std::sync::{Arc, OnceLock};

use ballista_core::extension::SessionConfigExt;
use datafusion::error::Result;
use datafusion::prelude::SessionConfig;

use crate::io::object_stores::{BucketOptions, DeltObjectStoreRegistry};

/// This process in messages about where something failed: an executor's `host:port`.
static PROCESS_NAME: OnceLock<String> = OnceLock::new();

/// Names this process for [`process_name`] (once; later calls are ignored).
pub(crate) fn set_process_name(name: String) {
    let _ = PROCESS_NAME.set(name);
}

/// What an error raised here should call this process.
pub fn process_name() -> String {
    PROCESS_NAME.get().cloned().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|_| "this host".into());
        format!("{host} (pid {})", std::process::id())
    })
}

/// The settings a scheduler or executor starts each client session from: Ballista's, and the
/// per-bucket S3 options that the client's settings fill in.
fn session_config() -> SessionConfig {
    SessionConfig::new_with_ballista().with_option_extension(BucketOptions::default())
}

/// The object stores of a session with `config`: the buckets its statements gave options for,
/// any other bucket from this host's AWS environment.
fn object_stores(config: &SessionConfig) -> Result<Arc<DeltObjectStoreRegistry>> {
    let registry = match config.options().extensions.get::<BucketOptions>() {
        Some(buckets) => DeltObjectStoreRegistry::with_buckets(buckets)?,
        None => DeltObjectStoreRegistry::default(),
    };
    Ok(Arc::new(registry))
}
