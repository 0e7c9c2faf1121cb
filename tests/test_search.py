"""cirlib.search and ``cirlib search``: index a folder of image files, run composed queries on it.

The folder holds 30 world images written as PNG files; the tiny profile's committed checkpoints
encode them (through :func:`cirlib.search.for_image_files`) into a module-wide temporary cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_components import random_backbone

from cirlib.cli import main
from cirlib.config import REPO_ROOT
from cirlib.data.types import Gallery, Query
from cirlib.methods import build_method
from cirlib.retrieval import EmbeddingCache
from cirlib.search import (
    SearchError,
    check_reference,
    folder_gallery,
    for_image_files,
    index_folder,
    list_images,
    search,
)
from cirlib.world import load_world_benchmark

N_IMAGES = 30


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("cache")
        mp.setenv("CIRLIB_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def world():
    """The world's CIRR val: its first query and the first 30 gallery images (reference and target
    among them)."""
    bench = load_world_benchmark("cirr", "val", n_queries=24)
    gallery = bench.galleries["all"]
    query = bench.queries[0]
    ids = gallery.ids[:N_IMAGES]
    assert query.reference in ids and query.target in ids
    return query, Gallery(ids=ids, images=gallery.pixels(ids))


def _file_name(i: int, image_id: str) -> str:
    """Ten images in a subfolder, one with an upper-case extension."""
    if i >= 20:
        return f"sub/{image_id}.png"
    return f"{image_id}.PNG" if i == 7 else f"{image_id}.png"


@pytest.fixture(scope="module")
def folder(world, tmp_path_factory) -> Path:
    """The 30 images as PNG files, plus files that must not be indexed."""
    _, gallery = world
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i, (image_id, pixels) in enumerate(zip(gallery.ids, gallery.images, strict=True)):
        Image.fromarray(pixels).save(root / _file_name(i, image_id))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"hidden files are skipped")  # would fail to decode
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "x.png").write_bytes(b"hidden folders are skipped")
    return root


@pytest.fixture(scope="module")
def method():
    return for_image_files(build_method("sum", "tiny"))


@pytest.fixture(scope="module")
def indexed(folder, method) -> Gallery:
    return index_folder(folder, method)


def _file_id(world, image_id: str) -> str:
    return _file_name(world[1].ids.index(image_id), image_id)


def _one_line_naming(message: str, path: Path | str) -> None:
    assert "\n" not in message and str(path) in message, message


# ---------------------------------------------------------------------------------------- indexing
def test_folder_gallery_lists_images_recursively_sorted_with_relative_ids(folder, world):
    gallery = folder_gallery(folder)
    assert len(gallery) == N_IMAGES and gallery.ids == sorted(gallery.ids)
    assert set(gallery.ids) == {_file_name(i, g) for i, g in enumerate(world[1].ids)}
    assert any(i.startswith("sub/") for i in gallery.ids) and any(i.endswith(".PNG") for i in gallery.ids)
    assert all(p == str(folder / i) for i, p in zip(gallery.ids, gallery.paths, strict=True))
    assert list_images(folder) == gallery.ids


def test_the_tiny_clip_reads_files_through_a_twin_with_the_same_features(indexed, method, world):
    """64 px files encode exactly as the tiny profile's in-memory arrays (the twin shares the network)."""
    tiny = build_method("sum", "tiny")
    assert tiny.clip.preprocess == "tensor" and method.clip.preprocess == "pil"
    assert method.clip.model is tiny.clip.model and method.clip.hash != tiny.clip.hash
    assert for_image_files(method) is method  # already reads files
    from_files = method.gallery_features(indexed).numpy()
    in_memory = tiny.gallery_features(world[1]).numpy()
    rows = [world[1].ids.index(i.split("/")[-1].rsplit(".", 1)[0]) for i in indexed.ids]
    np.testing.assert_allclose(from_files, in_memory[rows], atol=1e-6)


def test_a_method_that_cannot_read_files_is_refused(folder):
    with pytest.raises(SearchError, match="for_image_files"):
        index_folder(folder, build_method("sum", "tiny"))


