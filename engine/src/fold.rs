//! Folding: the DELT ordering, as one sort and one streaming pass.
//!
//! `ORDER BY fold_order(score, L)` sorts rows by score (ties in input order) and emits
//! `sorted[0::L] ++ sorted[1::L] ++ ... ++ sorted[L-1::L]`: L passes over the score range.
//! [`FoldExec`] asks DataFusion for its input sorted by `(score, position)` (one parallel,
//! spilling sort) and deals row `i` of that stream to layer `i % L`. Layer 0 streams straight
//! out; the others wait in a [`BufferSet`](crate::spill::BufferSet), which spills to disk under
//! memory pressure, and follow in order.
//!
//! Rows whose score is NULL are not folded: they come after all layers, in input order.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{SortOptions, take_record_batch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext, async_try_stream};
use datafusion::physical_expr::{
    EquivalenceProperties, LexRequirement, OrderingRequirements, PhysicalExpr, PhysicalSortRequirement,
};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, SpillMetrics};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::StreamExt;

use crate::spill::BufferSet;

/// How the layers of a fold run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum FoldMode {
    /// Every layer low-to-high score (the DELT paper's folding).
    Ascending,
    /// Every layer high-to-low score (ties still in input order).
    Descending,
    /// Even layers low-to-high, odd layers high-to-low (layers counted from 0).
    Zigzag,
}

impl FromStr for FoldMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "asc" | "ascending" => Ok(Self::Ascending),
            "desc" | "descending" => Ok(Self::Descending),
            "zigzag" => Ok(Self::Zigzag),
            other => Err(format!("unknown fold mode '{other}': use 'asc', 'desc' or 'zigzag'")),
        }
    }
}

impl fmt::Display for FoldMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::Ascending => "asc",
            Self::Descending => "desc",
            Self::Zigzag => "zigzag",
        })
    }
}

/// Physical fold: input sorted by its order key in one partition, rows dealt to layers.
#[derive(Debug)]
pub struct FoldExec {
    /// An [`OrderKeyExec`](crate::order_key::OrderKeyExec) over the plan whose last-but-one
    /// column is the score.
    input: Arc<dyn ExecutionPlan>,
    layers: usize,
    mode: FoldMode,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl FoldExec {
    /// Folds `input`: an [`OrderKeyExec`](crate::order_key::OrderKeyExec) over a plan whose
    /// last column is the score.
    pub fn new(input: Arc<dyn ExecutionPlan>, layers: usize, mode: FoldMode) -> Self {
        let in_schema = input.schema();
        let kept = in_schema.fields().len() - 2;
        let schema = Arc::new(Schema::new_with_metadata(
            in_schema.fields()[..kept].to_vec(),
            in_schema.metadata().clone(),
        ));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self { input, layers, mode, schema, properties, metrics: ExecutionPlanMetricsSet::new() }
    }

    fn score_index(&self) -> usize {
        self.input.schema().fields().len() - 2
    }
}

impl DisplayAs for FoldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FoldExec: layers={}, mode={}", self.layers, self.mode)
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
        vec![Distribution::SinglePartition]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let schema = self.input.schema();
        let key = schema.fields().len() - 1;
        let requirement = LexRequirement::new([PhysicalSortRequirement::new(
            Arc::new(Column::new(schema.field(key).name(), key)),
            Some(SortOptions { descending: false, nulls_first: false }),
        )]);
        vec![requirement.map(OrderingRequirements::new)]
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
        Ok(Arc::new(Self::new(children.swap_remove(0), self.layers, self.mode)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return datafusion::common::internal_err!("FoldExec has one partition, asked for {partition}");
        }
        let mut sorted = self.input.execute(0, Arc::clone(&context))?;
        let mut folder = Folder {
            layers: self.layers,
            mode: self.mode,
            score: self.score_index(),
            dealt: 0,
            // Buffers 1..L hold the later layers; buffer 0 holds the NULL-score rows.
            buffers: BufferSet::new(
                self.layers,
                Arc::clone(&self.schema),
                context.runtime_env(),
                "FoldExec",
                SpillMetrics::new(&self.metrics, partition),
            ),
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = async_try_stream(move |mut tx| async move {
            while let Some(batch) = sorted.next().await {
                let first_layer = folder.deal(&batch?)?;
                if first_layer.num_rows() > 0 {
                    baseline.record_output(first_layer.num_rows());
                    tx.emit(first_layer).await;
                }
            }
            for batch in folder.later_layers() {
                let batch = batch?;
                baseline.record_output(batch.num_rows());
                tx.emit(batch).await;
            }
            Ok(())
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream)))
    }
}

/// The streaming half of a fold.
struct Folder {
    layers: usize,
    mode: FoldMode,
    score: usize,
    /// Rows with a score dealt so far: the next one goes to layer `dealt % layers`.
    dealt: usize,
    buffers: BufferSet,
}

impl Folder {
    /// Deals one sorted batch; returns its layer-0 rows, buffers the rest.
    fn deal(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let scores = batch.column(self.score);
        let mut picks: Vec<Vec<u32>> = vec![Vec::new(); self.layers + 1];
        for row in 0..batch.num_rows() {
            if scores.is_null(row) {
                picks[self.layers].push(row as u32);
            } else {
                picks[self.dealt % self.layers].push(row as u32);
                self.dealt += 1;
            }
        }
        let rows = batch.project(&(0..self.score).collect::<Vec<_>>())?;
        let take = |indices: Vec<u32>| take_record_batch(&rows, &UInt32Array::from(indices));
        let mut picks = picks.into_iter();
        let first = take(picks.next().unwrap_or_default())?;
        for (layer, indices) in picks.enumerate().map(|(i, p)| (i + 1, p)) {
            if !indices.is_empty() {
                // The NULL-score rows (index `layers`) live in buffer 0.
                self.buffers.push(layer % self.layers, take(indices)?)?;
            }
        }
        Ok(first)
    }

    /// Layers 1..L, then the NULL-score rows, for replay in that order.
    fn later_layers(self) -> impl Iterator<Item = Result<RecordBatch>> {
        let zigzag = self.mode == FoldMode::Zigzag;
        let mut replays = self.buffers.into_replays(|layer| zigzag && layer % 2 == 1);
        // Buffer 0 holds the NULL-score rows: they go last.
        let nulls = replays.remove(0);
        replays.into_iter().chain(std::iter::once(nulls)).flatten()
    }
}
