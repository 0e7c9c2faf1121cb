"""Every notebook runs end to end under papermill at smoke scale, then passes nbval (lax mode).

nbval re-executes the papermill output (which holds the injected smoke parameters) and compares
only the cells marked ``# NBVAL_CHECK_OUTPUT``: those whose output is deterministic (annotation
statistics, the scorer on official files, hand-worked metrics)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cirlib.reproduce import notebooks, run_notebook

NOTEBOOKS = notebooks()


@pytest.fixture()
def scratch_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRLIB_FIGURES", str(tmp_path / "figures"))
    return tmp_path


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_validates(path: Path, scratch_outputs: Path):
    executed = scratch_outputs / path.name
    run_notebook(path, {"PROFILE": "tiny", "SMOKE": True}, executed, timeout=1200)
    assert executed.exists()
    assert list((scratch_outputs / "figures").glob("*.png")), "the notebook saved no figure"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", str(executed)],
        capture_output=True, text=True, cwd=path.parent, env={**os.environ}, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_there_is_a_primer():
    assert any(p.stem == "01_cir_primer" for p in NOTEBOOKS)


def test_committed_notebooks_are_small():
    for path in NOTEBOOKS:
        assert path.stat().st_size < 1_500_000, (
            f"{path.name} is {path.stat().st_size} bytes; save figures to figures/"
        )