# ---------------------------------------------------------------------------------------- search
def test_inside_reference_is_excluded_and_scores_are_method_score(indexed, method, world, folder):
    query, _ = world
    ref_id = _file_id(world, query.reference)
    hits = search(method, indexed, folder / ref_id, list(query.texts), k=100)
    assert len(hits) == N_IMAGES - 1 and ref_id not in {h.id for h in hits}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    expected = method.score([Query("q", ref_id, query.texts, None)], indexed)[0]
    for h in hits:
        assert h.path == str(folder / h.id)
        assert h.score == pytest.approx(float(expected[indexed.index(h.id)]), abs=1e-6)
    top3 = search(method, indexed, folder / ref_id, list(query.texts), k=3)
    assert top3 == hits[:3]
    assert _file_id(world, query.target) in {h.id for h in hits[:5]}  # the labelled target ranks high


def test_scores_equal_the_tiny_profile_on_the_in_memory_gallery(indexed, method, world, folder):
    query, gallery = world
    hits = search(method, indexed, folder / _file_id(world, query.reference), list(query.texts), k=100)
    expected = build_method("sum", "tiny").score([query], gallery)[0]
    for h in hits:
        world_id = h.id.split("/")[-1].rsplit(".", 1)[0]
        assert h.score == pytest.approx(float(expected[gallery.ids.index(world_id)]), abs=1e-5)


def test_a_second_run_reads_the_cache(folder, tmp_path, world):
    query, _ = world
    ref = folder / _file_id(world, query.reference)
    first = for_image_files(build_method("sum", "tiny"))
    first.cache = EmbeddingCache(tmp_path / "emb")
    gallery = index_folder(folder, first)
    assert (first.cache.misses, first.cache.hits) == (1, 0)  # one shard encoded
    hits = search(first, gallery, ref, list(query.texts), k=5)
    second = for_image_files(build_method("sum", "tiny"))
    second.cache = EmbeddingCache(tmp_path / "emb")
    again = index_folder(folder, second)
    assert (second.cache.misses, second.cache.hits) == (0, 1)  # nothing re-encoded
    assert search(second, again, ref, list(query.texts), k=5) == hits
    assert second.cache.misses == 0


def test_adding_an_image_encodes_only_the_shard_it_changes(folder, tmp_path, world):
    copy = tmp_path / "photos"
    shutil.copytree(folder, copy)
    method = for_image_files(build_method("sum", "tiny"))
    method.cache, method.shard_size = EmbeddingCache(tmp_path / "emb"), 8
    index_folder(copy, method)
    assert method.cache.misses == 4  # 30 images in shards of 8
    Image.fromarray(world[1].images[0]).save(copy / "zzz-new.png")  # sorts last
    gallery = index_folder(copy, method)
    assert (method.cache.misses, method.cache.hits) == (5, 3) and len(gallery) == N_IMAGES + 1


def test_an_outside_reference_is_encoded_on_its_own_and_nothing_is_excluded(
    indexed, method, world, folder, tmp_path
):
    query, _ = world
    ref_id = _file_id(world, query.reference)
    outside = tmp_path / "elsewhere" / "my reference.png"
    outside.parent.mkdir()
    shutil.copy(folder / ref_id, outside)
    hits = search(method, indexed, outside, list(query.texts), k=100)
    inside = {h.id: h.score for h in search(method, indexed, folder / ref_id, list(query.texts), k=100)}
    assert len(hits) == N_IMAGES and ref_id in {h.id for h in hits}
    for h in hits:  # the same pixels: the same query embedding, the same scores
        if h.id != ref_id:
            assert h.score == pytest.approx(inside[h.id], abs=1e-6)
    image_only = for_image_files(build_method("image", "tiny"))
    best = search(image_only, index_folder(folder, image_only), outside, ["ignored"], k=1)[0]
    assert best.id == ref_id and best.score == pytest.approx(1.0, abs=1e-5)  # its twin in the folder


