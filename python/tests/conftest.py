"""Paths the tests share: the repository, the `delt` executable and the plugins that
`cargo build --workspace` puts in target/debug."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "target" / "debug"
DOCS = ROOT / "examples" / "data" / "docs.jsonl"
TARGET_SET = ROOT / "examples" / "data" / "target_python_howto.jsonl"


@pytest.fixture(scope="session")
def delt_exe() -> Path:
    """The `delt` command line, built by `cargo build`."""
    exe = Path(os.environ.get("DELT_EXE", DEBUG / "delt"))
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: run `cargo build --workspace` first")
    return exe


@pytest.fixture(scope="session")
def plugin_dir() -> Path:
    """The directory with the example scorer plugin `libtext_quality.so`."""
    if not (DEBUG / "libtext_quality.so").is_file():
        pytest.fail(f"{DEBUG}/libtext_quality.so is missing: run `cargo build --workspace` first")
    return DEBUG
