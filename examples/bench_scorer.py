#!/usr/bin/env python3
"""Scorer benchmark: lqs_score with all-MiniLM-L6-v2 in delt against sentence-transformers on
PyTorch, on the same device (the CPU, or with --device cuda a GPU), in the same run on the same
machine.

N documents of exactly 128 tokens ([CLS] + 126 word pieces + [SEP]) are cut from the bundled
sample's words and written as Parquet. Then:
  delt     `delt sql` with CREATE FUNCTION lqs_score (plugins/lqs: MiniLM + mean pooling + a
           linear head) scoring every document into a Parquet file; timed as the whole process
           (start, model load, read, score, write)
  pytorch  sentence-transformers (Transformer + mean Pooling modules of the same model
           directory) encoding the texts, the same head applied in numpy; timed around
           encode() only (imports and model load excluded)
Both use --threads threads and batches of --batch documents. It prints documents per second,
the ratio, peak memory of each process (host memory: GPU memory is not counted), and the largest
difference between the two scores.

Needs the models (tests/fetch_models.sh), the plugin (cargo build --workspace) and a Python
with torch, sentence-transformers and pyarrow:
  python examples/bench_scorer.py --docs 2000
On a GPU, with the plugin built by `cargo build -p lqs-plugin --features lqs-plugin/cuda`:
  python examples/bench_scorer.py --device cuda --docs 20000 --batch 256
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_order import measure  # noqa: E402

PYTORCH = """
import sys, time, json
import numpy as np, pyarrow.parquet as pq, torch
from sentence_transformers import SentenceTransformer
model_dir, data, head, threads, batch, device = sys.argv[1:7]
torch.set_num_threads(int(threads))
full = SentenceTransformer(model_dir, device=device)
model = SentenceTransformer(modules=[full[0], full[1]], device=device)  # without Normalize
model.max_seq_length = 128
texts = pq.read_table(data).column("text").to_pylist()
w = np.load(head)
start = time.perf_counter()
emb = model.encode(texts, batch_size=int(batch), convert_to_numpy=True)
seconds = time.perf_counter() - start
json.dump({"seconds": seconds, "scores": (emb @ w[:-1] + w[-1]).tolist()}, sys.stdout)
"""


def documents(n, model_dir):
    """n texts of exactly 126 word pieces from the sample's words."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    words = []
    for line in Path("examples/data/docs.jsonl").read_text().splitlines():
        words.extend(json.loads(line)["text"].split())
    pieces = [len(e.ids) for e in tok.encode_batch(words, add_special_tokens=False)]
    texts, start = [], 0
    while len(texts) < n:
        taken, count, i = [], 0, start
        while count < 126:
            w, c = words[i % len(words)], pieces[i % len(words)]
            if count + c <= 126:
                taken.append(w)
                count += c
            i += 1
        text = " ".join(taken)
        if len(tok.encode(text).ids) == 128:
            texts.append(text)
        start += 17
    return texts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both delt and PyTorch)")
    parser.add_argument("--models", default=os.environ.get("DELT_MODELS_DIR", ".models"))
    parser.add_argument("--delt", default="target/debug/delt")
    parser.add_argument("--plugin", default="target/debug/libdelt_lqs.so")
    parser.add_argument("--workdir", default="bench-data")
    args = parser.parse_args()
    model_dir = Path(args.models) / "all-MiniLM-L6-v2"
    work = Path(args.workdir)
    work.mkdir(exist_ok=True)
    data = work / f"scorer-128tok-{args.docs}.parquet"
    if not data.exists():
        texts = documents(args.docs, model_dir)
        pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), data)

    # A random head, as safetensors for delt and as numpy for PyTorch.
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, 385).astype(np.float32)
    np.save(work / "head.npy", w)
    from safetensors.numpy import save_file
    save_file({"weight": w[None, :-1].copy(), "bias": w[-1:].copy()}, str(work / "head.safetensors"))

    out = work / "scored.parquet"
    create = (f"CREATE FUNCTION lqs_score(text VARCHAR) RETURNS DOUBLE LANGUAGE delt AS "
              f"'{args.plugin}#lqs_score?model={model_dir}&head={work / 'head.safetensors'}"
              f"&max_tokens=128&threads={args.threads}&forward_batch={args.batch}&batch_size={max(256, args.batch)}"
              f"&device={args.device}'")
    copy = f"COPY (SELECT id, lqs_score(text) AS s FROM '{data}') TO '{out}'"
    print(f"delt: scoring {args.docs:,} documents ...", file=sys.stderr)
    delt_wall, delt_peak = measure([args.delt, "sql", "--quiet", "--threads", str(args.threads), "-c", create, "-c", copy])
    delt_scores = pq.read_table(out).sort_by("id").column("s").to_numpy()

    print("pytorch: scoring ...", file=sys.stderr)
    report = work / "pytorch.json"
    with open(report, "w") as f:
        start = time.perf_counter()
        cmd = ["/usr/bin/time", "-f", "%M", "-o", str(work / "pytorch.time"), sys.executable, "-c", PYTORCH,
               str(model_dir), str(data), str(work / "head.npy"), str(args.threads), str(args.batch), args.device]
        subprocess.run(cmd, stdout=f, check=True)
        torch_process = time.perf_counter() - start
    result = json.loads(report.read_text())
    torch_peak = int((work / "pytorch.time").read_text().split()[-1]) / 1024
    diff = float(np.max(np.abs(delt_scores - np.array(result["scores"]))))

    n = args.docs
    print(f"\nlqs_score, all-MiniLM-L6-v2, {n:,} documents of 128 tokens, device {args.device}, "
          f"{args.threads} threads, batch {args.batch}\n")
    print("| run | timed | seconds | docs/s | peak MiB |")
    print("|---|---|---:|---:|---:|")
    print(f"| delt lqs_score | whole process | {delt_wall:.2f} | {n / delt_wall:.1f} | {delt_peak:,.0f} |")
    print(f"| sentence-transformers (PyTorch {__import__('torch').__version__}) | encode() only | "
          f"{result['seconds']:.2f} | {n / result['seconds']:.1f} | {torch_peak:,.0f} |")
    print(f"| sentence-transformers | whole process | {torch_process:.2f} | {n / torch_process:.1f} | |")
    print(f"\ndelt / PyTorch throughput: {result['seconds'] / delt_wall:.2f}x (encode only), "
          f"{torch_process / delt_wall:.2f}x (whole process); max |score difference| {diff:.2e}")


if __name__ == "__main__":
    main()
