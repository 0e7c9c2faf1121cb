"""Retrieval metrics of CIRR, CIRCO and FashionIQ with the semantics of the official code.

Why this module exists: the three benchmarks differ in small details that change published
numbers (is the reference removed from the gallery? hard or soft labels? which AP denominator?).
Every detail below follows ``shared/cir-annotations/PROTOCOLS.md`` (section numbers quoted):

* **CIRR Recall@K** (§2.1): the query's reference is removed from the ranking *before* taking the
  top K (:func:`rankings_from_scores` with ``exclude``). Hit = ``target_hard`` in top K (SEARLE /
  CLIP4Cir). The soft variant (:func:`cirr_soft_hits`, the CIRR authors' CIRPLANT code) scores
  ``max(0, max soft label in top K)``.
* **CIRR Recall_subset@K** (§2.2): candidates are ``img_set.members`` minus the reference (exactly
  5); the full ranking is filtered to them keeping its order (:func:`subset_rankings`).
* **CIRCO mAP@K** (§2.3): AP@K = sum_i P@i * rel_i / min(K, |G|) over *all* listed ground truths;
  the reference is **not** removed. CIRCO Recall@K counts only ``target_img_id`` (= gt[0]).
  Semantic mAP@10 = mean AP@10 over the queries carrying each semantic aspect.
* **FashionIQ Recall@K** (§2.4): per category, reference kept, gallery = the whole split file;
  "average" is the unweighted mean over the categories.

Per-query values (bool / float arrays) are exposed so that experiments can bootstrap them; the
``*_metrics`` summaries return percentages as unrounded Python floats.

**Tie-breaking** (the official code uses unstable ``argsort`` / ``topk``, so its order among equal
scores is unspecified, §3): here rankings are always sorted by decreasing score and, among equal
scores, by *increasing gallery index* (a stable sort). This makes every result reproducible.

All functions are pure NumPy. Ids may be ``str`` or ``int`` but must be used consistently
(``"5" != 5``); :mod:`cirlib.submission` normalises file contents before calling in here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TypeAlias

import numpy as np

Id: TypeAlias = str | int

CIRR_KS: tuple[int, ...] = (1, 5, 10, 50)
CIRR_SUBSET_KS: tuple[int, ...] = (1, 2, 3)
CIRCO_KS: tuple[int, ...] = (5, 10, 25, 50)
FASHIONIQ_KS: tuple[int, ...] = (10, 50)
#: Number of candidates of a CIRR subset query: 6 ``img_set.members`` minus the reference.
CIRR_SUBSET_SIZE = 5

__all__ = [
    "CIRCO_KS",
    "CIRR_KS",
    "CIRR_SUBSET_KS",
    "CIRR_SUBSET_SIZE",
    "FASHIONIQ_KS",
    "Id",
    "average_precision_at_k",
    "circo_metrics",
    "circo_per_query",
    "cirr_metrics",
    "cirr_per_query",
    "cirr_soft_hits",
    "fashioniq_metrics",
    "fashioniq_per_query",
    "filter_to_subset",
    "percent",
    "rankings_from_scores",
    "recall_hits",
    "semantic_map",
    "stable_topk_indices",
    "subset_rankings",
]


# --------------------------------------------------------------------------------------------
# rankings
# --------------------------------------------------------------------------------------------


def _check_scores(scores: np.ndarray, n_gallery: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D [queries, gallery] array, got shape {scores.shape}")
    if scores.shape[1] != n_gallery:
        raise ValueError(f"scores has {scores.shape[1]} gallery columns but gallery_ids has {n_gallery} ids")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise ValueError(f"scores must be a real numeric array, got dtype {scores.dtype}")
    if np.issubdtype(scores.dtype, np.floating) and np.isnan(scores).any():
        raise ValueError("scores contain NaN; a ranking over NaN scores is undefined")
    return scores


def _index_of(gallery_ids: Sequence[Id]) -> dict[Id, int]:
    index: dict[Id, int] = {}
    for i, gid in enumerate(gallery_ids):
        if gid in index:
            raise ValueError(f"gallery_ids contains {gid!r} twice (positions {index[gid]} and {i})")
        index[gid] = i
    return index


def stable_topk_indices(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of ``row``, by decreasing value and, among equal
    values, increasing index (deterministic tie-breaking; see the module docstring).

    Uses a partition to find the k-th value, then stably sorts only the entries ``>=`` it, so the
    result equals ``np.argsort(-row, kind="stable")[:k]`` at a fraction of the cost."""
    n = row.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k == n:
        return np.argsort(-row, kind="stable").astype(np.int64)
    kth = np.partition(row, n - k)[n - k]
    candidates = np.flatnonzero(row >= kth)
    order = np.argsort(-row[candidates], kind="stable")
    return candidates[order][:k].astype(np.int64)


