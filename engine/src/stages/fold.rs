//! Folding: the DELT ordering, as one sort and one streaming pass.
//!
//! `ORDER BY fold_order(score, L)` sorts rows by score (ties in input order) and emits
//! `sorted[0::L] ++ sorted[1::L] ++ ... ++ sorted[L-1::L]`: L passes over the score range.
//! Under a memory limit, [`FoldExec`] asks DataFusion for its input sorted by
//! `(score, position)` (one spilling sort) and deals row `i` of that stream to layer `i % L`.
//! Layer 0 streams straight out; the sorted batches wait in a
//! [`BufferSet`](crate::stages::spill::BufferSet), which spills to disk under memory pressure, and the
//! other layers are picked out of them in order. Without a limit it sorts only the keys and
//! gathers the rows of each layer ([`crate::stages::fold_in_memory`]); both give the same output.
//!
//! Rows whose score is NULL are not folded: they come after all layers, in input order.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Decimal128Type, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext, async_try_stream};
use datafusion::physical_expr::{OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, SpillMetrics,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

use crate::stages::FoldMode;
use crate::stages::fold_in_memory::fold_in_memory;
use crate::stages::node::stage_output;
use crate::stages::order_key::ascending_key_requirement;
use crate::stages::spill::{BufferSet, FrozenBuffers};

/// How a [`FoldExec`] puts its rows in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldStrategy {
    /// DataFusion sorts the rows into one stream, spilling under a memory limit; the fold
    /// deals them out, holding later layers in a spilling buffer.
    SortedStream,
    /// The fold holds every row, sorts the keys alone and gathers each layer: one copy per
    /// row, nothing spilled. For sessions without a memory limit.
    InMemory,
}

/// Physical fold: rows dealt to layers by their order key.
#[derive(Debug)]
pub struct FoldExec {
    /// An [`OrderKeyExec`](crate::stages::order_key::OrderKeyExec): the rows and their key, last.
    input: Arc<dyn ExecutionPlan>,
    layers: usize,
    mode: FoldMode,
    strategy: FoldStrategy,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl FoldExec {
    /// Folds `input`: an [`OrderKeyExec`](crate::stages::order_key::OrderKeyExec), rows and key.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        layers: usize,
        mode: FoldMode,
        strategy: FoldStrategy,
    ) -> Self {
        let (schema, properties) = stage_output(&input.schema());
        Self {
            input,
            layers,
            mode,
            strategy,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The number of layers.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// The direction of each layer.
    pub fn mode(&self) -> FoldMode {
        self.mode
    }

    /// How the rows are put in order.
    pub fn strategy(&self) -> FoldStrategy {
        self.strategy
    }

    fn key_index(&self) -> usize {
        self.input.schema().fields().len() - 1
    }
}

impl DisplayAs for FoldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let strategy = match self.strategy {
            FoldStrategy::SortedStream => "sorted stream",
            FoldStrategy::InMemory => "in memory",
        };
        write!(
            f,
            "FoldExec: layers={}, mode={}, strategy={strategy}",
            self.layers, self.mode
        )
    }
}

