#!/usr/bin/env python3
"""Ordering benchmark: delt's fold against delt's plain sort, DuckDB, Polars and the reference
DELT approach, on the same generated data, in the same run, on the same machine.

Generates N rows (id, score with ties, 50-300 bytes of random text) as Parquet, then times:
  delt fold      ORDER BY fold_order(score, 3), Parquet -> Parquet
  delt sort      ORDER BY score,                Parquet -> Parquet
  duckdb fold    row_number() window + ORDER BY (the usual SQL way to fold)
  polars fold    stable sort + row index, layers gathered with gather_every
  reference      the reference DELT way at --reference-rows: JSONL into Python memory, sort, write JSONL
                 (the steps of the reference repository's ordering script)
  delt jsonl     delt's fold on that same JSONL, JSONL -> JSONL
Each run is a separate process; wall time and peak memory (max RSS) are measured around it.
The runs go in rounds (--repeat, 5 by default), each round every run once, and the table
shows each run's median wall time and its largest peak.
All use --threads threads and Parquet compressed with zstd level 1 (delt's default). The
outputs of the three folds are checked to be the same order before any figure is printed.

With --scaling N1,N2,... it also times delt fold alone at each size.

Needs delt built as the README builds it (the dev profile compiles dependencies optimized),
and duckdb, polars, pyarrow, numpy:
  cargo build
  python3 -m venv .venv-bench && .venv-bench/bin/pip install duckdb polars pyarrow numpy
  .venv-bench/bin/python examples/bench_order.py --rows 10000000
"""
import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LAYERS = 3


def generate(path: Path, rows: int, seed: int) -> None:
    """Writes `rows` rows: id, score (1000 distinct values: many ties), random text."""
    rng = np.random.default_rng(seed)
    writer = None
    chunk = 1_000_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        lengths = rng.integers(50, 301, n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", dtype=np.uint8)
        data = alphabet[rng.integers(0, len(alphabet), int(offsets[-1]))]
        text = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))
        table = pa.table({
            "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "score": pa.array(rng.integers(0, 1000, n) / 10.0),
            "text": text.cast(pa.string()),
        })
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=chunk)
    writer.close()


def to_jsonl(parquet: Path, jsonl: Path, rows: int) -> None:
    """Writes the first `rows` rows of `parquet` as JSON lines, 100K rows at a time."""
    left = rows
    with open(jsonl, "w") as out:
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=100_000):
            for record in batch.slice(0, left).to_pylist():
                out.write(json.dumps(record) + "\n")
            left -= min(left, batch.num_rows)
            if left == 0:
                break


def measure(cmd, env=None):
    """Runs cmd; returns (wall seconds, peak RSS in MiB).

    GNU time reports the peak: a child forked from this (large) Python process would inherit
    its resident size in the kernel's own count.
    """
    report = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-time-{os.getpid()}"
    start = time.perf_counter()
    status = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), *map(str, cmd)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"failed ({status}): {' '.join(map(str, cmd))}")
    return wall, int(report.read_text().split()[-1]) / 1024


DUCKDB = """
import duckdb, sys
src, dst, threads = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute(f'''COPY (
  SELECT id, score, text FROM read_parquet('{src}', file_row_number = true)
  ORDER BY (row_number() OVER (ORDER BY score, file_row_number) - 1) % 3, score, file_row_number
) TO '{dst}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)''')
"""

POLARS = """
import polars as pl, sys
src, dst = sys.argv[1], sys.argv[2]
df = pl.read_parquet(src).sort("score", maintain_order=True)
pl.concat([df.gather_every(3, offset=l) for l in range(3)]).write_parquet(dst, compression="zstd", compression_level=1)
"""

# The reference DELT repository's ordering step (microsoft/DELT: utils.load_jsonl,
# data_ordering/folding.order, utils.write_jsonl), step for step: every line parsed into a dict,
# a sort keyed on the score (missing scores lowest), each layer picked by a pass over all rows,
# every row dumped back. Only its script wrapper and imports are left out.
REFERENCE = """
import json, sys
src, dst, layers = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src, "r", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
ranked = sorted(rows, key=lambda row: row.get("score", float("-inf")))
folded = []
for layer in range(layers):
    folded.extend([ranked[i] for i in range(len(ranked)) if i % layers == layer])
with open(dst, "w", encoding="utf-8") as f:
    for row in folded:
        f.write(json.dumps(row) + "\\n")
"""


def delt_cmd(delt, threads, sql, memory_limit=None):
    cmd = [delt, "sql", "--quiet", "--threads", str(threads), "-c", sql]
    if memory_limit:
        cmd += ["--memory-limit", memory_limit]
    return cmd


