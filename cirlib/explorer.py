"""An explorer of single queries: one reference, one text, one method, the top-k with ground truth.

Notebook 06 wires these functions to widgets; everything it shows is computed here.

* :func:`run_query` ranks a gallery for one query with one method and returns an
  :class:`ExplorerResult`: the top-k ids and scores, which of them are valid targets, the rank and
  score of the labelled target, and the method's own view of the target when it makes one (CIG's
  generated pseudo-target, PrediCIR's gallery images nearest to its predicted content).
* :func:`custom_query` puts a user's own text on a gallery reference; :func:`drawn_query` renders a
  scene composed by hand (:func:`scene_from_choices`) as the reference. Neither has ground truth
  (the world's edit language generates texts from edits, it does not parse them), so nothing is
  marked, unless the text is exactly a benchmark query's text on that reference, in which case
  :func:`custom_query` returns that query, ground truth included.
* :func:`compare_methods` / :func:`comparison_table`: one row per method (rank of the labelled
  target, its score, valid targets in the top-k); :func:`result_figure`: the picture.
* :func:`launch` decides between the interactive explorer (:class:`ExplorerWidgets`, ipywidgets) and
  static output: interactive unless told otherwise or ``CIRLIB_STATIC`` is set (``make reproduce``
  and the notebook tests set it, so committed notebooks carry no widget state).

Rankings follow the benchmark's protocol: in the CIRR form the reference is removed from its own
ranking, as the official scorer does; CIRCO and FashionIQ keep it. World queries know *every*
gallery image that satisfies them (``Query.ground_truth``), so green and red marks are complete:
a red image really is wrong, not merely unlabelled.
"""

from __future__ import annotations

import io
import os
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cirlib import viz
from cirlib.data.types import Benchmark, Gallery, Query
from cirlib.methods import METHOD_INFO, Method, build_method, list_methods
from cirlib.retrieval import content_digest
from cirlib.world.render import render
from cirlib.world.scene import BACKGROUNDS, CELLS, COLORS, SHAPES, SIZES, Obj, Scene

#: Frame colour of ranked images when the query has no ground truth (own text, drawn scene).
UNKNOWN_COLOR = "#999999"
#: Names of the 3x3 grid cells, row-major, for the scene composer.
CELL_LABELS: dict[tuple[int, int], str] = {
    (r, c): f"{('top', 'middle', 'bottom')[r]} {('left', 'center', 'right')[c]}" for r, c in CELLS
}
#: Environment variable that turns the explorer's interactive part off (any value but "" or "0").
STATIC_ENV = "CIRLIB_STATIC"


# ------------------------------------------------------------------------------------ queries
def valid_targets(query: Query) -> frozenset[str]:
    """Every gallery image that satisfies ``query`` (empty when it has no ground truth)."""
    return frozenset(query.ground_truth) | ({query.target} if query.target else frozenset())


def category_of(benchmark: Benchmark, image_id: str) -> str:
    """The category whose gallery holds ``image_id`` (KeyError if none does)."""
    for category, gallery in benchmark.galleries.items():
        if image_id in gallery.ids:
            return category
    raise KeyError(f"image {image_id!r} is in no gallery of {benchmark.name}")


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def custom_query(benchmark: Benchmark, reference_id: str, text: str, *, category: str | None = None) -> Query:
    """A query made of a gallery image and the user's own ``text``.

    When ``text`` equals (case and spacing aside) the text of a benchmark query on the same
    reference, that query is returned, with its ground truth. Otherwise the query has no target
    and no ground truth: the world cannot tell which images satisfy a free text."""
    category = category or category_of(benchmark, reference_id)
    benchmark.galleries[category].index(reference_id)  # KeyError when the image is not there
    wanted = _normalized(text)
    for q in benchmark.queries:
        if q.reference == reference_id and q.category == category and _normalized(q.text) == wanted:
            return q
    return Query(
        qid=f"custom:{reference_id}:{content_digest(text)[:8]}",
        reference=reference_id,
        texts=(text,),
        target=None,
        category=category,
        info={"custom": True},
    )


