//! Sorted runs on shared storage: the keyed rows of one task of a distributed fold, sorted by
//! key, in a file that any task on any host can read from any block on.
//!
//! A run is an Arrow IPC file (readable by any Arrow tool) whose record batches are blocks of
//! [`BLOCK_ROWS`] rows, the last one shorter. Its footer's custom metadata holds the first key
//! of every block (`delt.block_keys`, 32 hex digits each), so a reader finds the block where a
//! key would sit from the footer alone and fetches only the blocks it reads, one range read
//! each. [`RankedMerge`] reads several runs from a key (a fence) on, forward or backward, in
//! key order, and knows the rank of each row in the union of the runs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::buffer::{Buffer, ScalarBuffer};
use datafusion::arrow::compute::{concat_batches, interleave_record_batch};
use datafusion::arrow::datatypes::{Decimal128Type, SchemaRef};
use datafusion::arrow::ipc::convert::fb_to_schema;
use datafusion::arrow::ipc::reader::{FileDecoder, read_footer_length};
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::ipc::{Block, root_as_footer};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{DataFusionError, Result};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

/// Rows per block of a run: what a reader fetches at once, and how far a fence found from the
/// footer may be from the exact place of a key.
pub const BLOCK_ROWS: usize = 1024;

/// The footer metadata that holds the first key of every block.
const BLOCK_KEYS: &str = "delt.block_keys";

/// Bytes read from the end of a run to find its footer; more when the footer is larger.
const TAIL_BYTES: u64 = 64 * 1024;

/// What one finished run holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Rows in the run.
    pub rows: u64,
    /// Rows with a score, for a fold's keys (negative keys; they sort before the rows without
    /// one).
    pub scored: u64,
    /// The first key of every block.
    pub block_keys: Vec<i128>,
}

/// Writes the rows of one sorted stream (their key last) as a run at `path`.
pub struct RunWriter {
    path: Path,
    upload: BufWriter,
    ipc: FileWriter<Vec<u8>>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    summary: RunSummary,
    last_key: Option<i128>,
}

impl RunWriter {
    /// A run of rows with `schema` (key last) at `path` in `store`.
    pub fn create(store: Arc<dyn ObjectStore>, path: Path, schema: &SchemaRef) -> Result<Self> {
        Ok(Self {
            upload: BufWriter::new(store, path.clone()),
            path,
            ipc: FileWriter::try_new(Vec::new(), schema)?,
            pending: Vec::new(),
            pending_rows: 0,
            summary: RunSummary {
                rows: 0,
                scored: 0,
                block_keys: Vec::new(),
            },
            last_key: None,
        })
    }

    /// Appends `batch`, whose keys follow the keys written before (equal ones allowed).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        while self.pending_rows >= BLOCK_ROWS {
            self.write_block(BLOCK_ROWS).await?;
        }
        Ok(())
    }

    /// Writes the last block and the footer, and completes the upload.
    pub async fn finish(mut self) -> Result<RunSummary> {
        if self.pending_rows > 0 {
            self.write_block(self.pending_rows).await?;
        }
        let keys: String = self
            .summary
            .block_keys
            .iter()
            .map(|key| format!("{:032x}", *key as u128))
            .collect();
        self.ipc.write_metadata(BLOCK_KEYS, keys);
        self.ipc.finish()?;
        self.flush().await?;
        self.upload
            .shutdown()
            .await
            .map_err(|e| DataFusionError::Execution(format!("completing {}: {e}", self.path)))?;
        Ok(self.summary)
    }

    /// Removes what was uploaded so far.
    pub async fn abort(mut self) {
        let _ = self.upload.abort().await;
    }

    /// Writes the first `rows` pending rows as one block.
    async fn write_block(&mut self, rows: usize) -> Result<()> {
        let schema = self.pending[0].schema();
        let all = concat_batches(&schema, &self.pending)?;
        let block = all.slice(0, rows);
        let block = concat_batches(&schema, [&block])?;
        let rest = all.slice(rows, all.num_rows() - rows);
        self.pending = if rest.num_rows() > 0 {
            vec![rest]
        } else {
            vec![]
        };
        self.pending_rows -= rows;
        let keys = block_keys(&block);
        if let (Some(last), Some(first)) = (self.last_key, keys.first())
            && *first < last
        {
            return Err(DataFusionError::Internal(format!(
                "run {}: keys out of order",
                self.path
            )));
        }
        self.last_key = keys.last().copied();
        self.summary.block_keys.push(keys[0]);
        self.summary.rows += rows as u64;
        self.summary.scored += keys.iter().filter(|key| **key < 0).count() as u64;
        self.ipc.write(&block)?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<()> {
        let bytes = std::mem::take(self.ipc.get_mut());
        if !bytes.is_empty() {
            self.upload.put(Bytes::from(bytes)).await?;
        }
        Ok(())
    }
}

