//! Local files, read through memory maps.
//!
//! Parquet readers ask for whole column chunks at once (a text column of a 1M-row row group is
//! over 100 MB). `object_store`'s local store reads each range into a fresh zeroed buffer:
//! new memory that the kernel must fault in and zero, then a copy out of the page cache. A
//! map of the file serves the same bytes from the page cache itself. Streamed ranges (the
//! parts of a JSON lines or CSV file that partitions read side by side) get the same: the
//! local store streams them as 8 KiB reads, each on a blocking task; here they come as maps of
//! [`STREAM_CHUNK`] bytes, each unmapped once consumed. Everything else (whole-file reads,
//! listing, metadata, writing, renaming) is the local store's own.

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// The local file system, reading ranges through memory maps.
#[derive(Debug, Default)]
pub struct MappedLocalFiles {
    inner: Arc<LocalFileSystem>,
}

impl fmt::Display for MappedLocalFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MappedLocalFiles({})", self.inner)
    }
}

/// Bytes per piece of a streamed read.
pub const STREAM_CHUNK: u64 = 4 << 20;

/// `len` bytes of `file` from `offset`, mapped (`len` > 0).
fn map_range(file: &File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    // SAFETY: the map is read-only and private to this process. Like every reader that maps
    // its input (DuckDB, Polars), a file truncated by another process while it is read faults
    // the reader: input files must not be rewritten in place during a query.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len as usize)
            .map(file)?
    };
    Ok(Bytes::from_owner(map))
}

/// `range` of `file` as a stream of mapped pieces of at most [`STREAM_CHUNK`] bytes.
fn mapped_stream(
    file: File,
    path: std::path::PathBuf,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes>> {
    let pieces = (range.start..range.end).step_by(STREAM_CHUNK as usize);
    futures::stream::iter(pieces.map(move |start| {
        let len = STREAM_CHUNK.min(range.end - start);
        map_range(&file, start, len).map_err(|source| object_store::Error::Generic {
            store: "MappedLocalFiles",
            source: format!("cannot read {}: {source}", path.display()).into(),
        })
    }))
    .boxed()
}

/// `ranges` of the file at `path`, sharing one map of the file.
fn read_mapped(path: &std::path::Path, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    if let Some(bad) = ranges.iter().find(|r| r.start > r.end || r.end > size) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "range {}..{} is outside the file ({size} bytes)",
                bad.start, bad.end
            ),
        ));
    }
    if size == 0 {
        return Ok(ranges.iter().map(|_| Bytes::new()).collect());
    }
    let file = map_range(&file, 0, size)?;
    Ok(ranges
        .iter()
        .map(|r| file.slice(r.start as usize..r.end as usize))
        .collect())
}

#[async_trait]
impl ObjectStore for MappedLocalFiles {
    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.inner.path_to_filesystem(location)?;
        let ranges = ranges.to_vec();
        tokio::task::spawn_blocking(move || {
            read_mapped(&path, &ranges).map_err(|source| object_store::Error::Generic {
                store: "MappedLocalFiles",
                source: format!("cannot read {}: {source}", path.display()).into(),
            })
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "MappedLocalFiles",
            source: Box::new(e),
        })?
    }

    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        // A whole file stays a file: readers of one (schema inference reads its first records)
        // take what they need from it, where they would collect a stream.
        let ranged = options.range.is_some();
        let mut result = self.inner.get_opts(location, options).await?;
        if ranged {
            let empty = GetResultPayload::Stream(futures::stream::empty().boxed());
            if let GetResultPayload::File(file, path) =
                std::mem::replace(&mut result.payload, empty)
            {
                result.payload =
                    GetResultPayload::Stream(mapped_stream(file, path, result.range.clone()));
            }
        }
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_path(file: &std::path::Path) -> Path {
        Path::from_absolute_path(file).expect("an absolute path")
    }

    #[tokio::test]
    async fn ranges_are_the_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.bin");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let ranges = [0..10, 5..50_000, 99_999..100_000, 300..300];
        let got = MappedLocalFiles::default()
            .get_ranges(&store_path(&file), &ranges)
            .await
            .unwrap();
        for (range, bytes) in ranges.iter().zip(&got) {
            assert_eq!(
                bytes.as_ref(),
                &data[range.start as usize..range.end as usize]
            );
        }
    }

    #[tokio::test]
    async fn bad_ranges_and_missing_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("short.bin");
        std::fs::write(&file, b"0123456789").unwrap();
        let store = MappedLocalFiles::default();
        let past_end = store
            .get_ranges(&store_path(&file), &[0..4, 4..11])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            past_end.contains("short.bin") && past_end.contains("4..11"),
            "{past_end}"
        );
        let missing = store
            .get_ranges(&store_path(&dir.path().join("gone.bin")), &[0..1, 1..2])
            .await
            .unwrap_err()
            .to_string();
        assert!(missing.contains("gone.bin"), "{missing}");
        let empty = dir.path().join("empty.bin");
        std::fs::write(&empty, b"").unwrap();
        let got = store
            .get_ranges(&store_path(&empty), &[0..0, 0..0])
            .await
            .unwrap();
        assert!(got.iter().all(Bytes::is_empty));
    }

    #[tokio::test]
    async fn ranged_gets_stream_mapped_pieces_and_whole_files_stay_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lines.jsonl");
        let size = 2 * STREAM_CHUNK as usize + 1234;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 241) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let store = MappedLocalFiles::default();
        let range = 4097..size as u64 - 10;
        let options = GetOptions {
            range: Some(range.clone().into()),
            ..Default::default()
        };
        let got = store.get_opts(&store_path(&file), options).await.unwrap();
        assert!(matches!(got.payload, GetResultPayload::Stream(_)));
        let pieces: Vec<Bytes> = got.into_stream().map(|p| p.unwrap()).collect().await;
        let expected_pieces = (range.end - range.start).div_ceil(STREAM_CHUNK) as usize;
        assert_eq!(pieces.len(), expected_pieces);
        assert!(pieces.iter().all(|p| p.len() as u64 <= STREAM_CHUNK));
        assert_eq!(
            pieces.concat(),
            &data[range.start as usize..range.end as usize]
        );
        let whole = store
            .get_opts(&store_path(&file), GetOptions::default())
            .await
            .unwrap();
        assert!(matches!(whole.payload, GetResultPayload::File(..)));
    }
}
