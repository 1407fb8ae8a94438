//! Cluster mode: a scheduler and two executors started as real processes on loopback ports,
//! running the same SQL as a local run.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A scheduler and its executors, killed on drop; their stderr goes to files in `logs`.
struct Cluster {
    url: String,
    scheduler: Child,
    executors: Vec<Child>,
    logs: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain([&mut self.scheduler]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    /// Everything the processes printed, for assertion messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.logs.path()).unwrap() {
            let path = entry.unwrap().path();
            text += &format!("--- {}\n", path.display());
            let _ = std::fs::File::open(&path)
                .unwrap()
                .read_to_string(&mut text);
        }
        text
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two free ports in a row (an executor serves Flight on P and gRPC on P + 1).
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// `delt` for a process of a cluster: no AWS variables but those of `env`.
fn cluster_process(env: &[(&str, &str)]) -> Command {
    let mut command = delt_command();
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT",
        "AWS_ALLOW_HTTP",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command
}

/// Starts a scheduler and `executors` executors of 1 slot each; `env` goes to every process.
fn start_cluster(executors: usize, env: &[(&str, &str)]) -> Cluster {
    start_cluster_with(executors, env, &[])
}

/// As [`start_cluster`], with `executor_args` added to every executor's command line.
fn start_cluster_with(executors: usize, env: &[(&str, &str)], executor_args: &[&str]) -> Cluster {
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().to_path_buf();
    let log = |name: &str| std::fs::File::create(log_dir.join(name)).unwrap();
    let port = free_port();
    let scheduler = cluster_process(env)
        .args(["cluster", "scheduler", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--executor-timeout", "5"])
        .stdout(Stdio::null())
        .stderr(log("scheduler"))
        .spawn()
        .unwrap();
    wait_for_port(port, "the scheduler");
    let mut cluster = Cluster {
        url: format!("df://127.0.0.1:{port}"),
        scheduler,
        executors: Vec::new(),
        logs,
    };
    for i in 0..executors {
        let bind = free_port_pair();
        let child = cluster_process(env)
            .args(["cluster", "executor", "--scheduler"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--bind")
            .arg(format!("127.0.0.1:{bind}"))
            .args(["--slots", "1", "--heartbeat", "1"])
            .args(executor_args)
            .stdout(Stdio::null())
            .stderr(log(&format!("executor-{i}")))
            .spawn()
            .unwrap();
        cluster.executors.push(child);
        wait_for_port(bind + 1, "an executor");
    }
    // Executors register with the scheduler right after they listen.
    std::thread::sleep(Duration::from_millis(500));
    cluster
}

/// `delt sql` with `statements`, locally or on `cluster`.
fn sql(statements: &[String], cluster: Option<&Cluster>, env: &[(&str, &str)]) -> Output {
    let mut command = delt_command();
    command.envs(env.iter().copied()).args(["sql", "--quiet"]);
    if let Some(cluster) = cluster {
        command.args(["--cluster", &cluster.url]);
    }
    for statement in statements {
        command.args(["-c", statement]);
    }
    command.output().unwrap()
}

/// Every file under `dir` by relative path, with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    files.sort();
    files
}

/// Asserts that `delt sql` succeeded; a failure shows its stderr and the cluster's logs.
fn succeeded(out: &Output, cluster: Option<&Cluster>) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.map(Cluster::logs).unwrap_or_default()
    );
}

/// Asserts that directories `want` and `got` hold the same files with the same bytes;
/// returns how many.
fn assert_same_files(want: &Path, got: &Path) -> usize {
    let (want, got) = (tree(want), tree(got));
    assert_eq!(
        want.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        got.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for ((path, a), (_, b)) in want.iter().zip(&got) {
        assert!(a == b, "{} differs from the local run's", path.display());
    }
    want.len()
}

/// Asserts that every executor of `cluster` made the plugin function `name` (ran its tasks).
fn assert_every_executor_made(cluster: &Cluster, name: &str) {
    for i in 0..cluster.executors.len() {
        let log = std::fs::read_to_string(cluster.logs.path().join(format!("executor-{i}")));
        assert!(
            log.unwrap()
                .contains(&format!("plugin function {name} made from")),
            "{}",
            cluster.logs()
        );
    }
}

/// The same scoring, folding, selection and shuffling SQL on 8 Parquet files, as `delt sql`
/// writes it into `out` (the folded and the shuffled directories by the executors, in a
/// cluster).
fn pipeline(input: &Path, out: &Path, plugin: &Path) -> Vec<String> {
    let input = input.display();
    let out = out.display();
    vec![
        format!(
            "CREATE FUNCTION quality(t VARCHAR) RETURNS DOUBLE LANGUAGE delt \
             AS '{}#text_quality?batch_size=500'",
            plugin.display()
        ),
        format!(
            "COPY (SELECT id, text, quality(text) AS q FROM '{input}/' \
             ORDER BY fold_order(quality(text), 3)) \
             TO '{out}/folded' STORED AS PARQUET OPTIONS (rows_per_shard 2500)"
        ),
        format!(
            "COPY (SELECT id, score FROM '{input}/' ORDER BY fold_order(score, 4, 'desc')) \
             TO '{out}/by_score.parquet'"
        ),
        format!(
            "COPY (SELECT id FROM '{input}/' WHERE top_k(score, 700) ORDER BY shuffle_order(7)) \
             TO '{out}/shuffled.parquet'"
        ),
        format!(
            "COPY (SELECT id, text FROM '{input}/' ORDER BY shuffle_order(11)) \
             TO '{out}/shuffled' STORED AS JSON OPTIONS (rows_per_shard 5000)"
        ),
        // Every row tied: the fold is input order, which the tasks' slices must keep.
        format!(
            "COPY (SELECT id FROM '{input}/' ORDER BY fold_order(1.0, 3)) TO '{out}/ties.parquet'"
        ),
    ]
}

#[test]
fn a_scored_fold_on_two_executors_equals_the_local_run_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_parquet_files(&input, &rows(12_000, 11, true), 8);
    let plugin = rust_plugin("text_quality");
    let local = dir.path().join("local");
    let out = sql(&pipeline(&input, &local, &plugin), None, &[]);
    succeeded(&out, None);

    let cluster = start_cluster(2, &[]);
    let remote = dir.path().join("remote");
    let out = sql(&pipeline(&input, &remote, &plugin), Some(&cluster), &[]);
    succeeded(&out, Some(&cluster));
    let files = assert_same_files(&local, &remote);
    assert!(files >= 9, "{files} files");
    // The scoring ran on both executors: each made the plugin function for its tasks.
    assert_every_executor_made(&cluster, "quality");
    // The shards of the folded directory (5) and of the shuffled one (3) were written by the
    // executors, each shard once.
    let mut shards = Vec::new();
    for i in 0..cluster.executors.len() {
        let log = std::fs::read_to_string(cluster.logs.path().join(format!("executor-{i}")));
        let log = log.unwrap();
        let written: Vec<String> = log
            .lines()
            .filter_map(|line| line.strip_prefix("fold shard "))
            .map(|line| line.split(':').next().unwrap().to_string())
            .collect();
        assert!(
            !written.is_empty(),
            "executor {i} wrote no shard\n{}",
            cluster.logs()
        );
        shards.extend(written);
    }
    shards.sort();
    assert_eq!(
        shards,
        ["0", "0", "1", "1", "2", "2", "3", "4"],
        "{}",
        cluster.logs()
    );
    let logs = cluster.logs();
    assert_eq!(ids(&local.join("by_score.parquet")).len(), 12_000);
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn a_selection_scores_on_every_executor_and_equals_the_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_parquet_files(&input, &rows(9_000, 5, true), 8);
    let plugin = rust_plugin("text_quality");
    let statements = |out: &Path| {
        let (input, out) = (input.display(), out.display());
        vec![
            format!(
                "CREATE FUNCTION quality(t VARCHAR) RETURNS DOUBLE LANGUAGE delt \
                 AS '{}#text_quality?batch_size=300'",
                plugin.display()
            ),
            // Selected by a plugin's scores, then folded: rows in the files' order.
            format!(
                "COPY (SELECT id, text FROM '{input}/' WHERE top_r(quality(text), 0.3) \
                 ORDER BY fold_order(quality(text), 2)) TO '{out}/selected' \
                 STORED AS PARQUET OPTIONS (rows_per_shard 1000)"
            ),
            // NULL scores are never kept; ties at the cut keep the later rows.
            format!(
                "COPY (SELECT id, score FROM '{input}/' WHERE top_k(score, 4000)) \
                 TO '{out}/top.parquet'"
            ),
            format!(
                "COPY (SELECT id, score FROM '{input}/' WHERE top_k(1.0, 500)) \
                 TO '{out}/ties.parquet'"
            ),
        ]
    };
    let local = dir.path().join("local");
    let out = sql(&statements(&local), None, &[]);
    succeeded(&out, None);
    let cluster = start_cluster(2, &[]);
    let remote = dir.path().join("remote");
    let out = sql(&statements(&remote), Some(&cluster), &[]);
    succeeded(&out, Some(&cluster));
    assert_same_files(&local, &remote);
    assert_eq!(
        ids(&local.join("ties.parquet")),
        (8_500..9_000).collect::<Vec<i64>>()
    );
    assert_eq!(ids(&local.join("top.parquet")).len(), 4_000);
    // The selection's scoring ran on both executors, not in one task.
    assert_every_executor_made(&cluster, "quality");
}

#[test]
fn folds_and_selections_sort_on_the_executors_within_their_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_parquet_files(&input, &rows(60_000, 3, true), 8);
    let fold = |out: &Path| {
        format!(
            "COPY (SELECT id, text, score FROM '{}/' ORDER BY fold_order(score, 3, 'zigzag')) \
             TO '{}'",
            input.display(),
            out.display()
        )
    };
    let fold_to_shards = |out: &Path| {
        format!(
            "COPY (SELECT id, text, score FROM '{}/' ORDER BY fold_order(score, 3, 'zigzag')) \
             TO '{}' STORED AS PARQUET OPTIONS (rows_per_shard 7000)",
            input.display(),
            out.display()
        )
    };
    let select = |out: &Path| {
        format!(
            "COPY (SELECT id, text FROM '{}/' WHERE top_r(score, 0.6)) TO '{}'",
            input.display(),
            out.display()
        )
    };
    let local = dir.path().join("local.parquet");
    let local_shards = dir.path().join("local_shards");
    let local_selected = dir.path().join("local_selected.parquet");
    let out = sql(
        &[
            fold(&local),
            fold_to_shards(&local_shards),
            select(&local_selected),
        ],
        None,
        &[],
    );
    succeeded(&out, None);

    // A sort sets aside 10 MB for merging what it spilled: 48M leaves each task 38 MB.
    let cluster = start_cluster_with(2, &[], &["--memory-limit", "48M"]);
    // The scheduler plans the sort into the scoring stage's tasks, one per executor slot.
    let explain = format!(
        "EXPLAIN SELECT * FROM '{}/' ORDER BY fold_order(score, 3)",
        input.display()
    );
    let out = sql(&[explain], Some(&cluster), &[]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("strategy=sorted stream") && plan.contains("SortExec"),
        "{plan}"
    );
    // A selection too: its tasks sort by position, and one merge keeps the input order.
    let explain = format!(
        "EXPLAIN SELECT * FROM '{}/' WHERE top_k(score, 10)",
        input.display()
    );
    let out = sql(&[explain], Some(&cluster), &[]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("position first")
            && plan.contains("SortExec")
            && plan.contains("SortPreservingMergeExec"),
        "{plan}"
    );
    // Sorted on the executors under their limit, merged and dealt: the same bytes. To a
    // directory, the executors also write the sorted runs and the shards.
    let remote = dir.path().join("remote.parquet");
    let remote_shards = dir.path().join("remote_shards");
    let remote_selected = dir.path().join("remote_selected.parquet");
    let out = sql(
        &[
            fold(&remote),
            fold_to_shards(&remote_shards),
            select(&remote_selected),
        ],
        Some(&cluster),
        &[],
    );
    succeeded(&out, Some(&cluster));
    assert!(
        std::fs::read(&local_selected).unwrap() == std::fs::read(&remote_selected).unwrap(),
        "the selection under the executors' memory limit differs from the local run's"
    );
    assert!(
        std::fs::read(&local).unwrap() == std::fs::read(&remote).unwrap(),
        "the fold under the executors' memory limit differs from the local run's"
    );
    assert_eq!(assert_same_files(&local_shards, &remote_shards), 9);
    drop(cluster);

    // The limit is the executors' own: one too small to sort a batch fails the query.
    let cluster = start_cluster_with(1, &[], &["--memory-limit", "4K"]);
    let out = sql(
        &[fold(&dir.path().join("tiny.parquet"))],
        Some(&cluster),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 4K limit must not hold the sort");
    assert!(
        stderr.contains("esources exhausted") || stderr.contains("memory"),
        "{stderr}"
    );
    assert!(!dir.path().join("tiny.parquet").exists());
}

#[test]
fn a_killed_executor_leaves_the_job_finished_elsewhere_or_failed_and_nothing_published() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_parquet_files(&input, &rows(6_000, 5, false), 6);
    let plugin = rust_plugin("misbehaving");
    let statements = |out: &Path| {
        vec![
            format!(
                "CREATE FUNCTION slow_len(t VARCHAR) RETURNS DOUBLE LANGUAGE delt \
                 AS '{}#slow?ms=150&batch_size=100'",
                plugin.display()
            ),
            format!(
                "COPY (SELECT id, slow_len(text) AS n FROM '{}/' ORDER BY fold_order(n, 3)) \
                 TO '{}' STORED AS PARQUET OPTIONS (rows_per_shard 1000)",
                input.display(),
                out.display()
            ),
        ]
    };
    let local = dir.path().join("local");
    let out = sql(&statements(&local), None, &[]);
    succeeded(&out, None);

    let mut cluster = start_cluster(2, &[]);
    let remote = dir.path().join("remote");
    let mut command = delt_command();
    command.args(["sql", "--quiet", "--cluster", &cluster.url]);
    for statement in statements(&remote) {
        command.args(["-c", &statement]);
    }
    let client = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 60 batches of 150 ms over 2 slots: the job runs about 5 s; kill one executor mid-way.
    std::thread::sleep(Duration::from_millis(2000));
    let victim = &mut cluster.executors[1];
    // SAFETY: signals a child process of this test.
    assert_eq!(unsafe { libc::kill(victim.id() as i32, libc::SIGKILL) }, 0);
    let _ = victim.wait();
    let started = Instant::now();
    let out = wait_with_timeout(client, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let (want, got) = (tree(&local), tree(&remote));
        let sizes = |t: &[(PathBuf, Vec<u8>)]| {
            t.iter()
                .map(|(p, b)| format!("{} {}", p.display(), b.len()))
                .collect::<Vec<_>>()
        };
        assert!(
            want == got,
            "the finished job differs from the local run: {:?} against {:?}\n{stderr}\n{}",
            sizes(&want),
            sizes(&got),
            cluster.logs()
        );
    } else {
        assert!(
            !remote.exists(),
            "a failed job published {:?}",
            tree(&remote)
                .iter()
                .map(|(p, _)| p.clone())
                .collect::<Vec<_>>()
        );
        assert!(stderr.contains("error"), "{stderr}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{stderr}\n{}",
        cluster.logs()
    );
}

/// Waits for `child` at most `limit`, killing it past that.
fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn an_unreachable_scheduler_fails_within_seconds() {
    let port = free_port();
    let started = Instant::now();
    let out = delt(&[
        "sql",
        "--cluster",
        &format!("df://127.0.0.1:{port}"),
        "-c",
        "SELECT 1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "cannot reach the delt scheduler at df://127.0.0.1:{port}"
        )) && stderr.contains("delt cluster scheduler --bind"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = delt(&["sql", "--cluster", "127.0.0.1:1", "-c", "SELECT 1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected df://HOST:PORT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_plugin_missing_on_the_executors_fails_the_query_naming_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_parquet_files(&input, &rows(2_000, 3, false), 2);
    // The client and the scheduler find the library by name; the executors do not.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(rust_plugin("text_quality"), plugins.join("libonly_here.so")).unwrap();
    let plugin_path = plugins.display().to_string();
    let env = [("DELT_PLUGIN_PATH", plugin_path.as_str())];
    let logs = tempfile::tempdir().unwrap();
    let port = free_port();
    let scheduler = delt_command()
        .envs(env)
        .args(["cluster", "scheduler", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .stderr(std::fs::File::create(logs.path().join("scheduler")).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(port, "the scheduler");
    let executor_port = free_port_pair();
    let executor = delt_command()
        .args(["cluster", "executor", "--scheduler"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--bind")
        .arg(format!("127.0.0.1:{executor_port}"))
        .stderr(std::fs::File::create(logs.path().join("executor")).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(executor_port + 1, "the executor");
    let cluster = Cluster {
        url: format!("df://127.0.0.1:{port}"),
        scheduler,
        executors: vec![executor],
        logs,
    };
    std::thread::sleep(Duration::from_millis(500));
    let out_dir = dir.path().join("out");
    let out = sql(
        &[
            "CREATE FUNCTION quality(t VARCHAR) RETURNS DOUBLE LANGUAGE delt AS 'only_here#text_quality'"
                .to_string(),
            format!(
                "COPY (SELECT id, quality(text) AS q FROM '{}/' ORDER BY fold_order(q, 2)) TO '{}' STORED AS PARQUET",
                input.display(),
                out_dir.display()
            ),
        ],
        Some(&cluster),
        &env,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot be made on executor 127.0.0.1:{executor_port}"
        )) && stderr.contains("libonly_here.so"),
        "{stderr}\n{}",
        cluster.logs()
    );
    assert!(!out_dir.exists());
}

#[test]
fn s3_options_given_in_the_sql_reach_the_executors() {
    use crate::s3::{create_bucket, keys_and_ids, s3_env, start_moto, upload_corpus};
    let moto = start_moto();
    create_bucket(&moto.endpoint, "corpus");
    let rows = rows(6_000, 17, true);
    upload_corpus(&moto.endpoint, &rows, 1_000);
    // Only the SQL knows the endpoint and the keys: the processes have no AWS variables.
    let aws = format!(
        "'aws.endpoint' '{}', 'aws.access_key_id' 'test', \
         'aws.secret_access_key' 'test', 'aws.allow_http' 'true'",
        moto.endpoint
    );
    let statements = |out: &str| {
        vec![
            format!(
                "CREATE EXTERNAL TABLE docs STORED AS PARQUET LOCATION 's3://corpus/cc/' OPTIONS ({aws})"
            ),
            format!(
                "COPY (SELECT id, score FROM docs ORDER BY fold_order(score, 3)) \
                 TO 's3://corpus/{out}/' STORED AS PARQUET OPTIONS ({aws}, rows_per_shard 1500)"
            ),
        ]
    };
    let cluster = start_cluster(2, &[]);
    let mut command = cluster_process(&[]);
    command.args(["sql", "--quiet", "--cluster", &cluster.url]);
    for statement in statements("remote") {
        command.args(["-c", &statement]);
    }
    let out = command.output().unwrap();
    succeeded(&out, Some(&cluster));
    let local = sql(&statements("local"), None, &s3_env(&moto.endpoint));
    succeeded(&local, None);
    let (keys, remote_ids) = keys_and_ids(&moto.endpoint, "remote/");
    let (_, local_ids) = keys_and_ids(&moto.endpoint, "local/");
    assert_eq!(remote_ids, local_ids);
    assert_eq!(remote_ids, reference_fold(&rows, 3, "asc"));
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("remote/")).count(),
        4,
        "{keys:?}"
    );
}

#[test]
fn a_plugin_library_in_a_bucket_reaches_every_executor_through_the_cache() {
    use crate::s3::{create_bucket, s3_env, start_moto};
    let moto = start_moto();
    create_bucket(&moto.endpoint, "corpus");
    let dir = tempfile::tempdir().unwrap();
    let library = rust_plugin("text_quality");
    let env = s3_env(&moto.endpoint);
    put_object(
        &moto.endpoint,
        "corpus",
        "plugins/libtext_quality.so",
        &std::fs::read(&library).unwrap(),
    );
    let input = dir.path().join("in");
    write_parquet_files(&input, &rows(3_000, 9, false), 3);
    let cache = dir.path().join("cache");
    let cache_text = cache.display().to_string();
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.push(("DELT_PLUGIN_CACHE", &cache_text));
    let statements = |library: &str, out: &Path| {
        vec![
            format!(
                "CREATE FUNCTION quality(t VARCHAR) RETURNS DOUBLE LANGUAGE delt AS '{library}#text_quality'"
            ),
            format!(
                "COPY (SELECT id, quality(text) AS q FROM '{}/' ORDER BY fold_order(q, 3)) TO '{}'",
                input.display(),
                out.display()
            ),
        ]
    };
    let cluster = start_cluster(2, &env);
    let remote = dir.path().join("remote.parquet");
    let out = sql(
        &statements("s3://corpus/plugins/libtext_quality.so", &remote),
        Some(&cluster),
        &env,
    );
    succeeded(&out, Some(&cluster));
    let local = dir.path().join("local.parquet");
    let out = sql(
        &statements(&library.display().to_string(), &local),
        None,
        &[],
    );
    succeeded(&out, None);
    assert_eq!(
        std::fs::read(&remote).unwrap(),
        std::fs::read(&local).unwrap()
    );
    // One copy, under the hash of its bytes.
    let cached: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path().join("libtext_quality.so"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(
        std::fs::read(&cached[0]).unwrap(),
        std::fs::read(&library).unwrap()
    );
    assert_eq!(cached[0].parent().unwrap().file_name().unwrap().len(), 64);
}

/// Puts `bytes` at `key` of `bucket` with a plain HTTP PUT (moto takes it unsigned).
fn put_object(endpoint: &str, bucket: &str, key: &str, bytes: &[u8]) {
    use std::io::Write;
    let host = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "PUT /{bucket}/{key} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    )
    .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
