//! `COPY ... STORED AS MEGATRON` and `STORED AS TOKENS`: a query's token lists, in the
//! query's order, in the files trainers read.
//!
//! * `MEGATRON`: Megatron-LM's indexed dataset, `<prefix>.bin` (the tokens) and
//!   `<prefix>.idx` ([`megatron`]), one sequence per document.
//! * `TOKENS`: flat token shards as llm.c and nanoGPT-style loaders stream them
//!   ([`flat_tokens`]).
//!
//! Each row is one document: a list of token ids (`tokenize(...)`, or any list of integers).
//! A destination ending in `.bin` is one file set (`out/train.bin`, `out/train.idx`); any other
//! destination is a directory of shards `part-00000.bin`, ... each closed at a document
//! boundary once it holds `shard_tokens` tokens. Like the other COPY outputs, everything is
//! written to a staging directory beside the destination and moved in only when complete.
//!
//! With `seq_len`, documents are packed into blocks of that many tokens: `pack 'cross'` lets a
//! document run on into the next block; `pack 'within'` starts a document that does not fit in
//! what is left of a block at the next block and fills the gap with the pad token (a document
//! longer than a block still spans several). Every shard starts a new block; in `within` mode
//! its last block is padded to full length. For `MEGATRON` each block is one sequence.
//!
//! A sidecar `part-00000.docs.parquet` (`sidecar 'false'` turns it off) lists each document:
//! `row` (its position in the query's output, from 0), `id` (the `id_column`, by default a
//! column named `id` if there is one), `start` (its first token's offset in the shard's token
//! stream, pad tokens counted) and `tokens`.

pub mod flat_tokens;
pub mod megatron;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::compute::{CastOptions, cast_with_options, concat};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::ArrowWriter;
use futures::TryStreamExt;
use object_store::buffered::BufWriter as StoreWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::error::{DeltError, Result};
use crate::io::output::{StagingDir, publish_shards, remove_leftovers};

/// A trainer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainingFormat {
    /// Megatron-LM's indexed dataset (`.bin` + `.idx`).
    Megatron,
    /// Flat token shards (llm.c, nanoGPT).
    Tokens,
}

impl TrainingFormat {
    /// The format named in `STORED AS`, if it is one of these.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "megatron" => Some(Self::Megatron),
            "tokens" => Some(Self::Tokens),
            _ => None,
        }
    }

    /// The name as written in `STORED AS`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Megatron => "MEGATRON",
            Self::Tokens => "TOKENS",
        }
    }

    fn token_types(self) -> [TokenType; 2] {
        match self {
            Self::Megatron => [TokenType::U16, TokenType::I32],
            Self::Tokens => [TokenType::U16, TokenType::U32],
        }
    }
}

/// How token ids are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// 2 bytes.
    U16,
    /// 4 bytes, signed (Megatron's choice above 65,500 tokens).
    I32,
    /// 4 bytes.
    U32,
}

impl TokenType {
    /// Bytes per token.
    pub fn width(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::I32 | Self::U32 => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::U16 => "uint16",
            Self::I32 => "int32",
            Self::U32 => "uint32",
        }
    }

    /// One more than the largest id it holds.
    fn capacity(self) -> u64 {
        match self {
            Self::U16 => 1 << 16,
            Self::I32 => 1 << 31,
            Self::U32 => 1 << 32,
        }
    }

    fn append(self, ids: &[u32], out: &mut Vec<u8>) {
        match self {
            Self::U16 => out.extend(ids.iter().flat_map(|&t| (t as u16).to_le_bytes())),
            Self::I32 | Self::U32 => out.extend(ids.iter().flat_map(|&t| t.to_le_bytes())),
        }
    }
}

/// The options this module reads (the tokenizer's are read by the SQL layer).
pub const OPTIONS: [&str; 9] = [
    "dtype",
    "vocab_size",
    "shard_tokens",
    "seq_len",
    "pack",
    "pad_id",
    "sidecar",
    "id_column",
    "tokens_column",
];

