//! Object stores on demand: any `s3://bucket/...` the SQL names works without setup.
//!
//! Credentials and endpoint come from the usual AWS environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
//! ...) and, per statement, from datafusion-cli-style options (`'aws.region'`, `'aws.endpoint'`,
//! `'aws.access_key_id'`, `'aws.secret_access_key'`, `'aws.session_token'`, `'aws.allow_http'`),
//! which win over the environment. Requests fail fast (short connect timeout, two retries) so
//! an unreachable endpoint is an error within seconds, not a hang.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{ClientConfigKey, ObjectStore, RetryConfig};
use url::Url;

use crate::io::local_files::MappedLocalFiles;

/// Prefix of the per-statement S3 options.
pub const AWS_OPTION_PREFIX: &str = "aws.";

/// DataFusion's registry with local files read through memory maps ([`MappedLocalFiles`]),
/// plus S3 stores created the first time a bucket is used.
#[derive(Debug)]
pub struct DeltObjectStoreRegistry {
    inner: DefaultObjectStoreRegistry,
}

impl Default for DeltObjectStoreRegistry {
    fn default() -> Self {
        let inner = DefaultObjectStoreRegistry::new();
        let local = Url::parse("file://").expect("a valid URL");
        inner.register_store(&local, Arc::new(MappedLocalFiles::default()));
        Self { inner }
    }
}

impl ObjectStoreRegistry for DeltObjectStoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.inner.get_store(url).or_else(|not_found| {
            if url.scheme() != "s3" {
                return Err(not_found);
            }
            let store = s3_store(url, &HashMap::new())?;
            self.inner.register_store(url, Arc::clone(&store));
            Ok(store)
        })
    }
}

/// An S3 store for the bucket of `url`, configured from the environment and then `options`
/// (keys `aws.*`).
pub fn s3_store(url: &Url, options: &HashMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    let bucket = url
        .host_str()
        .ok_or_else(|| DataFusionError::Configuration(format!("no bucket name in '{url}'")))?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let mut has_region = std::env::var_os("AWS_REGION").is_some()
        || std::env::var_os("AWS_DEFAULT_REGION").is_some();
    for (key, value) in options {
        let Some(name) = key.strip_prefix(AWS_OPTION_PREFIX) else {
            continue;
        };
        let config_key = AmazonS3ConfigKey::from_str(&format!("aws_{name}")).map_err(|_| {
            DataFusionError::Configuration(format!(
                "unknown S3 option '{key}': use aws.region, aws.endpoint, aws.access_key_id, \
                 aws.secret_access_key, aws.session_token or aws.allow_http"
            ))
        })?;
        has_region |= matches!(
            config_key,
            AmazonS3ConfigKey::Region | AmazonS3ConfigKey::DefaultRegion
        );
        builder = builder.with_config(config_key, value);
    }
    if !has_region {
        // Without a region the builder asks the network; the common default is right for
        // S3-compatible servers and a clear error otherwise.
        builder = builder.with_region("us-east-1");
    }
    let store = builder
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            "5s",
        )
        .with_retry(RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(15),
            ..RetryConfig::default()
        })
        .build()
        .map_err(|e| {
            DataFusionError::Configuration(format!("cannot configure S3 for '{url}': {e}"))
        })?;
    Ok(Arc::new(store))
}

/// Splits `aws.*` keys out of a statement's options.
pub fn take_aws_options(options: &mut HashMap<String, String>) -> HashMap<String, String> {
    let keys: Vec<String> = options
        .keys()
        .filter(|k| k.starts_with(AWS_OPTION_PREFIX))
        .cloned()
        .collect();
    keys.into_iter()
        .filter_map(|k| options.remove_entry(&k))
        .collect()
}
