"""delt.sql, delt.sql_stream and Session against the `delt sql` command line."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import delt

from conftest import DOCS

FOLD = f"""
CREATE FUNCTION quality(text VARCHAR) RETURNS DOUBLE LANGUAGE delt AS 'text_quality#text_quality?min_words=50';
SELECT id, quality(text) AS q FROM '{DOCS}'
WHERE top_r(quality(text), 0.5)
ORDER BY fold_order(quality(text), ${{layers}})
"""


def test_folded_order_equals_the_command_lines(delt_exe, plugin_dir):
    cli = subprocess.run(
        [delt_exe, "sql", "--quiet", "--format", "json", "-c", FOLD, "--param", "layers=3"],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = [json.loads(line)["id"] for line in cli.stdout.splitlines()]
    session = delt.Session(plugin_path=[plugin_dir])
    table = session.sql(FOLD, params={"layers": 3})
    assert isinstance(table, pa.Table)
    assert table.column("id").to_pylist() == expected
    assert len(expected) == 300, "top_r(0.5) of the 600 sample documents"
    # Three low-to-high sweeps: the score drops exactly twice.
    q = table.column("q").to_pylist()
    assert sum(b < a for a, b in zip(q, q[1:])) == 2


def test_copy_from_python_writes_what_the_command_line_writes(delt_exe, plugin_dir, tmp_path):
    copy = FOLD.replace("SELECT id", "COPY (SELECT id").rstrip() + ") TO '${out}'"
    subprocess.run(
        [delt_exe, "sql", "--quiet", "-c", copy, "--param", "layers=3",
         "--param", f"out={tmp_path / 'cli.parquet'}"],
        check=True,
    )
    result = delt.Session(plugin_path=[plugin_dir]).sql(
        copy, params={"layers": 3, "out": tmp_path / "py.parquet"}
    )
    assert result is None, "the last statement is a COPY, not a query"
    assert pq.read_table(tmp_path / "py.parquet").equals(pq.read_table(tmp_path / "cli.parquet"))


def test_register_a_pyarrow_table_and_a_pandas_frame():
    session = delt.Session()
    session.register("arrow_docs", pa.table({"id": [1, 2, 3, 4], "score": [0.4, 0.1, 0.3, 0.2]}))
    session.register("pandas_docs", pd.DataFrame({"id": [5, 6], "score": [0.9, 0.0]}))
    table = session.sql(
        "SELECT id FROM (SELECT * FROM arrow_docs UNION ALL SELECT * FROM pandas_docs) "
        "ORDER BY fold_order(score, 2)"
    )
    # Sorted by score: 6 2 4 3 1 5; layers take every second row.
    assert table.column("id").to_pylist() == [6, 4, 1, 2, 3, 5]
    assert session.deregister("pandas_docs")
    with pytest.raises(delt.SqlError, match="pandas_docs"):
        session.sql("SELECT * FROM pandas_docs")


def test_a_polars_frame_in_and_out():
    session = delt.Session()
    # polars hands its strings over as string views, through the Arrow PyCapsule interface.
    frame = pl.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "text": ["a", "bb", None, "dddd", "eeeee", "ffffff"],
            "score": [0.4, 0.1, 0.3, 0.2, 0.9, 0.0],
        }
    )
    session.register("frame", frame)
    table = session.sql("SELECT id, text FROM frame ORDER BY fold_order(score, 2)")
    back = pl.from_arrow(table)
    assert back["id"].to_list() == [6, 4, 1, 2, 3, 5]
    assert back["text"].to_list() == ["ffffff", "dddd", "a", "bb", None, "eeeee"]


def test_arrow_buffers_cross_without_a_copy():
    session = delt.Session()
    docs = pa.table({"id": list(range(1000)), "text": [f"document {i}" for i in range(1000)]})
    session.register("docs", docs)
    back = session.sql("SELECT * FROM docs")
    streamed = session.sql_stream("SELECT text FROM docs").read_next_batch()

    def addresses(array):
        return [b.address for b in array.buffers() if b is not None]

    for name in ("id", "text"):
        assert addresses(back.column(name).chunks[0]) == addresses(docs.column(name).chunks[0])
    assert addresses(streamed.column(0)) == addresses(docs.column("text").chunks[0])


class CStreamOnly:
    """Not a pyarrow object: only the Arrow PyCapsule stream interface."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self._table.__arrow_c_stream__(requested_schema)


