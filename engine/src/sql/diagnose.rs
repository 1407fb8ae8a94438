//! Turning a failed scan into an error that names the bad file and line.
//!
//! DataFusion's readers report *what* is wrong ("Json error: expected value at line 1 column 1"
//! for a line of some batch of some file) but not *where* in the user's data. When a statement
//! fails with a JSON or Parquet decoding error, delt re-reads the inputs of that statement with
//! a simple checker and reports the first bad file and line: malformed JSON, a value of
//! the wrong type for its column, a file that is not Parquet. This only runs on failure, but
//! for one check that runs before a scan: an empty file read as Parquet is an error, not an
//! empty table.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::datasource::{TableProvider, source_as_provider};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::error::DeltError;

/// Files read by a statement: a location and the format they are read as.
#[derive(Debug, Clone)]
pub struct InputFiles {
    url: ListingTableUrl,
    format: String,
    /// The table's schema, where known: JSON values are checked against it.
    schema: Option<SchemaRef>,
}

impl InputFiles {
    /// Files at `location` read as `format` (`json`, `parquet`, `csv`, ...).
    pub fn new(location: &str, format: &str) -> Option<Self> {
        Some(Self {
            url: ListingTableUrl::parse(location).ok()?,
            format: format.to_ascii_lowercase(),
            schema: None,
        })
    }

    /// The paths quoted in `sql`, each as Parquet and as JSON lines: the inputs of a
    /// statement that failed before it had a plan.
    pub fn quoted_in(sql: &str) -> Vec<Self> {
        sql.split('\'')
            .skip(1)
            .step_by(2)
            .flat_map(|location| ["parquet", "jsonl"].map(|format| Self::new(location, format)))
            .flatten()
            .collect()
    }

    /// The file tables scanned by `plan`.
    pub fn of_plan(plan: &LogicalPlan) -> Vec<Self> {
        let mut inputs = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Ok(provider) = source_as_provider(&scan.source)
                && let Some(table) = provider.downcast_ref::<ListingTable>()
            {
                let format = table.options().format.get_ext();
                inputs.extend(table.table_paths().iter().map(|url| Self {
                    url: url.clone(),
                    format: format.clone(),
                    schema: Some(table.schema()),
                }));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        inputs
    }

    /// Every file at this location, in path order.
    pub async fn list(&self, ctx: &SessionContext) -> Result<Vec<ObjectMeta>, DataFusionError> {
        let store = ctx.runtime_env().object_store(self.url.object_store())?;
        let state = ctx.state();
        let mut files: Vec<ObjectMeta> = self
            .url
            .list_all_files(&state, store.as_ref(), "")
            .await?
            .try_collect()
            .await?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files)
    }

    fn display(&self, meta: &ObjectMeta) -> String {
        match self.url.scheme() {
            "file" => format!("/{}", meta.location),
            _ => format!("{}{}", self.url.object_store().as_str(), meta.location),
        }
    }
}

/// Replaces a decoding error by the first bad file and line of `inputs`, when one is found.
pub async fn explain(
    ctx: &SessionContext,
    inputs: &[InputFiles],
    error: DataFusionError,
) -> DeltError {
    let kind = match error.find_root() {
        DataFusionError::ArrowError(e, _) if matches!(e.as_ref(), ArrowError::JsonError(_)) => {
            Kind::Json
        }
        DataFusionError::ArrowError(e, _) if matches!(e.as_ref(), ArrowError::ParquetError(_)) => {
            Kind::Parquet
        }
        DataFusionError::ParquetError(_) => Kind::Parquet,
        _ => return error.into(),
    };
    first_problem(ctx, inputs, Some(kind))
        .await
        .unwrap_or_else(|| error.into())
}

/// The kinds of files the checker understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON lines.
    Json,
    /// Parquet.
    Parquet,
}

impl Kind {
    fn of(format: &str, path: &str) -> Option<Self> {
        let by_name = |name: &str| match name {
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            "parquet" => Some(Self::Parquet),
            _ => None,
        };
        by_name(format).or_else(|| by_name(path.rsplit('.').next().unwrap_or("")))
    }
}

