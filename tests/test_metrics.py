"""Hand-worked cases for cirlib.metrics (official semantics of PROTOCOLS.md §2) and tie-breaking."""

from __future__ import annotations

import numpy as np
import pytest

from cirlib.metrics import (
    average_precision_at_k,
    circo_metrics,
    circo_per_query,
    cirr_metrics,
    cirr_per_query,
    cirr_soft_hits,
    fashioniq_metrics,
    filter_to_subset,
    percent,
    rankings_from_scores,
    recall_hits,
    semantic_map,
    stable_topk_indices,
    subset_rankings,
)

# ---------------------------------------------------------------------------- CIRCO AP@K


def test_ap_three_gts_found_at_ranks_1_and_3():
    ap = average_precision_at_k([["a", "x", "b", "y", "z"]], [{"a", "b", "c"}], 5)
    assert ap[0] == pytest.approx((1 + 2 / 3) / 3)


def test_ap_denominator_is_min_k_and_gt_count():
    # one ground truth at rank 1: AP = 1 for every K (denominator min(K, 1) = 1)
    for k in (5, 10, 25, 50):
        assert average_precision_at_k([["a", "x", "y"]], [["a"]], k)[0] == 1.0
    gts = [f"g{i}" for i in range(14)]
    # 14 ground truths: the top 5 all relevant gives AP@5 = 1 (denominator 5, not 14)
    assert average_precision_at_k([gts[:5] + ["x"]], [gts], 5)[0] == 1.0
    # ... 4 of the top 5 relevant: (1+1+1+1)/5
    assert average_precision_at_k([gts[:4] + ["x"]], [gts], 5)[0] == pytest.approx(4 / 5)
    # at K = 50 the denominator is |G| = 14 even though only 4 are retrieved
    assert average_precision_at_k([gts[:4] + ["x"]], [gts], 50)[0] == pytest.approx(4 / 14)
    # 10 ground truths, one found at rank 1: AP@50 = 1/10
    assert average_precision_at_k([["g0", "x"]], [gts[:10]], 50)[0] == pytest.approx(1 / 10)


def test_ap_short_ranking_keeps_denominator():
    # fewer predictions than K: precisions use what is there, denominator still min(K, |G|) = 2
    assert average_precision_at_k([["a"]], [{"a", "b"}], 5)[0] == pytest.approx(1 / 2)
    assert average_precision_at_k([[]], [{"a"}], 5)[0] == 0.0


def test_ap_only_top_k_counts():
    # a ground truth at rank 6 does not count for AP@5
    assert average_precision_at_k([["x"] + [f"y{i}" for i in range(4)] + ["a"]], [{"a"}], 5)[0] == 0.0


def test_ap_rejects_duplicates_and_empty_gt():
    with pytest.raises(ValueError, match="more than once"):
        average_precision_at_k([["a", "a"]], [{"a"}], 5)
    with pytest.raises(ValueError, match="empty ground-truth"):
        average_precision_at_k([["a"]], [set()], 5)
    with pytest.raises(ValueError, match="k must be"):
        average_precision_at_k([["a"]], [{"a"}], 0)


def test_circo_recall_counts_only_target_and_reference_is_kept():
    # the ranking holds a ground truth that is not the target: recall 0, mAP > 0
    rankings = [["ref", "g2", "x"]]
    per_query = circo_per_query(rankings, [[1, "g2"]], [1], ks=(5,))
    assert per_query["recall@5"].tolist() == [False]
    # the reference at rank 1 just occupies a slot (not removed): g2 at rank 2 -> (1/2)/2
    assert per_query["map@5"][0] == pytest.approx(0.25)


