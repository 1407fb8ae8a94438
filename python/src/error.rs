//! The `delt.DeltError` exception hierarchy and the mapping of the engine's errors onto it.

use datafusion::error::DataFusionError;
use delt::DeltError as EngineError;
use delt_models::ModelError as EngineModelError;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;

pyo3::create_exception!(
    delt,
    DeltError,
    PyException,
    "Base class of the errors of delt; the message is the one the `delt` command prints."
);
pyo3::create_exception!(
    delt,
    SqlError,
    DeltError,
    "The SQL, its parameters or an option is wrong (syntax, planning, unknown table or column)."
);
pyo3::create_exception!(
    delt,
    ExecutionError,
    DeltError,
    "A query failed while it ran (out of memory under a limit, a failed computation)."
);
pyo3::create_exception!(
    delt,
    InputError,
    DeltError,
    "An input file or location is missing or unreadable; the message names it."
);
pyo3::create_exception!(
    delt,
    IoError,
    DeltError,
    "Reading or writing failed outside the inputs' contents (output, object store, disk)."
);
pyo3::create_exception!(
    delt,
    PluginError,
    DeltError,
    "A scorer plugin library could not be found or loaded."
);
pyo3::create_exception!(
    delt,
    ModelError,
    DeltError,
    "A model could not be loaded, trained or run."
);

/// The Python exception for an engine error: its class from what failed, its message the
/// command line's; a job stopped on request becomes `KeyboardInterrupt`.
pub fn to_py(error: EngineError) -> PyErr {
    let message = error.to_string();
    match root(&error) {
        EngineError::Model(EngineModelError::Stopped) => PyKeyboardInterrupt::new_err(message),
        EngineError::Model(_) => ModelError::new_err(message),
        EngineError::Plugin(_) => PluginError::new_err(message),
        EngineError::BadInput(_) => InputError::new_err(message),
        EngineError::Io { .. } | EngineError::Output { .. } => IoError::new_err(message),
        EngineError::DataFusion(e) => match e.find_root() {
            DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => {
                IoError::new_err(message)
            }
            DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => SqlError::new_err(message),
            _ => ExecutionError::new_err(message),
        },
        EngineError::Panic(_) | EngineError::Arrow(_) => ExecutionError::new_err(message),
        _ => SqlError::new_err(message),
    }
}

/// The error a statement error wraps, which says what kind of failure it is.
fn root(error: &EngineError) -> &EngineError {
    match error {
        EngineError::Statement { source, .. } => root(source),
        other => other,
    }
}

/// The Python exception for a job's error (`delt.lqs`, `delt.bench`): an engine error as in
/// [`to_py`], anything else (an invalid option) as a `DeltError` with the command line's
/// message.
pub fn job_to_py(error: anyhow::Error) -> PyErr {
    match error.downcast::<EngineError>() {
        Ok(error) => to_py(error),
        Err(other) => DeltError::new_err(other.to_string()),
    }
}

/// Registers the exception classes in the module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("DeltError", py.get_type::<DeltError>())?;
    module.add("SqlError", py.get_type::<SqlError>())?;
    module.add("ExecutionError", py.get_type::<ExecutionError>())?;
    module.add("InputError", py.get_type::<InputError>())?;
    module.add("IoError", py.get_type::<IoError>())?;
    module.add("PluginError", py.get_type::<PluginError>())?;
    module.add("ModelError", py.get_type::<ModelError>())?;
    Ok(())
}
