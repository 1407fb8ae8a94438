//! The plan nodes of a distributed fold: two jobs whose tasks run on every executor.
//!
//! 1. [`FoldRunsNode`] / [`FoldRunsExec`]: each task scans, scores and keys its input
//!    partition, sorts it by key (spilling under its executor's memory limit) and writes it as
//!    a sorted run ([`crate::cluster::sorted_runs`]) to the COPY's staging directory; it
//!    returns its row counts and the first key of every block of the run.
//! 2. [`FoldShardsNode`] / [`FoldShardsExec`]: each task writes one output shard. It merges
//!    the runs from a fence just before the shard's first rank, counts ranks from there
//!    exactly, and writes the rows of the shard's ranks ([`crate::cluster::fold_layout`]) to
//!    the staging directory, in the COPY's format.
//!
//! The client ([`crate::cluster::fold_copy`]) runs the first job, computes the shards and
//! their fences from what it returned, runs the second, and publishes the shards.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryArray, Decimal128Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::catalog::Session;
use datafusion::common::config::TableOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, DataFusionError, Result, internal_err};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext, async_try_stream};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{EquivalenceProperties, OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    ExecutionPlanProperties, Partitioning, PlanProperties, ReplaceChildrenOptions,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use serde_json::{Value, json};

use crate::cluster::fold_layout::Piece;
use crate::cluster::sorted_runs::{Fence, RankedMerge, RunFile, RunSummary, RunWriter};
use crate::io::output::CopyTarget;
use crate::stages::FoldMode;
use crate::stages::order_key::{OrderKeyExec, ascending_key_requirement, keyed_output};

/// The columns each task of the first job returns: its run's path, rows, scored rows and
/// the first key of every block (16 bytes each, little-endian).
fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("scored", DataType::UInt64, false),
        Field::new("block_keys", DataType::Binary, false),
    ]))
}

/// The columns each task of the second job returns: its shard's index and rows.
fn shards_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("shard", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
    ]))
}

fn df_schema(schema: SchemaRef) -> DFSchemaRef {
    Arc::new(DFSchema::try_from(schema).expect("unqualified fields"))
}

/// One properties value for a delt operator: `partitions` of rows, emitted once the input is
/// consumed.
fn final_properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// The object store and path of a directory URL, in a task.
fn store_and_path(url: &str, context: &TaskContext) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let url = ListingTableUrl::parse(url)?;
    let store = context.runtime_env().object_store(url.object_store())?;
    Ok((store, url.prefix().clone()))
}

/// What the first job sorts its rows by: the key made from its input's last column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum RunKey {
    /// A fold's order key: the score and the row's position ([`OrderKeyExec`]).
    Fold(FoldMode),
    /// A shuffle's key: the row's 16-byte seeded hash (`shuffle_order`), as a number
    /// ([`HashKeyExec`]).
    Shuffle,
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Fold(mode) => write!(f, "{mode}"),
            Self::Shuffle => f.write_str("shuffle"),
        }
    }
}

impl std::str::FromStr for RunKey {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "shuffle" => Ok(Self::Shuffle),
            mode => mode.parse().map(Self::Fold),
        }
    }
}

/// Logical node of the first job: `input` keyed by its last column, sorted and written as
/// runs under `dir` (a URL), one per input partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FoldRunsNode {
    input: LogicalPlan,
    key: RunKey,
    dir: String,
    schema: DFSchemaRef,
}

impl FoldRunsNode {
    /// Runs of `input` (its last column the score or the shuffle hash) under `dir`.
    pub fn new(input: LogicalPlan, key: RunKey, dir: String) -> Self {
        Self {
            input,
            key,
            dir,
            schema: df_schema(runs_schema()),
        }
    }

    /// What the rows are sorted by.
    pub fn key(&self) -> RunKey {
        self.key
    }

    /// Where the runs go (a URL).
    pub fn dir(&self) -> &str {
        &self.dir
    }
}

impl PartialOrd for FoldRunsNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (&self.input, self.key, &self.dir).partial_cmp(&(&other.input, other.key, &other.dir))
    }
}

impl UserDefinedLogicalNodeCore for FoldRunsNode {
    fn name(&self) -> &str {
        "FoldRuns"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FoldRuns: key={}, dir={}", self.key, self.dir)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        Ok(Self::new(inputs.swap_remove(0), self.key, self.dir.clone()))
    }
}

/// Logical node of the second job: the shards of a fold written from its runs, as `spec`
/// (JSON, see [`ShardsSpec`]) says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FoldShardsNode {
    spec: String,
    schema: DFSchemaRef,
}

