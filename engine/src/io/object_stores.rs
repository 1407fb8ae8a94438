//! Object stores on demand: any `s3://bucket/...` the SQL names works without setup.
//!
//! Credentials and endpoint come from the usual AWS environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
//! ...) and, per statement, from datafusion-cli-style options (`'aws.region'`, `'aws.endpoint'`,
//! `'aws.access_key_id'`, `'aws.secret_access_key'`, `'aws.session_token'`, `'aws.allow_http'`),
//! which win over the environment.
//!
//! An endpoint that is down or never answers is an error in bounded time, not a hang:
//!
//! * `'aws.connect_timeout'` (`AWS_CONNECT_TIMEOUT`, default [`DEFAULT_CONNECT_TIMEOUT`]) bounds
//!   opening a connection;
//! * `'aws.timeout'` (`AWS_TIMEOUT`, default [`DEFAULT_TIMEOUT`]) bounds each request, from
//!   connecting to the last byte of the answer. object_store applies it per request: a
//!   multipart upload sends 10 MiB parts as separate requests (up to 8 at once), so it bounds
//!   a part, not the whole file. A read that streams for longer resumes where it stopped,
//!   which counts as a retry;
//! * `'aws.retries'` (default [`DEFAULT_RETRIES`]; object_store reads no variable for it)
//!   bounds the retries of a failed request (connection errors, timeouts of idempotent
//!   requests, 5xx and 429 answers), after exponential backoff from 100 ms with jitter. No
//!   retry starts later than [`RETRY_WINDOW`] after the first try, so that signed requests do
//!   not outlive their credentials.
//!
//! An endpoint that accepts connections and never answers thus fails after about
//! (`aws.retries` + 1) x `aws.timeout`, with an error that names the URL it asked. A permanent
//! failure (403, 404, a missing bucket) is not retried: it fails the statement at once.
//!
//! Every try that fails in a way object_store retries (a 5xx, 429 or 408 answer, a connection
//! error, a timeout) is counted ([`transient_failures`]); the progress line shows the count.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::{BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use crate::io::local_files::MappedLocalFiles;

/// Prefix of the per-statement S3 options.
pub const AWS_OPTION_PREFIX: &str = "aws.";

/// How long opening a connection may take, unless `aws.connect_timeout` or
/// `AWS_CONNECT_TIMEOUT` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: &str = "5s";

/// How long one request may take, unless `aws.timeout` or `AWS_TIMEOUT` says otherwise: long
/// enough for the 8 parts of 10 MiB that a multipart upload has in flight at about 3 MB/s.
pub const DEFAULT_TIMEOUT: &str = "30s";

/// Retries of a failed request, unless `aws.retries` says otherwise.
pub const DEFAULT_RETRIES: usize = 3;

/// The statement option that sets the retries (object_store has no key for it).
const RETRIES_OPTION: &str = "aws.retries";

/// No retry of a request starts later than this after its first try.
pub const RETRY_WINDOW: Duration = Duration::from_secs(180);

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

impl DeltObjectStoreRegistry {
    /// The registry with a store for each bucket of `buckets`, opened with its options.
    pub fn with_buckets(buckets: &BucketOptions) -> Result<Self> {
        let registry = Self::default();
        for (bucket, options) in &buckets.buckets {
            let url = Url::parse(&format!("s3://{bucket}"))
                .map_err(|e| DataFusionError::Configuration(format!("bucket {bucket}: {e}")))?;
            registry.register_store(&url, s3_store(&url, options)?);
        }
        Ok(registry)
    }
}

/// The `aws.*` options that statements gave, per bucket, as settings of the session
/// (`delt_s3.<bucket>` = the options as a JSON object). A cluster client sends its session's
/// settings with every query, so the scheduler and the executors open each bucket as the
/// client does ([`DeltObjectStoreRegistry::with_buckets`]).
#[derive(Debug, Clone, Default)]
pub struct BucketOptions {
    buckets: BTreeMap<String, HashMap<String, String>>,
}

