"""`cirlib score`: one JSON object on stdout, exit status 2 and one stderr line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cirlib.cli import COMMANDS, main
from cirlib.config import REPO_ROOT
from cirlib.data.annotations import load_circo, load_cirr, load_fashioniq_all

CATEGORIES = ("dress", "shirt", "toptee")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_json_object(stdout: str) -> dict:
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout
    result = json.loads(stdout)
    assert isinstance(result, dict)
    assert all(isinstance(v, float) for v in result.values())
    return result


@pytest.fixture(scope="module")
def cirr_files(annotations_root, tmp_path_factory) -> tuple[Path, Path]:
    split = load_cirr(annotations_root / "cirr", "val")
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for i, q in enumerate(split.queries):
        others = [g for g in split.gallery[:60] if g not in (q.reference, q.target_hard)]
        # every second query: target at rank 2 (so R@1 = 50 %, R@5 = 100 %)
        recall[str(q.pairid)] = (
            ([q.target_hard] + others[:49]) if i % 2 else (others[:1] + [q.target_hard] + others[1:49])
        )
        cands = [m for m in q.subset if m != q.target_hard]
        subset[str(q.pairid)] = [q.target_hard] + cands[:2] if i % 2 else cands[:2] + [q.target_hard]
    folder = tmp_path_factory.mktemp("cirr_pred")
    (folder / "recall.json").write_text(json.dumps(recall))
    (folder / "subset.json").write_text(json.dumps(subset))
    return folder / "recall.json", folder / "subset.json"


def test_score_is_registered():
    assert "score" in COMMANDS


def test_cirr(capsys, annotations_root, cirr_files):
    code, out, err = run(
        capsys,
        "score",
        "--benchmark",
        "cirr",
        "--annotations",
        str(annotations_root / "cirr"),
        str(cirr_files[0]),
    )
    assert code == 0
    result = one_json_object(out)
    assert list(result) == ["recall@1", "recall@5", "recall@10", "recall@50"]
    assert result["recall@1"] == pytest.approx(100 * 2090 / 4181)  # odd positions of 4,181 queries
    assert result["recall@5"] == 100.0


def test_cirr_subset_and_soft(capsys, annotations_root, cirr_files):
    code, out, _ = run(
        capsys,
        "score",
        "--benchmark",
        "cirr",
        "--annotations",
        str(annotations_root / "cirr"),
        str(cirr_files[0]),
        "--subset-predictions",
        str(cirr_files[1]),
        "--soft",
    )
    assert code == 0
    result = one_json_object(out)
    hard = [
        "recall@1",
        "recall@5",
        "recall@10",
        "recall@50",
        "recall_subset@1",
        "recall_subset@2",
        "recall_subset@3",
    ]
    assert list(result) == hard + [f"soft/{k}" for k in hard]
    assert result["recall_subset@1"] == result["recall@1"]
    assert result["recall_subset@3"] == 100.0
    assert 0 < result["soft/recall@5"] < 100.0


def test_circo_example_submission(capsys, annotations_root):
    circo = annotations_root / "circo"
    code, out, _ = run(
        capsys,
        "score",
        "--benchmark",
        "circo",
        "--annotations",
        str(circo),
        str(circo / "submission_examples" / "submission_val.json"),
    )
    assert code == 0
    result = one_json_object(out)
    assert [k for k in result if "semantic" not in k] == [f"map@{k}" for k in (5, 10, 25, 50)] + [
        f"recall@{k}" for k in (5, 10, 25, 50)
    ]
    assert round(result["map@5"], 2) == 0.49
    assert any(k.startswith("semantic_map@10/") for k in result)


def test_fashioniq_perfect(capsys, annotations_root, tmp_path):
    splits = load_fashioniq_all(annotations_root / "fashioniq", "val")
    pred = tmp_path / "fiq.json"
    pred.write_text(json.dumps({c: [[q.target] for q in splits[c].queries] for c in CATEGORIES}))
    code, out, _ = run(
        capsys,
        "score",
        "--benchmark",
        "fashioniq",
        "--annotations",
        str(annotations_root / "fashioniq"),
        str(pred),
    )
    assert code == 0
    result = one_json_object(out)
    assert set(result) == {f"{c}/recall@{k}" for c in (*CATEGORIES, "average") for k in (10, 50)}
    assert set(result.values()) == {100.0}


def _assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("cirlib score: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_prediction_file(capsys, annotations_root, tmp_path):
    missing = tmp_path / "nope.json"
    result = run(
        capsys,
        "score",
        "--benchmark",
        "circo",
        "--annotations",
        str(annotations_root / "circo"),
        str(missing),
    )
    _assert_one_line_error(*result, str(missing), "prediction file not found")


def test_invalid_prediction_file(capsys, annotations_root, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"0": [1, 2,]}')
    result = run(
        capsys, "score", "--benchmark", "circo", "--annotations", str(annotations_root / "circo"), str(bad)
    )
    _assert_one_line_error(*result, str(bad), "invalid JSON")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({str(i): [1, 1] for i in range(220)}))
    result = run(
        capsys, "score", "--benchmark", "circo", "--annotations", str(annotations_root / "circo"), str(wrong)
    )
    _assert_one_line_error(*result, str(wrong), "query 0: duplicate id 1")


def test_invalid_subset_file(capsys, annotations_root, cirr_files, tmp_path):
    subset = json.loads(cirr_files[1].read_text())
    subset["metric"] = "recall"
    path = tmp_path / "subset.json"
    path.write_text(json.dumps(subset))
    result = run(
        capsys,
        "score",
        "--benchmark",
        "cirr",
        "--annotations",
        str(annotations_root / "cirr"),
        str(cirr_files[0]),
        "--subset-predictions",
        str(path),
    )
    _assert_one_line_error(*result, str(path), '"metric" is \'recall\', expected "recall_subset"')


def test_missing_and_wrong_annotations(capsys, annotations_root, tmp_path, cirr_files):
    result = run(
        capsys, "score", "--benchmark", "cirr", "--annotations", str(tmp_path / "none"), str(cirr_files[0])
    )
    _assert_one_line_error(*result, str(tmp_path / "none"), "annotations folder not found")
    # a folder of another dataset: the expected file is named
    result = run(
        capsys,
        "score",
        "--benchmark",
        "cirr",
        "--annotations",
        str(annotations_root / "circo"),
        str(cirr_files[0]),
    )
    _assert_one_line_error(*result, "split.rc2.val.json", "annotation file not found")


def test_cirr_only_options(capsys, annotations_root, cirr_files):
    circo = str(annotations_root / "circo")
    result = run(
        capsys, "score", "--benchmark", "circo", "--annotations", circo, str(cirr_files[0]), "--soft"
    )
    _assert_one_line_error(*result, "--soft is only for --benchmark cirr")
    result = run(
        capsys,
        "score",
        "--benchmark",
        "circo",
        "--annotations",
        circo,
        str(cirr_files[0]),
        "--subset-predictions",
        str(cirr_files[1]),
    )
    _assert_one_line_error(*result, "--subset-predictions is only for --benchmark cirr")


def test_usage_errors_exit_2(capsys):
    code, out, err = run(capsys, "score", "--annotations", "x", "pred.json")
    assert code == 2 and out == "" and "--benchmark" in err
    code, out, err = run(capsys, "score", "--benchmark", "coco", "--annotations", "x", "pred.json")
    assert code == 2 and "invalid choice" in err
    code, out, err = run(capsys)
    assert code == 2 and "COMMAND" in err


def test_python_dash_m(annotations_root, tmp_path):
    circo = annotations_root / "circo"
    split = load_circo(circo, "val")
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps({str(q.id): list(q.gt_img_ids) for q in split.queries}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cirlib",
            "score",
            "--benchmark",
            "circo",
            "--annotations",
            str(circo),
            str(pred),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(one_json_object(proc.stdout).values()) == {100.0}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cirlib",
            "score",
            "--benchmark",
            "circo",
            "--annotations",
            str(circo),
            str(tmp_path / "x.json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"cirlib score: error: {tmp_path / 'x.json'}: prediction file not found"
    ]
