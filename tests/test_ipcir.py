"""IP-CIR: the robust proxy feature and balanced score on hand-worked numbers, plans as text, and the
method over stub captioner / planner / generator (the oracle proxy must find the target)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_components import MICRO_CLIP

from cirlib.data.types import Benchmark
from cirlib.evaluation import evaluate
from cirlib.generation.layout import LayoutObject, Plan, PlanError, format_plan, parse_plan
from cirlib.methods.baselines import TextOnly
from cirlib.methods.ipcir import IPCIR, PlannedText, PlanningChain, combine_scores, robust_proxy_feature
from cirlib.models.clip import CLIPModel, build_open_clip
from cirlib.retrieval import EmbeddingCache
from cirlib.world import load_world_benchmark


# --------------------------------------------------------------------------- formulas
def test_robust_proxy_feature_on_hand_worked_numbers() -> None:
    f_p = torch.tensor([[0.5, 0.2, -0.1]])
    f_q = torch.tensor([[0.1, 0.25, 0.0]])  # max 0.25: ratio 0.5 / 0.25 = 2
    f_s = torch.tensor([[0.0, -0.2, 0.1]])  # max 0.1: ratio 5
    assert torch.allclose(robust_proxy_feature(f_p, f_q, f_s), torch.tensor([[0.7, -0.3, 0.4]]))


def test_robust_proxy_feature_drops_a_term_whose_max_is_not_positive() -> None:
    f_p = torch.tensor([[0.5, 0.2, -0.1], [0.5, 0.2, -0.1]])
    f_q = torch.tensor([[0.1, 0.25, 0.0], [-0.1, -0.2, -0.3]])
    f_s = torch.zeros(2, 3)  # the target description equals the caption: no perturbation
    out = robust_proxy_feature(f_p, f_q, f_s)
    assert torch.allclose(out, torch.tensor([[0.7, 0.7, -0.1], [0.5, 0.2, -0.1]]))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="differ"):
        robust_proxy_feature(f_p, f_q[:1], f_s)


def test_combined_scores_on_hand_worked_numbers() -> None:
    s_t, s_p = torch.tensor([0.5, -0.2]), torch.tensor([0.4, -0.5])
    balanced = combine_scores(s_t, s_p, 0.3)  # clamp: the second product is 0, not +0.1
    assert torch.allclose(balanced, torch.tensor([0.29, -0.06]))
    raw = combine_scores(s_t, s_p, 0.3, negatives="none")
    assert torch.allclose(raw, torch.tensor([0.29, 0.01]))
    weighted = combine_scores(s_t, s_p, 0.3, combine="weighted")
    assert torch.allclose(weighted, torch.tensor([0.43, -0.41]))
    assert torch.equal(combine_scores(s_t, s_p, 1.0), s_t)  # lambda 1: the base alone
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        combine_scores(s_t, s_p, 1.5)
    with pytest.raises(ValueError, match="combine must be"):
        combine_scores(s_t, s_p, 0.5, combine="max")


# --------------------------------------------------------------------------- plans
def test_plan_text_round_trip_and_errors() -> None:
    plan = Plan(
        "a large red circle in the center on a striped background",
        (LayoutObject("large red circle", (0.3, 0.3, 0.7, 0.7)), LayoutObject("star", (0.0, 0.0, 0.2, 0.25))),
        "striped",
    )
    text = format_plan(plan)
    assert text == (
        "a large red circle in the center on a striped background | large red circle [30 30 70 70] ; "
        "star [0 0 20 25] | striped"
    )
    assert parse_plan(text) == plan
    assert parse_plan(" " + text + ". ") == plan  # what language models add around an answer
    assert parse_plan("a star |  | ") == Plan("a star", (), "")
    for bad, problem in (
        ("a star", "3 '|'-separated fields"),
        (" | star [0 0 10 10] | plain", "description is empty"),
        ("a star | star 0 0 10 10 | plain", "not 'phrase"),
        ("a star | star [50 0 10 10] | plain", "not inside the unit square"),
        ("a star | star [0 0 10 120] | plain", "not inside the unit square"),
    ):
        with pytest.raises(PlanError, match=problem):
            parse_plan(bad)


# --------------------------------------------------------------------------- the method
@pytest.fixture(scope="module")
def clip() -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(build_open_clip(MICRO_CLIP), MICRO_CLIP, name="micro")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Benchmark:
    import os

    old = os.environ.get("CIRLIB_CACHE")
    os.environ["CIRLIB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        return load_world_benchmark("cirr", "val", n_queries=12)
    finally:
        if old is None:
            del os.environ["CIRLIB_CACHE"]
        else:
            os.environ["CIRLIB_CACHE"] = old


class _Captioner:
    signature = {"captioner": "constant"}

    def __init__(self) -> None:
        self.calls = 0

    def caption(self, images):
        self.calls += 1
        return [f"image {i}" for i in range(len(images))]


class _Planner:
    """Plans 'target of <text>' with one box; every third answer is not a valid plan."""

    signature = {"planner": "stub"}

    def plan_texts(self, captions, texts):
        return [
            "not a plan" if i % 3 == 2 else f"target of {t} | star [10 10 40 40] | plain"
            for i, t in enumerate(texts)
        ]


class _OracleGenerator:
    """Draws each query's labelled target (found by its plan's description): an upper bound."""

    def __init__(self, benchmark: Benchmark) -> None:
        self.target = {f"target of {q.texts[0]}": q.target for q in benchmark.queries}
        self.gallery = benchmark.galleries["all"]
        self.signature = {"oracle": benchmark.name}
        self.generated = 0

    def generate(self, plans, references, seeds):
        self.generated += len(plans)
        ids = [self.target.get(p.description, self.gallery.ids[0]) for p in plans]
        return self.gallery.pixels(ids)


def _ipcir(clip, bench, tmp_path, **options) -> IPCIR:
    cache = EmbeddingCache(tmp_path)
    chain = PlanningChain(_Captioner(), _Planner(), cache)
    return IPCIR(TextOnly(clip, cache=cache), chain, _OracleGenerator(bench), **options)


def test_lambda_one_is_the_base_and_generates_nothing(clip, bench, tmp_path) -> None:
    method = _ipcir(clip, bench, tmp_path, lam=1.0)
    qs, gallery = bench.queries, bench.galleries["all"]
    assert np.allclose(method.score(qs, gallery), TextOnly(clip).score(qs, gallery), atol=1e-6)
    assert method.generator.generated == 0


def test_the_oracle_proxy_alone_finds_the_target(clip, bench, tmp_path) -> None:
    """Raw proxy, weighted with lambda 0: S = cos(f_p, gallery), and f_p is the target's own feature
    for every query whose plan was valid (fails if the proxy never reached the score)."""
    method = _ipcir(clip, bench, tmp_path, lam=0.0, proxy_feature="raw", combine="weighted", n_proxies=2)
    result = evaluate(method, bench)
    valid = method.plan_outputs(bench.queries, bench.galleries["all"]).valid
    assert valid.tolist() == [i % 3 != 2 for i in range(len(bench.queries))]
    hits = np.asarray(result.per_query["recall@1"])[valid]
    assert hits.mean() == pytest.approx(1.0)


def test_scores_follow_the_formulas(clip, bench, tmp_path) -> None:
    method = _ipcir(clip, bench, tmp_path, lam=0.4, n_proxies=2)
    qs, gallery = bench.queries[:5], bench.galleries["all"]
    g = method.gallery_features(gallery)
    s_t = torch.from_numpy(TextOnly(clip).score(qs, gallery))
    outputs = method.plan_outputs(qs, gallery)
    proxies = method.proxies(qs, gallery)
    f_p = (
        F.normalize(clip.encode_images(proxies.reshape(-1, *proxies.shape[2:])), dim=-1)
        .view(5, 2, -1)
        .mean(1)
    )
    f_t = F.normalize(clip.encode_texts([p.description for p in outputs.plans]), dim=-1)
    f_o = F.normalize(clip.encode_texts(outputs.captions), dim=-1)
    f_q = method.reference_features(qs, gallery)
    f_rp = F.normalize(robust_proxy_feature(f_p, f_q, f_t - f_o), dim=-1)
    expected = 0.4 * s_t + 0.6 * s_t.clamp(min=0) * (f_rp @ g.T).clamp(min=0)
    assert np.allclose(method.score(qs, gallery), expected.numpy(), atol=1e-5)
    raw = method.with_options(proxy_feature="raw", combine="weighted", lam=0.2)
    assert np.allclose(
        raw.score(qs, gallery), (0.2 * s_t + 0.8 * F.normalize(f_p, dim=-1) @ g.T).numpy(), atol=1e-5
    )


def test_drawings_of_plans_are_cached(clip, bench, tmp_path) -> None:
    method = _ipcir(clip, bench, tmp_path, n_proxies=1)
    gallery = bench.galleries["all"]
    plans = method.plan_outputs(bench.queries[:3], gallery).plans
    references = list(gallery.pixels([q.reference for q in bench.queries[:3]]))
    first = method.draw(plans, references)
    made = method.generator.generated
    assert made == 3 and np.array_equal(method.draw(plans, references), first)
    assert method.generator.generated == made  # the second call reads the cache
    assert np.array_equal(first, method.generator.generate(plans, references, [0, 0, 0]))


def test_options_share_the_generated_proxies(clip, bench, tmp_path) -> None:
    method = _ipcir(clip, bench, tmp_path, n_proxies=3)
    qs, gallery = bench.queries, bench.galleries["all"]
    method.score(qs, gallery)
    made = method.generator.generated
    assert made == 3 * len(qs)
    for options in ({"lam": 0.0}, {"combine": "weighted"}, {"proxy_feature": "raw"}, {"n_proxies": 2}):
        method.with_options(**options).score(qs, gallery)
    assert method.generator.generated == made  # sweeps reuse the cached proxies
    with pytest.raises(TypeError, match="unknown IP-CIR option"):
        method.with_options(fusion="text")
    with pytest.raises(ValueError, match="proxy_feature"):
        method.with_options(proxy_feature="mean")
    with pytest.raises(NotImplementedError, match="exact search"):
        method.encode_queries(qs, gallery)


def test_captions_and_plans_are_cached_on_disk(clip, bench, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path)
    captioner = _Captioner()
    chain = PlanningChain(captioner, _Planner(), cache)
    text = PlannedText(clip, chain)
    qs, gallery = bench.queries, bench.galleries["all"]
    first = text.score(qs, gallery)
    again = PlannedText(clip, PlanningChain(captioner, _Planner(), cache)).score(qs, gallery)
    assert np.array_equal(first, again)
    assert captioner.calls == 1
    outputs = chain.outputs(text, qs, gallery)
    assert outputs.plans[2].description == "not a plan"  # an invalid answer: its first field as text
    assert outputs.validity == pytest.approx(8 / 12)
    # a cost measurement's cold cache reaches the chain too: captioning runs again
    from cirlib.evaluation import query_cost

    query_cost(text, qs, gallery, tmp_path / "cold")
    assert captioner.calls == 2 and text.chain.cache is text.cache


def test_paper_profile_lists_every_missing_folder_before_loading(tmp_path) -> None:
    from cirlib.generation.files import MissingGeneratorFilesError
    from cirlib.methods import build_method

    with pytest.raises(MissingGeneratorFilesError) as info:
        build_method(
            "ipcir",
            "paper",
            captioner=tmp_path / "blip2",
            llm=tmp_path / "qwen",
            layout_generator=tmp_path / "gligen",
        )
    message = str(info.value)
    for name in ("blip2", "qwen", "gligen"):
        assert name in message
    with pytest.raises(ValueError, match="base must be one of"):
        build_method("ipcir", "tiny", base="magiclens")


def test_base_options_reach_the_base_method() -> None:
    from cirlib.methods import build_method

    method = build_method("ipcir", "tiny", base="predicir", base_options={"box": "full"}, n_proxies=1)
    assert method.base.box == "full"
    assert build_method("ipcir", "tiny", base="predicir", n_proxies=1).base.box == "center"  # the factory's


def test_a_warm_rerun_reads_proxy_and_text_features_from_disk(clip, bench, tmp_path, monkeypatch) -> None:
    """A second IP-CIR on the same cache scores the same without loading a proxy or encoding a text;
    with_options keeps the class."""
    qs, gallery = bench.queries, bench.galleries["all"]
    expected = _ipcir(clip, bench, tmp_path, n_proxies=2).score(qs, gallery)

    class NoProxies(IPCIR):
        def proxies(self, queries, gallery):
            raise AssertionError("a warm rerun loaded proxy images")

    first = _ipcir(clip, bench, tmp_path, n_proxies=2)
    again = NoProxies(first.base, first.chain, first.generator, n_proxies=2)
    monkeypatch.setattr(type(clip), "encode_texts", lambda *a, **k: pytest.fail("a text was re-encoded"))
    assert np.array_equal(again.score(qs, gallery), expected)
    assert isinstance(again.with_options(lam=0.1), NoProxies)
    with pytest.raises(AssertionError, match="loaded proxy images"):
        again.with_options(n_proxies=3).score(qs, gallery)  # a third proxy is not on disk yet
