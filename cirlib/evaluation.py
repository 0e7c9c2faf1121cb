"""Evaluate a method on a benchmark with the official protocol of the benchmark's form.

Returns per-query values (for bootstrap CIs and paired tests) and percent summaries, keyed as
``cirlib score`` keys them. World benchmarks also get ``complete/...`` keys scored against *every*
valid target (the world knows them all), which shows how much single-target labels undercount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cirlib import metrics
from cirlib.data.types import Benchmark, Gallery, Query
from cirlib.methods.base import Method

TOP_K = 50


@dataclass
class Evaluation:
    """One method on one benchmark split: per-query values, summaries and top-50 rankings.

    On a split without ground truth (the real test splits) ``per_query`` is empty and only the
    rankings (for the server files) are filled."""

    benchmark: str
    form: str
    split: str
    method: str
    qids: list[str]
    per_query: dict[str, np.ndarray]
    rankings: dict[str, list[list[str]]] = field(repr=False)
    subset: list[list[str]] | None = field(default=None, repr=False)
    #: Per-query category (aligned with ``qids``): bootstrap strata of the "average/" metrics.
    categories: list[str] | None = field(default=None, repr=False)
    #: Summary values that are not means of per-query values (CIRCO's semantic mAP@10 per aspect).
    extra: dict[str, float] = field(default_factory=dict)

    def strata(self, metric: str) -> list[str] | None:
        """Strata for bootstrapping ``metric``: categories for FashionIQ averages, else None."""
        return self.categories if "average/" in metric else None

    @property
    def summary(self) -> dict[str, float]:
        return {**{k: metrics.percent(v) for k, v in self.per_query.items()}, **self.extra}

    @property
    def n_queries(self) -> int:
        return len(self.qids)


def _any_hit(rankings: Sequence[Sequence[str]], ground_truths: Sequence[Sequence[str]], k: int) -> np.ndarray:
    return np.array([bool(set(r[:k]) & set(g)) for r, g in zip(rankings, ground_truths, strict=True)])


#: Retrieval backends of :func:`rank_queries`.
BACKENDS = ("exact", "faiss")


def rank_queries(
    method: Method,
    queries: Sequence[Query],
    gallery: Gallery,
    *,
    exclude_reference: bool,
    subsets: bool,
    k: int = TOP_K,
    backend: str = "exact",
    chunk_size: int = 512,
) -> tuple[list[list[str]], list[list[str]] | None]:
    """Top-``k`` gallery ids per query (the reference removed when ``exclude_reference``, as CIRR
    does) and, with ``subsets``, each query's CIRR subset candidates in score order.

    ``exact`` scores queries in chunks of ``chunk_size`` with :meth:`Method.score`, so memory stays
    at ``chunk_size x G`` floats however large the gallery (CIRCO: 123k images). ``faiss`` searches
    a ``faiss.IndexFlatIP`` over the gallery embeddings; it needs a method whose scores are inner
    products of :meth:`Method.encode_queries` and :meth:`Method.gallery_features`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown retrieval backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    refs = [q.reference for q in queries]
    members = [q.subset or () for q in queries]
    if backend == "faiss":
        if type(method).score is not Method.score:
            raise ValueError(
                f"method {method.name!r} computes its own scores; the faiss backend needs an embedding "
                "method (use --index exact)"
            )
        from cirlib.retrieval import make_index

        with torch.inference_mode():
            q = method.encode_queries(queries, gallery).float()
            g = method.gallery_features(gallery).float()
        depth = min(k + (1 if exclude_reference else 0), len(gallery))
        _, top = make_index(g, "faiss").search(q, depth)
        ranked = []
        for row, ref in zip(top, refs, strict=True):
            ids = [gallery.ids[i] for i in row]
            ranked.append([i for i in ids if not (exclude_reference and i == ref)][:k])
        # Subsets exist only for CIRR, whose galleries are small (2.3k): full scores are cheap there.
        subset = metrics.subset_rankings((q @ g.T).numpy(), gallery.ids, members, refs) if subsets else None
        return ranked, subset
    ranked, subset = [], [] if subsets else None
    for start in range(0, len(queries), chunk_size):
        chunk = slice(start, start + chunk_size)
        scores = method.score(queries[chunk], gallery)
        ranked += metrics.rankings_from_scores(
            scores, gallery.ids, k, exclude=refs[chunk] if exclude_reference else None
        )
        if subset is not None:
            subset += metrics.subset_rankings(scores, gallery.ids, members[chunk], refs[chunk])
    return ranked, subset


