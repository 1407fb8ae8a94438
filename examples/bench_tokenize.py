#!/usr/bin/env python3
"""Tokenize-and-export benchmark: delt's `COPY ... STORED AS TOKENS` next to the Hugging Face
`tokenizers` Python batch encoder, in the same run, on the same machine.

Two processes, each timed from start to exit, with its own CPU time and peak memory (max RSS),
from wait4:
  delt     delt sql -c "COPY (SELECT text FROM '<input>') TO '<out>/delt/' STORED AS TOKENS
                        OPTIONS (tokenizer '<tokenizer>')"
  python   this script in --encode mode: reads the same input, Tokenizer.encode_batch(batch,
           add_special_tokens=False) on batches of --batch texts (all cores, as the tokenizers
           library does by default), appends the end-of-document token to every document and
           writes llm.c's layout (256 int32 header: magic, version, token count; then the
           tokens) with numpy to <out>/python.bin.
Both load the tokenizer with its padding and truncation turned off, as delt does. Before any
figure is printed the two token arrays are compared; a difference is an error. The table gives
documents, tokens, and for each: seconds, tokens per second, CPU seconds, peak RSS; then delt's
speed-up (wall time). On a busy machine the CPU seconds are the steadier figure.

Input: JSONL or Parquet with a `text` column. --make-input N writes an N-document JSONL built
from examples/data/docs.jsonl (document k is source document k mod 600 with its words rotated
by k div 600, so documents differ and the set is the same on every machine):
  python examples/bench_tokenize.py --make-input 1000000 --input /tmp/docs_1m.jsonl
  python examples/bench_tokenize.py --input /tmp/docs_1m.jsonl \\
      --tokenizer .models/all-MiniLM-L6-v2/tokenizer.json --delt target/debug/delt --out /tmp/bench_tok

Needs numpy and tokenizers (and pyarrow for Parquet input):
  python3 -m venv .venv-bench && .venv-bench/bin/pip install numpy tokenizers pyarrow
"""
import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "data", "docs.jsonl")
# The end-of-document names delt looks for, in its order, when no eos_token is named.
EOS_NAMES = ["<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>", "[SEP]"]
HEADER_INTS = 256
# llm.c's (magic, version) of uint16 and of uint32 tokens.
LAYOUTS = {np.uint16: (20240520, 1), np.uint32: (20240801, 7)}


