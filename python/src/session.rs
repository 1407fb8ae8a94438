//! `delt.Session`: a DataFusion session with delt's functions, kept between calls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_pyarrow::{PyArrowType, Table};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ffi_stream::ArrowArrayStreamReader;
use datafusion::arrow::record_batch::RecordBatchReader;
use datafusion::datasource::MemTable;
use datafusion::execution::SendableRecordBatchStream;
use delt::plugins::host::libraries_in;
use delt::sql::params::Params;
use delt::sql::session::parse_size;
use delt::{DeltError, DeltSession, Runner};
use futures::TryStreamExt;
use pyo3::prelude::*;
use tokio::sync::Mutex;

use crate::error::to_py;
use crate::stream::Stream;
use crate::wait::wait;

/// A delt session: tables, functions (`CREATE FUNCTION`), settings and S3 stores registered
/// in one call stay for the next. Queries run with the GIL released; Ctrl-C stops them.
#[pyclass(module = "delt._delt", frozen)]
pub struct Session {
    runner: Arc<Mutex<Runner>>,
}

#[pymethods]
impl Session {
    /// A session. `memory_limit` (bytes, or a size such as "2G") makes sorts, selections and
    /// folds spill beyond it; `threads` caps the partitions run in parallel; `plugins` are
    /// scorer libraries whose functions are registered under their own names; `plugin_path`
    /// are directories where `CREATE FUNCTION` finds libraries named without a path (the
    /// directories of `DELT_PLUGIN_PATH` too, whose libraries are loaded, as `delt sql` does).
    #[new]
    #[pyo3(signature = (memory_limit=None, threads=None, batch_size=None, plugins=Vec::new(), plugin_path=Vec::new()))]
    fn new(
        memory_limit: Option<MemoryLimit>,
        threads: Option<usize>,
        batch_size: Option<usize>,
        plugins: Vec<PathBuf>,
        plugin_path: Vec<PathBuf>,
    ) -> PyResult<Self> {
        let mut session = DeltSession::new();
        if let Some(limit) = memory_limit {
            session = session.with_memory_limit(limit.bytes()?);
        }
        if let Some(threads) = threads {
            session = session.with_threads(threads);
        }
        if let Some(rows) = batch_size {
            session = session.with_batch_size(rows);
        }
        if let Ok(list) = std::env::var("DELT_PLUGIN_PATH") {
            for plugin in libraries_in(&list) {
                session = session.with_found_plugin(plugin);
            }
        }
        for plugin in plugins {
            session = session.with_plugin(plugin);
        }
        for dir in plugin_path {
            session = session.with_plugin_dir(dir);
        }
        let ctx = session.build().map_err(to_py)?;
        Ok(Self {
            runner: Arc::new(Mutex::new(Runner::new(ctx))),
        })
    }

    /// Runs the statements of `query` (several allowed, as `delt sql -c`) and returns the
    /// result of the last one as a `pyarrow.Table`, or `None` when it is not a query.
    #[pyo3(signature = (query, params=None))]
    fn sql<'py>(
        &self,
        py: Python<'py>,
        query: &str,
        params: Option<HashMap<String, String>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let runner = Arc::clone(&self.runner);
        let query = query.to_string();
        let collected = wait(py, move || async move {
            let Some(stream) = run(&runner, &query, params).await? else {
                return Ok(None);
            };
            let schema = stream.schema();
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            Ok::<_, DeltError>(Some((batches, schema)))
        })?
        .map_err(to_py)?;
        let Some((batches, schema)) = collected else {
            return Ok(None);
        };
        let table = Table::try_new(batches, schema).map_err(arrow_to_py)?;
        PyArrowType(table).into_pyobject(py).map(Some)
    }

    /// As [`sql`](Self::sql), but returns the last query's result as a [`Stream`] that runs
    /// the query as it is read (`delt.sql_stream` makes it a `pyarrow.RecordBatchReader`): a
    /// large result never sits whole in memory.
    #[pyo3(signature = (query, params=None))]
    fn sql_stream(
        &self,
        py: Python<'_>,
        query: &str,
        params: Option<HashMap<String, String>>,
    ) -> PyResult<Option<Stream>> {
        let runner = Arc::clone(&self.runner);
        let query = query.to_string();
        let stream = wait(
            py,
            move || async move { run(&runner, &query, params).await },
        )?
        .map_err(to_py)?;
        Ok(stream.map(Stream::new))
    }

    /// Registers `data` as table `name`: anything with `__arrow_c_stream__` (a pyarrow Table
    /// or RecordBatchReader, a polars DataFrame, ...). Its batches are read once and kept as
    /// they are, without copying their buffers.
    fn register(
        &self,
        py: Python<'_>,
        name: &str,
        data: PyArrowType<ArrowArrayStreamReader>,
    ) -> PyResult<()> {
        let reader = data.0;
        let schema = reader.schema();
        let batches: Vec<RecordBatch> = py
            .detach(|| reader.collect::<Result<_, _>>())
            .map_err(arrow_to_py)?;
        let table =
            MemTable::try_new(schema, vec![batches]).map_err(|e| to_py(DeltError::from(e)))?;
        let runner = Arc::clone(&self.runner);
        let name = name.to_string();
        wait(py, move || async move {
            let runner = runner.lock().await;
            runner
                .context()
                .register_table(name.as_str(), Arc::new(table))?;
            Ok::<_, DeltError>(())
        })?
        .map_err(to_py)
    }

    /// Removes table `name`; `True` if there was one.
    fn deregister(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        let runner = Arc::clone(&self.runner);
        let name = name.to_string();
        wait(py, move || async move {
            let runner = runner.lock().await;
            Ok::<_, DeltError>(runner.context().deregister_table(name.as_str())?.is_some())
        })?
        .map_err(to_py)
    }
}

/// Runs `query` with `params` in the runner and returns the last query's stream.
async fn run(
    runner: &Mutex<Runner>,
    query: &str,
    params: Option<HashMap<String, String>>,
) -> Result<Option<SendableRecordBatchStream>, DeltError> {
    let mut bound = Params::default();
    for (name, value) in params.unwrap_or_default() {
        bound.insert(name, value);
    }
    bound.check_sources([query])?;
    let mut runner = runner.lock().await;
    runner.set_params(bound);
    runner.run_source_returning(query, "query").await
}

/// A memory limit given as bytes or as a size such as "2G".
#[derive(FromPyObject)]
pub enum MemoryLimit {
    /// Bytes.
    Bytes(usize),
    /// A size with a unit.
    Size(String),
}

impl MemoryLimit {
    /// The limit in bytes.
    fn bytes(&self) -> PyResult<usize> {
        match self {
            Self::Bytes(bytes) => Ok(*bytes),
            Self::Size(size) => parse_size(size).map_err(to_py),
        }
    }
}

fn arrow_to_py(error: ArrowError) -> PyErr {
    to_py(DeltError::from(error))
}
