//! JSON lines: the `jsonl` format name, and the reader behind both `json` and `jsonl`.
//!
//! DataFusion reads newline-delimited JSON under the name `json` and the extension `.json`;
//! the reference DELT tools and most LM data use `.jsonl`. [`JsonLinesFormatFactory`] registers
//! the same format under both names, so `STORED AS JSONL`, `SELECT * FROM 'docs.jsonl'` and
//! `COPY ... TO 'out.jsonl'` work as they are.
//!
//! The format is DataFusion's JSON format (schema inference, options, writer) with one change:
//! scans whose columns are all strings, integers, floats, booleans or nulls are decoded by
//! [`FlatJsonDecoder`], which reads flat lines in one pass, instead of arrow-json's tape decoder.
//! Other scans, and JSON arrays (`newline_delimited false`), are read by DataFusion as before.
//!
//! Top-level string columns are inferred as `Utf8View`, as DataFusion reads Parquet strings
//! (both follow `datafusion.execution.parquet.schema_force_view_types`, on by default): a
//! string without escapes then stays in the mapped file instead of being copied, and a
//! sort or fold moves 16-byte views instead of texts.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{GetExt, Statistics, internal_datafusion_err};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::{JsonFormat, JsonFormatFactory};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileOpenFuture, FileOpener, FileScanConfig, FileSinkConfig, FileSource, JsonSource,
};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr_common::sort_expr::LexRequirement;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion_datasource::boundary_stream::AlignedBoundaryStream;
use datafusion_datasource::decoder::deserialize_stream;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore};

use super::decoder::{FlatJsonDecoder, FlatJsonDeserializer, SHARE_FROM};

/// The JSON lines format under the name `json` or `jsonl`.
#[derive(Debug)]
pub struct JsonLinesFormatFactory {
    json: JsonFormatFactory,
    ext: &'static str,
}

impl JsonLinesFormatFactory {
    /// The format under the name and extension `json`.
    pub fn json() -> Self {
        Self {
            json: JsonFormatFactory::new(),
            ext: "json",
        }
    }

    /// The format under the name and extension `jsonl`.
    pub fn jsonl() -> Self {
        Self {
            json: JsonFormatFactory::new(),
            ext: "jsonl",
        }
    }
}

impl FileFormatFactory for JsonLinesFormatFactory {
    fn create(
        &self,
        state: &dyn Session,
        format_options: &HashMap<String, String>,
    ) -> Result<Arc<dyn FileFormat>> {
        JsonLinesFormat::wrap(self.json.create(state, format_options)?)
    }

    fn default(&self) -> Arc<dyn FileFormat> {
        Arc::new(JsonLinesFormat {
            json: Arc::new(JsonFormat::default()),
        })
    }
}

impl GetExt for JsonLinesFormatFactory {
    fn get_ext(&self) -> String {
        self.ext.to_string()
    }
}

/// DataFusion's JSON format, scanned with [`FlatJsonDecoder`] where it can.
#[derive(Debug)]
pub struct JsonLinesFormat {
    json: Arc<dyn FileFormat>,
}

impl JsonLinesFormat {
    fn wrap(json: Arc<dyn FileFormat>) -> Result<Arc<dyn FileFormat>> {
        if !(json.as_ref() as &dyn Any).is::<JsonFormat>() {
            return Err(internal_datafusion_err!(
                "the JSON format factory made a {json:?}, not a JsonFormat"
            ));
        }
        Ok(Arc::new(Self { json }))
    }

    /// DataFusion's JSON format that this one reads with a faster decoder (a cluster ships
    /// scans with it: see `cluster::portable_scans`).
    pub fn datafusion_format(&self) -> Arc<dyn FileFormat> {
        Arc::clone(&self.json)
    }

    fn newline_delimited(&self) -> bool {
        (self.json.as_ref() as &dyn Any)
            .downcast_ref::<JsonFormat>()
            .is_some_and(JsonFormat::is_newline_delimited)
    }
}

