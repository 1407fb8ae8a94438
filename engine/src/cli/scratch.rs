//! A directory of one run's temporary files, gone when the run ends, however it ends.
//!
//! Sorts and DELT buffers spill to temporary files under a memory limit. delt points `TMPDIR`
//! at `delt-run-<owner>` in the system's temporary directory before any thread starts, so every
//! temporary file of the run lands there: a normal end and a stop by Ctrl-C or SIGTERM remove
//! that one directory. After a SIGKILL or a power cut, the next run removes the directories
//! whose process is gone ([`Owner::is_gone`]), and says so.

use std::path::PathBuf;

use crate::io::owner::Owner;

const PREFIX: &str = "delt-run-";

/// This run's directory of temporary files.
pub(super) struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Removes what ended runs left in the temporary directory, makes this run's directory and
    /// points `TMPDIR` at it. Must run before any other thread starts.
    pub(super) fn create() -> anyhow::Result<Self> {
        let base = std::env::temp_dir();
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let owner = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(Owner::parse)
                .filter(|(_, rest)| rest.is_empty());
            if let Some((owner, _)) = owner
                && owner.is_gone()
                && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                eprintln!(
                    "removed {}: temporary files of an interrupted delt run ({owner})",
                    entry.path().display()
                );
            }
        }
        let dir = base.join(format!("{PREFIX}{}", Owner::current().tag()));
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
