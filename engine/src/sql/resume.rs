//! `delt sql --resume`: a COPY in units that survive the process.
//!
//! A COPY's input plan is, from the top down, the ordering or selection (a fold, a top-k, a
//! shuffle sort, a limit, ...) over a *row-wise* part: projections (the scorers) and filters
//! over the scan of one table. The row-wise part is the expensive one, and it splits: run once
//! per input file, it yields the same rows, in the same order, as run over all files.
//!
//! So a resumable COPY runs the row-wise part once per input file (a *unit*), in the order
//! DataFusion scans the files (by path), and writes each unit's rows (the table's columns and
//! the scores) to `<destination>.delt-job/units/<unit>.parquet` beside the destination. A unit
//! file is written beside its final name and renamed (locally) or uploaded in one multipart
//! upload (S3), so it is there complete or not at all: a crash loses at most the units in
//! flight. Then the rest of the plan (the ordering and the write) runs once over the unit
//! files read back in unit order, which feed it the same rows in the same order as the scan
//! would have: the output of an interrupted and resumed job is byte for byte that of an
//! uninterrupted one. The job directory is removed once the output is published.
//!
//! `<job>/job.json` records what the units were made from: the statement as run (parameters
//! bound), the `--param` values, and each input file's path, size, modification time and
//! ETag. A rerun resumes only when all of them are the same, and otherwise fails saying what
//! changed; `--restart` discards the job and starts over.
//!
//! A COPY whose input does not split that way (a join, a subquery, several tables, no table,
//! partition columns) runs as a whole, as without `--resume`, with a warning.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::catalog::TableProvider;
use datafusion::common::config::TableOptions;
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableScan};
use datafusion::parquet::file::metadata::ParquetMetaDataReader;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{DeltError, Result};
use crate::io::output::{CopyTarget, execute_in_order, remove_all};
use crate::progress::UnitProgress;
use crate::sql::params::Params;

/// What `delt sql` does with a job directory it finds beside a COPY's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeMode {
    /// Skip the units it holds, if it was made by the same statement from the same inputs.
    Resume,
    /// Discard it and start over.
    Restart,
}

/// What ends the name of a job directory, after the destination's name.
pub const JOB_SUFFIX: &str = ".delt-job";

/// The job's record of what its units are made from.
const MANIFEST: &str = "job.json";

/// The folder of unit files in a job directory.
const UNITS: &str = "units";

/// The name under which the final step reads the unit files.
const UNITS_TABLE: &str = "__delt_units";

/// Version of the manifest's layout.
const MANIFEST_VERSION: u64 = 1;

/// A resumable COPY whose units are all done: the plan that finishes it, and the job to
/// remove once its output is published.
pub struct Resumable {
    /// The COPY's input with its row-wise part replaced by a scan of the unit files.
    pub plan: LogicalPlan,
    /// The job directory.
    pub job: Job,
}

/// A job directory beside a COPY's destination.
#[derive(Clone)]
pub struct Job {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    url: ListingTableUrl,
    display: String,
}

impl Job {
    /// Removes the job directory: call it once the output is published.
    pub async fn finish(self) {
        remove_all(self.store.as_ref(), &self.dir, &self.url).await;
        *RUNNING.lock().expect("running job") = None;
    }
}

/// The job of the running resumable COPY and its number of units, for the message of an
/// interruption.
static RUNNING: Mutex<Option<(Job, usize)>> = Mutex::new(None);

/// What an interrupted run keeps, e.g. "7 of 20 units are kept in out.delt-job", from the
/// unit files in the job directory; `None` when no resumable COPY was running.
pub async fn interrupted_job() -> Option<String> {
    let (job, total) = RUNNING.lock().expect("running job").clone()?;
    let kept = match finished_units(&job, total).await {
        Ok(units) => units.len().to_string(),
        Err(_) => "the finished".into(),
    };
    Some(format!(
        "{kept} of {total} units are kept in {}",
        job.display
    ))
}

