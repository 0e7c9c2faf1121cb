"""Exact inner-product top-k search, a faiss twin, content digests and the embedding cache.

**Top-k.** :func:`topk` scores query chunks against gallery blocks with one BLAS matmul per
(query chunk, gallery block), keeps the ``k`` best of each block with ``torch.topk`` and merges
blocks into a running top-k. Rows are scored against whole blocks of up to :data:`MAX_GALLERY_BLOCK`
gallery rows because ``torch.topk`` on long rows is cheap next to the matmul (a partial sort that
rejects most entries with one comparison), while many short blocks pay per-call and merge
overheads. The score buffer of a chunk is bounded by :data:`SCORE_BUDGET` floats, so memory stays
at about 128 MiB whatever the sizes. On 2 CPU threads this beats ``faiss.IndexFlatIP`` (see
``benchmarks/bench_topk.py``).

**Deterministic ties.** Results are ordered by decreasing score and, among equal scores, by
increasing gallery index -- the same rule as :mod:`cirlib.metrics`, so rankings computed here or
from a full score matrix agree. ``torch.topk`` picks arbitrarily among ties, so each block is
asked for ``k + 1`` entries: if the ``k``-th and ``(k + 1)``-th values differ, the block's top-k
*set* is unique and only its order needs fixing, which the final merge does with two stable sorts
(index ascending, then score descending). If they are equal (a tie straddles the cut-off), that
row is re-selected exactly from the block's scores: every entry above the k-th value plus the
lowest-index entries equal to it. That path is vectorised and only runs for tied rows, which real
float embeddings almost never produce (duplicated gallery images do).

Work runs on torch's intra-op threads: set ``torch.set_num_threads`` to choose how many.

**Cache.** :class:`EmbeddingCache` stores arrays under a hash of a key dict that must name the
model (its content hash) and the content (:func:`content_digest`), so that a changed model or
changed pixels can never hit a stale entry. Each ``.npy`` has a JSON sidecar with shape, dtype,
size and sha256; a file that does not match (truncated, corrupt, half-written) is recomputed with a
:class:`CacheCorruptionWarning` and never silently used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from cirlib.config import atomic_write_bytes, atomic_write_json, cache_root, config_hash

__all__ = [
    "MAX_GALLERY_BLOCK",
    "SCORE_BUDGET",
    "CacheCorruptionWarning",
    "EmbeddingCache",
    "ExactIndex",
    "FaissIndex",
    "Index",
    "content_digest",
    "make_index",
    "topk",
]

#: Most scores held at once per chunk (float32 entries): 2**25 floats = 128 MiB.
SCORE_BUDGET = 1 << 25
#: Longest gallery block scored in one matmul; larger galleries are split into blocks this long.
MAX_GALLERY_BLOCK = 1 << 17

#: Scores re-selected at once on the (rare) tie path.
_TIE_GROUP_ELEMENTS = 1 << 22

ArrayLike2D = np.ndarray | torch.Tensor


# ------------------------------------------------------------------------------------------ top-k
def _as_tensor(x: ArrayLike2D, name: str, device: torch.device | None = None) -> torch.Tensor:
    """A float32 2-D tensor sharing memory with ``x`` when possible (no copy for float32 numpy)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(t.shape)}")
    if device is not None:
        t = t.to(device)
    return t.to(torch.float32)


