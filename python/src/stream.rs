//! A query's result stream read by pyarrow, batch by batch, through the Arrow C stream
//! interface.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatchReader;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use pyo3::prelude::*;

use crate::wait::{TICK, runtime};

/// Reads a DataFusion stream when pyarrow asks for the next batch: the query runs only as
/// fast as it is read, so the result never sits whole in memory. Waits with the GIL
/// released; Ctrl-C ends the stream with an error and leaves `KeyboardInterrupt` pending.
pub struct BatchReader {
    stream: SendableRecordBatchStream,
    schema: SchemaRef,
}

impl BatchReader {
    /// A reader of `stream`.
    pub fn new(stream: SendableRecordBatchStream) -> Self {
        let schema = stream.schema();
        Self { stream, schema }
    }

    /// The next batch, waiting in slices of [`TICK`] between which signals are checked.
    fn next_batch(&mut self, py: Python<'_>) -> Option<Result<RecordBatch, ArrowError>> {
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(e) => return Some(Err(ArrowError::ExternalError(Box::new(e)))),
        };
        loop {
            let next = py.detach(|| {
                runtime.block_on(async { tokio::time::timeout(TICK, self.stream.next()).await })
            });
            match next {
                Ok(None) => return None,
                Ok(Some(Ok(batch))) => return Some(Ok(batch)),
                Ok(Some(Err(e))) => {
                    let message = delt::DeltError::from(e).to_string();
                    return Some(Err(ArrowError::ExternalError(message.into())));
                }
                Err(_elapsed) => {
                    if py.check_signals().is_err() {
                        // pyarrow turns the error into its own exception; raising the
                        // signal again makes Python raise KeyboardInterrupt after it.
                        // SAFETY: callable from any thread, with or without the GIL.
                        unsafe { pyo3::ffi::PyErr_SetInterrupt() };
                        return Some(Err(ArrowError::ExternalError(
                            "the query was interrupted (KeyboardInterrupt)".into(),
                        )));
                    }
                }
            }
        }
    }
}

impl Iterator for BatchReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        Python::attach(|py| self.next_batch(py))
    }
}

impl RecordBatchReader for BatchReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
