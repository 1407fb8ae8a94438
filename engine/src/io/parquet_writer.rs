//! Parquet encoding on all cores, in order.
//!
//! Encoding and compressing Parquet costs more than sorting the rows, and an ordered output is
//! one stream, so a plain `ArrowWriter` would run on one core while the others wait. Here rows
//! are cut into row groups; each row group is encoded on a blocking worker thread while the
//! next one fills, and finished row groups are appended to the file strictly in order.
//!
//! The file's bytes depend on its rows and properties only, not on how the rows arrived in
//! batches (their sizes differ with the batch size, the memory limit and the plan): a column
//! writer decides where pages end chunk by chunk, counting chunks from the start of each
//! write, so each column of a row group goes to its writer in one write (unless its strings
//! exceed what 32-bit offsets address: then batch by batch, as they came).

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::error::Result;
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowRowGroupWriterFactory, ArrowWriterOptions, compute_leaves,
};
use datafusion::parquet::arrow::{ArrowWriter, add_encoded_arrow_schema_to_metadata};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;

use crate::io::encodings::EncodingChoices;
use crate::io::in_order::InOrder;

/// Row groups encoding at once; more would only hold more rows in memory.
const IN_FLIGHT: usize = 2;

/// `schema` with its string and binary views as plain strings and binaries: the Arrow schema a
/// file declares. A view is how a column sits in memory, not what it holds, and the Parquet
/// bytes of both are the same: so a run whose strings are views (a local one) and a run whose
/// strings are not (a cluster's, whose processes exchange plain strings) write the same file,
/// and readers without view types read it.
fn without_views(schema: &Schema) -> Schema {
    fn plain(data_type: &DataType) -> DataType {
        match data_type {
            DataType::Utf8View => DataType::Utf8,
            DataType::BinaryView => DataType::Binary,
            DataType::List(item) => DataType::List(Arc::new(plain_field(item))),
            DataType::LargeList(item) => DataType::LargeList(Arc::new(plain_field(item))),
            DataType::FixedSizeList(item, n) => {
                DataType::FixedSizeList(Arc::new(plain_field(item)), *n)
            }
            DataType::Struct(fields) => {
                DataType::Struct(fields.iter().map(|f| plain_field(f)).collect())
            }
            other => other.clone(),
        }
    }
    fn plain_field(field: &Field) -> Field {
        field.clone().with_data_type(plain(field.data_type()))
    }
    Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| plain_field(f))
            .collect::<Fields>(),
        schema.metadata().clone(),
    )
}

/// Size of the pieces in which the file's bytes are handed out.
const PIECE_BYTES: usize = 8 << 20;

/// A Parquet file being encoded into memory, handed out as bytes as row groups complete.
pub struct ParallelParquetWriter {
    /// Opened when the first row group is cut: its values choose some encodings.
    file: Option<OpenParquet>,
    props: WriterProperties,
    encodings: EncodingChoices,
    schema: SchemaRef,
    row_group_rows: usize,
    filling: Vec<RecordBatch>,
    filling_rows: usize,
    encoding: InOrder<Vec<ArrowColumnChunk>>,
    started: usize,
}

/// The file writer and the row group encoders it hands out.
struct OpenParquet {
    file: SerializedFileWriter<Pieces>,
    factory: Arc<ArrowRowGroupWriterFactory>,
}

impl ParallelParquetWriter {
    /// A writer of `schema` rows with `props` (row group size, compression, ...), some of
    /// whose column encodings `encodings` chooses from the data.
    pub fn new(schema: SchemaRef, props: WriterProperties, encodings: EncodingChoices) -> Self {
        let row_group_rows = props
            .max_row_group_row_count()
            .unwrap_or(1024 * 1024)
            .max(1);
        Self {
            file: None,
            props,
            encodings,
            schema,
            row_group_rows,
            filling: Vec::new(),
            filling_rows: 0,
            encoding: InOrder::default(),
            started: 0,
        }
    }

