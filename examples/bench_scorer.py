#!/usr/bin/env python3
"""Model scorer benchmark, process to process, in one run on one machine:

  token_nll  delt's `token_nll` with SmolLM2-135M-Instruct (the Q4_1 GGUF, default options: the
             weights are dequantized at load when they fit in memory) against Hugging Face
             transformers running the same GGUF in float32; every document cut to the same
             --max-tokens tokens, batches of --lm-batch documents in transformers; and, where
             llama-cpp-python is installed, llama.cpp running the GGUF as stored (Q4_1), one
             document per call with all its logits
  lqs_score  delt's `lqs_score` with all-MiniLM-L6-v2 against sentence-transformers `encode()`,
             N documents of exactly 128 tokens ([CLS] + 126 word pieces + [SEP]), the same
             random linear head in both

Each delt run is `delt sql` scoring every document of a Parquet file into another, timed as the
whole process (start, model load, read, score, write); each peer is a fresh Python process, timed
as a whole (imports, model load, tokenizing, scoring) and around its scoring loop alone. Both
use --threads threads. It prints documents and tokens per second, peak memory of each process
(host memory), the ratios, and the largest difference between the two sides' scores.
With --quantized-docs N it also times delt with the weights kept quantized (dequantize=false)
on the first N documents (that path is slow on a CPU: keep N small).

Needs the models (tests/fetch_models.sh), delt and the plugins (cargo build), and a Python with
the peers, kept out of CI in a virtual environment of its own (about 5 GB with torch):
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install torch transformers sentence-transformers gguf accelerate pyarrow
  .venv-bench/bin/pip install llama-cpp-python   # optional: the quantized CPU anchor (builds llama.cpp)
  .venv-bench/bin/python examples/bench_scorer.py --lm-docs 64 --docs 1000 --quantized-docs 4
On a GPU, with the plugin built by `cargo build -p lqs-plugin --features lqs-plugin/cuda`:
  python examples/bench_scorer.py --scorer lqs_score --device cuda --docs 20000 --batch 256
"""
import argparse
import importlib.util
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

SENTENCE_TRANSFORMERS = """
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
json.dump({"seconds": seconds, "version": torch.__version__,
           "scores": (emb @ w[:-1] + w[-1]).tolist()}, sys.stdout)
"""

TRANSFORMERS = """
import os, sys, time, json
import pyarrow.parquet as pq, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf, data, threads, batch, max_tokens = sys.argv[1:6]
torch.set_num_threads(int(threads))
batch, max_tokens = int(batch), int(max_tokens)
folder, name = os.path.split(gguf)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
texts = pq.read_table(data).column("text").to_pylist()
start = time.perf_counter()
ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
nll = []
with torch.inference_mode():
    for i in range(0, len(ids), batch):
        part = ids[i:i + batch]
        width = max(map(len, part))
        x = torch.tensor([s + [0] * (width - len(s)) for s in part])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in part])
        logits = model(input_ids=x, attention_mask=mask).logits[:, :-1]
        picked = torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None])[..., 0]
        real = mask[:, 1:].float()
        nll += (-(picked * real).sum(1) / real.sum(1)).tolist()
seconds = time.perf_counter() - start
json.dump({"seconds": seconds, "version": transformers.__version__, "torch": torch.__version__,
           "tokens": sum(len(s) - 1 for s in ids), "scores": nll}, sys.stdout)
"""

LLAMA_CPP = """
import sys, time, json
import numpy as np, pyarrow.parquet as pq, llama_cpp
gguf, data, threads, max_tokens = sys.argv[1:5]
threads, max_tokens = int(threads), int(max_tokens)
llm = llama_cpp.Llama(model_path=gguf, n_ctx=max_tokens, n_batch=max_tokens, n_ubatch=max_tokens,
                      n_threads=threads, n_threads_batch=threads, logits_all=True, verbose=False)
texts = pq.read_table(data).column("text").to_pylist()
start = time.perf_counter()
nll, tokens = [], 0
for text in texts:
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)[:max_tokens]
    llm.reset()
    llm.eval(ids)
    logits = llm.scores[:len(ids) - 1]  # float32, as llama.cpp wrote them
    top = logits.max(1)
    log_sum = top + np.log(np.exp(logits - top[:, None]).sum(1, dtype=np.float64))
    nll.append(float((log_sum - logits[np.arange(len(ids) - 1), ids[1:]]).mean()))
    tokens += len(ids) - 1
seconds = time.perf_counter() - start
json.dump({"seconds": seconds, "version": llama_cpp.__version__, "tokens": tokens, "scores": nll},
          sys.stdout)
"""


