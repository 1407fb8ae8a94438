//! Writing a local output file in order, past the page cache where the file system allows it.
//!
//! A COPY's output is read later, mostly by another program; written through the page cache,
//! every page of it first takes a page of fresh memory (and on a large corpus pushes the input
//! out of the cache). On the 2-core development VM, whose host hands back freed memory, `dd` of
//! 216 MB through the page cache took 0.06-1.15 s, and 0.08-0.11 s with `O_DIRECT`.
//! [`DirectFile`] copies the bytes into two page-aligned buffers in turn: while one fills,
//! the other is written on a blocking thread, with `O_DIRECT` on Linux. The tail that does not
//! fill a block goes through the page cache, and so does everything where the file system
//! refuses `O_DIRECT` (tmpfs, some FUSE file systems) and on other systems.
//!
//! The file is written under a temporary name beside its destination and renamed into place
//! by [`DirectFile::finish`]; dropped unfinished, it removes the temporary file. A process that
//! is killed (SIGKILL, a power cut) cannot remove it, so the name records its [`Owner`]:
//! `.<name>.delt-partial-<pid>-<start>@<host>_<n>`, where `start` is when the process started
//! (clock ticks after boot, as `/proc/<pid>/stat` gives it; 0 where unknown) and `n` tells the
//! files of one process apart. [`partial_owner`] reads it back, so that a later COPY can remove
//! the files of processes that are gone ([`Owner::is_gone`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::io::owner::Owner;

/// The alignment of direct writes: of memory, of file offsets and of lengths.
const BLOCK: usize = 4096;

/// Bytes of each of the two buffers.
const BUFFER_BYTES: usize = 4 << 20;

/// One block of a buffer, aligned as a direct write needs.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// A page-aligned buffer and how many of its bytes are filled (the default one has none).
#[derive(Default)]
struct Buffer {
    blocks: Vec<Block>,
    len: usize,
}

impl Buffer {
    fn new() -> Self {
        Self {
            blocks: vec![Block([0; BLOCK]); BUFFER_BYTES / BLOCK],
            len: 0,
        }
    }

    fn space(&mut self) -> &mut [u8] {
        let bytes = self.blocks.len() * BLOCK;
        // SAFETY: the blocks are plain bytes, contiguous in the vector's allocation.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), bytes) }
    }

    fn filled(&self) -> &[u8] {
        // SAFETY: as in `space`; `len` is at most the blocks' bytes.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }
}

/// A local file being written in order (see the module documentation).
pub struct DirectFile {
    destination: PathBuf,
    temporary: Option<PathBuf>,
    file: Arc<File>,
    filling: Buffer,
    /// The buffer being written, handed back when it is written.
    writing: Option<JoinHandle<io::Result<Buffer>>>,
    /// Where `filling` starts in the file.
    offset: u64,
}

impl DirectFile {
    /// Starts writing `destination`, creating its directory if it has none.
    pub fn create(destination: PathBuf) -> io::Result<Self> {
        if let Some(dir) = destination.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("its directory {}: {e}", dir.display()))
            })?;
        }
        let name = destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = destination.with_file_name(format!(
            ".{name}{PARTIAL_MARKER}{}{}",
            Owner::current().tag(),
            unique()
        ));
        let file = open(&temporary)?;
        Ok(Self {
            destination,
            temporary: Some(temporary),
            file: Arc::new(file),
            filling: Buffer::new(),
            writing: None,
            offset: 0,
        })
    }

    /// Appends `bytes`.
    pub async fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let at = self.filling.len;
            let n = (BUFFER_BYTES - at).min(bytes.len());
            self.filling.space()[at..at + n].copy_from_slice(&bytes[..n]);
            self.filling.len += n;
            bytes = &bytes[n..];
            if self.filling.len == BUFFER_BYTES {
                self.send().await?;
            }
        }
        Ok(())
    }

    /// Starts writing the full buffer once the one before it is written.
    async fn send(&mut self) -> io::Result<()> {
        let spare = match self.writing.take() {
            Some(writing) => writing.await??,
            None => Buffer::new(),
        };
        let mut full = std::mem::replace(&mut self.filling, spare);
        let (file, offset) = (Arc::clone(&self.file), self.offset);
        self.offset += full.len as u64;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write_at(&file, full.filled(), offset)?;
            full.len = 0;
            Ok(full)
        }));
        Ok(())
    }

    /// Writes what is left and renames the file into place; returns its length in bytes.
    pub async fn finish(mut self) -> io::Result<u64> {
        if let Some(writing) = self.writing.take() {
            writing.await??;
        }
        let whole = self.filling.len / BLOCK * BLOCK;
        let (file, offset) = (Arc::clone(&self.file), self.offset);
        let temporary = self.temporary.take().expect("not finished yet");
        let destination = self.destination.clone();
        let filling = std::mem::take(&mut self.filling);
        let written = tokio::task::spawn_blocking(move || {
            let bytes = filling.filled();
            let finished = write_at(&file, &bytes[..whole], offset)
                .and_then(|()| buffered(&file))
                .and_then(|()| write_at(&file, &bytes[whole..], offset + whole as u64))
                .and_then(|()| std::fs::rename(&temporary, &destination));
            if finished.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            finished.map(|()| offset + bytes.len() as u64)
        })
        .await;
        match written {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        if let Some(temporary) = self.temporary.take() {
            let _ = std::fs::remove_file(temporary);
        }
    }
}