/// Packing into fixed-length blocks.
#[derive(Debug, Clone, Copy)]
struct Packing {
    seq_len: u64,
    /// Documents do not cross block boundaries (`pack 'within'`).
    within: bool,
    pad: u32,
}

/// One `COPY ... STORED AS MEGATRON | TOKENS` destination and how to write it.
#[derive(Debug)]
pub struct TrainingTarget {
    url: ListingTableUrl,
    display: String,
    format: TrainingFormat,
    /// `out/train.bin`: one file set, no shards.
    single: bool,
    tokens: TokenType,
    vocab_size: Option<u64>,
    shard_tokens: u64,
    packing: Option<Packing>,
    sidecar: bool,
    id_column: Option<String>,
    tokens_column: String,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Documents.
    pub documents: u64,
    /// Tokens, pad tokens included.
    pub tokens: u64,
    /// Shards (file sets).
    pub shards: usize,
}

impl TrainingTarget {
    /// Interprets the destination and the options in [`OPTIONS`] (removed from `options`).
    /// `vocab_size` and `pad` come from the tokenizer when there is one; the options
    /// `vocab_size` and `pad_id` override them.
    pub fn new(
        destination: &str,
        format: TrainingFormat,
        options: &mut HashMap<String, String>,
        vocab_size: Option<u64>,
        pad: Option<u32>,
    ) -> Result<Self> {
        let what = format!("COPY ... STORED AS {}", format.name());
        let bad = |key: &str, value: &str, expected: &str| {
            DeltError::Config(format!(
                "{what}: option {key} must be {expected}, got '{value}'"
            ))
        };
        let mut number = |key: &str| -> Result<Option<u64>> {
            options
                .remove(key)
                .map(|v| {
                    v.parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(key, &v, "a positive integer"))
                })
                .transpose()
        };
        let vocab_size = number("vocab_size")?.or(vocab_size);
        let shard_tokens = number("shard_tokens")?;
        let seq_len = number("seq_len")?;
        let pad = match options.remove("pad_id") {
            Some(v) => Some(
                v.parse::<u32>()
                    .map_err(|_| bad("pad_id", &v, "a token id"))?,
            ),
            None => pad,
        };
        let mut flag = |key: &str, default: bool| -> Result<bool> {
            match options.remove(key).as_deref().map(str::to_ascii_lowercase) {
                None => Ok(default),
                Some(v) if v == "true" => Ok(true),
                Some(v) if v == "false" => Ok(false),
                Some(v) => Err(bad(key, &v, "true or false")),
            }
        };
        let sidecar = flag("sidecar", true)?;
        let kinds = format.token_types();
        let tokens = match options.remove("dtype") {
            Some(v) => *kinds
                .iter()
                .find(|k| k.name() == v.to_ascii_lowercase())
                .ok_or_else(|| {
                    bad(
                        "dtype",
                        &v,
                        &format!("{} or {}", kinds[0].name(), kinds[1].name()),
                    )
                })?,
            // Megatron-LM picks uint16 below 65,500 tokens; llm.c's uint16 holds 65,536.
            None => match (vocab_size, format) {
                (Some(v), TrainingFormat::Megatron) if v < 65_500 => TokenType::U16,
                (Some(v), TrainingFormat::Tokens) if v <= 1 << 16 => TokenType::U16,
                (Some(_), _) => kinds[1],
                (None, _) => {
                    return Err(DeltError::Config(format!(
                        "{what}: the vocabulary size is unknown: give OPTIONS (tokenizer 'tokenizer.json') or (vocab_size N)"
                    )));
                }
            },
        };
        if let Some(v) = vocab_size.filter(|v| *v > tokens.capacity()) {
            return Err(DeltError::Config(format!(
                "{what}: a vocabulary of {v} tokens is too large for dtype {}: use dtype {}",
                tokens.name(),
                kinds[1].name()
            )));
        }
        let packing = match (seq_len, options.remove("pack")) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(DeltError::Config(format!(
                    "{what}: option pack needs seq_len: give OPTIONS (seq_len 2048, pack 'within')"
                )));
            }
            (Some(seq_len), mode) => {
                let within = match mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("cross") => false,
                    Some("within") => true,
                    Some(other) => return Err(bad("pack", other, "'cross' or 'within'")),
                };
                let pad = match (within, pad) {
                    (true, None) => {
                        return Err(DeltError::Config(format!(
                            "{what}: pack 'within' pads blocks, but there is no pad token: give pad_id N (or a tokenizer with an end-of-document token)"
                        )));
                    }
                    (_, pad) => pad.unwrap_or(0),
                };
                Some(Packing {
                    seq_len,
                    within,
                    pad,
                })
            }
        };
        let single = !destination.ends_with('/')
            && std::path::Path::new(destination)
                .extension()
                .is_some_and(|e| e == "bin");
        if single && shard_tokens.is_some() {
            return Err(DeltError::Config(format!(
                "{what}: shard_tokens needs a directory destination (such as 'out/train/'), not the single file '{destination}'"
            )));
        }
        Ok(Self {
            url: ListingTableUrl::parse(destination)?,
            display: destination.to_string(),
            format,
            single,
            tokens,
            vocab_size,
            shard_tokens: shard_tokens.unwrap_or(u64::MAX),
            packing,
            sidecar,
            id_column: options.remove("id_column"),
            tokens_column: options
                .remove("tokens_column")
                .unwrap_or_else(|| "tokens".into()),
        })
    }

    /// Where the output goes, as the user wrote it.
    pub fn destination(&self) -> &str {
        &self.display
    }

    /// Replaces the column of token lists the writer reads.
    pub fn with_tokens_column(mut self, column: impl Into<String>) -> Self {
        self.tokens_column = column.into();
        self
    }

    /// The column named in the sidecar's `id`, if any.
    pub fn id_column(&self) -> Option<&str> {
        self.id_column.as_deref()
    }

    /// Names the column that becomes the sidecar's `id`.
    pub fn with_id_column(mut self, column: Option<String>) -> Self {
        self.id_column = column;
        self
    }

    /// The URL of the object store that holds the destination.
    pub fn store_url(&self) -> datafusion::execution::object_store::ObjectStoreUrl {
        self.url.object_store()
    }

    /// Writes `stream` to the destination in order; `written` counts documents as they go.
    pub async fn write(
        &self,
        store: Arc<dyn ObjectStore>,
        stream: SendableRecordBatchStream,
        written: Arc<AtomicU64>,
    ) -> Result<Exported> {
        let outcome = async {
            remove_leftovers(store.as_ref(), &self.url, true).await?;
            let destination = self.url.prefix().clone();
            let staging = StagingDir::create(Arc::clone(&store), &destination, &self.url);
            let result = self.stage(&store, &staging, stream, &written).await;
            let result = match result {
                Ok((files, exported)) => self
                    .publish(store.as_ref(), &destination, &files)
                    .await
                    .map(|()| exported),
                Err(e) => Err(e),
            };
            staging.remove().await;
            result
        };
        outcome.await.map_err(|source| DeltError::Output {
            destination: self.display.clone(),
            source: Box::new(source),
        })
    }

    /// Writes every shard into the staging directory; returns each shard's staged files.
    async fn stage(
        &self,
        store: &Arc<dyn ObjectStore>,
        staging: &StagingDir,
        mut stream: SendableRecordBatchStream,
        written: &AtomicU64,
    ) -> Result<(Vec<Vec<StagedFile>>, Exported)> {
        // Shards are written on a local disk (the flat format's header, written last, needs a
        // seek) and uploaded to the staging prefix when the destination is remote.
        let scratch =
            if self.url.scheme() == "file" {
                None
            } else {
                Some(tempfile::tempdir().map_err(|e| {
                    DeltError::io("creating a temporary directory for the shards", e)
                })?)
            };
        let local_dir = match &scratch {
            Some(dir) => dir.path().to_path_buf(),
            None => PathBuf::from(format!("/{}", staging.path())),
        };
        tokio::fs::create_dir_all(&local_dir)
            .await
            .map_err(|e| DeltError::io(format!("creating {}", local_dir.display()), e))?;
        let id_column = self.sidecar_id(&stream.schema())?;
        let mut writer = ShardWriter {
            target: self,
            store,
            staging: staging.path(),
            local_dir,
            staged: Vec::new(),
            shard: None,
            batch_ids: None,
            ids_from: 0,
            documents: 0,
            tokens: 0,
        };
        while let Some(batch) = stream.try_next().await? {
            let lists = self.token_lists(&batch)?;
            writer.batch_ids = id_column.map(|i| Arc::clone(batch.column(i)));
            writer.ids_from = 0;
            for row in 0..batch.num_rows() {
                let document = self.document(&lists, row, writer.documents)?;
                writer.add(document, row).await?;
            }
            writer.end_batch(batch.num_rows()).await?;
            written.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        }
        writer.finish().await
    }

    /// The position of the sidecar's `id` column in `schema`, if the sidecar has one.
    fn sidecar_id(&self, schema: &Schema) -> Result<Option<usize>> {
        if !self.sidecar {
            return Ok(None);
        }
        match &self.id_column {
            Some(name) => schema.index_of(name).map(Some).map_err(|_| {
                DeltError::Config(format!(
                    "COPY ... STORED AS {}: option id_column names '{name}', which the query does not return: select it",
                    self.format.name()
                ))
            }),
            None => Ok(schema.index_of("id").ok()),
        }
    }

    /// The token lists of `batch` as `List<UInt32>`.
    fn token_lists(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        let name = &self.tokens_column;
        let column = batch.column_by_name(name).ok_or_else(|| {
            DeltError::Config(format!(
                "COPY ... STORED AS {}: the query has no column '{name}' of token lists: \
                 give OPTIONS (tokenizer 'tokenizer.json') to tokenize a text column, or name the \
                 column with tokens_column",
                self.format.name()
            ))
        })?;
        let listed = matches!(column.data_type(),
            DataType::List(f) | DataType::LargeList(f) if f.data_type().is_integer());
        if !listed {
            return Err(DeltError::Config(format!(
                "COPY ... STORED AS {}: column '{name}' is {}, not a list of token ids: use tokenize(text, 'tokenizer.json')",
                self.format.name(),
                column.data_type()
            )));
        }
        let target = DataType::List(Arc::new(Field::new_list_field(DataType::UInt32, true)));
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        cast_with_options(column, &target, &options).map_err(|e| {
            DeltError::BadInput(format!(
                "column '{name}': token ids must be whole numbers from 0 to 4294967295: {e}"
            ))
        })
    }

    /// The token ids of `row`, checked against the vocabulary; `index` is its position in the
    /// whole output, for errors.
    fn document<'a>(&self, lists: &'a ArrayRef, row: usize, index: u64) -> Result<&'a [u32]> {
        let lists = lists.as_list::<i32>();
        if lists.is_null(row) {
            return Err(DeltError::BadInput(format!(
                "row {} of the query's output has no tokens (NULL): filter out NULL texts with WHERE text IS NOT NULL",
                index + 1
            )));
        }
        let (start, end) = (
            lists.value_offsets()[row] as usize,
            lists.value_offsets()[row + 1] as usize,
        );
        let values = lists.values().as_primitive::<UInt32Type>();
        let ids = &values.values()[start..end];
        if values.null_count() > 0 && (start..end).any(|i| values.is_null(i)) {
            return Err(DeltError::BadInput(format!(
                "row {} of the query's output has a NULL token id",
                index + 1
            )));
        }
        let limit = self.vocab_size.unwrap_or(self.tokens.capacity());
        if let Some(bad) = ids.iter().find(|&&t| u64::from(t) >= limit) {
            return Err(DeltError::BadInput(format!(
                "row {} of the query's output has token id {bad}, outside the vocabulary of {limit} tokens: check the tokenizer or vocab_size",
                index + 1
            )));
        }
        Ok(ids)
    }

    /// Moves the staged files to their final names: `part-<n>.<ext>` in a directory
    /// ([`publish_shards`]), or `<stem>.<ext>` beside a single `.bin`.
    async fn publish(
        &self,
        store: &dyn ObjectStore,
        destination: &Path,
        files: &[Vec<StagedFile>],
    ) -> Result<()> {
        if !self.single {
            return publish_shards(store, destination, files, &EXTENSIONS).await;
        }
        let stem = destination
            .as_ref()
            .strip_suffix(".bin")
            .unwrap_or(destination.as_ref());
        // The index goes last: a reader needs it, so a crash in between leaves no set that
        // looks complete.
        let mut moves: Vec<&StagedFile> = files.iter().flatten().collect();
        moves.sort_by_key(|(_, extension)| *extension == "idx");
        for (staged, extension) in &moves {
            let target = Path::from(format!("{stem}.{extension}"));
            store
                .rename(staged, &target)
                .await
                .map_err(DataFusionError::from)?;
        }
        // What an earlier export left beside it that this one does not have.
        for extension in EXTENSIONS
            .iter()
            .filter(|e| !moves.iter().any(|(_, m)| m == *e))
        {
            match store
                .delete(&Path::from(format!("{stem}.{extension}")))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(DataFusionError::from(e).into()),
            }
        }
        Ok(())
    }
}