def test_files_of_any_size_and_format(world, tmp_path, method):
    """Resized to the tiny CLIP's 64 px (short side, centre crop): a 2x upscale stays close."""
    _, gallery = world
    root = tmp_path / "mixed"
    root.mkdir()
    big = Image.fromarray(gallery.images[3]).resize((128, 128), Image.NEAREST)
    big.save(root / "a-big.png")
    Image.fromarray(gallery.images[4]).resize((150, 100)).save(root / "b-wide.jpg", quality=95)
    Image.fromarray(gallery.images[5]).resize((90, 120)).save(root / "c-tall.webp")
    Image.fromarray(gallery.images[6]).save(root / "d.bmp")
    Image.fromarray(gallery.images[3]).convert("L").save(root / "e-grey.jpeg")
    mixed = index_folder(root, method)
    assert mixed.ids == ["a-big.png", "b-wide.jpg", "c-tall.webp", "d.bmp", "e-grey.jpeg"]
    own = method.gallery_features(mixed)
    original = build_method("sum", "tiny").gallery_features(Gallery(ids=["x"], images=gallery.images[3:4]))
    assert float(own[0] @ original[0]) > 0.95
    hits = search(method, mixed, root / "b-wide.jpg", ["add a red circle"], k=10)
    assert len(hits) == 4 and "b-wide.jpg" not in {h.id for h in hits}


@pytest.mark.parametrize("name", ["image", "text", "pic2word", "searle", "predicir", "supervised"])
def test_every_tiny_method_searches_files(name, folder, world):
    query, _ = world
    method = for_image_files(build_method(name, "tiny"))
    gallery = index_folder(folder, method)
    ref_id = _file_id(world, query.reference)
    hits = search(method, gallery, folder / ref_id, list(query.texts), k=5)
    expected = method.score([Query("q", ref_id, query.texts, None)], gallery)[0]
    assert len(hits) == 5 and ref_id not in {h.id for h in hits}
    assert [h.score for h in hits] == pytest.approx(
        sorted(np.delete(expected, gallery.index(ref_id)))[::-1][:5]
    )


# ---------------------------------------------------------------------------------------- errors
def test_errors_name_the_file_on_one_line(folder, tmp_path, method, indexed):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(SearchError, match="no image files") as err:
        index_folder(empty, method)
    _one_line_naming(str(err.value), empty)
    with pytest.raises(SearchError, match="not found") as err:
        index_folder(tmp_path / "nope", method)
    _one_line_naming(str(err.value), tmp_path / "nope")
    with pytest.raises(SearchError, match="reference image not found") as err:
        search(method, indexed, tmp_path / "missing.png", ["x"])
    _one_line_naming(str(err.value), tmp_path / "missing.png")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG but not really")
    with pytest.raises(SearchError, match="cannot read this reference image") as err:
        check_reference(garbage)
    _one_line_naming(str(err.value), garbage)
    with pytest.raises(SearchError, match="text"):
        search(method, indexed, folder / indexed.ids[0], [])


