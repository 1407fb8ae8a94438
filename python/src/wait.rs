//! Running engine work with the GIL released while still answering Ctrl-C.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::error::DeltError;

/// How often a waiting call looks for signals (Ctrl-C) that Python must handle.
pub const TICK: Duration = Duration::from_millis(100);

/// The runtime every query of the process runs on (all cores).
pub fn runtime() -> PyResult<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("delt")
        .build()
        .map_err(|e| DeltError::new_err(format!("cannot start the async runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs the future `work` makes to its end on a thread of its own, with the GIL released,
/// looking for signals every [`TICK`]: when a signal handler raises (Ctrl-C:
/// `KeyboardInterrupt`), the future is dropped, which stops its work, the staging
/// directories of unfinished COPYs are removed (nothing is published), and the exception is
/// returned.
pub fn wait<W, F>(py: Python<'_>, work: W) -> PyResult<F::Output>
where
    W: FnOnce() -> F + Send + 'static,
    F: Future,
    F::Output: Send + 'static,
{
    let runtime = runtime()?;
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let (done, mut receiver) = channel();
    let worker = std::thread::Builder::new()
        .name("delt-query".into())
        .spawn(move || {
            let output = runtime.block_on(async move {
                tokio::select! {
                    output = work() => Some(output),
                    _ = cancelled => {
                        delt::io::output::remove_unfinished().await;
                        None
                    }
                }
            });
            // The receiver waits until this is sent.
            let _ = done.send(output);
        })
        .map_err(|e| DeltError::new_err(format!("cannot start a query thread: {e}")))?;
    let mut cancel = Some(cancel);
    let (mut finished, mut interrupted) = (None, None);
    while finished.is_none() {
        // `&mut` so that the closure is Send: a Receiver is Send, not Sync.
        let rx = &mut receiver;
        match py.detach(move || rx.recv_timeout(TICK)) {
            Ok(output) => finished = Some(output),
            Err(RecvTimeoutError::Timeout) => {
                if interrupted.is_none()
                    && let Err(e) = py.check_signals()
                {
                    if let Some(cancel) = cancel.take() {
                        let _ = cancel.send(());
                    }
                    interrupted = Some(e);
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let joined = py.detach(|| worker.join());
    match (interrupted, finished.flatten(), joined) {
        (Some(interrupt), _, _) => Err(interrupt),
        (None, Some(output), _) => Ok(output),
        (None, None, _) => Err(DeltError::new_err(
            "internal error: the query's thread ended without a result (please report it)",
        )),
    }
}
