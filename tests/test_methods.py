"""Methods, evaluation and the eval CLI, with a tiny random CLIP of the real class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_components import MICRO_CLIP  # noqa: E402

from cirlib.cli import main
from cirlib.evaluation import evaluate, paired_differences, result_rows
from cirlib.methods import (
    METHOD_INFO,
    ImageOnly,
    SumFusion,
    TextOnly,
    TextualInversion,
    caption_variants,
    list_methods,
)
from cirlib.methods.base import build_method
from cirlib.methods.supervised import Combiner, SupervisedCombiner, train_combiner
from cirlib.models.clip import CLIPModel, build_open_clip
from cirlib.models.phi import Phi
from cirlib.retrieval import EmbeddingCache
from cirlib.world import load_world_benchmark, training_triplets

MICRO = MICRO_CLIP


@pytest.fixture(scope="module")
def clip() -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(build_open_clip(MICRO), MICRO, name="micro")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    import os

    old = os.environ.get("CIRLIB_CACHE")
    os.environ["CIRLIB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        return {
            form: load_world_benchmark(form, "val", n_queries=24) for form in ("cirr", "circo", "fashioniq")
        }
    finally:
        if old is None:
            del os.environ["CIRLIB_CACHE"]
        else:
            os.environ["CIRLIB_CACHE"] = old


@pytest.fixture()
def cache(tmp_path) -> EmbeddingCache:
    return EmbeddingCache(tmp_path / "emb")


def test_registry_has_the_required_names():
    names = list_methods("tiny")
    for required in ("image", "text", "sum", "pic2word", "searle", "supervised"):
        assert required in names
    assert METHOD_INFO["supervised"][1] is False  # labelled supervised, not zero-shot
    assert all(METHOD_INFO[n][1] for n in ("image", "text", "sum", "pic2word", "searle"))


def test_build_unknown_method_errors():
    with pytest.raises(KeyError, match="unknown method"):
        build_method("magic")
    with pytest.raises(ValueError, match="profiles"):
        build_method("supervised", "paper")


def test_caption_variants_join_two_captions_both_ways(bench):
    q = bench["fashioniq"].queries[0]
    a, b = caption_variants(q)
    assert (
        a == f"{q.texts[0].strip()} and {q.texts[1].strip()}"
        and b == f"{q.texts[1].strip()} and {q.texts[0].strip()}"
    )
    assert len(caption_variants(bench["cirr"].queries[0])) == 1


def test_image_only_query_is_the_reference_embedding(clip, bench, cache):
    b = bench["cirr"]
    g = b.galleries["all"]
    m = ImageOnly(clip, cache)
    q = m.encode_queries(b.queries[:3], g)
    ref = clip.encode_images(g.pixels([x.reference for x in b.queries[:3]]))
    assert torch.allclose(q, ref, atol=1e-5)
    scores = m.score(b.queries, g)
    assert scores.shape == (len(b.queries), len(g)) and scores.dtype == np.float32


def test_gallery_features_are_cached(clip, bench, cache):
    g = bench["cirr"].galleries["all"]
    m = ImageOnly(clip, cache)
    m.gallery_features(g)
    m.gallery_features(g)
    assert cache.misses == 1 and cache.hits >= 1


def test_sum_and_inversion_are_normalised(clip, bench, cache):
    b = bench["cirr"]
    g = b.galleries["all"]
    phi = Phi(clip.embed_dim, clip.token_dim)
    for m in (
        SumFusion(clip, cache=cache),
        TextOnly(clip, cache=cache),
        TextualInversion(clip, phi, cache=cache),
    ):
        q = m.encode_queries(b.queries[:4], g)
        assert torch.allclose(q.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_inversion_prompt_must_hold_placeholder_and_text(clip):
    phi = Phi(clip.embed_dim, clip.token_dim)
    with pytest.raises(ValueError, match="must contain"):
        TextualInversion(clip, phi, prompt="a photo of {text}")


def test_text_with_braces_does_not_break_prompts(clip, bench, cache):
    from dataclasses import replace

    b = bench["cirr"]
    q = replace(b.queries[0], texts=("make it {red}",))
    TextOnly(clip, prompt="a photo of {text}", cache=cache).encode_queries([q], b.galleries["all"])


@pytest.mark.parametrize("form", ["cirr", "circo", "fashioniq"])
def test_evaluate_gives_official_keys_and_per_query_values(clip, bench, cache, form):
    ev = evaluate(SumFusion(clip, cache=cache), bench[form])
    n = len(bench[form].queries)
    keys = {
        "cirr": ["recall@1", "recall@50", "recall_subset@1", "complete/recall@1"],
        "circo": ["map@5", "map@50", "recall@5"],
        "fashioniq": ["average/recall@10", "average/recall@50", "complete/average/recall@10"],
    }[form]
    for key in keys:
        assert key in ev.per_query
    assert len(ev.per_query[keys[0]]) == n and len(ev.qids) == n
    summary = ev.summary
    assert all(0 <= v <= 100 for v in summary.values())
    if form == "cirr":  # the reference is removed from CIRR rankings
        for q, ranked in zip(bench[form].queries, ev.rankings["all"], strict=True):
            assert q.reference not in ranked
    if form == "fashioniq":  # the average is the unweighted mean of category means
        cats = ("round", "angular", "spiky")
        assert summary["average/recall@10"] == pytest.approx(
            np.mean([summary[f"{c}/recall@10"] for c in cats])
        )


def test_oracle_like_scores_reach_100(bench):
    """A method whose scores put the labelled target first must score 100 (the metric can pass)."""
    from cirlib.methods.base import Method

    class Oracle(Method):
        name = "oracle"

        def __init__(self):
            pass

        def encode_queries(self, queries, gallery):  # pragma: no cover - score is overridden
            raise NotImplementedError

        def score(self, queries, gallery):
            s = np.zeros((len(queries), len(gallery)), dtype=np.float32)
            for i, q in enumerate(queries):
                for gt in q.ground_truth:
                    s[i, gallery.index(gt)] = 0.5
                s[i, gallery.index(q.target)] = 1.0
            return s

    for form in ("cirr", "circo", "fashioniq"):
        summary = evaluate(Oracle(), bench[form]).summary
        headline = {"cirr": "recall@1", "circo": "map@50", "fashioniq": "average/recall@10"}[form]
        assert summary[headline] == pytest.approx(100.0)


def test_result_rows_and_paired_differences(clip, bench, cache):
    b = bench["cirr"]
    evs = {"image": evaluate(ImageOnly(clip, cache), b), "sum": evaluate(SumFusion(clip, cache=cache), b)}
    rows = result_rows("test_nb", evs, ["recall@5"], "abc")
    assert {r.method for r in rows} == {"image", "sum"}
    assert all(r.ci_low <= r.value <= r.ci_high for r in rows)
    d = paired_differences(evs, "sum", ["image"], "recall@5")
    assert d.loc["sum - image", "ci_low"] <= d.loc["sum - image", "diff"] <= d.loc["sum - image", "ci_high"]


def test_supervised_combiner_trains_and_scores(clip, bench, cache):
    t = training_triplets(64, seed=0)
    combiner = train_combiner(
        clip,
        t.references,
        t.texts,
        t.targets,
        __import__("cirlib.methods.supervised", fromlist=["x"]).CombinerTrainConfig(steps=3, batch_size=16),
        seed=0,
        progress=False,
    )
    assert isinstance(combiner, Combiner) and combiner.clip_hash == clip.hash
    m = SupervisedCombiner(clip, combiner, cache)
    assert m.zero_shot is False
    q = m.encode_queries(bench["cirr"].queries[:4], bench["cirr"].galleries["all"])
    assert torch.allclose(q.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_cli_eval_lists_methods(capsys):
    assert main(["eval", "--list-methods"]) == 0
    out = capsys.readouterr().out
    for name in ("image", "text", "sum", "pic2word", "searle", "supervised", "cig", "predicir"):
        assert name in out
    assert "SUPERVISED" in out
    assert main(["eval", "--list-methods", "--profile", "paper"]) == 0
    paper = {line.split("\t")[0] for line in capsys.readouterr().out.splitlines()}
    assert paper == {
        "image",
        "text",
        "sum",
        "pic2word",
        "searle",
        "lincir",
        "cig",
        "predicir",
        "planned-text",
        "ipcir",
    }


def test_cli_eval_errors_are_one_line(capsys, tmp_path):
    assert main(["eval", "--benchmark", "cirr", "--method", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown method" in err
    assert (
        main(
            [
                "eval",
                "--benchmark",
                "cirr",
                "--method",
                "sum",
                "--profile",
                "paper",
                "--data",
                str(tmp_path / "missing"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "does not exist" in err and str(tmp_path / "missing") in err


def test_cli_eval_runs_with_micro_models(tmp_path, monkeypatch, capsys):
    """The whole eval path (recipes -> zoo -> method -> metrics) with micro recipes in a fresh cache."""
    import subprocess
    import sys

    env = {
        **__import__("os").environ,
        "CIRLIB_RECIPES": "micro",
        "CIRLIB_CACHE": str(tmp_path),
        "CIRLIB_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, "-m", "cirlib", "eval", "--benchmark", "circo", "--split", "val", "--method", "pic2word",
         "--n-queries", "20", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, check=True, timeout=600,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert set(result) >= {"map@5", "map@10", "map@25", "map@50", "recall@5"}
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["metrics"] == result and record["n_queries"] == 20
    assert record["config"]["profile"] == "tiny" and record["throughput"]["queries_per_s"] > 0


def test_query_cost_counts_time_and_generated_images(bench, tmp_path):
    from cirlib.data.types import Gallery
    from cirlib.evaluation import query_cost

    b = bench["cirr"]
    queries = b.queries[:3]
    refs = sorted({q.reference for q in queries})
    gallery = Gallery(refs, b.galleries["all"].pixels(refs))
    plain = query_cost(build_method("sum"), queries, gallery, tmp_path / "sum")
    assert plain["seconds per query"] > 0 and plain["generated images per query"] == 0
    cig = build_method("cig", n_generated=2)
    cost = query_cost(cig, queries, gallery, tmp_path / "cig")
    assert cost["generated images per query"] >= 2  # two pseudo-targets each (more with filter retries)
    assert cig.pseudo_target_cache.cache.root == tmp_path / "cig"  # the query side ran on a fresh cache


@pytest.mark.parametrize(
    ("name", "options"),
    [("pic2word", {"box": "full"}), ("text", {"n_proxies": 2}), ("supervised", {"fusion": "text"})],
)
def test_factories_refuse_options_they_would_ignore(name, options):
    with pytest.raises(TypeError, match=f"method '{name}' has no option '{next(iter(options))}'"):
        build_method(name, "tiny", **options)
