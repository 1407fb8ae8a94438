//! S3 against a real S3-compatible server (moto), started by the test.
//!
//! `moto_server` comes from `pip install 'moto[server]'` (`.ci/run` installs it into `.venv`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::common::*;

/// A moto server on a free local port, stopped on drop.
pub(crate) struct Moto {
    child: Child,
    pub(crate) endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("DELT_MOTO_SERVER") {
        return path.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

pub(crate) fn start_moto() -> Moto {
    let port = free_port();
    let child = Command::new(moto_binary())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start moto_server ({e}): run .ci/run or pip install 'moto[server]'")
        });
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

/// Creates a bucket with a plain HTTP PUT (moto needs no signature for that).
pub(crate) fn create_bucket(endpoint: &str, bucket: &str) {
    let host = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "create bucket: {response}"
    );
}

/// A separate S3 client for `name` at `endpoint`, to look at what delt wrote.
fn bucket(endpoint: &str, name: &str) -> object_store::aws::AmazonS3 {
    AmazonS3Builder::new()
        .with_bucket_name(name)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap()
}

/// The AWS variables for an S3 server at `endpoint` that takes any key pair.
pub(crate) fn s3_env(endpoint: &str) -> [(&str, &str); 4] {
    [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
    ]
}

/// Writes `rows` to `s3://corpus/cc/` at `endpoint` as Parquet shards of `rows_per_shard`
/// rows, with credentials from the environment.
pub(crate) fn upload_corpus(endpoint: &str, rows: &[Row], rows_per_shard: usize) {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), rows, 1);
    let upload = format!(
        "COPY (SELECT * FROM '{}') TO 's3://corpus/cc/' STORED AS PARQUET \
         OPTIONS (rows_per_shard {rows_per_shard})",
        p(dir.path(), "in/")
    );
    let out = delt_env(&["sql", "-c", &upload], &s3_env(endpoint));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every key of the bucket `corpus` at `endpoint`, sorted, and the ids of the Parquet objects
/// under `prefix` in key order, read with a separate S3 client.
pub(crate) fn keys_and_ids(endpoint: &str, prefix: &str) -> (Vec<String>, Vec<i64>) {
    let store = bucket(endpoint, "corpus");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut keys: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        let mut ids = Vec::new();
        for key in keys.iter().filter(|k| k.starts_with(prefix)) {
            let object = store.get(&ObjectPath::from(key.as_str())).await.unwrap();
            let bytes = object.bytes().await.unwrap();
            let batches = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap();
            for batch in batches {
                ids.extend(
                    ids_and_scores(&batch.unwrap())
                        .into_iter()
                        .map(|(id, _)| id),
                );
            }
        }
        (keys, ids)
    })
}

