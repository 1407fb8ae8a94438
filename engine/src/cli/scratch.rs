//! A directory of one run's temporary files, gone when the run ends, however it ends.
//!
//! Sorts and DELT buffers spill to temporary files under a memory limit. delt points `TMPDIR`
//! at `delt-run-<host>-<pid>` in the system's temporary directory before any thread starts, so
//! every temporary file of the run lands there: a normal end and a stop by Ctrl-C or SIGTERM
//! remove that one directory. After a SIGKILL or a power cut, the next run on the same host
//! removes the directories whose process no longer runs, and says so.

use std::path::PathBuf;

const PREFIX: &str = "delt-run-";

/// This run's directory of temporary files.
pub(super) struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Removes what dead runs on this host left in the temporary directory, makes this run's
    /// directory and points `TMPDIR` at it. Must run before any other thread starts.
    pub(super) fn create() -> anyhow::Result<Self> {
        let base = std::env::temp_dir();
        let host = host_name();
        let own = format!("{PREFIX}{host}-");
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&own))
                .and_then(|pid| pid.parse::<i32>().ok())
            else {
                continue;
            };
            if !process_runs(pid) && std::fs::remove_dir_all(entry.path()).is_ok() {
                eprintln!(
                    "removed {}: temporary files of an interrupted delt run (pid {pid})",
                    entry.path().display()
                );
            }
        }
        let dir = base.join(format!("{own}{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the temporary directory {}: {e}; set TMPDIR to a writable directory",
                dir.display()
            )
        })?;
        // SAFETY: no other thread has started yet, so none reads the environment meanwhile.
        unsafe { std::env::set_var("TMPDIR", &dir) };
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a process with this id runs on this host.
fn process_runs(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This host's name, as the kernel has it.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if ok && !name.is_empty() => name.replace(['/', '-'], "_"),
        _ => "localhost".into(),
    }
}
