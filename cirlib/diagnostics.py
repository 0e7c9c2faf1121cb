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


def classify_miss(reference: Scene, target: Scene, got: Scene, background_edited: bool) -> str:
    """Which half of a query a wrong top-1 image ``got`` failed (one of ``OUTCOMES[1:]``).

    "Applied text" means ``got`` holds every object the edit created or changed (as in the labelled
    ``target``), none of the objects it removed or changed away, and the edited background; "kept
    reference" means it holds every reference object the edit left alone, on the reference
    background unless the edit changed it. The reference image itself, retrieved for a removal,
    kept the reference and missed the text."""
    before, after, top = set(reference.objects), set(target.objects), set(got.objects)
    created, removed, kept = after - before, before - after, before & after
    applied = (
        created <= top
        and not removed & top
        and (not background_edited or got.background == target.background)
    )
    preserved = kept <= top and (background_edited or got.background == reference.background)
    if preserved and not applied:
        return "kept reference, missed text"
    if applied and not preserved:
        return "applied text, lost reference"
    return "neither"


def top1_outcomes(benchmark: Benchmark, evaluation: Evaluation) -> Counter:
    """Classify each query's top-1 image: correct (a ground-truth image), or which half of the query
    it failed (:func:`classify_miss`)."""
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
            background_edited = "background" in q.info.get("kinds", [])
            counts[classify_miss(scenes[q.reference], scenes[q.target], scenes[top], background_edited)] += 1
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
    columns = ["edit", "n", "value", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns).set_index("edit")  # empty when no kind is large enough


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


# --------------------------------------------------------------------------- generated views (CIG)
class OracleGenerator:
    """A stand-in generator that returns each query's *labelled target* as its pseudo-target: the
    upper bound of what a perfect generator could give a generative method (world diagnostics only;
    no method sees it). ``queries`` must have distinct (reference, text) pairs."""

    def __init__(self, benchmark: Benchmark, queries: Sequence[Query] | None = None) -> None:
        qs = list(benchmark.queries if queries is None else queries)
        self._galleries = benchmark.galleries
        self._target = {}
        for q in qs:
            text = " and ".join(t.strip() for t in q.texts if t.strip())
            self._target[text, q.reference] = (q.category, q.target)
        self._by_digest: dict[str, str] = {}
        self.signature = {"oracle": benchmark.name, "n": len(qs)}
        self._queries = qs

    def generate(self, references, texts, seeds) -> np.ndarray:
        from cirlib.retrieval import content_digest

        if not self._by_digest:  # reference pixels -> id, once
            for q in self._queries:
                g = self._galleries[q.category]
                self._by_digest[content_digest(g.pixels([q.reference])[0])] = q.reference
        out = []
        for ref, text in zip(references, texts, strict=True):
            category, target = self._target[text, self._by_digest[content_digest(np.asarray(ref))]]
            out.append(self._galleries[category].pixels([target])[0])
        return np.stack(out)


def pseudo_target_similarity(
    method, benchmark: Benchmark, queries: Sequence[Query] | None = None
) -> pd.DataFrame:
    """Per query, CLIP cosine similarities between a generative method's first pseudo-target
    (``method.pseudo_targets``), the labelled target and the reference: how close the generated view
    is to what should be retrieved and to where it started (``reference vs target`` gives the
    scale of the real pair)."""
    import torch.nn.functional as F

    qs = list(benchmark.queries if queries is None else queries)
    rows = []
    for category in dict.fromkeys(q.category for q in qs):
        group = [q for q in qs if q.category == category]
        g = benchmark.galleries[category]
        encode = lambda images: F.normalize(method.clip.encode_images(images), dim=-1)  # noqa: E731
        gen = encode(method.pseudo_targets(group, g)[:, 0])
        tgt = encode(g.pixels([q.target for q in group]))
        ref = encode(g.pixels([q.reference for q in group]))
        for j, q in enumerate(group):
            rows.append(
                {
                    "qid": q.qid,
                    "pseudo-target vs target": float(gen[j] @ tgt[j]),
                    "pseudo-target vs reference": float(gen[j] @ ref[j]),
                    "reference vs target": float(ref[j] @ tgt[j]),
                }
            )
    return pd.DataFrame(rows).set_index("qid")


def pseudo_token_similarity(
    method, benchmark: Benchmark, queries: Sequence[Query] | None = None, prompt: str = "a photo of $"
) -> pd.DataFrame:
    """Per query, the CLIP cosine between the pseudo-word alone (``prompt`` with $ = the method's
    token for the query, ``method.pseudo_tokens``) and the labelled target, and the reference: how
    much of the *target* a pseudo-word carries (PrediCIR's claim of a better pseudo-token)."""
    qs = list(benchmark.queries if queries is None else queries)
    rows = []
    for category in dict.fromkeys(q.category for q in qs):
        group = [q for q in qs if q.category == category]
        g = benchmark.galleries[category]
        tokens = method.pseudo_tokens(group, g)
        words = method.clip.encode_texts_with_pseudo([prompt] * len(group), tokens)
        images = method.gallery_features(g)
        tgt = images[[g.index(q.target) for q in group]]
        ref = images[[g.index(q.reference) for q in group]]
        for j, q in enumerate(group):
            rows.append(
                {
                    "qid": q.qid,
                    "pseudo-word vs target": float(words[j] @ tgt[j]),
                    "pseudo-word vs reference": float(words[j] @ ref[j]),
                }
            )
    return pd.DataFrame(rows).set_index("qid")


def edit_kind_gain(
    queries: Sequence[Query],
    better: Evaluation,
    worse: Evaluation,
    metric: str,
    kinds: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Does ``better`` gain more over ``worse`` on edits of ``kinds`` than on the other edits?

    Per query, the difference of the two methods' metric (points); the mean over queries whose edit
    includes one of ``kinds`` and over the rest, and a bootstrap CI (groups resampled independently)
    of the gap between those two gains."""
    if better.qids != worse.qids:
        raise ValueError("the two evaluations cover different queries")
    by_qid = {q.qid: q for q in queries}
    diff = (better.per_query[metric].astype(float) - worse.per_query[metric].astype(float)) * 100
    inside = np.array([bool(set(by_qid[qid].info.get("kinds", ())) & set(kinds)) for qid in better.qids])
    if inside.all() or not inside.any():
        raise ValueError(f"need queries both with and without edits of kinds {list(kinds)}")
    a, b = diff[inside], diff[~inside]
    rng = np.random.default_rng(seed)
    gaps = np.array([rng.choice(a, a.size).mean() - rng.choice(b, b.size).mean() for _ in range(n_boot)])
    low, high = np.percentile(gaps, [2.5, 97.5])
    return {
        "n with kinds": int(a.size),
        "gain with kinds": float(a.mean()),
        "gain elsewhere": float(b.mean()),
        "gap": float(a.mean() - b.mean()),
        "gap ci_low": float(low),
        "gap ci_high": float(high),
    }