impl FoldShardsNode {
    /// The node that writes the shards of `spec`.
    pub fn new(spec: String) -> Self {
        Self {
            spec,
            schema: df_schema(shards_schema()),
        }
    }

    /// The spec, as JSON text.
    pub fn spec(&self) -> &str {
        &self.spec
    }
}

impl PartialOrd for FoldShardsNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.spec.partial_cmp(&other.spec)
    }
}

impl UserDefinedLogicalNodeCore for FoldShardsNode {
    fn name(&self) -> &str {
        "FoldShards"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FoldShards")
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(self.clone())
    }
}

/// Plans [`FoldRunsNode`] and [`FoldShardsNode`]: the scheduler's extension planner.
#[derive(Debug, Default)]
pub struct DistributedFoldPlanner;

#[async_trait]
impl ExtensionPlanner for DistributedFoldPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if let Some(runs) = node.as_any().downcast_ref::<FoldRunsNode>() {
            let input = Arc::clone(&physical_inputs[0]);
            let last = input.schema().fields().len() - 1;
            let keyed: Arc<dyn ExecutionPlan> = match runs.key() {
                RunKey::Fold(mode) => {
                    Arc::new(OrderKeyExec::new(input, last, mode == FoldMode::Descending))
                }
                RunKey::Shuffle => Arc::new(HashKeyExec::new(input)),
            };
            return Ok(Some(Arc::new(FoldRunsExec::new(
                keyed,
                runs.dir().to_string(),
            ))));
        }
        if let Some(shards) = node.as_any().downcast_ref::<FoldShardsNode>() {
            return Ok(Some(Arc::new(FoldShardsExec::try_new(shards.spec())?)));
        }
        Ok(None)
    }
}

/// Replaces its input's last column, a shuffle's 16-byte row hash, by [`KEY_COLUMN`]: the
/// hash as a number, in the hashes' byte order (the order a sort on the hash gives).
#[derive(Debug)]
pub struct HashKeyExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl HashKeyExec {
    /// Keys the rows of `input` by its last column.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let last = input.schema().fields().len() - 1;
        let (schema, properties) = keyed_output(&input, last);
        Self {
            input,
            schema,
            properties,
        }
    }
}

impl DisplayAs for HashKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "HashKeyExec")
    }
}

impl ExecutionPlan for HashKeyExec {
    fn name(&self) -> &str {
        "HashKeyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    // Its key column is not its input's: an order on it says nothing about the input's.
    fn maintains_input_order(&self) -> Vec<bool> {
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
        Ok(Arc::new(Self::new(children.swap_remove(0))))
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
        let schema = Arc::clone(&self.schema);
        let stream = self.input.execute(partition, context)?.map(move |batch| {
            let batch = batch?;
            let mut columns = batch.columns().to_vec();
            let hashes = columns.pop().expect("a hash column");
            let hashes = hashes.as_fixed_size_binary();
            let keys = Decimal128Array::from_iter_values(hashes.iter().map(|hash| {
                let bytes: [u8; 16] = hash.and_then(|h| h.try_into().ok()).unwrap_or_default();
                (u128::from_be_bytes(bytes) ^ (1 << 127)) as i128
            }));
            columns.push(Arc::new(keys.with_precision_and_scale(38, 0)?));
            Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

/// Physical first job: writes each partition of its keyed input, sorted by key, as a run.
#[derive(Debug)]
pub struct FoldRunsExec {
    input: Arc<dyn ExecutionPlan>,
    dir: String,
    properties: Arc<PlanProperties>,
}

impl FoldRunsExec {
    /// Runs of `input` (an [`OrderKeyExec`] or a [`HashKeyExec`]: rows, key last) under `dir`
    /// (a URL).
    pub fn new(input: Arc<dyn ExecutionPlan>, dir: String) -> Self {
        let partitions = input.output_partitioning().partition_count();
        Self {
            input,
            dir,
            properties: final_properties(runs_schema(), partitions),
        }
    }

    /// Where the runs go (a URL).
    pub fn dir(&self) -> &str {
        &self.dir
    }
}

impl DisplayAs for FoldRunsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FoldRunsExec: dir={}", self.dir)
    }
}

impl ExecutionPlan for FoldRunsExec {
    fn name(&self) -> &str {
        "FoldRunsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::UnspecifiedDistribution]
    }

    // Positions in the keys record the input's partition layout.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![ascending_key_requirement(&self.input.schema())]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
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
            self.dir.clone(),
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
        let (store, dir) = store_and_path(&self.dir, &context)?;
        let input = self.input.execute(partition, context)?;
        let stream = futures::stream::once(write_run(store, dir, input));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            runs_schema(),
            stream,
        )))
    }
}

