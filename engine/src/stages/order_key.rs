//! The fold's sort key: score first, input position second, in one 128-bit column.
//!
//! The reference folds with a *stable* sort: rows with equal scores keep their input order
//! (file order, then row order). DataFusion's sorts are not stable, so [`OrderKeyExec`] gives
//! every row a key that includes its place in the input, and the fold sorts on that key alone.
//!
//! A position is `partition << 40 | row`. Scan partitions are contiguous runs of the input in
//! file-path order (delt turns off round-robin repartitioning and file work stealing, see
//! the session builder), so comparing positions compares input order whatever the number of
//! partitions.
//!
//! The key packs, from the top bit down: a NULL-score flag (NULLs after every score), an
//! order-preserving encoding of the score (as f64, in `total_cmp` order, inverted for
//! descending folds; 64 bits) and the position (63 bits). It is stored as a `Decimal128`: one
//! primitive column, which DataFusion sorts and merges much faster than a two-column key.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Decimal128Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

/// Name of the key column appended by [`OrderKeyExec`].
pub const KEY_COLUMN: &str = "__delt_key";

/// Rows per partition that a position can address (2^40, about 10^12); 2^23 partitions.
/// A key's low `ROW_BITS` bits are the row's index in its partition.
pub const ROW_BITS: u32 = 40;

/// Replaces the score column by [`KEY_COLUMN`], appended last: the order of the row by
/// (score, input position). A key is negative exactly when the row has a score.
#[derive(Debug)]
pub struct OrderKeyExec {
    input: Arc<dyn ExecutionPlan>,
    score: usize,
    descending: bool,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl OrderKeyExec {
    /// Keys the rows of `input` by its column `score`, high scores first when `descending`.
    pub fn new(input: Arc<dyn ExecutionPlan>, score: usize, descending: bool) -> Self {
        let mut fields = input.schema().fields().to_vec();
        fields.remove(score);
        fields.push(Arc::new(Field::new(
            KEY_COLUMN,
            DataType::Decimal128(38, 0),
            false,
        )));
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            input.schema().metadata().clone(),
        ));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Self {
            input,
            score,
            descending,
            schema,
            properties,
        }
    }
}

impl OrderKeyExec {
    /// The input column holding the score.
    pub fn score(&self) -> usize {
        self.score
    }

    /// Whether high scores come first.
    pub fn descending(&self) -> bool {
        self.descending
    }
}

/// The key of one row (`None`: a NULL score); see the module documentation.
pub fn order_key(score: Option<f64>, descending: bool, position: u64) -> i128 {
    let key = match score {
        Some(score) => {
            let bits = score.to_bits();
            // Flip so that unsigned order is total_cmp order: negatives reversed, then positives.
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | 1 << 63
            };
            let ordered = if descending { !ordered } else { ordered };
            (u128::from(ordered) << 63) | u128::from(position)
        }
        None => (1 << 127) | u128::from(position),
    };
    // Unsigned to signed, keeping the order: keys with a score are the negative ones.
    (key ^ (1 << 127)) as i128
}

impl DisplayAs for OrderKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "OrderKeyExec: descending={}", self.descending)
    }
}

impl ExecutionPlan for OrderKeyExec {
    fn name(&self) -> &str {
        "OrderKeyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    // It does keep row order, but its output columns differ from its input's: saying so
    // would let the optimizer push a sort on the key down to the input's column at that index.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
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
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            self.score,
            self.descending,
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
        let base = (partition as u64) << ROW_BITS;
        let (schema, score, descending) = (Arc::clone(&self.schema), self.score, self.descending);
        let mut next_row = 0u64;
        let stream = self.input.execute(partition, context)?.map(move |batch| {
            let batch = batch?;
            let scores = cast(batch.column(score), &DataType::Float64)?;
            let scores = scores.as_primitive::<Float64Type>();
            let start = base + next_row;
            next_row += batch.num_rows() as u64;
            let keys = Decimal128Array::from_iter_values((0..batch.num_rows()).map(|i| {
                order_key(
                    scores.is_valid(i).then(|| scores.value(i)),
                    descending,
                    start + i as u64,
                )
            }));
            let mut columns = batch.columns().to_vec();
            columns.remove(score);
            columns.push(Arc::new(keys.with_precision_and_scale(38, 0)?));
            Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::order_key;

    #[test]
    fn keys_order_by_score_then_position() {
        let scores = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            3.0,
            f64::INFINITY,
            f64::NAN,
        ];
        for descending in [false, true] {
            let mut keyed: Vec<(i128, usize)> = scores
                .iter()
                .enumerate()
                .map(|(i, s)| (order_key(Some(*s), descending, 7), i))
                .collect();
            keyed.sort();
            let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
            let mut expected: Vec<usize> = (0..scores.len()).collect();
            if descending {
                expected.reverse();
            }
            assert_eq!(order, expected);
        }
        let max_position = (1 << 63) - 1;
        assert!(order_key(Some(1.0), false, 1) < order_key(Some(1.0), false, 2));
        assert!(
            order_key(Some(1.0), true, 1) < order_key(Some(1.0), true, 2),
            "ties keep input order"
        );
        assert!(order_key(Some(1.0), false, max_position) < order_key(Some(1.5), false, 0));
        for descending in [false, true] {
            let last_score = order_key(Some(f64::NAN), descending, max_position).max(order_key(
                Some(f64::NEG_INFINITY),
                descending,
                max_position,
            ));
            assert!(
                last_score < order_key(None, descending, 0),
                "NULLs after every score"
            );
            assert!(order_key(None, descending, 3) < order_key(None, descending, 4));
            assert!(
                order_key(Some(f64::NAN), descending, max_position) < 0
                    && order_key(None, descending, 0) >= 0
            );
        }
    }
}