/// The files of an export: tokens, Megatron index, sidecar.
const EXTENSIONS: [&str; 3] = ["bin", "idx", "docs.parquet"];

/// A staged file and the extension it is published with.
type StagedFile = (Path, &'static str);

/// Writes documents into shards in the staging directory.
struct ShardWriter<'a> {
    target: &'a TrainingTarget,
    store: &'a Arc<dyn ObjectStore>,
    staging: &'a Path,
    /// Where shards are written: the staging directory itself for a local destination.
    local_dir: PathBuf,
    staged: Vec<Vec<StagedFile>>,
    shard: Option<Shard>,
    /// The sidecar's id column of the current batch.
    batch_ids: Option<ArrayRef>,
    /// The first row of the current batch that is not yet in a shard's sidecar ids.
    ids_from: usize,
    documents: u64,
    tokens: u64,
}

/// One shard being written.
struct Shard {
    index: usize,
    bin: BufWriter<tokio::fs::File>,
    bin_path: PathBuf,
    /// Tokens in the stream so far, pad tokens included.
    tokens: u64,
    /// Token counts of the documents (Megatron's sequences when not packed).
    lengths: Vec<i32>,
    rows: Vec<u64>,
    starts: Vec<u64>,
    ids: Vec<ArrayRef>,
    bytes: Vec<u8>,
}