impl BucketOptions {
    /// Opens `bucket` with `options` from now on.
    pub fn insert(&mut self, bucket: &str, options: &HashMap<String, String>) {
        self.buckets.insert(bucket.to_string(), options.clone());
    }
}

impl ConfigExtension for BucketOptions {
    const PREFIX: &'static str = "delt_s3";
}

impl ExtensionOptions for BucketOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, bucket: &str, options: &str) -> Result<()> {
        let options: HashMap<String, String> = serde_json::from_str(options).map_err(|e| {
            DataFusionError::Configuration(format!("{}.{bucket}: {e}", Self::PREFIX))
        })?;
        self.insert(bucket, &options);
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.buckets
            .iter()
            .map(|(bucket, options)| ConfigEntry {
                key: format!("{}.{bucket}", Self::PREFIX),
                value: Some(serde_json::to_string(options).unwrap_or_default()),
                description: "aws.* options of an s3:// bucket, given by a statement",
            })
            .collect()
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
    for (key, variable, default) in [
        (
            ClientConfigKey::ConnectTimeout,
            "AWS_CONNECT_TIMEOUT",
            DEFAULT_CONNECT_TIMEOUT,
        ),
        (ClientConfigKey::Timeout, "AWS_TIMEOUT", DEFAULT_TIMEOUT),
    ] {
        if std::env::var_os(variable).is_none() {
            builder = builder.with_config(AmazonS3ConfigKey::Client(key), default);
        }
    }
    let mut has_region = std::env::var_os("AWS_REGION").is_some()
        || std::env::var_os("AWS_DEFAULT_REGION").is_some();
    let mut retries = DEFAULT_RETRIES;
    for (key, value) in options {
        if key == RETRIES_OPTION {
            retries = value.trim().parse().map_err(|_| {
                DataFusionError::Configuration(format!(
                    "S3 option '{key}' must be a number of retries (0 or more), got '{value}'"
                ))
            })?;
            continue;
        }
        let Some(name) = key.strip_prefix(AWS_OPTION_PREFIX) else {
            continue;
        };
        let config_key = AmazonS3ConfigKey::from_str(&format!("aws_{name}")).map_err(|_| {
            DataFusionError::Configuration(format!(
                "unknown S3 option '{key}': use aws.region, aws.endpoint, aws.access_key_id, \
                 aws.secret_access_key, aws.session_token, aws.allow_http, aws.connect_timeout, \
                 aws.timeout or aws.retries"
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
        .with_http_connector(CountingConnector)
        .with_retry(RetryConfig {
            max_retries: retries,
            retry_timeout: RETRY_WINDOW,
            backoff: BackoffConfig::default(),
        })
        .build()
        .map_err(|e| {
            let hint = if e.to_string().contains("as Duration") {
                " (aws.connect_timeout and aws.timeout take durations such as '5s', '500ms' or '2m')"
            } else {
                ""
            };
            DataFusionError::Configuration(format!("cannot configure S3 for '{url}': {e}{hint}"))
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

/// Tries of S3 requests that failed transiently, in this process.
static TRANSIENT_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many tries of S3 requests failed in a way that object_store retries (a 5xx, 429 or 408
/// answer, a connection error or a timeout) since the process started. A request that fails
/// every try counts each of them.
pub fn transient_failures() -> u64 {
    TRANSIENT_FAILURES.load(Ordering::Relaxed)
}

/// object_store's HTTP client, counting the tries that fail transiently.
#[derive(Debug)]
struct CountingConnector;

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(CountingClient(
            ReqwestConnector::default().connect(options)?,
        )))
    }
}

#[derive(Debug)]
struct CountingClient(HttpClient);

#[async_trait]
impl HttpService for CountingClient {
    async fn call(&self, request: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let response = self.0.execute(request).await;
        let transient = match &response {
            Ok(answer) => {
                let status = answer.status().as_u16();
                status >= 500 || status == 429 || status == 408
            }
            Err(e) => matches!(
                e.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            ),
        };
        if transient {
            TRANSIENT_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        response
    }
}
