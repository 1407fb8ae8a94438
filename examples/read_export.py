#!/usr/bin/env python3
"""Read a delt token export in order, without delt or torch.

delt writes token exports with
    COPY (...) TO 'out/train/' STORED AS MEGATRON OPTIONS (tokenizer 'tok.json')
    COPY (...) TO 'out/train/' STORED AS TOKENS   OPTIONS (tokenizer 'tok.json')
as a directory of shards (part-00000.bin, part-00001.bin, ...) or, for a destination
ending in .bin, as one file set (out/train.bin). docs/training.md describes the layouts:

  MEGATRON  <prefix>.bin holds the token ids back to back; <prefix>.idx is Megatron-LM's
            index ("MMIDIDX\\x00\\x00", version, dtype code, sequence lengths and byte offsets,
            document indices).
  TOKENS    <prefix>.bin is llm.c's layout: a header of 256 int32 (magic, version, token
            count), then the tokens.

Both may have a sidecar <prefix>.docs.parquet (row, id, start, tokens) that names the query
row behind every span of tokens; reading it needs pyarrow.

This script walks the shards in name order and prints the documents (or, with --seq-len N,
the blocks of N tokens a trainer reads) in the order delt wrote them. With --tokenizer it
decodes the text of what it prints (needs the `tokenizers` package).

    python examples/read_export.py out/train/
    python examples/read_export.py out/train.bin --seq-len 2048 --limit 3
    python examples/read_export.py out/train/ --tokenizer tok.json --limit 5

It can also be imported: `documents(path)` and `blocks(path, n)` yield numpy arrays.
"""

import argparse
import os
import struct
import sys
from dataclasses import dataclass
from typing import Iterator, List, Optional

import numpy as np

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
# Megatron-LM megatron/core/datasets/indexed_dataset.py, class DType.
MEGATRON_DTYPES = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32,
    5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16,
}
LLMC_HEADER_INTS = 256
# (magic, version) -> token dtype: llm.c's uint16 (gpt-2) layout, the one llmc/dataloader.h
# reads, and its uint32 (llama-3) layout. delt writes these two.
LLMC_LAYOUTS = {
    (20240520, 1): np.uint16,
    (20240801, 7): np.uint32,
}


class ExportError(Exception):
    """The files are not a delt export this reader understands."""


@dataclass
class Shard:
    """One file set of an export: its token stream and where documents start in it."""

    prefix: str
    format: str  # "MEGATRON" or "TOKENS"
    tokens: np.ndarray  # memmap of the whole token stream (header excluded)
    # MEGATRON only: start and length (in tokens) of every sequence of the .idx.
    seq_starts: Optional[np.ndarray] = None
    seq_lengths: Optional[np.ndarray] = None
    # From the sidecar, when present: query row, id, start (tokens), length (tokens).
    rows: Optional[np.ndarray] = None
    ids: Optional[list] = None
    starts: Optional[np.ndarray] = None
    lengths: Optional[np.ndarray] = None