def test_an_unreadable_image_in_the_folder_is_named(folder, tmp_path, method):
    broken = tmp_path / "photos"
    shutil.copytree(folder, broken)
    (broken / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(SearchError, match="cannot read this image") as err:
        index_folder(broken, method)
    _one_line_naming(str(err.value), broken / "sub" / "broken.jpg")
    assert "remove this file" in str(err.value)


# ---------------------------------------------------------------------------------------- CLI
def test_cli_prints_a_table_and_writes_json(folder, world, capsys, tmp_path, indexed, method):
    query, _ = world
    ref = folder / _file_id(world, query.reference)
    args = ["search", "--images", str(folder), "--reference", str(ref), "--text", query.texts[0], "-k", "4"]
    assert main([*args, "--workers", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = search(method, indexed, ref, list(query.texts), k=4)
    assert lines[0].split() == ["rank", "score", "path"] and len(lines) == 5
    for rank, (line, hit) in enumerate(zip(lines[1:], expected, strict=True), 1):
        r, score, path = line.split(maxsplit=2)
        assert (int(r), path) == (rank, hit.path) and float(score) == pytest.approx(hit.score, abs=1e-4)
    out = tmp_path / "out" / "results.json"
    assert main([*args, "--workers", "0", "--json", str(out)]) == 0
    assert capsys.readouterr().out == ""
    record = json.loads(out.read_text())
    assert record["reference_in_folder"] == ref.name and record["n_images"] == N_IMAGES
    assert [(r["rank"], r["id"], r["path"]) for r in record["results"]] == [
        (i, h.id, h.path) for i, h in enumerate(expected, 1)
    ]
    assert [r["score"] for r in record["results"]] == pytest.approx([h.score for h in expected])
    assert main([*args, "--workers", "0", "--json", "-", "--method", "text"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "text"


def test_cli_errors_are_one_line(folder, tmp_path, capsys):
    ref = str(folder / folder_gallery(folder).ids[0])
    base = ["search", "--images", str(folder), "--reference", ref, "--text", "x"]
    cases = [
        (["--weights", str(tmp_path)], "--weights"),
        (["--method", "magic"], "unknown method"),
        (["-k", "0"], "-k"),
        (["--generator", str(tmp_path)], "--method cig only"),
    ]
    for extra, needle in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cirlib search: error:") and needle in err and "\n" not in err


def test_cli_names_an_unreadable_image_read_in_a_worker(folder, tmp_path, capsys):
    broken = tmp_path / "photos"
    shutil.copytree(folder, broken)
    (broken / "broken.png").write_bytes(b"not a png")
    ref = broken / folder_gallery(folder).ids[0]
    args = ["search", "--images", str(broken), "--reference", str(ref), "--text", "x", "--workers", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{broken / 'broken.png'}: cannot read this image" in err
    assert "Traceback" not in err


def _cli_in_subprocess(args: list[str]) -> tuple[int, str, bool]:
    """Run `cirlib <args>` in a fresh interpreter; return (status, stderr, torch imported?)."""
    code = (
        "import sys; from cirlib.cli import main; rc = main(sys.argv[1:]); "
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', file=sys.stderr); sys.exit(rc)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    lines = out.stderr.strip().splitlines()
    return out.returncode, "\n".join(lines[:-1]), lines[-1] == "TORCH"


def test_bad_paths_fail_before_torch_is_imported(tmp_path, folder):
    missing = tmp_path / "no-such-folder"
    rc, err, torch_imported = _cli_in_subprocess(
        ["search", "--images", str(missing), "--reference", str(tmp_path / "r.png"), "--text", "x"]
    )
    assert rc == 2 and not torch_imported and str(missing) in err and "\n" not in err
    rc, err, torch_imported = _cli_in_subprocess(
        ["search", "--images", str(folder), "--reference", str(tmp_path / "r.png"), "--text", "x"]
    )
    assert rc == 2 and not torch_imported and str(tmp_path / "r.png") in err and "\n" not in err


# ---------------------------------------------------------------------------------------- paper profile
PAPER_ARCH = "cirlib-test-search-ViT-T-16"


@pytest.fixture(scope="module")
def paper_weights(tmp_path_factory) -> Path:
    """A weights folder with a random tiny open_clip CLIP registered as paper backbone PAPER_ARCH."""
    yield from random_backbone(tmp_path_factory, PAPER_ARCH)


def test_paper_profile_reads_files_of_any_size(paper_weights, folder, tmp_path, capsys):
    from cirlib.methods import build_method as build

    method = build("sum", "paper", backbone=PAPER_ARCH, weights=paper_weights)
    assert for_image_files(method) is method  # the paper CLIP reads files itself
    gallery = index_folder(folder, method)
    outside = tmp_path / "wide.jpg"
    Image.open(folder / gallery.ids[0]).resize((300, 120)).save(outside)
    hits = search(method, gallery, outside, ["add a circle"], k=N_IMAGES)
    assert len(hits) == N_IMAGES and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    args = ["search", "--profile", "paper", "--backbone", PAPER_ARCH, "--weights", str(paper_weights)]
    args += ["--device", "cpu", "--workers", "0", "--images", str(folder), "--reference", str(outside)]
    assert main([*args, "--text", "add a circle", "-k", "3", "--json", "-"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["backbone"] == PAPER_ARCH and record["reference_in_folder"] is None
    assert [r["id"] for r in record["results"]] == [h.id for h in hits[:3]]


def test_paper_profile_missing_weights_fail_before_torch(folder, tmp_path):
    empty = tmp_path / "weights"
    empty.mkdir()
    ref = str(folder / folder_gallery(folder).ids[0])
    rc, err, torch_imported = _cli_in_subprocess(
        ["search", "--profile", "paper", "--weights", str(empty), "--images", str(folder), "--reference", ref,
         "--text", "x"]
    )  # fmt: skip
    assert rc == 2 and not torch_imported and str(empty / "ViT-L-14-openai.safetensors") in err
