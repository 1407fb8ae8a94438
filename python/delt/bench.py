"""``delt bench efficacy`` from Python: does the curated order train a better model?

Options are the command line's (``delt bench efficacy --help``), as keyword arguments with
underscores; ``None`` keeps the command line's default. ``progress`` shows a bar (``tqdm`` in
notebooks when it is installed); Ctrl-C stops the job at its next step and raises
``KeyboardInterrupt``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from . import _jobs

PathArg = str | os.PathLike[str]


def efficacy(
    corpus: PathArg,
    target: PathArg,
    out: PathArg,
    *,
    arms: PathArg | None = None,
    params: Mapping[str, Any] | None = None,
    text_column: str | None = None,
    seeds: int | None = None,
    heldout: float | None = None,
    baseline: str | None = None,
    vocab_size: int | None = None,
    hidden: int | None = None,
    layers: int | None = None,
    heads: int | None = None,
    tokenizer: PathArg | None = None,
    seq_len: int | None = None,
    tokens: int | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    warmup: float | None = None,
    min_lr_ratio: float | None = None,
    weight_decay: float | None = None,
    evals: int | None = None,
    plugin_path: Sequence[PathArg] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Trains a small LM per seed and arm (each ``CREATE VIEW`` of the ``arms`` SQL file) on
    the corpus in the arm's order, writes report.md, results.json and the plots to ``out``,
    and returns results.json's content. ``plugin_path``: directories where the arms'
    ``CREATE FUNCTION`` finds libraries named without a path (``delt_lqs``), besides those of
    ``DELT_PLUGIN_PATH``."""
    options = dict(locals())
    progress = options.pop("progress")
    plugin_path = options.pop("plugin_path")
    options["quiet"] = not progress
    _jobs.run(["bench", "efficacy"], options, progress, plugin_path)
    with open(os.path.join(os.fspath(out), "results.json"), encoding="utf-8") as f:
        return json.load(f)