/// The key column (the last) of a block.
fn block_keys(batch: &RecordBatch) -> ScalarBuffer<i128> {
    batch
        .column(batch.num_columns() - 1)
        .as_primitive::<Decimal128Type>()
        .values()
        .clone()
}

/// A run opened for reading: its footer, read once.
pub struct RunFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    schema: SchemaRef,
    decoder: FileDecoder,
    blocks: Vec<Block>,
    keys: Vec<i128>,
}

impl RunFile {
    /// Reads the footer of the run at `path` in `store`.
    pub async fn open(store: Arc<dyn ObjectStore>, path: Path) -> Result<Self> {
        let corrupt = |what: &str| {
            DataFusionError::Execution(format!(
                "run {path} of a distributed fold is unreadable ({what}): was it changed or \
                 removed while the query ran?"
            ))
        };
        let tail = suffix(store.as_ref(), &path, TAIL_BYTES).await?;
        let length_at = tail
            .len()
            .checked_sub(10)
            .ok_or_else(|| corrupt("too short"))?;
        let footer_length = read_footer_length(tail[length_at..].try_into().expect("10 bytes"))?;
        let tail = if footer_length + 10 > tail.len() {
            suffix(store.as_ref(), &path, footer_length as u64 + 10).await?
        } else {
            tail
        };
        let footer_at = tail.len() - 10 - footer_length;
        let footer = root_as_footer(&tail[footer_at..tail.len() - 10])
            .map_err(|e| corrupt(&e.to_string()))?;
        let schema = Arc::new(fb_to_schema(
            footer.schema().ok_or_else(|| corrupt("no schema"))?,
        ));
        let keys = footer
            .custom_metadata()
            .into_iter()
            .flatten()
            .find(|pair| pair.key() == Some(BLOCK_KEYS))
            .and_then(|pair| pair.value())
            .and_then(parse_keys)
            .ok_or_else(|| corrupt("no block keys"))?;
        let blocks: Vec<Block> = footer
            .recordBatches()
            .into_iter()
            .flatten()
            .copied()
            .collect();
        if blocks.len() != keys.len() {
            return Err(corrupt("block keys do not match the blocks"));
        }
        let version = footer.version();
        let dictionaries: Vec<Block> = footer
            .dictionaries()
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let mut decoder = FileDecoder::new(Arc::clone(&schema), version);
        for block in &dictionaries {
            decoder.read_dictionary(block, &fetch(store.as_ref(), &path, block).await?)?;
        }
        Ok(Self {
            store,
            path,
            schema,
            decoder,
            blocks,
            keys,
        })
    }

    /// The schema of the rows, key last.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The index of the first block whose rows may hold `fence` or keys after it: the block
    /// before the first block that starts at or after the fence (0 when there is none).
    fn block_at(&self, fence: Fence) -> usize {
        match fence {
            Fence::Start => 0,
            Fence::End => self.blocks.len().saturating_sub(1),
            Fence::Key(key) => self.keys.partition_point(|k| *k < key).saturating_sub(1),
        }
    }

