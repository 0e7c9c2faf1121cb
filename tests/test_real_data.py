"""cirlib.data.real on placeholder copies of the real benchmarks (real annotation files, tiny fake
images from cirlib.data.placeholders): counts from PROTOCOLS.md §1, every layout, every error."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cirlib.config import ANNOTATIONS_DIR
from cirlib.data.annotations import load_circo, load_cirr, load_fashioniq
from cirlib.data.placeholders import make_placeholder_dataset, placeholder_pixels
from cirlib.data.real import (
    REAL_SPLITS,
    DataLayoutError,
    DataNotFoundError,
    MissingImagesError,
    load_real_benchmark,
    resolve_layout,
)

CATS = ("dress", "shirt", "toptee")
INFO = Path("COCO2017_unlabeled") / "annotations" / "image_info_unlabeled2017.json"
COCO_DIR = Path("COCO2017_unlabeled") / "unlabeled2017"


@pytest.fixture(scope="module", autouse=True)
def _bundled(annotations_root):
    if not (ANNOTATIONS_DIR / "cirr").is_dir():
        pytest.skip(f"the placeholders copy the bundled annotations, absent here: {ANNOTATIONS_DIR}")


@pytest.fixture(scope="module")
def cirr_full(tmp_path_factory):
    return make_placeholder_dataset("cirr", tmp_path_factory.mktemp("cirr_full"), ("val", "test"))


@pytest.fixture(scope="module")
def cirr_missing(tmp_path_factory):
    return make_placeholder_dataset(
        "cirr", tmp_path_factory.mktemp("cirr_missing"), ("val", "test"), missing=0.02, seed=3
    )


@pytest.fixture(scope="module")
def fiq_full(tmp_path_factory):
    return make_placeholder_dataset("fashioniq", tmp_path_factory.mktemp("fiq_full"), ("val", "test"))


@pytest.fixture(scope="module")
def circo_full(tmp_path_factory):
    return make_placeholder_dataset(
        "circo", tmp_path_factory.mktemp("circo_full"), ("val", "test"), circo_gallery=300
    )


def _stems(folder: Path) -> set[str]:
    return {p.name.rsplit(".", 1)[0] for p in folder.iterdir()}


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src.resolve(), dst)


# --------------------------------------------------------------------------------------------
# counts and query mapping (PROTOCOLS.md §1)
# --------------------------------------------------------------------------------------------


def test_cirr_counts_and_queries(cirr_full):
    val, rep = load_real_benchmark("cirr", "val", cirr_full)
    test, rep_test = load_real_benchmark("cirr", "test", cirr_full)
    assert rep.ok and rep_test.ok
    assert (len(val.queries), len(val.galleries["all"])) == (4181, 2297)
    assert (len(test.queries), len(test.galleries["all"])) == (4148, 2315)
    assert (val.name, val.form, val.split, val.version) == ("CIRR", "cirr", "val", "rc2")
    assert test.split == "test" and test.meta["layout"]["split"] == "test1"
    q = val.queries[0]
    assert (q.qid, q.reference, q.target, q.texts) == (
        "12060",
        "dev-244-0-img0",
        "dev-1028-1-img1",
        ("show three bottles of soft drink",),
    )
    assert q.ground_truth == () and q.category == "all"
    assert len(q.subset) == 6 and q.reference in q.subset and q.target in q.subset
    assert q.info["target_soft"] == {"dev-1028-1-img1": 1.0}
    assert all(t.target is None and t.info["target_soft"] is None for t in test.queries)
    gallery = val.galleries["all"]
    assert gallery.images is None and len(gallery.paths) == len(gallery.ids)
    i = gallery.index("dev-244-0-img0")
    assert Path(gallery.paths[i]).is_absolute()
    assert Path(gallery.paths[i]) == (cirr_full / "dev" / "dev-244-0-img0.png").resolve()
    assert all(Path(p).is_file() for p in gallery.paths[:50])
    assert val.meta["missing"]["queries_after"] == 4181 and val.meta["circo_text"] is None
    json.dumps(val.meta)


def test_fashioniq_counts_and_queries(fiq_full):
    expected = {
        "val": {"dress": (2017, 3817), "shirt": (2038, 6346), "toptee": (1961, 5373)},
        "test": {"dress": (2024, 3818), "shirt": (2038, 6346), "toptee": (2056, 5374)},
    }
    for split, counts in expected.items():
        bench, rep = load_real_benchmark("fashioniq", split, fiq_full)
        assert rep.ok and bench.categories == list(CATS)
        got = {c: (len(bench.queries_of(c)), len(bench.galleries[c])) for c in CATS}
        assert got == counts
        assert rep.gallery_size == {c: n for c, (_, n) in counts.items()}
    q = bench.queries_of("toptee")[0]
    assert q.qid == "toptee-0" and q.target is None and len(q.texts) == 2
    val, _ = load_real_benchmark("fashioniq", "val", fiq_full)
    first = val.queries_of("dress")[0]
    assert (first.qid, first.reference, first.target) == ("dress-0", "B005X4PL1G", "B0084Y8XIU")
    assert first.texts == ("is shiny and silver with shorter sleeves", "fit and flare")
    # raw captions: empty strings and stray whitespace survive
    assert any("" in q.texts for q in val.queries_of("shirt"))


def test_circo_gallery_from_info_file_and_from_folder(circo_full, tmp_path, caplog):
    n_files = len(os.listdir(circo_full / COCO_DIR))
    info = json.loads((circo_full / INFO).read_text())
    caplog.set_level(logging.INFO, logger="cirlib.data")
    val, rep = load_real_benchmark("circo", "val", circo_full)
    assert rep.ok and len(val.queries) == 220
    assert rep.gallery_size == {"all": len(info["images"])} == {"all": n_files}
    assert val.meta["layout"]["image_layout"] == "coco-info"
    assert "listed by" in caplog.text
    # the same images without the image-info file: the folder is listed and ids parsed
    bare = tmp_path / "circo"
    _link(circo_full / "annotations", bare / "annotations")
    _link(circo_full / COCO_DIR, bare / COCO_DIR)
    caplog.clear()
    test, rep2 = load_real_benchmark("circo", "test", bare)
    assert len(test.queries) == 800 and rep2.gallery_size == {"all": n_files}
    assert test.meta["layout"]["image_layout"] == "coco-listing" and "no image-info file" in caplog.text
    assert set(test.galleries["all"].ids) == {str(e["id"]) for e in info["images"]}
    assert all(q.target is None and q.ground_truth == () for q in test.queries)
    q = val.queries[0]
    assert (q.qid, q.reference, q.target, q.ground_truth) == (
        "0",
        "271520",
        "355099",
        ("355099", "528417", "534704"),
    )
    assert q.texts == ("shows two people and has a more colorful background",)
    assert q.info["shared_concept"] == "a girl with a traditional Chinese umbrella"
    assert q.info["semantic_aspects"][0] == "cardinality"
    concept, _ = load_real_benchmark("circo", "val", circo_full, circo_text="concept")
    assert concept.queries[0].texts == (
        "find a girl with a traditional Chinese umbrella but shows two people and has a more colorful background",
    )
    assert concept.meta["circo_text"] == "concept" and val.meta["circo_text"] == "relative"
    path = val.galleries["all"].paths[val.galleries["all"].index("271520")]
    assert path.endswith(os.path.join("unlabeled2017", "000000271520.jpg"))


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------


def test_cirr_readme_layout_flat_annotations_and_images_option(cirr_full, tmp_path):
    readme = tmp_path / "cirr"
    _link(cirr_full / "cirr" / "captions", readme / "captions")
    _link(cirr_full / "cirr" / "image_splits", readme / "image_splits")
    _link(cirr_full / "dev", readme / "img_raw" / "dev")
    layout = resolve_layout("cirr", "val", readme)
    assert layout.annotations == readme and layout.images == readme / "img_raw"
    assert not layout.annotations_bundled
    bench, rep = load_real_benchmark("cirr", "val", readme)
    assert rep.ok and len(bench.galleries["all"]) == 2297
    # the same folder given through its parent: DIR/cirr/{captions,img_raw}
    parent = resolve_layout("cirr", "val", tmp_path)
    assert (parent.annotations, parent.images) == (tmp_path / "cirr", tmp_path / "cirr" / "img_raw")
    # --images: annotations in one place, images in another
    only_ann = tmp_path / "only_ann"
    _link(cirr_full / "cirr", only_ann / "cirr")
    bench2, _ = load_real_benchmark("cirr", "test1", only_ann, images=cirr_full)
    assert len(bench2.queries) == 4148 and bench2.meta["layout"]["images"] == str(cirr_full)
    with pytest.raises(DataNotFoundError, match="not the folder itself"):
        resolve_layout("cirr", "val", only_ann, images=cirr_full / "dev")


def test_bundled_annotations_are_logged_and_recorded(cirr_full, tmp_path, caplog):
    root = tmp_path / "images_only"
    _link(cirr_full / "dev", root / "dev")
    caplog.set_level(logging.WARNING, logger="cirlib.data")
    bench, rep = load_real_benchmark("cirr", "val", root)
    assert rep.ok and len(bench.queries) == 4181
    assert "bundled annotations" in caplog.text and str(root) in caplog.text
    layout = bench.meta["layout"]
    assert layout["annotations_bundled"] is True
    assert layout["annotations"] == str(ANNOTATIONS_DIR / "cirr")
    cap = ANNOTATIONS_DIR / "cirr" / "captions" / "cap.rc2.val.json"
    assert (
        layout["annotation_files"]["captions/cap.rc2.val.json"]
        == hashlib.sha256(cap.read_bytes()).hexdigest()
    )


def test_fashioniq_start_kit_layout_with_png(tmp_path):
    flat = make_placeholder_dataset("fashioniq", tmp_path / "flat", ("val",), max_images=400)
    kit = tmp_path / "kit"
    for name in ("captions", "image_splits"):
        _link(flat / name, kit / name)
    written = _stems(flat / "images")
    for cat in CATS:
        folder = kit / "resized_images" / cat
        folder.mkdir(parents=True)
        gallery = load_fashioniq(ANNOTATIONS_DIR / "fashioniq", cat, "val").gallery
        for image_id in set(gallery) & written:
            Image.fromarray(placeholder_pixels(image_id, 0, 8)).save(folder / f"{image_id}.png")
    a, rep_a = load_real_benchmark("fashioniq", "val", flat, on_missing="drop")
    b, rep_b = load_real_benchmark("fashioniq", "val", kit, on_missing="drop")
    assert b.meta["layout"]["image_layout"] == "per-category" and a.meta["layout"]["image_layout"] == "flat"
    assert [q.qid for q in a.queries] == [q.qid for q in b.queries] and len(a.queries) >= 100
    for cat in CATS:
        assert a.galleries[cat].ids == b.galleries[cat].ids
    assert b.galleries["dress"].paths[0].endswith(".png")
    assert rep_a.summary() == rep_b.summary()


# --------------------------------------------------------------------------------------------
# layout errors
# --------------------------------------------------------------------------------------------


def test_missing_root(tmp_path):
    given = str(tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError) as err:
        resolve_layout("cirr", "val", given)
    text = str(err.value)
    assert given in text and "does not exist" in text
    assert f"{given}/cirr/captions/cap.rc2.val.json" in text and f"{given}/img_raw/dev" in text
    assert isinstance(err.value, FileNotFoundError)


def test_missing_annotation_file(cirr_full, tmp_path):
    root = tmp_path / "half"
    (root / "cirr" / "captions").mkdir(parents=True)
    shutil.copy(cirr_full / "cirr" / "captions" / "cap.rc2.val.json", root / "cirr" / "captions")
    _link(cirr_full / "dev", root / "dev")
    with pytest.raises(DataNotFoundError, match="image_splits/split.rc2.val.json"):
        resolve_layout("cirr", "val", root)
    circo = tmp_path / "circo"
    (circo / "annotations").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=r"annotations/test\.json"):
        resolve_layout("circo", "test", circo)


def test_missing_image_folder(cirr_full, fiq_full, circo_full, tmp_path):
    root = tmp_path / "no_images"
    _link(cirr_full / "cirr", root / "cirr")
    with pytest.raises(DataNotFoundError) as err:
        resolve_layout("cirr", "test", root)
    assert f"{root}/test1" in str(err.value) and f"{root}/img_raw/test1" in str(err.value)
    assert "test1-*.png" in str(err.value)
    fiq = tmp_path / "fiq"
    _link(fiq_full / "captions", fiq / "captions")
    _link(fiq_full / "image_splits", fiq / "image_splits")
    with pytest.raises(DataNotFoundError) as err:
        resolve_layout("fashioniq", "val", fiq)
    assert f"{fiq}/images" in str(err.value) and f"{fiq}/resized_images" in str(err.value)
    (fiq / "resized_images" / "dress").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="resized_images/shirt"):
        resolve_layout("fashioniq", "val", fiq)
    circo = tmp_path / "circo"
    _link(circo_full / "annotations", circo / "annotations")
    with pytest.raises(DataNotFoundError, match="unlabeled2017 does not exist"):
        resolve_layout("circo", "val", circo)
    with pytest.raises(DataNotFoundError, match="elsewhere does not exist"):
        resolve_layout("circo", "val", circo, images=tmp_path / "elsewhere")


def test_unparseable_circo_file_name(circo_full, tmp_path):
    root = tmp_path / "circo"
    _link(circo_full / "annotations", root / "annotations")
    folder = root / COCO_DIR
    folder.mkdir(parents=True)
    for name in os.listdir(circo_full / COCO_DIR)[:20]:
        os.symlink(circo_full / COCO_DIR / name, folder / name)
    (folder / ".DS_Store").write_text("")  # dot-files are ignored
    (folder / "IMG_0001.jpg").write_text("")
    with pytest.raises(DataLayoutError, match="IMG_0001.jpg: not a COCO image name"):
        load_real_benchmark("circo", "val", root, on_missing="drop")


def test_bad_names():
    with pytest.raises(ValueError, match="unknown benchmark"):
        resolve_layout("cirrr", "val", ".")
    with pytest.raises(ValueError, match="test1"):
        resolve_layout("cirr", "train", ".")
    with pytest.raises(ValueError, match="on_missing"):
        load_real_benchmark("cirr", "val", ".", on_missing="skip")
    with pytest.raises(ValueError, match="circo_text"):
        load_real_benchmark("circo", "val", ".", circo_text="both")
    assert REAL_SPLITS["cirr"]["test"] == "test1"


# --------------------------------------------------------------------------------------------
# missing images
# --------------------------------------------------------------------------------------------


def _cirr_expected(root: Path, split: str):
    present = _stems(root / ("dev" if split == "val" else split))
    data = load_cirr(ANNOTATIONS_DIR / "cirr", split)
    gone = [i for i in data.images if i not in present]
    refs = [str(q.pairid) for q in data.queries if q.reference not in present]
    bad = [
        str(q.pairid)
        for q in data.queries
        if any(i not in present for i in (q.reference, q.target_hard, *q.members) if i is not None)
    ]
    return present, gone, refs, bad


def test_missing_images_error_lists_counts_and_paths(cirr_missing, tmp_path):
    present, gone, refs, bad = _cirr_expected(cirr_missing, "val")
    assert gone and refs
    report_path = tmp_path / "report.json"
    with pytest.raises(MissingImagesError) as err:
        load_real_benchmark("cirr", "val", cirr_missing, report_path=report_path)
    text, report = str(err.value), err.value.report
    assert f"gallery all: {len(gone):,} of 2,297 images missing" in text
    assert f"references: {len(refs):,} of 4,181 queries" in text
    assert str((cirr_missing / "dev" / f"{gone[0]}.png").resolve()) in text
    assert f"query {refs[0]}: reference" in text
    assert str(report_path) in text and 'on_missing="drop"' in text
    full = json.loads(report_path.read_text())
    assert full["missing_gallery"]["all"] == gone and full["missing_references"] == refs
    assert full["summary"] == report.summary() and full["ok"] is False
    assert report.summary()["missing_references"] == len(refs) and not report.dropped_queries


def test_missing_images_drop_val(cirr_missing):
    present, gone, refs, bad = _cirr_expected(cirr_missing, "val")
    bench, report = load_real_benchmark("cirr", "val", cirr_missing, on_missing="drop")
    assert report.dropped_queries == bad
    assert len(bench.queries) == 4181 - len(bad) == report.queries_after
    assert not {q.qid for q in bench.queries} & set(bad)
    assert set(bench.galleries["all"].ids) == present and len(bench.galleries["all"]) == 2297 - len(gone)
    assert all(set(q.subset) <= present and q.target in present for q in bench.queries)
    assert bench.meta["missing"] == report.summary()
    assert report.summary()["dropped_queries"] == len(bad) and not report.ok
    json.dumps(report.summary())


def test_missing_reference_on_test_raises_even_with_drop(cirr_missing):
    present, gone, refs, _ = _cirr_expected(cirr_missing, "test1")
    assert refs
    with pytest.raises(MissingImagesError, match="cannot drop queries") as err:
        load_real_benchmark("cirr", "test", cirr_missing, on_missing="drop")
    assert err.value.report.missing_references == refs


def test_test_split_drop_keeps_every_query(cirr_full, tmp_path):
    """Only images that are never a reference are missing: every test query stays, the gallery
    shrinks, and the subsets lose the missing members."""
    data = load_cirr(ANNOTATIONS_DIR / "cirr", "test1")
    refs = {q.reference for q in data.queries}
    absent = [i for i in data.images if i not in refs][:5]
    root = tmp_path / "cirr"
    _link(cirr_full / "cirr", root / "cirr")
    (root / "test1").mkdir()
    for name in data.images:
        if name not in absent:
            os.symlink(cirr_full / "test1" / f"{name}.png", root / "test1" / f"{name}.png")
    bench, report = load_real_benchmark("cirr", "test", root, on_missing="drop")
    assert len(bench.queries) == 4148 and not report.dropped_queries
    assert report.missing_gallery["all"] == absent and len(bench.galleries["all"]) == 2315 - 5
    trimmed = [q for q in bench.queries if len(q.subset) < 6]
    assert trimmed and {q.qid for q in trimmed} == set(report.missing_subset)
    assert all(not set(q.subset) & set(absent) for q in bench.queries)


def test_circo_drop_keeps_unreachable_ground_truths(tmp_path):
    root = make_placeholder_dataset("circo", tmp_path / "circo", ("val",), missing=0.1, seed=1)
    present = {str(int(s)) for s in _stems(root / COCO_DIR)}
    data = load_circo(ANNOTATIONS_DIR / "circo", "val")
    with pytest.raises(MissingImagesError):
        load_real_benchmark("circo", "val", root)
    bench, report = load_real_benchmark("circo", "val", root, on_missing="drop")
    dropped = [
        str(q.id)
        for q in data.queries
        if str(q.reference_img_id) not in present or str(q.target_img_id) not in present
    ]
    assert report.dropped_queries == dropped and len(bench.queries) == 220 - len(dropped)
    kept_with_gap = [q for q in bench.queries if any(g not in present for g in q.ground_truth)]
    assert kept_with_gap, "some kept query should have an unreachable ground truth"
    for q in kept_with_gap:
        original = data.queries[int(q.qid)]
        assert q.ground_truth == tuple(str(g) for g in original.gt_img_ids)
        assert q.target in present
    assert set(bench.galleries["all"].ids) == present
    assert report.gallery_size["all"] == len(json.loads((root / INFO).read_text())["images"])


def test_circo_test_with_missing_distractors_only(tmp_path):
    """max_images covering exactly the annotated images: the distractors are gallery-only losses."""
    data = load_circo(ANNOTATIONS_DIR / "circo", "test")
    annotated = len({q.reference_img_id for q in data.queries})
    root = make_placeholder_dataset(
        "circo", tmp_path / "c", ("test",), circo_gallery=40, max_images=annotated
    )
    bench, report = load_real_benchmark("circo", "test", root, on_missing="drop")
    assert len(bench.queries) == 800 and not report.dropped_queries
    assert report.gallery_size["all"] == annotated + 40
    assert len(report.missing_gallery["all"]) == 40 and len(bench.galleries["all"]) == annotated


def test_fashioniq_missing_message_and_drop(tmp_path):
    root = make_placeholder_dataset("fashioniq", tmp_path / "fiq", ("val",), max_images=300)
    with pytest.raises(MissingImagesError) as err:
        load_real_benchmark("fashioniq", "val", root)
    text = str(err.value)
    assert "gallery dress:" in text and "of 3,817 images missing" in text and ".png" in text
    assert str((root / "images").resolve()) in text
    bench, report = load_real_benchmark("fashioniq", "val", root, on_missing="drop")
    present = _stems(root / "images")
    assert bench.queries and all(q.reference in present and q.target in present for q in bench.queries)
    assert report.queries_after == len(bench.queries) == 6016 - len(report.dropped_queries)
    # the first queries of each category had their images written first
    assert {f"{c}-0" for c in CATS} <= {q.qid for q in bench.queries}


# --------------------------------------------------------------------------------------------
# placeholders and import weight
# --------------------------------------------------------------------------------------------


def test_placeholder_images_are_deterministic_and_distinct(tmp_path):
    a = placeholder_pixels("dev-1-0-img0", seed=0, size=16)
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, placeholder_pixels("dev-1-0-img0", seed=0, size=16))
    assert not np.array_equal(a, placeholder_pixels("dev-1-0-img1", seed=0, size=16))
    assert not np.array_equal(a, placeholder_pixels("dev-1-0-img0", seed=1, size=16))
    root = make_placeholder_dataset("cirr", tmp_path / "c", ("val",), max_images=40, missing=0.25, seed=5)
    files = sorted((root / "dev").iterdir())
    assert len(files) == 30
    img = np.asarray(Image.open(files[0]))
    assert np.array_equal(img, placeholder_pixels(files[0].stem, seed=5, size=16))


def test_real_module_does_not_import_heavy_modules():
    code = (
        "import sys, cirlib.data.real as r; "
        "heavy = [m for m in ('torch', 'open_clip', 'PIL', 'torchvision', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
