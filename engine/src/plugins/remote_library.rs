//! Plugin libraries named by an `s3://` URL, so that one `CREATE FUNCTION` reaches every
//! executor of a cluster without copying files to each host by hand.
//!
//! A library is downloaded once per process (S3 credentials and endpoint from the usual AWS
//! environment variables) into the plugin cache, `$DELT_PLUGIN_CACHE`, else
//! `$XDG_CACHE_HOME/delt/plugins`, else `~/.cache/delt/plugins`, under the SHA-256 of its
//! bytes: a library replaced in the bucket becomes a new file here, which matters because the
//! dynamic loader never loads a path twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use datafusion::error::{DataFusionError, Result};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use url::Url;

use crate::io::object_stores::s3_store;

/// Whether `library` names a library in object storage.
pub fn is_remote(library: &str) -> bool {
    library.starts_with("s3://")
}

/// The local copy of the library at `url`, downloaded on the first call in this process.
pub async fn fetch(url: &str) -> Result<PathBuf> {
    static FETCHED: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let fetched = FETCHED.get_or_init(Default::default);
    if let Some(path) = fetched.lock().expect("plugin cache").get(url) {
        return Ok(path.clone());
    }
    let failed = |e: &dyn std::fmt::Display| {
        DataFusionError::Plan(format!(
            "cannot fetch plugin library {url}: {e}; check the URL and the AWS_* settings \
             (credentials, AWS_REGION, AWS_ENDPOINT) of this host"
        ))
    };
    let parsed = Url::parse(url).map_err(|e| failed(&e))?;
    let store = s3_store(&parsed, &HashMap::new())?;
    let key = ObjectPath::from_url_path(parsed.path()).map_err(|e| failed(&e))?;
    let bytes = store
        .get(&key)
        .await
        .map_err(|e| failed(&e))?
        .bytes()
        .await
        .map_err(|e| failed(&e))?;
    let name = key.filename().unwrap_or("plugin.so").to_string();
    let path = store_in_cache(&bytes, &name).map_err(|e| failed(&e))?;
    fetched
        .lock()
        .expect("plugin cache")
        .insert(url.to_string(), path.clone());
    Ok(path)
}

/// Writes `bytes` to `<cache>/<sha256>/<name>` unless a copy is there already.
fn store_in_cache(bytes: &[u8], name: &str) -> std::io::Result<PathBuf> {
    let hash: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_dir()?.join(hash);
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    // Written beside and renamed: another process may load the path as soon as it exists.
    let partial = tempfile::NamedTempFile::new_in(&dir)?;
    std::fs::write(partial.path(), bytes)?;
    partial.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

fn cache_dir() -> std::io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DELT_PLUGIN_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .map(|home| Path::new(&home).join(".cache"))
            .ok_or_else(|| {
                std::io::Error::other("neither DELT_PLUGIN_CACHE, XDG_CACHE_HOME nor HOME is set")
            })?,
    };
    Ok(base.join("delt").join("plugins"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_by_content() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: the only test of this process that reads the variable.
        unsafe { std::env::set_var("DELT_PLUGIN_CACHE", dir.path()) };
        let a = store_in_cache(b"one", "libq.so").unwrap();
        let again = store_in_cache(b"one", "libq.so").unwrap();
        let b = store_in_cache(b"two", "libq.so").unwrap();
        assert_eq!(a, again);
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&b).unwrap(), b"two");
        assert!(a.starts_with(dir.path()));
    }
}