def _order_by_score_then_index(
    vals: torch.Tensor, idx: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``k`` best candidates of each row, ordered by score desc, then gallery index asc.

    Two stable sorts make a lexicographic sort: first by index, then (stably) by score."""
    by_index = torch.sort(idx, dim=1, stable=True).indices
    vals, idx = vals.gather(1, by_index), idx.gather(1, by_index)
    by_score = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :k]
    return vals.gather(1, by_score), idx.gather(1, by_score)


def _block_topk(scores: torch.Tensor, k: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k *set* of each row of a score block (order fixed later), ties broken by index."""
    n_rows, width = scores.shape
    if width <= k:
        idx = torch.arange(offset, offset + width, device=scores.device).expand(n_rows, width)
        return scores.clone(), idx.clone()
    vals, idx = torch.topk(scores, k + 1, dim=1, largest=True, sorted=True)
    if not torch.isfinite(vals[:, 0]).all():
        raise ValueError("non-finite similarity scores (NaN or inf in queries or gallery)")
    tied = vals[:, k - 1] == vals[:, k]
    vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    tied_rows = tied.nonzero().squeeze(1)
    # a few rows at a time: the cumsum below holds int64 per score
    group = max(1, _TIE_GROUP_ELEMENTS // width)
    for start in range(0, tied_rows.numel(), group):
        rows = tied_rows[start : start + group]
        block = scores[rows]
        kth = vals[rows, k - 1 : k]
        above, equal = block > kth, block == kth
        need = k - above.sum(dim=1, keepdim=True)
        keep = above | (equal & (equal.cumsum(dim=1) <= need))
        chosen = keep.nonzero()[:, 1].view(rows.numel(), k)  # row-major: ascending index per row
        vals[rows] = block.gather(1, chosen)
        idx[rows] = chosen
    return vals, idx + offset


def topk(
    queries: ArrayLike2D,
    gallery: ArrayLike2D,
    k: int,
    *,
    chunk_size: int | None = None,
    query_chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` gallery rows by inner product for each query.

    Args:
        queries: ``[Q, D]`` numpy array or torch tensor (converted to float32).
        gallery: ``[G, D]``; computation runs on the gallery's device (CPU by default).
        k: how many results per query, ``1 <= k <= G``.
        chunk_size: gallery rows scored per block (default: the whole gallery up to
            :data:`MAX_GALLERY_BLOCK`). Any value gives the same result; it only trades memory
            and speed. ``k`` may exceed it.
        query_chunk_size: queries per chunk (default: as many as fit :data:`SCORE_BUDGET`).

    Returns:
        ``(scores float32 [Q, k], indices int64 [Q, k])`` by decreasing score and, among equal
        scores, increasing gallery index (see the module docstring).
    """
    g = _as_tensor(gallery, "gallery")
    q = _as_tensor(queries, "queries", device=g.device)
    n_gallery, dim = g.shape
    if q.shape[1] != dim:
        raise ValueError(f"queries have dimension {q.shape[1]} but the gallery has {dim}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if k > n_gallery:
        raise ValueError(f"k={k} exceeds the gallery size {n_gallery}")
    n_queries = q.shape[0]
    if n_queries == 0:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)

    block = int(chunk_size) if chunk_size is not None else min(n_gallery, MAX_GALLERY_BLOCK)
    if block < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    block = min(block, n_gallery)
    if query_chunk_size is None:
        q_chunk = max(1, min(n_queries, SCORE_BUDGET // block))
    elif query_chunk_size < 1:
        raise ValueError(f"query_chunk_size must be >= 1, got {query_chunk_size}")
    else:
        q_chunk = min(int(query_chunk_size), n_queries)

    out_vals = torch.empty((n_queries, k), dtype=torch.float32)
    out_idx = torch.empty((n_queries, k), dtype=torch.int64)
    with torch.inference_mode():
        buffer = torch.empty((q_chunk, block), dtype=torch.float32, device=g.device)
        for qs in range(0, n_queries, q_chunk):
            qq = q[qs : qs + q_chunk]
            best_vals: torch.Tensor | None = None
            best_idx: torch.Tensor | None = None
            for gs in range(0, n_gallery, block):
                gg = g[gs : gs + block]
                scores = torch.mm(qq, gg.T, out=buffer[: qq.shape[0], : gg.shape[0]])
                vals, idx = _block_topk(scores, k, gs)
                if best_vals is None or best_idx is None:
                    best_vals, best_idx = vals, idx
                else:
                    best_vals, best_idx = _order_by_score_then_index(
                        torch.cat([best_vals, vals], dim=1), torch.cat([best_idx, idx], dim=1), k
                    )
            assert best_vals is not None and best_idx is not None
            best_vals, best_idx = _order_by_score_then_index(best_vals, best_idx, k)
            out_vals[qs : qs + q_chunk] = best_vals.cpu()
            out_idx[qs : qs + q_chunk] = best_idx.cpu()
    if not torch.isfinite(out_vals).all():
        raise ValueError("non-finite similarity scores (NaN or inf in queries or gallery)")
    return out_vals.numpy(), out_idx.numpy()


# ------------------------------------------------------------------------------------------ indexes
class Index(Protocol):
    """What :func:`make_index` returns: a searchable gallery."""

    ntotal: int
    dim: int

    def search(self, queries: ArrayLike2D, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class ExactIndex:
    """Gallery held as a float32 tensor, searched with :func:`topk` (exact, deterministic ties)."""

    def __init__(self, gallery: ArrayLike2D, *, chunk_size: int | None = None) -> None:
        self.gallery = _as_tensor(gallery, "gallery").contiguous()
        self.ntotal, self.dim = self.gallery.shape
        self.chunk_size = chunk_size

    def search(self, queries: ArrayLike2D, k: int) -> tuple[np.ndarray, np.ndarray]:
        return topk(queries, self.gallery, k, chunk_size=self.chunk_size)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"ExactIndex(ntotal={self.ntotal}, dim={self.dim})"


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "backend='faiss' needs the faiss-cpu package (pinned in pyproject.toml); install it with "
            "`.venv/bin/pip install faiss-cpu` or use backend='exact', which gives the same results"
        ) from error
    return faiss


class FaissIndex:
    """``faiss.IndexFlatIP`` with :func:`topk`'s output format.

    faiss computes scores with its own BLAS, so values may differ from :class:`ExactIndex` in the
    last bits; rows are re-sorted by (score desc, index asc), but when ties straddle the k-th place
    faiss may have kept a different member of the tie than the exact backend."""

    def __init__(self, gallery: ArrayLike2D) -> None:
        faiss = _import_faiss()
        array = _as_tensor(gallery, "gallery").cpu().contiguous().numpy()
        self.ntotal, self.dim = array.shape
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(array)

    def search(self, queries: ArrayLike2D, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _as_tensor(queries, "queries").cpu().contiguous().numpy()
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]} but the gallery has {self.dim}")
        if not isinstance(k, (int, np.integer)) or k < 1 or k > self.ntotal:
            raise ValueError(f"k must be an integer in [1, {self.ntotal}], got {k!r}")
        vals, idx = self.index.search(q, int(k))
        v, i = _order_by_score_then_index(
            torch.from_numpy(vals), torch.from_numpy(idx.astype(np.int64)), int(k)
        )
        return v.numpy(), i.numpy()

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"FaissIndex(ntotal={self.ntotal}, dim={self.dim})"


def make_index(
    gallery: ArrayLike2D, backend: Literal["exact", "faiss"] = "exact", **options: Any
) -> ExactIndex | FaissIndex:
    """A searchable gallery; both backends return ``(scores float32 [Q,k], indices int64 [Q,k])``.

    ``exact`` (default) is deterministic and faster than faiss's flat index here; ``faiss`` exists
    to check against the reference implementation. faiss is imported only when asked for."""
    if backend == "exact":
        return ExactIndex(gallery, **options)
    if backend == "faiss":
        if options:
            raise TypeError(f"the faiss backend takes no options, got {sorted(options)}")
        return FaissIndex(gallery)
    raise ValueError(f"unknown backend {backend!r}; expected 'exact' or 'faiss'")


# ------------------------------------------------------------------------------------------ digests
def _feed(h: Any, obj: Any) -> None:
    """Feed a type-tagged, length-prefixed encoding of ``obj`` to the hash, so that different
    structures can never produce the same byte stream (``["ab"]`` vs ``["a", "b"]``)."""

    def tag(t: str, payload: bytes) -> None:
        h.update(t.encode() + b":" + str(len(payload)).encode() + b":")
        h.update(payload)

    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("content_digest does not hash object arrays; convert them to a list")
        array = np.ascontiguousarray(obj)
        tag("ndarray", f"{array.dtype.str}|{array.shape}".encode())
        h.update(memoryview(array).cast("B"))
    elif isinstance(obj, str):
        tag("str", obj.encode("utf-8"))
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        tag("bytes", bytes(obj))
    elif isinstance(obj, Path):
        tag("path", str(obj).encode())
    elif obj is None or isinstance(obj, (bool, int, float, np.integer, np.floating, np.bool_)):
        value = obj.item() if isinstance(obj, np.generic) else obj
        tag(type(value).__name__, repr(value).encode())
    elif isinstance(obj, (list, tuple)):
        tag("list" if isinstance(obj, list) else "tuple", str(len(obj)).encode())
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, Mapping):
        tag("dict", str(len(obj)).encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    else:
        raise TypeError(f"content_digest cannot hash objects of type {type(obj).__name__}")


def content_digest(obj: Any) -> str:
    """sha256 (hex) of the content of arrays (bytes, shape and dtype), tensors, strings, numbers and
    lists/tuples/dicts of them. Equal content gives equal digests across runs and machines with
    the same byte order; any change of a value, shape or dtype changes the digest."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ cache
def file_fingerprints(paths: Sequence[str | Path]) -> list[tuple[int, int]]:
    """``(size in bytes, modification time in ns)`` of each file: the cache key of image files.

    A file that does not exist raises ``FileNotFoundError`` naming it (galleries are checked for
    missing images when loaded, so this means a file vanished since)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: image file not found") from None
        out.append((st.st_size, st.st_mtime_ns))
    return out


class CacheCorruptionWarning(RuntimeWarning):
    """A cache entry did not match its checksum/shape record and is being recomputed."""


def _canonical_key(key: Mapping[str, Any]) -> str:
    """The key as sorted JSON (as hashed by config_hash), stored in the sidecar and compared on
    load."""

    def default(o: Any) -> Any:
        if hasattr(o, "__dataclass_fields__"):
            return {k: getattr(o, k) for k in o.__dataclass_fields__}
        if isinstance(o, (Path, np.integer, np.floating)):
            return str(o) if isinstance(o, Path) else o.item()
        raise TypeError(f"cache key values must be JSON-serialisable, got {type(o).__name__}")

    return json.dumps(dict(key), sort_keys=True, default=default)


_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CACHE_FORMAT = 1


class EmbeddingCache:
    """Content-keyed ``.npy`` cache of computed arrays (embeddings), safe against partial writes.

    ``get_or_compute(namespace, key, compute)`` returns the cached array for ``key`` or calls
    ``compute()`` and stores its result. The key dict should contain the model's content hash and
    a :func:`content_digest` of the inputs (e.g. ``{"model": clip.hash, "images": digest}``), plus
    any option that changes the output; it is hashed with :func:`cirlib.config.config_hash`
    (which includes ``CODE_VERSION``), and stored in full in the sidecar so a hash collision or a
    stale file is caught too. ``hits``/``misses``/``corrupt`` count what happened (benchmarks)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root() / "embeddings"
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def paths(self, namespace: str, key: Mapping[str, Any]) -> tuple[Path, Path]:
        """``(array .npy, sidecar .json)`` paths of an entry."""
        if not _NAMESPACE_RE.match(namespace):
            raise ValueError(f"cache namespace {namespace!r} must match {_NAMESPACE_RE.pattern}")
        if not isinstance(key, Mapping) or not key:
            raise ValueError("cache key must be a non-empty dict (model hash, content digest, options)")
        digest = config_hash(dict(key))
        folder = self.root / namespace
        return folder / f"{digest}.npy", folder / f"{digest}.json"

    def _load(self, array_path: Path, meta_path: Path, key: Mapping[str, Any]) -> np.ndarray | None:
        """The stored array, or None if absent; a present-but-bad entry warns and returns None."""
        if not array_path.exists() and not meta_path.exists():
            return None

        def bad(problem: str) -> None:
            self.corrupt += 1
            warnings.warn(
                f"embedding cache entry {array_path} is unusable ({problem}); recomputing it",
                CacheCorruptionWarning,
                stacklevel=3,
            )

        try:
            meta = json.loads(meta_path.read_text())
            expected = (meta["format"], meta["sha256"], meta["nbytes"], meta["shape"], meta["dtype"])
        except FileNotFoundError:
            bad(f"sidecar {meta_path.name} is missing (interrupted write?)")
            return None
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            bad(f"sidecar {meta_path.name} is malformed: {error}")
            return None
        fmt, sha, nbytes, shape, dtype = expected
        if fmt != _CACHE_FORMAT:
            bad(f"cache format {fmt!r}, expected {_CACHE_FORMAT}")
            return None
        if meta.get("key") != _canonical_key(key):
            bad("stored key differs from the requested key (hash collision or foreign file)")
            return None
        try:
            data = array_path.read_bytes()
        except FileNotFoundError:
            bad("array file is missing")
            return None
        if len(data) != nbytes:
            bad(f"size {len(data)} bytes, expected {nbytes} (truncated?)")
            return None
        if hashlib.sha256(data).hexdigest() != sha:
            bad("sha256 mismatch (corrupted)")
            return None
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError) as error:
            bad(f"not a readable .npy file: {error}")
            return None
        if list(array.shape) != list(shape) or array.dtype.str != dtype:
            bad(f"shape/dtype {array.shape}/{array.dtype.str}, expected {tuple(shape)}/{dtype}")
            return None
        return array

    def get_or_compute(
        self, namespace: str, key: Mapping[str, Any], compute: Callable[[], np.ndarray | torch.Tensor]
    ) -> np.ndarray:
        """The cached array for ``(namespace, key)``, computing and storing it on a miss."""
        array_path, meta_path = self.paths(namespace, key)
        cached = self._load(array_path, meta_path, key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        result = compute()
        if isinstance(result, torch.Tensor):
            result = result.detach().cpu().numpy()
        array = np.ascontiguousarray(result)
        if array.dtype == object:
            raise TypeError(f"cache namespace {namespace!r}: compute() returned an object array")
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        data = buffer.getvalue()
        meta = {
            "format": _CACHE_FORMAT,
            "key": _canonical_key(key),
            "shape": list(array.shape),
            "dtype": array.dtype.str,
            "nbytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        # Array first, sidecar last: the sidecar is the commit record. A crash in between leaves an
        # array whose sidecar is missing or describes the previous bytes -- detected on load.
        atomic_write_bytes(array_path, data)
        atomic_write_json(meta_path, meta)
        return array

    def __repr__(self) -> str:
        return f"EmbeddingCache(root={str(self.root)!r}, hits={self.hits}, misses={self.misses})"