def scene_from_choices(background: str, objects: Sequence[tuple[str, str, str, tuple[int, int]]]) -> Scene:
    """A world scene from hand-picked objects ``(shape, colour, size, (row, column))`` on a background
    (1 to 4 objects in distinct cells of the 3x3 grid; ValueError otherwise)."""
    return Scene(
        tuple(Obj(shape, color, size, cell[0], cell[1]) for shape, color, size, cell in objects), background
    )


def drawn_query(
    scene: Scene, text: str, *, category: str = "all", image_size: int = 64
) -> tuple[Query, Gallery]:
    """A query whose reference is ``scene`` rendered (canonical jitter seed 0) and the gallery that
    holds only that image (pass it to :func:`run_query` as ``references``). The reference is not
    added to the searched gallery, so it cannot retrieve itself; the query has no ground truth.
    Ids carry a digest of the pixels, so two drawings never share a cache entry."""
    image = np.array(render(scene, image_size, jitter_seed=0))  # writable: torch warns on read-only arrays
    digest = content_digest(image)[:12]
    reference_id = f"drawn:{digest}"
    query = Query(
        qid=f"drawn:{digest}:{content_digest(text)[:8]}",
        reference=reference_id,
        texts=(text,),
        target=None,
        category=category,
        info={"drawn": True, "reference_scene": scene.to_dict()},
    )
    return query, Gallery([reference_id], image[None], None, [scene])


def example_queries(benchmark: Benchmark, kinds: Sequence[str]) -> list[Query]:
    """For each edit kind, the first benchmark query that makes exactly that one edit, else the first
    whose edits include it (``Query.info["kinds"]``; world benchmarks only), never one query twice."""
    found: list[Query] = []
    for kind in kinds:
        candidates = [q for q in benchmark.queries if kind in q.info.get("kinds", ()) and q not in found]
        if not candidates:
            raise LookupError(f"no query of {benchmark.name} makes a {kind!r} edit")
        found.append(next((q for q in candidates if len(q.info["kinds"]) == 1), candidates[0]))
    return found


# ------------------------------------------------------------------------------------ methods
def load_methods(
    profile: str, form: str, split: str, names: Sequence[str] | None = None
) -> dict[str, Method]:
    """Every method registered for ``profile`` (or ``names``), built with its default settings;
    CIG takes its official fusion weight for the benchmark form and split."""
    methods = {}
    for name in names or list_methods(profile):
        options = {"form": form, "split": split} if name == "cig" else {"form": form}
        methods[name] = build_method(name, profile, **options)
    return methods


def method_label(name: str) -> str:
    """A method's name, with SUPERVISED appended when it is not zero-shot."""
    info = METHOD_INFO.get(name)
    return name if info is None or info[1] else f"{name} (SUPERVISED)"


def methods_table(methods: Mapping[str, Method]) -> pd.DataFrame:
    """One row per method: zero-shot or not, and its registry description."""
    rows = {
        name: {
            "zero-shot": method.zero_shot,
            "description": METHOD_INFO[name][2] if name in METHOD_INFO else method.description,
        }
        for name, method in methods.items()
    }
    return pd.DataFrame(rows).T.rename_axis("method")