def test_circo_metrics_keys_and_semantic_map():
    rankings = [["a", "x"], ["y", "b"], ["z"]]
    gts = [["a"], ["b"], ["c"]]
    out = circo_metrics(rankings, gts, ["a", "b", "c"], semantic_aspects=[["neg"], ["neg", "card"], ["card"]])
    assert list(out)[:8] == [f"map@{k}" for k in (5, 10, 25, 50)] + [f"recall@{k}" for k in (5, 10, 25, 50)]
    assert out["map@10"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert out["semantic_map@10/neg"] == pytest.approx(100 * (1 + 0.5) / 2)
    assert out["semantic_map@10/card"] == pytest.approx(100 * (0.5 + 0) / 2)
    assert out["recall@5"] == pytest.approx(200 / 3)


def test_semantic_map_counts_query_once_per_aspect():
    assert semantic_map(np.array([1.0, 0.0]), [["a", "a"], ["b"]]) == {"a": 100.0, "b": 0.0}


# ---------------------------------------------------------------------------- recall / soft


def test_recall_hits():
    hits = recall_hits([["a", "b", "c"], ["c", "b"], ["x"]], ["b", "a", "x"], 2)
    assert hits.dtype == bool
    assert hits.tolist() == [True, False, True]
    assert recall_hits([], [], 1).shape == (0,)
    with pytest.raises(ValueError, match="2 rankings but 1 targets"):
        recall_hits([["a"], ["b"]], ["a"], 1)


def test_cirr_soft_hits_max_of_labels_floored_at_zero():
    labels = {"t": 1.0, "u": 0.5, "w": 0.2, "v": -1.0}
    rankings = [["v", "u", "t"], ["v", "u", "t"], ["v", "u", "t"], ["v", "x"], ["x", "w"], ["y"]]
    ks_expected = [(1, 0.0), (2, 0.5), (3, 1.0)]
    for k, expected in ks_expected:
        assert cirr_soft_hits(rankings[:1], [labels], k)[0] == expected
    out = cirr_soft_hits(rankings[3:], [labels] * 3, 2)
    assert out.tolist() == [0.0, 0.2, 0.0]


def test_cirr_reference_removed_before_top_k():
    gallery = ["ref", "tgt", "o1", "o2"]
    scores = np.array([[0.9, 0.8, 0.1, 0.0]])  # the reference scores highest
    rankings = rankings_from_scores(scores, gallery, k=2, exclude=["ref"])
    assert rankings == [["tgt", "o1"]]  # still k entries
    assert cirr_metrics(rankings, ["tgt"], ks=(1,)) == {"recall@1": 100.0}
    # a ranking that still contains its reference is refused when references are passed
    with pytest.raises(ValueError, match="contains its reference"):
        cirr_metrics([["ref", "tgt"]], ["tgt"], references=["ref"], ks=(1,))


def test_cirr_metrics_keys():
    out = cirr_metrics(
        [["t"] + [f"x{i}" for i in range(49)]],
        ["t"],
        subset_rankings=[["s", "t", "u"]],
        target_soft=[{"t": 1.0, "s": 0.5}],
    )
    assert out == {
        "recall@1": 100.0,
        "recall@5": 100.0,
        "recall@10": 100.0,
        "recall@50": 100.0,
        "recall_subset@1": 0.0,
        "recall_subset@2": 100.0,
        "recall_subset@3": 100.0,
        "soft/recall@1": 100.0,
        "soft/recall@5": 100.0,
        "soft/recall@10": 100.0,
        "soft/recall@50": 100.0,
        "soft/recall_subset@1": 50.0,
        "soft/recall_subset@2": 100.0,
        "soft/recall_subset@3": 100.0,
    }
    per_query = cirr_per_query([["t"]], ["t"], ks=(1,))
    assert per_query["recall@1"].dtype == bool


def test_fashioniq_average_is_unweighted():
    rankings = {"dress": [["t"]], "shirt": [["x"], ["x"], ["x"]], "toptee": [["t"], ["x"]]}
    targets = {"dress": ["t"], "shirt": ["t", "t", "t"], "toptee": ["t", "t"]}
    out = fashioniq_metrics(rankings, targets)
    assert out["dress/recall@10"] == 100.0
    assert out["shirt/recall@50"] == 0.0
    assert out["toptee/recall@10"] == 50.0
    # unweighted: (100 + 0 + 50) / 3 = 50, not the query-weighted 2/6 = 33.3
    assert out["average/recall@10"] == pytest.approx(50.0)
    assert out["average/recall@50"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="categories differ"):
        fashioniq_metrics({"dress": [["t"]]}, {"shirt": ["t"]})


def test_percent_is_unrounded_float():
    value = percent(np.array([True, False, False]))
    assert isinstance(value, float)
    assert value == pytest.approx(100 / 3, rel=1e-15)
    assert value != round(value, 2)
    with pytest.raises(ValueError, match="empty"):
        percent([])


# ---------------------------------------------------------------------------- rankings, ties


def test_ties_broken_by_lower_gallery_index():
    scores = np.array([[1.0, 2.0, 2.0, 1.0, 2.0]])
    assert rankings_from_scores(scores, ["a", "b", "c", "d", "e"], k=4) == [["b", "c", "e", "a"]]
    # tie at the cut: the lower index wins
    assert rankings_from_scores(scores, ["a", "b", "c", "d", "e"], k=2) == [["b", "c"]]
    # excluding one of the tied items keeps the order of the rest
    assert rankings_from_scores(scores, list("abcde"), k=3, exclude=["c"]) == [["b", "e", "a"]]


def test_stable_topk_matches_stable_argsort_with_many_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        row = rng.integers(0, 4, size=n).astype(np.float32)
        for k in (1, 3, n, n + 5):
            expected = np.argsort(-row, kind="stable")[: min(k, n)]
            assert stable_topk_indices(row, k).tolist() == expected.tolist()


def test_rankings_from_scores_matches_reference_loop():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(20, 30)).astype(np.float64)
    ids = [f"i{j}" for j in range(30)]
    exclude = [ids[int(rng.integers(0, 30))] if q % 3 else None for q in range(20)]
    got = rankings_from_scores(scores, ids, k=7, exclude=exclude)
    for q in range(20):
        order = sorted(range(30), key=lambda j: (-scores[q, j], j))
        expected = [ids[j] for j in order if ids[j] != exclude[q]][:7]
        assert got[q] == expected