def test_register_a_record_batch_reader_a_c_stream_and_files(tmp_path):
    session = delt.Session()
    batches = [pa.record_batch({"x": list(range(i * 10, i * 10 + 10))}) for i in range(3)]
    session.register("stream", pa.RecordBatchReader.from_batches(batches[0].schema, batches))
    assert session.sql("SELECT sum(x) AS s FROM stream").column("s").to_pylist() == [435]
    session.register("capsule", CStreamOnly(pa.table({"y": ["a", "b", None]})))
    assert session.sql("SELECT count(y) AS n FROM capsule").column("n").to_pylist() == [2]
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "x.parquet")
    session.register_parquet("parquet_x", tmp_path / "x.parquet")
    session.register_json("docs", DOCS)
    counted = session.sql("SELECT (SELECT count(*) FROM docs) + (SELECT sum(x) FROM parquet_x) AS n")
    assert counted.column("n").to_pylist() == [603]


def test_several_statements_and_the_delt_functions():
    table = delt.sql(
        """
        CREATE TABLE t AS SELECT value AS id, CAST(value % 7 AS DOUBLE) AS score FROM range(0, 100);
        SELECT id FROM t WHERE top_k(score, 10) ORDER BY shuffle_order(42);
        """,
        threads=2,
    )
    # Ties at the cut keep the later rows: 10 of the 14 rows scoring 6.
    assert sorted(table.column("id").to_pylist()) == list(range(34, 100, 7))
    again = delt.sql(
        "CREATE TABLE t AS SELECT value AS id, CAST(value % 7 AS DOUBLE) AS score FROM range(0, 100);"
        "SELECT id FROM t WHERE top_k(score, 10) ORDER BY shuffle_order(42)"
    )
    assert again.equals(table), "same seed, same order"


def test_a_streamed_result_larger_than_the_memory_limit():
    limit = 8 << 20
    reader = delt.sql_stream(
        "SELECT value, repeat('x', 40) AS pad FROM range(0, 1000000) "
        "ORDER BY fold_order(CAST(value % 1000 AS DOUBLE), 2)",
        memory_limit=limit,
    )
    assert isinstance(reader, pa.RecordBatchReader)
    rows = nbytes = 0
    first = None
    for batch in reader:
        rows += batch.num_rows
        nbytes += batch.nbytes
        if first is None:
            first = batch.column("value")[0].as_py()
    assert rows == 1_000_000
    assert nbytes > 4 * limit, "the result is several times the memory limit"
    assert first == 0
    unsortable = "SELECT value, repeat('x', 40) AS pad FROM range(0, 1000000) ORDER BY value DESC"
    with pytest.raises(delt.ExecutionError, match="memory-limit"):
        delt.sql(unsortable, memory_limit=1 << 10)
    # The same error when it comes while a stream is read.
    reader = delt.sql_stream(unsortable, memory_limit=1 << 10)
    with pytest.raises(delt.ExecutionError, match="memory-limit"):
        reader.read_all()


def test_bad_queries_raise_delt_errors_with_the_command_lines_message(delt_exe, tmp_path):
    session = delt.Session()
    session.register("docs", pa.table({"id": [1]}))
    with pytest.raises(delt.SqlError) as bad_column:
        session.sql("SELECT nope FROM docs")
    assert "nope" in str(bad_column.value)
    assert isinstance(bad_column.value, delt.DeltError)
    missing = tmp_path / "missing.parquet"
    with pytest.raises(delt.DeltError) as bad_file:
        delt.sql(f"SELECT * FROM '{missing}'")
    cli = subprocess.run(
        [delt_exe, "sql", "-c", f"SELECT * FROM '{missing}'"], capture_output=True, text=True
    )
    assert cli.returncode == 1
    assert str(bad_file.value) == cli.stderr.strip().removeprefix("error: ").replace("-c,", "query,")
    with pytest.raises(delt.SqlError, match="parameter `k`"):
        delt.sql("SELECT ${k}")
    with pytest.raises(delt.SqlError, match="unused --param `extra`"):
        delt.sql("SELECT 1", params={"extra": 1})
    with pytest.raises(delt.SqlError, match="syntax error"):
        delt.sql("SELEC 1")
