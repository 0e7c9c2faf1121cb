"""The shapes world: determinism, edit validity, complete ground truth and hard negatives."""

from __future__ import annotations

import numpy as np
import pytest

from cirlib.world import (
    COLORS,
    SHAPES,
    Obj,
    Scene,
    apply_edit,
    load_world_benchmark,
    pretraining_pairs,
    render,
    sample_edit,
    sample_scene,
)
from cirlib.world.benchmarks import FIQ_CATEGORIES, training_triplets
from cirlib.world.edits import EditNotApplicable, Pattern, TargetSpec
from cirlib.world.language import referring_expressions


def test_vocabulary_meets_the_spec():
    assert len(SHAPES) >= 7 and len(COLORS) >= 8


def test_scene_rejects_overlapping_objects():
    with pytest.raises(ValueError, match="share a cell"):
        Scene((Obj("circle", "red", "small", 0, 0), Obj("star", "blue", "large", 0, 0)), "plain")


def test_scene_is_canonical_and_round_trips():
    a = Scene((Obj("star", "red", "small", 2, 2), Obj("circle", "blue", "large", 0, 0)), "dotted")
    b = Scene((Obj("circle", "blue", "large", 0, 0), Obj("star", "red", "small", 2, 2)), "dotted")
    assert a == b and a.key() == b.key()
    assert Scene.from_dict(a.to_dict()) == a


def test_render_is_deterministic_and_jitter_changes_pixels():
    scene = sample_scene(np.random.default_rng(0))
    a, b = render(scene, 64, jitter_seed=3), render(scene, 64, jitter_seed=3)
    c = render(scene, 64, jitter_seed=4)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert render(scene, 32).shape == (32, 32, 3)


def test_color_edit_allows_exactly_the_recoloured_scene():
    ref = Scene((Obj("circle", "blue", "large", 1, 1), Obj("star", "red", "small", 0, 0)), "plain")
    rng = np.random.default_rng(0)
    for _ in range(20):
        edit = apply_edit(ref, ["color"], rng)
        target = edit.spec.sample(rng)
        assert edit.spec.matches(target) and not edit.spec.matches(ref)
        assert len(edit.spec.enumerate_keys()) == 1
        (changed,) = [o for o in target.objects if o not in ref.objects]
        (before,) = [o for o in ref.objects if o.cell == changed.cell]
        assert changed.color != before.color and changed.shape == before.shape and changed.size == before.size


def test_every_sampled_edit_changes_the_scene_and_its_target_satisfies_it():
    rng = np.random.default_rng(1)
    for _ in range(300):
        ref = sample_scene(rng)
        try:
            edit = sample_edit(ref, rng)
        except EditNotApplicable:
            continue
        target = edit.spec.sample(rng)
        assert edit.spec.matches(target)
        assert not edit.spec.matches(ref)
        assert target.key() in edit.spec.enumerate_keys()
        assert edit.text and all(edit.parts)


def test_open_add_allows_many_targets():
    ref = Scene((Obj("circle", "blue", "large", 1, 1),), "plain")
    edit = apply_edit(ref, ["add_open"], np.random.default_rng(2))
    assert len(edit.spec.enumerate_keys()) >= 8  # any free cell at least


def test_referring_expressions_are_unique():
    scene = Scene((Obj("circle", "blue", "large", 0, 0), Obj("circle", "red", "small", 0, 2)), "plain")
    keys = dict(referring_expressions(scene, 0))
    assert "shape" not in keys  # two circles: "the circle" is ambiguous
    assert "color shape" in keys and "side" in keys


def test_pretraining_pairs_are_deterministic():
    a, b = pretraining_pairs(8, seed=5), pretraining_pairs(8, seed=5)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert pretraining_pairs(8, seed=6).captions != a.captions


def test_training_triplets_shapes():
    t = training_triplets(5, seed=0)
    assert t.references.shape == t.targets.shape == (5, 64, 64, 3) and len(t.texts) == 5


@pytest.mark.parametrize("form", ["cirr", "circo", "fashioniq"])
def test_benchmark_ground_truth_is_complete_and_consistent(form, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRLIB_CACHE", str(tmp_path))
    bench = load_world_benchmark(form, "val", n_queries=60)
    assert len(bench.queries) >= 60
    for q in bench.queries:
        gallery = bench.galleries[q.category]
        spec_scene = {i: s for i, s in zip(gallery.ids, gallery.scenes, strict=True)}
        assert q.target in q.ground_truth
        assert q.reference not in q.ground_truth
        # brute force over the whole gallery: every satisfying image is listed, nothing else
        ref = Scene.from_dict(q.info["reference_scene"])
        assert spec_scene[q.reference] == ref
        target_scene = spec_scene[q.target]
        same = [i for i, s in spec_scene.items() if s == target_scene]
        assert set(same) <= set(q.ground_truth)
        if form == "cirr":
            assert len(q.subset) == 6 and q.reference in q.subset and q.target in q.subset
        if form == "fashioniq":
            assert len(q.texts) == 2 and q.category in FIQ_CATEGORIES


def test_benchmark_negatives_do_not_satisfy_the_query(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRLIB_CACHE", str(tmp_path))
    bench = load_world_benchmark("cirr", "val", n_queries=40)
    gallery = bench.galleries["all"]
    scene_of = dict(zip(gallery.ids, gallery.scenes, strict=True))
    n_neg = 0
    for q in bench.queries:
        for member in q.subset:
            if member not in q.ground_truth:
                n_neg += 1
                assert member == q.reference or scene_of[member] != scene_of[q.target]
    assert n_neg >= 4 * len(bench.queries)


def test_benchmark_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRLIB_CACHE", str(tmp_path))
    a = load_world_benchmark("circo", "val", n_queries=30)
    b = load_world_benchmark("circo", "val", n_queries=30, use_cache=False)
    assert [q.texts for q in a.queries] == [q.texts for q in b.queries]
    assert [q.ground_truth for q in a.queries] == [q.ground_truth for q in b.queries]
    assert np.array_equal(a.galleries["all"].images, b.galleries["all"].images)
    assert list((tmp_path / "world").glob("*.npz"))


def test_val_and_test_splits_differ(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRLIB_CACHE", str(tmp_path))
    val = load_world_benchmark("cirr", "val", n_queries=30)
    test = load_world_benchmark("cirr", "test", n_queries=30)
    assert [q.texts for q in val.queries] != [q.texts for q in test.queries]


def test_corrupt_world_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRLIB_CACHE", str(tmp_path))
    load_world_benchmark("cirr", "val", n_queries=20)
    (path,) = (tmp_path / "world").glob("*.npz")
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        bench = load_world_benchmark("cirr", "val", n_queries=20)
    assert len(bench.queries) == 20


def test_unknown_form_and_split_errors():
    with pytest.raises(ValueError, match="unknown world benchmark"):
        load_world_benchmark("coco", "val")
    with pytest.raises(ValueError, match="splits"):
        load_world_benchmark("cirr", "train")


def test_target_spec_matching_is_order_free():
    a, b = Obj("circle", "red", "small", 0, 0), Obj("star", "blue", "large", 2, 2)
    spec = TargetSpec((Pattern.exact(b), Pattern.exact(a)), frozenset(["plain"]))
    assert spec.matches(Scene((a, b), "plain"))
    assert not spec.matches(Scene((a, b.moved((2, 1))), "plain"))
    assert not spec.matches(Scene((a,), "plain"))
    assert not spec.matches(Scene((a, b), "dotted"))