/// Writes the sorted `input` as a run in `dir` (no file when it has no rows); returns its
/// summary row.
async fn write_run(
    store: Arc<dyn ObjectStore>,
    dir: Path,
    mut input: SendableRecordBatchStream,
) -> Result<RecordBatch> {
    let mut run: Option<(Path, RunWriter)> = None;
    let outcome = async {
        while let Some(batch) = input.try_next().await? {
            if batch.num_rows() == 0 {
                continue;
            }
            let (_, writer) = match &mut run {
                Some(run) => run,
                None => {
                    // A name of its own: a task run again writes a new run, and only the
                    // runs of the attempts that succeeded are reported.
                    let salt = RandomState::new().hash_one((std::process::id(), SystemTime::now()));
                    let path = dir.clone().join(format!("run-{salt:016x}.arrow"));
                    let writer =
                        RunWriter::create(Arc::clone(&store), path.clone(), &batch.schema())?;
                    run.insert((path, writer))
                }
            };
            writer.write(batch).await?;
        }
        Ok::<_, DataFusionError>(())
    }
    .await;
    let (path, summary) = match (outcome, run) {
        (Ok(()), Some((path, writer))) => {
            let summary = writer.finish().await?;
            // The executor's log tells which runs it wrote.
            eprintln!("fold run {path}: {} rows sorted and written", summary.rows);
            (path.to_string(), summary)
        }
        (Ok(()), None) => (
            String::new(),
            RunSummary {
                rows: 0,
                scored: 0,
                block_keys: vec![],
            },
        ),
        (Err(e), Some((_, writer))) => {
            writer.abort().await;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    let keys: Vec<u8> = summary
        .block_keys
        .iter()
        .flat_map(|key| key.to_le_bytes())
        .collect();
    Ok(RecordBatch::try_new(
        runs_schema(),
        vec![
            Arc::new(StringArray::from(vec![path])),
            Arc::new(UInt64Array::from(vec![summary.rows])),
            Arc::new(UInt64Array::from(vec![summary.scored])),
            Arc::new(BinaryArray::from(vec![keys.as_slice()])),
        ],
    )?)
}

/// One run as the first job reported it.
#[derive(Debug, Clone)]
pub struct ReportedRun {
    /// Its path in the destination's store.
    pub path: String,
    /// Its summary.
    pub summary: RunSummary,
}

/// The runs in the batches the first job returned, rowless tasks left out.
pub fn reported_runs(batches: &[RecordBatch]) -> Vec<ReportedRun> {
    let mut runs = Vec::new();
    for batch in batches {
        let paths = batch.column(0).as_string::<i32>();
        let rows = batch.column(1).as_primitive::<UInt64Type>();
        let scored = batch.column(2).as_primitive::<UInt64Type>();
        let keys = batch.column(3).as_binary::<i32>();
        for i in 0..batch.num_rows() {
            if rows.value(i) == 0 {
                continue;
            }
            let block_keys = keys
                .value(i)
                .chunks_exact(16)
                .map(|bytes| i128::from_le_bytes(bytes.try_into().expect("16 bytes")))
                .collect();
            runs.push(ReportedRun {
                path: paths.value(i).to_string(),
                summary: RunSummary {
                    rows: rows.value(i),
                    scored: scored.value(i),
                    block_keys,
                },
            });
        }
    }
    // Sorted, so that the plans that name the runs do not depend on which task ended first.
    runs.sort_by(|a, b| a.path.cmp(&b.path));
    runs
}

/// What the tasks of the second job do: where the runs are, the COPY they write, and each
/// shard's pieces with their fences.
#[derive(Debug, Clone)]
pub struct ShardsSpec {
    /// The staging directory (a URL) the shards go to.
    pub staging: String,
    /// The COPY's destination, file type and format options.
    pub destination: String,
    /// File type of the COPY (`parquet`, `json`, `csv`).
    pub file_type: String,
    /// The COPY's `format.*` options.
    pub options: HashMap<String, String>,
    /// The runs' paths in the staging directory's store.
    pub runs: Vec<String>,
    /// Each shard: its index among the output's shards and its pieces, in output order
    /// (empty in a [`FoldShardsExec`], whose input holds them).
    pub shards: Vec<(u64, Vec<(Piece, Fence)>)>,
}

impl ShardsSpec {
    /// As JSON text.
    pub fn to_json(&self) -> String {
        let shards: Vec<Value> = self
            .shards
            .iter()
            .map(|(index, pieces)| json!({"index": index, "pieces": pieces_json(pieces)}))
            .collect();
        json!({
            "staging": self.staging,
            "destination": self.destination,
            "file_type": self.file_type,
            "options": self.options,
            "runs": self.runs,
            "shards": shards,
        })
        .to_string()
    }

    /// Reads the JSON text of [`to_json`](Self::to_json).
    pub fn from_json(text: &str) -> Result<Self> {
        let malformed = || {
            DataFusionError::Internal(
                "a FoldShards plan node is malformed: are all processes of the cluster the same \
                 delt version?"
                    .into(),
            )
        };
        let value: Value = serde_json::from_str(text).map_err(|_| malformed())?;
        let text = |v: &Value| v.as_str().map(str::to_string).ok_or_else(malformed);
        let shard = |v: &Value| Some((v["index"].as_u64()?, pieces_from(&v["pieces"])?));
        Ok(Self {
            staging: text(&value["staging"])?,
            destination: text(&value["destination"])?,
            file_type: text(&value["file_type"])?,
            options: value["options"]
                .as_object()
                .ok_or_else(malformed)?
                .iter()
                .map(|(k, v)| Ok((k.clone(), text(v)?)))
                .collect::<Result<_>>()?,
            runs: value["runs"]
                .as_array()
                .ok_or_else(malformed)?
                .iter()
                .map(text)
                .collect::<Result<_>>()?,
            shards: value["shards"]
                .as_array()
                .ok_or_else(malformed)?
                .iter()
                .map(shard)
                .collect::<Option<_>>()
                .ok_or_else(malformed)?,
        })
    }
}

/// A shard's pieces and fences as JSON.
fn pieces_json(pieces: &[(Piece, Fence)]) -> Value {
    let fence = |fence: &Fence| match fence {
        Fence::Start => json!("start"),
        Fence::End => json!("end"),
        Fence::Key(key) => json!(key.to_string()),
    };
    pieces
        .iter()
        .map(|(p, f)| json!([p.first, p.count, p.stride, p.backwards, fence(f)]))
        .collect()
}

/// The pieces and fences of [`pieces_json`].
fn pieces_from(value: &Value) -> Option<Vec<(Piece, Fence)>> {
    let fence = |v: &Value| match v.as_str()? {
        "start" => Some(Fence::Start),
        "end" => Some(Fence::End),
        key => key.parse().ok().map(Fence::Key),
    };
    let piece = |v: &Value| {
        Some((
            Piece {
                first: v.get(0)?.as_u64()?,
                count: v.get(1)?.as_u64()?,
                stride: v.get(2)?.as_u64()?,
                backwards: v.get(3)?.as_bool()?,
            },
            fence(v.get(4)?)?,
        ))
    };
    value.as_array()?.iter().map(piece).collect()
}

/// Physical second job: writes the shards whose indices its input's partitions hold.
///
/// The input is an in-memory scan of one partition per shard, each holding that shard's
/// index and pieces (JSON): a scheduler gives each task its slice of a scan's partitions, so
/// each task writes its own shards and receives only their pieces (a leaf of delt's own would
/// run whole in every task). The spec it holds itself is the part common to all shards.
#[derive(Debug)]
pub struct FoldShardsExec {
    input: Arc<dyn ExecutionPlan>,
    spec: Arc<ShardsSpec>,
    json: String,
    properties: Arc<PlanProperties>,
}

impl FoldShardsExec {
    /// The executor of `json` (a [`ShardsSpec`]) over an in-memory scan of its shards.
    pub fn try_new(json: &str) -> Result<Self> {
        let mut spec = ShardsSpec::from_json(json)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("shard", DataType::UInt64, false),
            Field::new("pieces", DataType::Utf8, false),
        ]));
        let partitions = std::mem::take(&mut spec.shards)
            .into_iter()
            .map(|(shard, pieces)| {
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(UInt64Array::from(vec![shard])),
                    Arc::new(StringArray::from(vec![pieces_json(&pieces).to_string()])),
                ];
                Ok(vec![RecordBatch::try_new(Arc::clone(&schema), columns)?])
            })
            .collect::<Result<Vec<_>>>()?;
        let input = MemorySourceConfig::try_new_exec(&partitions, schema, None)?;
        Self::with_input(input, &spec.to_json())
    }

    /// The executor of `json` (a [`ShardsSpec`] without shards) over `input`, the scan of
    /// shards it was planned with.
    pub fn with_input(input: Arc<dyn ExecutionPlan>, json: &str) -> Result<Self> {
        let partitions = input.output_partitioning().partition_count();
        Ok(Self {
            input,
            spec: Arc::new(ShardsSpec::from_json(json)?),
            json: json.to_string(),
            properties: final_properties(shards_schema(), partitions),
        })
    }

    /// The spec, as JSON text.
    pub fn spec_json(&self) -> &str {
        &self.json
    }
}

