//! Writing query results in query order, atomically: `COPY ... TO`.
//!
//! DataFusion's own COPY deals batches round-robin to several files when writing a directory,
//! which loses the order, and the order is the product. delt writes the stream itself:
//!
//! * a destination with a file extension (`out.parquet`) becomes one file, uploaded so that
//!   it appears only when complete (a multipart upload on S3, a temporary file renamed into
//!   place locally); a failure leaves whatever was there before;
//! * any other destination (`out/`, `s3://b/curated`) becomes ordered shards
//!   `part-00000.<ext>`, `part-00001.<ext>`, ... of `rows_per_shard` rows each, whose
//!   concatenation in name order is the query order. They are written to a staging
//!   directory beside the destination and moved in only after the last one is complete;
//!   older `part-*` files of the same extension in the destination are then removed.
//!
//! A run that is killed (SIGKILL, a power cut) cannot clean up: its staging directory or
//! temporary file stays beside the destination. Their names record the process that writes
//! them (an [`Owner`]): `.delt-staging-<pid>-<start>@<host>_<nanos>-<name>` for a staging
//! directory, `.<name>.delt-partial-<pid>-<start>@<host>_<n>` for a temporary file (see
//! [`crate::io::direct_file`]). A COPY first removes those beside its destination (in the
//! same directory, whatever destination they were for) whose process is gone: it ran on this
//! host and no process with its pid and start time runs now. It prints one line on stderr for
//! each. Leftovers of running processes, of other hosts (say, on a shared file system) and of
//! delt versions that did not record an owner stay. Processes in another PID namespace that
//! share the directory and the host name look gone.
//!
//! On S3, shards are staged under a `.delt-staging-*` prefix beside the destination, named the
//! same way, and a COPY to a directory on S3 removes the stale prefixes beside it. A single
//! file on S3 is one multipart upload, invisible until it completes; object_store cannot list
//! unfinished uploads, so delt does not remove one that a killed run left (nor the one of a
//! shard that was being uploaded): a bucket lifecycle rule (`AbortIncompleteMultipartUpload`)
//! removes them, as with any other S3 client.
//!
//! Formats: Parquet, JSON lines (`STORED AS JSON`, one object per line, as the reference DELT
//! trainer reads) and CSV.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::{ConfigFileType, TableOptions};
use datafusion::common::file_options::csv_writer::CsvWriterOptions;
use datafusion::common::parsers::CompressionTypeVariant;
use datafusion::common::runtime::SpawnedTask;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext, async_try_stream};
use datafusion::parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::error::{DeltError, Result};
use crate::io::direct_file::{DirectFile, partial_owner};
use crate::io::encodings::EncodingChoices;
use crate::io::in_order::InOrder;
use crate::io::jsonl::encoder::write_json_lines;
use crate::io::owner::Owner;
use crate::io::parquet_writer::ParallelParquetWriter;

/// Rows per shard when writing a directory and `rows_per_shard` is not given.
pub const DEFAULT_ROWS_PER_SHARD: usize = 1_000_000;

/// The COPY option that sets the shard size (`OPTIONS (rows_per_shard 100000)`).
pub const ROWS_PER_SHARD_OPTION: &str = "format.rows_per_shard";

/// Runs every partition of `plan` at once but yields partition 0's rows, then partition 1's,
/// and so on: the plan's order, whatever its partitioning.
pub fn execute_in_order(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> DfResult<SendableRecordBatchStream> {
    let partitions = plan.output_partitioning().partition_count();
    if partitions == 1 {
        return plan.execute(0, context);
    }
    let mut receivers = Vec::with_capacity(partitions);
    let mut tasks = Vec::with_capacity(partitions);
    for p in 0..partitions {
        // A small channel per partition: later partitions run ahead by a few batches only.
        let (sender, receiver) = mpsc::channel(4);
        let mut stream = plan.execute(p, Arc::clone(&context))?;
        tasks.push(SpawnedTask::spawn(async move {
            while let Some(batch) = stream.next().await {
                let failed = batch.is_err();
                if sender.send(batch).await.is_err() || failed {
                    break;
                }
            }
        }));
        receivers.push(receiver);
    }
    let stream = async_try_stream(move |mut tx| async move {
        let _tasks = tasks;
        for mut receiver in receivers {
            while let Some(batch) = receiver.recv().await {
                tx.emit(batch?).await;
            }
        }
        Ok::<_, DataFusionError>(())
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        plan.schema(),
        stream,
    )))
}

