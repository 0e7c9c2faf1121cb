"""Tests of cirlib.retrieval: exact top-k against brute force, faiss agreement, the cache."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cirlib.retrieval import (
    CacheCorruptionWarning,
    EmbeddingCache,
    ExactIndex,
    content_digest,
    make_index,
    topk,
)


def brute_force(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full score matrix, stable argsort: decreasing score, then increasing index."""
    scores = q.astype(np.float64) @ g.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


# ------------------------------------------------------------------------------------ topk
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 7, 50, 1000])
def test_topk_equals_brute_force_with_heavy_ties(chunk_size):
    # small integer entries: exact float scores and many ties, straddling every cut-off
    rng = np.random.default_rng(0)
    g = rng.integers(-1, 2, size=(200, 4)).astype(np.float32)
    q = rng.integers(-1, 2, size=(30, 4)).astype(np.float32)
    for k in (1, 5, 17, 60, 200):
        vals, idx = topk(q, g, k, chunk_size=chunk_size, query_chunk_size=7)
        ref_vals, ref_idx = brute_force(q, g, k)
        assert idx.dtype == np.int64 and vals.dtype == np.float32
        assert vals.shape == idx.shape == (30, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(vals, ref_vals.astype(np.float32))


def test_topk_random_sizes_and_chunks_match_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(60):
        n_g, n_q, d = int(rng.integers(1, 120)), int(rng.integers(1, 12)), int(rng.integers(1, 6))
        k = int(rng.integers(1, n_g + 1))
        g = rng.integers(-2, 3, size=(n_g, d)).astype(np.float32)
        q = rng.integers(-2, 3, size=(n_q, d)).astype(np.float32)
        chunk = int(rng.integers(1, n_g + 1))
        _, idx = topk(q, g, k, chunk_size=chunk, query_chunk_size=int(rng.integers(1, 5)))
        np.testing.assert_array_equal(idx, brute_force(q, g, k)[1])


def test_topk_all_equal_scores_takes_lowest_indices():
    g = np.zeros((50, 3), dtype=np.float32)
    q = np.ones((2, 3), dtype=np.float32)
    _, idx = topk(q, g, 10, chunk_size=8)
    np.testing.assert_array_equal(idx, np.tile(np.arange(10), (2, 1)))


def test_topk_float_data_and_torch_input():
    rng = np.random.default_rng(2)
    g = rng.standard_normal((500, 16)).astype(np.float32)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    vals, idx = topk(torch.from_numpy(q), torch.from_numpy(g), 25, chunk_size=64)
    ref_vals, ref_idx = brute_force(q, g, 25)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(vals, ref_vals, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(vals, axis=1) <= 0)
    # float64 numpy input is accepted and converted
    _, idx64 = topk(q.astype(np.float64), g.astype(np.float64), 25)
    np.testing.assert_array_equal(idx64, ref_idx)


def test_topk_k_larger_than_chunk():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((90, 8)).astype(np.float32)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    _, idx = topk(q, g, 40, chunk_size=6)
    np.testing.assert_array_equal(idx, brute_force(q, g, 40)[1])


def test_topk_errors():
    g = np.ones((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="exceeds the gallery size"):
        topk(g[:2], g, 11)
    with pytest.raises(ValueError, match="positive integer"):
        topk(g[:2], g, 0)
    with pytest.raises(ValueError, match="dimension"):
        topk(np.ones((2, 3), dtype=np.float32), g, 1)
    with pytest.raises(ValueError, match="2-D"):
        topk(np.ones(4, dtype=np.float32), g, 1)
    bad = g.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        topk(g[:2], bad, 2)
    vals, idx = topk(np.zeros((0, 4), dtype=np.float32), g, 3)
    assert vals.shape == idx.shape == (0, 3)


def test_exact_and_faiss_backends_agree():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    g = rng.standard_normal((2000, 32)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = rng.standard_normal((50, 32)).astype(np.float32)
    exact, fast = make_index(g, "exact"), make_index(g, "faiss")
    assert isinstance(exact, ExactIndex) and len(exact) == len(fast) == 2000
    v1, i1 = exact.search(q, 20)
    v2, i2 = fast.search(q, 20)
    assert v2.dtype == np.float32 and i2.dtype == np.int64 and i2.shape == (50, 20)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(v1, v2, atol=1e-5)


def test_make_index_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        make_index(np.ones((3, 2), dtype=np.float32), "annoy")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ digests
def test_content_digest_sensitivity():
    a = np.arange(12, dtype=np.float32)
    base = content_digest(a)
    assert content_digest(a.copy()) == base
    assert content_digest(torch.from_numpy(a)) == base
    assert content_digest(a.reshape(3, 4)) != base
    assert content_digest(a.astype(np.float64)) != base
    changed = a.copy()
    changed[5] += 1
    assert content_digest(changed) != base
    assert content_digest(["ab"]) != content_digest(["a", "b"])
    assert content_digest(["x", 1]) != content_digest(["x", "1"])
    assert content_digest(a[::2]) == content_digest(np.ascontiguousarray(a[::2]))
    with pytest.raises(TypeError):
        content_digest(object())


# ------------------------------------------------------------------------------------ cache
class Counter:
    def __init__(self, value: np.ndarray) -> None:
        self.value, self.calls = value, 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return self.value


@pytest.fixture
def cache(tmp_path: Path) -> EmbeddingCache:
    return EmbeddingCache(tmp_path / "cache")


def test_cache_hit_and_miss(cache):
    data = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    compute = Counter(data)
    key = {"model": "m1", "images": content_digest(data)}
    first = cache.get_or_compute("images", key, compute)
    second = cache.get_or_compute("images", key, compute)
    assert compute.calls == 1 and (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, data)
    np.testing.assert_array_equal(second, data)
    assert second.dtype == np.float32 and second.flags.writeable
    # a fresh cache object on the same folder hits too (persistence)
    other = EmbeddingCache(cache.root)
    other.get_or_compute("images", key, compute)
    assert compute.calls == 1 and other.hits == 1


def test_cache_accepts_tensors(cache):
    out = cache.get_or_compute("t", {"model": "m"}, lambda: torch.ones(3, 2))
    assert isinstance(out, np.ndarray) and out.shape == (3, 2)


def test_cache_key_sensitivity(cache):
    compute = Counter(np.zeros(3, dtype=np.float32))
    keys = [
        {"model": "m1", "images": content_digest(np.zeros(4))},
        {"model": "m2", "images": content_digest(np.zeros(4))},
        {"model": "m1", "images": content_digest(np.ones(4))},
        {"model": "m1", "images": content_digest(np.zeros(4)), "batch": 2},
    ]
    paths = {cache.paths("images", key)[0] for key in keys}
    assert len(paths) == len(keys)
    for key in keys:
        cache.get_or_compute("images", key, compute)
    assert compute.calls == len(keys) and cache.hits == 0
    # key order does not matter; namespace does
    swapped = {"images": keys[0]["images"], "model": "m1"}
    assert cache.paths("images", swapped) == cache.paths("images", keys[0])
    assert cache.paths("texts", keys[0]) != cache.paths("images", keys[0])


def test_cache_rejects_bad_namespace_and_key(cache):
    with pytest.raises(ValueError, match="namespace"):
        cache.paths("../escape", {"model": "m"})
    with pytest.raises(ValueError, match="non-empty"):
        cache.paths("images", {})
    with pytest.raises(TypeError):
        cache.paths("images", {"model": np.zeros(3)})


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_sidecar", "bad_sidecar", "foreign_key"])
def test_corrupt_cache_entry_is_recomputed_with_warning(cache, damage):
    data = np.arange(1000, dtype=np.float32).reshape(100, 10)
    compute = Counter(data)
    key = {"model": "m", "images": "abc"}
    cache.get_or_compute("images", key, compute)
    array_path, meta_path = cache.paths("images", key)
    raw = array_path.read_bytes()
    if damage == "truncate":
        array_path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        array_path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    elif damage == "drop_sidecar":
        meta_path.unlink()
    elif damage == "bad_sidecar":
        meta_path.write_text("{not json")
    elif damage == "foreign_key":
        meta = json.loads(meta_path.read_text())
        meta["key"] = json.dumps({"model": "other"})
        meta_path.write_text(json.dumps(meta))
    with pytest.warns(CacheCorruptionWarning, match=str(array_path.name)):
        out = cache.get_or_compute("images", key, compute)
    np.testing.assert_array_equal(out, data)
    assert compute.calls == 2 and cache.corrupt == 1
    # the entry was rewritten: the next call is a clean hit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(cache.get_or_compute("images", key, compute), data)
    assert compute.calls == 2


def test_interrupted_write_never_corrupts(cache):
    data = np.ones((4, 4), dtype=np.float32)
    compute = Counter(data)
    key = {"model": "m", "images": "x"}
    array_path, meta_path = cache.paths("images", key)
    array_path.parent.mkdir(parents=True)
    # a writer killed mid-way leaves only its temporary file (atomic_write_bytes' naming)
    partial = array_path.with_name(f".{array_path.name}.99999.tmp")
    partial.write_bytes(b"\x93NUMPY partial")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cache.get_or_compute("images", key, compute)
    np.testing.assert_array_equal(out, data)
    assert compute.calls == 1 and cache.misses == 1 and cache.corrupt == 0
    # killed after the array but before the sidecar: the old sidecar no longer matches the array
    newer = Counter(np.full((4, 4), 2, dtype=np.float32))
    meta = meta_path.read_text()
    np.save(array_path, newer.value)
    meta_path.write_text(meta)
    with pytest.warns(CacheCorruptionWarning):
        out = cache.get_or_compute("images", key, newer)
    np.testing.assert_array_equal(out, newer.value)


def test_tie_path_in_small_row_groups(monkeypatch):
    import cirlib.retrieval as retrieval

    monkeypatch.setattr(retrieval, "_TIE_GROUP_ELEMENTS", 10)
    rng = np.random.default_rng(5)
    g = rng.integers(0, 2, size=(120, 3)).astype(np.float32)
    q = rng.integers(0, 2, size=(25, 3)).astype(np.float32)
    _, idx = topk(q, g, 30)
    np.testing.assert_array_equal(idx, brute_force(q, g, 30)[1])


def test_missing_faiss_gives_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(ImportError, match="faiss-cpu.*backend='exact'"):
        make_index(np.ones((3, 2), dtype=np.float32), "faiss")
