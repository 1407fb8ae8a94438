//! A query's result read batch by batch: the native iterator behind the
//! `pyarrow.RecordBatchReader` that `sql_stream` returns.

use std::sync::Mutex;

use arrow_pyarrow::PyArrowType;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::error::{ExecutionError, to_py};
use crate::wait::{TICK, runtime};

/// A running query's result, pulled one batch per `__next__`: the query runs only as fast as
/// it is read, so the result never sits whole in memory. `delt.sql_stream` wraps it in
/// `pyarrow.RecordBatchReader.from_batches`, which passes the exceptions raised here through
/// unchanged (a `DeltError`, or `KeyboardInterrupt` on Ctrl-C).
#[pyclass(module = "delt._delt", frozen)]
pub struct Stream {
    schema: Schema,
    /// The running query; dropped (which stops it) once it ended, failed or was interrupted.
    state: Mutex<State>,
}

/// Where a [`Stream`] stands.
enum State {
    /// The query runs and has more to give.
    Running(SendableRecordBatchStream),
    /// The result was read to its end, or the query failed (its error was raised).
    Ended,
    /// Ctrl-C stopped the query before its end.
    Interrupted,
}

impl Stream {
    /// A reader of `stream`.
    pub fn new(stream: SendableRecordBatchStream) -> Self {
        Self {
            schema: stream.schema().as_ref().clone(),
            state: Mutex::new(State::Running(stream)),
        }
    }

    /// Waits up to [`TICK`] for the next batch, without the GIL; `None` when none came in
    /// that time.
    fn poll(&self, runtime: &Runtime) -> Option<Result<Option<RecordBatch>, delt::DeltError>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Running(stream) = &mut *state else {
            return Some(Ok(None));
        };
        let next = runtime.block_on(async { tokio::time::timeout(TICK, stream.next()).await });
        match next {
            Err(_elapsed) => None,
            Ok(Some(Ok(batch))) => Some(Ok(Some(batch))),
            Ok(None) => {
                *state = State::Ended;
                Some(Ok(None))
            }
            Ok(Some(Err(e))) => {
                *state = State::Ended;
                Some(Err(e.into()))
            }
        }
    }
}

#[pymethods]
impl Stream {
    /// The schema of the batches, as a `pyarrow.Schema`.
    #[getter]
    fn schema(&self) -> PyArrowType<Schema> {
        PyArrowType(self.schema.clone())
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next batch as a `pyarrow.RecordBatch` (its buffers are not copied), waiting with
    /// the GIL released and looking for Ctrl-C every [`TICK`]; `StopIteration` at the end.
    fn __next__(&self, py: Python<'_>) -> PyResult<PyArrowType<RecordBatch>> {
        let runtime = runtime()?;
        loop {
            match py.detach(|| self.poll(runtime)) {
                Some(Ok(Some(batch))) => return Ok(PyArrowType(batch)),
                Some(Ok(None)) => {
                    let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    return Err(match *state {
                        State::Interrupted => ExecutionError::new_err(
                            "the query was interrupted (KeyboardInterrupt): run it again",
                        ),
                        _ => PyStopIteration::new_err(()),
                    });
                }
                Some(Err(e)) => return Err(to_py(e)),
                None => {
                    if let Err(interrupt) = py.check_signals() {
                        // Dropping the stream stops the query.
                        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Interrupted;
                        return Err(interrupt);
                    }
                }
            }
        }
    }
}