impl ShardWriter<'_> {
    /// Appends one document (row `row` of the current batch).
    async fn add(&mut self, ids: &[u32], row: usize) -> Result<()> {
        let target = self.target;
        let shard = match self.shard.take() {
            Some(shard) => shard,
            None => self.open().await?,
        };
        let mut shard = shard;
        let mut pad = 0;
        if let Some(p) = target.packing.filter(|p| p.within) {
            let fill = shard.tokens % p.seq_len;
            if fill > 0 && fill + ids.len() as u64 > p.seq_len {
                pad = p.seq_len - fill;
            }
        }
        let after = shard.tokens + pad + ids.len() as u64;
        if target.format == TrainingFormat::Tokens && after > flat_tokens::MAX_TOKENS {
            if target.single || shard.lengths.is_empty() {
                return Err(DeltError::Config(format!(
                    "more than {} tokens in one file: the TOKENS header counts them in an int32; write to a directory with shard_tokens",
                    flat_tokens::MAX_TOKENS
                )));
            }
            self.shard = Some(shard);
            self.close(row).await?;
            return Box::pin(self.add(ids, row)).await;
        }
        if pad > 0 {
            shard.pad(pad, target);
        }
        shard.rows.push(self.documents);
        shard.starts.push(shard.tokens);
        shard.lengths.push(ids.len() as i32);
        target.tokens.append(ids, &mut shard.bytes);
        shard.tokens += ids.len() as u64;
        self.documents += 1;
        let full = shard.tokens >= target.shard_tokens;
        if shard.bytes.len() >= 8 << 20 {
            shard.flush().await?;
        }
        self.shard = Some(shard);
        if full {
            self.close(row + 1).await?;
        }
        Ok(())
    }

    /// The end of a batch of `rows` rows.
    async fn end_batch(&mut self, rows: usize) -> Result<()> {
        self.take_ids(rows);
        if let Some(shard) = &mut self.shard {
            shard.flush().await?;
        }
        Ok(())
    }

    /// Gives the open shard the sidecar ids of the current batch's rows before `upto`.
    fn take_ids(&mut self, upto: usize) {
        if let (Some(ids), Some(shard)) = (&self.batch_ids, &mut self.shard)
            && upto > self.ids_from
        {
            shard
                .ids
                .push(ids.slice(self.ids_from, upto - self.ids_from));
        }
        self.ids_from = upto;
    }

    async fn open(&mut self) -> Result<Shard> {
        let index = self.staged.len();
        let bin_path = self.local_dir.join(format!("{index:010}.bin"));
        let file = tokio::fs::File::create(&bin_path)
            .await
            .map_err(|e| DeltError::io(format!("creating {}", bin_path.display()), e))?;
        let mut shard = Shard {
            index,
            bin: BufWriter::with_capacity(1 << 20, file),
            bin_path,
            tokens: 0,
            lengths: Vec::new(),
            rows: Vec::new(),
            starts: Vec::new(),
            ids: Vec::new(),
            bytes: Vec::new(),
        };
        if self.target.format == TrainingFormat::Tokens {
            // Room for the header, written when the token count is known.
            shard.bytes.resize(flat_tokens::HEADER_BYTES, 0);
        }
        Ok(shard)
    }

    /// Completes the open shard (its ids end before row `upto` of the current batch) and
    /// stages its files.
    async fn close(&mut self, upto: usize) -> Result<()> {
        self.take_ids(upto);
        let Some(mut shard) = self.shard.take() else {
            return Ok(());
        };
        let target = self.target;
        if let Some(p) = target.packing.filter(|p| p.within) {
            let fill = shard.tokens % p.seq_len;
            if fill > 0 {
                shard.pad(p.seq_len - fill, target);
            }
        }
        shard.flush().await?;
        let io = |what: &PathBuf, e| DeltError::io(format!("writing {}", what.display()), e);
        if target.format == TrainingFormat::Tokens {
            let header = flat_tokens::header(target.tokens, shard.tokens);
            let bin = &mut shard.bin;
            bin.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(|e| io(&shard.bin_path, e))?;
            bin.write_all(&header)
                .await
                .map_err(|e| io(&shard.bin_path, e))?;
        }
        shard
            .bin
            .shutdown()
            .await
            .map_err(|e| io(&shard.bin_path, e))?;
        let mut files = vec![(shard.bin_path.clone(), "bin")];
        if target.format == TrainingFormat::Megatron {
            let lengths = match target.packing {
                None => shard.lengths.clone(),
                Some(p) => blocks(shard.tokens, p.seq_len),
            };
            let path = self.local_dir.join(format!("{:010}.idx", shard.index));
            tokio::fs::write(&path, megatron::index(target.tokens, &lengths))
                .await
                .map_err(|e| io(&path, e))?;
            files.push((path, "idx"));
        }
        if target.sidecar {
            let path = self
                .local_dir
                .join(format!("{:010}.docs.parquet", shard.index));
            shard.write_sidecar(&path, target.id_column.as_deref().unwrap_or("id"))?;
            files.push((path, "docs.parquet"));
        }
        let mut staged = Vec::with_capacity(files.len());
        for (local, extension) in files {
            let name = local
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let object = self.staging.clone().join(name);
            if target.url.scheme() != "file" {
                upload(self.store, &local, &object).await?;
                let _ = tokio::fs::remove_file(&local).await;
            }
            staged.push((object, extension));
        }
        self.tokens += shard.tokens;
        self.staged.push(staged);
        Ok(())
    }

    /// Closes the last shard (an empty result still gets one) and says what was written.
    async fn finish(mut self) -> Result<(Vec<Vec<StagedFile>>, Exported)> {
        if self.shard.is_none() && self.staged.is_empty() {
            self.shard = Some(self.open().await?);
        }
        self.close(self.ids_from).await?;
        let exported = Exported {
            documents: self.documents,
            tokens: self.tokens,
            shards: self.staged.len(),
        };
        Ok((self.staged, exported))
    }
}