/// The first file of `inputs` (of `kind`, or of any kind the checker knows) with a problem.
pub async fn first_problem(
    ctx: &SessionContext,
    inputs: &[InputFiles],
    kind: Option<Kind>,
) -> Option<DeltError> {
    for input in inputs {
        let Ok(files) = input.list(ctx).await else {
            continue;
        };
        let Ok(store) = ctx.runtime_env().object_store(input.url.object_store()) else {
            continue;
        };
        for meta in files {
            let file_kind = Kind::of(&input.format, meta.location.as_ref());
            if file_kind.is_none() || (kind.is_some() && file_kind != kind) {
                continue;
            }
            let problem = match file_kind {
                Some(Kind::Json) => {
                    first_bad_json_line(store.as_ref(), &meta, input.schema.as_ref()).await
                }
                _ => parquet_problem(Arc::clone(&store), &meta).await,
            };
            if let Some(problem) = problem {
                return Some(DeltError::BadInput(format!(
                    "{}: {problem}",
                    input.display(&meta)
                )));
            }
        }
    }
    None
}

/// An error for the first empty file among the Parquet `inputs`: DataFusion reads one as a
/// table without columns or rows.
pub async fn empty_parquet(ctx: &SessionContext, inputs: &[InputFiles]) -> Option<DeltError> {
    // Only Parquet tables are listed: a scan of JSON lines or CSV costs no second listing.
    let parquet = inputs
        .iter()
        .filter(|input| Kind::of(&input.format, input.url.as_str()) == Some(Kind::Parquet));
    for input in parquet {
        let Ok(files) = input.list(ctx).await else {
            continue;
        };
        for meta in files {
            let parquet = Kind::of(&input.format, meta.location.as_ref()) == Some(Kind::Parquet);
            if parquet && meta.size == 0 {
                return Some(DeltError::BadInput(format!(
                    "{}: empty file (0 bytes), not a Parquet file; remove it or write it again",
                    input.display(&meta)
                )));
            }
        }
    }
    None
}

/// `line N: ...` for the first line that is not a JSON object, or that holds a value of the
/// wrong type for its column of `schema`.
async fn first_bad_json_line(
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    schema: Option<&SchemaRef>,
) -> Option<String> {
    let bytes = store.get(&meta.location).await.ok()?.bytes().await.ok()?;
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let problem = match serde_json::from_slice::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Object(object)) => {
                let Some(problem) = schema.and_then(|schema| {
                    schema.fields().iter().find_map(|field| {
                        let value = object.get(field.name())?;
                        wrong_type(value, field.data_type()).map(|value| {
                            format!(
                                "field '{}' is {value} where the schema has {}",
                                field.name(),
                                field.data_type()
                            )
                        })
                    })
                }) else {
                    continue;
                };
                problem
            }
            Ok(_) => "expected a JSON object per line".to_string(),
            Err(e) => format!("malformed JSON ({e})"),
        };
        return Some(format!(
            "line {}: {problem}; fix or remove that line",
            index + 1
        ));
    }
    None
}

/// The value, as the error shows it, when it does not fit a column of `data_type`.
fn wrong_type(value: &serde_json::Value, data_type: &DataType) -> Option<String> {
    use serde_json::Value;
    let text = matches!(
        data_type,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    );
    let fits = match value {
        Value::Null => true,
        Value::String(_) => text,
        Value::Bool(_) => *data_type == DataType::Boolean,
        Value::Number(n) if data_type.is_integer() => n.is_i64() || n.is_u64(),
        Value::Number(_) => data_type.is_numeric(),
        // Nested values are for nested columns, which this check does not follow.
        Value::Array(_) | Value::Object(_) => !(text || data_type.is_primitive()),
    };
    if fits {
        return None;
    }
    let mut shown = value.to_string();
    if let Some((cut, _)) = shown.char_indices().nth(40) {
        shown.truncate(cut);
        shown.push_str("...");
    }
    Some(match value {
        Value::String(_) => format!("the quoted value {shown}"),
        _ => shown,
    })
}

/// What is wrong with a Parquet file, if anything.
async fn parquet_problem(store: Arc<dyn ObjectStore>, meta: &ObjectMeta) -> Option<String> {
    let bytes = store.get(&meta.location).await.ok()?.bytes().await.ok()?;
    // Check the footer first: the decoder is not robust against arbitrary bytes there.
    let n = bytes.len();
    if n < 12 || &bytes[n - 4..] != b"PAR1" || &bytes[..4] != b"PAR1" {
        return Some("not a Parquet file (no PAR1 magic at both ends)".into());
    }
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().ok()?) as usize;
    if footer > n - 12 {
        return Some(format!(
            "corrupt Parquet footer (metadata length {footer} exceeds the file)"
        ));
    }
    let reader = match ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()) {
        Ok(reader) => reader,
        Err(e) => return Some(format!("not a valid Parquet file ({e})")),
    };
    match reader.collect::<Result<Vec<_>, _>>() {
        Ok(_) => None,
        Err(e) => Some(format!("corrupt Parquet data ({e})")),
    }
}
