"""The main job: execute every notebook with papermill on the tiny profile.

``python -m cirlib.reproduce`` (what ``make reproduce`` runs) executes ``notebooks/NN_*.ipynb`` in
order, in place (each written atomically once it has run), so the committed notebooks always show
the outputs of the last full run; figures land in ``figures/`` and result tables in
``data/results/``. ``--smoke`` passes each notebook's small ``SMOKE`` parameters instead (what the
tests run), writing executed copies to a scratch folder rather than over the notebooks. Every run is
static (``CIRLIB_STATIC=1`` unless set): interactive parts print how to enable them and create no widget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from cirlib.config import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.stem.startswith(o) or p.stem == o for o in only)]
        if not found:
            raise SystemExit(f"reproduce: no notebook matches {only} in {NOTEBOOKS_DIR}")
    return found


def run_notebook(path: Path, parameters: dict, output: Path, timeout: int | None = None) -> float:
    """Execute ``path`` with papermill into ``output`` (atomically); return the seconds it took."""
    import papermill

    # Batch runs are static: notebooks that offer widgets (06, the explorer) print how to get them
    # instead of creating any, so committed notebooks carry no widget state. The kernel inherits
    # this; a session that sets CIRLIB_STATIC itself (even to "0") keeps its own value.
    os.environ.setdefault("CIRLIB_STATIC", "1")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.running.ipynb")
    start = time.perf_counter()
    papermill.execute_notebook(
        str(path),
        str(tmp),
        parameters=parameters,
        cwd=str(path.parent),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=timeout,
    )
    _drop_unused_widget_state(tmp)
    os.replace(tmp, output)
    return time.perf_counter() - start


def _drop_unused_widget_state(path: Path) -> None:
    """Remove the notebook-level widget state when no output shows a widget: it is stale (kept from
    earlier interactive runs, since papermill executes in place) and only makes the file larger."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    shows_widget = any(
        "application/vnd.jupyter.widget-view+json" in output.get("data", {})
        for cell in nb.cells
        for output in cell.get("outputs", [])
    )
    if "widgets" in nb.metadata and not shows_widget:
        del nb.metadata["widgets"]
        nbformat.write(nb, path)


def redirect_outputs(out_dir: Path) -> None:
    """Send figures and result tables under ``out_dir`` (``figures/``, ``results/``) unless
    ``CIRLIB_FIGURES`` / ``CIRLIB_RESULTS`` are set. The results folder starts as a copy of
    ``data/results/`` so that a notebook reading earlier ones (05) finds them when run alone."""
    from cirlib.config import RESULTS_DIR

    os.environ.setdefault("CIRLIB_FIGURES", str(out_dir / "figures"))
    if "CIRLIB_RESULTS" not in os.environ:
        results = out_dir / "results"
        if not results.exists():
            shutil.copytree(RESULTS_DIR, results)
        os.environ["CIRLIB_RESULTS"] = str(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cirlib.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01")
    parser.add_argument("--smoke", action="store_true", help="small parameters, outputs to a scratch folder")
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="write executed notebooks, figures/ and results/ here; the committed ones stay untouched",
    )
    args = parser.parse_args(argv)
    parameters = {"PROFILE": "tiny", "SMOKE": bool(args.smoke)}
    # Progress bars inside a notebook become widget outputs; committed notebooks should not carry
    # them. Interactive runs keep them; this command reports per-notebook progress on stderr.
    os.environ.setdefault("TQDM_DISABLE", "1")
    out_dir = args.output_dir or (REPO_ROOT / ".cache" / "smoke-notebooks" if args.smoke else None)
    if args.smoke:  # smoke figures must not overwrite the committed ones
        os.environ.setdefault("CIRLIB_FIGURES", str(REPO_ROOT / ".cache" / "smoke-figures"))
    if args.output_dir is not None and not args.smoke:  # the committed figures and tables stay as they are
        redirect_outputs(args.output_dir)
    timings = {}
    for path in notebooks(args.only):
        output = path if out_dir is None else out_dir / path.name
        print(f"reproduce: running {path.name} ...", file=sys.stderr, flush=True)
        seconds = run_notebook(path, parameters, output)
        timings[path.name] = round(seconds, 1)
        print(f"reproduce: {path.name} done in {seconds:.0f} s", file=sys.stderr, flush=True)
    print(json.dumps({"notebooks": timings, "total_s": round(sum(timings.values()), 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
