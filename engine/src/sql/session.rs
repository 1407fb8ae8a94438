//! Building a DataFusion session with the DELT functions and planners registered.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::datasource::listing_table_factory::ListingTableFactory;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::registry::FunctionRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{DeltError, Result};
use crate::io::jsonl::JsonLinesFormatFactory;
use crate::io::object_stores::DeltObjectStoreRegistry;
use crate::plugins::call::PluginCall;
use crate::plugins::create_function::DeltFunctionFactory;
use crate::plugins::host::{FunctionSettings, PluginFunction, PluginRegistry};
use crate::plugins::isolation::Isolation;
use crate::sql::planner::DeltQueryPlanner;
use crate::sql::rewrite::DeltRewrite;
use crate::stages::shuffle::ShuffleKey;

/// Bytes of rows that an in-memory sort sorts as one run (see [`DeltSession::build`]).
const SORT_RUN_BYTES: usize = 128 << 20;

/// Rows per Parquet row group that COPY writes unless told otherwise.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Builder of a [`SessionContext`] that runs DELT pipelines.
///
/// Besides registering the functions, it turns off round-robin repartitioning and file work
/// stealing: DELT orderings break ties by input position, and positions are only meaningful
/// while every partition is a contiguous run of the input (see [`crate::stages::order_key`]). Parallelism comes from splitting
/// files and from running partitions side by side.
#[derive(Debug, Clone, Default)]
pub struct DeltSession {
    memory_limit: Option<usize>,
    threads: Option<usize>,
    batch_size: Option<usize>,
    plugins: Vec<PluginToLoad>,
    plugin_dirs: Vec<PathBuf>,
    plugin_isolation: Isolation,
}

/// A plugin library the session loads when it is built.
#[derive(Debug, Clone)]
struct PluginToLoad {
    path: PathBuf,
    /// Named by the user: a library that cannot be loaded is an error. Otherwise it was found
    /// in a plugin directory, and one that is not a delt plugin is skipped with a warning.
    required: bool,
}

