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
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    EquivalenceProperties, LexRequirement, OrderingRequirements, PhysicalExpr,
    PhysicalSortRequirement,
};
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
    /// Keys are [`position_key`]s: the input's order, with the score.
    position_first: bool,
    /// Every file of the input in order, when the plan runs as tasks that each read a slice of
    /// it (see [`PartitionStart`]).
    partition_starts: Option<Arc<Vec<PartitionStart>>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl OrderKeyExec {
    /// Keys the rows of `input` by its column `score`, high scores first when `descending`.
    pub fn new(input: Arc<dyn ExecutionPlan>, score: usize, descending: bool) -> Self {
        let (schema, properties) = keyed_output(&input, score);
        Self {
            input,
            score,
            descending,
            position_first: false,
            partition_starts: None,
            schema,
            properties,
        }
    }

    /// Makes [`position_key`]s, for an operator that wants its input in input order but
    /// keyed by score (a cluster's gathered selection).
    pub fn position_first(mut self) -> Self {
        self.position_first = true;
        self
    }

    /// Whether the keys are [`position_key`]s.
    pub fn is_position_first(&self) -> bool {
        self.position_first
    }

    /// Numbers positions by `starts` (every file of the whole input, in order) rather than by
    /// the partition a task executes.
    pub fn with_partition_starts(mut self, starts: Option<Arc<Vec<PartitionStart>>>) -> Self {
        self.partition_starts = starts;
        self
    }

    /// Every file (or file range) the input scans, in input order, if the input is a file
    /// scan under operators that keep its partitions (projections, filters, scorers).
    pub fn input_files(&self) -> Option<Vec<PartitionStart>> {
        let scan = file_scan(&self.input)?;
        Some(
            scan.file_groups
                .iter()
                .flat_map(|group| group.files())
                .map(PartitionStart::of_file)
                .collect(),
        )
    }

    /// The partition number that positions of `partition` count from: its place in the whole
    /// input.
    fn global_partition(&self, partition: usize) -> Result<usize> {
        let Some(starts) = &self.partition_starts else {
            return Ok(partition);
        };
        let here = file_scan(&self.input)
            .and_then(|scan| scan.file_groups.get(partition)?.files().first())
            .map(PartitionStart::of_file);
        here.as_ref()
            .and_then(|here| starts.iter().position(|start| start == here))
            .ok_or_else(|| {
                datafusion::common::DataFusionError::Internal(format!(
                    "OrderKeyExec: partition {partition} of this task ({here:?}) is not a file \
                     of the input as planned: a cluster reads whole files, in groups"
                ))
            })
    }
}

/// The schema and properties of an operator that replaces its input's column `replaced` by
/// [`KEY_COLUMN`], appended last, keeping the input's partitions and pace.
pub fn keyed_output(
    input: &Arc<dyn ExecutionPlan>,
    replaced: usize,
) -> (SchemaRef, Arc<PlanProperties>) {
    let mut fields = input.schema().fields().to_vec();
    fields.remove(replaced);
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
    (schema, properties)
}

/// Where one scan partition starts: its first file and the byte offset in it.
///
/// A cluster runs each task on its own slice of the scan's partitions, numbered from 0 in
/// every task, and may group the files into partitions otherwise than the plan did, so the
/// partition number does not tell where rows sit in the input. The scheduler records every
/// file of the scan in input order; a task numbers its partition by the place of the
/// partition's first file in that list. Partitions are contiguous runs of whole files in a
/// cluster (the client turns off splitting files into byte ranges), so these numbers order
/// partitions as the input does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStart {
    /// The file's path in its object store.
    pub file: String,
    /// The byte where the partition's range of the file starts (0: the whole file).
    pub offset: u64,
}

impl PartitionStart {
    fn of_file(file: &PartitionedFile) -> Self {
        Self {
            file: file.object_meta.location.to_string(),
            offset: file.range.as_ref().map_or(0, |r| r.start as u64),
        }
    }
}

