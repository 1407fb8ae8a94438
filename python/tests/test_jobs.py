"""delt.lqs and delt.bench: the command line's jobs from Python, with progress."""

from __future__ import annotations

import os
import sys

import pyarrow.parquet as pq
import pytest

import delt

from conftest import DOCS, ROOT, TARGET_SET

ENCODER = ROOT / ".models" / "all-MiniLM-L6-v2"
TINY = dict(vocab_size=300, hidden=16, layers=1, heads=2)


def test_label_fit_and_score(tmp_path, plugin_dir, capsys, monkeypatch):
    # Without tqdm the bar is a line per stage on stderr.
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    labels = delt.lqs.annotate(
        DOCS, TARGET_SET, tmp_path / "labels.parquet", id_column="id", steps=4, interval=2,
        max_tokens=16, batch_size=8, **TINY,
    )
    assert labels == str(tmp_path / "labels.parquet")
    table = pq.read_table(labels)
    assert table.num_rows == 600 and "gamma" in table.column_names
    # Every stage is shown, complete, even one shorter than the bar's refresh.
    assert "trajectory: 4/4" in capsys.readouterr().err
    if not (ENCODER / "model.safetensors").is_file():
        if os.environ.get("DELT_REQUIRE_MODELS") == "1":
            pytest.fail(f"{ENCODER} is missing: run tests/fetch_models.sh")
        pytest.skip(f"{ENCODER} is missing: run tests/fetch_models.sh")
    scorer = delt.lqs.fit(labels, ENCODER, tmp_path / "scorer", max_tokens=16, progress=False)
    assert scorer == str(tmp_path / "scorer")
    assert (tmp_path / "scorer" / "head.safetensors").is_file()
    scored = delt.Session(plugin_path=[plugin_dir]).sql(
        f"""CREATE FUNCTION lqs_score(text VARCHAR) RETURNS DOUBLE LANGUAGE delt
            AS 'delt_lqs#lqs_score?scorer={scorer}';
            SELECT id FROM (SELECT * FROM '{DOCS}' LIMIT 40) WHERE top_k(lqs_score(text), 5)"""
    )
    assert scored.num_rows == 5


def test_efficacy_returns_its_results_and_finds_plugins_on_the_path(
    tmp_path, plugin_dir, monkeypatch
):
    # Two arms, one ordered by a plugin function that only plugin_path lets CREATE FUNCTION find.
    monkeypatch.delenv("DELT_PLUGIN_PATH", raising=False)
    arms = tmp_path / "arms.sql"
    arms.write_text(
        "CREATE FUNCTION quality(text VARCHAR) RETURNS DOUBLE LANGUAGE delt\n"
        "  AS 'text_quality#text_quality?min_words=${min_words}';\n"
        "CREATE VIEW shuffled AS SELECT text FROM corpus ORDER BY shuffle_order(1);\n"
        "CREATE VIEW folded AS SELECT text FROM corpus ORDER BY fold_order(quality(text), 3);\n"
    )
    options = dict(arms=arms, params={"min_words": 50}, seeds=1, seq_len=32, evals=2,
                   progress=False, **TINY)
    with pytest.raises(delt.SqlError, match="plugin libtext_quality.so .*no such file"):
        delt.bench.efficacy(DOCS, TARGET_SET, tmp_path / "efficacy", **options)
    results = delt.bench.efficacy(
        DOCS, TARGET_SET, tmp_path / "efficacy", plugin_path=[plugin_dir], **options
    )
    assert sorted({run["arm"] for run in results["runs"]}) == ["folded", "shuffled"]
    assert (tmp_path / "efficacy" / "report.md").is_file()


def test_a_job_with_a_bad_option_raises_delt_error(tmp_path):
    with pytest.raises(delt.DeltError, match="no-such"):
        delt.lqs.annotate(DOCS, TARGET_SET, tmp_path / "l.parquet", text_column="no-such")
    with pytest.raises(delt.DeltError, match="gpu9"):
        delt.bench.efficacy(
            DOCS, TARGET_SET, tmp_path / "e", arms=ROOT / "sql" / "efficacy_arms.sql",
            device="gpu9",
        )
