"""Workshop mode: exercise versions of the notebooks, generated from the notebooks themselves.

One source, two versions. A notebook's worked solutions are the cells tagged ``solution`` (cell
metadata ``tags``), placed after its "Exercises" cell. The committed notebook is the *filled* version:
``make reproduce`` runs the solutions and the reader sees them. The *exercise* version, written by
``python -m cirlib.workshop`` (``make workshop``), keeps every other cell and replaces each solution
by an empty cell that keeps only its heading comments (``# Exercise 2: ...``, ``# Hint: ...``), or, for
a markdown solution (a discussion answer), by "*Your answer here.*". Outputs are cleared.

A solution cell must not define anything that a later, non-solution cell uses, or the exercise version
would fail where the filled one runs: :func:`exercise_problems` checks that statically, and the tests
execute the exercise versions under papermill.
"""

from __future__ import annotations

import argparse
import ast
import copy
from collections.abc import Sequence
from pathlib import Path

import nbformat

from cirlib import config

SOLUTION_TAG = "solution"
EXERCISE_TAG = "exercise"
MARKDOWN_STUB = "*Your answer here.*"
CODE_STUB = "# your code here"
DEFAULT_OUTPUT = config.REPO_ROOT / "workshop"


class WorkshopError(ValueError):
    """A notebook's solution cells break its exercise version."""


def is_solution(cell: nbformat.NotebookNode) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def _heading(source: str) -> list[str]:
    """The leading comment lines of a code cell, with "Solution" turned into "Exercise"."""
    lines = []
    for line in source.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.replace("# Solution", "# Exercise", 1))
    return lines


def exercise_cell(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The empty counterpart of one solution cell, tagged ``exercise``."""
    tags = [t for t in cell.metadata.get("tags", []) if t != SOLUTION_TAG] + [EXERCISE_TAG]
    if cell.cell_type == "markdown":
        return nbformat.v4.new_markdown_cell(MARKDOWN_STUB, metadata={"tags": tags})
    return nbformat.v4.new_code_cell("\n".join([*_heading(cell.source), CODE_STUB]), metadata={"tags": tags})


def exercise_version(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` with every solution cell emptied and every output cleared."""
    out = copy.deepcopy(notebook)
    cells = []
    for cell in out.cells:
        if is_solution(cell):
            cell = exercise_cell(cell)
        elif cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        cells.append(cell)
    out.cells = cells
    out.metadata.pop("papermill", None)
    return out


def _names(source: str, path: Path, index: int) -> tuple[set[str], set[str]]:
    """Names a code cell binds at top level and names it reads (IPython magics are skipped)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        raise WorkshopError(f"{path}: cell {index} does not parse: {error}") from error
    bound: set[str] = set()
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store | ast.Del) else read).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return bound, read


def exercise_problems(notebook: nbformat.NotebookNode, path: Path) -> list[str]:
    """What would break in the exercise version: a later, non-solution cell reading a name that only
    a solution cell binds. Empty when the exercise version is safe."""
    bound_elsewhere: set[str] = set()
    bound_by_solution: dict[str, int] = {}
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        bound, read = _names(cell.source, path, index)
        if is_solution(cell):
            for name in bound - bound_elsewhere:
                bound_by_solution.setdefault(name, index)
            continue
        for name in sorted(read & set(bound_by_solution) - bound_elsewhere):
            problems.append(
                f"{path}: cell {index} reads {name!r}, bound only by solution cell {bound_by_solution[name]}"
            )
        bound_elsewhere |= bound
    return problems


def solution_count(notebook: nbformat.NotebookNode) -> int:
    return sum(is_solution(c) for c in notebook.cells)


def write_exercise_versions(notebooks: Sequence[Path], output_dir: Path = DEFAULT_OUTPUT) -> list[Path]:
    """Write the exercise version of each notebook under ``output_dir`` (same file names); refuse a
    notebook whose exercise version would break (:func:`exercise_problems`)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        problems = exercise_problems(notebook, path)
        if problems:
            raise WorkshopError("\n".join(problems))
        target = output_dir / path.name
        tmp = target.with_name(f".{target.name}.tmp")
        nbformat.write(exercise_version(notebook), tmp)
        tmp.replace(target)  # atomic: a half-written exercise notebook never sits under the real name
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    from cirlib.reproduce import notebooks

    parser = argparse.ArgumentParser(
        prog="python -m cirlib.workshop",
        description="Write the exercise versions of the notebooks (solutions emptied, outputs cleared).",
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="default: workshop/")
    parser.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01")
    args = parser.parse_args(argv)
    selected = notebooks(args.only)
    for path in write_exercise_versions(selected, args.output_dir):
        n = solution_count(nbformat.read(config.REPO_ROOT / "notebooks" / path.name, as_version=4))
        print(f"{path}: {n} solution cell(s) emptied")


if __name__ == "__main__":
    main()
