"""The single-query explorer (cirlib.explorer, notebook 06) on small world benchmarks with the
committed tiny checkpoints: ranks and ground-truth marks, own texts and drawn scenes without marks,
the comparison table, figures, the widgets without a frontend, and static mode."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from cirlib import explorer
from cirlib.config import REPO_ROOT
from cirlib.methods import build_method
from cirlib.world import load_world_benchmark, render

FAST = ("image", "sum", "pic2word")
K = 5


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """A scratch CIRLIB_CACHE for the whole module (benchmarks and embedding caches)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIRLIB_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def bench(cache_env):
    return {form: load_world_benchmark(form, "val", n_queries=12) for form in ("cirr", "circo")}


@pytest.fixture(scope="module")
def methods(cache_env):
    return {name: build_method(name, "tiny") for name in FAST}


def _expected_rankings(method, benchmark, queries):
    """Full rankings from one batched ``Method.score`` call (the CIRR form drops the reference)."""
    gallery = benchmark.galleries["all"]
    scores = method.score(queries, gallery)
    rankings = []
    for query, row in zip(queries, scores):
        ranked = [gallery.ids[i] for i in np.argsort(-row, kind="stable")]
        if benchmark.form == "cirr":
            ranked.remove(query.reference)
        rankings.append(ranked)
    return rankings


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("form", ["cirr", "circo"])
def test_run_query_ranks_and_marks_match_the_ground_truth(bench, methods, name, form):
    b, method = bench[form], methods[name]
    queries = b.queries[:6]
    for query, ranked in zip(queries, _expected_rankings(method, b, queries)):
        result = explorer.run_query(method, b, query, K, views=False)
        assert list(result.ids) == ranked[:K]
        assert list(result.scores) == sorted(result.scores, reverse=True)
        valid = set(query.ground_truth) | {query.target}
        assert result.valid == valid and result.has_ground_truth
        assert result.marks == tuple(i in valid for i in ranked[:K])
        assert result.hits == sum(i in valid for i in ranked[:K])
        assert result.target_rank == ranked.index(query.target) + 1
        assert result.first_valid_rank == min(ranked.index(v) + 1 for v in valid)
        assert result.reference_excluded == (form == "cirr")
        if form == "cirr":
            assert query.reference not in result.ids
        assert result.pseudo_targets is None and result.proxies == ()


def test_circo_marks_every_valid_target(bench, methods):
    b = bench["circo"]
    query = max(b.queries, key=lambda q: len(q.ground_truth))
    assert len(query.ground_truth) > 1
    result = explorer.run_query(methods["sum"], b, query, k=len(b.galleries["all"]), views=False)
    assert sum(result.marks) == len(set(query.ground_truth))


def test_custom_query_has_no_marks_unless_it_is_the_benchmark_query(bench, methods):
    b = bench["cirr"]
    q = b.queries[0]
    assert explorer.custom_query(b, q.reference, "  " + q.text.upper() + " ") is q
    own = explorer.custom_query(b, q.reference, "put everything on a dotted background")
    assert own.target is None and own.ground_truth == () and own.reference == q.reference
    result = explorer.run_query(methods["pic2word"], b, own, K)
    assert result.marks == (None,) * K and result.hits is None
    assert result.target_rank is None and result.target_score is None and not result.has_ground_truth
    assert q.reference not in result.ids  # the CIRR protocol still removes the reference
    with pytest.raises(KeyError):
        explorer.custom_query(b, "no-such-image", "anything")


def test_drawn_query_searches_the_gallery_without_the_drawing(bench, methods):
    b = bench["cirr"]
    scene = explorer.scene_from_choices("striped", [("star", "blue", "large", (1, 1))])
    query, references = explorer.drawn_query(scene, "make the star red")
    assert references.ids == [query.reference] and query.reference not in b.galleries["all"].ids
    assert np.array_equal(references.images[0], render(scene, 64, jitter_seed=0))
    other, _ = explorer.drawn_query(
        explorer.scene_from_choices("plain", [("star", "blue", "large", (1, 1))]), "make the star red"
    )
    assert other.reference != query.reference and other.qid != query.qid
    result = explorer.run_query(methods["image"], b, query, K, references=references)
    assert result.marks == (None,) * K and not result.reference_excluded
    assert np.array_equal(result.reference_image, references.images[0])
    # a reference outside the searched gallery scores as the same pixels inside it do
    gallery = b.galleries["all"]
    q = b.queries[0]
    refs = type(gallery)([q.reference], gallery.pixels([q.reference]))
    for method in methods.values():
        direct = explorer._scores(method, q, refs, gallery)
        assert np.allclose(direct, method.score([q], gallery)[0], atol=1e-5)
    with pytest.raises(ValueError):
        explorer.scene_from_choices(
            "plain", [("star", "blue", "large", (0, 0)), ("circle", "red", "small", (0, 0))]
        )


def test_compare_methods_table(bench, methods):
    b = bench["cirr"]
    table = explorer.compare_methods(methods, b, b.queries[1], K)
    assert list(table.index) == list(FAST)
    assert list(table.columns) == [
        "zero-shot",
        f"valid in top-{K}",
        "first valid rank",
        "labelled target rank",
        "labelled target score",
        "top-1 score",
    ]
    assert table["zero-shot"].all() and (table["labelled target rank"] >= 1).all()
    assert explorer.method_label("supervised") == "supervised (SUPERVISED)"
    assert explorer.method_label("sum") == "sum"


