#!/usr/bin/env python3
"""Builds examples/data/target_python_howto.jsonl: a small high-quality target set for LQS.

Prose paragraphs of the Python HOWTO guides (Debian package python3.11-doc, html/_sources/howto),
a part of the Python documentation that the sample corpus (FAQ and tutorial) does not contain:
the target is the Python-documentation distribution without sharing a single paragraph with the
proxy data.

Usage: python3 examples/make_target.py [--docs 120]   (needs apt-get download; no root)
"""
import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=120)
    parser.add_argument("--out", default="examples/data/target_python_howto.jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=work, check=True, capture_output=True)
        deb = next(work.glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
        base = work / "root/usr/share/doc/python3.11/html/_sources/howto"
        paragraphs = []
        for path in sorted(base.glob("*.rst.txt")):
            for para in re.split(r"\n\s*\n", path.read_text(errors="replace")):
                if para.lstrip().startswith(("..", "=", "-", "*", ">>>", "::", "|", "+")) or para.startswith(" "):
                    continue
                text = re.sub(r"\s+", " ", para).strip()
                if 200 <= len(text) <= 1500 and text.count(" ") > 30:
                    paragraphs.append((path.stem.removesuffix(".rst"), text))
    sample = {json.loads(l)["text"] for l in Path("examples/data/docs.jsonl").read_text().splitlines()}
    paragraphs = [p for p in paragraphs if p[1] not in sample]
    step = max(1, len(paragraphs) // args.docs)
    chosen = paragraphs[::step][: args.docs]
    with open(args.out, "w") as f:
        for i, (guide, text) in enumerate(chosen):
            f.write(json.dumps({"id": i, "guide": guide, "text": text}) + "\n")
    print(f"{len(chosen)} target paragraphs from {len({g for g, _ in chosen})} HOWTO guides -> {args.out}")


if __name__ == "__main__":
    main()