    /// Reads block `index`.
    pub async fn block(&self, index: usize) -> Result<RecordBatch> {
        let block = &self.blocks[index];
        let batch = self
            .decoder
            .read_record_batch(block, &fetch(self.store.as_ref(), &self.path, block).await?)?
            .ok_or_else(|| {
                DataFusionError::Execution(format!("run {}: block {index} is missing", self.path))
            })?;
        Ok(batch)
    }
}

/// The bytes of `block` of the run at `path`.
async fn fetch(store: &dyn ObjectStore, path: &Path, block: &Block) -> Result<Buffer> {
    let start = block.offset() as u64;
    let end = start + block.metaDataLength() as u64 + block.bodyLength() as u64;
    Ok(Buffer::from(store.get_range(path, start..end).await?))
}

/// The last `bytes` bytes of the object at `path` (all of it when it is shorter).
async fn suffix(store: &dyn ObjectStore, path: &Path, bytes: u64) -> Result<Bytes> {
    let options = GetOptions {
        range: Some(GetRange::Suffix(bytes)),
        ..GetOptions::default()
    };
    Ok(store.get_opts(path, options).await?.bytes().await?)
}

fn parse_keys(hex: &str) -> Option<Vec<i128>> {
    if !hex.len().is_multiple_of(32) {
        return None;
    }
    (0..hex.len())
        .step_by(32)
        .map(|at| {
            u128::from_str_radix(hex.get(at..at + 32)?, 16)
                .ok()
                .map(|k| k as i128)
        })
        .collect()
}

/// Where a [`RankedMerge`] starts: before every key, at a key, or after every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Before the first row.
    Start,
    /// At this key: forward from the first row whose key is not less, backward from the last
    /// row whose key is less.
    Key(i128),
    /// After the last row.
    End,
}

/// The rows of several runs in key order from a fence on, each with its rank: its index in
/// the sorted union of all the runs. Rows with equal keys (only a shuffle's identical rows,
/// which are interchangeable) come in an order fixed by the order of the runs.
///
/// A row comes out as its rank, a slot (a block read since the last [`gather`](Self::gather))
/// and its index in that block; `gather` builds a batch of the rows asked for and lets go of
/// the blocks no cursor stands on.
pub struct RankedMerge {
    cursors: Vec<Cursor>,
    slots: Vec<RecordBatch>,
    /// (key, cursor) of each cursor's current row: the smallest key on top (forward) or the
    /// largest (backward).
    forward_heap: BinaryHeap<(Reverse<i128>, usize)>,
    backward_heap: BinaryHeap<(i128, usize)>,
    forward: bool,
    /// The rank of the next row (`-1` once a backward merge has passed the first row).
    next_rank: i64,
}

struct Cursor {
    run: Arc<RunFile>,
    block: usize,
    slot: usize,
    keys: ScalarBuffer<i128>,
    row: usize,
    /// The next block in the merge's direction, fetched while this one is read (on an
    /// object store, a request's latency would otherwise stall the merge once per block).
    prefetch: Option<SpawnedTask<Result<RecordBatch>>>,
}

impl RankedMerge {
    /// Starts at `fence` in every run of `runs`; reads in ascending key order when
    /// `forward`, else descending.
    pub async fn start(runs: &[Arc<RunFile>], fence: Fence, forward: bool) -> Result<Self> {
        let mut merge = Self {
            cursors: Vec::new(),
            slots: Vec::new(),
            forward_heap: BinaryHeap::new(),
            backward_heap: BinaryHeap::new(),
            forward,
            next_rank: 0,
        };
        let mut before_fence = 0i64;
        for run in runs {
            if run.blocks.is_empty() {
                continue;
            }
            let block = run.block_at(fence);
            let batch = run.block(block).await?;
            let keys = block_keys(&batch);
            let below = match fence {
                Fence::Start => 0,
                Fence::End => keys.len(),
                Fence::Key(key) => keys.partition_point(|k| *k < key),
            };
            before_fence += (block * BLOCK_ROWS + below) as i64;
            merge.slots.push(batch);
            let mut cursor = Cursor {
                run: Arc::clone(run),
                block,
                slot: merge.slots.len() - 1,
                keys,
                row: below,
                prefetch: None,
            };
            cursor.prefetch(forward);
            let live = if forward {
                below < cursor.keys.len() || cursor.advance(true, &mut merge.slots).await?
            } else if below > 0 {
                cursor.row = below - 1;
                true
            } else {
                false
            };
            if live {
                let entry = (cursor.keys[cursor.row], merge.cursors.len());
                merge.cursors.push(cursor);
                merge.push(entry);
            }
        }
        merge.next_rank = if forward {
            before_fence
        } else {
            before_fence - 1
        };
        Ok(merge)
    }

