#!/usr/bin/env python3
"""Builds examples/data/docs.jsonl: a small multi-domain sample of real text from Debian packages.

Domains: fortunes (fortunes-min), Python documentation (python3.11-doc: FAQ answers and tutorial
paragraphs), hacker jargon (dict-jargon) and the Devil's Dictionary (dict-devil).

Each document gets a `score`: a transparent stand-in quality heuristic until a trained LQS scorer
exists (fraction of purely alphabetic words times log of the word count). It is only there so the
sample pipelines have a score column to select and fold by.

Usage: python3 examples/make_sample.py [--per-domain 150]   (needs apt-get download; no root)
"""
import argparse
import gzip
import json
import math
import random
import re
import subprocess
import tempfile
from pathlib import Path

PACKAGES = ["fortunes-min", "python3.11-doc", "dict-jargon", "dict-devil"]
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def unpack(workdir: Path) -> Path:
    root = workdir / "root"
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=workdir, check=True, capture_output=True)
    for deb in sorted(workdir.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def clean(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text).strip()


def fortunes(root: Path):
    for path in sorted((root / "usr/share/games/fortunes").glob("*")):
        if path.suffix or not path.is_file():
            continue
        for chunk in path.read_text(errors="replace").split("\n%\n"):
            yield clean(chunk)


def python_docs(root: Path):
    base = root / "usr/share/doc/python3.11/html/_sources"
    for path in sorted(list((base / "faq").glob("*.rst.txt")) + list((base / "tutorial").glob("*.rst.txt"))):
        for para in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            if para.lstrip().startswith(("..", "=", "-", "*", ">>>", "::")):
                continue
            yield clean(" ".join(line.strip() for line in para.splitlines()))


def dictd(root: Path, name: str):
    def number(s: str) -> int:
        n = 0
        for ch in s:
            n = n * 64 + B64.index(ch)
        return n

    base = root / "usr/share/dictd"
    data = gzip.decompress((base / f"{name}.dict.dz").read_bytes())
    for line in (base / f"{name}.index").read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database"):
            continue
        start, length = number(parts[1]), number(parts[2])
        yield clean(" ".join(data[start:start + length].decode(errors="replace").split()))


def heuristic_score(text: str) -> float:
    words = text.split()
    alpha = sum(1 for w in words if w.strip(".,;:!?\"'()").isalpha())
    return round(alpha / len(words) * math.log1p(len(words)), 4)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-domain", type=int, default=150)
    parser.add_argument("--out", default=str(Path(__file__).parent / "data" / "docs.jsonl"))
    args = parser.parse_args()
    rng = random.Random(20261127)
    with tempfile.TemporaryDirectory() as tmp:
        root = unpack(Path(tmp))
        domains = {
            "fortunes": list(fortunes(root)),
            "python_docs": list(python_docs(root)),
            "jargon": list(dictd(root, "jargon")),
            "devils_dictionary": list(dictd(root, "devil")),
        }
    docs = []
    for domain, texts in domains.items():
        texts = sorted({t for t in texts if 120 <= len(t) <= 2000})
        for text in rng.sample(texts, min(args.per_domain, len(texts))):
            docs.append({"domain": domain, "text": text, "score": heuristic_score(text)})
    rng.shuffle(docs)
    with open(args.out, "w") as out:
        for i, doc in enumerate(docs):
            out.write(json.dumps({"id": i, **doc}, ensure_ascii=False) + "\n")
    print(f"wrote {len(docs)} documents to {args.out}")


if __name__ == "__main__":
    main()
