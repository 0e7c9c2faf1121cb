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


def test_output_dir_leaves_the_committed_figures_and_tables_alone(tmp_path, monkeypatch):
    """``reproduce --output-dir`` points figures and result tables there; result tables start as a
    copy of data/results (05 reads 01-04), and tables written then land in the copy."""
    from cirlib import config, experiments, viz
    from cirlib.reproduce import redirect_outputs

    monkeypatch.delenv("CIRLIB_FIGURES", raising=False)
    monkeypatch.delenv("CIRLIB_RESULTS", raising=False)
    redirect_outputs(tmp_path)
    assert config.figures_dir() == tmp_path / "figures" and config.results_dir() == tmp_path / "results"
    committed = sorted(p.name for p in config.RESULTS_DIR.glob("*.json"))
    assert committed and sorted(p.name for p in (tmp_path / "results").glob("*.json")) == committed
    assert experiments.results_path("01_cir_primer") == tmp_path / "results" / "01_cir_primer.json"
    figure = viz.save_figure(viz.plt.figure(), "probe")
    assert figure.parent == tmp_path / "figures"
    assert config.shown_path(figure) == str(figure.resolve())
    assert config.shown_path(config.RESULTS_DIR / "x.json") == "data/results/x.json"