def evaluate(
    method: Method,
    benchmark: Benchmark,
    queries: Sequence[Query] | None = None,
    *,
    backend: str = "exact",
    soft: bool = False,
) -> Evaluation:
    """Score ``method`` on ``benchmark`` (or on a subset of its queries) with its form's protocol.

    Queries without a target (real test splits) get rankings only; mixing both is an error.
    ``soft`` adds CIRR's CIRPLANT soft-label recalls (``soft/...``) where queries carry
    ``info["target_soft"]`` (real CIRR val)."""
    queries = list(benchmark.queries if queries is None else queries)
    with_target = [q.target is not None for q in queries]
    if any(with_target) and not all(with_target):
        raise ValueError("some queries have a target and some do not; evaluate val and test separately")
    scored = all(with_target) and bool(queries)
    per_query: dict[str, np.ndarray] = {}
    rankings: dict[str, list[list[str]]] = {}
    extra: dict[str, float] = {}
    subset = None
    has_complete = all(q.ground_truth for q in queries)
    if benchmark.form in ("cirr", "circo"):
        gallery = benchmark.galleries["all"]
        is_cirr = benchmark.form == "cirr"
        ranked, subset = rank_queries(
            method,
            queries,
            gallery,
            exclude_reference=is_cirr,
            subsets=is_cirr and all(q.subset for q in queries),
            backend=backend,
        )
        rankings["all"] = ranked
        refs = [q.reference for q in queries]
        targets = [q.target for q in queries]
        if scored and is_cirr:
            softs = [q.info.get("target_soft") for q in queries]
            if soft and any(s is None for s in softs):
                raise ValueError("soft=True needs CIRR queries with info['target_soft'] (real CIRR val)")
            per_query.update(
                metrics.cirr_per_query(
                    ranked,
                    targets,
                    subset_rankings=subset,
                    references=refs,
                    target_soft=softs if soft else None,
                )
            )
            if has_complete:
                for k in metrics.CIRR_KS:
                    per_query[f"complete/recall@{k}"] = _any_hit(ranked, [q.ground_truth for q in queries], k)
        elif scored:
            gts = [q.ground_truth or (q.target,) for q in queries]
            per_query.update(metrics.circo_per_query(ranked, gts, targets))
            aspects = [q.info.get("semantic_aspects") for q in queries]
            if all(aspects):
                for aspect, value in metrics.semantic_map(per_query["map@10"], aspects).items():
                    extra[f"semantic_map@10/{aspect}"] = value
    elif benchmark.form == "fashioniq":
        by_category: dict[str, list[Query]] = {}
        for q in queries:
            by_category.setdefault(q.category, []).append(q)
        ordered: list[Query] = []
        weights: list[np.ndarray] = []
        for category, qs in by_category.items():
            gallery = benchmark.galleries[category]
            ranked, _ = rank_queries(
                method, qs, gallery, exclude_reference=False, subsets=False, backend=backend
            )
            rankings[category] = ranked
            ordered.extend(qs)
            if not scored:
                continue
            for key, values in metrics.fashioniq_per_query(
                {category: ranked}, {category: [q.target for q in qs]}
            ).items():
                per_query[key] = values
            if has_complete:
                for k in metrics.FASHIONIQ_KS:
                    per_query[f"complete/{category}/recall@{k}"] = _any_hit(
                        ranked, [q.ground_truth for q in qs], k
                    )
            weights.append(np.full(len(qs), len(queries) / (len(by_category) * len(qs))))
        # The official average is the unweighted mean of the category means. Per-query values
        # reweighted by N / (C * n_c) have exactly that mean, so the bootstrap can resample them.
        if scored:
            w = np.concatenate(weights)
            for k in metrics.FASHIONIQ_KS:
                hits = np.concatenate([per_query[f"{c}/recall@{k}"] for c in by_category]).astype(float)
                per_query[f"average/recall@{k}"] = hits * w
                if has_complete:
                    hits = np.concatenate(
                        [per_query[f"complete/{c}/recall@{k}"] for c in by_category]
                    ).astype(float)
                    per_query[f"complete/average/recall@{k}"] = hits * w
        queries = ordered
    else:
        raise ValueError(f"unknown benchmark form {benchmark.form!r}")
    return Evaluation(
        benchmark.name,
        benchmark.form,
        benchmark.split,
        method.name,
        [q.qid for q in queries],
        per_query,
        rankings,
        subset,
        [q.category for q in queries],
        extra,
    )