/// One `COPY ... TO` destination and how to write it.
#[derive(Debug)]
pub struct CopyTarget {
    url: ListingTableUrl,
    display: String,
    format: Format,
    single_file: bool,
    rows_per_shard: usize,
    /// The file type and options as given, for a target made again elsewhere.
    file_type: String,
    options: HashMap<String, String>,
}

#[derive(Debug, Clone)]
enum Format {
    Parquet(Box<WriterProperties>, EncodingChoices),
    Json,
    Csv(CsvWriterOptions),
}

impl Format {
    fn extension(&self) -> &'static str {
        match self {
            Self::Parquet(..) => "parquet",
            Self::Json => "jsonl",
            Self::Csv(_) => "csv",
        }
    }
}

impl CopyTarget {
    /// Interprets a COPY's destination, file type (`parquet`, `json`, `csv`) and remaining
    /// options (`format.*` keys, as DataFusion's SQL planner stores them).
    pub fn new(
        destination: &str,
        file_type: &str,
        mut options: HashMap<String, String>,
        defaults: &TableOptions,
    ) -> Result<Self> {
        let given = options.clone();
        let rows_per_shard = match options.remove(ROWS_PER_SHARD_OPTION) {
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                DeltError::Config(format!(
                    "COPY option rows_per_shard must be a positive integer, got '{v}'"
                ))
            })?,
            None => DEFAULT_ROWS_PER_SHARD,
        };
        let mut table_options = defaults.clone();
        let format = match file_type.to_ascii_lowercase().as_str() {
            "parquet" => {
                table_options.set_config_format(ConfigFileType::PARQUET);
                table_options.alter_with_string_hash_map(&options)?;
                // ArrowWriter embeds the Arrow schema itself; DataFusion's check for it would
                // need the schema here.
                table_options.parquet.global.skip_arrow_metadata = true;
                Format::Parquet(
                    Box::new(WriterPropertiesBuilder::try_from(&table_options.parquet)?.build()),
                    EncodingChoices::from_options(options.keys()),
                )
            }
            "json" | "jsonl" => {
                table_options.set_config_format(ConfigFileType::JSON);
                table_options.alter_with_string_hash_map(&options)?;
                check_uncompressed(table_options.json.compression)?;
                Format::Json
            }
            "csv" => {
                table_options.set_config_format(ConfigFileType::CSV);
                table_options.alter_with_string_hash_map(&options)?;
                check_uncompressed(table_options.csv.compression)?;
                Format::Csv(CsvWriterOptions::try_from(&table_options.csv)?)
            }
            other => {
                return Err(DeltError::Config(format!(
                    "COPY to '{other}' files is not supported: use STORED AS PARQUET, JSONL (or JSON) or CSV"
                )));
            }
        };
        let single_file =
            !destination.ends_with('/') && std::path::Path::new(destination).extension().is_some();
        Ok(Self {
            url: ListingTableUrl::parse(destination)?,
            display: destination.to_string(),
            format,
            single_file,
            rows_per_shard,
            file_type: file_type.to_string(),
            options: given,
        })
    }

    /// The file type as given (`parquet`, `json`, `csv`).
    pub fn file_type(&self) -> &str {
        &self.file_type
    }

    /// The options as given, for [`CopyTarget::new`] in another process.
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The destination as a URL (a local path made absolute).
    pub fn location(&self) -> String {
        self.url.as_str().to_string()
    }

    /// Whether the destination is one file rather than a directory of shards.
    pub fn is_single_file(&self) -> bool {
        self.single_file
    }

    /// Rows per shard of a directory destination.
    pub fn rows_per_shard(&self) -> usize {
        self.rows_per_shard
    }

    /// Where shard `index` is staged in `staging`.
    pub fn shard_path(&self, staging: &Path, index: usize) -> Path {
        staging
            .clone()
            .join(format!("{index:010}.{}", self.format.extension()))
    }

    /// The URL of `path` in the destination's store, for processes that resolve it
    /// themselves (the executors of a cluster).
    pub fn url_of(&self, path: &Path) -> String {
        format!("{}{path}", self.url.object_store().as_str())
    }

    /// Writes a directory destination whose shards `stage` writes into the staging directory
    /// it is given, returning the staged shards and their rows in order; publishes them as
    /// [`write`](Self::write) does, atomically.
    pub async fn write_staged<F, Fut>(&self, store: Arc<dyn ObjectStore>, stage: F) -> Result<u64>
    where
        F: FnOnce(Path) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(Path, u64)>>>,
    {
        let result = async {
            remove_leftovers(store.as_ref(), &self.url, true).await?;
            let destination = self.url.prefix().clone();
            let staging = StagingDir::create(Arc::clone(&store), &destination, &self.url);
            let outcome = match stage(staging.path().clone()).await {
                Ok(shards) => {
                    let extension = self.format.extension();
                    let files: Vec<_> = shards
                        .iter()
                        .map(|(path, _)| vec![(path.clone(), extension)])
                        .collect();
                    publish_shards(store.as_ref(), &destination, &files, &[extension])
                        .await
                        .map(|()| shards.iter().map(|(_, rows)| rows).sum())
                }
                Err(e) => Err(e),
            };
            staging.remove().await;
            outcome
        }
        .await;
        result.map_err(|source| DeltError::Output {
            destination: self.display.clone(),
            source: Box::new(source),
        })
    }

    /// Writes every row of `stream` as one shard file at `path` (in the destination's store);
    /// returns its rows. A failure leaves no file there.
    pub async fn write_shard(
        &self,
        store: Arc<dyn ObjectStore>,
        path: Path,
        stream: SendableRecordBatchStream,
    ) -> Result<u64> {
        self.write_one(store, path, stream, &AtomicU64::new(0))
            .await
    }

    /// Where the output goes, as the user wrote it.
    pub fn destination(&self) -> &str {
        &self.display
    }

    /// The URL of the object store that holds the destination.
    pub fn store_url(&self) -> datafusion::execution::object_store::ObjectStoreUrl {
        self.url.object_store()
    }

    /// Writes `stream` to the destination in order; returns the number of rows written.
    /// `written` counts rows as they go out (for progress display).
    pub async fn write(
        &self,
        store: Arc<dyn ObjectStore>,
        stream: SendableRecordBatchStream,
        written: Arc<AtomicU64>,
    ) -> Result<u64> {
        if !self.single_file {
            let staged = Arc::clone(&store);
            return self
                .write_staged(store, |staging| async move {
                    self.stage_shards(staged, &staging, stream, &written).await
                })
                .await;
        }
        let result = match remove_leftovers(store.as_ref(), &self.url, false).await {
            Err(e) => Err(e),
            Ok(()) => {
                let path = self.url.prefix().clone();
                self.write_one(store, path, stream, &written).await
            }
        };
        result.map_err(|source| DeltError::Output {
            destination: self.display.clone(),
            source: Box::new(source),
        })
    }

    /// Writes every row of `stream` as one file at `path`, counting rows in `written`.
    async fn write_one(
        &self,
        store: Arc<dyn ObjectStore>,
        path: Path,
        mut stream: SendableRecordBatchStream,
        written: &AtomicU64,
    ) -> std::result::Result<u64, DeltError> {
        let mut file = OpenFile::create(
            self.upload(store, &path)?,
            path,
            &self.format,
            stream.schema(),
        );
        let outcome = async {
            while let Some(batch) = stream.try_next().await? {
                file.write(&batch).await?;
                written.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            }
            Ok::<_, DeltError>(())
        }
        .await;
        match outcome {
            Ok(()) => file.finish().await,
            Err(e) => {
                file.abort().await;
                Err(e)
            }
        }
    }

    /// Writes the shards under `staging`; returns their paths and row counts in order.
    async fn stage_shards(
        &self,
        store: Arc<dyn ObjectStore>,
        staging: &Path,
        mut stream: SendableRecordBatchStream,
        written: &AtomicU64,
    ) -> std::result::Result<Vec<(Path, u64)>, DeltError> {
        let schema = stream.schema();
        let mut shards: Vec<(Path, u64)> = Vec::new();
        let mut open: Option<OpenFile> = None;
        let new_shard = |index: usize| {
            let path = self.shard_path(staging, index);
            Ok::<_, DeltError>(OpenFile::create(
                self.upload(Arc::clone(&store), &path)?,
                path,
                &self.format,
                Arc::clone(&schema),
            ))
        };
        let outcome = async {
            while let Some(mut batch) = stream.try_next().await? {
                while batch.num_rows() > 0 {
                    let file = match &mut open {
                        Some(file) => file,
                        None => open.insert(new_shard(shards.len())?),
                    };
                    let room = self.rows_per_shard - file.rows as usize;
                    let head = batch.slice(0, room.min(batch.num_rows()));
                    batch = batch.slice(head.num_rows(), batch.num_rows() - head.num_rows());
                    file.write(&head).await?;
                    written.fetch_add(head.num_rows() as u64, Ordering::Relaxed);
                    if file.rows as usize == self.rows_per_shard {
                        let file = open.take().expect("a shard is open");
                        let path = file.path.clone();
                        shards.push((path, file.finish().await?));
                    }
                }
            }
            // An empty result still gets one (empty) shard, so the schema survives.
            if open.is_none() && shards.is_empty() {
                open = Some(new_shard(0)?);
            }
            if let Some(file) = open.take() {
                let path = file.path.clone();
                shards.push((path, file.finish().await?));
            }
            Ok::<_, DeltError>(())
        }
        .await;
        if let Err(e) = outcome {
            if let Some(file) = open {
                file.abort().await;
            }
            return Err(e);
        }
        Ok(shards)
    }

    /// The upload of one file to `path` in `store`, the destination's store: a local file is
    /// written straight to disk ([`DirectFile`]); others go through object_store's buffered
    /// multipart upload.
    fn upload(&self, store: Arc<dyn ObjectStore>, path: &Path) -> Result<Upload> {
        if self.url.scheme() == "file" {
            let local = PathBuf::from(format!("/{path}"));
            DirectFile::create(local.clone())
                .map(Upload::Local)
                .map_err(|e| DeltError::io(format!("creating {}", local.display()), e))
        } else {
            Ok(Upload::Store(BufWriter::new(store, path.clone())))
        }
    }
}