    /// Adds rows; returns the file bytes completed so far (possibly none).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<Vec<Bytes>> {
        let mut rest = batch.clone();
        while rest.num_rows() > 0 {
            let room = self.row_group_rows - self.filling_rows;
            let head = rest.slice(0, room.min(rest.num_rows()));
            rest = rest.slice(head.num_rows(), rest.num_rows() - head.num_rows());
            self.filling_rows += head.num_rows();
            self.filling.push(head);
            if self.filling_rows == self.row_group_rows {
                self.start_row_group()?;
            }
        }
        while self.encoding.len() > IN_FLIGHT {
            self.append_oldest().await?;
        }
        Ok(self
            .file
            .as_mut()
            .map(OpenParquet::take)
            .unwrap_or_default())
    }

    /// Encodes what is left and writes the footer; returns the last bytes of the file.
    pub async fn finish(mut self) -> Result<Vec<Bytes>> {
        if self.filling_rows > 0 {
            self.start_row_group()?;
        }
        while !self.encoding.is_empty() {
            self.append_oldest().await?;
        }
        let mut file = match self.file.take() {
            Some(file) => file,
            None => self.open(&[])?,
        };
        file.file.finish()?;
        Ok(file.take())
    }

    fn open(&self, first_rows: &[RecordBatch]) -> Result<OpenParquet> {
        let mut props = self
            .encodings
            .choose(self.props.clone(), &self.schema, first_rows);
        add_encoded_arrow_schema_to_metadata(&without_views(&self.schema), &mut props);
        let options = ArrowWriterOptions::new()
            .with_properties(props)
            .with_skip_arrow_metadata(true);
        let (file, factory) = ArrowWriter::try_new_with_options(
            Pieces::default(),
            Arc::clone(&self.schema),
            options,
        )?
        .into_serialized_writer()?;
        Ok(OpenParquet {
            file,
            factory: Arc::new(factory),
        })
    }

    fn start_row_group(&mut self) -> Result<()> {
        let batches = std::mem::take(&mut self.filling);
        self.filling_rows = 0;
        if self.file.is_none() {
            self.file = Some(self.open(&batches)?);
        }
        let factory = Arc::clone(&self.file.as_ref().expect("opened above").factory);
        let (schema, index) = (Arc::clone(&self.schema), self.started);
        self.started += 1;
        self.encoding
            .start(move || encode(&factory, &schema, index, &batches));
        Ok(())
    }

    async fn append_oldest(&mut self) -> Result<()> {
        let Some(chunks) = self.encoding.next().await else {
            return Ok(());
        };
        let chunks = chunks?;
        let file = self.file.as_mut().expect("open while row groups encode");
        let mut row_group = file.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        Ok(())
    }
}

impl OpenParquet {
    /// The file's bytes written since the last call.
    fn take(&mut self) -> Vec<Bytes> {
        self.file.inner_mut().take()
    }
}

