//! The fold without a memory limit: only the keys are sorted, each row is copied once.
//!
//! Where nothing may spill, a fold need not stream sorted rows. [`fold_in_memory`] holds the
//! input batches as they come, one task per input partition, and each task sorts its
//! partition's keys when its input ends (in parallel). The sorted keys are merged into the
//! rows' global order (sort and merge both on every thread, [`crate::stages::key_runs`]), and each
//! layer's rows are gathered straight from the held batches, a few output batches at once on
//! blocking threads, emitted in order. A row is copied once, by that gather, instead of by the
//! sort, the merge of its sorted runs and the fold's picking of layers; on document texts read
//! as plain strings (JSON lines) that is most of the work.
//!
//! The output is the same as the streaming fold's ([`crate::stages::fold`]): the keys order the rows
//! by (score, input position), so the order depends on nothing else.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::{Decimal128Type, SchemaRef};
use datafusion::common::exec_err;
use datafusion::common::runtime::SpawnedTask;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext, async_try_stream};
use datafusion::physical_plan::metrics::BaselineMetrics;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;

use crate::io::in_order::{InOrder, joined};
use crate::stages::FoldMode;
use crate::stages::key_runs::{merge_runs, sort_runs};
use crate::stages::order_key::ROW_BITS;

/// Rows of a held batch, at most: the low [`ROW_BITS`] of a held row's key become its place,
/// `batch << HELD_ROW_BITS | row`, which orders rows as their index in the partition did.
const HELD_ROW_BITS: u32 = 16;

/// Rows of a gathered batch, in session batch sizes. A gather pays a little for every held
/// batch it may draw from (and the string buffers it does draw from), so fewer, larger gathers
/// cost less: 4 made a 10M-row Parquet fold 10% faster than 1; 16 was no faster, and slower
/// for JSON output (larger text buffers).
const GATHER_BATCHES: usize = 4;

/// One input partition, held: its batches (key column dropped) and its keys, sorted in runs.
struct HeldPartition {
    batches: Vec<RecordBatch>,
    /// The low [`ROW_BITS`] of each are the row's place among `batches`.
    keys: Vec<i128>,
    /// Ranges of `keys`, each sorted.
    runs: Vec<Range<usize>>,
}

impl HeldPartition {
    /// How many of the rows have a score (their keys, negative, sort first).
    fn scored(&self) -> usize {
        self.runs
            .iter()
            .map(|run| self.keys[run.clone()].partition_point(|k| *k < 0))
            .sum()
    }
}

/// Folds the rows of every partition of `input`, an
/// [`OrderKeyExec`](crate::stages::order_key::OrderKeyExec), into `schema` (its columns but the key).
pub fn fold_in_memory(
    input: &Arc<dyn ExecutionPlan>,
    layers: usize,
    mode: FoldMode,
    schema: SchemaRef,
    context: Arc<TaskContext>,
    baseline: BaselineMetrics,
) -> Result<SendableRecordBatchStream> {
    let key = input.schema().fields().len() - 1;
    let partitions = input.output_partitioning().partition_count();
    let parallel = context.session_config().target_partitions().max(1);
    let mut tasks = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let stream = input.execute(p, Arc::clone(&context))?;
        tasks.push(SpawnedTask::spawn(hold(stream, key, parallel)));
    }
    let gather_rows = context.session_config().batch_size() * GATHER_BATCHES;
    let output_schema = Arc::clone(&schema);
    let stream = async_try_stream(move |mut tx| async move {
        let mut held = Vec::with_capacity(tasks.len());
        for task in tasks {
            held.push(joined(task).await?);
        }
        let scored = held.iter().map(HeldPartition::scored).sum();
        let order = Arc::new(merge(&held, parallel));
        let batches: Arc<Vec<RecordBatch>> =
            Arc::new(held.into_iter().flat_map(|p| p.batches).collect());
        let mut gathering = InOrder::default();
        for chunk in chunks(passes(order.len(), scored, layers, mode), gather_rows) {
            let (batches, order, schema) = (
                Arc::clone(&batches),
                Arc::clone(&order),
                Arc::clone(&schema),
            );
            gathering.start(move || gather(&batches, &order, &chunk, schema));
            while gathering.len() >= parallel {
                let batch = gathering.next().await.expect("gathers started")?;
                baseline.record_output(batch.num_rows());
                tx.emit(batch).await;
            }
        }
        while let Some(batch) = gathering.next().await {
            let batch = batch?;
            baseline.record_output(batch.num_rows());
            tx.emit(batch).await;
        }
        Ok::<_, DataFusionError>(())
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        output_schema,
        stream,
    )))
}