/// Removes what killed runs left beside the destination `url` (see the module documentation):
/// local leftovers always, staging prefixes on an object store when the output is `staged`
/// (shards), since nothing is staged beside a single file there.
pub(crate) async fn remove_leftovers(
    store: &dyn ObjectStore,
    url: &ListingTableUrl,
    staged: bool,
) -> Result<()> {
    let parent = url.prefix().parent().unwrap_or_default();
    if url.scheme() == "file" {
        remove_local_leftovers(std::path::Path::new(&format!("/{parent}")));
        return Ok(());
    }
    if !staged {
        // Nothing is staged beside a single file on S3.
        return Ok(());
    }
    // Staged objects sort together right after this offset: list those, not the whole
    // directory (S3 lists in key order).
    let offset = parent.clone().join(STAGING_MARKER);
    let mut listing = store.list_with_offset(Some(&parent).filter(|p| !p.is_root()), &offset);
    let mut staging: Vec<Path> = Vec::new();
    while let Some(meta) = listing.try_next().await.map_err(DataFusionError::from)? {
        let Some(name) = meta
            .location
            .prefix_match(&parent)
            .and_then(|mut p| p.next())
        else {
            break;
        };
        if !name.as_ref().starts_with(STAGING_MARKER) {
            break;
        }
        let dir = parent.clone().join(name);
        if staging.last() != Some(&dir) {
            staging.push(dir);
        }
    }
    drop(listing);
    for dir in staging {
        let Some(owner) = dir.filename().and_then(staging_owner) else {
            continue;
        };
        if owner.is_gone() {
            remove_all(store, &dir, url).await;
            eprintln!(
                "removed leftover {}{dir} of an interrupted run ({owner})",
                url.object_store().as_str()
            );
        }
    }
    Ok(())
}

