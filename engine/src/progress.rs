//! Progress on stderr: the SQL runner's line (rows read and written, rate, elapsed time), the
//! line of a resumable COPY's units (done / total, rows per second, ETA) and the bar of the jobs
//! that know their length (LQS, efficacy). The lines add the S3 tries that failed and were
//! retried, when there are any.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use datafusion::physical_plan::ExecutionPlan;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::io::object_stores::transient_failures;

/// Shows the progress of one running plan until dropped.
pub struct Progress {
    written: Arc<AtomicU64>,
    _line: Line,
}

impl Progress {
    /// Starts showing progress of `plan` if `enabled` and stderr is a terminal.
    pub fn start(plan: &Arc<dyn ExecutionPlan>, enabled: bool) -> Self {
        let written = Arc::new(AtomicU64::new(0));
        let (plan, counter) = (Arc::clone(plan), Arc::clone(&written));
        let started = Instant::now();
        let line = Line::start(enabled, move || {
            let read = rows_read(&plan);
            let rate = read as f64 / started.elapsed().as_secs_f64().max(1e-3);
            format!(
                "read {read} rows ({rate:.0} rows/s), wrote {} rows{}",
                counter.load(Ordering::Relaxed),
                retries_note()
            )
        });
        Self {
            written,
            _line: line,
        }
    }

    /// The counter that writers bump for every row they write.
    pub fn written(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.written)
    }
}

/// Shows the units of a resumable job until dropped: units done of the total (counting those
/// an earlier run finished), rows per second and an estimate of the time left, both from the
/// units of this run.
pub struct UnitProgress {
    rows: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    _line: Line,
}

impl UnitProgress {
    /// Starts showing `total` units of which `finished` are done already, if `enabled` and
    /// stderr is a terminal.
    pub fn start(total: usize, finished: usize, enabled: bool) -> Self {
        let rows = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let (rows_now, done_now) = (Arc::clone(&rows), Arc::clone(&done));
        let started = Instant::now();
        let line = Line::start(enabled, move || {
            let seconds = started.elapsed().as_secs_f64().max(1e-3);
            let rows = rows_now.load(Ordering::Relaxed);
            let done = done_now.load(Ordering::Relaxed) as usize;
            let eta = match done {
                0 => "?".to_string(),
                _ => {
                    let left = total.saturating_sub(finished + done);
                    let eta = Duration::from_secs_f64(seconds / done as f64 * left as f64);
                    indicatif::HumanDuration(eta).to_string()
                }
            };
            let earlier = match finished {
                0 => String::new(),
                n => format!(" ({n} from an earlier run)"),
            };
            format!(
                "units {}/{total}{earlier}, {rows} rows ({:.0} rows/s), eta {eta}{}",
                finished + done,
                rows as f64 / seconds,
                retries_note()
            )
        });
        Self {
            rows,
            done,
            _line: line,
        }
    }

    /// The counter that writers bump for every row of a unit they write.
    pub fn rows(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.rows)
    }

    /// Counts one more unit done.
    pub fn unit_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A line on stderr redrawn with a fresh message five times a second, until dropped; nothing
/// when not enabled or stderr is not a terminal.
struct Line(Option<(ProgressBar, tokio::task::JoinHandle<()>)>);

impl Line {
    fn start(enabled: bool, message: impl Fn() -> String + Send + 'static) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"),
        );
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                shown.set_message(message());
                shown.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self(Some((bar, task)))
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if let Some((bar, task)) = self.0.take() {
            task.abort();
            bar.finish_and_clear();
        }
    }
}

/// `, S3: N failed tries retried` when there were such tries (in this process), else nothing.
pub fn retries_note() -> String {
    match transient_failures() {
        0 => String::new(),
        n => format!(", S3: {n} failed tries retried"),
    }
}

/// Rows produced so far by the plan's leaves (its scans).
fn rows_read(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let children = plan.children();
    if children.is_empty() {
        return plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0);
    }
    children.into_iter().map(rows_read).sum()
}

/// Receives the progress of the long jobs (LQS, efficacy) and tells them when to stop; an
/// embedder that runs them (the Python module) installs one with [`observe_jobs`].
pub trait JobObserver: Send + Sync {
    /// `done` of `total` steps of the job's current `stage` are done.
    fn progress(&self, stage: &str, done: u64, total: u64);
    /// Whether the job should stop at its next step (it then fails with a "stopped" error).
    fn stop_requested(&self) -> bool;
}

/// The observer of the jobs of this process, if any.
static OBSERVER: RwLock<Option<Arc<dyn JobObserver>>> = RwLock::new(None);

/// Sends the progress of the jobs that start from now on to `observer` (`None`: to the bar on
/// stderr again). One observer serves the whole process: run one observed job at a time.
pub fn observe_jobs(observer: Option<Arc<dyn JobObserver>>) {
    *OBSERVER.write().unwrap_or_else(|e| e.into_inner()) = observer;
}

/// The done/total progress of a job that knows its length (LQS, efficacy): a bar with an ETA
/// on stderr, or the calls of the process's [`JobObserver`] when one is installed; it also
/// carries the observer's request to stop.
pub struct JobBar {
    bar: ProgressBar,
    observer: Option<Arc<dyn JobObserver>>,
}

impl JobBar {
    /// The stage the job is in.
    pub fn message(&self) -> String {
        self.bar.message()
    }

    /// Names the current stage.
    pub fn set_message(&self, stage: impl Into<std::borrow::Cow<'static, str>>) {
        self.bar.set_message(stage);
    }

    /// The steps of the current stage.
    pub fn length(&self) -> Option<u64> {
        self.bar.length()
    }

    /// Sets the steps of the current stage.
    pub fn set_length(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// Sets the steps done; `Break` when the job should stop.
    pub fn set_position(&self, done: u64) -> ControlFlow<()> {
        self.bar.set_position(done);
        self.report()
    }

    /// Counts `steps` more done; `Break` when the job should stop.
    pub fn inc(&self, steps: u64) -> ControlFlow<()> {
        self.bar.inc(steps);
        self.report()
    }

    /// Removes the bar.
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }

    fn report(&self) -> ControlFlow<()> {
        let Some(observer) = &self.observer else {
            return ControlFlow::Continue(());
        };
        let total = self.bar.length().unwrap_or(0);
        observer.progress(&self.bar.message(), self.bar.position(), total);
        match observer.stop_requested() {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    }
}

/// The progress of a job that knows its length: the process's [`JobObserver`] if one is
/// installed, else a bar of done/total steps with an ETA on stderr, hidden when not `enabled`.
pub fn progress_bar(enabled: bool) -> JobBar {
    let observer = OBSERVER.read().unwrap_or_else(|e| e.into_inner()).clone();
    if !enabled || observer.is_some() {
        return JobBar {
            bar: ProgressBar::hidden(),
            observer,
        };
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    JobBar {
        bar,
        observer: None,
    }
}
