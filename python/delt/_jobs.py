"""Running a ``delt lqs`` / ``delt bench`` job from keyword arguments, with a progress bar."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import _delt


def run(
    words: list[str],
    options: Mapping[str, Any],
    progress: bool,
    plugin_path: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """Runs the job ``words`` (``["lqs", "fit"]``) with ``options`` as its command-line flags:
    ``max_tokens=64`` is ``--max-tokens 64``, ``True`` a bare flag, ``None`` or ``False`` the
    command line's default, a list comma-separated values, a mapping repeated
    ``--param name=value``. ``plugin_path``: directories where the job's ``CREATE FUNCTION``
    finds libraries named without a path."""
    args = list(words)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                args += ["--param", f"{key}={item}"]
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(str(v) for v in value)]
        elif isinstance(value, os.PathLike):
            args += [flag, os.fspath(value)]
        else:
            args += [flag, str(value)]
    bar = _Bar() if progress else None
    try:
        _delt.run_job(args, [os.fspath(p) for p in plugin_path], bar.update if bar else None)
    finally:
        if bar:
            bar.close()


class _Bar:
    """A progress bar per stage: ``tqdm.auto`` (terminal and Jupyter) when it is installed,
    else a line on stderr redrawn in place."""

    def __init__(self) -> None:
        self._stage: str | None = None
        self._bar: Any = None
        self._tqdm: Callable[..., Any] | None
        try:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
        except ImportError:
            self._tqdm = None

    def update(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close(finished=True)
            self._stage = stage
            if self._tqdm is not None:
                self._bar = self._tqdm(total=total, desc=stage)
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()
        else:
            sys.stderr.write(f"\r{stage}: {done}/{total}")
            sys.stderr.flush()

    def close(self, finished: bool = False) -> None:
        """Ends the current stage's bar, shown complete when the job went on past it."""
        if self._bar is not None:
            if finished:
                self._bar.n = self._bar.total
                self._bar.refresh()
            self._bar.close()
            self._bar = None
        elif self._stage is not None:
            sys.stderr.write(" done\n" if finished else "\n")
        self._stage = None
