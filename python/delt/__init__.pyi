import os
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from . import bench as bench
from . import lqs as lqs

class DeltError(Exception):
    """Base class of delt's errors; the message is the one the `delt` command prints."""

class SqlError(DeltError):
    """The SQL, its parameters or an option is wrong (syntax, planning, unknown names)."""

class ExecutionError(DeltError):
    """A query failed while it ran (out of memory under a limit, a failed computation)."""

class InputError(DeltError):
    """An input file or location is missing or unreadable; the message names it."""

class IoError(DeltError):
    """Reading or writing failed outside the inputs' contents (output, object store)."""

class PluginError(DeltError):
    """A scorer plugin library could not be found or loaded."""

class ModelError(DeltError):
    """A model could not be loaded, trained or run."""

class Session:
    def __init__(
        self,
        memory_limit: int | str | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        plugins: Iterable[str | os.PathLike[str]] = (),
        plugin_path: Iterable[str | os.PathLike[str]] = (),
    ) -> None: ...
    def sql(self, query: str, params: Mapping[str, Any] | None = None) -> pa.Table | None: ...
    def sql_stream(
        self, query: str, params: Mapping[str, Any] | None = None
    ) -> pa.RecordBatchReader | None: ...
    def register(self, name: str, data: Any) -> None: ...
    def register_parquet(
        self, name: str, path: str | os.PathLike[str], options: Mapping[str, str] | None = None
    ) -> None: ...
    def register_json(
        self, name: str, path: str | os.PathLike[str], options: Mapping[str, str] | None = None
    ) -> None: ...
    def deregister(self, name: str) -> bool: ...

def sql(
    query: str,
    params: Mapping[str, Any] | None = None,
    memory_limit: int | str | None = None,
    threads: int | None = None,
) -> pa.Table | None: ...
def sql_stream(
    query: str,
    params: Mapping[str, Any] | None = None,
    memory_limit: int | str | None = None,
    threads: int | None = None,
) -> pa.RecordBatchReader | None: ...
