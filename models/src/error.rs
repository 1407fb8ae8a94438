//! Errors of model loading and inference.

use std::path::{Path, PathBuf};

/// What went wrong, with the file or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file is missing or unreadable.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        message: String,
    },
    /// A configuration the loader does not support, or an invalid option.
    #[error("{0}")]
    Config(String),
    /// The requested device is not available.
    #[error("{0}")]
    Device(String),
    /// Tokenization failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The caller's progress callback asked the job to stop.
    #[error("stopped on request before the end")]
    Stopped,
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    /// An error about `path`.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// `path` if it exists, else an error saying which file a model directory lacks.
pub fn required_file(dir: &Path, name: &str, what: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::file(
            &path,
            format!("missing: a {what} directory needs {name}"),
        ))
    }
}
