//! Selection: keep the best-scored rows, `WHERE top_k(score, k)` and `WHERE top_r(score, r)`.
//!
//! Semantics follow the DELT reference (stable ascending sort by score, keep the last k), so
//! among rows tied at the cut the *later* ones in input order are kept. top-r keeps
//! `floor(N * r)` rows where N counts every row reaching the selection, NULL scores included;
//! when that is 0 nothing is kept (the reference keeps everything: a defect we do not copy).
//! Rows with a NULL score are never selected.
//!
//! The selected rows come out in input order, like any `WHERE`, so an `ORDER BY` above decides
//! their final order. No sort is needed: [`SelectExec`] buffers its input (spilling under memory
//! pressure) while collecting the scores, finds the cut with a linear-time selection, then
//! replays the buffer through the cut.
//!
//! In a cluster ([`SelectStrategy::Gathered`]) the rows of many tasks are merged into one
//! stream in input order: each task keys its rows by
//! [`position_key`](crate::stages::order_key::position_key) (position first, score kept) and
//! sorts them on its executor, and the merge keeps that order. The selection buffers the rows
//! (spilling), keeps their order keys (16 bytes a row), finds the `k` largest (ascending by
//! score, ties in input order, the last `k`: the same rows as above) and replays the buffer
//! through the cut.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type, SchemaRef};
use datafusion::common::internal_err;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext, async_try_stream};
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, SpillMetrics,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    ExecutionPlanProperties, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::stages::Selection;
use crate::stages::node::stage_output;
use crate::stages::order_key::{ascending_key_requirement, order_key_from_position_key};
use crate::stages::spill::BufferSet;

/// How a [`SelectExec`] reads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectStrategy {
    /// The input's last column is the score and its partitions are contiguous runs of the
    /// input, replayed in turn from a spilling buffer.
    InputOrder,
    /// The input's last column is a position key, and the input is merged into one partition
    /// in key order (input order) first: in a cluster, the plan below the selection (scan,
    /// scoring, keys, sort) then runs as one task per input partition on the executors, and
    /// the selection holds the keys in memory and the rows in a spilling buffer.
    Gathered,
}