/// Holds one partition's batches and sorts its keys, in up to `threads` runs.
async fn hold(
    mut stream: SendableRecordBatchStream,
    key: usize,
    threads: usize,
) -> Result<HeldPartition> {
    let columns: Vec<usize> = (0..key).collect();
    let mut held = HeldPartition {
        batches: Vec::new(),
        keys: Vec::new(),
        runs: Vec::new(),
    };
    let position_bits = !((1i128 << ROW_BITS) - 1);
    let piece_rows = 1 << HELD_ROW_BITS;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for start in (0..batch.num_rows()).step_by(piece_rows) {
            let piece = batch.slice(start, piece_rows.min(batch.num_rows() - start));
            let index = held.batches.len() as i128;
            if index >> (ROW_BITS - HELD_ROW_BITS) != 0 {
                return exec_err!(
                    "a fold without a memory limit holds at most 2^24 batches per input \
                     partition: set --memory-limit to fold through a spilling sort"
                );
            }
            let keys = piece.column(key).as_primitive::<Decimal128Type>();
            held.keys.extend(
                keys.values()
                    .iter()
                    .enumerate()
                    .map(|(row, key)| key & position_bits | index << HELD_ROW_BITS | row as i128),
            );
            held.batches.push(piece.project(&columns)?);
        }
    }
    held.runs = sort_runs(&mut held.keys, threads);
    Ok(held)
}

/// All held rows in key order, as (batch, row in batch), merged on up to `threads` threads;
/// batches are numbered across partitions in partition order.
fn merge(held: &[HeldPartition], threads: usize) -> Vec<(u32, u32)> {
    let mut first_batch = 0;
    // Each run's keys and the number of its partition's first batch.
    let (runs, first_batches): (Vec<&[i128]>, Vec<u32>) = held
        .iter()
        .flat_map(|p| {
            let first = first_batch as u32;
            first_batch += p.batches.len();
            p.runs.iter().map(move |run| (&p.keys[run.clone()], first))
        })
        .unzip();
    merge_runs(&runs, threads, |run, key| {
        let place = key as u64 & ((1 << ROW_BITS) - 1);
        (
            first_batches[run] + (place >> HELD_ROW_BITS) as u32,
            (place & ((1 << HELD_ROW_BITS) - 1)) as u32,
        )
    })
}

/// A run of positions in the sorted order: `count` of them from `first`, `step` apart.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pass {
    first: usize,
    step: isize,
    count: usize,
}

impl Pass {
    /// The positions of this pass, in order.
    fn positions(self) -> impl Iterator<Item = usize> {
        (0..self.count).map(move |i| (self.first as isize + i as isize * self.step) as usize)
    }
}

/// The positions of `passes` one after another, at most `size` at a time. A chunk runs on
/// across passes: with as many layers as rows every pass is one row, and a gather per pass
/// would make a batch per row.
fn chunks(passes: Vec<Pass>, size: usize) -> impl Iterator<Item = Vec<usize>> {
    let size = size.max(1);
    let mut positions = passes.into_iter().flat_map(Pass::positions).peekable();
    std::iter::from_fn(move || {
        positions.peek()?;
        Some(positions.by_ref().take(size).collect())
    })
}

/// The passes of a fold over `rows` sorted rows, of which the first `scored` have a score:
/// each layer (high to low for odd layers of a zigzag), then the rows without a score.
fn passes(rows: usize, scored: usize, layers: usize, mode: FoldMode) -> Vec<Pass> {
    let mut passes: Vec<Pass> = (0..layers.min(scored))
        .map(|layer| {
            let count = (scored - layer).div_ceil(layers);
            if mode == FoldMode::Zigzag && layer % 2 == 1 {
                Pass {
                    first: layer + (count - 1) * layers,
                    step: -(layers as isize),
                    count,
                }
            } else {
                Pass {
                    first: layer,
                    step: layers as isize,
                    count,
                }
            }
        })
        .collect();
    if rows > scored {
        passes.push(Pass {
            first: scored,
            step: 1,
            count: rows - scored,
        });
    }
    passes
}

