"""Workshop mode: exercise versions are generated from the notebooks, keep everything but the solutions,
and run end to end under papermill (smoke parameters)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from cirlib.reproduce import notebooks, run_notebook
from cirlib.workshop import (
    CODE_STUB,
    EXERCISE_TAG,
    MARKDOWN_STUB,
    WorkshopError,
    exercise_problems,
    exercise_version,
    is_solution,
    main,
    solution_count,
    write_exercise_versions,
)

NOTEBOOKS = notebooks()


def _notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def _solution(source: str, kind: str = "code") -> nbformat.NotebookNode:
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    return make(source, metadata={"tags": ["solution"]})


def test_exercise_version_empties_solutions_and_keeps_the_rest():
    ran = nbformat.v4.new_code_cell("x = 1\nx", execution_count=3)
    ran.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "1"}, execution_count=3)]
    nb = _notebook(
        nbformat.v4.new_markdown_cell("## Exercises\n1. Do it."),
        ran,
        _solution("# Solution 1: do it\n# Hint: use x\ny = x + 1\n# a later comment\nprint(y)"),
        _solution("**Answer 1.** Because.", kind="markdown"),
    )
    out = exercise_version(nb)
    assert [c.cell_type for c in out.cells] == ["markdown", "code", "code", "markdown"]
    assert out.cells[0].source == nb.cells[0].source
    assert (
        out.cells[1].source == "x = 1\nx"
        and out.cells[1].outputs == []
        and out.cells[1].execution_count is None
    )
    assert out.cells[2].source == f"# Exercise 1: do it\n# Hint: use x\n{CODE_STUB}"
    assert out.cells[3].source == MARKDOWN_STUB
    assert all(EXERCISE_TAG in c.metadata["tags"] and not is_solution(c) for c in out.cells[2:])
    assert nb.cells[2].source.startswith("# Solution 1"), "the source notebook must not be modified"
    assert solution_count(nb) == 2 and solution_count(out) == 0


def test_a_solution_that_later_cells_depend_on_is_refused(tmp_path: Path):
    nb = _notebook(
        nbformat.v4.new_code_cell("import numpy as np\nbase = 1"),
        _solution("# Solution 1\nanswer = base + 1\nnp.zeros(1)"),
        nbformat.v4.new_code_cell("print(answer, base)"),
    )
    problems = exercise_problems(nb, Path("demo.ipynb"))
    assert len(problems) == 1 and "'answer'" in problems[0] and "cell 2" in problems[0]
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(WorkshopError, match="answer"):
        write_exercise_versions([path], tmp_path / "out")
    assert not (tmp_path / "out" / "demo.ipynb").exists()
    # rebinding the name outside the solution first makes the later read safe
    nb.cells.insert(1, nbformat.v4.new_code_cell("answer = 0"))
    assert exercise_problems(nb, Path("demo.ipynb")) == []


def test_every_notebook_has_worked_solutions_for_its_exercises():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        headings = [
            c.source
            for c in nb.cells
            if c.cell_type == "markdown" and re.search(r"^## Exercises", c.source, re.M)
        ]
        assert len(headings) == 1, f"{path.name}: expected one '## Exercises' heading"
        exercises = headings[0][re.search(r"^## Exercises", headings[0], re.M).start() :]
        numbered = re.findall(r"^(\d+)\. ", exercises, flags=re.M)
        solved = {
            int(m)
            for c in nb.cells
            if is_solution(c)
            for m in re.findall(r"^(?:# Solution|\*\*Answer) (\d+)", c.source, flags=re.M)
        }
        assert numbered and solved == {int(n) for n in numbered}, (
            f"{path.name}: exercises {numbered}, solutions for {sorted(solved)}"
        )
        assert exercise_problems(nb, path) == [], path.name


def test_command_writes_exercise_versions(tmp_path: Path, capsys):
    main(["--output-dir", str(tmp_path), "--only", NOTEBOOKS[0].stem[:2]])
    written = nbformat.read(tmp_path / NOTEBOOKS[0].name, as_version=4)
    assert solution_count(written) == 0
    assert all(c.get("outputs", []) == [] for c in written.cells if c.cell_type == "code")
    assert "solution cell(s) emptied" in capsys.readouterr().out


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_exercise_version_runs(path: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CIRLIB_FIGURES", str(tmp_path / "figures"))
    (exercise,) = write_exercise_versions([path], tmp_path / "exercises")
    run_notebook(exercise, {"PROFILE": "tiny", "SMOKE": True}, tmp_path / "executed.ipynb", timeout=1200)
    executed = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    assert not any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))
