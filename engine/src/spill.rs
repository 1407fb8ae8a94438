//! Row buffers that keep their order and move to disk when memory runs short.
//!
//! Folding holds back every layer but the first until the sorted input ends, and top-r must
//! see every row before it knows how many to keep. Both buffer rows in a [`BufferSet`]: one
//! ordered buffer per stream, memory counted against the session's pool, and when the pool
//! says no, every buffer is written to a temporary Arrow IPC file (a *run*) and memory is
//! freed. Replaying a buffer yields its rows in the order they were pushed, or exactly reversed.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::{DataFusionError, internal_datafusion_err};
use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SpillFile;
use datafusion::physical_plan::metrics::SpillMetrics;

/// Ordered buffers sharing one memory reservation.
pub struct BufferSet {
    buffers: Vec<Buffer>,
    reservation: MemoryReservation,
    env: Arc<RuntimeEnv>,
    schema: SchemaRef,
    owner: &'static str,
    metrics: SpillMetrics,
}

#[derive(Default)]
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
        let reservation = MemoryConsumer::new(owner).with_can_spill(true).register(&env.memory_pool);
        Self {
            buffers: (0..count).map(|_| Buffer::default()).collect(),
            reservation,
            env,
            schema,
            owner,
            metrics,
        }
    }

    /// Appends `batch` to buffer `index`, spilling every buffer first if memory is short.
    pub fn push(&mut self, index: usize, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = compact(batch)?;
        let size = batch.get_array_memory_size();
        if self.reservation.try_grow(size).is_err() {
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
                writer.write(&batch)?;
                self.metrics.spilled_rows.add(batch.num_rows());
            }
            writer.finish()?;
            writer.into_inner()?.finish()?;
            self.metrics.spill_file_count.add(1);
            self.metrics.spilled_bytes.add(file.size().unwrap_or(0) as usize);
            buffer.runs.push(file);
        }
        self.reservation.free();
        Ok(())
    }

    /// Hands every buffer over for replay (buffer `i` reversed row by row when `reverse(i)`)
    /// and leaves the memory pool: the batches now belong to whoever consumes them, and the
    /// operators downstream get this set's share of the pool.
    pub fn into_replays(self, reverse: impl Fn(usize) -> bool) -> Vec<Replay> {
        self.buffers
            .into_iter()
            .enumerate()
            .map(|(index, buffer)| {
                let mut pieces: VecDeque<Piece> = buffer
                    .runs
                    .into_iter()
                    .map(Piece::Run)
                    .chain(buffer.memory.into_iter().map(Piece::Batch))
                    .collect();
                let reverse = reverse(index);
                if reverse {
                    pieces = pieces.into_iter().rev().collect();
                }
                Replay { pieces, reverse }
            })
            .collect()
    }
}

enum Piece {
    Batch(RecordBatch),
    Run(Arc<dyn SpillFile>),
}

/// The rows of one buffer, read back lazily (one spill run in memory at a time).
pub struct Replay {
    pieces: VecDeque<Piece>,
    reverse: bool,
}

impl Iterator for Replay {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.pieces.pop_front()? {
                Piece::Batch(batch) if self.reverse => return Some(reverse_rows(&batch)),
                Piece::Batch(batch) => return Some(Ok(batch)),
                Piece::Run(file) => match read_run(file.as_ref()) {
                    Ok(batches) => {
                        // Push in reverse so the run's first batch is popped first.
                        let ordered: Vec<_> = if self.reverse {
                            batches.into_iter().rev().collect()
                        } else {
                            batches
                        };
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
    let path = file.path().ok_or_else(|| internal_datafusion_err!("spill file has no path"))?;
    let reader = StreamReader::try_new(std::io::BufReader::new(std::fs::File::open(path)?), None)?;
    reader.map(|batch| batch.map_err(DataFusionError::from)).collect()
}

/// `batch` without the unreferenced parts of its string and binary view buffers.
///
/// Rows taken out of a sorted batch still point into the whole batch's view buffers; kept as
/// they are, a buffer of a third of the rows would hold (and spill) all of them.
fn compact(batch: RecordBatch) -> Result<RecordBatch> {
    if !batch.columns().iter().any(|c| matches!(c.data_type(), DataType::Utf8View | DataType::BinaryView)) {
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

/// The rows of `batch` in reverse order.
pub fn reverse_rows(batch: &RecordBatch) -> Result<RecordBatch> {
    let n = batch.num_rows() as u32;
    let indices = UInt32Array::from_iter_values((0..n).rev());
    Ok(take_record_batch(batch, &indices)?)
}
