"""Placeholder copies of the real benchmarks: the real annotation files plus tiny fake images.

Why: the real loaders (:mod:`cirlib.data.real`) and everything after them (encoding, scoring,
submission files) must be testable without the real images, which are large, licensed and not
shipped. :func:`make_placeholder_dataset` writes, under a folder, the upstream layout of one
benchmark: the annotation files copied verbatim from the project's bundled copy
(``data/annotations/<benchmark>``) and one small image per image the annotations name.

Layouts written (the first layout :func:`cirlib.data.real.resolve_layout` tries):

* CIRR (SEARLE): ``cirr/captions``, ``cirr/image_splits``, images at the split file's relative
  paths (``dev/dev-244-0-img0.png``, ``test1/...``), PNG.
* CIRCO: ``annotations/<split>.json``, ``COCO2017_unlabeled/unlabeled2017/<12-digit id>.jpg`` and
  ``COCO2017_unlabeled/annotations/image_info_unlabeled2017.json`` listing the whole intended
  gallery: every reference and ground-truth id of the splits written, plus ``circo_gallery``
  distractor ids drawn (seeded) from 1..999,999 outside the annotated ids. Delete the info file
  to exercise the folder-listing path.
* FashionIQ (SEARLE): ``captions``, ``image_splits``, ``images/<ASIN>.jpg`` (flat).

Images: ``size`` x ``size`` RGB, a colour plus a 4x4 block pattern, both from a hash of
``(seed, image id)``, so they are deterministic and differ between ids. About 8k images/s on 2 cores.

Incomplete downloads, on purpose:

* ``missing``: the fraction of the images (exactly ``round(missing * n)``, chosen with
  ``numpy.random.default_rng(seed)`` over the sorted ids) that are not written.
* ``max_images``: write at most this many images, taken in query order (query 0 of each category,
  then query 1, ...: reference, target, ground truths, subset members), then the remaining
  gallery images. The annotation files are kept **verbatim** (never trimmed): the loaders and
  their counts are exercised on the real files, and callers load with ``on_missing="drop"``,
  which keeps the first queries whose images were written and drops the others (val). For CIRCO
  the image-info file still lists the whole intended gallery. A test split with ``max_images``
  cannot load (a test query cannot be dropped) unless every reference was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cirlib.config import ANNOTATIONS_DIR
from cirlib.data import annotations as ann
from cirlib.data.real import _benchmark_key, _upstream_split

__all__ = ["make_placeholder_dataset", "placeholder_pixels"]

_PATTERN = 4


def placeholder_pixels(image_id: str, seed: int = 0, size: int = 16) -> np.ndarray:
    """The uint8 ``[size, size, 3]`` image of ``image_id``: a hashed colour blended with a hashed
    4x4 block pattern."""
    digest = hashlib.blake2b(f"{seed}\0{image_id}".encode(), digest_size=3 + 3 * _PATTERN**2).digest()
    raw = np.frombuffer(digest, dtype=np.uint8)
    colour = raw[:3].astype(np.uint16)
    pattern = raw[3:].reshape(_PATTERN, _PATTERN, 3).astype(np.uint16)
    cells = ((colour * 3 + pattern) // 4).astype(np.uint8)
    idx = (np.arange(size) * _PATTERN) // size
    return cells[idx][:, idx]


def _write_image(path: str, image_id: str, seed: int, size: int, fmt: str) -> None:
    Image.fromarray(placeholder_pixels(image_id, seed, size)).save(path, format=fmt)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _interleave(per_category: list[list[list[str]]]) -> list[str]:
    """Image ids of query 0 of every category, then query 1, ... (each query a list of ids)."""
    out: list[str] = []
    longest = max((len(qs) for qs in per_category), default=0)
    for i in range(longest):
        for qs in per_category:
            if i < len(qs):
                out += qs[i]
    return out


def make_placeholder_dataset(
    benchmark: str,
    root: Path | str,
    splits: tuple[str, ...] | list[str] = ("val",),
    *,
    size: int = 16,
    missing: float = 0.0,
    seed: int = 0,
    max_images: int | None = None,
    circo_gallery: int = 0,
) -> Path:
    """Write a placeholder copy of ``benchmark`` (``splits``: public or upstream names) under
    ``root`` and return ``root``, the folder to pass as the data folder. See the module docstring."""
    key = _benchmark_key(benchmark)
    ups = list(dict.fromkeys(_upstream_split(key, s) for s in splits))
    if not 0.0 <= missing <= 1.0:
        raise ValueError(f"missing must be a fraction in [0, 1], got {missing}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    src = ANNOTATIONS_DIR / key
    # (image id, relative path) of every image to write, in priority order, and the formats.
    order: list[str] = []
    relpath: dict[str, str] = {}
    if key == "cirr":
        fmt = "PNG"
        for up in ups:
            for path in (ann.cirr_caption_path(src, up), ann.cirr_image_split_path(src, up)):
                _copy(path, root / "cirr" / path.relative_to(src))
            data = ann.load_cirr(src, up)
            relpath.update({name: os.path.normpath(p) for name, p in data.images.items()})
            per_query = [
                [q.reference] + ([q.target_hard] if q.target_hard else []) + list(q.members)
                for q in data.queries
            ]
            order += _interleave([per_query]) + list(data.images)
    elif key == "circo":
        fmt = "JPEG"
        annotated: list[str] = []
        for up in ups:
            path = ann.circo_annotation_path(src, up)
            _copy(path, root / path.relative_to(src))
            data = ann.load_circo(src, up)
            annotated += _interleave(
                [[[str(q.reference_img_id)] + [str(g) for g in q.gt_img_ids or ()] for q in data.queries]]
            )
        used = {int(i) for i in annotated}
        rng = np.random.default_rng(seed)
        distractors: list[str] = []
        if circo_gallery > 0:
            pool = np.setdiff1d(np.arange(1, 1_000_000), np.fromiter(used, dtype=np.int64))
            distractors = [str(i) for i in rng.choice(pool, size=circo_gallery, replace=False)]
        order = annotated + distractors
        gallery = list(dict.fromkeys(order))
        relpath = {
            i: os.path.join("COCO2017_unlabeled", "unlabeled2017", f"{int(i):012d}.jpg") for i in gallery
        }
        info = {
            "info": {"description": "cirlib placeholder of COCO 2017 unlabeled (not real images)"},
            "images": [
                {"id": int(i), "file_name": f"{int(i):012d}.jpg", "width": size, "height": size}
                for i in gallery
            ],
        }
        info_path = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
        info_path.parent.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps(info))
    else:
        fmt = "JPEG"
        per_cat: list[list[list[str]]] = []
        galleries: list[str] = []
        for up in ups:
            for cat in ann.FASHIONIQ_CATEGORIES:
                for path in (
                    ann.fashioniq_caption_path(src, cat, up),
                    ann.fashioniq_image_split_path(src, cat, up),
                ):
                    _copy(path, root / path.relative_to(src))
                data = ann.load_fashioniq(src, cat, up)
                per_cat.append([[q.candidate] + ([q.target] if q.target else []) for q in data.queries])
                galleries += data.gallery
        order = _interleave(per_cat) + galleries
        relpath = {i: os.path.join("images", f"{i}.jpg") for i in order}
    order = list(dict.fromkeys(order))
    if max_images is not None:
        order = order[: max(0, max_images)]
    if missing > 0:
        ids = sorted(order)
        omit = set(np.random.default_rng(seed).permutation(len(ids))[: round(missing * len(ids))].tolist())
        skip = {ids[k] for k in omit}
        order = [i for i in order if i not in skip]
    for folder in {os.path.dirname(relpath[i]) for i in order}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    base = str(root)
    for image_id in order:
        _write_image(os.path.join(base, relpath[image_id]), image_id, seed, size, fmt)
    return root
