//! The long jobs (`delt lqs annotate|fit`, `delt bench efficacy`) run from Python: progress
//! reported to a Python callable, Ctrl-C stopping the job at its next step.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};

use delt::progress::{JobObserver, observe_jobs};
use pyo3::prelude::*;

use crate::error::{DeltError, job_to_py};
use crate::wait::TICK;

/// The progress a job reported and not yet shown, and whether it was asked to stop.
#[derive(Default)]
struct Observer {
    /// `(stage, done, total)`: the last report of each stage since the last look, in order,
    /// so that a stage shorter than a [`TICK`] is still shown, and shown complete.
    reports: Mutex<Vec<(String, u64, u64)>>,
    stop: AtomicBool,
}

impl Observer {
    /// The reports since the last call.
    fn take(&self) -> Vec<(String, u64, u64)> {
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl JobObserver for Observer {
    fn progress(&self, stage: &str, done: u64, total: u64) {
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        match reports.last_mut() {
            Some(last) if last.0 == stage => (last.1, last.2) = (done, total),
            _ => reports.push((stage.to_string(), done, total)),
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One observed job at a time: the engine has one observer per process.
static ONE_JOB: Mutex<()> = Mutex::new(());

/// Runs the job of the command-line `words` (`["lqs", "fit", "--labels", ...]`) on a thread
/// of its own with the GIL released; its `CREATE FUNCTION`s also find libraries in
/// `plugin_path`. `on_progress(stage, done, total)` is called on the calling thread every
/// [`TICK`] with the last progress of each stage reported since. Ctrl-C (or an exception
/// from `on_progress`) asks the job to stop at its next step and is raised once it has.
#[pyfunction]
#[pyo3(signature = (words, plugin_path=Vec::new(), on_progress=None))]
pub fn run_job(
    py: Python<'_>,
    words: Vec<String>,
    plugin_path: Vec<PathBuf>,
    on_progress: Option<Py<PyAny>>,
) -> PyResult<()> {
    let _one = ONE_JOB.try_lock().map_err(|_| {
        DeltError::new_err("another delt job is running in this process: run one at a time")
    })?;
    let observer = Arc::new(Observer::default());
    observe_jobs(Some(observer.clone()));
    let (done, mut finished) = channel();
    let job = std::thread::Builder::new()
        .name("delt-job".into())
        .spawn(move || {
            let outcome = delt::cli::run_job(&words, &plugin_path);
            // The receiver waits until this is sent.
            let _ = done.send(());
            outcome
        })
        .map_err(|e| DeltError::new_err(format!("cannot start the job's thread: {e}")))?;
    // The exception that ends the call (Ctrl-C, or one the callback raised): the job is asked
    // to stop, and waited for.
    let mut interrupted = None;
    loop {
        let receiver = &mut finished;
        let waited = py.detach(move || receiver.recv_timeout(TICK));
        for report in observer.take() {
            if let (Some(callback), None) = (&on_progress, &interrupted)
                && let Err(e) = callback.call1(py, report)
            {
                observer.stop.store(true, Ordering::Relaxed);
                interrupted = Some(e);
            }
        }
        if waited != Err(RecvTimeoutError::Timeout) {
            break;
        }
        if interrupted.is_none()
            && let Err(e) = py.check_signals()
        {
            observer.stop.store(true, Ordering::Relaxed);
            interrupted = Some(e);
        }
    }
    observe_jobs(None);
    let outcome = py.detach(|| job.join());
    match (interrupted, outcome) {
        (Some(interrupt), _) => Err(interrupt),
        (None, Ok(outcome)) => outcome.map_err(job_to_py),
        (None, Err(_panic)) => Err(DeltError::new_err(
            "internal error: the job panicked (please report it)",
        )),
    }
}