# ------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class ExplorerResult:
    """One method's answer to one query.

    ``ids``/``scores``: the top-k gallery ids and their similarities (higher is better).
    ``valid``: every valid target (empty when the query has no ground truth). ``target_rank`` is
    the 1-based rank of the labelled target in the whole ranking (None without one), and
    ``first_valid_rank`` that of the best-ranked valid target. ``pseudo_targets`` holds CIG's
    generated images (uint8 ``[n, H, W, 3]``); ``proxies`` PrediCIR's gallery images nearest to its
    predicted target content."""

    query: Query
    method: str
    zero_shot: bool
    reference_image: np.ndarray
    ids: tuple[str, ...]
    scores: tuple[float, ...]
    valid: frozenset[str]
    target_rank: int | None
    target_score: float | None
    first_valid_rank: int | None
    reference_excluded: bool
    pseudo_targets: np.ndarray | None = None
    proxies: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def k(self) -> int:
        return len(self.ids)

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.valid)

    @property
    def marks(self) -> tuple[bool | None, ...]:
        """Per top-k image: True (a valid target), False (not one), None (no ground truth)."""
        if not self.has_ground_truth:
            return tuple(None for _ in self.ids)
        return tuple(i in self.valid for i in self.ids)

    @property
    def hits(self) -> int | None:
        """Valid targets in the top-k (None without ground truth)."""
        return sum(bool(m) for m in self.marks) if self.has_ground_truth else None


def _scores(method: Method, query: Query, references: Gallery, gallery: Gallery) -> np.ndarray:
    """Similarities ``[G]`` of ``query`` (reference looked up in ``references``) to ``gallery``:
    :meth:`Method.score` when the reference is a gallery image, else the query embedding from the
    one-image gallery against the (cached) features of the searched gallery."""
    if references is gallery:
        return method.score([query], gallery)[0]
    with torch.inference_mode():
        q = method.encode_queries([query], references)
        g = method.gallery_features(gallery)
        return (q @ g.T).numpy().astype(np.float32, copy=False)[0]


def run_query(
    method: Method,
    benchmark: Benchmark,
    query: Query,
    k: int = 5,
    *,
    references: Gallery | None = None,
    views: bool = True,
    n_proxies: int = 3,
) -> ExplorerResult:
    """Rank the query's gallery (``benchmark.galleries[query.category]``) with ``method``.

    ``references`` holds the reference image when it is not a gallery image (:func:`drawn_query`).
    ``views`` adds the method's own picture of the target when it makes one: CIG's pseudo-targets,
    PrediCIR's ``n_proxies`` gallery images nearest to the prediction."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    start = time.perf_counter()
    gallery = benchmark.galleries[query.category]
    refs = gallery if references is None else references
    scores = _scores(method, query, refs, gallery)
    order = np.argsort(-scores, kind="stable")
    exclude = benchmark.form == "cirr" and references is None  # the CIRR protocol's reference removal
    if exclude:
        order = order[order != gallery.index(query.reference)]
    ranked = [gallery.ids[i] for i in order]
    rank = {image_id: r for r, image_id in enumerate(ranked, start=1)}
    valid = valid_targets(query)
    valid_ranks = [rank[v] for v in valid if v in rank]
    pseudo, proxies = None, ()
    if views and hasattr(method, "pseudo_targets"):
        pseudo = method.pseudo_targets([query], refs)[0]
    if views and hasattr(method, "nearest_to_prediction"):
        proxies = tuple(
            method.nearest_to_prediction(
                [query], gallery, n_proxies, references=None if refs is gallery else refs
            )[0]
        )
    top = order[:k]
    return ExplorerResult(
        query=query,
        method=method.name,
        zero_shot=method.zero_shot,
        reference_image=refs.pixels([query.reference])[0],
        ids=tuple(gallery.ids[i] for i in top),
        scores=tuple(float(scores[i]) for i in top),
        valid=valid,
        target_rank=rank.get(query.target) if query.target else None,
        target_score=float(scores[gallery.index(query.target)]) if query.target else None,
        first_valid_rank=min(valid_ranks) if valid_ranks else None,
        reference_excluded=exclude,
        pseudo_targets=pseudo,
        proxies=proxies,
        seconds=time.perf_counter() - start,
    )


def run_methods(
    methods: Mapping[str, Method],
    benchmark: Benchmark,
    query: Query,
    k: int = 5,
    *,
    references: Gallery | None = None,
    views: bool = True,
) -> list[ExplorerResult]:
    """:func:`run_query` for every method, in order."""
    return [run_query(m, benchmark, query, k, references=references, views=views) for m in methods.values()]


def comparison_table(results: Sequence[ExplorerResult]) -> pd.DataFrame:
    """One row per result: zero-shot or not, valid targets in the top-k, best rank of a valid
    target, rank and score of the labelled target, and the top-1 score (NaN where unknown)."""
    rows = {}
    for r in results:
        rows[method_label(r.method)] = {
            "zero-shot": r.zero_shot,
            f"valid in top-{r.k}": r.hits,
            "first valid rank": r.first_valid_rank,
            "labelled target rank": r.target_rank,
            "labelled target score": r.target_score,
            "top-1 score": r.scores[0],
        }
    table = pd.DataFrame(rows).T.rename_axis("method")
    for column in table.columns[1:]:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["zero-shot"] = table["zero-shot"].astype(bool)
    return table


def compare_methods(
    methods: Mapping[str, Method],
    benchmark: Benchmark,
    query: Query,
    k: int = 5,
    *,
    references: Gallery | None = None,
) -> pd.DataFrame:
    """:func:`comparison_table` of every method on one query (no pseudo-targets or proxies)."""
    return comparison_table(run_methods(methods, benchmark, query, k, references=references, views=False))


# ------------------------------------------------------------------------------------ figures
def _views_of(result: ExplorerResult, gallery: Gallery) -> list[tuple[np.ndarray, str]]:
    """The method's own images of the target, with titles."""
    out = []
    if result.pseudo_targets is not None:
        out += [
            (image, "pseudo-target" if i == 0 else f"pseudo-target {i + 1}")
            for i, image in enumerate(result.pseudo_targets)
        ]
    out += [
        (image, f"nearest to\nprediction {i + 1}")
        for i, image in enumerate(gallery.pixels(list(result.proxies)))
    ]
    return out