def rankings_from_scores(
    scores: np.ndarray,
    gallery_ids: Sequence[Id],
    k: int,
    exclude: Sequence[Id | None] | None = None,
) -> list[list[Id]]:
    """Top-``k`` gallery ids per query from a ``[Q, G]`` similarity matrix (higher = better).

    ``exclude[q]`` (CIRR: the query's reference) is *removed* from query q's ranking before the
    top k are taken, exactly like SEARLE's reference mask (PROTOCOLS §2.1); the list then still
    has ``k`` entries when the gallery allows. ``None`` entries exclude nothing. An ``exclude`` id
    that is not in the gallery is an error (it usually means str/int or split mix-ups).
    Ties: lower gallery index first. If ``k`` exceeds the gallery, the whole gallery is returned.
    """
    ids = list(gallery_ids)
    scores = _check_scores(scores, len(ids))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    index = _index_of(ids)
    if exclude is not None and len(exclude) != scores.shape[0]:
        raise ValueError(f"exclude has {len(exclude)} entries but scores has {scores.shape[0]} queries")
    out: list[list[Id]] = []
    for q in range(scores.shape[0]):
        drop = None if exclude is None else exclude[q]
        if drop is None:
            top = stable_topk_indices(scores[q], k)
        else:
            if drop not in index:
                raise ValueError(f"exclude[{q}] = {drop!r} is not in gallery_ids")
            top = stable_topk_indices(scores[q], k + 1)
            top = top[top != index[drop]][:k]
        out.append([ids[i] for i in top])
    return out


def subset_rankings(
    scores: np.ndarray,
    gallery_ids: Sequence[Id],
    members: Sequence[Sequence[Id]],
    references: Sequence[Id],
) -> list[list[Id]]:
    """CIRR Recall_subset rankings: for each query, ``members[q]`` minus ``references[q]`` ordered
    by decreasing score (ties: lower gallery index first).

    This equals filtering the full reference-removed ranking to the candidates while keeping its
    order (PROTOCOLS §2.2). Every member must be in the gallery."""
    ids = list(gallery_ids)
    scores = _check_scores(scores, len(ids))
    if len(members) != scores.shape[0] or len(references) != scores.shape[0]:
        raise ValueError(
            f"members ({len(members)}) and references ({len(references)}) must have one entry per "
            f"query ({scores.shape[0]})"
        )
    index = _index_of(ids)
    out: list[list[Id]] = []
    for q in range(scores.shape[0]):
        cand = [m for m in dict.fromkeys(members[q]) if m != references[q]]
        missing = [m for m in cand if m not in index]
        if missing:
            raise ValueError(f"query {q}: subset members {missing!r} are not in gallery_ids")
        cand_idx = np.array(sorted(index[m] for m in cand), dtype=np.int64)
        order = np.argsort(-scores[q, cand_idx], kind="stable") if len(cand_idx) else cand_idx
        out.append([ids[i] for i in cand_idx[order]])
    return out


def filter_to_subset(
    rankings: Sequence[Sequence[Id]],
    members: Sequence[Sequence[Id]],
    references: Sequence[Id],
    *,
    require_all: bool = True,
) -> list[list[Id]]:
    """Keep, in order, the entries of each full ranking that are subset candidates (``members``
    minus the reference), as SEARLE does (PROTOCOLS §2.2).

    With ``require_all`` (default) every candidate must appear in the ranking, because a truncated
    ranking (e.g. a top-50 submission) cannot be turned into a subset ranking faithfully."""
    if not len(rankings) == len(members) == len(references):
        raise ValueError(
            f"rankings ({len(rankings)}), members ({len(members)}) and references ({len(references)}) "
            "must have the same length"
        )
    out: list[list[Id]] = []
    for q, (ranking, mem, ref) in enumerate(zip(rankings, members, references, strict=True)):
        cand = {m for m in mem if m != ref}
        kept = [r for r in ranking if r in cand]
        if require_all and len(set(kept)) != len(cand):
            raise ValueError(
                f"query {q}: ranking contains only {len(set(kept))} of the {len(cand)} subset candidates"
            )
        out.append(kept)
    return out


# --------------------------------------------------------------------------------------------
# per-query values
# --------------------------------------------------------------------------------------------


