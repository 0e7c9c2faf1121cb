"""Tests of cirlib.experiments: bootstrap intervals, paired tests, the results schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cirlib.experiments import (
    SCHEMA_VERSION,
    ResultRow,
    ResultsFileError,
    aggregate_seeds,
    bootstrap_ci,
    paired_bootstrap,
    read_results,
    results_table,
    row_from_per_query,
    write_results,
)


# ------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_covers_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 500, 5000):
        hits = rng.random(n) < 0.3
        ci = bootstrap_ci(hits, n_boot=1000, seed=1)
        assert ci.low <= ci.mean <= ci.high
        assert ci.mean == pytest.approx(hits.mean())
        widths.append(ci.high - ci.low)
    assert widths[0] > widths[1] > widths[2] > 0
    # ~1/sqrt(n): 100x the queries gives about a tenth of the width
    assert widths[2] / widths[0] == pytest.approx(0.1, rel=0.35)


def test_bootstrap_ci_matches_normal_approximation():
    values = np.random.default_rng(1).standard_normal(2000)
    ci = bootstrap_ci(values, n_boot=4000, seed=0)
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_is_seeded_and_handles_constants():
    values = np.random.default_rng(2).random(300)
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    assert bootstrap_ci(values, seed=5) != bootstrap_ci(values, seed=6)
    const = bootstrap_ci(np.full(37, 0.1))
    assert const.low <= const.mean <= const.high and const.high - const.low < 1e-12
    assert bootstrap_ci([1.0]) == (1.0, 1.0, 1.0)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, np.nan])
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci(np.ones((3, 3)))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.5)


def test_paired_bootstrap_identical_arrays():
    a = np.random.default_rng(3).random(400)
    result = paired_bootstrap(a, a.copy())
    assert result.diff == 0.0 and result.low == 0.0 and result.high == 0.0
    assert result.p_value == 1.0


def test_paired_bootstrap_detects_a_real_difference_and_not_noise():
    rng = np.random.default_rng(4)
    base = rng.random(1000) < 0.4
    better = base | (rng.random(1000) < 0.1)  # strictly more hits on the same queries
    strong = paired_bootstrap(better, base, n_boot=2000, seed=0)
    assert strong.diff > 0 and strong.low > 0 and strong.p_value < 0.01
    assert strong.low <= strong.diff <= strong.high
    noise = paired_bootstrap(rng.random(1000), rng.random(1000), seed=0)
    assert noise.low < 0 < noise.high and noise.p_value > 0.05
    flipped = paired_bootstrap(base, better, seed=0)
    assert flipped.diff == pytest.approx(-strong.diff)
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_aggregate_seeds():
    summary = aggregate_seeds({2: 30.0, 0: 10.0, 1: 20.0})
    assert summary.mean == 20.0 and summary.std == pytest.approx(10.0)
    assert list(summary.per_seed) == [0, 1, 2]
    assert aggregate_seeds({0: 5.0}).std == 0.0
    with pytest.raises(ValueError):
        aggregate_seeds({})


# ------------------------------------------------------------------------------------ schema
def make_row(**overrides) -> ResultRow:
    fields = dict(
        notebook="nb01",
        benchmark="cirr",
        split="val",
        method="pic2word",
        metric="R@1",
        value=25.0,
        ci_low=23.5,
        ci_high=26.5,
        n_queries=4181,
        seeds=(0, 1, 2),
        config_hash="abcd1234abcd1234",
    )
    fields.update(overrides)
    return ResultRow(**fields)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"value": 0.5, "ci_low": 0.6}, "ci_low <= value"),
        ({"ci_high": 24.0}, "ci_low <= value"),
        ({"value": 150.0, "ci_high": 160.0}, "percentage"),
        ({"value": -1.0, "ci_low": -2.0}, "percentage"),
        ({"value": float("nan")}, "percentage"),
        ({"label": "theirs"}, "label"),
        ({"ci_low": None, "ci_high": None}, "required"),
        ({"n_queries": 0}, "positive int"),
        ({"seeds": ()}, "seeds are required"),
        ({"seeds": "012"}, "sequence of ints"),
        ({"config_hash": ""}, "config_hash"),
        ({"metric": ""}, "non-empty"),
        ({"notebook": "../x"}, "names a file"),
        ({"value": True}, "number"),
    ],
)
def test_result_row_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_row(**overrides)


def test_paper_rows_may_omit_ci_and_run_details():
    row = make_row(label="paper", ci_low=None, ci_high=None, n_queries=None, seeds=(), config_hash="")
    assert row.label == "paper" and row.ci_low is None
    assert make_row(seeds=[0, np.int64(1)]).seeds == (0, 1)


def test_write_and_read_results_roundtrip(tmp_path: Path):
    rows = [
        make_row(),
        make_row(metric="R@5", value=55.0, ci_low=53.0, ci_high=57.0),
        make_row(
            label="paper", value=23.9, ci_low=None, ci_high=None, n_queries=None, seeds=(), config_hash=""
        ),
    ]
    path = write_results("nb01", rows, root=tmp_path)
    assert path == tmp_path / "nb01.json"
    payload = json.loads(path.read_text())
    assert payload["schema_version"] == SCHEMA_VERSION and len(payload["rows"]) == 3
    assert read_results("nb01", root=tmp_path) == rows
    assert not list(tmp_path.glob(".*tmp"))


def test_write_results_refuses_foreign_and_duplicate_rows(tmp_path: Path):
    with pytest.raises(ValueError, match="belongs to notebook"):
        write_results("nb02", [make_row()], root=tmp_path)
    with pytest.raises(ValueError, match="duplicates"):
        write_results("nb01", [make_row(), make_row()], root=tmp_path)
    with pytest.raises(TypeError):
        write_results("nb01", [{"value": 1}], root=tmp_path)  # type: ignore[list-item]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{broken", "not valid JSON"),
        ("[]", "top level"),
        (json.dumps({"schema_version": 99, "notebook": "nb01", "rows": []}), "schema_version"),
        (json.dumps({"schema_version": SCHEMA_VERSION, "notebook": "other", "rows": []}), "for notebook"),
        (json.dumps({"schema_version": SCHEMA_VERSION, "notebook": "nb01", "rows": {}}), "must be a list"),
        (
            json.dumps({"schema_version": SCHEMA_VERSION, "notebook": "nb01", "rows": [{"value": 1}]}),
            "missing",
        ),
    ],
)
def test_read_results_malformed(tmp_path: Path, content, message):
    (tmp_path / "nb01.json").write_text(content)
    with pytest.raises(ResultsFileError, match=message) as info:
        read_results("nb01", root=tmp_path)
    assert "nb01.json" in str(info.value)


def test_read_results_invalid_row_and_missing_file(tmp_path: Path):
    record = make_row().to_json()
    record["ci_low"] = 99.0
    payload = {"schema_version": SCHEMA_VERSION, "notebook": "nb01", "rows": [record]}
    (tmp_path / "nb01.json").write_text(json.dumps(payload))
    with pytest.raises(ResultsFileError, match=r"rows\[0\].*ci_low <= value"):
        read_results("nb01", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        read_results("nb99", root=tmp_path)


def test_results_table_formats_value_and_interval():
    rows = [
        make_row(),
        make_row(metric="R@5", value=55.0, ci_low=53.0, ci_high=57.0),
        make_row(
            label="paper", value=23.9, ci_low=None, ci_high=None, n_queries=None, seeds=(), config_hash=""
        ),
    ]
    table = results_table(rows)
    assert list(table["result"]) == ["25.00 [23.50, 26.50]", "55.00 [53.00, 57.00]", "23.90"]
    wide = results_table(rows, pivot=True, decimals=1)
    assert list(wide.columns) == ["R@1", "R@5"]
    assert wide.loc[("cirr", "val", "pic2word", "ours"), "R@5"] == "55.0 [53.0, 57.0]"
    assert wide.loc[("cirr", "val", "pic2word", "paper"), "R@5"] == ""


def test_row_from_per_query_averages_seeds_then_bootstraps():
    rng = np.random.default_rng(5)
    per_query = {0: rng.random(200) < 0.5, 1: rng.random(200) < 0.5}
    row = row_from_per_query(
        notebook="nb01",
        benchmark="circo",
        split="val",
        method="m",
        metric="R@1",
        per_query=per_query,
        config_hash="h",
    )
    expected = 100 * np.mean([per_query[0].mean(), per_query[1].mean()])
    assert row.value == pytest.approx(expected) and row.seeds == (0, 1) and row.n_queries == 200
    assert row.ci_low < row.value < row.ci_high
    with pytest.raises(ValueError, match="different numbers"):
        row_from_per_query(
            notebook="nb01",
            benchmark="b",
            split="s",
            method="m",
            metric="R@1",
            per_query={0: np.ones(3), 1: np.ones(4)},
            config_hash="h",
        )


def test_stratified_bootstrap_of_reweighted_values_stays_in_range():
    """FashionIQ's average is the unweighted mean of category means; per-query hits reweighted by
    N / (C * n_c) have that mean, and resampling within categories keeps every resample in range."""
    import numpy as np

    from cirlib.experiments import bootstrap_ci, paired_bootstrap

    hits = np.array([1.0] * 9 + [0.0] + [1.0] * 2)  # category a: 10 queries, b: 2 queries
    strata = ["a"] * 10 + ["b"] * 2
    weights = np.array([12 / (2 * 10)] * 10 + [12 / (2 * 2)] * 2)
    values = hits * weights * 100
    ci = bootstrap_ci(values, strata=strata)
    assert ci.mean == pytest.approx((90 + 100) / 2)
    assert 0 <= ci.low <= ci.mean <= ci.high <= 100
    d = paired_bootstrap(values, values, strata=strata)
    assert d.diff == 0 and d.p_value == 1
    with pytest.raises(ValueError, match="strata"):
        bootstrap_ci(values, strata=["a"] * 3)


def test_per_query_values_round_trip(tmp_path):
    from types import SimpleNamespace

    from cirlib.experiments import ResultsFileError, read_per_query, write_per_query

    def ev(values, categories=None, qids=("q1", "q2", "q3")):
        return SimpleNamespace(
            benchmark="world-fashioniq",
            split="test",
            qids=list(qids),
            categories=categories,
            per_query={"average/recall@10": np.asarray(values, dtype=float)},
        )

    cats = ["dress", "shirt", "dress"]
    evaluations = {"fashioniq": {"sum": ev([1, 0, 1], cats), "cig (image level)": ev([0, 0, 1], cats)}}
    path = write_per_query(
        "nb", evaluations, {"fashioniq": ["average/recall@10", "missing/metric"]}, root=tmp_path
    )
    assert path.name == "nb.per_query.npz"
    got = read_per_query("nb", root=tmp_path)["world-fashioniq"]
    assert got.qids == ["q1", "q2", "q3"] and got.split == "test" and got.strata("average/recall@10") == cats
    assert got.values["cig (image level)"]["average/recall@10"].tolist() == [0.0, 0.0, 1.0]
    assert set(got.values) == {"sum", "cig (image level)"} and got.strata("recall@1") is None
    with pytest.raises(ValueError, match="other queries"):
        write_per_query("nb", {"fashioniq": {"a": ev([1, 0, 1]), "b": ev([1, 0], qids=("q1", "q2"))}},
                        {"fashioniq": ["average/recall@10"]}, root=tmp_path)  # fmt: skip
    with pytest.raises(ResultsFileError, match="does not exist"):
        read_per_query("other", root=tmp_path)
    path.write_bytes(b"not an npz")
    with pytest.raises(ResultsFileError, match="not a readable"):
        read_per_query("nb", root=tmp_path)


def test_claims_tables_round_trip(tmp_path):
    import pandas as pd

    from cirlib.experiments import read_claims, write_claims

    table = pd.DataFrame(
        {
            "claim": ["1. x", "1. x"],
            "benchmark": ["cirr", "circo"],
            "value": [1.5, -2.0],
            "verdict": ["holds", "does not hold"],
        }
    ).set_index(["claim", "benchmark"])
    path = write_claims("nb", table, root=tmp_path)
    assert path.name == "nb.claims.csv"
    back = read_claims("nb", root=tmp_path)
    assert back["verdict"].tolist() == ["holds", "does not hold"] and back["value"].tolist() == [1.5, -2.0]
    assert read_claims("other", root=tmp_path) is None
    with pytest.raises(ValueError, match="verdict"):
        write_claims("nb", table.drop(columns=["verdict"]), root=tmp_path)


def test_per_query_files_are_byte_identical_for_equal_values(tmp_path):
    from types import SimpleNamespace

    from cirlib.experiments import write_per_query

    ev = SimpleNamespace(benchmark="world-cirr", split="test", qids=["a", "b"], categories=None,
                         per_query={"recall@1": np.array([1.0, 0.0])})  # fmt: skip
    first = write_per_query("nb", {"cirr": {"sum": ev}}, {"cirr": ["recall@1"]}, root=tmp_path).read_bytes()
    import time

    time.sleep(2.1)  # zip stamps have a 2-second resolution
    again = write_per_query("nb", {"cirr": {"sum": ev}}, {"cirr": ["recall@1"]}, root=tmp_path).read_bytes()
    assert first == again