def _frame(ax, color: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def result_figure(
    results: ExplorerResult | Sequence[ExplorerResult],
    gallery: Gallery,
    *,
    size: float = 1.2,
    title: str | None = None,
):
    """One row per result: the reference, the method's own view of the target (pseudo-target or
    nearest-to-prediction images, when it makes one), the top-k with their scores (valid targets
    framed green, others red, grey when the query has no ground truth) and, when the labelled
    target is outside the top-k, the target with its rank."""
    results = [results] if isinstance(results, ExplorerResult) else list(results)
    if not results:
        raise ValueError("result_figure needs at least one result")
    views = [_views_of(r, gallery) for r in results]
    n_views = max(len(v) for v in views)
    k = max(r.k for r in results)
    late = [r.query.target if r.target_rank is not None and r.target_rank > r.k else None for r in results]
    ncols = 1 + n_views + k + (1 if any(late) else 0)
    one_query = len({r.query.qid for r in results}) == 1
    fig, axes = viz.plt.subplots(
        len(results), ncols, figsize=(ncols * size + 1.2, len(results) * (size + 0.45) + 0.6), squeeze=False
    )
    for row, (r, own, target) in enumerate(zip(results, views, late, strict=True)):
        for ax in axes[row]:
            ax.axis("off")
        ax = axes[row, 0]
        ax.axis("on")
        ax.imshow(r.reference_image, interpolation="nearest")
        _frame(ax, "#333333", 1.0)
        ax.set_title("reference" if one_query else "\n".join(textwrap.wrap(r.query.text, 22)), fontsize=6.5)
        ax.set_ylabel(method_label(r.method), fontsize=8, rotation=0, ha="right", va="center")
        for col, (image, label) in enumerate(own, start=1):
            ax = axes[row, col]
            ax.axis("on")
            ax.imshow(image, interpolation="nearest")
            _frame(ax, "#4575b4", 1.5)
            ax.set_title(label, fontsize=6.5, color="#4575b4")
        for i, (image_id, score, mark) in enumerate(zip(r.ids, r.scores, r.marks, strict=True)):
            ax = axes[row, 1 + n_views + i]
            ax.axis("on")
            ax.imshow(gallery.pixels([image_id])[0], interpolation="nearest")
            color = UNKNOWN_COLOR if mark is None else viz.HIT_COLOR if mark else viz.MISS_COLOR
            _frame(ax, color, 3.0 if mark is not None else 1.0)
            ax.set_title(
                f"#{i + 1} {score:.3f}" + (" ✓" if mark else ""),
                fontsize=6.5,
                color=color if mark else "black",
            )
        if target is not None:
            ax = axes[row, ncols - 1]
            ax.axis("on")
            ax.imshow(gallery.pixels([target])[0], interpolation="nearest")
            _frame(ax, viz.HIT_COLOR, 1.5)
            ax.set_title(f"target: rank {r.target_rank}", fontsize=6.5, color=viz.HIT_COLOR)
    if title is None and one_query:
        q, r0 = results[0].query, results[0]
        truth = (
            f"{len(r0.valid)} valid target(s) known: green = valid, red = not"
            if r0.has_ground_truth
            else "no ground truth: nothing is marked"
        )
        origin = (
            "drawn reference"
            if q.info.get("drawn")
            else "own text"
            if q.info.get("custom")
            else f"query {q.qid}"
        )
        title = f"“{q.text}”  [{origin}; {truth}]"
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=8.5)
    fig.tight_layout()
    return fig


