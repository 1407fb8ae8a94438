"""Ctrl-C (KeyboardInterrupt) stops a running query or job cleanly."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

import delt

from conftest import DOCS, TARGET_SET

# 10^13 rows of which none passes: hours of work, no memory, no output.
LONG = "SELECT value AS x FROM range(0, 10000000000000) WHERE value % 7 = 8"


def interrupt_after(seconds: float) -> threading.Timer:
    """Sends KeyboardInterrupt to the main thread in `seconds`, as Ctrl-C would."""
    timer = threading.Timer(seconds, _thread.interrupt_main)
    timer.start()
    return timer


def test_ctrl_c_stops_a_long_query_and_the_session_still_works():
    session = delt.Session()
    started = time.monotonic()
    interrupt_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        session.sql(f"SELECT count(*) FROM ({LONG})")
    assert time.monotonic() - started < 5, "stopped within a few seconds"
    assert session.sql("SELECT 41 + 1 AS n").column("n").to_pylist() == [42]


def test_ctrl_c_during_a_copy_publishes_nothing(tmp_path):
    out = tmp_path / "out"
    interrupt_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        delt.sql(f"COPY ({LONG}) TO '{out}/' STORED AS PARQUET")
    assert list(tmp_path.iterdir()) == [], "no output, no staging directory left"


def test_ctrl_c_while_reading_a_stream():
    reader = delt.sql_stream(f"SELECT count(*) FROM ({LONG})")
    interrupt_after(1.0)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        try:
            reader.read_all()
        except Exception:
            # pyarrow raises its own error for the ended stream; KeyboardInterrupt follows.
            time.sleep(0.5)
    assert time.monotonic() - started < 5


def test_ctrl_c_stops_an_lqs_annotation(tmp_path):
    out = tmp_path / "labels.parquet"
    interrupt_after(3.0)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        delt.lqs.annotate(
            DOCS, TARGET_SET, out, id_column="id", steps=100000, interval=10,
            vocab_size=300, hidden=16, layers=1, heads=2, max_tokens=16, progress=False,
        )
    assert time.monotonic() - started < 15
    assert not out.exists()