/// Physical selection over all input partitions, emitting one partition in input order.
#[derive(Debug)]
pub struct SelectExec {
    input: Arc<dyn ExecutionPlan>,
    selection: Selection,
    strategy: SelectStrategy,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SelectExec {
    /// Selects from `input`, a plan whose last column is the score
    /// ([`SelectStrategy::InputOrder`]) or an order key ([`SelectStrategy::Gathered`]).
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        selection: Selection,
        strategy: SelectStrategy,
    ) -> Self {
        let (schema, properties) = stage_output(&input.schema());
        Self {
            input,
            selection,
            strategy,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl SelectExec {
    /// How many rows it keeps.
    pub fn selection(&self) -> Selection {
        self.selection
    }

    /// How it reads its input.
    pub fn strategy(&self) -> SelectStrategy {
        self.strategy
    }
}

impl DisplayAs for SelectExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SelectExec: {}", self.selection)?;
        if self.strategy == SelectStrategy::Gathered {
            write!(f, ", gathered")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for SelectExec {
    fn name(&self) -> &str {
        "SelectExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        match self.strategy {
            SelectStrategy::InputOrder => vec![Distribution::UnspecifiedDistribution],
            SelectStrategy::Gathered => vec![Distribution::SinglePartition],
        }
    }

    // Partitions are contiguous runs of the input: splitting them would lose the order.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        match self.strategy {
            SelectStrategy::InputOrder => vec![None],
            SelectStrategy::Gathered => vec![ascending_key_requirement(&self.input.schema())],
        }
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            self.selection,
            self.strategy,
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("SelectExec has one partition, asked for {partition}");
        }
        if self.strategy == SelectStrategy::Gathered {
            return self.execute_gathered(context);
        }
        let partitions = self.input.output_partitioning().partition_count();
        let (sender, mut receiver) =
            mpsc::channel::<(usize, Result<RecordBatch>)>(2 * partitions.max(1));
        // Each input partition runs on its own task so upstream work stays parallel.
        let mut tasks = Vec::with_capacity(partitions);
        for p in 0..partitions {
            let mut stream = self.input.execute(p, Arc::clone(&context))?;
            let sender = sender.clone();
            tasks.push(SpawnedTask::spawn(async move {
                while let Some(batch) = stream.next().await {
                    let failed = batch.is_err();
                    if sender.send((p, batch)).await.is_err() || failed {
                        break;
                    }
                }
            }));
        }
        drop(sender);

        let selection = self.selection;
        let input_schema = self.input.schema();
        let score = input_schema.fields().len() - 1;
        let out_columns: Vec<usize> = (0..score).collect();
        let mut buffers = BufferSet::new(
            partitions,
            Arc::clone(&input_schema),
            context.runtime_env(),
            "SelectExec",
            SpillMetrics::new(&self.metrics, partition),
        );
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = async_try_stream(move |mut tx| async move {
            let _tasks = tasks;
            let mut scores: Vec<f64> = Vec::new();
            let mut rows = 0usize;
            while let Some((p, batch)) = receiver.recv().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                rows += batch.num_rows();
                let batch_scores = float_scores(&batch, score)?;
                scores.extend(batch_scores.iter().flatten());
                buffers.push(p, batch)?;
            }
            let mut cut = Cut::find(scores, selection.count(rows));
            // Partitions are contiguous runs of the input: replaying them in turn is input order.
            let held = buffers.freeze();
            for p in 0..partitions {
                for batch in held.replay(p, false) {
                    let batch = batch?;
                    let keep = cut.filter(&float_scores(&batch, score)?);
                    let kept = filter_record_batch(&batch.project(&out_columns)?, &keep)?;
                    if kept.num_rows() > 0 {
                        baseline.record_output(kept.num_rows());
                        tx.emit(kept).await;
                    }
                }
            }
            Ok::<_, DataFusionError>(())
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

impl SelectExec {
    /// [`SelectStrategy::Gathered`]: buffers the rows (in input order, keyed by position),
    /// keeps the `k` largest order keys among those with a score, and replays the buffer
    /// through that cut.
    fn execute_gathered(&self, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(0, Arc::clone(&context))?;
        let key = self.input.schema().fields().len() - 1;
        let out_columns: Vec<usize> = (0..key).collect();
        let selection = self.selection;
        let mut buffers = BufferSet::new(
            1,
            self.input.schema(),
            context.runtime_env(),
            "SelectExec",
            SpillMetrics::new(&self.metrics, 0),
        );
        let baseline = BaselineMetrics::new(&self.metrics, 0);
        let order_keys = move |batch: &RecordBatch| -> Vec<i128> {
            batch
                .column(key)
                .as_primitive::<Decimal128Type>()
                .values()
                .iter()
                .map(|k| order_key_from_position_key(*k))
                .collect()
        };
        let stream = async_try_stream(move |mut tx| async move {
            // Keys with a score are the negative ones; every key is distinct (positions are).
            let mut scored: Vec<i128> = Vec::new();
            let mut rows = 0;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                rows += batch.num_rows();
                scored.extend(order_keys(&batch).into_iter().filter(|&k| k < 0));
                buffers.push(0, batch)?;
            }
            let k = selection.count(rows);
            let lowest_kept = match k {
                0 => None,
                k if k >= scored.len() => Some(i128::MIN),
                k => {
                    let nth = scored.len() - k;
                    Some(*scored.select_nth_unstable(nth).1)
                }
            };
            drop(scored);
            let Some(lowest) = lowest_kept else {
                return Ok(());
            };
            for batch in buffers.freeze().replay(0, false) {
                let batch = batch?;
                let keep: BooleanArray = order_keys(&batch)
                    .into_iter()
                    .map(|k| Some(k < 0 && k >= lowest))
                    .collect();
                let kept = filter_record_batch(&batch.project(&out_columns)?, &keep)?;
                if kept.num_rows() > 0 {
                    baseline.record_output(kept.num_rows());
                    tx.emit(kept).await;
                }
            }
            Ok::<_, DataFusionError>(())
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// The score column of `batch` as f64 values, None for NULL.
fn float_scores(batch: &RecordBatch, index: usize) -> Result<Vec<Option<f64>>> {
    let column = cast(batch.column(index), &DataType::Float64)?;
    Ok(column.as_primitive::<Float64Type>().iter().collect())
}

/// Where the selection cuts.
enum Cut {
    /// k = 0.
    Nothing,
    /// k covers every scored row.
    Everything,
    /// Every score above `at`, and of the rows scoring exactly `at` all but the first
    /// `skip_ties` (in input order).
    At { at: f64, skip_ties: usize },
}

impl Cut {
    /// The cut keeping the `k` best of `scores` (the non-NULL scores, in input order).
    fn find(mut scores: Vec<f64>, k: usize) -> Self {
        if k == 0 {
            return Self::Nothing;
        }
        if k >= scores.len() {
            return Self::Everything;
        }
        let nth = scores.len() - k;
        let (_, at, _) = scores.select_nth_unstable_by(nth, f64::total_cmp);
        let at = *at;
        let above = scores
            .iter()
            .filter(|s| s.total_cmp(&at) == Ordering::Greater)
            .count();
        let ties = scores
            .iter()
            .filter(|s| s.total_cmp(&at) == Ordering::Equal)
            .count();
        Self::At {
            at,
            skip_ties: ties - (k - above),
        }
    }

    /// Which rows of a batch (with these scores) are kept; call for batches in input order.
    fn filter(&mut self, scores: &[Option<f64>]) -> BooleanArray {
        scores
            .iter()
            .map(|score| {
                let Some(score) = score else {
                    return Some(false);
                };
                Some(match self {
                    Self::Nothing => false,
                    Self::Everything => true,
                    Self::At { at, skip_ties } => match score.total_cmp(at) {
                        Ordering::Greater => true,
                        Ordering::Less => false,
                        Ordering::Equal if *skip_ties > 0 => {
                            *skip_ties -= 1;
                            false
                        }
                        Ordering::Equal => true,
                    },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(scores: &[Option<f64>], k: usize) -> Vec<bool> {
        let mut cut = Cut::find(scores.iter().flatten().copied().collect(), k);
        // Feed in two batches to check that tie counting carries over.
        let (a, b) = scores.split_at(scores.len() / 2);
        let mut keep: Vec<bool> = cut.filter(a).iter().map(|v| v.unwrap()).collect();
        keep.extend(cut.filter(b).iter().map(|v| v.unwrap()));
        keep
    }

    /// The rows of 3 partitions as (id, score) batches in input order, and as (id, position
    /// key) batches in input order too, split otherwise: as a cluster's merge delivers them.
    fn scored_and_keyed() -> (Vec<Vec<RecordBatch>>, Vec<RecordBatch>) {
        use datafusion::arrow::array::{Decimal128Array, Float64Array, Int64Array};
        use datafusion::arrow::datatypes::{Field, Schema};

        use crate::stages::order_key::{order_key, position_key};
        // Heavy ties (5 values) and NULL scores.
        let score = |id: i64| (id % 7 != 0).then_some((id % 5) as f64);
        let scored_schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float64, true),
        ]));
        let keyed_schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("key", DataType::Decimal128(38, 0), false),
        ]));
        let mut scored = Vec::new();
        let mut keyed = Vec::new();
        for (partition, rows) in [(0u64, 40), (1, 25), (2, 33)] {
            let ids: Vec<i64> = (0..rows).map(|r| (partition * 1000 + r) as i64).collect();
            let scores = Float64Array::from_iter(ids.iter().map(|&id| score(id)));
            scored.push(vec![
                RecordBatch::try_new(
                    Arc::clone(&scored_schema),
                    vec![Arc::new(Int64Array::from(ids.clone())), Arc::new(scores)],
                )
                .unwrap(),
            ]);
            let keys = ids
                .iter()
                .zip(0..)
                .map(|(&id, row)| position_key(order_key(score(id), false, partition << 40 | row)));
            let keys = Decimal128Array::from_iter_values(keys)
                .with_precision_and_scale(38, 0)
                .unwrap();
            let batch = RecordBatch::try_new(
                Arc::clone(&keyed_schema),
                vec![Arc::new(Int64Array::from(ids)), Arc::new(keys)],
            )
            .unwrap();
            // Each cut in two.
            keyed.push(batch.slice(0, 10));
            keyed.push(batch.slice(10, batch.num_rows() - 10));
        }
        (scored, keyed)
    }

    async fn ids(plan: Arc<dyn ExecutionPlan>) -> Vec<i64> {
        use datafusion::arrow::datatypes::Int64Type;
        let batches = datafusion::physical_plan::collect(plan, Arc::new(TaskContext::default()))
            .await
            .unwrap();
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[tokio::test]
    async fn gathered_keys_keep_the_rows_a_selection_in_input_order_keeps() {
        use datafusion::datasource::memory::MemorySourceConfig;
        let (scored, keyed) = scored_and_keyed();
        let scored_input =
            MemorySourceConfig::try_new_exec(&scored, scored[0][0].schema(), None).unwrap();
        let keyed_input =
            MemorySourceConfig::try_new_exec(std::slice::from_ref(&keyed), keyed[0].schema(), None)
                .unwrap();
        let selections = [0, 1, 9, 40, 84, 98].map(Selection::TopK);
        for selection in selections.into_iter().chain([Selection::TopR(0.45)]) {
            let want = ids(Arc::new(SelectExec::new(
                scored_input.clone(),
                selection,
                SelectStrategy::InputOrder,
            )))
            .await;
            let got = ids(Arc::new(SelectExec::new(
                keyed_input.clone(),
                selection,
                SelectStrategy::Gathered,
            )))
            .await;
            assert_eq!(got, want, "{selection}");
            assert!(want.windows(2).all(|w| w[0] < w[1]), "input order");
            if let Selection::TopK(k @ 0..=83) = selection {
                assert_eq!(want.len() as u64, k, "{selection}: 83 rows have a score");
            }
        }
    }

    #[test]
    fn keeps_the_later_of_tied_rows() {
        let s = [Some(1.0), Some(2.0), None, Some(2.0), Some(0.5), Some(2.0)];
        assert_eq!(select(&s, 2), [false, false, false, true, false, true]);
        assert_eq!(select(&s, 4), [true, true, false, true, false, true]);
        assert_eq!(select(&s, 0), [false; 6]);
        assert_eq!(select(&s, 9), [true, true, false, true, true, true]);
    }

    #[test]
    fn top_r_of_nothing_keeps_nothing() {
        assert_eq!(Selection::TopR(0.3).count(3), 0);
        assert_eq!(Selection::TopR(0.5).count(5), 2);
        assert_eq!(Selection::TopK(10).count(4), 4);
    }
}