def peer(script, argv, work, name):
    """Runs a peer script in a fresh Python; returns (its JSON report, whole seconds, peak MiB)."""
    report, timing = work / f"{name}.json", work / f"{name}.time"
    with open(report, "w") as f:
        start = time.perf_counter()
        cmd = ["/usr/bin/time", "-f", "%M", "-o", str(timing), sys.executable, "-c", script, *map(str, argv)]
        subprocess.run(cmd, stdout=f, check=True)
        whole = time.perf_counter() - start
    return json.loads(report.read_text()), whole, int(timing.read_text().split()[-1]) / 1024


def delt_scores(args, create, data, out):
    """Runs `delt sql` scoring data into out with the function `create` defines as f."""
    copy = f"COPY (SELECT id, f(text) AS s FROM '{data}') TO '{out}'"
    wall, peak = measure([args.delt, "sql", "--quiet", "--threads", str(args.threads), "-c", create, "-c", copy])
    return wall, peak, pq.read_table(out).sort_by("id").column("s").to_numpy()


def sample_words():
    words = []
    for line in Path("examples/data/docs.jsonl").read_text().splitlines():
        words.extend(json.loads(line)["text"].split())
    return words


def minilm_documents(n, model_dir):
    """n texts of exactly 126 word pieces from the sample's words."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    words = sample_words()
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


def long_documents(n):
    """n texts of whole sample documents run together, each well past 256 tokens of SmolLM2."""
    docs = [json.loads(line)["text"] for line in Path("examples/data/docs.jsonl").read_text().splitlines()]
    texts, i = [], 0
    while len(texts) < n:
        text = ""
        while len(text) < 2500:
            text += docs[i % len(docs)] + "\n\n"
            i += 1
        texts.append(text)
    return texts


def table(rows):
    print("| run | timed | seconds | docs/s | tokens/s | peak MiB |")
    print("|---|---|---:|---:|---:|---:|")
    for run, timed, seconds, docs, tokens, peak in rows:
        mib = f"{peak:,.0f}" if peak else ""
        print(f"| {run} | {timed} | {seconds:.2f} | {docs / seconds:.2f} | {tokens / seconds:,.0f} | {mib} |")


def bench_token_nll(args, work):
    gguf = Path(args.models) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    n = args.lm_docs
    data = work / f"scorer-long-{n}.parquet"
    if not data.exists():
        texts = long_documents(n)
        pq.write_table(pa.table({"id": list(range(n)), "text": texts}), data)
    create = (f"CREATE FUNCTION f(text VARCHAR) RETURNS DOUBLE LANGUAGE delt AS "
              f"'{args.perplexity_plugin}#token_nll?model={gguf}&max_tokens={args.max_tokens}"
              f"&threads={args.threads}&device={args.device}")
    print(f"delt: token_nll of {n:,} documents ...", file=sys.stderr)
    wall, peak, scores = delt_scores(args, create + "'", data, work / "nll.parquet")
    print("transformers: token_nll ...", file=sys.stderr)
    result, whole, torch_peak = peer(TRANSFORMERS, [gguf, data, args.threads, args.lm_batch, args.max_tokens],
                                     work, "transformers")
    tokens = result["tokens"]
    diff = np.abs(scores - np.array(result["scores"]))
    rows = [("delt token_nll (default: dequantized at load)", "whole process", wall, n, tokens, peak)]
    if args.quantized_docs:
        q = args.quantized_docs
        subset = work / f"scorer-long-{n}-first-{q}.parquet"
        pq.write_table(pq.read_table(data).slice(0, q), subset)
        print(f"delt: token_nll of {q} documents with dequantize=false ...", file=sys.stderr)
        q_wall, q_peak, q_scores = delt_scores(args, create + "&dequantize=false'", subset, work / "nll-q.parquet")
        q_tokens = tokens * q // n
        rows.append(("delt token_nll dequantize=false", "whole process", q_wall, q, q_tokens, q_peak))
        q_diff = float(np.max(np.abs(q_scores - scores[:q])))
    rows += [(f"transformers {result['version']} fp32 (PyTorch {result['torch']})", "tokenize + forward",
              result["seconds"], n, tokens, torch_peak),
             ("transformers", "whole process", whole, n, tokens, None)]
    anchor = None
    if importlib.util.find_spec("llama_cpp"):
        print("llama.cpp: token_nll ...", file=sys.stderr)
        anchor, anchor_whole, anchor_peak = peer(LLAMA_CPP, [gguf, data, args.threads, args.max_tokens],
                                                 work, "llama_cpp")
        rows += [(f"llama.cpp (llama-cpp-python {anchor['version']}), Q4_1 as stored", "tokenize + forward",
                  anchor["seconds"], n, anchor["tokens"], anchor_peak),
                 ("llama.cpp", "whole process", anchor_whole, n, anchor["tokens"], None)]
    print(f"\ntoken_nll, SmolLM2-135M-Instruct Q4_1 GGUF, {n:,} documents cut to {args.max_tokens} tokens "
          f"({tokens:,} predicted), device {args.device}, {args.threads} threads, transformers batches of "
          f"{args.lm_batch}\n")
    table(rows)
    print(f"\ndelt / transformers throughput: {result['seconds'] / wall:.2f}x (forward only), "
          f"{whole / wall:.2f}x (whole process); memory {torch_peak / peak:.1f}x less; "
          f"NLL difference median {np.median(diff):.1e}, max {diff.max():.1e} nats")
    if anchor:
        a_diff = np.abs(scores - np.array(anchor["scores"]))
        print(f"delt / llama.cpp throughput: {anchor['seconds'] / wall:.2f}x (forward only), "
              f"{anchor_whole / wall:.2f}x (whole process); memory {anchor_peak / peak:.1f}x less; "
              f"NLL difference (Q4_1 with 8-bit activations against delt's float32) median "
              f"{np.median(a_diff):.1e}, max {a_diff.max():.1e} nats")
    else:
        print("llama.cpp: not measured (no llama_cpp module; pip install llama-cpp-python)")
    if args.quantized_docs:
        print(f"dequantized / quantized tokens per second: {(tokens / wall) / (q_tokens / q_wall):.1f}x; "
              f"max |NLL difference| between the two paths {q_diff:.4f} nats")


def bench_lqs(args, work):
    model_dir = Path(args.models) / "all-MiniLM-L6-v2"
    n = args.docs
    data = work / f"scorer-128tok-{n}.parquet"
    if not data.exists():
        texts = minilm_documents(n, model_dir)
        pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), data)

    # A random head, as safetensors for delt and as numpy for PyTorch.
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, 385).astype(np.float32)
    np.save(work / "head.npy", w)
    from safetensors.numpy import save_file
    save_file({"weight": w[None, :-1].copy(), "bias": w[-1:].copy()}, str(work / "head.safetensors"))

    create = (f"CREATE FUNCTION f(text VARCHAR) RETURNS DOUBLE LANGUAGE delt AS "
              f"'{args.lqs_plugin}#lqs_score?model={model_dir}&head={work / 'head.safetensors'}"
              f"&max_tokens=128&threads={args.threads}&forward_batch={args.batch}&batch_size={max(256, args.batch)}"
              f"&device={args.device}'")
    print(f"delt: lqs_score of {n:,} documents ...", file=sys.stderr)
    wall, peak, scores = delt_scores(args, create, data, work / "scored.parquet")
    print("sentence-transformers: encode ...", file=sys.stderr)
    result, whole, torch_peak = peer(SENTENCE_TRANSFORMERS,
                                     [model_dir, data, work / "head.npy", args.threads, args.batch, args.device],
                                     work, "pytorch")
    diff = float(np.max(np.abs(scores - np.array(result["scores"]))))
    tokens = 128 * n
    print(f"\nlqs_score, all-MiniLM-L6-v2, {n:,} documents of 128 tokens, device {args.device}, "
          f"{args.threads} threads, batch {args.batch}\n")
    table([("delt lqs_score", "whole process", wall, n, tokens, peak),
           (f"sentence-transformers (PyTorch {result['version']})", "encode() only", result["seconds"], n, tokens,
            torch_peak),
           ("sentence-transformers", "whole process", whole, n, tokens, None)])
    print(f"\ndelt / PyTorch throughput: {result['seconds'] / wall:.2f}x (encode only), "
          f"{whole / wall:.2f}x (whole process); memory {torch_peak / peak:.1f}x less; "
          f"max |score difference| {diff:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scorer", choices=["all", "token_nll", "lqs_score"], default="all")
    parser.add_argument("--docs", type=int, default=1000, help="lqs_score: documents of 128 tokens")
    parser.add_argument("--batch", type=int, default=32, help="lqs_score: documents per forward pass, both sides")
    parser.add_argument("--lm-docs", type=int, default=64, help="token_nll: documents")
    parser.add_argument("--lm-batch", type=int, default=8, help="token_nll: documents per batch in transformers")
    parser.add_argument("--max-tokens", type=int, default=256, help="token_nll: tokens kept of each document")
    parser.add_argument("--quantized-docs", type=int, default=0,
                        help="token_nll: also time dequantize=false on this many documents")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both delt and PyTorch)")
    parser.add_argument("--models", default=os.environ.get("DELT_MODELS_DIR", ".models"))
    parser.add_argument("--delt", default="target/debug/delt")
    parser.add_argument("--lqs-plugin", default="target/debug/libdelt_lqs.so")
    parser.add_argument("--perplexity-plugin", default="target/debug/libdelt_perplexity.so")
    parser.add_argument("--workdir", default="bench-data")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(exist_ok=True)
    if args.scorer in ("all", "token_nll"):
        bench_token_nll(args, work)
    if args.scorer in ("all", "lqs_score"):
        bench_lqs(args, work)


if __name__ == "__main__":
    main()