/// Encodes one row group's batches into column chunks, each column in one write.
fn encode(
    factory: &ArrowRowGroupWriterFactory,
    schema: &SchemaRef,
    index: usize,
    batches: &[RecordBatch],
) -> Result<Vec<ArrowColumnChunk>> {
    let mut writers = factory.create_column_writers(index)?;
    let joined;
    let writes = match batches {
        [_] => batches,
        _ if fits_one_batch(batches) => {
            joined = [concat_batches(schema, batches)?];
            &joined[..]
        }
        // Beyond what 32-bit offsets address, the batches go as they came.
        _ => batches,
    };
    for rows in writes {
        let mut next = writers.iter_mut();
        for (field, column) in schema.fields().iter().zip(rows.columns()) {
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

/// Whether `batches` join into one: a string or binary column with 32-bit offsets addresses
/// at most 2 GiB of values (a row group of 131,072 documents of 16 KB each).
fn fits_one_batch(batches: &[RecordBatch]) -> bool {
    let Some(first) = batches.first() else {
        return true;
    };
    (0..first.num_columns()).all(|c| {
        let value_bytes = |batch: &RecordBatch| -> usize {
            let column = batch.column(c);
            let span = |o: &[i32]| (o[o.len() - 1] - o[0]) as usize;
            match column.data_type() {
                DataType::Utf8 => span(column.as_string::<i32>().value_offsets()),
                DataType::Binary => span(column.as_binary::<i32>().value_offsets()),
                _ => 0,
            }
        };
        batches.iter().map(value_bytes).sum::<usize>() <= i32::MAX as usize
    })
}

/// The file's bytes in pieces of [`PIECE_BYTES`]: each is filled once and handed out whole.
///
/// One growing buffer per row group (100 MB and more) would be reallocated as it grows and be
/// fresh memory each time, paid for in page faults; pieces this size come from the heap, which
/// reuses those already written out.
#[derive(Default)]
struct Pieces {
    full: Vec<Bytes>,
    filling: Vec<u8>,
}

impl Pieces {
    /// Everything written since the last call, in order.
    fn take(&mut self) -> Vec<Bytes> {
        if !self.filling.is_empty() {
            self.full
                .push(Bytes::from(std::mem::take(&mut self.filling)));
        }
        std::mem::take(&mut self.full)
    }
}

impl Write for Pieces {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let written = buf.len();
        while !buf.is_empty() {
            if self.filling.capacity() == 0 {
                self.filling = Vec::with_capacity(PIECE_BYTES);
            }
            let room = self.filling.capacity() - self.filling.len();
            let (now, rest) = buf.split_at(room.min(buf.len()));
            self.filling.extend_from_slice(now);
            buf = rest;
            if self.filling.len() == self.filling.capacity() {
                self.full
                    .push(Bytes::from(std::mem::take(&mut self.filling)));
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array, ListArray, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    /// The file of `rows` written in batches of the given sizes, pages of at most 2 KB.
    async fn file_in_batches(rows: &RecordBatch, sizes: &[usize]) -> Vec<u8> {
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(10_000))
            .set_data_page_size_limit(2048)
            .set_write_batch_size(100)
            .build();
        let mut writer = ParallelParquetWriter::new(
            rows.schema(),
            props,
            EncodingChoices::from_options(&Vec::<String>::new()),
        );
        let mut bytes = Vec::new();
        let (mut start, mut next) = (0, sizes.iter().cycle());
        while start < rows.num_rows() {
            let n = (*next.next().unwrap()).min(rows.num_rows() - start);
            bytes.extend(writer.write(&rows.slice(start, n)).await.unwrap());
            start += n;
        }
        bytes.extend(writer.finish().await.unwrap());
        bytes.concat()
    }

    #[tokio::test]
    async fn bytes_do_not_depend_on_batch_sizes() {
        let n = 25_003;
        let ids = Int64Array::from_iter_values(0..n as i64);
        let texts = StringArray::from_iter_values((0..n).map(|i| "x".repeat(i * 7919 % 300)));
        let lists = ListArray::from_iter_primitive::<Int64Type, _, _>(
            (0..n).map(|i| Some((0..(i % 5) as i64).map(Some).collect::<Vec<_>>())),
        );
        let flat = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as _),
            ("text", Arc::new(texts) as _),
        ])
        .unwrap();
        let nested = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("list", lists.data_type().clone(), true),
            ])),
            vec![flat.column(0).clone(), Arc::new(lists)],
        )
        .unwrap();
        for rows in [flat, nested] {
            let whole = file_in_batches(&rows, &[n]).await;
            for sizes in [&[8192][..], &[1, 99, 1000, 7, 4321], &[333]] {
                assert!(
                    file_in_batches(&rows, sizes).await == whole,
                    "{:?} in batches of {sizes:?}",
                    rows.schema()
                );
            }
        }
    }

    #[tokio::test]
    async fn views_are_written_as_the_plain_strings_they_hold() {
        let texts = ["a", "a longer string than a view holds inline", ""];
        let plain = RecordBatch::try_from_iter([(
            "text",
            Arc::new(StringArray::from_iter_values(texts)) as _,
        )])
        .unwrap();
        let views = RecordBatch::try_from_iter([(
            "text",
            Arc::new(StringViewArray::from_iter_values(texts)) as _,
        )])
        .unwrap();
        let file = file_in_batches(&views, &[2]).await;
        assert!(file == file_in_batches(&plain, &[2]).await);
        let read = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        assert_eq!(read.schema().field(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn pieces_hold_the_bytes_in_order() {
        let data: Vec<u8> = (0..3 * PIECE_BYTES + 12_345)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut pieces = Pieces::default();
        let mut got = Vec::new();
        // Writes of awkward sizes, some across piece boundaries, taken out now and then.
        for (n, chunk) in data.chunks(PIECE_BYTES / 3 + 17).enumerate() {
            pieces.write_all(chunk).unwrap();
            if n % 4 == 3 {
                got.extend(pieces.take());
            }
        }
        got.extend(pieces.take());
        assert!(got.iter().all(|p| !p.is_empty() && p.len() <= PIECE_BYTES));
        assert_eq!(got.concat(), data);
        assert!(pieces.take().is_empty());
    }
}