def _top(ranking: Sequence[Id], k: int, q: int) -> list[Id]:
    top = list(ranking[:k])
    if len(set(top)) != len(top):
        seen: set[Id] = set()
        for x in top:
            if x in seen:
                raise ValueError(f"query {q}: ranking lists {x!r} more than once in its top {k}")
            seen.add(x)
    return top


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def recall_hits(rankings: Sequence[Sequence[Id]], targets: Sequence[Id], k: int) -> np.ndarray:
    """Per-query hit ``1[target in top k]`` as a bool array (hard-label Recall@K).

    Rankings shorter than ``k`` are used as they are (a missing target is a miss)."""
    _check_k(k)
    if len(rankings) != len(targets):
        raise ValueError(f"{len(rankings)} rankings but {len(targets)} targets")
    return np.array([targets[q] in _top(r, k, q) for q, r in enumerate(rankings)], dtype=bool)


def cirr_soft_hits(
    rankings: Sequence[Sequence[Id]], target_soft: Sequence[Mapping[Id, float]], k: int
) -> np.ndarray:
    """Per-query soft hit ``max(0, max{target_soft[x] : x in top k})`` (CIRPLANT, PROTOCOLS §2.1).

    Partial credit for 0.5 / 0.2 labels; -1 labels never push a query below 0; images without a
    soft label count as 0."""
    _check_k(k)
    if len(rankings) != len(target_soft):
        raise ValueError(f"{len(rankings)} rankings but {len(target_soft)} soft-label dicts")
    out = np.zeros(len(rankings), dtype=np.float64)
    for q, r in enumerate(rankings):
        labels = target_soft[q]
        out[q] = max([0.0] + [float(labels[x]) for x in _top(r, k, q) if x in labels])
    return out


def average_precision_at_k(
    rankings: Sequence[Sequence[Id]], ground_truths: Sequence[Collection[Id]], k: int
) -> np.ndarray:
    """Per-query CIRCO AP@K = sum_{i<=K} P@i * rel_i / min(K, |G|) (PROTOCOLS §2.3).

    |G| counts every listed ground truth, even ones never retrieved. A ranking shorter than K
    uses what is there; the denominator stays min(K, |G|). Duplicate predictions are an error
    (the CIRCO server rejects them), as is an empty ground-truth set."""
    _check_k(k)
    if len(rankings) != len(ground_truths):
        raise ValueError(f"{len(rankings)} rankings but {len(ground_truths)} ground-truth sets")
    out = np.zeros(len(rankings), dtype=np.float64)
    for q, r in enumerate(rankings):
        gt = set(ground_truths[q])
        if not gt:
            raise ValueError(f"query {q}: empty ground-truth set; AP is undefined")
        rel = np.array([x in gt for x in _top(r, k, q)], dtype=np.float64)
        if rel.size == 0:
            continue
        precision = np.cumsum(rel) / np.arange(1, rel.size + 1)
        out[q] = float((precision * rel).sum()) / min(k, len(gt))
    return out