def shard_prefixes(path: str) -> List[str]:
    """The shard prefixes (paths without .bin) of an export, in name order."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".bin"))
        if not names:
            raise ExportError(f"{path}: a directory with no .bin file")
        return [os.path.join(path, n[: -len(".bin")]) for n in names]
    if path.endswith(".bin") and os.path.isfile(path):
        return [path[: -len(".bin")]]
    if os.path.isfile(path + ".bin"):  # a Megatron --data-path prefix
        return [path]
    raise ExportError(f"{path}: neither a directory of shards, a .bin file nor a prefix of one")


def read_megatron(prefix: str) -> Shard:
    """Validate <prefix>.idx against <prefix>.bin and map both."""
    idx_path, bin_path = prefix + ".idx", prefix + ".bin"
    with open(idx_path, "rb") as f:
        head = f.read(34)
    if len(head) < 34 or head[:9] != MEGATRON_MAGIC:
        raise ExportError(f"{idx_path}: does not start with {MEGATRON_MAGIC!r}, not a Megatron index")
    version, code, seq_count, doc_count = struct.unpack("<QBQQ", head[9:])
    if version != 1:
        raise ExportError(f"{idx_path}: index version {version}, Megatron reads only version 1")
    if code not in MEGATRON_DTYPES:
        raise ExportError(f"{idx_path}: unknown dtype code {code} (known: {sorted(MEGATRON_DTYPES)})")
    dtype = np.dtype(MEGATRON_DTYPES[code])
    expected = 34 + seq_count * (4 + 8) + doc_count * 8
    size = os.path.getsize(idx_path)
    if size < expected:
        raise ExportError(
            f"{idx_path}: {size} bytes, but {seq_count} sequences and {doc_count} document "
            f"indices need {expected}"
        )
    idx = np.memmap(idx_path, dtype=np.uint8, mode="r")
    lengths = np.frombuffer(idx, np.int32, seq_count, 34)
    pointers = np.frombuffer(idx, np.int64, seq_count, 34 + lengths.nbytes)
    doc_index = np.frombuffer(idx, np.int64, doc_count, 34 + lengths.nbytes + pointers.nbytes)
    if doc_count == 0 or doc_index[0] != 0 or doc_index[-1] != seq_count:
        raise ExportError(
            f"{idx_path}: document indices must run from 0 to the sequence count {seq_count}"
        )
    starts = np.zeros(seq_count, np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    if not np.array_equal(pointers, starts * dtype.itemsize):
        raise ExportError(f"{idx_path}: sequence byte offsets do not follow the sequence lengths")
    total = int(lengths.sum(dtype=np.int64))
    bin_size = os.path.getsize(bin_path)
    if bin_size != total * dtype.itemsize:
        raise ExportError(
            f"{bin_path}: {bin_size} bytes, but the index describes {total} {dtype.name} tokens"
        )
    tokens = np.memmap(bin_path, dtype=dtype, mode="r") if total else np.zeros(0, dtype)
    return Shard(prefix, "MEGATRON", tokens, starts, lengths.astype(np.int64))


def read_tokens(prefix: str) -> Shard:
    """Validate the llm.c header of <prefix>.bin and map its tokens."""
    bin_path = prefix + ".bin"
    header_bytes = LLMC_HEADER_INTS * 4
    size = os.path.getsize(bin_path)
    if size < header_bytes:
        raise ExportError(f"{bin_path}: {size} bytes, shorter than the 1024-byte llm.c header")
    header = np.fromfile(bin_path, dtype="<i4", count=LLMC_HEADER_INTS)
    magic, version, count = (int(v) for v in header[:3])
    if (magic, version) not in LLMC_LAYOUTS:
        known = ", ".join(f"{m}/{v}" for m, v in LLMC_LAYOUTS)
        raise ExportError(
            f"{bin_path}: magic {magic} version {version} is no known token layout "
            f"(known magic/version: {known}); without a .idx it is not a Megatron file either"
        )
    dtype = np.dtype(LLMC_LAYOUTS[(magic, version)])
    if size != header_bytes + count * dtype.itemsize:
        raise ExportError(
            f"{bin_path}: {size} bytes, but the header announces {count} {dtype.name} tokens "
            f"({header_bytes + count * dtype.itemsize} bytes with the header)"
        )
    tokens = np.memmap(bin_path, dtype=dtype, mode="r", offset=header_bytes, shape=(count,))
    return Shard(prefix, "TOKENS", tokens)


def attach_sidecar(shard: Shard) -> None:
    """Read <prefix>.docs.parquet into the shard, when it exists and pyarrow is installed."""
    path = shard.prefix + ".docs.parquet"
    if not os.path.isfile(path):
        return
    try:
        import pyarrow.parquet as pq
    except ImportError:
        print(f"note: {path} not read (pip install pyarrow to read it)", file=sys.stderr)
        return
    table = pq.read_table(path)
    missing = {"row", "start", "tokens"} - set(table.column_names)
    if missing:
        raise ExportError(f"{path}: no column(s) {', '.join(sorted(missing))}")
    shard.rows = table.column("row").to_numpy().astype(np.int64)
    shard.starts = table.column("start").to_numpy().astype(np.int64)
    shard.lengths = table.column("tokens").to_numpy().astype(np.int64)
    if "id" in table.column_names:
        shard.ids = table.column("id").to_pylist()
    ends = shard.starts + shard.lengths
    if len(ends) and (np.any(shard.starts[1:] < ends[:-1]) or ends[-1] > len(shard.tokens)):
        raise ExportError(f"{path}: spans overlap or run past the {len(shard.tokens)} tokens of the shard")


def open_shard(prefix: str) -> Shard:
    """A shard of either format: MEGATRON when a .idx sits next to the .bin."""
    shard = read_megatron(prefix) if os.path.isfile(prefix + ".idx") else read_tokens(prefix)
    attach_sidecar(shard)
    return shard


def open_export(path: str) -> List[Shard]:
    """All shards of an export, in order; checks that the sidecar rows continue across shards."""
    shards = [open_shard(p) for p in shard_prefixes(path)]
    formats = {s.format for s in shards}
    if len(formats) > 1:
        raise ExportError(f"{path}: shards of both formats ({', '.join(sorted(formats))})")
    next_row = 0
    for s in shards:
        if s.rows is None:
            continue
        if len(s.rows) and not np.array_equal(s.rows, np.arange(next_row, next_row + len(s.rows))):
            raise ExportError(f"{s.prefix}.docs.parquet: rows do not continue from row {next_row}")
        next_row += len(s.rows)
    return shards


@dataclass
class Document:
    row: Optional[int]  # position in the query's order (sidecar), else None
    id: object  # the sidecar's id, else None
    shard: str
    start: int  # offset in tokens within the shard's stream
    tokens: np.ndarray


def documents(path: str) -> Iterator[Document]:
    """Every document in export order: the sidecar's spans, else the Megatron sequences."""
    for s in open_export(path):
        if s.starts is not None:
            for i, (start, n) in enumerate(zip(s.starts, s.lengths)):
                ident = s.ids[i] if s.ids is not None else None
                yield Document(int(s.rows[i]), ident, s.prefix, int(start), s.tokens[start : start + n])
        elif s.seq_starts is not None:
            for start, n in zip(s.seq_starts, s.seq_lengths):
                yield Document(None, None, s.prefix, int(start), s.tokens[start : start + n])
        else:
            raise ExportError(
                f"{s.prefix}.bin: a TOKENS shard keeps no document boundaries; read it with "
                "--seq-len, or keep its sidecar (and install pyarrow)"
            )