impl ExecutionPlan for FoldExec {
    fn name(&self) -> &str {
        "FoldExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        match self.strategy {
            FoldStrategy::SortedStream => vec![Distribution::SinglePartition],
            FoldStrategy::InMemory => vec![Distribution::UnspecifiedDistribution],
        }
    }

    // Positions in the keys record the input's partition layout.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        if self.strategy != FoldStrategy::SortedStream {
            return vec![None];
        }
        vec![ascending_key_requirement(&self.input.schema())]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
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
            self.layers,
            self.mode,
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
            return datafusion::common::internal_err!(
                "FoldExec has one partition, asked for {partition}"
            );
        }
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        if self.strategy != FoldStrategy::SortedStream {
            return fold_in_memory(
                &self.input,
                self.layers,
                self.mode,
                Arc::clone(&self.schema),
                context,
                baseline,
            );
        }
        let mut sorted = self.input.execute(0, Arc::clone(&context))?;
        let mut folder = Folder {
            layers: self.layers,
            mode: self.mode,
            key: self.key_index(),
            rows: 0,
            scored: 0,
            held: Vec::new(),
            buffer: BufferSet::new(
                1,
                Arc::clone(&self.schema),
                context.runtime_env(),
                "FoldExec",
                SpillMetrics::new(&self.metrics, partition),
            ),
        };
        let stream = async_try_stream(move |mut tx| async move {
            while let Some(batch) = sorted.next().await {
                let first_layer = folder.hold(batch?)?;
                if first_layer.num_rows() > 0 {
                    baseline.record_output(first_layer.num_rows());
                    tx.emit(first_layer).await;
                }
            }
            let (layers, held) = folder.finish();
            for layer in layers {
                for batch in layer.rows(&held) {
                    let batch = batch?;
                    if batch.num_rows() > 0 {
                        baseline.record_output(batch.num_rows());
                        tx.emit(batch).await;
                    }
                }
            }
            Ok(())
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// The streaming half of a fold.
///
/// Sorted batches are held whole (in a spilling buffer). Row `i` of the sorted rows with a
/// score belongs to layer `i % L`: layer 0 is picked out of each batch as it arrives, the other
/// layers are picked out of the held batches once the stream ends, one pass over them per
/// layer. Taking rows out of a batch copies only fixed-size values and string views, never the
/// strings, so folding costs little more than the sort it follows. Rows without a score sort
/// last; they follow the layers in input order.
struct Folder {
    layers: usize,
    mode: FoldMode,
    key: usize,
    /// Rows seen so far, and how many of them have a score.
    rows: usize,
    scored: usize,
    /// For each held batch, in order: the sorted index of its first row and how many of its
    /// rows have a score (they come first).
    held: Vec<(usize, usize)>,
    buffer: BufferSet,
}

impl Folder {
    /// Holds one sorted batch; returns its layer-0 rows.
    fn hold(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        // Sorted keys: the rows with a score (negative keys) come first.
        let keys = batch
            .column(self.key)
            .as_primitive::<Decimal128Type>()
            .values();
        let with_score = keys.partition_point(|k| *k < 0);
        let rows = batch.project(&(0..self.key).collect::<Vec<_>>())?;
        let first = self.scored;
        self.scored += with_score;
        self.rows += rows.num_rows();
        let layer0 =
            take_record_batch(&rows, &layer_rows(first, with_score, 0, self.layers, false))?;
        if rows.num_rows() > 0 {
            self.held.push((first, with_score));
            self.buffer.push(0, rows)?;
        }
        Ok(layer0)
    }

    /// What comes after layer 0: the later layers, then the rows without a score.
    fn finish(self) -> (Vec<Pass>, HeldRows) {
        let zigzag = self.mode == FoldMode::Zigzag;
        let mut passes: Vec<Pass> = if self.layers >= self.scored {
            // Every layer holds one row at most, and the layers in turn are the sorted rows:
            // one pass over them instead of a pass over all held rows per layer.
            vec![Pass::SortedFrom(1)]
        } else {
            (1..self.layers)
                .map(|layer| Pass::Layer {
                    layer,
                    backwards: zigzag && layer % 2 == 1,
                })
                .collect()
        };
        if self.rows > self.scored {
            passes.push(Pass::Unscored);
        }
        let held = HeldRows {
            layers: self.layers,
            batches: self.held,
            buffer: self.buffer.freeze(),
        };
        (passes, held)
    }
}

/// The batches held by a fold, with their positions in the sorted order.
struct HeldRows {
    layers: usize,
    batches: Vec<(usize, usize)>,
    buffer: FrozenBuffers,
}

/// One pass over the held batches.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// The rows of one layer, high to low score when `backwards` (zigzag).
    Layer { layer: usize, backwards: bool },
    /// The scored rows from this sorted index on, in sorted order.
    SortedFrom(usize),
    /// The rows without a score, in input order.
    Unscored,
}

impl Pass {
    /// The rows of this pass, batch by batch.
    fn rows<'a>(self, held: &'a HeldRows) -> impl Iterator<Item = Result<RecordBatch>> + Send + 'a {
        let backwards = matches!(
            self,
            Self::Layer {
                backwards: true,
                ..
            }
        );
        let positions: Box<dyn Iterator<Item = &(usize, usize)> + Send> = if backwards {
            Box::new(held.batches.iter().rev())
        } else {
            Box::new(held.batches.iter())
        };
        held.buffer
            .replay(0, backwards)
            .zip(positions)
            .map(move |(batch, &(first, scored))| {
                let batch = batch?;
                let indices = match self {
                    Self::Layer { layer, backwards } => {
                        layer_rows(first, scored, layer, held.layers, backwards)
                    }
                    Self::SortedFrom(from) => UInt32Array::from_iter_values(
                        (from.saturating_sub(first).min(scored)..scored).map(|r| r as u32),
                    ),
                    Self::Unscored => {
                        UInt32Array::from_iter_values(scored as u32..batch.num_rows() as u32)
                    }
                };
                Ok(take_record_batch(&batch, &indices)?)
            })
    }
}

/// Indices, within a batch whose first row has sorted index `first` and whose first `scored`
/// rows have a score, of the rows of `layer` (descending when `backwards`).
fn layer_rows(
    first: usize,
    scored: usize,
    layer: usize,
    layers: usize,
    backwards: bool,
) -> UInt32Array {
    let start = (layer + layers - first % layers) % layers;
    let rows = (start..scored).step_by(layers).map(|r| r as u32);
    if backwards {
        UInt32Array::from_iter_values(rows.rev())
    } else {
        UInt32Array::from_iter_values(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::layer_rows;

    #[test]
    fn layer_rows_continue_across_batches() {
        let rows = |first, scored, layer, back| {
            layer_rows(first, scored, layer, 3, back).values().to_vec()
        };
        assert_eq!(rows(0, 7, 0, false), [0, 3, 6]);
        assert_eq!(rows(7, 5, 0, false), [2]); // sorted index 9
        assert_eq!(rows(7, 5, 1, false), [0, 3]); // 7 and 10
        assert_eq!(rows(7, 5, 1, true), [3, 0]);
        assert_eq!(rows(7, 2, 2, false), [1]); // 8; rows 2.. have no score
    }
}