fn check_uncompressed(compression: CompressionTypeVariant) -> Result<()> {
    if compression == CompressionTypeVariant::UNCOMPRESSED {
        Ok(())
    } else {
        Err(DeltError::Config(
            "compressed JSON/CSV output is not supported: write Parquet (compressed by default) or plain JSON/CSV".into(),
        ))
    }
}

fn is_shard_name(name: &str, extension: &str) -> bool {
    name.strip_prefix("part-")
        .and_then(|rest| rest.strip_suffix(extension))
        .and_then(|digits| digits.strip_suffix('.'))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Staging directories of shard sets being written, for [`remove_unfinished`].
type Staging = (Arc<dyn ObjectStore>, Path, ListingTableUrl);
static STAGING: Mutex<Vec<Staging>> = Mutex::new(Vec::new());

/// Removes the staging directories of COPYs that were cut short (for example by Ctrl-C, which
/// drops a running statement): call it before exiting after an interruption.
pub async fn remove_unfinished() {
    let unfinished = std::mem::take(&mut *STAGING.lock().expect("staging list"));
    for (store, staging, url) in unfinished {
        remove_all(store.as_ref(), &staging, &url).await;
    }
}

/// A hidden directory beside a destination where its shards are written before they are
/// published; listed until removed, so that an interruption removes it too
/// ([`remove_unfinished`]).
pub(crate) struct StagingDir {
    store: Arc<dyn ObjectStore>,
    path: Path,
    url: ListingTableUrl,
}

impl StagingDir {
    /// A new staging directory beside `destination`, in the store of `url`.
    pub(crate) fn create(
        store: Arc<dyn ObjectStore>,
        destination: &Path,
        url: &ListingTableUrl,
    ) -> Self {
        let path = staging_dir(destination);
        let entry = (Arc::clone(&store), path.clone(), url.clone());
        STAGING.lock().expect("staging list").push(entry);
        Self {
            store,
            path,
            url: url.clone(),
        }
    }

    /// Where staged files go.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and what is left in it.
    pub(crate) async fn remove(self) {
        remove_all(self.store.as_ref(), &self.path, &self.url).await;
        STAGING
            .lock()
            .expect("staging list")
            .retain(|(_, path, _)| *path != self.path);
    }
}

/// Moves the files of each staged shard into `destination` as `part-<index>.<extension>`
/// (indices zero-padded to one width), then removes older `part-*` files there with any of
/// `extensions`.
pub(crate) async fn publish_shards(
    store: &dyn ObjectStore,
    destination: &Path,
    shards: &[Vec<(Path, &str)>],
    extensions: &[&str],
) -> std::result::Result<(), DeltError> {
    let previous: Vec<Path> = store
        .list(Some(destination))
        .try_filter_map(|meta| async move {
            let name = meta.location.filename().unwrap_or_default();
            let shard = extensions.iter().any(|e| is_shard_name(name, e));
            Ok(shard.then_some(meta.location.clone()))
        })
        .try_collect()
        .await
        .map_err(DataFusionError::from)?;
    let width = shards.len().saturating_sub(1).to_string().len().max(5);
    let mut published = Vec::new();
    for (index, files) in shards.iter().enumerate() {
        for (staged, extension) in files {
            let target = destination
                .clone()
                .join(format!("part-{index:0width$}.{extension}"));
            store
                .rename(staged, &target)
                .await
                .map_err(DataFusionError::from)?;
            published.push(target);
        }
    }
    for old in previous.iter().filter(|p| !published.contains(p)) {
        store.delete(old).await.map_err(DataFusionError::from)?;
    }
    Ok(())
}

/// What starts the name of a staging directory, before its owner.
const STAGING_MARKER: &str = ".delt-staging-";

/// A hidden directory beside `destination`, unique to this run.
fn staging_dir(destination: &Path) -> Path {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = destination.filename().unwrap_or("output");
    let owner = Owner::current().tag();
    let parent = destination.parent().unwrap_or_default();
    parent.join(format!("{STAGING_MARKER}{owner}{nanos}-{name}"))
}

/// The owner of a staging directory `name`; `None` for other names.
fn staging_owner(name: &str) -> Option<Owner> {
    let (owner, rest) = Owner::parse(name.strip_prefix(STAGING_MARKER)?)?;
    let (nanos, _) = rest.split_once('-')?;
    (!nanos.is_empty() && nanos.bytes().all(|b| b.is_ascii_digit())).then_some(owner)
}

/// Removes the staging directories and temporary files in `dir` whose owner is gone.
/// Best effort: what cannot be removed now stays for a later run.
fn remove_local_leftovers(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let (Some(name), Ok(kind)) = (
            entry.file_name().to_str().map(str::to_owned),
            entry.file_type(),
        ) else {
            continue;
        };
        let owner = if kind.is_dir() {
            staging_owner(&name)
        } else if kind.is_file() {
            partial_owner(&name)
        } else {
            None
        };
        let Some(owner) = owner.filter(Owner::is_gone) else {
            continue;
        };
        let path = entry.path();
        let removed = if kind.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if removed.is_ok() {
            eprintln!(
                "removed leftover {} of an interrupted run ({owner})",
                path.display()
            );
        }
    }
}

