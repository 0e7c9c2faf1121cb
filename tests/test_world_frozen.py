"""The world is frozen: version 1.0's benchmarks and pre-training data must not drift.

If a change to cirlib.world alters these fingerprints, the world has changed: bump
``WORLD_VERSION``, retrain (``cirlib train --from-scratch``), rerun the notebooks and update the
fingerprints here in the same commit. Pixel fingerprints assume the pinned Pillow."""

from __future__ import annotations

import pytest

from cirlib.retrieval import content_digest
from cirlib.world import WORLD_VERSION, load_world_benchmark, pretraining_pairs

FROZEN = {
    "1.0": {
        "cirr": ("276357fa75a805bcd80beb7493c70792bd1f47f66c27d7f5a9885bceb9fdb969", "207d164031cbfdd63fe9e3d03dc53224a645cf3cb84a0090b3824fd809bccf25"),
        "circo": ("1605f99e0c0ce1ddfa6d6a0354934434136fd8ad81ec3e5e1273afb4c68a1ec6", "ff84e862f8f564e90a47f00e436a8d778afd7cf0541468e4b93995e80c15403b"),
        "fashioniq": ("2853421f717cbac098db5eb3ce41725adc976f91ea92c6db5ef7a92f1f160a31", "5c95a92ba8849e5d02378090ecaaa2f810ccfee1a1c881a6159b1b6353a7a95b"),
        "pairs": ("b0d56f0e29f7fa8eb45526d40e13bffc7c421e9ed9101bdaa62dfab9193c6d80", "24ebfa64551dd881686c6b84848967b8af64b1325ccbe8d0d58b13fb0822d36a"),
    }
}  # fmt: skip


@pytest.mark.parametrize("form", ["cirr", "circo", "fashioniq"])
def test_benchmark_fingerprint(form, tmp_path, monkeypatch):
    monkeypatch.setenv("CIRLIB_CACHE", str(tmp_path))
    b = load_world_benchmark(form, "test", n_queries=30, use_cache=False)
    queries = content_digest(
        [[q.qid, q.reference, list(q.texts), q.target, list(q.ground_truth)] for q in b.queries]
    )
    images = content_digest([g.images for g in b.galleries.values()])
    assert (queries, images) == FROZEN[WORLD_VERSION][form]


def test_pretraining_fingerprint():
    p = pretraining_pairs(64, seed=0)
    assert (content_digest(p.captions), content_digest(p.images)) == FROZEN[WORLD_VERSION]["pairs"]