def figure_png(fig, dpi: int = 90) -> bytes:
    """PNG bytes of a figure (closed afterwards): the interactive explorer's display, which must not
    overwrite the committed figures under figures/."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    viz.plt.close(fig)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ widgets
def interactive_mode(interactive: bool | None = None) -> bool:
    """``interactive`` when given, else True unless ``CIRLIB_STATIC`` is set (to anything but "" or "0")."""
    if interactive is not None:
        return bool(interactive)
    return os.environ.get(STATIC_ENV, "") in ("", "0")


class ExplorerWidgets:
    """The interactive explorer over one benchmark and a set of methods (ipywidgets).

    Controls: a query (its reference and text), the modification text (edit it to ask your own
    question of the same reference), an optional hand-drawn reference scene, the method, k, and a
    Retrieve button; results (figure and every method's comparison) go to :attr:`output`.
    :meth:`run` computes without displaying anything, so it works without a frontend."""

    def __init__(
        self,
        benchmark: Benchmark,
        methods: Mapping[str, Method],
        *,
        k: int = 5,
        max_queries: int = 300,
        max_objects: int = 3,
    ) -> None:
        import ipywidgets as w

        if not methods:
            raise ValueError("the explorer needs at least one method")
        self.benchmark, self.methods = benchmark, dict(methods)
        self.queries = benchmark.queries[:max_queries]
        self.query = w.Dropdown(
            options=[(f"{q.qid}: {textwrap.shorten(q.text, 70)}", i) for i, q in enumerate(self.queries)],
            value=0,
            description="query",
            layout=w.Layout(width="640px"),
        )
        self.text = w.Text(
            value=self.queries[0].text, description="modification", layout=w.Layout(width="640px")
        )
        self.method = w.ToggleButtons(
            options=[(method_label(n), n) for n in self.methods],
            tooltips=[METHOD_INFO[n][2] if n in METHOD_INFO else "" for n in self.methods],
            description="method",
            style={"button_width": "auto"},
        )
        self.k = w.IntSlider(value=k, min=1, max=10, description="top-k")
        self.draw = w.Checkbox(value=False, description="use the drawn scene as reference", indent=False)
        self.background = w.Dropdown(options=list(BACKGROUNDS), value="plain", description="background")
        none = "(none)"
        cells = [(label, cell) for cell, label in CELL_LABELS.items()]
        self.objects = []
        for i in range(max_objects):
            self.objects.append(
                (
                    w.Dropdown(
                        options=[none, *SHAPES],
                        value="circle" if i == 0 else none,
                        layout=w.Layout(width="110px"),
                    ),
                    w.Dropdown(options=list(COLORS), value="red", layout=w.Layout(width="100px")),
                    w.Dropdown(options=list(SIZES), value="large", layout=w.Layout(width="90px")),
                    w.Dropdown(
                        options=cells, value=CELLS[4 if i == 0 else i - 1], layout=w.Layout(width="140px")
                    ),
                )
            )
        self._none = none
        self.button = w.Button(description="Retrieve", button_style="primary", icon="search")
        self.output = w.Output()
        drawing = w.VBox(
            [
                self.draw,
                self.background,
                *[w.HBox([w.Label(f"object {i + 1}"), *row]) for i, row in enumerate(self.objects)],
            ]
        )
        accordion = w.Accordion(children=[drawing])
        accordion.set_title(0, "draw a reference scene")
        self.widget = w.VBox(
            [self.query, self.text, accordion, self.method, w.HBox([self.k, self.button]), self.output]
        )
        self.query.observe(self._on_query, names="value")
        self.button.on_click(lambda _: self.show())

    def _on_query(self, change) -> None:
        self.text.value = self.queries[change["new"]].text

    def drawn_scene(self) -> Scene:
        """The scene composed in the drawing controls (ValueError if it is not a valid scene)."""
        objects = [
            (shape.value, color.value, size.value, cell.value)
            for shape, color, size, cell in self.objects
            if shape.value != self._none
        ]
        return scene_from_choices(self.background.value, objects)

    def current_query(self) -> tuple[Query, Gallery | None]:
        """The query the controls describe and, for a drawn reference, the gallery holding it."""
        selected = self.queries[self.query.value]
        if self.draw.value:
            gallery = self.benchmark.galleries[selected.category]
            size = gallery.images.shape[1] if gallery.images is not None else 64
            return drawn_query(
                self.drawn_scene(), self.text.value, category=selected.category, image_size=size
            )
        return custom_query(
            self.benchmark, selected.reference, self.text.value, category=selected.category
        ), None

    def run(self) -> tuple[ExplorerResult, pd.DataFrame]:
        """The selected method's result and every method's comparison for the current controls."""
        query, references = self.current_query()
        result = run_query(
            self.methods[self.method.value], self.benchmark, query, self.k.value, references=references
        )
        table = compare_methods(self.methods, self.benchmark, query, self.k.value, references=references)
        return result, table

    def show(self) -> None:
        """Run and display the figure and the comparison in :attr:`output` (errors shown there too)."""
        from IPython.display import Image, clear_output, display

        with self.output:
            clear_output(wait=True)
            try:
                result, table = self.run()
            except (ValueError, KeyError) as error:
                print(f"cannot run this query: {error}")
                return
            gallery = self.benchmark.galleries[result.query.category]
            display(Image(data=figure_png(result_figure(result, gallery)), format="png"))
            display(table)
            print(f"{result.method}: {result.seconds:.2f} s")


def launch(
    benchmark: Benchmark,
    methods: Mapping[str, Method],
    *,
    k: int = 5,
    interactive: bool | None = None,
) -> ExplorerWidgets | None:
    """The interactive explorer, or, in static mode (:func:`interactive_mode`), None after printing
    one line that says how to get it: static runs create no widget at all."""
    if not interactive_mode(interactive):
        why = "INTERACTIVE = False" if interactive is not None else f"{STATIC_ENV} is set"
        print(
            f"Static run ({why}), no widgets: to explore, run this notebook in JupyterLab with "
            f"INTERACTIVE = True, or with INTERACTIVE = None and {STATIC_ENV} unset."
        )
        return None
    return ExplorerWidgets(benchmark, methods, k=k)


__all__ = [
    "CELL_LABELS",
    "ExplorerResult",
    "ExplorerWidgets",
    "category_of",
    "compare_methods",
    "comparison_table",
    "custom_query",
    "drawn_query",
    "example_queries",
    "figure_png",
    "interactive_mode",
    "launch",
    "load_methods",
    "method_label",
    "methods_table",
    "result_figure",
    "run_methods",
    "run_query",
    "scene_from_choices",
    "valid_targets",
]