fn delt_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = delt_command();
    command.args(args).arg("--quiet");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn fold_a_parquet_dataset_in_a_bucket_and_write_it_back_in_order() {
    let moto = start_moto();
    create_bucket(&moto.endpoint, "corpus");
    let rows = rows(12_000, 21, true);
    // Upload with credentials from the environment: several input objects.
    upload_corpus(&moto.endpoint, &rows, 5000);

    // Fold with per-table options only (no AWS_* variables at all).
    let options = format!(
        "OPTIONS ('aws.endpoint' '{}', 'aws.access_key_id' 'test', 'aws.secret_access_key' 'test', \
         'aws.region' 'us-east-1', 'aws.allow_http' 'true')",
        moto.endpoint
    );
    let create = format!(
        "CREATE EXTERNAL TABLE docs STORED AS PARQUET LOCATION 's3://corpus/cc/' {options}"
    );
    let fold = format!(
        "COPY (SELECT * FROM docs ORDER BY fold_order(score, 3)) TO 's3://corpus/curated/' STORED AS PARQUET \
         {}",
        options.replace("OPTIONS (", "OPTIONS (rows_per_shard 2500, ")
    );
    let out = delt_env(&["sql", "-c", &create, "-c", &fold], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Read back with a separate S3 client, shard by shard in name order.
    let (listed, got) = keys_and_ids(&moto.endpoint, "curated/");
    assert_eq!(
        listed,
        [
            "cc/part-00000.parquet",
            "cc/part-00001.parquet",
            "cc/part-00002.parquet",
            "curated/part-00000.parquet",
            "curated/part-00001.parquet",
            "curated/part-00002.parquet",
            "curated/part-00003.parquet",
            "curated/part-00004.parquet"
        ]
    );
    assert_eq!(got, reference_fold(&rows, 3, "asc"));
}

#[test]
fn unreachable_endpoint_fails_fast_with_a_clear_message() {
    let port = free_port(); // nothing listens there
    let started = Instant::now();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = delt_env(
        &["sql", "-c", "SELECT count(*) FROM 's3://corpus/cc/'"],
        &[
            ("AWS_ENDPOINT", &endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("S3") && stderr.contains("endpoint"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn unauthorized_request_fails_with_a_clear_message() {
    // A real HTTP server that denies everything, as S3 does for bad credentials.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let body = "<?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code>\
                        <Message>The AWS Access Key Id you provided does not exist.</Message></Error>";
            let _ = write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let started = Instant::now();
    let out = delt_env(
        &[
            "sql",
            "-c",
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://corpus/cc/'",
        ],
        &[
            ("AWS_ENDPOINT", &endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "wrong"),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        stderr.contains("403") && stderr.contains("credentials"),
        "{stderr}"
    );
}

/// A COPY to a directory on S3 removes the staging prefixes beside it of ended runs on this
/// host, and only those.
#[test]
fn staging_prefixes_of_ended_runs_are_removed() {
    let moto = start_moto();
    create_bucket(&moto.endpoint, "corpus");
    let store = bucket(&moto.endpoint, "corpus");
    let (host, ended) = (host(), ended_pid());
    let stale = format!("curated/.delt-staging-{ended}-4242@{host}_1700000000000-v2");
    let foreign = format!("curated/.delt-staging-{ended}-4242@elsewhere.example_1700000000000-v2");
    let kept = [
        format!("{foreign}/0000000000.parquet"),
        "curated/.notes".to_string(),
        "curated/v1/part-00000.parquet".to_string(),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listed = || -> Vec<String> {
        runtime.block_on(async {
            let mut keys: Vec<String> = store
                .list(Some(&ObjectPath::from("curated")))
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .unwrap();
            keys.sort();
            keys
        })
    };
    runtime.block_on(async {
        let staged = [0, 1].map(|i| format!("{stale}/000000000{i}.parquet"));
        for key in kept.iter().chain(&staged) {
            store
                .put(&ObjectPath::from(key.as_str()), "half".into())
                .await
                .unwrap();
        }
    });
    assert_eq!(listed().len(), kept.len() + 2);

    let dir = tempfile::tempdir().unwrap();
    let rows = rows(1000, 22, false);
    write_parquet_files(&dir.path().join("in"), &rows, 1);
    let copy = format!(
        "COPY (SELECT * FROM '{}') TO 's3://corpus/curated/v2/' STORED AS PARQUET \
         OPTIONS (rows_per_shard 600)",
        p(dir.path(), "in/")
    );
    let out = delt_env(
        &["sql", "-c", &copy],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_ENDPOINT", moto.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "removed leftover s3://corpus/{stale} of an interrupted run (pid {ended} on {host})"
        )
    );
    let mut expected: Vec<String> = kept.to_vec();
    expected.extend(
        [
            "curated/v2/part-00000.parquet",
            "curated/v2/part-00001.parquet",
        ]
        .map(String::from),
    );
    expected.sort();
    assert_eq!(listed(), expected);
}

/// An endpoint that accepts connections and never answers: with a short 'aws.timeout' every
/// try gives up after it, 'aws.retries' tries again that many times, and the error names the
/// URL it asked and what to check.
#[test]
fn endpoint_that_never_answers_fails_after_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let options = |retries: &str| {
        format!(
            "OPTIONS ('aws.endpoint' 'http://{address}', 'aws.allow_http' 'true', \
             'aws.access_key_id' 'a', 'aws.secret_access_key' 'b', 'aws.timeout' '2s'{retries})"
        )
    };
    for (statement, tries) in [
        (
            format!(
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://corpus/cc/' {}",
                options("")
            ),
            4, // the default 3 retries
        ),
        (
            format!(
                "COPY (SELECT 1 AS x) TO 's3://corpus/out/' STORED AS PARQUET {}",
                options(", 'aws.retries' '1'")
            ),
            2,
        ),
    ] {
        accepted.store(0, Ordering::SeqCst);
        let started = Instant::now();
        let out = delt_env(&["sql", "-c", &statement], &[]);
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            elapsed < Duration::from_secs(20),
            "took {elapsed:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("http://{address}/corpus")),
            "no URL: {stderr}"
        );
        assert!(stderr.contains("aws.timeout"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert_eq!(accepted.load(Ordering::SeqCst), tries, "{stderr}");
    }
}

#[test]
fn bad_timeout_and_retry_options_are_named() {
    for (option, value) in [
        ("aws.timeout", "soon"),
        ("aws.connect_timeout", "5"),
        ("aws.retries", "-1"),
    ] {
        let stderr = fail_sql(&[&format!(
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://corpus/cc/' \
             OPTIONS ('aws.endpoint' 'http://127.0.0.1:9', '{option}' '{value}')"
        )]);
        assert!(
            stderr.contains(option)
                && [format!("'{value}'"), format!("\"{value}\"")]
                    .iter()
                    .any(|quoted| stderr.contains(quoted)),
            "{stderr}"
        );
    }
}

/// A proxy in front of an S3 server that answers the first try of every `every`-th distinct
/// request (method and path) with `503 Slow Down`, as S3 does when throttling, and forwards
/// everything else; one request per connection upstream.
struct FaultProxy {
    endpoint: String,
    failed: Arc<AtomicUsize>,
}

fn start_fault_proxy(upstream: &str, every: usize) -> FaultProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_string();
    let failed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let counter = Arc::clone(&failed);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (upstream, seen, failed) =
                (upstream.clone(), Arc::clone(&seen), Arc::clone(&counter));
            std::thread::spawn(move || {
                let _ = proxy_connection(client, &upstream, &seen, &failed, every);
            });
        }
    });
    FaultProxy { endpoint, failed }
}

fn proxy_connection(
    client: TcpStream,
    upstream: &str,
    seen: &std::sync::Mutex<std::collections::HashSet<String>>,
    failed: &AtomicUsize,
    every: usize,
) -> std::io::Result<()> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(client.try_clone()?);
    let mut client = client;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut head = request_line.clone();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            assert!(!lower.starts_with("transfer-encoding"), "chunked: {line}");
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if !lower.starts_with("connection:") {
                head.push_str(&line);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let first_try = {
            let mut seen = seen.lock().unwrap();
            seen.insert(request_line.clone()).then_some(seen.len())
        };
        if first_try.is_some_and(|n| n % every == 0) {
            failed.fetch_add(1, Ordering::SeqCst);
            let answer = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                          <Message>Please reduce your request rate.</Message></Error>";
            write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
                answer.len()
            )?;
            if !request_line.starts_with("HEAD ") {
                client.write_all(answer.as_bytes())?;
            }
            continue;
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut server = TcpStream::connect(upstream)?;
        server.write_all(head.as_bytes())?;
        server.write_all(&body)?;
        let mut response = Vec::new();
        server.read_to_end(&mut response)?;
        client.write_all(&response)?;
        // The server closed its connection: close this one too.
        return Ok(());
    }
}

/// A resumable COPY from S3 to S3 through a proxy that throttles some requests: every failed
/// try is retried, the progress summary says how many, and no row is lost or duplicated. A
/// missing bucket is a permanent failure: no retries, one clear line.
#[test]
fn a_resumable_copy_through_throttling_s3_retries_and_loses_no_rows() {
    let moto = start_moto();
    create_bucket(&moto.endpoint, "corpus");
    let rows = rows(8000, 41, true);
    upload_corpus(&moto.endpoint, &rows, 1000);

    let proxy = start_fault_proxy(&moto.endpoint, 3);
    let through_proxy = s3_env(&proxy.endpoint);
    let fold = "COPY (SELECT id, score, text_quality(text) AS q FROM 's3://corpus/cc/' \
                ORDER BY fold_order(score, 3)) TO 's3://corpus/curated/' STORED AS PARQUET \
                OPTIONS (rows_per_shard 3000)";
    let mut command = delt_command();
    for var in ["AWS_ENDPOINT_URL", "AWS_REGION"] {
        command.env_remove(var);
    }
    let out = command
        .args(["sql", "--resume", "--plugin"])
        .arg(rust_plugin("text_quality"))
        .args(["-c", fold])
        .envs(through_proxy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let failed = proxy.failed.load(Ordering::SeqCst);
    assert!(failed > 0, "the proxy failed no request: {stderr}");
    let retried: usize = stderr
        .split(", S3: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retries reported: {stderr}"));
    assert!(
        retried >= failed,
        "{retried} reported, {failed} failed: {stderr}"
    );
    assert!(
        stderr.contains("job s3://corpus/curated.delt-job: 8 units"),
        "{stderr}"
    );

    let (listed, ids) = keys_and_ids(&moto.endpoint, "curated/");
    assert_eq!(ids, reference_fold(&rows, 3, "asc"));
    let curated: Vec<&String> = listed.iter().filter(|p| !p.starts_with("cc/")).collect();
    assert_eq!(
        curated,
        [
            "curated/part-00000.parquet",
            "curated/part-00001.parquet",
            "curated/part-00002.parquet"
        ],
        "only the output: the job is removed"
    );

    let missing =
        "COPY (SELECT id FROM 's3://corpus/cc/') TO 's3://no-such-bucket/out/' STORED AS PARQUET";
    let out = delt_env(&["sql", "--resume", "-c", missing], &through_proxy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("s3://no-such-bucket/out.delt-job") && stderr.contains("NoSuchBucket"),
        "{stderr}"
    );
    assert!(!stderr.contains("retries"), "not retried: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// A trainer export to a bucket: shards are written locally, uploaded to a staging prefix and
/// published; the objects equal a local export of the same query byte for byte.
#[test]
fn megatron_export_to_a_bucket_equals_the_local_export() {
    let moto = start_moto();
    create_bucket(&moto.endpoint, "corpus");
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(3000, 5, true);
    write_parquet_files(&dir.path().join("in"), &rows, 2);
    let words: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let tokenizer = dir.path().join("tokenizer.json");
    delt_models::tokenizer::train_bpe(&words, 200)
        .unwrap()
        .save(&tokenizer, false)
        .unwrap();
    let export = |to: &str, aws: &str| {
        format!(
            "COPY (SELECT id, text FROM '{}' ORDER BY fold_order(score, 3)) TO '{to}' STORED AS MEGATRON \
             OPTIONS (tokenizer '{}', eos_token '<pad>', shard_tokens 20000{aws})",
            p(dir.path(), "in/"),
            tokenizer.display(),
        )
    };
    let aws = format!(
        ", 'aws.endpoint' '{}', 'aws.access_key_id' 'test', 'aws.secret_access_key' 'test', \
         'aws.region' 'us-east-1', 'aws.allow_http' 'true'",
        moto.endpoint
    );
    let local = dir.path().join("local");
    for (to, aws) in [
        ("s3://corpus/train/".to_string(), aws.as_str()),
        (format!("{}/", local.display()), ""),
    ] {
        let out = delt_env(&["sql", "-c", &export(&to, aws)], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let local_files = names(&local);
    assert!(local_files.len() >= 6, "several shards: {local_files:?}");
    let store = bucket(&moto.endpoint, "corpus");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut listed: Vec<ObjectPath> = store
            .list(None)
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap();
        listed.sort();
        let remote: Vec<String> = listed.iter().map(|p| p.to_string()).collect();
        let expected: Vec<String> = local_files.iter().map(|n| format!("train/{n}")).collect();
        assert_eq!(remote, expected, "no staging prefix left");
        for (path, name) in listed.iter().zip(&local_files) {
            let bytes = store.get(path).await.unwrap().bytes().await.unwrap();
            assert_eq!(
                bytes.as_ref(),
                std::fs::read(local.join(name)).unwrap(),
                "{name}"
            );
        }
    });
}
