//! Input positions: the tie-breaker that makes DELT orderings and selections exact.
//!
//! The reference folds with a *stable* sort: rows with equal scores keep their input order
//! (file order, then row order). DataFusion's sorts are not stable, so [`PositionExec`] appends
//! a `__delt_pos` column that encodes each row's place in the input, and the sorts key on it
//! after the score.
//!
//! A position is `partition << 40 | row`. Scan partitions are contiguous runs of the input in
//! file-path order (delt turns off round-robin repartitioning, see [`crate::session`]), so
//! comparing positions compares input order whatever the number of partitions.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::StreamExt;

/// Name of the position column appended by [`PositionExec`].
pub const POSITION_COLUMN: &str = "__delt_pos";

/// Rows per partition that a position can address (2^40, about 10^12).
const ROW_BITS: u32 = 40;

/// Appends [`POSITION_COLUMN`] (UInt64) to every batch of its input.
#[derive(Debug)]
pub struct PositionExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl PositionExec {
    /// Wraps `input`; the output schema is the input's plus the position column, last.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let mut fields = input.schema().fields().to_vec();
        fields.push(Arc::new(Field::new(POSITION_COLUMN, DataType::UInt64, false)));
        let schema = Arc::new(Schema::new_with_metadata(fields, input.schema().metadata().clone()));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Self { input, schema, properties }
    }

    /// Index of the position column in the output schema.
    pub fn position_index(&self) -> usize {
        self.schema.fields().len() - 1
    }
}

impl DisplayAs for PositionExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PositionExec")
    }
}

impl ExecutionPlan for PositionExec {
    fn name(&self) -> &str {
        "PositionExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    // Positions record the input's partition layout: splitting it further would scramble them.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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
        Ok(Arc::new(Self::new(children.swap_remove(0))))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let base = (partition as u64) << ROW_BITS;
        let schema = Arc::clone(&self.schema);
        let mut next_row = 0u64;
        let stream = self.input.execute(partition, context)?.map(move |batch| {
            let batch = batch?;
            let start = base + next_row;
            next_row += batch.num_rows() as u64;
            let positions = UInt64Array::from_iter_values(start..start + batch.num_rows() as u64);
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(positions));
            Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), stream)))
    }
}
