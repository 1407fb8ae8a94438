"""Ctrl-C (KeyboardInterrupt) stops a running query or job cleanly.

Ctrl-C is sent a second after the work starts, by a Python thread that can only run while the
work has released the GIL; nothing here measures how fast it stops. A query or job that
ignored Ctrl-C (or held the GIL) would run for hours: the watchdog then ends the test run with
every thread's traceback instead of letting CI hang.
"""

from __future__ import annotations

import _thread
import faulthandler
import threading

import pytest

import delt

from conftest import DOCS, TARGET_SET

# 10^13 rows of which none passes: hours of work, no memory, no output.
LONG = "SELECT value AS x FROM range(0, 10000000000000) WHERE value % 7 = 8"


@pytest.fixture(autouse=True)
def watchdog():
    """Ends the process (with tracebacks) if a test here is still running after two minutes."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def interrupt_after(seconds: float) -> threading.Timer:
    """Sends KeyboardInterrupt to the main thread in `seconds`, as Ctrl-C would."""
    timer = threading.Timer(seconds, _thread.interrupt_main)
    timer.start()
    return timer


def test_ctrl_c_stops_a_long_query_and_the_session_still_works():
    session = delt.Session()
    interrupt_after(1.0)
    with pytest.raises(KeyboardInterrupt):
        session.sql(f"SELECT count(*) FROM ({LONG})")
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
    with pytest.raises(KeyboardInterrupt):
        reader.read_all()
    # The query was dropped: reading on is an error, not a silently shortened result.
    with pytest.raises(delt.ExecutionError, match="interrupted"):
        reader.read_next_batch()


def test_ctrl_c_stops_an_lqs_annotation_and_the_next_job_runs(tmp_path):
    out = tmp_path / "labels.parquet"
    tiny = dict(id_column="id", vocab_size=300, hidden=16, layers=1, heads=2, max_tokens=16,
                progress=False)
    interrupt_after(3.0)
    with pytest.raises(KeyboardInterrupt):
        delt.lqs.annotate(DOCS, TARGET_SET, out, steps=100000, interval=10, **tiny)
    assert not out.exists()
    # The stopped job let go of the process's job slot and progress observer.
    delt.lqs.annotate(DOCS, TARGET_SET, out, steps=2, interval=1, **tiny)
    assert out.is_file()
