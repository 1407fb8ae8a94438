//! Row buffers that keep their order and move to disk when memory runs short.
//!
//! Folding holds back every layer but the first until the sorted input ends, and top-r must
//! see every row before it knows how many to keep. Both buffer rows in a [`BufferSet`]: one
//! ordered buffer per stream, memory counted against the session's pool, and when the pool
//! says no, every buffer is written to a temporary Arrow IPC file (a *run*) and memory is
//! freed. Replaying a buffer yields its rows in the order they were pushed, or exactly reversed.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::{DataFusionError, internal_datafusion_err};
use datafusion::error::Result;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SpillFile;

/// Ordered buffers sharing one memory reservation.
pub struct BufferSet {
    buffers: Vec<Buffer>,
    reservation: MemoryReservation,
    env: Arc<RuntimeEnv>,
    schema: SchemaRef,
    owner: &'static str,
    spilled_bytes: usize,
}

#[derive(Default)]
struct Buffer {
    runs: Vec<Arc<dyn SpillFile>>,
    memory: Vec<RecordBatch>,
}

impl BufferSet {
    /// `count` empty buffers for batches of `schema`, charged to `owner` in the memory pool.
    pub fn new(count: usize, schema: SchemaRef, env: Arc<RuntimeEnv>, owner: &'static str) -> Self {
        let reservation = MemoryConsumer::new(owner).with_can_spill(true).register(&env.memory_pool);
        Self {
            buffers: (0..count).map(|_| Buffer::default()).collect(),
            reservation,
            env,
            schema,
            owner,
            spilled_bytes: 0,
        }
    }

    /// Appends `batch` to buffer `index`, spilling every buffer first if memory is short.
    pub fn push(&mut self, index: usize, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let size = batch.get_array_memory_size();
        if self.reservation.try_grow(size).is_err() {
            self.spill()?;
            // A single batch larger than the whole budget still has to pass through.
            self.reservation.grow(size);
        }
        self.buffers[index].memory.push(batch);
        Ok(())
    }

    /// Bytes written to spill files so far.
    pub fn spilled_bytes(&self) -> usize {
        self.spilled_bytes
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
            }
            writer.finish()?;
            writer.into_inner()?.finish()?;
            self.spilled_bytes += file.size().unwrap_or(0) as usize;
            buffer.runs.push(file);
        }
        self.reservation.free();
        Ok(())
    }

    /// Takes buffer `index` out for replay, forwards or reversed row by row.
    pub fn replay(&mut self, index: usize, reverse: bool) -> Replay {
        let buffer = std::mem::take(&mut self.buffers[index]);
        let mut pieces: VecDeque<Piece> = buffer
            .runs
            .into_iter()
            .map(Piece::Run)
            .chain(buffer.memory.into_iter().map(Piece::Batch))
            .collect();
        if reverse {
            pieces = pieces.into_iter().rev().collect();
        }
        Replay { pieces, reverse }
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

impl Replay {
    /// An empty replay.
    pub fn empty() -> Self {
        Self { pieces: VecDeque::new(), reverse: false }
    }
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

/// The rows of `batch` in reverse order.
pub fn reverse_rows(batch: &RecordBatch) -> Result<RecordBatch> {
    let n = batch.num_rows() as u32;
    let indices = UInt32Array::from_iter_values((0..n).rev());
    Ok(take_record_batch(batch, &indices)?)
}