#[async_trait]
impl FileFormat for JsonLinesFormat {
    fn get_ext(&self) -> String {
        self.json.get_ext()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> Result<String> {
        self.json.get_ext_with_compression(compression)
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        self.json.compression_type()
    }

    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        let schema = self.json.infer_schema(state, store, objects).await?;
        if !state
            .config_options()
            .execution
            .parquet
            .schema_force_view_types
        {
            return Ok(schema);
        }
        let fields = schema.fields().iter().map(|field| match field.data_type() {
            DataType::Utf8 => Arc::new(Field::clone(field).with_data_type(DataType::Utf8View)),
            _ => Arc::clone(field),
        });
        Ok(Arc::new(Schema::new_with_metadata(
            fields.collect::<Vec<_>>(),
            schema.metadata().clone(),
        )))
    }

    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Statistics> {
        self.json
            .infer_stats(state, store, table_schema, object)
            .await
    }

    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.json.create_physical_plan(state, conf).await
    }

    async fn create_writer_physical_plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        state: &dyn Session,
        conf: FileSinkConfig,
        order_requirements: Option<LexRequirement>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.json
            .create_writer_physical_plan(input, state, conf, order_requirements)
            .await
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        let json = self.json.file_source(table_schema);
        if self.newline_delimited() {
            JsonLinesSource::wrap(json, None)
        } else {
            json
        }
    }
}

/// DataFusion's [`JsonSource`] with files opened by [`JsonLinesOpener`] where the projected
/// columns allow.
#[derive(Clone)]
struct JsonLinesSource {
    json: JsonSource,
    batch_size: Option<usize>,
}

impl JsonLinesSource {
    /// Wraps `source` when it is a [`JsonSource`]; returns it as it is otherwise.
    fn wrap(source: Arc<dyn FileSource>, batch_size: Option<usize>) -> Arc<dyn FileSource> {
        match source.downcast_ref::<JsonSource>() {
            Some(json) => Arc::new(Self {
                json: json.clone(),
                batch_size,
            }),
            None => source,
        }
    }
}

impl FileSource for JsonLinesSource {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let file_schema = self.json.table_schema().file_schema();
        let projection = match self.json.projection() {
            Some(projection) => SplitProjection::new(file_schema, projection),
            None => SplitProjection::unprojected(self.json.table_schema()),
        };
        let schema = Arc::new(file_schema.project(&projection.file_indices)?);
        if !FlatJsonDecoder::reads(&schema) {
            return self
                .json
                .create_file_opener(object_store, base_config, partition);
        }
        let opener = Arc::new(JsonLinesOpener {
            store: object_store,
            schema,
            batch_size: self
                .batch_size
                .ok_or_else(|| internal_datafusion_err!("JSON scan opened without a batch size"))?,
            compression: base_config.file_compression_type,
        });
        ProjectionOpener::try_new(projection, opener, file_schema)
    }

    fn table_schema(&self) -> &TableSchema {
        self.json.table_schema()
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        Self::wrap(self.json.with_batch_size(batch_size), Some(batch_size))
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        self.json.projection()
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        self.json.metrics()
    }

    fn file_type(&self) -> &str {
        self.json.file_type()
    }

    fn try_pushdown_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn FileSource>>> {
        Ok(self
            .json
            .try_pushdown_projection(projection)?
            .map(|source| Self::wrap(source, self.batch_size)))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.json.apply_expressions(f)
    }
}

/// Opens a JSON lines file, or the lines of a byte range of one, as a stream of batches
/// decoded by [`FlatJsonDecoder`].
struct JsonLinesOpener {
    store: Arc<dyn ObjectStore>,
    /// The file columns read.
    schema: SchemaRef,
    batch_size: usize,
    compression: FileCompressionType,
}

impl FileOpener for JsonLinesOpener {
    /// A range covers the lines that start in it (DataFusion's rule for splitting line files).
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let store = Arc::clone(&self.store);
        let decoder = FlatJsonDecoder::try_new(Arc::clone(&self.schema), self.batch_size)
            .ok_or_else(|| internal_datafusion_err!("JSON lines opener for unread columns"))?;
        let compression = self.compression;
        Ok(Box::pin(async move {
            let size = file.object_meta.size;
            let (start, end) = match &file.range {
                Some(range) => (to_offset(range.start)?, to_offset(range.end)?),
                None => (0, size),
            };
            let bytes = AlignedBoundaryStream::new(
                store,
                file.object_meta.location.clone(),
                start,
                end,
                size,
                b'\n',
            )
            .await?
            .map_err(DataFusionError::from);
            let input = compression.convert_stream(bytes.boxed())?.fuse();
            let batches = deserialize_stream(input, FlatJsonDeserializer::new(decoder, SHARE_FROM));
            Ok(batches.map_err(DataFusionError::from).boxed())
        }))
    }
}

fn to_offset(offset: i64) -> Result<u64> {
    u64::try_from(offset).map_err(|_| internal_datafusion_err!("negative file offset {offset}"))
}
