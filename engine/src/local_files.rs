//! Local files, with byte ranges read through a memory map.
//!
//! Parquet readers ask for whole column chunks at once (a text column of a 1M-row row group is
//! over 100 MB). `object_store`'s local store reads each range into a fresh zeroed buffer:
//! new memory that the kernel must fault in and zero, then a copy out of the page cache. A
//! map of the file serves the same bytes from the page cache itself. Everything else
//! (listing, metadata, writing, renaming) is the local store's own.

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
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
    // SAFETY: the map is read-only and private to this process. Like every reader that maps
    // its input (DuckDB, Polars), a file truncated by another process while it is read faults
    // the reader: input files must not be rewritten in place during a query.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let file = Bytes::from_owner(map);
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
        self.inner.get_opts(location, options).await
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
}
