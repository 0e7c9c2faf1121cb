"""Evaluate a method on a benchmark with the official protocol of the benchmark's form.

Returns per-query values (for bootstrap CIs and paired tests) and percent summaries, keyed as
``cirlib score`` keys them. World benchmarks also get ``complete/...`` keys scored against *every*
valid target (the world knows them all), which shows how much single-target labels undercount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cirlib import metrics
from cirlib.data.types import Benchmark, Query
from cirlib.methods.base import Method

TOP_K = 50


@dataclass
class Evaluation:
    """One method on one benchmark split: per-query values, summaries and top-50 rankings."""

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

    def strata(self, metric: str) -> list[str] | None:
        """Strata for bootstrapping ``metric``: categories for FashionIQ averages, else None."""
        return self.categories if "average/" in metric else None

    @property
    def summary(self) -> dict[str, float]:
        return {k: metrics.percent(v) for k, v in self.per_query.items()}

    @property
    def n_queries(self) -> int:
        return len(self.qids)


def _any_hit(rankings: Sequence[Sequence[str]], ground_truths: Sequence[Sequence[str]], k: int) -> np.ndarray:
    return np.array([bool(set(r[:k]) & set(g)) for r, g in zip(rankings, ground_truths, strict=True)])


def evaluate(method: Method, benchmark: Benchmark, queries: Sequence[Query] | None = None) -> Evaluation:
    """Score ``method`` on ``benchmark`` (or on a subset of its queries) with its form's protocol."""
    queries = list(benchmark.queries if queries is None else queries)
    per_query: dict[str, np.ndarray] = {}
    rankings: dict[str, list[list[str]]] = {}
    subset = None
    has_complete = all(q.ground_truth for q in queries)
    if benchmark.form in ("cirr", "circo"):
        gallery = benchmark.galleries["all"]
        scores = method.score(queries, gallery)
        refs = [q.reference for q in queries]
        targets = [q.target for q in queries]
        if benchmark.form == "cirr":
            ranked = metrics.rankings_from_scores(scores, gallery.ids, TOP_K, exclude=refs)
            if all(q.subset for q in queries):
                subset = metrics.subset_rankings(scores, gallery.ids, [q.subset for q in queries], refs)
            per_query.update(metrics.cirr_per_query(ranked, targets, subset_rankings=subset, references=refs))
            if has_complete:
                for k in metrics.CIRR_KS:
                    per_query[f"complete/recall@{k}"] = _any_hit(ranked, [q.ground_truth for q in queries], k)
        else:
            ranked = metrics.rankings_from_scores(scores, gallery.ids, TOP_K)
            gts = [q.ground_truth or (q.target,) for q in queries]
            per_query.update(metrics.circo_per_query(ranked, gts, targets))
        rankings["all"] = ranked
    elif benchmark.form == "fashioniq":
        by_category: dict[str, list[Query]] = {}
        for q in queries:
            by_category.setdefault(q.category, []).append(q)
        ordered: list[Query] = []
        weights: list[np.ndarray] = []
        for category, qs in by_category.items():
            gallery = benchmark.galleries[category]
            scores = method.score(qs, gallery)
            ranked = metrics.rankings_from_scores(scores, gallery.ids, TOP_K)
            rankings[category] = ranked
            for key, values in metrics.fashioniq_per_query(
                {category: ranked}, {category: [q.target for q in qs]}
            ).items():
                per_query[key] = values
            if has_complete:
                for k in metrics.FASHIONIQ_KS:
                    per_query[f"complete/{category}/recall@{k}"] = _any_hit(
                        ranked, [q.ground_truth for q in qs], k
                    )
            ordered.extend(qs)
            weights.append(np.full(len(qs), len(queries) / (len(by_category) * len(qs))))
        # The official average is the unweighted mean of the category means. Per-query values
        # reweighted by N / (C * n_c) have exactly that mean, so the bootstrap can resample them.
        w = np.concatenate(weights)
        for k in metrics.FASHIONIQ_KS:
            hits = np.concatenate([per_query[f"{c}/recall@{k}"] for c in by_category]).astype(float)
            per_query[f"average/recall@{k}"] = hits * w
            if has_complete:
                hits = np.concatenate([per_query[f"complete/{c}/recall@{k}"] for c in by_category]).astype(
                    float
                )
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