impl DisplayAs for FoldShardsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FoldShardsExec: shards={}, runs={}",
            self.properties.output_partitioning().partition_count(),
            self.spec.runs.len()
        )
    }
}

impl ExecutionPlan for FoldShardsExec {
    fn name(&self) -> &str {
        "FoldShardsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

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
        Ok(Arc::new(Self::with_input(
            children.swap_remove(0),
            &self.json,
        )?))
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
        let spec = Arc::clone(&self.spec);
        let shards = self.input.execute(partition, Arc::clone(&context))?;
        let stream = shards.and_then(move |batch| {
            let (spec, context) = (Arc::clone(&spec), Arc::clone(&context));
            async move {
                let mut counts = Vec::new();
                let indices = batch.column(0).as_primitive::<UInt64Type>().clone();
                let pieces = batch.column(1).as_string::<i32>();
                for (index, pieces) in indices.values().iter().copied().zip(pieces.iter()) {
                    let Some(pieces) = pieces
                        .and_then(|text| serde_json::from_str(text).ok())
                        .and_then(|value| pieces_from(&value))
                    else {
                        return internal_err!("FoldShardsExec: shard {index} is malformed");
                    };
                    counts.push(write_shard(&spec, index, pieces, Arc::clone(&context)).await?);
                }
                Ok(RecordBatch::try_new(
                    shards_schema(),
                    vec![Arc::new(indices), Arc::new(UInt64Array::from(counts))],
                )?)
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            shards_schema(),
            stream,
        )))
    }
}

