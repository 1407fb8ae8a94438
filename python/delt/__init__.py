"""delt: curate language-model training data with SQL, from Python.

``delt.sql`` and ``delt.sql_stream`` run SQL as ``delt sql -c`` does and hand the result to
pyarrow without copying it; a ``Session`` keeps tables, functions and settings between calls;
``delt.lqs`` and ``delt.bench`` run the long jobs. Errors are ``delt.DeltError`` and its
subclasses, with the messages of the ``delt`` command; Ctrl-C raises ``KeyboardInterrupt`` and
stops the work (a ``COPY`` publishes nothing).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from . import _delt, bench, lqs
from ._delt import (
    DeltError,
    ExecutionError,
    InputError,
    IoError,
    ModelError,
    PluginError,
    SqlError,
)

__all__ = [
    "DeltError",
    "ExecutionError",
    "InputError",
    "IoError",
    "ModelError",
    "PluginError",
    "Session",
    "SqlError",
    "bench",
    "lqs",
    "sql",
    "sql_stream",
]


class Session:
    """A delt session: tables, functions (``CREATE FUNCTION``), settings and S3 stores that
    one call registers stay for the next.

    ``memory_limit`` (bytes or a size such as ``"2G"``) makes sorts, selections and folds spill
    to disk beyond it; ``threads`` caps the partitions run in parallel; ``plugins`` are scorer
    libraries whose functions are registered under their own names; ``plugin_path`` are
    directories where ``CREATE FUNCTION`` finds a library named without a path (such as
    ``delt_lqs``). Libraries in the directories of ``DELT_PLUGIN_PATH`` are loaded as
    ``delt sql`` loads them.
    """

    def __init__(
        self,
        memory_limit: int | str | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        plugins: Iterable[str | os.PathLike[str]] = (),
        plugin_path: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        self._native = _delt.Session(
            memory_limit=memory_limit,
            threads=threads,
            batch_size=batch_size,
            plugins=[os.fspath(p) for p in plugins],
            plugin_path=[os.fspath(p) for p in plugin_path],
        )

    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pa.Table | None:
        """Runs the statements of ``query`` and returns the last one's result as a
        ``pyarrow.Table`` (``None`` when the last statement is not a query). ``params`` bind
        ``${name}`` as ``delt sql --param name=value`` does."""
        return self._native.sql(query, _params(params))

    def sql_stream(
        self, query: str, params: Mapping[str, Any] | None = None
    ) -> pa.RecordBatchReader | None:
        """As ``sql``, but the result is a ``pyarrow.RecordBatchReader`` that runs the query as
        it is read, so that a large result never sits whole in memory. Reading it raises the
        errors ``sql`` raises (``DeltError``, ``KeyboardInterrupt`` on Ctrl-C)."""
        stream = self._native.sql_stream(query, _params(params))
        if stream is None:
            return None
        return pa.RecordBatchReader.from_batches(stream.schema, stream)

    def register(self, name: str, data: Any) -> None:
        """Registers ``data`` as table ``name``: a pyarrow Table or RecordBatchReader, anything
        with ``__arrow_c_stream__`` (polars frames), or a pandas DataFrame (converted by
        pyarrow). Arrow buffers are kept as they are, not copied."""
        if not hasattr(data, "__arrow_c_stream__"):
            data = _to_arrow(data)
        self._native.register(name, data)

    def register_parquet(
        self, name: str, path: str | os.PathLike[str], options: Mapping[str, str] | None = None
    ) -> None:
        """Registers the Parquet file, directory or glob (local or ``s3://``) at ``path`` as
        table ``name``. ``options`` are the statement's OPTIONS, for example
        ``{"aws.region": "us-east-1", "aws.endpoint": "http://127.0.0.1:9000"}``."""
        self._register_files(name, path, "PARQUET", options)

    def register_json(
        self, name: str, path: str | os.PathLike[str], options: Mapping[str, str] | None = None
    ) -> None:
        """Registers JSON lines at ``path`` (a file, or a directory of ``*.jsonl``) as table
        ``name``; ``options`` as for ``register_parquet``."""
        self._register_files(name, path, "JSONL", options)

    def deregister(self, name: str) -> bool:
        """Removes table ``name``; ``True`` if there was one."""
        return self._native.deregister(name)

    def _register_files(
        self, name: str, path: str | os.PathLike[str], format: str, options: Mapping[str, str] | None
    ) -> None:
        statement = (
            f"CREATE EXTERNAL TABLE {_identifier(name)} STORED AS {format} "
            f"LOCATION {_literal(os.fspath(path))}"
        )
        if options:
            pairs = ", ".join(f"{_literal(k)} {_literal(str(v))}" for k, v in options.items())
            statement += f" OPTIONS ({pairs})"
        self._native.sql(statement, None)


def sql(
    query: str,
    params: Mapping[str, Any] | None = None,
    memory_limit: int | str | None = None,
    threads: int | None = None,
) -> pa.Table | None:
    """Runs ``query`` (several statements allowed, as ``delt sql -c``) in a new session and
    returns the last statement's result as a ``pyarrow.Table`` (``None`` when it is not a
    query)."""
    return Session(memory_limit=memory_limit, threads=threads).sql(query, params)


def sql_stream(
    query: str,
    params: Mapping[str, Any] | None = None,
    memory_limit: int | str | None = None,
    threads: int | None = None,
) -> pa.RecordBatchReader | None:
    """As ``sql``, but returns a ``pyarrow.RecordBatchReader`` (an Arrow C stream) that runs
    the query as it is read."""
    return Session(memory_limit=memory_limit, threads=threads).sql_stream(query, params)


def _params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Parameter values as the text ``--param`` would give: booleans as true/false."""
    if params is None:
        return None
    return {
        name: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for name, value in params.items()
    }


def _to_arrow(data: Any) -> pa.Table:
    """A pandas DataFrame (or anything else pyarrow can read) as a pyarrow Table."""
    if type(data).__module__.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)
    return pa.table(data)


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
