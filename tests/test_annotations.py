"""cirlib.data.annotations on the real files (counts from PROTOCOLS.md §1) and on broken copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cirlib.data.annotations import (
    AnnotationError,
    AnnotationFileNotFoundError,
    load_circo,
    load_cirr,
    load_fashioniq,
    load_fashioniq_all,
)


def test_cirr_counts_and_fields(annotations_root):
    val = load_cirr(annotations_root / "cirr", "val")
    test1 = load_cirr(annotations_root / "cirr", "test1")
    assert (len(val.queries), len(val.gallery)) == (4181, 2297)
    assert (len(test1.queries), len(test1.gallery)) == (4148, 2315)
    first = val.queries[0]
    assert first.pairid == 12060 and first.target_hard == "dev-1028-1-img1"
    assert first.subset == (
        "dev-430-3-img0",
        "dev-63-0-img1",
        "dev-1028-1-img1",
        "dev-1028-2-img1",
        "dev-1028-2-img0",
    )
    assert all(len(q.subset) == 5 for q in val.queries + test1.queries)
    assert all(q.target_hard is None and q.target_soft is None for q in test1.queries)
    assert val.images["dev-244-0-img0"] == "./dev/dev-244-0-img0.png"


def test_circo_counts_and_fields(annotations_root):
    val = load_circo(annotations_root / "circo", "val")
    test = load_circo(annotations_root / "circo", "test")
    assert len(val.queries) == 220 and len(test.queries) == 800
    assert val.queries[0].gt_img_ids == (355099, 528417, 534704)
    assert all(q.target_img_id == q.gt_img_ids[0] for q in val.queries)
    assert all(q.gt_img_ids is None for q in test.queries)


def test_fashioniq_counts(annotations_root):
    val = load_fashioniq_all(annotations_root / "fashioniq", "val")
    assert {c: (len(s.queries), len(s.gallery)) for c, s in val.items()} == {
        "dress": (2017, 3817),
        "shirt": (2038, 6346),
        "toptee": (1961, 5373),
    }
    test = load_fashioniq(annotations_root / "fashioniq", "toptee", "test")
    assert len(test.queries) == 2056 and test.queries[0].target is None


def test_bad_split_names():
    with pytest.raises(ValueError, match="called 'test1'"):
        load_cirr("/nonexistent", "test")
    with pytest.raises(ValueError, match="unknown FashionIQ category 'shoes'"):
        load_fashioniq("/nonexistent", "shoes", "val")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(
        AnnotationFileNotFoundError, match=r"split\.rc2\.val\.json: annotation file not found"
    ):
        load_cirr(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match=r"annotations/val\.json"):
        load_circo(tmp_path, "val")


@pytest.fixture
def circo_copy(tmp_path, annotations_root) -> Path:
    (tmp_path / "annotations").mkdir()
    return tmp_path


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def _circo_records(annotations_root):
    return json.loads((annotations_root / "circo" / "annotations" / "val.json").read_text())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: "[{", "invalid JSON"),
        (lambda r: {"a": 1}, "expected a JSON list of records, got dict"),
        (lambda r: r[:1] + [5], "record 1: expected a JSON object, got int"),
        (lambda r: [r[1]], "record 0: id 1 differs from its list position 0"),
        (
            lambda r: [{k: v for k, v in r[0].items() if k != "gt_img_ids"}],
            "record 0: missing field 'gt_img_ids'",
        ),
        (lambda r: [{**r[0], "target_img_id": "355099"}], "field 'target_img_id' must be int, got str"),
        (lambda r: [{**r[0], "target_img_id": 528417}], "target_img_id 528417 is not gt_img_ids[0]"),
        (lambda r: [{**r[0], "gt_img_ids": [355099, 355099]}], "gt_img_ids contains duplicates"),
    ],
)
def test_malformed_circo(circo_copy, annotations_root, mutate, message):
    path = circo_copy / "annotations" / "val.json"
    _write(path, mutate(_circo_records(annotations_root)))
    with pytest.raises(AnnotationError) as err:
        load_circo(circo_copy, "val")
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_malformed_cirr_and_fashioniq(tmp_path, annotations_root):
    cirr = tmp_path / "cirr"
    shutil.copytree(annotations_root / "cirr" / "image_splits", cirr / "image_splits")
    records = json.loads((annotations_root / "cirr" / "captions" / "cap.rc2.val.json").read_text())[:3]
    records[2]["target_hard"] = "dev-nope"
    _write(cirr / "captions" / "cap.rc2.val.json", records)
    with pytest.raises(
        AnnotationError, match=r"record 2: target_hard 'dev-nope' \(pairid \d+\) is not an image of"
    ):
        load_cirr(cirr, "val")
    records[2] = {**records[0]}
    _write(cirr / "captions" / "cap.rc2.val.json", records)
    with pytest.raises(AnnotationError, match="record 2: pairid 12060 occurs twice"):
        load_cirr(cirr, "val")

    fiq = tmp_path / "fashioniq"
    shutil.copytree(annotations_root / "fashioniq" / "image_splits", fiq / "image_splits")
    triplets = json.loads((annotations_root / "fashioniq" / "captions" / "cap.dress.val.json").read_text())[
        :2
    ]
    triplets[1]["captions"] = ["only one"]
    _write(fiq / "captions" / "cap.dress.val.json", triplets)
    with pytest.raises(AnnotationError, match="record 1: expected exactly 2 captions, got 1"):
        load_fashioniq(fiq, "dress", "val")
    triplets[1] = {**triplets[0], "target": "B0NOTREAL"}
    _write(fiq / "captions" / "cap.dress.val.json", triplets)
    with pytest.raises(AnnotationError, match="record 1: target 'B0NOTREAL' is not an image of"):
        load_fashioniq(fiq, "dress", "val")
