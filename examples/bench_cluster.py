#!/usr/bin/env python3
"""Cluster benchmark: the same scored fold run locally and on a delt cluster of 1 and 2
executors, all on this machine, in one run.

Generates --rows documents as --files Parquet files (with delt itself), then times, as whole
processes, `delt sql` running

  COPY (SELECT id, text, quality(text) AS q FROM 'in/' ORDER BY fold_order(quality(text), 3))
  TO 'out/' STORED AS PARQUET OPTIONS (rows_per_shard N)

with N = --rows-per-shard (on a cluster the executors write the shards, each its own),
`quality` the text_quality scorer plugin (or the function given by --create-function):

  local        delt sql, --threads = the machine's cores
  1 executor   a scheduler and one executor with --slots = the cores
  2 executors  a scheduler and two executors, each with --slots = half the cores

The cluster's start is not timed (the processes run before the query starts). Every output is
checked to be byte-identical to the local one before any figure is printed. Needs only Python's
standard library and `cargo build`:

  python3 examples/bench_cluster.py --rows 400000 --files 16 --rows-per-shard 50000
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DELT = REPO / "target" / "debug" / "delt"


def free_port(pair=False):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair:
            return port
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def wait_for(port):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def start_cluster(executors, slots, logs):
    port = free_port()
    procs = [subprocess.Popen([DELT, "cluster", "scheduler", "--bind", f"127.0.0.1:{port}"],
                              stderr=open(logs / "scheduler.log", "w"))]
    wait_for(port)
    for i in range(executors):
        bind = free_port(pair=True)
        procs.append(subprocess.Popen(
            [DELT, "cluster", "executor", "--scheduler", f"127.0.0.1:{port}",
             "--bind", f"127.0.0.1:{bind}", "--slots", str(slots)],
            stderr=open(logs / f"executor-{i}.log", "w")))
        wait_for(bind + 1)
    time.sleep(1)
    return f"df://127.0.0.1:{port}", procs


def run_sql(statements, extra=()):
    cmd = [DELT, "sql", "--quiet", *extra]
    for s in statements:
        cmd += ["-c", s]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{done.stderr}")
    return time.perf_counter() - start


def tree(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--create-function", default=(
        "CREATE FUNCTION quality(t VARCHAR) RETURNS DOUBLE LANGUAGE delt "
        "AS 'text_quality#text_quality?batch_size=2048'"))
    parser.add_argument("--rows-per-shard", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count()
    work = Path(tempfile.mkdtemp(prefix="delt-bench-cluster-"))
    try:
        data = work / "in"
        run_sql([f"COPY (SELECT value AS id, concat('document ', value, ': ', "
                 f"repeat('the quick brown fox jumps over the lazy dog. ', 5 + value % 40)) AS text "
                 f"FROM range({args.rows})) TO '{data}/' STORED AS PARQUET "
                 f"OPTIONS (rows_per_shard {-(-args.rows // args.files)})"])

        def pipeline(out):
            return [args.create_function,
                    f"COPY (SELECT id, text, quality(text) AS q FROM '{data}/' "
                    f"ORDER BY fold_order(quality(text), 3)) TO '{out}/' STORED AS PARQUET "
                    f"OPTIONS (rows_per_shard {args.rows_per_shard})"]

        runs = [("local", None, None), ("1 executor", 1, cores), ("2 executors", 2, max(1, cores // 2))]
        reference = None
        results = []
        for name, executors, slots in runs:
            procs = []
            extra = ["--threads", str(cores)]
            if executors:
                url, procs = start_cluster(executors, slots, work)
                extra = ["--cluster", url]
            try:
                times = []
                for i in range(args.repeat):
                    out = work / f"out-{name.replace(' ', '-')}-{i}"
                    times.append(run_sql(pipeline(out), extra))
                    got = tree(out)
                    if reference is None:
                        reference = got
                    elif got != reference:
                        sys.exit(f"{name}: the output differs from the local run's")
                    shutil.rmtree(out)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            results.append((name, sorted(times)[len(times) // 2]))
        print(f"{args.rows:,} documents in {args.files} Parquet files, "
              f"{-(-args.rows // args.rows_per_shard)} output shards, {cores} cores, "
              f"median of {args.repeat}; outputs byte-identical")
        print(f"{'run':<14}{'wall s':>9}{'docs/s':>11}{'vs local':>10}")
        local = results[0][1]
        for name, wall in results:
            print(f"{name:<14}{wall:>9.2f}{args.rows / wall:>11,.0f}{local / wall:>9.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
