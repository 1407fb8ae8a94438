//! Row buffers that keep their order and move to disk when memory runs short.
//!
//! Folding holds back the sorted rows until the stream ends (layer 0 leaves at once, the other
//! layers are picked out of the held rows afterwards), and top-r must see every row before it
//! knows how many to keep. Both hold rows in a [`BufferSet`]: ordered buffers whose memory is
//! counted against the session's pool; when the pool says no, every buffer is written to a
//! temporary Arrow IPC file (a *run*) and its memory freed. Once filled, the set is frozen
//! ([`BufferSet::freeze`]) and each buffer can be replayed, forwards or backwards (batch order;
//! rows within a batch stay as they are), as often as needed.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::{DataFusionError, internal_datafusion_err};
use datafusion::error::Result;
use datafusion::execution::SpillFile;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::metrics::SpillMetrics;

/// Ordered buffers sharing one memory reservation.
pub struct BufferSet {
    buffers: Vec<Buffer>,
    reservation: MemoryReservation,
    /// Most memory held before spilling: half of a bounded pool, so that the operators this
    /// set feeds (merges, writers) still find room.
    budget: usize,
    env: Arc<RuntimeEnv>,
    schema: SchemaRef,
    owner: &'static str,
    metrics: SpillMetrics,
}

/// One buffer: spilled runs first, then the batches still in memory, in push order.
#[derive(Default, Clone)]
struct Buffer {
    runs: Vec<Arc<dyn SpillFile>>,
    memory: Vec<RecordBatch>,
}

impl BufferSet {
    /// `count` empty buffers for batches of `schema`, charged to `owner` in the memory pool;
    /// spills are counted in `metrics`.
    pub fn new(
        count: usize,
        schema: SchemaRef,
        env: Arc<RuntimeEnv>,
        owner: &'static str,
        metrics: SpillMetrics,
    ) -> Self {
        let reservation = MemoryConsumer::new(owner)
            .with_can_spill(true)
            .register(&env.memory_pool);
        let budget = match env.memory_pool.memory_limit() {
            MemoryLimit::Finite(bytes) => bytes / 2,
            _ => usize::MAX,
        };
        Self {
            buffers: (0..count).map(|_| Buffer::default()).collect(),
            reservation,
            budget,
            env,
            schema,
            owner,
            metrics,
        }
    }

    /// Appends `batch` (not empty) to buffer `index`, spilling every buffer first if memory
    /// is short.
    pub fn push(&mut self, index: usize, batch: RecordBatch) -> Result<()> {
        let size = held_size(&batch);
        if self.reservation.size() + size > self.budget || self.reservation.try_grow(size).is_err()
        {
            self.spill()?;
            // A single batch larger than the whole budget still has to pass through.
            self.reservation.grow(size);
        }
        self.buffers[index].memory.push(batch);
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        for buffer in &mut self.buffers {
            if buffer.memory.is_empty() {
                continue;
            }
            let file = self.env.disk_manager.create_tmp_file(self.owner)?;
            let mut writer = StreamWriter::try_new(file.open_writer()?, &self.schema)?;
            for batch in buffer.memory.drain(..) {
                self.metrics.spilled_rows.add(batch.num_rows());
                // Write only what the rows use, not whole shared view buffers.
                writer.write(&compact(batch)?)?;
            }
            writer.finish()?;
            writer.into_inner()?.finish()?;
            self.metrics.spill_file_count.add(1);
            self.metrics
                .spilled_bytes
                .add(file.size().unwrap_or(0) as usize);
            buffer.runs.push(file);
        }
        self.reservation.free();
        Ok(())
    }

    /// Ends filling and leaves the memory pool: the held batches now belong to whoever
    /// replays them, and the operators downstream get this set's share of the pool.
    pub fn freeze(self) -> FrozenBuffers {
        FrozenBuffers {
            buffers: self.buffers,
        }
    }
}

/// Filled buffers, ready for replay.
pub struct FrozenBuffers {
    buffers: Vec<Buffer>,
}

impl FrozenBuffers {
    /// The batches of buffer `index` in push order, or in reverse batch order when `backwards`.
    pub fn replay(&self, index: usize, backwards: bool) -> Replay {
        let buffer = self.buffers[index].clone();
        let mut pieces: VecDeque<Piece> = buffer
            .runs
            .into_iter()
            .map(Piece::Run)
            .chain(buffer.memory.into_iter().map(Piece::Batch))
            .collect();
        if backwards {
            pieces = pieces.into_iter().rev().collect();
        }
        Replay { pieces, backwards }
    }
}

enum Piece {
    Batch(RecordBatch),
    Run(Arc<dyn SpillFile>),
}

/// The batches of one buffer, read back lazily (one spill run in memory at a time).
pub struct Replay {
    pieces: VecDeque<Piece>,
    backwards: bool,
}

impl Iterator for Replay {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.pieces.pop_front()? {
                Piece::Batch(batch) => return Some(Ok(batch)),
                Piece::Run(file) => match read_run(file.as_ref()) {
                    Ok(batches) => {
                        let ordered: Vec<_> = if self.backwards {
                            batches.into_iter().rev().collect()
                        } else {
                            batches
                        };
                        // Push in reverse so that the first one is popped first.
                        for batch in ordered.into_iter().rev() {
                            self.pieces.push_front(Piece::Batch(batch));
                        }
                    }
                    Err(e) => return Some(Err(e)),
                },
            }
        }
    }
}

fn read_run(file: &dyn SpillFile) -> Result<Vec<RecordBatch>> {
    let path = file
        .path()
        .ok_or_else(|| internal_datafusion_err!("spill file has no path"))?;
    let reader = StreamReader::try_new(std::io::BufReader::new(std::fs::File::open(path)?), None)?;
    reader
        .map(|batch| batch.map_err(DataFusionError::from))
        .collect()
}

fn is_view(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Utf8View | DataType::BinaryView)
}

/// The memory a batch holds on its own. Rows taken out of a sorted batch share whole view
/// buffers with their neighbours; counting those buffers for every batch would count the same
/// bytes many times, so view columns count their views and the bytes their values use.
fn held_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            // A view's low 32 bits are the value's length.
            DataType::Utf8View => view_bytes(column.as_string_view().views()),
            DataType::BinaryView => view_bytes(column.as_binary_view().views()),
            _ => column.get_array_memory_size(),
        })
        .sum()
}

fn view_bytes(views: &[u128]) -> usize {
    views.iter().map(|v| 16 + (*v as u32) as usize).sum()
}

/// `batch` with view columns copied down to the bytes their values use.
fn compact(batch: RecordBatch) -> Result<RecordBatch> {
    if !batch.columns().iter().any(|c| is_view(c.data_type())) {
        return Ok(batch);
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Utf8View => Arc::new(column.as_string_view().gc()) as ArrayRef,
            DataType::BinaryView => Arc::new(column.as_binary_view().gc()) as ArrayRef,
            _ => Arc::clone(column),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}