def make_input(n, path):
    with open(SOURCE) as f:
        texts = [json.loads(line)["text"] for line in f]
    with open(path, "w") as out:
        for k in range(n):
            words = texts[k % len(texts)].split(" ")
            r = (k // len(texts)) % len(words)
            out.write(json.dumps({"id": k, "text": " ".join(words[r:] + words[:r])}) + "\n")
    print(f"wrote {n} documents to {path}")


def text_batches(path, size):
    """The `text` column of a JSONL or Parquet file, in batches of `size`."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=size, columns=["text"]):
            yield batch.column(0).to_pylist()
        return
    batch = []
    with open(path) as f:
        for line in f:
            batch.append(json.loads(line)["text"])
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def load_tokenizer(path):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def eos_id(tokenizer, name):
    for candidate in [name] if name else EOS_NAMES:
        found = tokenizer.token_to_id(candidate)
        if found is not None:
            return found
    sys.exit(f"the tokenizer has none of {', '.join([name] if name else EOS_NAMES)}: name one with --eos-token")


def encode(args):
    """The Python peer: tokenize the input and write llm.c's layout to args.output."""
    tokenizer = load_tokenizer(args.tokenizer)
    eos = eos_id(tokenizer, args.eos_token)
    wide = tokenizer.get_vocab_size(with_added_tokens=True) > 65536
    dtype = np.uint32 if wide else np.uint16
    count = 0
    with open(args.output, "wb") as out:
        out.write(bytes(HEADER_INTS * 4))  # the header, rewritten once the count is known
        for texts in text_batches(args.input, args.batch):
            ids = [e.ids + [eos] for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype, sum(map(len, ids)))
            flat.tofile(out)
            count += len(flat)
        if count >= 2**31:
            sys.exit(f"{count} tokens: more than the int32 count of the llm.c header holds")
        header = np.zeros(HEADER_INTS, np.int32)
        header[:3] = (*LAYOUTS[dtype], count)
        out.seek(0)
        out.write(header.tobytes())


def timed(cmd):
    """Run cmd; its wall seconds, CPU seconds (user + system) and peak RSS in MiB."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{stderr.decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def read_tokens(path):
    """The tokens of an llm.c-layout file, after checking its header."""
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    magic, version, count = (int(v) for v in header[:3])
    dtype = next((d for d, layout in LAYOUTS.items() if layout == (magic, version)), None)
    if dtype is None:
        sys.exit(f"{path}: magic {magic} version {version}, not the llm.c layout")
    tokens = np.memmap(path, dtype=dtype, mode="r", offset=HEADER_INTS * 4)
    if len(tokens) != count:
        sys.exit(f"{path}: the header announces {count} tokens, the file holds {len(tokens)}")
    return tokens


def delt_tokens(directory):
    """The tokens of delt's export (its shards in name order) and its document count."""
    shards = sorted(n for n in os.listdir(directory) if n.endswith(".bin"))
    if not shards:
        sys.exit(f"{directory}: delt wrote no .bin file")
    tokens = np.concatenate([read_tokens(os.path.join(directory, n)) for n in shards])
    documents = None
    sidecars = sorted(n for n in os.listdir(directory) if n.endswith(".docs.parquet"))
    if sidecars:
        import pyarrow.parquet as pq

        documents = sum(pq.ParquetFile(os.path.join(directory, n)).metadata.num_rows for n in sidecars)
    return tokens, documents


def count_documents(path):
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def run(args):
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    source, tok = os.path.abspath(args.input), os.path.abspath(args.tokenizer)
    options = f"tokenizer '{tok}'" + (f", eos_token '{args.eos_token}'" if args.eos_token else "")
    if args.delt_options:
        options += ", " + args.delt_options
    sql = f"COPY (SELECT text FROM '{source}') TO '{out}/delt/' STORED AS TOKENS OPTIONS ({options})"
    python_bin = os.path.join(out, "python.bin")
    peer = [sys.executable, os.path.abspath(__file__), "--encode", "--input", source,
            "--tokenizer", tok, "--output", python_bin, "--batch", str(args.batch)]
    if args.eos_token:
        peer += ["--eos-token", args.eos_token]

    results = {}
    results["delt"] = timed([args.delt, "sql", "-c", sql])
    results["python tokenizers"] = timed(peer)

    ours, documents = delt_tokens(os.path.join(out, "delt"))
    theirs = read_tokens(python_bin)
    if not np.array_equal(ours, theirs):
        differ = np.flatnonzero(ours[: len(theirs)] != theirs[: len(ours)])
        first = int(differ[0]) if len(differ) else min(len(ours), len(theirs))
        sys.exit(f"the token arrays differ: delt {len(ours)} tokens, python {len(theirs)}, first difference at {first}")
    if documents is None:
        documents = count_documents(source)

    print(f"{documents} documents, {len(ours)} tokens (identical arrays), {os.cpu_count()} cores")
    print(f"{'':<20}{'seconds':>10}{'tokens/s':>14}{'CPU s':>10}{'peak RSS MiB':>14}")
    for name, (wall, cpu, rss) in results.items():
        print(f"{name:<20}{wall:>10.2f}{len(ours) / wall:>14,.0f}{cpu:>10.2f}{rss:>14,.0f}")
    ratio = results["python tokenizers"][0] / results["delt"][0]
    print(f"delt speed-up over the Python batch encoder: {ratio:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="JSONL or Parquet with a text column (written by --make-input)")
    parser.add_argument("--make-input", type=int, metavar="N", help="write an N-document JSONL to --input and stop")
    parser.add_argument("--tokenizer", help="Hugging Face tokenizer.json")
    parser.add_argument("--delt", help="the delt binary")
    parser.add_argument("--out", help="output directory (emptied first)")
    parser.add_argument("--eos-token", help="end-of-document token (default: the first of delt's usual names)")
    parser.add_argument("--delt-options", help="more COPY options for delt, e.g. \"sidecar 'false'\"")
    parser.add_argument("--batch", type=int, default=1000, help="texts per encode_batch call (default 1000)")
    parser.add_argument("--encode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.make_input is not None:
        make_input(args.make_input, args.input)
    elif args.encode:
        encode(args)
    else:
        missing = [f"--{n}" for n in ("tokenizer", "delt", "out") if getattr(args, n) is None]
        if missing:
            parser.error(f"the benchmark needs {', '.join(missing)}")
        run(args)


if __name__ == "__main__":
    main()