impl DeltSession {
    /// A session with DataFusion's defaults: all cores, no memory limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps the memory of sorts and DELT buffers at `bytes`; beyond it they spill to disk.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Number of partitions run in parallel.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Rows per record batch.
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = Some(rows.max(1));
        self
    }

    /// Loads the scorer plugin library at `path` and registers all its functions under their
    /// own names, with default options (`CREATE FUNCTION` gives other names and options).
    /// A library that cannot be loaded fails [`build`](Self::build); a function that cannot
    /// be created with default options is skipped with a warning on stderr.
    pub fn with_plugin(mut self, path: impl Into<PathBuf>) -> Self {
        self.plugins.push(PluginToLoad {
            path: path.into(),
            required: true,
        });
        self
    }

    /// A directory where `CREATE FUNCTION` looks for a library named without a path (such
    /// as `delt_lqs`), before `DELT_PLUGIN_PATH` and the executable's directory: for programs
    /// whose executable is not `delt` (in the Python module it is the interpreter).
    pub fn with_plugin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_dirs.push(dir.into());
        self
    }

    /// Where plugin functions run unless their `CREATE FUNCTION` says otherwise: in this
    /// process (the default) or each instance in a child process.
    pub fn with_plugin_isolation(mut self, isolation: Isolation) -> Self {
        self.plugin_isolation = isolation;
        self
    }

    /// As [`with_plugin`](Self::with_plugin), for a library found in a plugin directory
    /// (`DELT_PLUGIN_PATH`): one that is not a delt plugin is skipped with a warning naming it.
    pub fn with_found_plugin(mut self, path: impl Into<PathBuf>) -> Self {
        self.plugins.push(PluginToLoad {
            path: path.into(),
            required: false,
        });
        self
    }

    /// Builds the context.
    pub fn build(&self) -> Result<SessionContext> {
        // `SELECT * FROM 'path/or/s3/url.parquet'` works without CREATE EXTERNAL TABLE.
        Ok(SessionContext::new_with_state(self.build_state()?).enable_url_table())
    }

    /// The state [`build`](Self::build) makes its context of, for a context of another kind (a
    /// cluster client). Reading paths as tables is a feature of the context: turn it on with
    /// [`SessionContext::enable_url_table`] once the context exists.
    pub fn build_state(&self) -> Result<SessionState> {
        let plugins = Arc::new(PluginRegistry::default());
        let mut state = session_state(
            // Where a cluster client finds the plugin functions to ship (see `cluster::client`).
            self.config().with_extension(Arc::clone(&plugins)),
            self.runtime()?,
            DeltQueryPlanner::default(),
            Some(DeltFunctionFactory::new(
                Arc::clone(&plugins),
                self.plugin_isolation,
                self.plugin_dirs.clone(),
            )),
        )?;
        for plugin in &self.plugins {
            let library = match plugins.load(&plugin.path) {
                Ok(library) => library,
                Err(e) if !plugin.required => {
                    eprintln!("warning: skipped {e}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for spec in &library.manifest().functions {
                let call = PluginCall {
                    sql_name: spec.name.clone(),
                    library: plugin.path.display().to_string(),
                    function: spec.name.clone(),
                    settings: FunctionSettings {
                        isolation: self.plugin_isolation,
                        ..FunctionSettings::default()
                    },
                };
                match PluginFunction::try_new(
                    &call.sql_name,
                    Arc::clone(&library),
                    &call.function,
                    call.settings.clone(),
                ) {
                    Ok(function) => {
                        state.register_udf(Arc::new(function.into_udf()))?;
                        plugins.record(call);
                    }
                    Err(e) => eprintln!(
                        "warning: {} not registered: {e}; CREATE FUNCTION can still give it options",
                        spec.name
                    ),
                }
            }
        }
        Ok(state)
    }

    /// The session settings (see the comments on each).
    fn config(&self) -> SessionConfig {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .set_bool("datafusion.optimizer.enable_round_robin_repartition", false)
            // DataFusion drops the ORDER BY of a subquery or view without LIMIT, so
            // `SELECT ... FROM folded_view` would lose the fold: in delt the order is the product.
            .set_bool(
                "datafusion.sql_parser.enable_subquery_sort_elimination",
                false,
            )
            // Work stealing lets a partition read files of another: contiguity is lost.
            .set_bool(
                "datafusion.execution.enable_file_stream_work_stealing",
                false,
            )
            // DataFusion writes zstd level 3. On text corpora level 1 measured as small a file
            // (10M rows of 50-300 byte texts: 1.113 GB against 1.119 GB) in 40% less time, and
            // writing is most of a curation job's cost. `SET` or COPY's
            // `OPTIONS ('compression' 'zstd(3)')` picks another level.
            .set_str("datafusion.execution.parquet.compression", "zstd(1)")
            // Row groups of 128Ki rows (DuckDB writes 122,880) instead of DataFusion's 1Mi:
            // the Parquet writer holds up to three row groups of rows while it encodes, which
            // at 1Mi rows of multi-kilobyte documents is gigabytes. The 10M-row fold also runs
            // faster (7.6 s -> 5.9 s, peak memory 3.7 -> 3.1 GB). COPY's
            // `OPTIONS ('format.max_row_group_size' 'N')` picks another size.
            .set_usize(
                "datafusion.execution.parquet.max_row_group_size",
                ROW_GROUP_ROWS,
            );
        if let Some(threads) = self.threads {
            config = config.with_target_partitions(threads);
        }
        if let Some(rows) = self.batch_size {
            config = config.with_batch_size(rows);
        }
        match self.memory_limit {
            Some(bytes) => {
                // Sorts set aside this much for merging spilled runs (10 MB by default), which
                // would starve everything else under a small limit.
                let merge = (bytes / 8).min(10 << 20);
                config = config
                    .set_usize("datafusion.execution.sort_spill_reservation_bytes", merge)
                    // One sort over all partitions rather than one per partition and a merge
                    // of their outputs: that merge counts each batch it takes in as holding
                    // every string buffer the batch's views point into, and asked a 500 MB
                    // pool for 60 MB per batch (10M rows of 50-300 byte texts: out of memory
                    // at 500M; one sort completes at 200M). The scan still runs in parallel.
                    .set_bool("datafusion.optimizer.repartition_sorts", false);
            }
            None => {
                // A sort that fits in memory sorts each input batch and merges them all: with
                // 8192-row batches, 600 streams for 5M rows. Sorting runs of up to 128 MB
                // instead cuts the merge to a few streams (the 10M-row fold: 7.1 s -> 6.8 s).
                // Not under a memory limit: DataFusion accounts every sorted chunk of a run as
                // holding the whole run's string buffers, and the sort then fails for lack of
                // memory it does not use.
                config = config.set_usize(
                    "datafusion.execution.sort_in_place_threshold_bytes",
                    SORT_RUN_BYTES,
                );
            }
        }
        config
    }

    /// Object stores (S3 buckets made on first use) and the memory limit.
    fn runtime(&self) -> Result<Arc<RuntimeEnv>> {
        let mut runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(DeltObjectStoreRegistry::default()));
        if let Some(bytes) = self.memory_limit {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(bytes)));
        }
        Ok(runtime.build_arc()?)
    }
}

/// A session state with `config` and `runtime`, delt's functions, rewrite, `planner` and file
/// formats, and `CREATE FUNCTION` through `functions` (a cluster's scheduler and executors
/// get plugin functions from the plans instead, and have none).
pub(crate) fn session_state(
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
    planner: DeltQueryPlanner,
    functions: Option<DeltFunctionFactory>,
) -> Result<SessionState> {
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_query_planner(Arc::new(planner))
        .with_analyzer_rule(Arc::new(DeltRewrite))
        .with_function_factory(functions.map(|f| Arc::new(f) as _))
        .build();
    state.register_file_format(Arc::new(JsonLinesFormatFactory::json()), true)?;
    state.register_file_format(Arc::new(JsonLinesFormatFactory::jsonl()), false)?;
    state
        .table_factories_mut()
        .insert("JSONL".into(), Arc::new(ListingTableFactory::new()));
    for function in delt_functions() {
        state.register_udf(function)?;
    }
    Ok(state)
}

/// The SQL functions every delt session has (plugin functions aside).
pub(crate) fn delt_functions() -> Vec<Arc<ScalarUDF>> {
    let mut functions = crate::sql::functions::all();
    functions.extend(crate::sql::tokenize::functions().into_iter().map(Arc::new));
    // What `shuffle_order` is planned into: a cluster's processes decode plans that call it.
    functions.push(Arc::new(ScalarUDF::new_from_impl(ShuffleKey::new())));
    functions
}

/// Parses a size such as `512M`, `2G`, `1.5GiB` or `1000000` (bytes).
pub fn parse_size(text: &str) -> Result<usize> {
    let bad = || {
        DeltError::Config(format!(
            "invalid size '{text}': use a number with K, M, G or T, e.g. 2G"
        ))
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale: f64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * scale;
    if !(bytes >= 1.0 && bytes.is_finite()) {
        return Err(bad());
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("2X").is_err());
    }
}
