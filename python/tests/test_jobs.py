"""delt.lqs and delt.bench: the command line's jobs from Python, with progress."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

import delt

from conftest import DOCS, ROOT, TARGET_SET

ENCODER = ROOT / ".models" / "all-MiniLM-L6-v2"
TINY = dict(vocab_size=300, hidden=16, layers=1, heads=2)


def test_label_fit_score_and_measure(tmp_path, plugin_dir, capsys):
    labels = delt.lqs.annotate(
        DOCS, TARGET_SET, tmp_path / "labels.parquet", id_column="id", steps=4, interval=2,
        max_tokens=16, batch_size=8, **TINY,
    )
    assert labels == str(tmp_path / "labels.parquet")
    table = pq.read_table(labels)
    assert table.num_rows == 600 and "gamma" in table.column_names
    # Without tqdm the bar is a line per stage on stderr.
    assert "trajectory: 4/4" in capsys.readouterr().err
    if not (ENCODER / "model.safetensors").is_file():
        if os.environ.get("DELT_REQUIRE_MODELS") == "1":
            pytest.fail(f"{ENCODER} is missing: run tests/fetch_models.sh")
        pytest.skip(f"{ENCODER} is missing: run tests/fetch_models.sh")
    scorer = delt.lqs.fit(labels, ENCODER, tmp_path / "scorer", max_tokens=64, progress=False)
    assert (tmp_path / "scorer" / "head.safetensors").is_file()
    scored = delt.Session(plugin_path=[plugin_dir]).sql(
        f"""CREATE FUNCTION lqs_score(text VARCHAR) RETURNS DOUBLE LANGUAGE delt
            AS 'delt_lqs#lqs_score?scorer={scorer}';
            SELECT id FROM '{DOCS}' WHERE top_k(lqs_score(text), 5)"""
    )
    assert scored.num_rows == 5
    results = delt.bench.efficacy(
        DOCS, TARGET_SET, tmp_path / "efficacy", arms=ROOT / "sql" / "efficacy_arms.sql",
        params={"scorer": scorer}, seeds=1, seq_len=32, evals=2, plugin_path=[plugin_dir],
        progress=False, **TINY,
    )
    assert len(results["runs"]) == 5
    assert (tmp_path / "efficacy" / "report.md").is_file()


def test_a_job_with_a_bad_option_raises_delt_error(tmp_path):
    with pytest.raises(delt.DeltError, match="no-such"):
        delt.lqs.annotate(DOCS, TARGET_SET, tmp_path / "l.parquet", text_column="no-such")
    with pytest.raises(delt.DeltError, match="gpu9"):
        delt.bench.efficacy(
            DOCS, TARGET_SET, tmp_path / "e", arms=ROOT / "sql" / "efficacy_arms.sql",
            device="gpu9",
        )