/// Best-effort removal of everything under `dir` (and the directory itself on a local disk).
pub async fn remove_all(store: &dyn ObjectStore, dir: &Path, url: &ListingTableUrl) {
    let leftovers: Vec<Path> = store
        .list(Some(dir))
        .map_ok(|meta| meta.location)
        .filter_map(|p| async move { p.ok() })
        .collect()
        .await;
    for path in leftovers {
        let _ = store.delete(&path).await;
    }
    if url.scheme() == "file" {
        let _ = std::fs::remove_dir_all(format!("/{dir}"));
    }
}

/// One output file being uploaded.
struct OpenFile {
    path: Path,
    schema: SchemaRef,
    upload: Upload,
    encoder: Encoder,
    rows: u64,
}

/// Where an output file's bytes go.
enum Upload {
    Store(BufWriter),
    Local(DirectFile),
}

enum Encoder {
    Parquet(Box<ParallelParquetWriter>),
    /// JSON lines or CSV: each batch is encoded on a blocking thread while the next ones
    /// arrive; the bytes go out in batch order.
    Text {
        format: TextFormat,
        encoding: InOrder<Vec<u8>>,
        header_done: bool,
    },
}

impl Encoder {
    /// What is left of an encoder after `finish`: nothing to write.
    fn finished() -> Self {
        Self::Text {
            format: TextFormat::Json,
            encoding: InOrder::default(),
            header_done: true,
        }
    }
}

