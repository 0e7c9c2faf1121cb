"""Typed loaders of the real CIRR, CIRCO and FashionIQ annotation files, in upstream layout.

Why: every metric and submission check needs the queries, the ground truth and the gallery of a
split, and the upstream files have quirks that are easy to get wrong (CIRR's test split is
``test1``; CIRR ``reference_rank`` is not a position in ``members``; CIRCO ids must equal list
positions; FashionIQ galleries are per category). See ``shared/cir-annotations/PROTOCOLS.md`` §1.

Each loader takes a *dataset folder* laid out as upstream, e.g. ``.../cir-annotations/cirr``:

* CIRR: ``captions/cap.rc2.<split>.json``, ``image_splits/split.rc2.<split>.json``
* CIRCO: ``annotations/<split>.json``
* FashionIQ: ``captions/cap.<category>.<split>.json``, ``image_splits/split.<category>.<split>.json``

Files are validated while loading; any problem raises :class:`AnnotationError` (a ``ValueError``)
whose message starts with the file path, and a missing file raises
:class:`AnnotationFileNotFoundError` (also a ``FileNotFoundError``). Images are never touched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CIRCO_SPLITS",
    "CIRR_SPLITS",
    "FASHIONIQ_CATEGORIES",
    "FASHIONIQ_SPLITS",
    "AnnotationError",
    "AnnotationFileNotFoundError",
    "CIRCOQuery",
    "CIRCOSplit",
    "CIRRQuery",
    "CIRRSplit",
    "FashionIQQuery",
    "FashionIQSplit",
    "circo_annotation_path",
    "cirr_caption_path",
    "cirr_image_split_path",
    "fashioniq_caption_path",
    "fashioniq_image_split_path",
    "load_circo",
    "load_cirr",
    "load_fashioniq",
    "load_fashioniq_all",
    "read_json_file",
]

CIRRSplitName = Literal["train", "val", "test1"]
CIRCOSplitName = Literal["val", "test"]
FashionIQSplitName = Literal["train", "val", "test"]

CIRR_SPLITS: tuple[str, ...] = ("train", "val", "test1")
CIRCO_SPLITS: tuple[str, ...] = ("val", "test")
FASHIONIQ_SPLITS: tuple[str, ...] = ("train", "val", "test")
FASHIONIQ_CATEGORIES: tuple[str, ...] = ("dress", "shirt", "toptee")


class AnnotationError(ValueError):
    """An annotation file is malformed or inconsistent; the message names the file."""


class AnnotationFileNotFoundError(AnnotationError, FileNotFoundError):
    """An expected annotation file does not exist; the message names the expected path."""


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CIRRQuery:
    """One CIRR query. ``target_hard`` / ``target_soft`` are ``None`` in ``test1`` (hidden).

    ``img_set.reference_rank`` / ``target_rank`` are deliberately dropped: they are NLVR2 ordering
    information, not positions in ``members`` (PROTOCOLS §1.1), and no metric uses them."""

    pairid: int
    reference: str
    caption: str
    set_id: int
    members: tuple[str, ...]
    target_hard: str | None = None
    target_soft: Mapping[str, float] | None = field(default=None, hash=False)

    @property
    def subset(self) -> tuple[str, ...]:
        """Recall_subset candidates: ``members`` minus the reference, in file order (PROTOCOLS §2.2)."""
        return tuple(m for m in self.members if m != self.reference)


@dataclass(frozen=True)
class CIRRSplit:
    """A CIRR split: its queries (file order) and its images (name -> path relative to the raw
    image root; always resolve image files through it, train images sit in sub-folders)."""

    split: str
    queries: tuple[CIRRQuery, ...]
    images: Mapping[str, str] = field(hash=False)

    @property
    def gallery(self) -> tuple[str, ...]:
        """Gallery image names in file order (every key of ``split.rc2.<split>.json``). CIRR
        metrics remove each query's reference from it."""
        return tuple(self.images)


@dataclass(frozen=True)
class CIRCOQuery:
    """One CIRCO query. Ground-truth fields are ``None`` in ``test``. ``target_img_id`` is
    ``gt_img_ids[0]``; the gallery (COCO 2017 unlabeled) is not part of the annotations."""

    id: int
    reference_img_id: int
    relative_caption: str
    shared_concept: str
    target_img_id: int | None = None
    gt_img_ids: tuple[int, ...] | None = None
    semantic_aspects: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CIRCOSplit:
    """A CIRCO split; ``queries[i].id == i`` is guaranteed (the server looks queries up by position)."""

    split: str
    queries: tuple[CIRCOQuery, ...]


@dataclass(frozen=True)
class FashionIQQuery:
    """One FashionIQ triplet. ``candidate`` is the reference image; both captions form ONE query
    (how to combine them is model-specific). ``target`` is ``None`` in ``test``."""

    category: str
    index: int
    candidate: str
    captions: tuple[str, str]
    target: str | None = None


