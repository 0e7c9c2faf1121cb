"""cirlib.submission on the REAL annotation files: perfect, random and official example
predictions, an independent re-implementation of every metric, the writers, and one test per
validation error message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cirlib.data.annotations import load_circo, load_cirr, load_fashioniq_all
from cirlib.metrics import average_precision_at_k, circo_metrics
from cirlib.submission import (
    SubmissionError,
    read_circo_predictions,
    read_cirr_predictions,
    read_fashioniq_predictions,
    score_predictions,
    validate_circo_predictions,
    write_circo_submission,
    write_cirr_submission,
    write_fashioniq_predictions,
)

CATEGORIES = ("dress", "shirt", "toptee")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cirr_dir(annotations_root: Path) -> Path:
    return annotations_root / "cirr"


@pytest.fixture(scope="module")
def circo_dir(annotations_root: Path) -> Path:
    return annotations_root / "circo"


@pytest.fixture(scope="module")
def fiq_dir(annotations_root: Path) -> Path:
    return annotations_root / "fashioniq"


@pytest.fixture(scope="module")
def cirr_val(cirr_dir):
    return load_cirr(cirr_dir, "val")


@pytest.fixture(scope="module")
def circo_val(circo_dir):
    return load_circo(circo_dir, "val")


@pytest.fixture(scope="module")
def fiq_val(fiq_dir):
    return load_fashioniq_all(fiq_dir, "val")


def dump(tmp_path: Path, obj, name: str = "pred.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


# ---------------------------------------------------------------------------- builders


def random_order(rng, n: int, size: int) -> list[int]:
    """``size`` distinct indices of ``range(n)`` in uniformly random order (sequential draws with
    rejection of repeats, which is sampling without replacement), without an O(n) permutation."""
    out: dict[int, None] = {}
    while len(out) < min(size, n):
        for i in rng.integers(0, n, size=2 * size).tolist():
            if len(out) < size:
                out.setdefault(i)
    return list(out)


def cirr_random_predictions(split, rng, p_hit: float = 0.5):
    """Random top-50 (reference excluded) and top-3 subset lists; with probability ``p_hit`` the
    target is put at a random position, so every metric is far from 0 and 100."""
    gallery = np.array(split.gallery)
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for q in split.queries:
        others = [
            g for g in gallery[random_order(rng, len(gallery), 52)] if g not in (q.reference, q.target_hard)
        ]
        top = others[:50]
        if rng.random() < p_hit:
            top[int(rng.integers(0, 50))] = q.target_hard
        recall[str(q.pairid)] = top
        sub = list(q.subset)
        subset[str(q.pairid)] = [sub[i] for i in rng.permutation(5)[:3]]
    return recall, subset


def cirr_perfect_predictions(split):
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for q in split.queries:
        fill = [g for g in split.gallery[:60] if g not in (q.reference, q.target_hard)]
        recall[str(q.pairid)] = [q.target_hard] + fill[:49]
        subset[str(q.pairid)] = [q.target_hard] + [m for m in q.subset if m != q.target_hard][:2]
    return recall, subset


def circo_random_predictions(split, rng, as_str: bool = False):
    preds = {}
    for q in split.queries:
        ids = [int(x) for x in rng.choice(10**6, size=50, replace=False) + 10**7]  # never ground truths
        for gt in q.gt_img_ids:
            if rng.random() < 0.5:
                ids[int(rng.integers(0, 50))] = gt
        ids = list(dict.fromkeys(ids))
        if rng.random() < 0.2:
            ids[-1] = q.reference_img_id
        preds[str(q.id)] = [str(x) for x in ids] if as_str else ids
    return preds


def fiq_random_predictions(splits, rng):
    out = {}
    for c in CATEGORIES:
        gallery = np.array(splits[c].gallery)
        rankings = []
        for q in splits[c].queries:
            top = [g for g in gallery[random_order(rng, len(gallery), 51)] if g != q.target][:50]
            if rng.random() < 0.5:
                top[int(rng.integers(0, 50))] = q.target
            rankings.append(top)
        out[c] = rankings
    return out


# ---------------------------------------------------------------------------- independent scorers


def naive_cirr(split, recall, subset, soft: bool):
    out = {}
    for k in (1, 5, 10, 50):
        out[f"recall@{k}"] = (
            100 * sum(q.target_hard in recall[str(q.pairid)][:k] for q in split.queries) / len(split.queries)
        )
    for k in (1, 2, 3):
        out[f"recall_subset@{k}"] = (
            100 * sum(q.target_hard in subset[str(q.pairid)][:k] for q in split.queries) / len(split.queries)
        )
    if soft:
        for name, preds, ks in (("recall", recall, (1, 5, 10, 50)), ("recall_subset", subset, (1, 2, 3))):
            for k in ks:
                total = 0.0
                for q in split.queries:
                    best = 0.0
                    for img in preds[str(q.pairid)][:k]:
                        if img in q.target_soft and q.target_soft[img] > best:
                            best = q.target_soft[img]
                    total += best
                out[f"soft/{name}@{k}"] = 100 * total / len(split.queries)
    return out


def naive_circo(split, preds):
    out = {}
    for k in (5, 10, 25, 50):
        total = 0.0
        for q in split.queries:
            ranking = [int(x) for x in preds[str(q.id)]][:k]
            hits, ap = 0, 0.0
            for i, x in enumerate(ranking, start=1):
                if x in q.gt_img_ids:
                    hits += 1
                    ap += hits / i
            total += ap / min(k, len(q.gt_img_ids))
        out[f"map@{k}"] = 100 * total / len(split.queries)
    for k in (5, 10, 25, 50):
        out[f"recall@{k}"] = (
            100
            * sum(q.target_img_id in [int(x) for x in preds[str(q.id)]][:k] for q in split.queries)
            / len(split.queries)
        )
    return out


def naive_fiq(splits, preds):
    out = {}
    for c in CATEGORIES:
        for k in (10, 50):
            hits = sum(q.target in preds[c][i][:k] for i, q in enumerate(splits[c].queries))
            out[f"{c}/recall@{k}"] = 100 * hits / len(splits[c].queries)
    for k in (10, 50):
        out[f"average/recall@{k}"] = sum(out[f"{c}/recall@{k}"] for c in CATEGORIES) / 3
    return out


# ---------------------------------------------------------------------------- real-data scoring


def test_cirr_perfect_predictions_score_100(tmp_path, cirr_dir, cirr_val):
    recall, subset = cirr_perfect_predictions(cirr_val)
    out = score_predictions("cirr", cirr_dir, dump(tmp_path, recall), dump(tmp_path, subset, "sub.json"))
    assert set(out) == {f"recall@{k}" for k in (1, 5, 10, 50)} | {f"recall_subset@{k}" for k in (1, 2, 3)}
    assert all(v == 100.0 for v in out.values())


def test_cirr_soft_labels_differ_from_hard_on_buggy_queries(tmp_path, cirr_dir, cirr_val):
    recall, subset = cirr_perfect_predictions(cirr_val)
    out = score_predictions(
        "cirr", cirr_dir, dump(tmp_path, recall), dump(tmp_path, subset, "s.json"), soft=True
    )
    # with the hard target at rank 1, soft@1 is below 100 exactly on the queries whose soft label
    # for target_hard is missing (37, PROTOCOLS §1.1) or below 1
    credit = [max(0.0, q.target_soft.get(q.target_hard, 0.0)) for q in cirr_val.queries]
    assert sum(q.target_hard not in q.target_soft for q in cirr_val.queries) == 37
    assert out["soft/recall@1"] == pytest.approx(100 * np.mean(credit), abs=1e-9)
    assert out["soft/recall@1"] < 100.0 == out["recall@1"]


@pytest.mark.parametrize("soft", [False, True])
def test_cirr_matches_independent_implementation(tmp_path, cirr_dir, cirr_val, soft):
    recall, subset = cirr_random_predictions(cirr_val, np.random.default_rng(7))
    out = score_predictions(
        "cirr", cirr_dir, dump(tmp_path, recall), dump(tmp_path, subset, "s.json"), soft=soft
    )
    expected = naive_cirr(cirr_val, recall, subset, soft)
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-6), key
    assert 0 < out["recall@1"] < out["recall@5"] < out["recall@10"] < out["recall@50"]
    assert 20 < out["recall@50"] < 80 and 0 < out["recall_subset@1"] < 100


def test_cirr_random_rankings_match_analytic_expectation(tmp_path, cirr_dir, cirr_val):
    rng = np.random.default_rng(3)
    gallery = np.array(cirr_val.gallery)
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for q in cirr_val.queries:
        perm = gallery[random_order(rng, len(gallery), 51)]
        recall[str(q.pairid)] = [g for g in perm if g != q.reference][:50]
        subset[str(q.pairid)] = [q.subset[i] for i in rng.permutation(5)[:3]]
    out = score_predictions("cirr", cirr_dir, dump(tmp_path, recall), dump(tmp_path, subset, "s.json"))
    n_q, n_gal = len(cirr_val.queries), len(gallery) - 1  # reference removed: 2,296 candidates
    for name, p in [(f"recall@{k}", k / n_gal) for k in (1, 5, 10, 50)] + [
        (f"recall_subset@{k}", k / 5) for k in (1, 2, 3)
    ]:
        se = 100 * np.sqrt(p * (1 - p) / n_q)
        assert abs(out[name] - 100 * p) < 5 * se + 1e-9, (name, out[name], 100 * p)


def test_circo_official_example_submission(circo_dir, circo_val):
    # PROTOCOLS §2.5: scored by the official scorer, mAP@5/10/25/50 = 0.49/0.52/0.54/0.60 %
    out = score_predictions("circo", circo_dir, circo_dir / "submission_examples" / "submission_val.json")
    assert [round(out[f"map@{k}"], 2) for k in (5, 10, 25, 50)] == [0.49, 0.52, 0.54, 0.60]
    assert sorted(k.split("/")[1] for k in out if k.startswith("semantic_map@10/")) == sorted(
        {a for q in circo_val.queries for a in q.semantic_aspects}
    )


def test_circo_test_example_validates(circo_dir):
    preds = read_circo_predictions(
        circo_dir / "submission_examples" / "submission_test.json", load_circo(circo_dir, "test")
    )
    assert len(preds) == 800 and all(len(v) == 50 for v in preds.values())


def test_circo_perfect_predictions_score_100(tmp_path, circo_dir, circo_val):
    preds = {
        str(q.id): list(q.gt_img_ids) + [10**9 + i for i in range(50 - len(q.gt_img_ids))]
        for q in circo_val.queries
    }
    out = score_predictions("circo", circo_dir, dump(tmp_path, preds))
    assert all(out[key] == 100.0 for key in out)


@pytest.mark.parametrize("as_str", [False, True])
def test_circo_matches_independent_implementation(tmp_path, circo_dir, circo_val, as_str):
    preds = circo_random_predictions(circo_val, np.random.default_rng(11), as_str=as_str)
    out = score_predictions("circo", circo_dir, dump(tmp_path, preds))
    expected = naive_circo(circo_val, preds)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-6), key
    assert 1 < out["map@10"] < 95


def test_circo_random_rankings_match_analytic_expectation(circo_val):
    """Random permutations of a per-query gallery of N = 60 ids (the ground truths plus
    distractors): E[AP@K] = 1/min(K,g) * sum_{i<=K} (1/i) [g/N + (i-1) g(g-1) / (N(N-1))]."""
    rng = np.random.default_rng(5)
    n, reps, ks = 60, 20, (5, 10, 25, 50)
    rankings, gts, targets, expected = [], [], [], {k: [] for k in ks}
    for _ in range(reps):
        for q in circo_val.queries:
            gallery = list(q.gt_img_ids) + [-(i + 1) for i in range(n - len(q.gt_img_ids))]
            rankings.append([gallery[i] for i in rng.permutation(n)[:50]])
            gts.append(q.gt_img_ids)
            targets.append(q.target_img_id)
            g = len(q.gt_img_ids)
            for k in ks:
                i = np.arange(1, k + 1)
                expected[k].append(np.sum((g / n + (i - 1) * g * (g - 1) / (n * (n - 1))) / i) / min(k, g))
    out = circo_metrics(rankings, gts, targets)
    for k in ks:
        ap = average_precision_at_k(rankings, gts, k)
        se = 100 * ap.std() / np.sqrt(len(ap))
        assert abs(out[f"map@{k}"] - 100 * np.mean(expected[k])) < 5 * se, k
        p = k / n
        assert abs(out[f"recall@{k}"] - 100 * p) < 5 * 100 * np.sqrt(p * (1 - p) / len(ap)), k


def test_fashioniq_perfect_predictions_score_100(tmp_path, fiq_dir, fiq_val):
    preds = {c: [[q.target] for q in fiq_val[c].queries] for c in CATEGORIES}
    out = score_predictions("fashioniq", fiq_dir, dump(tmp_path, preds))
    assert set(out) == {f"{c}/recall@{k}" for c in (*CATEGORIES, "average") for k in (10, 50)}
    assert all(v == 100.0 for v in out.values())


def test_fashioniq_matches_independent_implementation(tmp_path, fiq_dir, fiq_val):
    preds = fiq_random_predictions(fiq_val, np.random.default_rng(2))
    out = score_predictions("fashioniq", fiq_dir, dump(tmp_path, preds))
    for key, value in naive_fiq(fiq_val, preds).items():
        assert out[key] == pytest.approx(value, abs=1e-6), key


def test_fashioniq_random_rankings_match_analytic_expectation(tmp_path, fiq_dir, fiq_val):
    rng = np.random.default_rng(4)
    preds = {}
    for c in CATEGORIES:
        gallery = np.array(fiq_val[c].gallery)
        preds[c] = [gallery[random_order(rng, len(gallery), 50)].tolist() for _ in fiq_val[c].queries]
    out = score_predictions("fashioniq", fiq_dir, dump(tmp_path, preds))
    for c in CATEGORIES:
        for k in (10, 50):
            p, n_q = k / len(fiq_val[c].gallery), len(fiq_val[c].queries)
            assert abs(out[f"{c}/recall@{k}"] - 100 * p) < 5 * 100 * np.sqrt(p * (1 - p) / n_q) + 1e-9


def test_score_predictions_rejects_bad_arguments(tmp_path, circo_dir):
    with pytest.raises(ValueError, match="unknown benchmark"):
        score_predictions("cirrr", circo_dir, tmp_path / "x.json")
    with pytest.raises(ValueError, match="only for CIRR"):
        score_predictions("circo", circo_dir, tmp_path / "x.json", subset_path=tmp_path / "y.json")
    with pytest.raises(ValueError, match="only for CIRR"):
        score_predictions("circo", circo_dir, tmp_path / "x.json", soft=True)


# ---------------------------------------------------------------------------- official CIRR demo + writers


def test_cirr_demo_files_validate_against_test1(cirr_dir):
    test1 = load_cirr(cirr_dir, "test1")
    recall = read_cirr_predictions(cirr_dir / "demo_files" / "test1_pred_ranks_recall.json", test1)
    subset = read_cirr_predictions(
        cirr_dir / "demo_files" / "test1_pred_ranks_recall_subset.json", test1, metric="recall_subset"
    )
    assert len(recall) == len(subset) == 4148
    assert all(len(v) == 50 for v in recall.values()) and all(len(v) == 3 for v in subset.values())


def test_write_cirr_submission_roundtrips_demo_files(tmp_path, cirr_dir):
    test1 = load_cirr(cirr_dir, "test1")
    demo = json.loads((cirr_dir / "demo_files" / "test1_pred_ranks_recall.json").read_text())
    demo_sub = json.loads((cirr_dir / "demo_files" / "test1_pred_ranks_recall_subset.json").read_text())
    pairids = [q.pairid for q in test1.queries]
    paths = write_cirr_submission(
        tmp_path / "test1_pred_ranks_recall.json",
        pairids,
        [demo[str(p)] for p in pairids],
        [demo_sub[str(p)] for p in pairids],
        split=test1,
    )
    assert paths == (
        tmp_path / "test1_pred_ranks_recall.json",
        tmp_path / "test1_pred_ranks_recall_subset.json",
    )
    assert json.loads(paths[0].read_text()) == demo
    assert json.loads(paths[1].read_text()) == demo_sub
    assert paths[0].stat().st_size < 5_000_000
    # what was written passes the reader
    read_cirr_predictions(paths[0], test1)
    read_cirr_predictions(paths[1], test1, metric="recall_subset")


def test_write_cirr_submission_truncates_and_validates(tmp_path, cirr_val):
    q = cirr_val.queries[0]
    long = [g for g in cirr_val.gallery if g != q.reference][:80]
    rec, sub = write_cirr_submission(tmp_path / "r.json", [q.pairid], [long], [list(q.subset)])
    assert len(json.loads(rec.read_text())[str(q.pairid)]) == 50
    assert len(json.loads(sub.read_text())[str(q.pairid)]) == 3
    with pytest.raises(SubmissionError, match="missing query id"):
        write_cirr_submission(tmp_path / "bad.json", [q.pairid], [long], [list(q.subset)], split=cirr_val)
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(SubmissionError, match="duplicate id"):
        write_cirr_submission(tmp_path / "bad.json", [q.pairid], [["a", "a"]], [[]])


def test_write_circo_submission(tmp_path, circo_dir):
    test = load_circo(circo_dir, "test")
    rankings = [np.arange(100, dtype=np.int64) + 1000 * i for i in range(800)]
    path = write_circo_submission(tmp_path / "circo.json", rankings, split=test)
    data = json.loads(path.read_text())
    assert sorted(data, key=int) == [str(i) for i in range(800)]
    assert data["3"] == list(range(3000, 3050))
    assert read_circo_predictions(path, test)[3] == list(range(3000, 3050))
    # a mapping works too, and string ids are written as ints
    path2 = write_circo_submission(tmp_path / "c2.json", {"0": ["7", 8], 1: [9]})
    assert json.loads(path2.read_text()) == {"0": [7, 8], "1": [9]}
    with pytest.raises(SubmissionError, match="duplicate id"):
        write_circo_submission(tmp_path / "c3.json", [[5, "5"]])
    with pytest.raises(SubmissionError, match="unknown query id '2'"):
        write_circo_submission(tmp_path / "c4.json", {0: [1], 2: [3]})
    with pytest.raises(SubmissionError, match="missing query id"):
        write_circo_submission(tmp_path / "c5.json", {0: [1]}, split=load_circo(circo_dir, "val"))


def test_write_fashioniq_predictions_roundtrip(tmp_path, fiq_val):
    preds = {c: [[q.target, q.candidate] for q in fiq_val[c].queries] for c in CATEGORIES}
    path = write_fashioniq_predictions(tmp_path / "fiq.json", preds, splits=fiq_val)
    assert read_fashioniq_predictions(path, fiq_val) == preds


# ---------------------------------------------------------------------------- one test per error


class Replace:
    """Returned by a mutation that replaces the whole object instead of editing it in place."""

    def __init__(self, obj):
        self.obj = obj


@pytest.fixture(scope="module")
def cirr_perfect_json(cirr_val) -> tuple[str, str]:
    """The perfect recall and subset objects as JSON text; each error test parses a fresh copy."""
    recall, subset = cirr_perfect_predictions(cirr_val)
    return json.dumps(recall), json.dumps(subset)


def _first(cirr_val):
    return str(cirr_val.queries[0].pairid)


CIRR_RECALL_ERRORS = {
    "not_dict": (lambda o, s: Replace([o]), "expected a JSON object with pairid keys, got list"),
    "missing_version": (lambda o, s: o.pop("version"), 'missing key "version"'),
    "wrong_version": (lambda o, s: o.update(version="rc1"), '"version" is \'rc1\', expected "rc2"'),
    "missing_metric": (lambda o, s: o.pop("metric"), 'missing key "metric"'),
    "wrong_metric": (lambda o, s: o.update(metric="recall_subset"), "\"metric\" is 'recall_subset'"),
    "missing_query": (lambda o, s: o.pop(_first(s)), "missing query id(s) 12060 (1 of 4181"),
    "unknown_query": (lambda o, s: o.update({"99999999": []}), "unknown query id '99999999'"),
    "not_a_list": (lambda o, s: o.update({_first(s): "dev-1"}), "query 12060: expected a list of"),
    "not_a_string": (
        lambda o, s: o[_first(s)].__setitem__(1, 5),
        "query 12060: entry 5 is not an image name string",
    ),
    "duplicate": (lambda o, s: o[_first(s)].__setitem__(1, o[_first(s)][0]), "query 12060: duplicate id"),
    "too_long": (
        lambda o, s: o[_first(s)].append("dev-x"),
        "query 12060: list has 51 entries, more than the 50",
    ),
    "not_in_gallery": (
        lambda o, s: o[_first(s)].__setitem__(1, "test1-147-1-img1"),
        "query 12060: 'test1-147-1-img1' is not an image of the CIRR val split",
    ),
}


@pytest.mark.parametrize("case", sorted(CIRR_RECALL_ERRORS))
def test_cirr_recall_file_errors(tmp_path, cirr_val, cirr_perfect_json, case):
    mutate, message = CIRR_RECALL_ERRORS[case]
    obj = json.loads(cirr_perfect_json[0])
    result = mutate(obj, cirr_val)
    if isinstance(result, Replace):
        obj = result.obj
    path = dump(tmp_path, obj)
    with pytest.raises(SubmissionError) as err:
        read_cirr_predictions(path, cirr_val)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert message in text


CIRR_SUBSET_ERRORS = {
    "wrong_metric": (
        lambda o, s: o.update(metric="recall"),
        '"metric" is \'recall\', expected "recall_subset"',
    ),
    "too_long": (
        lambda o, s: o[_first(s)].append(s.queries[0].subset[-1]),
        "query 12060: list has 4 entries, more than the 3 allowed",
    ),
    "outside_subset": (
        lambda o, s: o[_first(s)].__setitem__(2, "dev-1-0-img0"),
        "query 12060: 'dev-1-0-img0' is outside the query's subset",
    ),
    "reference": (
        lambda o, s: o[_first(s)].__setitem__(2, s.queries[0].reference),
        "query 12060: 'dev-244-0-img0' is outside the query's subset (img_set.members minus the reference",
    ),
}


@pytest.mark.parametrize("case", sorted(CIRR_SUBSET_ERRORS))
def test_cirr_subset_file_errors(tmp_path, cirr_val, cirr_perfect_json, case):
    mutate, message = CIRR_SUBSET_ERRORS[case]
    obj = json.loads(cirr_perfect_json[1])
    mutate(obj, cirr_val)
    path = dump(tmp_path, obj, "subset.json")
    with pytest.raises(SubmissionError) as err:
        read_cirr_predictions(path, cirr_val, metric="recall_subset")
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_missing_and_bad_json_files(tmp_path, cirr_val):
    with pytest.raises(SubmissionError, match=r"nope\.json: prediction file not found$"):
        read_cirr_predictions(tmp_path / "nope.json", cirr_val)
    with pytest.raises(SubmissionError, match="is a directory"):
        read_cirr_predictions(tmp_path, cirr_val)
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "rc2",\n "metric": }')
    with pytest.raises(
        SubmissionError, match=r"bad\.json: invalid JSON \(Expecting value at line 2 column 12\)"
    ):
        read_cirr_predictions(bad, cirr_val)
    twice = tmp_path / "twice.json"
    twice.write_text('{"version": "rc2", "metric": "recall", "12060": [], "12060": ["dev-1"]}')
    with pytest.raises(SubmissionError, match=r"twice\.json: key '12060' occurs twice in a JSON object"):
        read_cirr_predictions(twice, cirr_val)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SubmissionError, match="not UTF-8"):
        read_cirr_predictions(binary, cirr_val)


CIRCO_ERRORS = {
    "not_dict": (lambda o: Replace([o]), "expected a JSON object with query-id keys, got list"),
    "missing_query": (lambda o: o.pop("219"), "missing query id(s) 219 (1 of 220 CIRCO val query ids"),
    "unknown_query": (
        lambda o: o.update({"220": []}),
        "unknown query id '220' (expected the strings '0'..'219')",
    ),
    "padded_key": (lambda o: o.update({"007": []}), "unknown query id '007'"),
    "not_a_list": (lambda o: o.update({"0": 5}), "query 0: expected a list of COCO image ids, got int"),
    "non_numeric": (lambda o: o["0"].__setitem__(0, "abc"), "query 0: entry 'abc' is not a COCO image id"),
    "bool": (lambda o: o["0"].__setitem__(0, True), "query 0: entry True is not a COCO image id"),
    "negative": (lambda o: o["0"].__setitem__(0, -3), "query 0: entry -3 is not a COCO image id"),
    "duplicate": (lambda o: o["0"].__setitem__(1, str(o["0"][0])), "query 0: duplicate id"),
    "too_long": (
        lambda o: o["0"].extend([10**9, 10**9 + 1]),
        "query 0: list has 51 entries, more than the 50",
    ),
}


@pytest.mark.parametrize("case", sorted(CIRCO_ERRORS))
def test_circo_errors(tmp_path, circo_dir, circo_val, case):
    mutate, message = CIRCO_ERRORS[case]
    obj = json.loads((circo_dir / "submission_examples" / "submission_val.json").read_text())
    obj["0"] = obj["0"][:49]
    result = mutate(obj)
    path = dump(tmp_path, result.obj if isinstance(result, Replace) else obj)
    with pytest.raises(SubmissionError) as err:
        read_circo_predictions(path, circo_val)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_circo_accepts_numeric_strings_and_short_lists():
    out = validate_circo_predictions({"0": ["12", 13], "1": []}, 2)
    assert out == {0: [12, 13], 1: []}


FIQ_ERRORS = {
    "not_dict": (lambda o, s: Replace([o]), "expected a JSON object with category keys, got list"),
    "missing_category": (lambda o, s: o.pop("shirt"), 'missing category "shirt"'),
    "unknown_category": (lambda o, s: o.update(shoes=[]), "unknown category 'shoes'"),
    "not_a_list": (lambda o, s: o.update(dress={}), "dress: expected a list of rankings, got dict"),
    "too_few": (
        lambda o, s: o["dress"].pop(),
        "dress: 2016 rankings, expected 2017 (one per query of cap.dress.val.json",
    ),
    "not_in_gallery": (
        lambda o, s: o["toptee"][3].append("B000NOTREAL"),
        "toptee query 3: 'B000NOTREAL' is not an image of split.toptee.val.json",
    ),
    "other_category": (
        lambda o, s: o["dress"][0].append(next(g for g in s["shirt"].gallery if g not in s["dress"].gallery)),
        "is not an image of split.dress.val.json",
    ),
    "duplicate": (lambda o, s: o["shirt"][1].append(o["shirt"][1][0]), "shirt query 1: duplicate id"),
    "too_long": (
        lambda o, s: o["dress"].__setitem__(0, list(s["dress"].gallery[:51])),
        "dress query 0: list has 51",
    ),
    "not_a_string": (
        lambda o, s: o["dress"][0].append(7),
        "dress query 0: entry 7 is not an image id string",
    ),
}


@pytest.mark.parametrize("case", sorted(FIQ_ERRORS))
def test_fashioniq_errors(tmp_path, fiq_val, case):
    mutate, message = FIQ_ERRORS[case]
    obj = {c: [[q.target] for q in fiq_val[c].queries] for c in CATEGORIES}
    result = mutate(obj, fiq_val)
    path = dump(tmp_path, result.obj if isinstance(result, Replace) else obj)
    with pytest.raises(SubmissionError) as err:
        read_fashioniq_predictions(path, fiq_val)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_cirr_reference_in_a_list_is_dropped_not_scored(
    tmp_path, cirr_val, cirr_perfect_json, annotations_root, caplog
):
    """A list naming its own reference is scored as SEARLE would score that ranking: the reference
    is removed (it is not in the query's gallery) and the rest keeps its order."""
    obj = json.loads(cirr_perfect_json[0])
    key = _first(cirr_val)
    target = obj[key][0]
    obj[key] = [cirr_val.queries[0].reference, *obj[key][:49]]
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(obj))
    with caplog.at_level("WARNING"):
        result = score_predictions("cirr", annotations_root / "cirr", path)
    assert result["recall@1"] == 100.0 and obj[key][1] == target
    assert "own reference" in caplog.text