def test_rankings_from_scores_k_larger_than_gallery_and_int_ids():
    scores = np.array([[0.1, 0.3, 0.2]])
    assert rankings_from_scores(scores, [10, 20, 30], k=10) == [[20, 30, 10]]
    assert rankings_from_scores(scores, [10, 20, 30], k=10, exclude=[20]) == [[30, 10]]


@pytest.mark.parametrize(
    ("scores", "ids", "kwargs", "message"),
    [
        (np.zeros((1, 3)), ["a", "b"], {}, "3 gallery columns"),
        (np.zeros(3), ["a", "b", "c"], {}, "2-D"),
        (np.array([[0.0, np.nan, 1.0]]), ["a", "b", "c"], {}, "NaN"),
        (np.zeros((1, 3)), ["a", "b", "a"], {}, "twice"),
        (np.zeros((1, 3)), ["a", "b", "c"], {"exclude": ["z"]}, "not in gallery_ids"),
        (np.zeros((1, 3)), ["a", "b", "c"], {"exclude": ["a", "b"]}, "exclude has 2 entries"),
        (np.zeros((1, 3)), ["a", "b", "c"], {"k": 0}, "k must be"),
    ],
)
def test_rankings_from_scores_errors(scores, ids, kwargs, message):
    kwargs = {"k": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        rankings_from_scores(scores, ids, **kwargs)


def test_subset_rankings_five_candidates_in_score_order():
    ids = [f"m{j}" for j in range(8)]
    scores = np.array([[0.5, 0.9, 0.1, 0.7, 0.7, 0.3, 0.95, 0.0]])
    members = [["m3", "m0", "m6", "m4", "m2", "m5"]]  # m6 is the reference and scores highest
    sub = subset_rankings(scores, ids, members, ["m6"])
    # 5 candidates; m3 and m4 tie at 0.7 -> lower gallery index (m3) first
    assert sub == [["m3", "m4", "m0", "m5", "m2"]]
    # equivalent to filtering the full, reference-removed ranking keeping its order
    full = rankings_from_scores(scores, ids, k=8, exclude=["m6"])
    assert filter_to_subset(full, members, ["m6"]) == sub
    assert recall_hits(sub, ["m4"], 1).tolist() == [False]
    assert recall_hits(sub, ["m4"], 2).tolist() == [True]


def test_subset_errors():
    with pytest.raises(ValueError, match="not in gallery_ids"):
        subset_rankings(np.zeros((1, 2)), ["a", "b"], [["a", "b", "c"]], ["a"])
    with pytest.raises(ValueError, match="only 1 of the 2 subset candidates"):
        filter_to_subset([["b", "x"]], [["a", "b", "c"]], ["a"])
    assert filter_to_subset([["b", "x"]], [["a", "b", "c"]], ["a"], require_all=False) == [["b"]]