/// What marks a temporary file's name, before its owner.
const PARTIAL_MARKER: &str = ".delt-partial-";

/// The owner of a temporary file `name` that [`DirectFile`] writes; `None` for other names.
pub fn partial_owner(name: &str) -> Option<Owner> {
    let at = name.rfind(PARTIAL_MARKER)?;
    let (owner, n) = Owner::parse(&name[at + PARTIAL_MARKER.len()..])?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(owner)
}

/// A number that differs between the files one process writes.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Creates `path`, new, for direct writes where the file system allows them.
fn open(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match options.clone().custom_flags(libc::O_DIRECT).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            opened => return opened,
        }
    }
    options.open(path)
}

/// Writes all of `bytes` at `offset`; a direct write that the file system refuses is written
/// again, and all later ones, through the page cache.
fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    match file.write_all_at(bytes, offset) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            buffered(file)?;
            file.write_all_at(bytes, offset)
        }
        result => result,
    }
}

/// Turns direct writes off for `file` (a tail that does not fill a block needs that).
fn buffered(file: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFL and F_SETFL only read and set the flags of an open descriptor.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ from position to position.
    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + seed as usize) as u8).collect()
    }

    #[tokio::test]
    async fn writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // Pieces that end mid-block, fill buffers exactly and span several buffers.
        let pieces = [
            bytes(1, 1),
            bytes(BLOCK - 1, 2),
            bytes(BUFFER_BYTES - BLOCK, 3),
            bytes(2 * BUFFER_BYTES + 17, 4),
            bytes(0, 5),
            bytes(BLOCK * 3, 6),
            bytes(123, 7),
        ];
        for count in 0..=pieces.len() {
            let destination = dir.path().join(format!("sub/out-{count}.jsonl"));
            let mut file = DirectFile::create(destination.clone()).unwrap();
            let mut expected = Vec::new();
            for piece in &pieces[..count] {
                file.write(piece).await.unwrap();
                expected.extend_from_slice(piece);
            }
            assert!(!destination.exists(), "appears only when finished");
            assert_eq!(file.finish().await.unwrap(), expected.len() as u64);
            assert!(std::fs::read(&destination).unwrap() == expected, "{count}");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(names.is_empty(), "left behind: {names:?}");
    }

    #[test]
    fn temporary_names_record_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let file = DirectFile::create(dir.path().join("out.v1.jsonl")).unwrap();
        let name = file.temporary.as_ref().unwrap().file_name().unwrap();
        let name = name.to_str().unwrap();
        assert!(name.starts_with(".out.v1.jsonl.delt-partial-"), "{name}");
        assert_eq!(partial_owner(name).as_ref(), Some(Owner::current()));
        assert!(Owner::current().start > 0, "read from /proc");
        assert!(!Owner::current().is_gone());
        for other in [
            "out.jsonl",
            ".out.jsonl.delt-partial-12-34_0",
            ".out.jsonl.delt-partial-12-34@host_",
            ".out.jsonl.delt-partial-12@host_0",
            ".out.jsonl.delt-partial-x-34@host_0",
            ".out.jsonl.delt-partial-12-34@a/b_0",
        ] {
            assert_eq!(partial_owner(other), None, "{other}");
        }
    }

    #[test]
    fn owners_elsewhere_or_alive_are_not_gone() {
        let me = Owner::current().clone();
        let elsewhere = Owner {
            host: format!("{}-other", me.host),
            pid: u32::MAX,
            ..me.clone()
        };
        assert!(!elsewhere.is_gone());
        let reused = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(reused.is_gone(), "same pid, another start: another process");
        let unknown_start = Owner {
            start: 0,
            ..me.clone()
        };
        assert!(!unknown_start.is_gone());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let ended = Owner {
            pid: child.id(),
            ..me
        };
        assert!(ended.is_gone());
    }

    #[tokio::test]
    async fn an_unfinished_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("out.jsonl");
        std::fs::write(&destination, b"before").unwrap();
        let mut file = DirectFile::create(destination.clone()).unwrap();
        file.write(&bytes(BUFFER_BYTES + 5, 1)).await.unwrap();
        drop(file);
        assert_eq!(std::fs::read(&destination).unwrap(), b"before");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