/// Sequence lengths of `tokens` tokens cut into blocks of `seq_len`.
fn blocks(tokens: u64, seq_len: u64) -> Vec<i32> {
    let mut lengths = vec![seq_len as i32; (tokens / seq_len) as usize];
    if !tokens.is_multiple_of(seq_len) {
        lengths.push((tokens % seq_len) as i32);
    }
    lengths
}

impl Shard {
    fn pad(&mut self, count: u64, target: &TrainingTarget) {
        let pad = target.packing.map_or(0, |p| p.pad);
        target
            .tokens
            .append(&vec![pad; count as usize], &mut self.bytes);
        self.tokens += count;
    }

    async fn flush(&mut self) -> Result<()> {
        self.bin
            .write_all(&self.bytes)
            .await
            .map_err(|e| DeltError::io(format!("writing {}", self.bin_path.display()), e))?;
        self.bytes.clear();
        Ok(())
    }

    /// The sidecar Parquet file: row, id (when there is one), start, tokens.
    fn write_sidecar(&mut self, path: &std::path::Path, id_name: &str) -> Result<()> {
        let mut fields = vec![Field::new("row", DataType::UInt64, false)];
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(UInt64Array::from(std::mem::take(&mut self.rows)))];
        if let Some(first) = self.ids.first() {
            let parts: Vec<&dyn Array> = self.ids.iter().map(|a| a.as_ref()).collect();
            fields.push(Field::new(id_name, first.data_type().clone(), true));
            columns.push(concat(&parts)?);
        }
        fields.push(Field::new("start", DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from(std::mem::take(
            &mut self.starts,
        ))));
        fields.push(Field::new("tokens", DataType::UInt32, false));
        columns.push(Arc::new(UInt32Array::from_iter_values(
            self.lengths.iter().map(|&l| l as u32),
        )));
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        let io = |e| DeltError::io(format!("writing {}", path.display()), e);
        let file = std::fs::File::create(path).map_err(io)?;
        let mut writer = ArrowWriter::try_new(file, schema, None).map_err(DataFusionError::from)?;
        writer.write(&batch).map_err(DataFusionError::from)?;
        writer.close().map_err(DataFusionError::from)?;
        Ok(())
    }
}

/// Copies the local file `local` to `to` in `store`.
async fn upload(store: &Arc<dyn ObjectStore>, local: &std::path::Path, to: &Path) -> Result<()> {
    let read = |e| DeltError::io(format!("reading {}", local.display()), e);
    let mut file = tokio::fs::File::open(local).await.map_err(read)?;
    let mut writer = StoreWriter::new(Arc::clone(store), to.clone());
    let mut buffer = vec![0u8; 8 << 20];
    let outcome = async {
        loop {
            let n = file.read(&mut buffer).await.map_err(read)?;
            if n == 0 {
                break;
            }
            writer
                .write_all(&buffer[..n])
                .await
                .map_err(|e| DeltError::io(format!("uploading {to}"), e))?;
        }
        writer
            .shutdown()
            .await
            .map_err(|e| DeltError::io(format!("uploading {to}"), e))
    }
    .await;
    if outcome.is_err() {
        let _ = writer.abort().await;
    }
    outcome
}