/// Runs the units of the COPY `statement` (its input plan `input`, writing to `destination`) that
/// its job directory does not hold yet, and returns the plan that finishes it; `None` when
/// the input does not split into units (a warning says so). `show` enables the progress line
/// and summaries.
pub async fn run_units(
    ctx: &SessionContext,
    mode: ResumeMode,
    statement: &str,
    params: &Params,
    input: &LogicalPlan,
    destination: &str,
    show: bool,
) -> Result<Option<Resumable>> {
    let plan = ctx.state().optimize(input)?;
    let Some(split) = Split::of(&plan) else {
        eprintln!(
            "warning: --resume: the COPY to {} does not read one table through projections and \
             filters only, so it runs as a whole and cannot resume",
            destination
        );
        return Ok(None);
    };
    let files = split.files(ctx).await?;
    let job = job_dir(ctx, destination)?;
    let manifest = manifest(statement, params, &files);
    let done = open_job(&job, mode, &manifest, files.len()).await?;
    let total = files.len();
    *RUNNING.lock().expect("running job") = Some((job.clone(), total));
    let todo: Vec<usize> = (0..total).filter(|unit| !done.contains(unit)).collect();
    if show {
        match done.len() {
            0 => eprintln!("job {}: {total} units", job.display),
            n => eprintln!(
                "job {}: resuming, {n} of {total} units done before, {} to run",
                job.display,
                todo.len()
            ),
        }
    }
    let started = Instant::now();
    let progress = UnitProgress::start(total, done.len(), show);
    let parallel = ctx.copied_config().target_partitions().max(1);
    let defaults = ctx.state().default_table_options();
    futures::stream::iter(todo.iter().map(|&unit| {
        let rows = progress.rows();
        let (split, file, job, defaults) = (&split, &files[unit], &job, &defaults);
        async move {
            run_unit(ctx, split, file, job, unit, defaults, rows)
                .await
                .map_err(|e| {
                    DeltError::BadInput(format!(
                        "unit {} of {total} (input file {}): {e}; the finished units are kept \
                         in {}: fix the cause and run the same command again to resume",
                        unit + 1,
                        file.location,
                        job.display
                    ))
                })
        }
    }))
    .buffer_unordered(parallel)
    .try_for_each(|_| {
        progress.unit_done();
        futures::future::ready(Ok(()))
    })
    .await?;
    let rows = progress.rows().load(Ordering::Relaxed);
    drop(progress);
    if show {
        eprintln!(
            "job {}: ran {} units ({rows} rows) in {:.1}s; ordering and writing the output",
            job.display,
            todo.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let plan = split.finishing_plan(ctx, &job, total)?;
    Ok(Some(Resumable { plan, job }))
}

/// Runs the row-wise part of `split` over `file` into the file of unit `unit` of `job`;
/// `rows` counts the rows written.
async fn run_unit(
    ctx: &SessionContext,
    split: &Split,
    file: &ObjectMeta,
    job: &Job,
    unit: usize,
    defaults: &TableOptions,
    rows: Arc<AtomicU64>,
) -> Result<u64> {
    let plan = split.unit_plan(file)?;
    let physical = ctx
        .execute_logical_plan(plan)
        .await?
        .create_physical_plan()
        .await?;
    let stream = execute_in_order(physical, ctx.task_ctx())?;
    let store = job.url.object_store();
    let url = format!("{}{}", store.as_str(), unit_path(job, unit));
    let writer = CopyTarget::new(&url, "parquet", HashMap::new(), defaults)?;
    writer.write(Arc::clone(&job.store), stream, rows).await
}

/// A COPY input split at its row-wise part.
struct Split {
    /// The optimised input plan.
    plan: LogicalPlan,
    /// The scan of the row-wise part.
    scan: TableScan,
    /// The table it scans (a [`ListingTable`]).
    provider: Arc<dyn TableProvider>,
}

impl Split {
    /// `None` unless every node above the row-wise part has one input, and the row-wise part
    /// reads one listing table without partition columns.
    fn of(plan: &LogicalPlan) -> Option<Self> {
        let mut scans = 0;
        plan.apply_with_subqueries(|node| {
            scans += usize::from(matches!(node, LogicalPlan::TableScan(_)));
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .ok()?;
        let mut node = plan;
        while !is_row_wise(node) {
            match node.inputs().as_slice() {
                [input] => node = input,
                _ => return None,
            }
        }
        let scan = row_wise_scan(node)?;
        let provider = source_as_provider(&scan.source).ok()?;
        let table = provider.downcast_ref::<ListingTable>()?;
        let splits = scans == 1
            && table.options().table_partition_cols.is_empty()
            && !node.schema().fields().is_empty();
        splits.then(|| Self {
            plan: plan.clone(),
            scan: scan.clone(),
            provider: Arc::clone(&provider),
        })
    }

    /// The table of the scan.
    fn table(&self) -> &ListingTable {
        self.provider
            .downcast_ref()
            .expect("a listing table, checked in Split::of")
    }

    /// The row-wise part.
    fn row_wise(&self) -> &LogicalPlan {
        let mut node = &self.plan;
        while !is_row_wise(node) {
            node = node.inputs()[0];
        }
        node
    }

    /// The table's files in the order the scan reads them (by path).
    async fn files(&self, ctx: &SessionContext) -> Result<Vec<ObjectMeta>> {
        let state = ctx.state();
        let listed = self.table().list_files_for_scan(&state, &[], None).await?;
        let mut files: Vec<ObjectMeta> = listed
            .file_groups
            .into_iter()
            .flat_map(|group| group.into_inner())
            .map(|file| file.object_meta)
            .collect();
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files)
    }

    /// The row-wise part over `file` alone.
    fn unit_plan(&self, file: &ObjectMeta) -> Result<LogicalPlan> {
        let store = self
            .table()
            .table_paths()
            .first()
            .map(ListingTableUrl::object_store)
            .ok_or_else(|| DeltError::Config("a table without a location".into()))?;
        let url = ListingTableUrl::parse(format!("{}{}", store.as_str(), file.location))?;
        let config = ListingTableConfig::new(url)
            .with_listing_options(self.table().options().clone())
            .with_schema(self.table().schema());
        let table = ListingTable::try_new(config)?;
        // Same schema, same projection, filters and limit: only the files differ.
        let mut scan = self.scan.clone();
        scan.source = provider_as_source(Arc::new(table));
        replace_scan(self.row_wise(), LogicalPlan::TableScan(scan))
    }

    /// The whole plan, with the row-wise part read back from the `units` unit files of `job`.
    fn finishing_plan(&self, ctx: &SessionContext, job: &Job, units: usize) -> Result<LogicalPlan> {
        let row_wise = self.row_wise();
        let schema: &DFSchema = row_wise.schema();
        let store = job.url.object_store();
        let paths = (0..units)
            .map(|unit| {
                ListingTableUrl::parse(format!("{}{}", store.as_str(), unit_path(job, unit)))
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let format =
            ParquetFormat::default().with_options(ctx.state().table_options().parquet.clone());
        let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(paths)
            .with_listing_options(options)
            .with_schema(Arc::new(schema.as_arrow().clone()));
        let table = ListingTable::try_new(config)?;
        let columns = schema.iter().map(|(qualifier, field)| {
            Expr::Column(Column::new(Some(UNITS_TABLE), field.name()))
                .alias_qualified(qualifier.cloned(), field.name())
        });
        let read_back =
            LogicalPlanBuilder::scan(UNITS_TABLE, provider_as_source(Arc::new(table)), None)?
                .project(columns)?
                .build()?;
        replace_row_wise(&self.plan, read_back)
    }
}

/// Whether `plan` is projections, filters and aliases over one table scan.
fn is_row_wise(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => is_row_wise(&p.input),
        LogicalPlan::Filter(f) => is_row_wise(&f.input),
        LogicalPlan::SubqueryAlias(a) => is_row_wise(&a.input),
        LogicalPlan::TableScan(_) => true,
        _ => false,
    }
}

/// The scan at the bottom of a row-wise plan.
fn row_wise_scan(plan: &LogicalPlan) -> Option<&TableScan> {
    match plan {
        LogicalPlan::TableScan(scan) => Some(scan),
        other => row_wise_scan(other.inputs().first()?),
    }
}

/// `plan` (row-wise) with its scan replaced by `scan`.
fn replace_scan(plan: &LogicalPlan, scan: LogicalPlan) -> Result<LogicalPlan> {
    match plan {
        LogicalPlan::TableScan(_) => Ok(scan),
        other => {
            let input = replace_scan(other.inputs()[0], scan)?;
            Ok(other.with_new_exprs(other.expressions(), vec![input])?)
        }
    }
}

/// `plan` with its row-wise part replaced by `part` (of the same schema).
fn replace_row_wise(plan: &LogicalPlan, part: LogicalPlan) -> Result<LogicalPlan> {
    if is_row_wise(plan) {
        return Ok(part);
    }
    let input = replace_row_wise(plan.inputs()[0], part)?;
    Ok(plan.with_new_exprs(plan.expressions(), vec![input])?)
}

/// The path of unit `unit`'s file in `job`. Zero-padded to 8 digits, so that name order is
/// unit order.
fn unit_path(job: &Job, unit: usize) -> Path {
    job.dir
        .clone()
        .join(UNITS)
        .join(format!("{unit:08}.parquet"))
}

/// The unit a file name in `<job>/units` is the file of.
fn unit_of(name: &str) -> Option<usize> {
    let digits = name.strip_suffix(".parquet")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The job directory beside `destination`: `<destination>.delt-job`.
fn job_dir(ctx: &SessionContext, destination: &str) -> Result<Job> {
    let destination = destination.trim_end_matches('/');
    let display = format!("{destination}{JOB_SUFFIX}");
    let url = ListingTableUrl::parse(format!("{display}/"))?;
    let store = ctx.runtime_env().object_store(url.object_store())?;
    Ok(Job {
        store,
        dir: url.prefix().clone(),
        url,
        display,
    })
}

/// The manifest of a job: see the module documentation.
fn manifest(statement: &str, params: &Params, files: &[ObjectMeta]) -> serde_json::Value {
    let inputs: Vec<serde_json::Value> = files
        .iter()
        .map(|file| {
            serde_json::json!({
                "path": file.location.to_string(),
                "size": file.size,
                "modified": file.last_modified.to_rfc3339(),
                "etag": file.e_tag,
            })
        })
        .collect();
    serde_json::json!({
        "delt_job": MANIFEST_VERSION,
        "statement": statement,
        "params": params.values(),
        "inputs": inputs,
    })
}

/// Opens the job directory for `manifest` (creating it, or discarding an old one when
/// `mode` says so) and returns the units it holds.
async fn open_job(
    job: &Job,
    mode: ResumeMode,
    manifest: &serde_json::Value,
    units: usize,
) -> Result<HashSet<usize>> {
    let manifest_path = job.dir.clone().join(MANIFEST);
    // On one line, with what to check on S3.
    let store_error = |what: &str, e: object_store::Error| {
        let e = DeltError::from(datafusion::error::DataFusionError::from(e));
        DeltError::Config(format!("{what} the job directory {}: {e}", job.display))
    };
    let found = match job.store.get(&manifest_path).await {
        Ok(found) => Some(
            found
                .bytes()
                .await
                .map_err(|e| store_error("cannot read", e))?,
        ),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(store_error("cannot read", e)),
    };
    let resume = match (&found, mode) {
        (Some(_), ResumeMode::Restart) => {
            remove_all(job.store.as_ref(), &job.dir, &job.url).await;
            false
        }
        (Some(bytes), ResumeMode::Resume) => {
            let old: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
                DeltError::Config(format!(
                    "{}/{MANIFEST} is not a job record ({e}): rerun with --restart to start over",
                    job.display
                ))
            })?;
            if let Some(change) = difference(&old, manifest) {
                return Err(DeltError::Config(format!(
                    "cannot resume the job in {}: {change} since it was started; rerun with the \
                     same SQL, parameters and inputs to resume it, or with --restart to discard \
                     its finished units and start over",
                    job.display
                )));
            }
            true
        }
        (None, _) => false,
    };
    if !resume {
        let text = serde_json::to_vec_pretty(manifest).expect("JSON");
        job.store
            .put(&manifest_path, PutPayload::from(text))
            .await
            .map_err(|e| store_error("cannot write", e))?;
        return Ok(HashSet::new());
    }
    finished_units(job, units)
        .await
        .map_err(|e| store_error("cannot list", e))
}

/// The units of `job` (of `units` in all) whose files are there and whole: a file whose
/// Parquet footer does not read (cut short by a power cut, say) is removed, so that its unit
/// runs again.
async fn finished_units(job: &Job, units: usize) -> object_store::Result<HashSet<usize>> {
    let listed: Vec<ObjectMeta> = job
        .store
        .list(Some(&job.dir.clone().join(UNITS)))
        .try_collect()
        .await?;
    let mut finished = HashSet::new();
    for meta in listed {
        let Some(unit) = meta.location.filename().and_then(unit_of) else {
            continue;
        };
        if unit < units && is_whole_parquet(job.store.as_ref(), &meta).await {
            finished.insert(unit);
        } else {
            eprintln!(
                "removed {}/{UNITS}/{}: not a whole unit file; its unit runs again",
                job.display,
                meta.location.filename().unwrap_or_default()
            );
            job.store.delete(&meta.location).await?;
        }
    }
    Ok(finished)
}

/// Whether the Parquet file `meta` ends with a footer that decodes.
async fn is_whole_parquet(store: &dyn ObjectStore, meta: &ObjectMeta) -> bool {
    let size = meta.size;
    if size < 12 {
        return false;
    }
    let Ok(tail) = store.get_range(&meta.location, size - 8..size).await else {
        return false;
    };
    let length = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if &tail[4..] != b"PAR1" || length + 12 > size {
        return false;
    }
    let footer = store
        .get_range(&meta.location, size - 8 - length..size - 8)
        .await;
    footer.is_ok_and(|footer| ParquetMetaDataReader::decode_metadata(&footer).is_ok())
}

/// What differs between the manifest `old` of a job and `new`, in words; `None` if nothing.
fn difference(old: &serde_json::Value, new: &serde_json::Value) -> Option<String> {
    if old["delt_job"] != new["delt_job"] {
        return Some("it was made by another version of delt".into());
    }
    if old["params"] != new["params"] {
        let as_map = |v: &serde_json::Value| -> BTreeMap<String, String> {
            v.as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        };
        let (before, now) = (as_map(&old["params"]), as_map(&new["params"]));
        let mut names: Vec<&String> = before.keys().chain(now.keys()).collect();
        names.sort();
        names.dedup();
        let changes: Vec<String> = names
            .into_iter()
            .filter(|name| before.get(*name) != now.get(*name))
            .map(|name| {
                let shown =
                    |v: Option<&String>| v.map_or("unset".to_string(), |v| format!("'{v}'"));
                format!(
                    "--param {name} was {} and is {}",
                    shown(before.get(name)),
                    shown(now.get(name))
                )
            })
            .collect();
        return Some(format!("parameters changed ({})", changes.join(", ")));
    }
    if old["statement"] != new["statement"] {
        return Some("the SQL of the COPY changed".into());
    }
    let inputs = |v: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        v["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|input| {
                (
                    input["path"].as_str().unwrap_or_default().to_string(),
                    input.clone(),
                )
            })
            .collect()
    };
    let (before, now) = (inputs(old), inputs(new));
    if let Some(gone) = before.keys().find(|path| !now.contains_key(*path)) {
        return Some(format!("input file {gone} is gone"));
    }
    if let Some(added) = now.keys().find(|path| !before.contains_key(*path)) {
        return Some(format!("input file {added} is new"));
    }
    before
        .iter()
        .find(|(path, input)| now.get(*path) != Some(*input))
        .map(|(path, _)| format!("input file {path} changed (its size, modification time or ETag)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        assert_eq!(unit_of("00000007.parquet"), Some(7));
        assert_eq!(unit_of("0000007.parquet"), None);
        assert_eq!(unit_of(".00000007.parquet.delt-partial-1-2@h_3"), None);
        assert_eq!(unit_of("00000007.jsonl"), None);
    }

    #[test]
    fn differences_are_named() {
        let base = serde_json::json!({
            "delt_job": 1, "statement": "COPY a", "params": {"k": "3"},
            "inputs": [{"path": "in/a.parquet", "size": 10, "modified": "t", "etag": null}],
        });
        assert_eq!(difference(&base, &base), None);
        let mut changed = base.clone();
        changed["params"]["k"] = "4".into();
        assert_eq!(
            difference(&base, &changed).unwrap(),
            "parameters changed (--param k was '3' and is '4')"
        );
        let mut changed = base.clone();
        changed["inputs"][0]["size"] = 11.into();
        assert!(
            difference(&base, &changed)
                .unwrap()
                .contains("in/a.parquet changed")
        );
        let mut changed = base.clone();
        changed["statement"] = "COPY b".into();
        assert_eq!(
            difference(&base, &changed).unwrap(),
            "the SQL of the COPY changed"
        );
    }
}
