//! Work on blocking threads whose results are taken in the order it was started.
//!
//! The writers encode batches and row groups, and the in-memory fold gathers layers, a few at a
//! time on blocking threads while the next ones arrive; the output must still come out in order.

use std::collections::VecDeque;

use datafusion::common::runtime::SpawnedTask;
use datafusion::error::{DataFusionError, Result};

/// Blocking tasks, started one after another, whose results come back in that order.
pub struct InOrder<T> {
    tasks: VecDeque<SpawnedTask<Result<T>>>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        Self {
            tasks: VecDeque::new(),
        }
    }
}

impl<T: Send + 'static> InOrder<T> {
    /// Starts `work` on a blocking thread.
    pub fn start(&mut self, work: impl FnOnce() -> Result<T> + Send + 'static) {
        self.tasks.push_back(SpawnedTask::spawn_blocking(work));
    }

    /// Tasks started whose results have not been taken.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether every result has been taken.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The result of the oldest task not yet taken, once it is done; `None` when all are taken.
    pub async fn next(&mut self) -> Option<Result<T>> {
        Some(joined(self.tasks.pop_front()?).await)
    }
}

/// What `task` returned; a panic in it becomes an error.
pub async fn joined<T: Send + 'static>(task: SpawnedTask<Result<T>>) -> Result<T> {
    task.join()
        .await
        .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::InOrder;

    #[tokio::test]
    async fn results_come_in_start_order() {
        let mut tasks = InOrder::default();
        for i in 0..6u64 {
            // Earlier tasks take longer: they finish last but come out first.
            tasks.start(move || {
                std::thread::sleep(Duration::from_millis(30 - 5 * i));
                Ok(i)
            });
        }
        assert_eq!(tasks.len(), 6);
        let mut got = Vec::new();
        while let Some(result) = tasks.next().await {
            got.push(result.unwrap());
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        assert!(tasks.is_empty());
        tasks.start(|| panic!("a bug"));
        let error = tasks.next().await.unwrap().unwrap_err().to_string();
        assert!(
            error.contains("a bug") || error.contains("panic"),
            "{error}"
        );
    }
}
