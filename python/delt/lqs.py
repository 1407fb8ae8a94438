"""Learnability-Quality Scoring: ``delt lqs annotate`` and ``delt lqs fit`` from Python.

Options are the command line's (``delt lqs annotate --help``), as keyword arguments with
underscores; ``None`` keeps the command line's default. ``progress`` shows a bar (``tqdm`` in
notebooks when it is installed); Ctrl-C stops the job at its next step and raises
``KeyboardInterrupt``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import _jobs

PathArg = str | os.PathLike[str]


def annotate(
    proxy: PathArg,
    target: PathArg,
    out: PathArg,
    *,
    text_column: str | None = None,
    id_column: str | None = None,
    tokenizer: PathArg | None = None,
    max_tokens: int | None = None,
    vocab_size: int | None = None,
    hidden: int | None = None,
    layers: int | None = None,
    heads: int | None = None,
    steps: int | None = None,
    interval: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    warmup_steps: int | None = None,
    warmup_lr: float | None = None,
    seed: int | None = None,
    init_model: PathArg | None = None,
    save_model: PathArg | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> str:
    """Labels the ``proxy`` documents with LQS from a proxy LM's trajectory aimed at the
    ``target`` set and writes the labels to the Parquet file ``out``, which it returns."""
    options = dict(locals())
    progress = options.pop("progress")
    options["quiet"] = not progress
    _jobs.run(["lqs", "annotate"], options, progress)
    return os.fspath(out)


def fit(
    labels: PathArg,
    encoder: PathArg,
    out: PathArg,
    *,
    max_tokens: int | None = None,
    ridge: Sequence[float] | None = None,
    validation: float | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> str:
    """Fits the data scorer (frozen ``encoder``, mean pooling, ridge head) on ``labels`` from
    ``annotate`` and writes the scorer directory ``out`` that ``lqs_score`` loads; returns
    it."""
    options = dict(locals())
    progress = options.pop("progress")
    options["quiet"] = not progress
    _jobs.run(["lqs", "fit"], options, progress)
    return os.fspath(out)
