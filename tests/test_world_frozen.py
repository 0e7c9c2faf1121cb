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
        "cirr": ("585413bcf182237d01d4642cbd3cfbdee2e2c040bf01136c6b26dcacbf2c8299", "bb1e4abd3531c854d0ab47da6d5348e0c15ee264ea237044a18e173c9e77fd93"),
        "circo": ("407f371766285b72744958ed32476eee9b5170ed19c30a11059074e9c7796126", "9accea474f59febaa2a6c5d894de5a1f6439af63b33f46cb8ce14bbf80ef12da"),
        "fashioniq": ("0490d4aed330f1ebc7becdd96150eccd1e401a48577d9678ac8140e4b4a10a46", "3277400fd305d9d05a98f70d9ed2e3e730ab8b902876fd2e449cc7b39e460f7c"),
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