    fn push(&mut self, (key, cursor): (i128, usize)) {
        if self.forward {
            self.forward_heap.push((Reverse(key), cursor));
        } else {
            self.backward_heap.push((key, cursor));
        }
    }

    /// The next row as (rank, slot, row); `None` when every run is read.
    pub async fn next(&mut self) -> Result<Option<(u64, usize, usize)>> {
        let top = if self.forward {
            self.forward_heap.pop().map(|(_, cursor)| cursor)
        } else {
            self.backward_heap.pop().map(|(_, cursor)| cursor)
        };
        let Some(index) = top else {
            return Ok(None);
        };
        let rank = self.next_rank as u64;
        self.next_rank += if self.forward { 1 } else { -1 };
        let cursor = &mut self.cursors[index];
        let at = (rank, cursor.slot, cursor.row);
        if cursor.step(self.forward, &mut self.slots).await? {
            let entry = (cursor.keys[cursor.row], index);
            self.push(entry);
        }
        Ok(Some(at))
    }

    /// The rows at `(slot, row)`, in that order, as one batch (key last); then forgets the
    /// slots that no cursor stands on.
    pub fn gather(&mut self, rows: &[(usize, usize)]) -> Result<RecordBatch> {
        let slots: Vec<&RecordBatch> = self.slots.iter().collect();
        let batch = interleave_record_batch(&slots, rows)?;
        let mut kept = Vec::with_capacity(self.cursors.len());
        for cursor in &mut self.cursors {
            kept.push(self.slots[cursor.slot].clone());
            cursor.slot = kept.len() - 1;
        }
        self.slots = kept;
        Ok(batch)
    }
}

impl Cursor {
    /// Moves to the next row in the direction; false when the run has no more.
    async fn step(&mut self, forward: bool, slots: &mut Vec<RecordBatch>) -> Result<bool> {
        if forward && self.row + 1 < self.keys.len() {
            self.row += 1;
            return Ok(true);
        }
        if !forward && self.row > 0 {
            self.row -= 1;
            return Ok(true);
        }
        self.advance(forward, slots).await
    }

    /// The index of the next block in the direction, if there is one.
    fn next_block(&self, forward: bool) -> Option<usize> {
        if forward {
            Some(self.block + 1).filter(|next| *next < self.run.blocks.len())
        } else {
            self.block.checked_sub(1)
        }
    }

    /// Starts fetching the next block in the direction.
    fn prefetch(&mut self, forward: bool) {
        self.prefetch = self.next_block(forward).map(|next| {
            let run = Arc::clone(&self.run);
            SpawnedTask::spawn(async move { run.block(next).await })
        });
    }

