"""Diagnostics only the world can give: complete ground truth and scene graphs after the fact.

Methods never see scenes; these functions look at what a method retrieved and ask *why* it was
right or wrong: did the top image apply the text? did it keep the reference? did the single
labelled target undercount valid answers? how does accuracy vary with the kind of edit?
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cirlib.data.types import Benchmark, Query
from cirlib.evaluation import Evaluation
from cirlib.experiments import bootstrap_ci
from cirlib.world.scene import Scene

OUTCOMES = ("correct", "kept reference, missed text", "applied text, lost reference", "neither")


def _scene_of(benchmark: Benchmark, category: str) -> dict[str, Scene]:
    gallery = benchmark.galleries[category]
    if gallery.scenes is None:
        raise ValueError(f"benchmark {benchmark.name} has no scenes: diagnostics need a world benchmark")
    return dict(zip(gallery.ids, gallery.scenes, strict=True))


def top1_outcomes(benchmark: Benchmark, evaluation: Evaluation) -> Counter:
    """Classify each query's top-1 image: correct, or which half of the query it failed.

    "Applied text" means the top image holds every object the edit created or changed (as in the
    labelled target) and the edited background; "kept reference" means it holds every reference
    object the edit left alone, on the reference background unless the edit changed it."""
    counts: Counter = Counter()
    query_of = {q.qid: q for q in benchmark.queries}
    for category, ranked in evaluation.rankings.items():
        scenes = _scene_of(benchmark, category)
        qids = [qid for qid in evaluation.qids if query_of[qid].category == category]
        for qid, ranking in zip(qids, ranked, strict=True):
            q = query_of[qid]
            top = ranking[0]
            if top in q.ground_truth:
                counts["correct"] += 1
                continue
            reference, target, got = scenes[q.reference], scenes[q.target], scenes[top]
            kept = set(reference.objects) & set(target.objects)
            changed = set(target.objects) - set(reference.objects)
            bg_edited = "background" in q.info.get("kinds", [])
            applied = changed <= set(got.objects) and (not bg_edited or got.background == target.background)
            preserved = kept <= set(got.objects) and (bg_edited or got.background == reference.background)
            if preserved and not applied:
                counts["kept reference, missed text"] += 1
            elif applied and not preserved:
                counts["applied text, lost reference"] += 1
            else:
                counts["neither"] += 1
    return counts


def outcome_table(benchmark: Benchmark, evaluations: dict[str, Evaluation]) -> pd.DataFrame:
    """Percent of queries per top-1 outcome, one row per method."""
    rows = {}
    for name, ev in evaluations.items():
        counts = top1_outcomes(benchmark, ev)
        total = sum(counts.values())
        rows[name] = {o: 100 * counts.get(o, 0) / total for o in OUTCOMES}
    return pd.DataFrame(rows).T.round(1)


def per_edit_kind(
    queries: Sequence[Query], evaluation: Evaluation, metric: str, min_queries: int = 20
) -> pd.DataFrame:
    """Mean of a per-query metric (percent, bootstrap 95% CI) grouped by edit kind; compositions
    are grouped as 'a+b'. Kinds with fewer than ``min_queries`` queries are dropped."""
    by_qid = {q.qid: q for q in queries}
    values = evaluation.per_query[metric]
    if len(values) != len(evaluation.qids):
        raise ValueError(f"metric {metric!r} is not per query over all queries")
    groups: dict[str, list[float]] = defaultdict(list)
    for qid, v in zip(evaluation.qids, values, strict=True):
        groups["+".join(sorted(by_qid[qid].info.get("kinds", ["?"])))].append(float(v))
    rows = []
    for kind, vs in sorted(groups.items()):
        if len(vs) < min_queries:
            continue
        ci = bootstrap_ci(np.asarray(vs) * 100)
        rows.append({"edit": kind, "n": len(vs), "value": ci.mean, "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(rows).set_index("edit")


def undercount(evaluation: Evaluation, ks: Sequence[int] = (1, 5, 10)) -> pd.DataFrame:
    """Labelled-target recall vs recall against every valid target (the world's complete GT)."""
    rows = []
    for k in ks:
        for key in evaluation.per_query:
            if key.startswith("complete/") and key.endswith(f"recall@{k}"):
                labelled = key.removeprefix("complete/")
                if labelled in evaluation.per_query:
                    a = float(np.mean(evaluation.per_query[labelled]) * 100)
                    b = float(np.mean(evaluation.per_query[key]) * 100)
                    rows.append(
                        {"metric": labelled, "labelled target": a, "any valid target": b, "undercount": b - a}
                    )
    return pd.DataFrame(rows).set_index("metric").round(2)
