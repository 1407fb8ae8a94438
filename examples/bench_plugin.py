#!/usr/bin/env python3
"""Plugin boundary benchmark: the cost of calling a scorer through the plugin ABI.

The same trivial function, the UTF-8 byte length of each text, is computed over N rows two
ways, in the same run, on the same machine:
  native   DataFusion's built-in octet_length(text), cast to DOUBLE
  plugin   text_bytes(text) from examples/plugins/text-quality, loaded with --plugin
Each query sums the values so that every row is computed; each runs --repeat times in a fresh
process and the median wall time is kept. The difference is the per-row cost of the boundary:
batching, worker threads, the Arrow C Data Interface both ways, and the plugin's own loop.

Needs the plugin built and the ordering benchmark's generator:
  cargo build --workspace
  .venv-bench/bin/python examples/bench_plugin.py --rows 10000000
"""
import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_order import generate, measure  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--delt", default="target/debug/delt")
    parser.add_argument("--plugin", default="target/debug/libtext_quality.so")
    parser.add_argument("--workdir", default="bench-data")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(exist_ok=True)
    data = work / f"input-{args.rows}.parquet"
    if not data.exists():
        print(f"generating {args.rows:,} rows ...", file=sys.stderr)
        generate(data, args.rows, seed=1)

    queries = {
        "native octet_length": (f"SELECT sum(CAST(octet_length(text) AS DOUBLE)) FROM '{data}'", []),
        "plugin text_bytes": (f"SELECT sum(text_bytes(text)) FROM '{data}'", ["--plugin", args.plugin]),
    }
    results = {}
    for name, (sql, extra) in queries.items():
        print(f"running {name} x{args.repeat} ...", file=sys.stderr)
        cmd = [args.delt, "sql", "--quiet", "--threads", str(args.threads), *extra, "-c", sql]
        runs = [measure(cmd) for _ in range(args.repeat)]
        results[name] = (statistics.median(w for w, _ in runs), max(p for _, p in runs))

    native, plugin = results["native octet_length"][0], results["plugin text_bytes"][0]
    print(f"\nbyte length of N = {args.rows:,} texts, {args.threads} threads, median of {args.repeat}\n")
    print("| run | wall s | peak MiB |")
    print("|---|---:|---:|")
    for name, (wall, peak) in results.items():
        print(f"| {name} | {wall:.2f} | {peak:,.0f} |")
    print(f"\nplugin overhead: {(plugin - native) / native * 100:+.1f}% of the native query, "
          f"{(plugin - native) / args.rows * 1e9:+.1f} ns per row")


if __name__ == "__main__":
    main()