/// Writes shard `index`, made of `pieces`, to the staging directory; returns its rows.
async fn write_shard(
    spec: &ShardsSpec,
    index: u64,
    pieces: Vec<(Piece, Fence)>,
    context: Arc<TaskContext>,
) -> Result<u64> {
    let defaults = TableOptions::default_from_session_config(context.session_config().options());
    let target = CopyTarget::new(
        &spec.destination,
        &spec.file_type,
        spec.options.clone(),
        &defaults,
    )
    .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let (store, staging) = store_and_path(&spec.staging, &context)?;
    let runs: Vec<Arc<RunFile>> = futures::future::try_join_all(
        spec.runs
            .iter()
            .map(|path| RunFile::open(Arc::clone(&store), Path::from(path.as_str()))),
    )
    .await?
    .into_iter()
    .map(Arc::new)
    .collect();
    let Some(first) = runs.first() else {
        return internal_err!("a distributed fold has no runs to write shard {index} from");
    };
    let keyed = Arc::clone(first.schema());
    let columns: Vec<usize> = (0..keyed.fields().len() - 1).collect();
    let schema = Arc::new(keyed.project(&columns)?);
    let batch_size = context.session_config().batch_size();
    let rows = async_try_stream(move |mut tx| async move {
        for (piece, fence) in pieces {
            let mut merge = RankedMerge::start(&runs, fence, !piece.backwards).await?;
            let mut picked = Vec::with_capacity(batch_size.min(piece.count as usize));
            let mut left = piece.count;
            let (low, high) = (piece.first, piece.last());
            while left > 0 {
                let Some((rank, slot, row)) = merge.next().await? else {
                    return internal_err!("the runs ended before rank {low} of shard {index}");
                };
                let overshot = if piece.backwards {
                    rank < high
                } else {
                    rank > low
                };
                if left == piece.count && picked.is_empty() && overshot {
                    return internal_err!("shard {index}: its fence is past its rank {low}");
                }
                let wanted = if piece.backwards {
                    rank <= high && (high - rank) % piece.stride == 0
                } else {
                    rank >= low && (rank - low) % piece.stride == 0
                };
                if !wanted {
                    continue;
                }
                picked.push((slot, row));
                left -= 1;
                if picked.len() == batch_size || left == 0 {
                    let batch = merge.gather(&picked)?.project(&columns)?;
                    picked.clear();
                    tx.emit(batch).await;
                }
            }
        }
        Ok(())
    });
    let stream: SendableRecordBatchStream =
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), rows));
    let path = target.shard_path(&staging, index as usize);
    let rows = target
        .write_shard(store, path.clone(), stream)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    eprintln!("fold shard {index}: {rows} rows written to {path}");
    Ok(rows)
}