    /// Loads the next block in the direction into a new slot and stands on its first row in
    /// that direction.
    async fn advance(&mut self, forward: bool, slots: &mut Vec<RecordBatch>) -> Result<bool> {
        let Some(next) = self.next_block(forward) else {
            return Ok(false);
        };
        let batch = match self.prefetch.take() {
            Some(fetch) => fetch
                .join_unwind()
                .await
                .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??,
            None => self.run.block(next).await?,
        };
        self.block = next;
        self.keys = block_keys(&batch);
        self.row = if forward { 0 } else { self.keys.len() - 1 };
        slots.push(batch);
        self.slot = slots.len() - 1;
        self.prefetch(forward);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fold_layout::{Piece, RunIndex};
    use datafusion::arrow::array::{Decimal128Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use object_store::memory::InMemory;

    fn batch(schema: &SchemaRef, keys: &[i128]) -> RecordBatch {
        let values = Int64Array::from_iter_values(keys.iter().map(|k| *k as i64 * 10));
        let keys = Decimal128Array::from_iter_values(keys.iter().copied())
            .with_precision_and_scale(38, 0)
            .unwrap();
        RecordBatch::try_new(Arc::clone(schema), vec![Arc::new(values), Arc::new(keys)]).unwrap()
    }

    /// Writes each of `runs` (sorted keys) in batches of uneven sizes; returns the opened runs.
    async fn write_runs(runs: &[Vec<i128>]) -> (Vec<Arc<RunFile>>, RunIndex) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let schema = Arc::new(Schema::new(vec![
            Field::new("value", DataType::Int64, false),
            Field::new("key", DataType::Decimal128(38, 0), false),
        ]));
        let mut files = Vec::new();
        let mut index = Vec::new();
        for (r, keys) in runs.iter().enumerate() {
            let path = Path::from(format!("runs/run-{r}.arrow"));
            let mut writer = RunWriter::create(Arc::clone(&store), path.clone(), &schema).unwrap();
            let mut at = 0;
            for size in [1, 700, 3000, 5].into_iter().cycle() {
                if at == keys.len() {
                    break;
                }
                let end = (at + size).min(keys.len());
                writer.write(batch(&schema, &keys[at..end])).await.unwrap();
                at = end;
            }
            let summary = writer.finish().await.unwrap();
            assert_eq!(summary.rows, keys.len() as u64);
            assert_eq!(
                summary.scored,
                keys.iter().filter(|k| **k < 0).count() as u64
            );
            index.push((summary.block_keys, summary.rows));
            files.push(Arc::new(
                RunFile::open(Arc::clone(&store), path).await.unwrap(),
            ));
        }
        (files, RunIndex::new(index))
    }

    #[tokio::test]
    async fn a_merge_from_a_fence_counts_ranks_exactly_both_ways() {
        // Unique keys spread unevenly over three runs, negative and positive.
        let mut runs: Vec<Vec<i128>> = vec![Vec::new(); 3];
        for k in -6000i128..4000 {
            let run = ((k * 7919).rem_euclid(11) % 3) as usize;
            if run != 2 || k % 5 == 0 {
                runs[run].push(k * 3 + 1);
            }
        }
        let mut all: Vec<i128> = runs.iter().flatten().copied().collect();
        all.sort();
        let (files, index) = write_runs(&runs).await;
        let n = all.len() as u64;
        for (first, count, stride) in [
            (0, 5, 1),
            (1, 40, 3),
            (2047, 100, 7),
            (n - 9, 3, 4),
            (4000, 1, 1),
        ] {
            for backwards in [false, true] {
                let piece = Piece {
                    first,
                    count,
                    stride,
                    backwards,
                };
                let mut merge = RankedMerge::start(&files, index.fence(&piece), !backwards)
                    .await
                    .unwrap();
                let mut expected: Vec<u64> = (0..count).map(|i| first + i * stride).collect();
                if backwards {
                    expected.reverse();
                }
                let mut picked = Vec::new();
                let mut seen = 0;
                while picked.len() < expected.len() {
                    let (rank, slot, row) = merge.next().await.unwrap().expect("a row");
                    if seen == 0 {
                        assert!(if backwards {
                            rank >= piece.last()
                        } else {
                            rank <= first
                        });
                    }
                    seen += 1;
                    if expected.contains(&rank) {
                        picked.push((slot, row));
                    }
                }
                let gathered = merge.gather(&picked).unwrap();
                let values = gathered.column(0).as_primitive::<Int64Type>();
                let want: Vec<i64> = expected
                    .iter()
                    .map(|r| all[*r as usize] as i64 * 10)
                    .collect();
                assert_eq!(values.values().to_vec(), want, "{piece:?}");
                assert!(
                    seen <= count * stride + 6 * BLOCK_ROWS as u64,
                    "read {seen} rows"
                );
            }
        }
    }
}
