//! Parquet encoding on all cores, in order.
//!
//! Encoding and compressing Parquet costs more than sorting the rows, and an ordered output is
//! one stream, so a plain `ArrowWriter` would run on one core while the others wait. Here rows
//! are cut into row groups; each row group is encoded on a blocking worker thread while the
//! next one fills, and finished row groups are appended to the file strictly in order.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves,
};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;
use tokio::task::JoinHandle;

/// Row groups encoding at once; more would only hold more rows in memory.
const IN_FLIGHT: usize = 2;

/// A Parquet file being encoded into memory, handed out as bytes as row groups complete.
pub struct ParallelParquetWriter {
    file: SerializedFileWriter<Vec<u8>>,
    factory: Arc<ArrowRowGroupWriterFactory>,
    schema: SchemaRef,
    row_group_rows: usize,
    filling: Vec<RecordBatch>,
    filling_rows: usize,
    encoding: VecDeque<JoinHandle<Result<Vec<ArrowColumnChunk>>>>,
    started: usize,
}

impl ParallelParquetWriter {
    /// A writer of `schema` rows with `props` (row group size, compression, ...).
    pub fn try_new(schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        let row_group_rows = props
            .max_row_group_row_count()
            .unwrap_or(1024 * 1024)
            .max(1);
        let (file, factory) = ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props))?
            .into_serialized_writer()?;
        Ok(Self {
            file,
            factory: Arc::new(factory),
            schema,
            row_group_rows,
            filling: Vec::new(),
            filling_rows: 0,
            encoding: VecDeque::new(),
            started: 0,
        })
    }

    /// Adds rows; returns the file bytes completed so far (possibly none).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        let mut rest = batch.clone();
        while rest.num_rows() > 0 {
            let room = self.row_group_rows - self.filling_rows;
            let head = rest.slice(0, room.min(rest.num_rows()));
            rest = rest.slice(head.num_rows(), rest.num_rows() - head.num_rows());
            self.filling_rows += head.num_rows();
            self.filling.push(head);
            if self.filling_rows == self.row_group_rows {
                self.start_row_group();
            }
        }
        while self.encoding.len() > IN_FLIGHT {
            self.append_oldest().await?;
        }
        Ok(std::mem::take(self.file.inner_mut()))
    }

    /// Encodes what is left and writes the footer; returns the last bytes of the file.
    pub async fn finish(mut self) -> Result<Vec<u8>> {
        if self.filling_rows > 0 {
            self.start_row_group();
        }
        while !self.encoding.is_empty() {
            self.append_oldest().await?;
        }
        self.file.finish()?;
        Ok(std::mem::take(self.file.inner_mut()))
    }

    fn start_row_group(&mut self) {
        let batches = std::mem::take(&mut self.filling);
        self.filling_rows = 0;
        let (factory, schema, index) = (
            Arc::clone(&self.factory),
            Arc::clone(&self.schema),
            self.started,
        );
        self.started += 1;
        self.encoding
            .push_back(tokio::task::spawn_blocking(move || {
                encode(&factory, &schema, index, &batches)
            }));
    }

    async fn append_oldest(&mut self) -> Result<()> {
        let Some(task) = self.encoding.pop_front() else {
            return Ok(());
        };
        let chunks = task
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        let mut row_group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        Ok(())
    }
}

/// Encodes one row group's batches into column chunks.
fn encode(
    factory: &ArrowRowGroupWriterFactory,
    schema: &SchemaRef,
    index: usize,
    batches: &[RecordBatch],
) -> Result<Vec<ArrowColumnChunk>> {
    let mut writers = factory.create_column_writers(index)?;
    for batch in batches {
        let mut next = writers.iter_mut();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, column)? {
                next.next()
                    .expect("one writer per leaf column")
                    .write(&leaf)?;
            }
        }
    }
    Ok(writers
        .into_iter()
        .map(|w| w.close())
        .collect::<Result<Vec<_>, _>>()?)
}