#: The headline metric of each form (the issue's validity criterion uses R@1 and mAP@5).
HEADLINE = {"cirr": "recall@1", "circo": "map@5", "fashioniq": "average/recall@10"}


def evaluate_methods(methods: dict[str, Method], benchmark: Benchmark) -> dict[str, Evaluation]:
    """Evaluate several methods on the same queries (for paired comparisons)."""
    return {name: evaluate(method, benchmark) for name, method in methods.items()}


def result_rows(
    notebook: str,
    evaluations: dict[str, Evaluation],
    metric_names: Sequence[str],
    config_hash: str,
    seed: int = 0,
):
    """Project-schema rows (value and bootstrap 95% CI over queries) for each method and metric."""
    from cirlib.experiments import row_from_per_query

    rows = []
    for name, ev in evaluations.items():
        for metric in metric_names:
            if metric not in ev.per_query:
                continue
            rows.append(
                row_from_per_query(
                    notebook=notebook,
                    benchmark=ev.benchmark,
                    split=ev.split,
                    method=name,
                    metric=metric,
                    per_query={seed: ev.per_query[metric].astype(float)},
                    config_hash=config_hash,
                    strata=ev.strata(metric),
                )
            )
    return rows


def paired_differences(evaluations: dict[str, Evaluation], better: str, others: Sequence[str], metric: str):
    """Paired bootstrap of ``better`` minus each of ``others`` on the same queries (percent points)."""
    import pandas as pd

    from cirlib.experiments import paired_bootstrap

    rows = []
    a = evaluations[better]
    for other in others:
        b = evaluations[other]
        if a.qids != b.qids:
            raise ValueError(f"{better} and {other} were evaluated on different queries")
        d = paired_bootstrap(
            a.per_query[metric].astype(float) * 100,
            b.per_query[metric].astype(float) * 100,
            strata=a.strata(metric),
        )
        rows.append(
            {
                "comparison": f"{better} - {other}",
                "metric": metric,
                "diff": d.diff,
                "ci_low": d.low,
                "ci_high": d.high,
                "p": d.p_value,
                "excludes_zero": d.low > 0 or d.high < 0,
            }
        )
    return pd.DataFrame(rows).set_index("comparison")


def query_cost(method: Method, queries: Sequence[Query], gallery: Gallery, scratch: Path) -> dict[str, float]:
    """What one query costs a method: seconds per query of :meth:`Method.encode_queries` with every
    query-side cache cold (a fresh embedding cache under ``scratch``; the gallery is encoded first,
    untimed, since an index is built once) and, for generative methods, images generated per query.
    Pass a freshly built method: memoised query parts would hide the cost."""
    import time

    from cirlib.retrieval import EmbeddingCache

    cache = EmbeddingCache(scratch)
    if hasattr(method, "use_cache"):  # methods built from several cached parts (IP-CIR)
        method.use_cache(cache)
    else:
        method.cache = cache
    pseudo_targets = getattr(method, "pseudo_target_cache", None)
    if pseudo_targets is not None:
        pseudo_targets.cache, pseudo_targets.generated = cache, 0
    method.gallery_features(gallery)
    start = time.perf_counter()
    with torch.inference_mode():
        if getattr(method, "single_embedding", True):
            method.encode_queries(queries, gallery)
        else:  # a score that is not one embedding per query: time the scoring
            method.score(queries, gallery)
    seconds = time.perf_counter() - start
    generated = pseudo_targets.generated if pseudo_targets is not None else 0
    return {
        "seconds per query": seconds / len(queries),
        "generated images per query": generated / len(queries),
    }