/// The file scan under `plan`, found through operators of one child that keep partitions.
fn file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    if let Some(scan) = plan.downcast_ref::<DataSourceExec>() {
        return scan.data_source().downcast_ref::<FileScanConfig>();
    }
    match plan.children().as_slice() {
        [child]
            if child.output_partitioning().partition_count()
                == plan.output_partitioning().partition_count() =>
        {
            file_scan(child)
        }
        _ => None,
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

    /// The partition starts positions are numbered by, if set.
    pub fn partition_starts(&self) -> Option<&Arc<Vec<PartitionStart>>> {
        self.partition_starts.as_ref()
    }
}

/// The ordering an operator asks of its input whose last column is a key: ascending.
pub fn ascending_key_requirement(schema: &SchemaRef) -> Option<OrderingRequirements> {
    let key = schema.fields().len() - 1;
    LexRequirement::new([PhysicalSortRequirement::new(
        Arc::new(Column::new(schema.field(key).name(), key)),
        Some(SortOptions {
            descending: false,
            nulls_first: false,
        }),
    )])
    .map(OrderingRequirements::new)
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

/// Turns an order key into a *position key*: the same row's position first (63 bits), then
/// its NULL flag and score (65 bits), so that sorting on it is input order while the key
/// still holds the score ([`order_key_from_position_key`] turns it back).
pub fn position_key(order_key: i128) -> i128 {
    let unsigned = order_key as u128 ^ (1 << 127);
    let position = unsigned & ((1 << 63) - 1);
    let flag_and_score = unsigned >> 63;
    ((position << 65 | flag_and_score) ^ (1 << 127)) as i128
}

/// The order key of a [`position_key`].
pub fn order_key_from_position_key(key: i128) -> i128 {
    let unsigned = key as u128 ^ (1 << 127);
    let position = unsigned >> 65;
    let flag_and_score = unsigned & ((1 << 65) - 1);
    ((flag_and_score << 63 | position) ^ (1 << 127)) as i128
}

/// The input position a key holds (its low 63 bits), whatever its score.
pub fn key_position(key: i128) -> u64 {
    (key as u128 & ((1 << 63) - 1)) as u64
}

impl DisplayAs for OrderKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "OrderKeyExec: descending={}", self.descending)?;
        if self.position_first {
            write!(f, ", position first")?;
        }
        Ok(())
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
        let mut keys = Self::new(children.swap_remove(0), self.score, self.descending)
            .with_partition_starts(self.partition_starts.clone());
        keys.position_first = self.position_first;
        Ok(Arc::new(keys))
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
        let base = (self.global_partition(partition)? as u64) << ROW_BITS;
        let (schema, score, descending) = (Arc::clone(&self.schema), self.score, self.descending);
        let position_first = self.position_first;
        let mut next_row = 0u64;
        let stream = self.input.execute(partition, context)?.map(move |batch| {
            let batch = batch?;
            let scores = cast(batch.column(score), &DataType::Float64)?;
            let scores = scores.as_primitive::<Float64Type>();
            let start = base + next_row;
            next_row += batch.num_rows() as u64;
            let keys = Decimal128Array::from_iter_values((0..batch.num_rows()).map(|i| {
                let key = order_key(
                    scores.is_valid(i).then(|| scores.value(i)),
                    descending,
                    start + i as u64,
                );
                if position_first {
                    position_key(key)
                } else {
                    key
                }
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
    use super::{order_key, order_key_from_position_key, position_key};

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
            for key in [
                order_key(Some(-2.5), descending, 7),
                order_key(Some(f64::NAN), descending, max_position),
                order_key(None, descending, 0),
                order_key(None, descending, max_position),
            ] {
                assert_eq!(order_key_from_position_key(position_key(key)), key);
            }
            assert!(
                position_key(order_key(Some(9.0), descending, 3))
                    < position_key(order_key(None, descending, 4))
                    && position_key(order_key(None, descending, 4))
                        < position_key(order_key(Some(-9.0), descending, 5)),
                "position keys sort by position"
            );
            assert!(
                order_key(Some(f64::NAN), descending, max_position) < 0
                    && order_key(None, descending, 0) >= 0
            );
        }
    }
}