#[derive(Clone)]
enum TextFormat {
    Json,
    Csv(CsvWriterBuilder),
}

/// Text batches encoding at once.
const TEXT_IN_FLIGHT: usize = 4;

/// Rows that one task encodes as text at most: larger batches (a fold emits 32K rows at a time)
/// are encoded in pieces, so that what is in flight stays a few MB.
const TEXT_PIECE_ROWS: usize = 8192;

fn encode_text(format: &TextFormat, batch: &RecordBatch, header: bool) -> DfResult<Vec<u8>> {
    let mut buffer = Vec::new();
    match format {
        TextFormat::Json => write_json_lines(batch, &mut buffer)?,
        TextFormat::Csv(builder) => builder
            .clone()
            .with_header(header)
            .build(&mut buffer)
            .write(batch)?,
    }
    Ok(buffer)
}

impl OpenFile {
    fn create(upload: Upload, path: Path, format: &Format, schema: SchemaRef) -> Self {
        let encoder = match format {
            Format::Parquet(props, encodings) => {
                Encoder::Parquet(Box::new(ParallelParquetWriter::new(
                    Arc::clone(&schema),
                    props.as_ref().clone(),
                    encodings.clone(),
                )))
            }
            Format::Json => Encoder::Text {
                format: TextFormat::Json,
                encoding: InOrder::default(),
                header_done: false,
            },
            Format::Csv(options) => Encoder::Text {
                format: TextFormat::Csv(options.writer_options.clone()),
                encoding: InOrder::default(),
                header_done: false,
            },
        };
        Self {
            upload,
            path,
            schema,
            encoder,
            rows: 0,
        }
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        match &mut self.encoder {
            Encoder::Parquet(writer) => {
                for piece in writer.write(batch).await? {
                    self.put(piece).await?;
                }
                Ok(())
            }
            Encoder::Text { .. } => {
                // `max(1)`: an empty batch is encoded too (a CSV header when no rows came).
                for start in (0..batch.num_rows().max(1)).step_by(TEXT_PIECE_ROWS) {
                    let rows = TEXT_PIECE_ROWS.min(batch.num_rows() - start);
                    self.start_text(batch.slice(start, rows));
                    self.drain_text(TEXT_IN_FLIGHT).await?;
                }
                Ok(())
            }
        }
    }