def percent(values: np.ndarray | Sequence[float]) -> float:
    """Mean of per-query values times 100, as an unrounded Python float."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("cannot average an empty set of per-query values")
    return 100.0 * float(arr.mean())


def semantic_map(ap: np.ndarray, semantic_aspects: Sequence[Sequence[str]]) -> dict[str, float]:
    """Per-aspect mean of per-query AP (in percent), a query counting towards every aspect it
    carries (CIRCO server's semantic mAP@10, PROTOCOLS §2.3). Aspects are sorted by name."""
    ap = np.asarray(ap, dtype=np.float64)
    if len(ap) != len(semantic_aspects):
        raise ValueError(f"{len(ap)} AP values but {len(semantic_aspects)} aspect lists")
    groups: dict[str, list[float]] = {}
    for value, aspects in zip(ap, semantic_aspects, strict=True):
        for aspect in set(aspects):
            groups.setdefault(aspect, []).append(float(value))
    return {aspect: percent(groups[aspect]) for aspect in sorted(groups)}


def cirr_per_query(
    rankings: Sequence[Sequence[Id]],
    targets: Sequence[Id],
    *,
    subset_rankings: Sequence[Sequence[Id]] | None = None,
    target_soft: Sequence[Mapping[Id, float]] | None = None,
    references: Sequence[Id] | None = None,
    ks: Sequence[int] = CIRR_KS,
    subset_ks: Sequence[int] = CIRR_SUBSET_KS,
) -> dict[str, np.ndarray]:
    """Per-query CIRR values keyed like ``cirlib score``: ``recall@K``, ``recall_subset@K`` (when
    ``subset_rankings`` is given) and ``soft/...`` variants (when ``target_soft`` is given).

    ``rankings`` must already have the reference removed. Pass ``references`` to have that checked
    (a ranking containing its own reference raises)."""
    if references is not None:
        if len(references) != len(rankings):
            raise ValueError(f"{len(rankings)} rankings but {len(references)} references")
        depth = max(ks)
        for q, (r, ref) in enumerate(zip(rankings, references, strict=True)):
            if ref in list(r[:depth]):
                raise ValueError(
                    f"query {q}: ranking contains its reference {ref!r}; CIRR removes the reference "
                    "from the gallery (use rankings_from_scores(..., exclude=references))"
                )
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_hits(rankings, targets, k)
    if subset_rankings is not None:
        for k in subset_ks:
            out[f"recall_subset@{k}"] = recall_hits(subset_rankings, targets, k)
    if target_soft is not None:
        for k in ks:
            out[f"soft/recall@{k}"] = cirr_soft_hits(rankings, target_soft, k)
        if subset_rankings is not None:
            for k in subset_ks:
                out[f"soft/recall_subset@{k}"] = cirr_soft_hits(subset_rankings, target_soft, k)
    return out


def cirr_metrics(
    rankings: Sequence[Sequence[Id]],
    targets: Sequence[Id],
    *,
    subset_rankings: Sequence[Sequence[Id]] | None = None,
    target_soft: Sequence[Mapping[Id, float]] | None = None,
    references: Sequence[Id] | None = None,
    ks: Sequence[int] = CIRR_KS,
    subset_ks: Sequence[int] = CIRR_SUBSET_KS,
) -> dict[str, float]:
    """CIRR summary in percent (mean over all queries, no de-duplication); see
    :func:`cirr_per_query` for the keys and arguments."""
    per_query = cirr_per_query(
        rankings,
        targets,
        subset_rankings=subset_rankings,
        target_soft=target_soft,
        references=references,
        ks=ks,
        subset_ks=subset_ks,
    )
    return {key: percent(values) for key, values in per_query.items()}


def circo_per_query(
    rankings: Sequence[Sequence[Id]],
    ground_truths: Sequence[Collection[Id]],
    targets: Sequence[Id],
    *,
    ks: Sequence[int] = CIRCO_KS,
) -> dict[str, np.ndarray]:
    """Per-query CIRCO values: ``map@K`` (AP@K, float) and ``recall@K`` (bool, ``targets`` only,
    i.e. ``target_img_id`` = ``gt_img_ids[0]``). The reference is *not* removed."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"map@{k}"] = average_precision_at_k(rankings, ground_truths, k)
    for k in ks:
        out[f"recall@{k}"] = recall_hits(rankings, targets, k)
    return out


def circo_metrics(
    rankings: Sequence[Sequence[Id]],
    ground_truths: Sequence[Collection[Id]],
    targets: Sequence[Id],
    *,
    semantic_aspects: Sequence[Sequence[str]] | None = None,
    ks: Sequence[int] = CIRCO_KS,
) -> dict[str, float]:
    """CIRCO summary in percent: ``map@K``, ``recall@K`` and, when ``semantic_aspects`` is given,
    ``semantic_map@10/<aspect>`` (mean AP@10 over the queries tagged with that aspect)."""
    per_query = circo_per_query(rankings, ground_truths, targets, ks=ks)
    out = {key: percent(values) for key, values in per_query.items()}
    if semantic_aspects is not None:
        ap10 = per_query["map@10"] if "map@10" in per_query else None
        if ap10 is None:
            ap10 = average_precision_at_k(rankings, ground_truths, 10)
        for aspect, value in semantic_map(ap10, semantic_aspects).items():
            out[f"semantic_map@10/{aspect}"] = value
    return out


def fashioniq_per_query(
    rankings: Mapping[str, Sequence[Sequence[Id]]],
    targets: Mapping[str, Sequence[Id]],
    *,
    ks: Sequence[int] = FASHIONIQ_KS,
) -> dict[str, np.ndarray]:
    """Per-query FashionIQ hits keyed ``<category>/recall@K``; each category is scored on its own
    gallery with the reference kept (PROTOCOLS §2.4)."""
    if not rankings:
        raise ValueError("no FashionIQ category given")
    if set(rankings) != set(targets):
        raise ValueError(f"categories differ: rankings {sorted(rankings)} vs targets {sorted(targets)}")
    out: dict[str, np.ndarray] = {}
    for category in rankings:
        for k in ks:
            out[f"{category}/recall@{k}"] = recall_hits(rankings[category], targets[category], k)
    return out


def fashioniq_metrics(
    rankings: Mapping[str, Sequence[Sequence[Id]]],
    targets: Mapping[str, Sequence[Id]],
    *,
    ks: Sequence[int] = FASHIONIQ_KS,
) -> dict[str, float]:
    """FashionIQ summary in percent: ``<category>/recall@K`` for each category given, plus
    ``average/recall@K``, the *unweighted* mean over those categories (not query-weighted)."""
    per_query = fashioniq_per_query(rankings, targets, ks=ks)
    out = {key: percent(values) for key, values in per_query.items()}
    for k in ks:
        out[f"average/recall@{k}"] = float(np.mean([out[f"{c}/recall@{k}"] for c in rankings]))
    return out