@dataclass
class Block:
    shard: str
    index: int  # block b covers tokens [b*n, (b+1)*n) of the shard
    tokens: np.ndarray
    rows: Optional[np.ndarray]  # sidecar rows overlapping the block, when there is a sidecar


def blocks(path: str, n: int) -> Iterator[Block]:
    """Blocks of n tokens of each shard's stream, as a sequential trainer reads them.

    A last block shorter than n is yielded too (its length tells)."""
    for s in open_export(path):
        for b in range((len(s.tokens) + n - 1) // n):
            lo, hi = b * n, min((b + 1) * n, len(s.tokens))
            rows = None
            if s.starts is not None:
                overlap = (s.starts < hi) & (s.starts + s.lengths > lo)
                rows = s.rows[overlap]
            yield Block(s.prefix, b, s.tokens[lo:hi], rows)


def show(tokens: np.ndarray, width: int, tokenizer) -> str:
    if tokenizer is not None:
        text = tokenizer.decode(tokens.tolist(), skip_special_tokens=False)
        return repr(text if len(text) <= 4 * width else text[: 4 * width] + "...")
    head = " ".join(str(t) for t in tokens[:width])
    return head + (" ..." if len(tokens) > width else "")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Print a delt MEGATRON or TOKENS export in order (documents, or blocks with --seq-len).",
    )
    parser.add_argument("path", help="export directory (part-*.bin), a .bin file, or a Megatron prefix")
    parser.add_argument("--seq-len", type=int, help="print blocks of this many tokens instead of documents")
    parser.add_argument("--limit", type=int, default=10, help="print at most this many (0: all; default 10)")
    parser.add_argument("--tokenizer", help="tokenizer.json to decode the printed tokens with")
    parser.add_argument("--width", type=int, default=16, help="tokens shown per line (default 16)")
    args = parser.parse_args()
    if args.seq_len is not None and args.seq_len <= 0:
        parser.error("--seq-len must be positive")

    tokenizer = None
    if args.tokenizer:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(args.tokenizer)

    try:
        shards = open_export(args.path)
        total = sum(len(s.tokens) for s in shards)
        dtype = shards[0].tokens.dtype.name
        print(f"{args.path}: {shards[0].format}, {len(shards)} shard(s), {total} {dtype} tokens")
        items = blocks(args.path, args.seq_len) if args.seq_len else documents(args.path)
        count = 0
        for item in items:
            if args.limit and count == args.limit:
                print("...")
                break
            name = os.path.basename(item.shard)
            if isinstance(item, Block):
                rows = "" if item.rows is None else f" rows {item.rows.tolist()}"
                print(f"block {name}[{item.index}] {len(item.tokens)} tokens{rows}: {show(item.tokens, args.width, tokenizer)}")
            else:
                label = f"row {item.row}" if item.row is not None else "document"
                ident = "" if item.id is None else f" id {item.id}"
                print(f"{label}{ident} {name}@{item.start} {len(item.tokens)} tokens: {show(item.tokens, args.width, tokenizer)}")
            count += 1
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