@dataclass(frozen=True)
class FashionIQSplit:
    """One FashionIQ category and split: queries in caption-file order and the gallery (every id
    of ``split.<category>.<split>.json``, reference images included)."""

    category: str
    split: str
    queries: tuple[FashionIQQuery, ...]
    gallery: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# paths and reading
# --------------------------------------------------------------------------------------------


def _check_choice(kind: str, value: str, choices: tuple[str, ...], hint: str = "") -> None:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {', '.join(choices)}{hint}")


def cirr_caption_path(root: Path | str, split: str) -> Path:
    _check_choice("CIRR split", split, CIRR_SPLITS, " (the CIRR test split is called 'test1')")
    return Path(root) / "captions" / f"cap.rc2.{split}.json"


def cirr_image_split_path(root: Path | str, split: str) -> Path:
    _check_choice("CIRR split", split, CIRR_SPLITS, " (the CIRR test split is called 'test1')")
    return Path(root) / "image_splits" / f"split.rc2.{split}.json"


def circo_annotation_path(root: Path | str, split: str) -> Path:
    _check_choice("CIRCO split", split, CIRCO_SPLITS)
    return Path(root) / "annotations" / f"{split}.json"


def fashioniq_caption_path(root: Path | str, category: str, split: str) -> Path:
    _check_choice("FashionIQ category", category, FASHIONIQ_CATEGORIES)
    _check_choice("FashionIQ split", split, FASHIONIQ_SPLITS)
    return Path(root) / "captions" / f"cap.{category}.{split}.json"


def fashioniq_image_split_path(root: Path | str, category: str, split: str) -> Path:
    _check_choice("FashionIQ category", category, FASHIONIQ_CATEGORIES)
    _check_choice("FashionIQ split", split, FASHIONIQ_SPLITS)
    return Path(root) / "image_splits" / f"split.{category}.{split}.json"