    /// Starts encoding `piece` as text on a blocking thread.
    fn start_text(&mut self, piece: RecordBatch) {
        if let Encoder::Text {
            format,
            encoding,
            header_done,
        } = &mut self.encoder
        {
            let header = matches!(format, TextFormat::Csv(b) if b.header()) && !*header_done;
            *header_done = true;
            let format = format.clone();
            encoding.start(move || encode_text(&format, &piece, header));
        }
    }

    /// Writes out encoded text batches until at most `keep` are still encoding.
    async fn drain_text(&mut self, keep: usize) -> Result<()> {
        loop {
            let Encoder::Text { encoding, .. } = &mut self.encoder else {
                return Ok(());
            };
            if encoding.len() <= keep {
                return Ok(());
            }
            let bytes = encoding.next().await.expect("more than `keep` tasks")?;
            self.put(Bytes::from(bytes)).await?;
        }
    }

    async fn put(&mut self, bytes: Bytes) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.upload {
            Upload::Store(upload) => upload.put(bytes).await.map_err(DataFusionError::from)?,
            Upload::Local(file) => file
                .write(&bytes)
                .await
                .map_err(|e| DeltError::io(format!("writing {}", self.path), e))?,
        }
        Ok(())
    }

    /// Completes the file; returns its row count.
    async fn finish(mut self) -> Result<u64> {
        let rows = self.rows;
        if let Encoder::Text {
            format: TextFormat::Csv(_),
            header_done: false,
            ..
        } = &self.encoder
        {
            // No rows came: an empty batch still writes the header line.
            self.write(&RecordBatch::new_empty(Arc::clone(&self.schema)))
                .await?;
        }
        self.drain_text(0).await?;
        if let Encoder::Parquet(writer) = std::mem::replace(&mut self.encoder, Encoder::finished())
        {
            for piece in writer.finish().await? {
                self.put(piece).await?;
            }
        }
        let completing = |e| DeltError::io(format!("completing {}", self.path), e);
        match self.upload {
            Upload::Store(mut upload) => upload.shutdown().await.map_err(completing)?,
            Upload::Local(file) => {
                file.finish().await.map_err(completing)?;
            }
        }
        Ok(rows)
    }

    async fn abort(self) {
        match self.upload {
            Upload::Store(mut upload) => {
                let _ = upload.abort().await;
            }
            // Dropped unfinished, it removes what it wrote.
            Upload::Local(file) => drop(file),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert!(is_shard_name("part-00000.parquet", "parquet"));
        assert!(is_shard_name("part-123456.jsonl", "jsonl"));
        assert!(!is_shard_name("part-.parquet", "parquet"));
        assert!(!is_shard_name("part-0001.csv", "parquet"));
        assert!(!is_shard_name("data.parquet", "parquet"));
    }

    #[test]
    fn staging_is_beside_destination() {
        let staging = staging_dir(&Path::from("data/out"));
        assert!(
            staging.as_ref().starts_with("data/.delt-staging-"),
            "{staging}"
        );
        assert!(staging.as_ref().ends_with("-out"));
        assert_eq!(
            staging_owner(staging.filename().unwrap()).as_ref(),
            Some(Owner::current())
        );
        let at_root = staging_dir(&Path::from("out"));
        assert!(at_root.as_ref().starts_with(".delt-staging-"), "{at_root}");
    }

    #[test]
    fn staging_owners() {
        let owner = staging_owner(".delt-staging-12-34@node-1.lan_1700-my_out-v2").unwrap();
        assert_eq!(
            (owner.pid, owner.start, owner.host.as_str()),
            (12, 34, "node-1.lan")
        );
        for other in [
            ".delt-staging-12-1700-out",
            ".delt-staging-12-34@node_x-out",
            ".delt-staging-12-34@node_1700",
            "delt-staging-12-34@node_1700-out",
        ] {
            assert_eq!(staging_owner(other), None, "{other}");
        }
    }
}