def test_result_figure_and_png(bench, methods):
    b = bench["cirr"]
    results = explorer.run_methods(methods, b, b.queries[2], K, views=False)
    fig = explorer.result_figure(results, b.galleries["all"])
    assert isinstance(fig, plt.Figure)
    assert len(fig.axes) == len(results) * (1 + K + (1 if any(r.target_rank > K for r in results) else 0))
    png = explorer.figure_png(explorer.result_figure(results[0], b.galleries["all"]))
    assert png.startswith(b"\x89PNG")
    plt.close("all")


def test_cig_shows_its_pseudo_target(bench):
    b = bench["cirr"]
    gallery = b.galleries["all"]
    cig = build_method("cig", "tiny", form="cirr", split="val")
    result = explorer.run_query(cig, b, b.queries[3], 3)
    assert result.pseudo_targets is not None and result.pseudo_targets.dtype == np.uint8
    assert result.pseudo_targets.shape == (cig.n_images, *gallery.images.shape[1:])
    fig = explorer.result_figure(result, gallery)
    assert any(ax.get_title() == "pseudo-target" for ax in fig.axes)
    plt.close("all")


def test_predicir_shows_the_images_nearest_to_its_prediction(bench):
    b = bench["cirr"]
    q = b.queries[3]
    gallery = b.galleries["all"]
    predicir = build_method("predicir", "tiny")
    result = explorer.run_query(predicir, b, q, 3, n_proxies=2)
    assert result.proxies == tuple(predicir.nearest_to_prediction([q], gallery, 2)[0])
    # the drawn-reference path computes what PrediCIR itself does for the same pixels
    refs = type(gallery)([q.reference], gallery.pixels([q.reference]))
    drawn = explorer.run_query(predicir, b, q, 3, references=refs, n_proxies=2)
    assert drawn.proxies == result.proxies
    fig = explorer.result_figure(result, gallery)
    assert any(ax.get_title().startswith("nearest to") for ax in fig.axes)
    plt.close("all")


def test_interactive_mode_follows_the_flag_then_the_environment(monkeypatch):
    monkeypatch.delenv("CIRLIB_STATIC", raising=False)
    assert explorer.interactive_mode() is True
    monkeypatch.setenv("CIRLIB_STATIC", "1")
    assert explorer.interactive_mode() is False
    assert explorer.interactive_mode(True) is True
    monkeypatch.setenv("CIRLIB_STATIC", "0")
    assert explorer.interactive_mode() is True
    assert explorer.interactive_mode(False) is False


def test_static_launch_creates_no_widget(bench, methods, monkeypatch, capsys):
    def no_widgets(*args, **kwargs):
        raise AssertionError("a static run built the widgets")

    monkeypatch.setenv("CIRLIB_STATIC", "1")
    monkeypatch.setattr(explorer, "ExplorerWidgets", no_widgets)
    assert explorer.launch(bench["cirr"], methods) is None
    assert "Static run" in capsys.readouterr().out


def test_widgets_build_and_run_without_a_frontend(bench, methods, capsys):
    app = explorer.launch(bench["cirr"], methods, k=3, interactive=True)
    assert isinstance(app, explorer.ExplorerWidgets)
    b = bench["cirr"]
    app.query.value = 4
    assert app.text.value == b.queries[4].text
    app.method.value = "sum"
    result, table = app.run()
    assert result.query is b.queries[4] and result.k == 3 and result.method == "sum"
    assert list(table.index) == list(FAST)
    app.text.value = "make it bigger"
    result, _ = app.run()
    assert result.marks == (None,) * 3
    app.draw.value = True
    assert len(app.drawn_scene().objects) == 1
    result, _ = app.run()
    assert result.query.reference.startswith("drawn:")
    app.objects[1][0].value = "heart"
    app.objects[1][3].value = app.objects[0][3].value  # two objects in one cell
    app.show()  # reports the error in the output area (stdout without a frontend)
    assert "cannot run this query" in capsys.readouterr().out


def test_run_notebook_runs_static(monkeypatch, tmp_path):
    """``run_notebook`` (what make reproduce and the notebook tests call) sets CIRLIB_STATIC for the kernel."""
    import nbformat
    import papermill

    from cirlib import reproduce

    seen = {}

    def fake_execute(source, output, **kwargs):
        import os

        seen["static"] = os.environ.get("CIRLIB_STATIC")
        nbformat.write(nbformat.v4.new_notebook(), output)

    monkeypatch.delenv("CIRLIB_STATIC", raising=False)
    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    reproduce.run_notebook(tmp_path / "in.ipynb", {}, tmp_path / "out.ipynb")
    assert seen["static"] == "1"


NOTEBOOK = REPO_ROOT / "notebooks" / "06_explorer.ipynb"


def test_committed_explorer_notebook_is_static_and_small():
    """The committed notebook was executed by make reproduce (static): no widget output or state,
    the interactive cell printed how to enable it, and the file stays small."""
    nb = json.loads(NOTEBOOK.read_text())
    assert NOTEBOOK.stat().st_size < 400_000
    assert "widgets" not in nb["metadata"]
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert any("Static run" in "".join(o.get("text", "")) for o in outputs)
    parameters = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    source = "".join(parameters["source"])
    for name in ("PROFILE", "SMOKE", "BENCHMARK", "K", "INTERACTIVE"):
        assert f"{name} =" in source