def ids(path: Path):
    return pq.read_table(path, columns=["id"]).column("id").to_numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reference-rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--delt", default="target/debug/delt")
    parser.add_argument("--workdir", default="bench-data")
    parser.add_argument("--scaling", default="", help="comma-separated sizes for delt fold alone")
    parser.add_argument("--scaling-memory-limit", default="6G")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds of every run; the table shows each run's median wall time")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(exist_ok=True)
    python = sys.executable
    threads = str(args.threads)

    data = work / f"input-{args.rows}.parquet"
    if not data.exists():
        print(f"generating {args.rows:,} rows ...", file=sys.stderr)
        generate(data, args.rows, seed=1)
    outputs = {name: work / f"{name}.parquet" for name in ["delt_fold", "delt_sort", "duckdb", "polars"]}
    ref_rows = min(args.reference_rows, args.rows)
    jsonl = work / f"input-{ref_rows}.jsonl"
    if not jsonl.exists():
        to_jsonl(data, jsonl, ref_rows)
    jsonl_outputs = {"reference": work / "reference.jsonl", "delt": work / "delt.jsonl"}
    # (name, rows, command, environment, output file)
    runs = [
        ("delt fold", args.rows, delt_cmd(args.delt, threads,
            f"COPY (SELECT * FROM '{data}' ORDER BY fold_order(score, {LAYERS})) TO '{outputs['delt_fold']}'"),
            None, outputs["delt_fold"]),
        ("delt sort", args.rows, delt_cmd(args.delt, threads,
            f"COPY (SELECT * FROM '{data}' ORDER BY score) TO '{outputs['delt_sort']}'"),
            None, outputs["delt_sort"]),
        ("duckdb fold", args.rows, [python, "-c", DUCKDB, str(data), str(outputs["duckdb"]), threads],
            None, outputs["duckdb"]),
        ("polars fold", args.rows, [python, "-c", POLARS, str(data), str(outputs["polars"])],
            {"POLARS_MAX_THREADS": threads}, outputs["polars"]),
        ("reference (JSONL, Python)", ref_rows,
            [python, "-c", REFERENCE, str(jsonl), str(jsonl_outputs["reference"]), str(LAYERS)],
            None, jsonl_outputs["reference"]),
        ("delt fold JSONL", ref_rows, delt_cmd(args.delt, threads,
            f"COPY (SELECT * FROM '{jsonl}' ORDER BY fold_order(score, {LAYERS})) TO '{jsonl_outputs['delt']}'"),
            None, jsonl_outputs["delt"]),
    ]
    # Round after round of every run, so that the machine's drift (a shared VM's speed moves
    # by 10-30% over minutes) falls on all of them alike; each run's median counts. Each run's
    # previous output is deleted before it starts, untimed: replacing a file costs the kernel
    # the old file's cached pages (0.1-0.5 s for these files on this VM), whichever tool writes.
    # Then the page cache is synced, untimed, so that no run pays for writing back the file the
    # run before it wrote (the run after the reference lost up to 0.4 s to its JSONL on this VM).
    # Each round starts one run later than the one before, so that no run always follows the
    # same one: a run that has just freed gigabytes leaves the next one fresh memory that this
    # VM's host may first have to fault in.
    samples = {run[0]: [] for run in runs}
    for round_ in range(args.repeat):
        start = round_ % len(runs)
        for name, _, cmd, env, output in runs[start:] + runs[:start]:
            print(f"round {round_ + 1}/{args.repeat}: {name} ...", file=sys.stderr)
            output.unlink(missing_ok=True)
            os.sync()
            samples[name].append(measure(cmd, env))
    results = [(name, rows, statistics.median(w for w, _ in samples[name]),
                max(p for _, p in samples[name])) for name, rows, *_ in runs]

    # The three folds must agree before their times mean anything.
    expected = ids(outputs["delt_fold"])
    for name in ["duckdb", "polars"]:
        if not np.array_equal(ids(outputs[name]), expected):
            sys.exit(f"{name} produced a different order than delt")
    with open(jsonl_outputs["reference"]) as ref, open(jsonl_outputs["delt"]) as ours:
        for a, b in itertools.zip_longest(ref, ours):
            if a is None or b is None or json.loads(a)["id"] != json.loads(b)["id"]:
                sys.exit("reference and delt JSONL folds differ")

    base = {name: wall for name, _, wall, _ in results}
    print(f"\nfold of N = {args.rows:,} rows (L = {LAYERS}), {args.threads} threads, median of {args.repeat} rounds; "
          "all folds checked equal\n")
    print("| run | rows | wall s | peak MiB | delt fold is x faster |")
    print("|---|---:|---:|---:|---:|")
    for name, rows, wall, peak in results:
        ref = base["delt fold"] if rows == args.rows else base["delt fold JSONL"]
        print(f"| {name} | {rows:,} | {wall:.2f} | {peak:,.0f} | {wall / ref:.2f} |")
    print(f"\ndelt fold / delt plain sort: {base['delt fold'] / base['delt sort']:.3f}")
    print(f"reference / delt fold JSONL (same rows, same format): {base['reference (JSONL, Python)'] / base['delt fold JSONL']:.1f}x")
    per_row_ref = base["reference (JSONL, Python)"] / ref_rows
    per_row_delt = base["delt fold"] / args.rows
    print(f"reference JSONL vs delt Parquet fold, per row: {per_row_ref / per_row_delt:.1f}x")

    if args.scaling:
        print(f"\nscaling of delt fold ({args.threads} threads, --memory-limit {args.scaling_memory_limit})\n")
        print("| rows | wall s | peak MiB | ns per row | ns per (row * log2 rows) |")
        print("|---:|---:|---:|---:|---:|")
        for n in [int(x) for x in args.scaling.split(",")]:
            path = work / f"input-{n}.parquet"
            if not path.exists():
                print(f"generating {n:,} rows ...", file=sys.stderr)
                generate(path, n, seed=1)
            out = work / f"scale-{n}.parquet"
            out.unlink(missing_ok=True)
            os.sync()
            wall, peak = measure(delt_cmd(args.delt, threads,
                f"COPY (SELECT * FROM '{path}' ORDER BY fold_order(score, {LAYERS})) TO '{out}'",
                args.scaling_memory_limit))
            out.unlink()
            print(f"| {n:,} | {wall:.2f} | {peak:,.0f} | {wall / n * 1e9:.0f} | {wall / (n * math.log2(n)) * 1e9:.2f} |")


if __name__ == "__main__":
    main()