/// The rows at `positions` of the sorted `order`, gathered from the held `batches`.
fn gather(
    batches: &[RecordBatch],
    order: &[(u32, u32)],
    positions: &[usize],
    schema: SchemaRef,
) -> Result<RecordBatch> {
    if schema.fields().is_empty() {
        let options = RecordBatchOptions::new().with_row_count(Some(positions.len()));
        return Ok(RecordBatch::try_new_with_options(schema, vec![], &options)?);
    }
    let indices: Vec<(usize, usize)> = positions
        .iter()
        .map(|&i| (order[i].0 as usize, order[i].1 as usize))
        .collect();
    let sources: Vec<&RecordBatch> = batches.iter().collect();
    Ok(interleave_record_batch(&sources, &indices)?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, Decimal128Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::{FoldMode, Pass, chunks, hold, merge, passes};
    use crate::stages::order_key::order_key;

    /// Batches of (id, key) for rows scored `score(id)` in `partition`, `sizes` rows a batch.
    fn keyed_batches(
        partition: u64,
        sizes: &[usize],
        score: impl Fn(i64) -> Option<f64>,
    ) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("key", DataType::Decimal128(38, 0), false),
        ]));
        let mut row = 0u64;
        sizes
            .iter()
            .map(|&n| {
                let ids: Vec<i64> = (row..row + n as u64)
                    .map(|r| (partition * 1_000_000 + r) as i64)
                    .collect();
                let keys = ids
                    .iter()
                    .zip(row..)
                    .map(|(&id, r)| order_key(score(id), false, partition << 40 | r));
                row += n as u64;
                let keys = Decimal128Array::from_iter_values(keys)
                    .with_precision_and_scale(38, 0)
                    .unwrap();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from(ids)), Arc::new(keys)],
                )
                .unwrap()
            })
            .collect()
    }

    /// Held rows of partitions larger than a held batch, and of NULL scores, merge into
    /// (score, partition, row) order.
    #[tokio::test]
    async fn held_partitions_merge_in_key_order() {
        let score = |id: i64| (id % 11 != 0).then(|| (id * 7919 % 1000) as f64);
        let partitions = [
            keyed_batches(0, &[70_000, 0, 5, 66_000], score),
            keyed_batches(1, &[3, 140_000], score),
        ];
        let mut held = Vec::new();
        let mut expected = Vec::new();
        for batches in partitions {
            for batch in &batches {
                let ids = batch.column(0).as_primitive::<Int64Type>();
                expected.extend(
                    ids.values()
                        .iter()
                        .map(|&id| (score(id).is_none(), score(id).map(f64::to_bits), id)),
                );
            }
            let schema = batches[0].schema();
            let stream = futures::stream::iter(batches.into_iter().map(Ok));
            let stream = Box::pin(RecordBatchStreamAdapter::new(schema, stream));
            held.push(hold(stream, 1, 2).await.unwrap());
        }
        // Ids grow with partition and row: sorting by them keeps input order among ties.
        expected.sort();
        let order = merge(&held, 3);
        let batches: Vec<&RecordBatch> = held.iter().flat_map(|p| &p.batches).collect();
        assert!(
            batches
                .iter()
                .all(|b| b.num_rows() <= 1 << 16 && b.num_columns() == 1)
        );
        let got: Vec<i64> = order
            .iter()
            .map(|&(b, r)| {
                batches[b as usize]
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .value(r as usize)
            })
            .collect();
        let want: Vec<i64> = expected.iter().map(|e| e.2).collect();
        assert_eq!(got, want);
        let scored: usize = held.iter().map(|p| p.scored()).sum();
        assert_eq!(scored, expected.iter().filter(|e| !e.0).count());
    }

    fn positions(rows: usize, scored: usize, layers: usize, mode: FoldMode) -> Vec<usize> {
        chunks(passes(rows, scored, layers, mode), 2)
            .flatten()
            .collect()
    }

    #[test]
    fn passes_visit_layers_then_unscored_rows() {
        assert_eq!(
            positions(9, 7, 3, FoldMode::Ascending),
            [0, 3, 6, 1, 4, 2, 5, 7, 8]
        );
        assert_eq!(positions(7, 7, 3, FoldMode::Zigzag), [0, 3, 6, 4, 1, 2, 5]);
        assert_eq!(positions(2, 2, 5, FoldMode::Zigzag), [0, 1]);
        assert_eq!(positions(3, 0, 3, FoldMode::Ascending), [0, 1, 2]);
        assert!(positions(0, 0, 3, FoldMode::Ascending).is_empty());
        let backwards = Pass {
            first: 10,
            step: -3,
            count: 4,
        };
        assert_eq!(backwards.positions().collect::<Vec<_>>(), [10, 7, 4, 1]);
        // Chunks run on across passes, so one-row layers still make full batches.
        assert_eq!(
            chunks(passes(7, 7, 3, FoldMode::Ascending), 4).collect::<Vec<_>>(),
            [vec![0, 3, 6, 1], vec![4, 2, 5]]
        );
        assert_eq!(
            chunks(passes(5, 5, usize::MAX / 2, FoldMode::Zigzag), 8).collect::<Vec<_>>(),
            [vec![0, 1, 2, 3, 4]]
        );
    }
}