def read_json_file(path: Path | str) -> Any:
    """Parse a JSON annotation file, turning every failure into an error that names the file."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise AnnotationFileNotFoundError(f"{path}: annotation file {what}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(
            f"{path}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None


class _Record:
    """Field access on one JSON record with errors naming the file and record index."""

    def __init__(self, path: Path, index: int, obj: Any) -> None:
        self.path, self.index = path, index
        if not isinstance(obj, dict):
            self.fail(f"expected a JSON object, got {type(obj).__name__}")
        self.obj: dict[str, Any] = obj

    def fail(self, problem: str) -> None:
        raise AnnotationError(f"{self.path}: record {self.index}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.obj

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in self.obj:
            self.fail(f"missing field {key!r}")
        value = self.obj[key]
        # bool is an int subclass; a JSON true/false is never a valid id or count here.
        if isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.fail(f"field {key!r} must be {names}, got {type(value).__name__} {value!r:.60}")
        return value

    def str_list(self, key: str, *, item: type = str) -> tuple[Any, ...]:
        values = self.get(key, list)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, item):
                self.fail(f"field {key!r} must list {item.__name__} values, found {v!r:.60}")
        return tuple(values)


def _expect_list(path: Path, data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------------
# CIRR
# --------------------------------------------------------------------------------------------


def _load_cirr_images(path: Path) -> dict[str, str]:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise AnnotationError(
            f"{path}: expected a JSON object mapping image name to path, got {type(data).__name__}"
        )
    for name, rel in data.items():
        if not isinstance(rel, str):
            raise AnnotationError(
                f"{path}: image {name!r} maps to {type(rel).__name__}, expected a path string"
            )
    if not data:
        raise AnnotationError(f"{path}: the image split is empty")
    return data


def load_cirr(root: Path | str, split: CIRRSplitName | str = "val") -> CIRRSplit:
    """Load ``captions/cap.rc2.<split>.json`` and ``image_splits/split.rc2.<split>.json``.

    Checks, per query, that the reference, the members and ``target_hard`` are split images and
    that pairids are unique; ``train``/``val`` records must carry ``target_hard`` and
    ``target_soft``. ``target_soft`` is kept verbatim (it is inconsistent with ``target_hard`` in
    42 val queries, PROTOCOLS §1.1)."""
    cap_path = cirr_caption_path(root, split)
    img_path = cirr_image_split_path(root, split)
    images = _load_cirr_images(img_path)
    records = _expect_list(cap_path, read_json_file(cap_path))
    with_gt = split != "test1"
    queries: list[CIRRQuery] = []
    seen: set[int] = set()
    for i, obj in enumerate(records):
        rec = _Record(cap_path, i, obj)
        pairid = rec.get("pairid", int)
        if pairid in seen:
            rec.fail(f"pairid {pairid} occurs twice")
        seen.add(pairid)
        reference = rec.get("reference", str)
        caption = rec.get("caption", str)
        img_set = _Record(cap_path, i, rec.get("img_set", dict))
        set_id = img_set.get("id", int)
        members = img_set.str_list("members")
        target_hard: str | None = None
        target_soft: dict[str, float] | None = None
        if with_gt:
            target_hard = rec.get("target_hard", str)
            soft = rec.get("target_soft", dict)
            for name, value in soft.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    rec.fail(f"target_soft[{name!r}] must be a number, got {value!r:.60}")
            target_soft = {name: float(value) for name, value in soft.items()}
        for role, name in [("reference", reference), ("target_hard", target_hard)] + [
            ("img_set.members", m) for m in members
        ]:
            if name is not None and name not in images:
                rec.fail(f"{role} {name!r} (pairid {pairid}) is not an image of {img_path}")
        queries.append(
            CIRRQuery(
                pairid=pairid,
                reference=reference,
                caption=caption,
                set_id=set_id,
                members=members,
                target_hard=target_hard,
                target_soft=target_soft,
            )
        )
    return CIRRSplit(split=split, queries=tuple(queries), images=images)


# --------------------------------------------------------------------------------------------
# CIRCO
# --------------------------------------------------------------------------------------------


def load_circo(root: Path | str, split: CIRCOSplitName | str = "val") -> CIRCOSplit:
    """Load ``annotations/<split>.json``; checks ``id == list position`` (the server's lookup)
    and, for ``val``, that ``target_img_id == gt_img_ids[0]`` and ``gt_img_ids`` has no duplicates."""
    path = circo_annotation_path(root, split)
    records = _expect_list(path, read_json_file(path))
    with_gt = split == "val"
    queries: list[CIRCOQuery] = []
    for i, obj in enumerate(records):
        rec = _Record(path, i, obj)
        qid = rec.get("id", int)
        if qid != i:
            rec.fail(f"id {qid} differs from its list position {i} (CIRCO looks queries up by position)")
        target = gts = aspects = None
        if with_gt:
            target = rec.get("target_img_id", int)
            gts = rec.str_list("gt_img_ids", item=int)
            aspects = rec.str_list("semantic_aspects")
            if not gts:
                rec.fail("gt_img_ids is empty")
            if len(set(gts)) != len(gts):
                rec.fail("gt_img_ids contains duplicates")
            if gts[0] != target:
                rec.fail(f"target_img_id {target} is not gt_img_ids[0] ({gts[0]})")
        queries.append(
            CIRCOQuery(
                id=qid,
                reference_img_id=rec.get("reference_img_id", int),
                relative_caption=rec.get("relative_caption", str),
                shared_concept=rec.get("shared_concept", str),
                target_img_id=target,
                gt_img_ids=gts,
                semantic_aspects=aspects,
            )
        )
    return CIRCOSplit(split=split, queries=tuple(queries))


# --------------------------------------------------------------------------------------------
# FashionIQ
# --------------------------------------------------------------------------------------------


def load_fashioniq(
    root: Path | str, category: str, split: FashionIQSplitName | str = "val"
) -> FashionIQSplit:
    """Load one category's ``cap.<category>.<split>.json`` and ``split.<category>.<split>.json``.

    Checks that the gallery has no duplicate ids and that every candidate and target is in it
    (SEARLE asserts the same; a target outside the gallery can never be retrieved)."""
    cap_path = fashioniq_caption_path(root, category, split)
    img_path = fashioniq_image_split_path(root, category, split)
    gallery_raw = read_json_file(img_path)
    if not isinstance(gallery_raw, list) or not all(isinstance(x, str) for x in gallery_raw):
        raise AnnotationError(f"{img_path}: expected a JSON list of image id strings")
    if len(set(gallery_raw)) != len(gallery_raw):
        raise AnnotationError(f"{img_path}: the image list contains duplicate ids")
    gallery = tuple(gallery_raw)
    in_gallery = set(gallery)
    records = _expect_list(cap_path, read_json_file(cap_path))
    with_gt = split != "test"
    queries: list[FashionIQQuery] = []
    for i, obj in enumerate(records):
        rec = _Record(cap_path, i, obj)
        candidate = rec.get("candidate", str)
        captions = rec.str_list("captions")
        if len(captions) != 2:
            rec.fail(f"expected exactly 2 captions, got {len(captions)}")
        target = rec.get("target", str) if with_gt else None
        for role, name in (("candidate", candidate), ("target", target)):
            if name is not None and name not in in_gallery:
                rec.fail(f"{role} {name!r} is not an image of {img_path}")
        queries.append(
            FashionIQQuery(
                category=category,
                index=i,
                candidate=candidate,
                captions=(captions[0], captions[1]),
                target=target,
            )
        )
    return FashionIQSplit(category=category, split=split, queries=tuple(queries), gallery=gallery)


def load_fashioniq_all(
    root: Path | str, split: FashionIQSplitName | str = "val"
) -> dict[str, FashionIQSplit]:
    """All three categories of one split, keyed ``dress``, ``shirt``, ``toptee``."""
    return {category: load_fashioniq(root, category, split) for category in FASHIONIQ_CATEGORIES}
