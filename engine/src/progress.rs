//! Progress on stderr: the SQL runner's line (rows read and written, rate, elapsed time) and the
//! bar of the jobs that know their length (LQS, efficacy).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::physical_plan::ExecutionPlan;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows the progress of one running plan until dropped.
pub struct Progress {
    written: Arc<AtomicU64>,
    ticker: Option<(ProgressBar, tokio::task::JoinHandle<()>)>,
}

impl Progress {
    /// Starts showing progress of `plan` if `enabled` and stderr is a terminal.
    pub fn start(plan: &Arc<dyn ExecutionPlan>, enabled: bool) -> Self {
        let written = Arc::new(AtomicU64::new(0));
        if !enabled || !std::io::stderr().is_terminal() {
            return Self {
                written,
                ticker: None,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"),
        );
        let (plan, shown, counter) = (Arc::clone(plan), bar.clone(), Arc::clone(&written));
        let started = Instant::now();
        let task = tokio::spawn(async move {
            loop {
                let read = rows_read(&plan);
                let rate = read as f64 / started.elapsed().as_secs_f64().max(1e-3);
                shown.set_message(format!(
                    "read {read} rows ({rate:.0} rows/s), wrote {} rows",
                    counter.load(Ordering::Relaxed)
                ));
                shown.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            written,
            ticker: Some((bar, task)),
        }
    }

    /// The counter that writers bump for every row they write.
    pub fn written(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.written)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some((bar, task)) = self.ticker.take() {
            task.abort();
            bar.finish_and_clear();
        }
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

/// A bar of done/total steps with an ETA for the jobs that know their length (LQS, efficacy);
/// hidden when not `enabled`.
pub fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}
