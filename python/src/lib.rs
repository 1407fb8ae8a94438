//! `delt._delt`, the native module of the `delt` Python package (distribution `delt-sql`):
//! delt sessions that run SQL with the GIL released and hand results to pyarrow without
//! copying, the long jobs with progress and Ctrl-C, and the `delt.DeltError` exceptions.
//! The pure-Python package `python/delt/` wraps it.

use pyo3::prelude::*;

mod error;
mod jobs;
mod session;
mod stream;
mod wait;

/// The native module.
#[pymodule]
fn _delt(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<session::Session>()?;
    module.add_class::<stream::Stream>()?;
    module.add_function(wrap_pyfunction!(jobs::run_job, module)?)?;
    error::register(module)?;
    Ok(())
}
