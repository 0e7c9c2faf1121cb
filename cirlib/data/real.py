"""The real CIRR, CIRCO and FashionIQ benchmarks, from the user's folders, as :class:`Benchmark`.

Why: the paper profile evaluates on the real benchmarks, whose images the user downloads and lays
out in one of a few upstream layouts, often incompletely (FashionIQ: only about 74k of its images
are still downloadable, SEARLE issue #11). This module finds the annotation files and the images,
checks which images are missing *before* any model is built, and turns the annotations (parsed by
the strict loaders of :mod:`cirlib.data.annotations`) into queries and galleries of file paths.

Images are never opened here. Existence is checked from directory listings, one
:func:`os.scandir` per folder (never one ``stat`` per image), so a 123k-image COCO folder costs one
listing. The module imports no torch, open_clip or PIL (the CLI checks paths with it first).

Layouts (``DIR`` is the ``--data`` folder; the first match wins; error messages list them all)
----------------------------------------------------------------------------------------------

**CIRR** (split ``val``, or ``test`` = upstream ``test1``)

* annotations: ``DIR/captions/cap.rc2.<split>.json`` + ``DIR/image_splits/split.rc2.<split>.json``;
  else the same under ``DIR/cirr/`` (SEARLE layout: ``CIRR/cirr/captions``); else the project's
  bundled copy ``data/annotations/cirr`` (logged and recorded, never silent).
* images: resolved through the split file (``"dev-244-0-img0": "./dev/dev-244-0-img0.png"``)
  against an image root: ``--images`` if given; else ``DIR`` when ``DIR/dev`` (val) or
  ``DIR/test1`` (test) exists (SEARLE layout); else ``DIR/img_raw`` (CIRR README layout, ``DIR`` being
  its ``cirr`` folder); else ``DIR/cirr/img_raw`` (the same, ``DIR`` being its parent).
* gallery: every key of the split file (val 2,297, test1 2,315).

**CIRCO** (``val``, ``test``)

* annotations: ``DIR/annotations/<split>.json``, else the bundled copy.
* images: ``--images`` if given, else ``DIR/COCO2017_unlabeled/unlabeled2017``.
* gallery: the ids and file names of ``DIR/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json``
  when it exists (as CIRCO's and SEARLE's loaders do); otherwise every file of the image folder,
  its id parsed from the 12-digit COCO name (``000000243611.jpg`` -> ``"243611"``; any other
  name, dot-files aside, is a :class:`DataLayoutError`). The gallery size is thus counted from the
  user's folder, not from the annotations (about 123k images with the full download).

**FashionIQ** (``val``, ``test``; categories ``dress``, ``shirt``, ``toptee``)

* annotations: ``DIR/captions/cap.<cat>.<split>.json`` + ``DIR/image_splits/split.<cat>.<split>.json``,
  else the bundled copy.
* images: ``--images`` if given (flat, or per category when it has ``dress/``, ``shirt/`` or
  ``toptee/`` sub-folders); else ``DIR/images/<ASIN>.jpg`` (SEARLE's flat folder); else
  ``DIR/resized_images/<cat>/<ASIN>.jpg`` (start-kit layout). ``.jpg`` and ``.png`` are accepted.
* galleries: one per category, every id of ``split.<cat>.<split>.json``.

An annotation folder that exists (``captions/``, ``image_splits/`` or ``annotations/``) but lacks a
needed file is an error, not a reason to fall back to the bundled copy.

Queries
-------

* CIRR: ``qid = str(pairid)``, ``texts = (caption,)``, ``target = target_hard`` (``None`` on test),
  ``ground_truth = ()`` (CIRR has one hard label; nothing pretends it is complete), ``subset`` =
  the 6 ``img_set.members`` *including* the reference (the metrics remove it, as for the world's
  CIRR-like queries), ``info = {"target_soft": dict | None}``.
* CIRCO: ``qid = str(id)``, ``reference = str(reference_img_id)``, ``target = str(target_img_id)``
  and ``ground_truth = gt_img_ids`` as strings (``None`` / ``()`` on test), ``info =
  {"semantic_aspects", "shared_concept"}``. The text depends on ``circo_text``:

  - ``"relative"`` (default): ``texts = (relative_caption,)``. This is what SEARLE does: its val
    metrics and its test-submission writer build ``"a photo of $ that {relative_caption}"`` and
    never use ``shared_concept`` (``miccunifi/SEARLE`` ``src/validate.py``,
    ``circo_generate_val_predictions``; ``src/generate_test_submission.py``,
    ``circo_generate_test_predictions``; ``src/datasets.py`` loads the concept but no caller reads
    it). The textual-inversion line that CIG, PrediCIR and IP-CIR compare with (Pic2Word,
    SEARLE, LinCIR) reports CIRCO numbers this way.
  - ``"concept"``: ``texts = (f"find {shared_concept} but {relative_caption}",)``, the MagicLens
    template (``google-deepmind/magiclens`` ``data_utils.py``, ``build_circo_dataset``). MegaPairs /
    BGE-VL also query CIRCO with both fields and cite MagicLens as the common practice
    (``VectorSpaceLab/MegaPairs`` issue #33). The CIRCO README calls the concept "useful to clarify
    ambiguities". Numbers made this way are not comparable with the ``"relative"`` ones.
* FashionIQ: ``qid = f"{category}-{index}"``, ``reference = candidate``, ``texts`` = both captions,
  raw (methods decide how to join them), ``target``, ``category``.

Missing images
--------------

:func:`load_real_benchmark` computes a :class:`MissingImageReport`: gallery images without a file
(per category), and the queries whose reference, target / ground truth, or (CIRR) subset member
has no file. ``on_missing="error"`` (default) raises :class:`MissingImagesError` when anything is
missing. ``on_missing="drop"`` removes missing images from the galleries and drops (val) the
queries whose reference or target is missing, and for CIRR also those with a missing subset
member (Recall_subset needs all 5 candidates). For CIRCO only ``target_img_id`` decides:
other missing ground truths stay in ``ground_truth`` as unreachable items, which keeps the
official AP denominator ``min(K, |G|)`` (PROTOCOLS §2.3, §3). On the *test* split no query may be
dropped (the servers need every query): a missing reference raises even with ``"drop"``; missing
gallery images are still removed and reported, and a CIRR test query with a missing subset member
keeps its query but loses that member from ``subset`` (reported as ``missing_subset``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from cirlib.config import ANNOTATIONS_DIR, atomic_write_json, file_sha256
from cirlib.data import annotations as ann
from cirlib.data.types import Benchmark, Gallery, Query

__all__ = [
    "BENCHMARK_NAMES",
    "CIRCO_TEXT_TEMPLATE",
    "REAL_SPLITS",
    "DataLayout",
    "DataLayoutError",
    "DataNotFoundError",
    "MissingImageReport",
    "MissingImagesError",
    "circo_query_text",
    "load_real_benchmark",
    "resolve_layout",
]

log = logging.getLogger("cirlib.data")

#: Public split name -> upstream split name, per benchmark.
REAL_SPLITS: dict[str, dict[str, str]] = {
    "cirr": {"val": "val", "test": "test1"},
    "circo": {"val": "val", "test": "test"},
    "fashioniq": {"val": "val", "test": "test"},
}
BENCHMARK_NAMES: dict[str, str] = {"cirr": "CIRR", "circo": "CIRCO", "fashioniq": "FashionIQ"}
#: The ``circo_text="concept"`` template (MagicLens ``build_circo_dataset``).
CIRCO_TEXT_TEMPLATE = "find {shared_concept} but {relative_caption}"

_CIRR_IMAGE_DIR = {"val": "dev", "test1": "test1"}
_COCO_NAME = re.compile(r"^(\d{12})\.jpg$")
_FIQ_EXTS = (".jpg", ".png")


class DataNotFoundError(FileNotFoundError):
    """A folder or file of a real benchmark is missing; the message names the path as the user
    gave it, what should be there, and every location tried."""


class DataLayoutError(ValueError):
    """A benchmark folder holds something the layout does not allow (e.g. a CIRCO image whose file
    name is not a 12-digit COCO id); the message names the file."""


class MissingImagesError(RuntimeError):
    """Images named by the annotations have no file; ``.report`` holds the full report."""

    def __init__(self, message: str, report: MissingImageReport) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------------


def _benchmark_key(benchmark: str) -> str:
    key = str(benchmark).lower().replace("-", "").replace("_", "")
    if key not in REAL_SPLITS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(REAL_SPLITS)}")
    return key


def _upstream_split(key: str, split: str) -> str:
    splits = REAL_SPLITS[key]
    if split in splits:
        return splits[split]
    if split in splits.values():
        return split
    raise ValueError(
        f"unknown {BENCHMARK_NAMES[key]} split {split!r}; expected one of {', '.join(splits)}"
        + (" ('test' is CIRR's test1)" if key == "cirr" else "")
    )


def _public_split(key: str, upstream: str) -> str:
    return next(pub for pub, up in REAL_SPLITS[key].items() if up == upstream)


def circo_query_text(relative_caption: str, shared_concept: str, circo_text: str = "relative") -> str:
    """The one text of a CIRCO query under ``circo_text`` (see the module docstring)."""
    if circo_text == "relative":
        return relative_caption
    if circo_text == "concept":
        return CIRCO_TEXT_TEMPLATE.format(shared_concept=shared_concept, relative_caption=relative_caption)
    raise ValueError(f"unknown circo_text {circo_text!r}; expected 'relative' or 'concept'")


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------


def _annotation_files(key: str, split: str, folder: Path) -> list[Path]:
    if key == "cirr":
        return [ann.cirr_caption_path(folder, split), ann.cirr_image_split_path(folder, split)]
    if key == "circo":
        return [ann.circo_annotation_path(folder, split)]
    return [
        path
        for cat in ann.FASHIONIQ_CATEGORIES
        for path in (
            ann.fashioniq_caption_path(folder, cat, split),
            ann.fashioniq_image_split_path(folder, cat, split),
        )
    ]


_ANNOTATION_SUBDIRS = {
    "cirr": ("captions", "image_splits"),
    "circo": ("annotations",),
    "fashioniq": ("captions", "image_splits"),
}


def _layout_help(key: str, split: str, root: str) -> str:
    """The layouts accepted for ``key``, with ``root`` as the user gave it."""
    r = root.rstrip("/\\") or root
    if key == "cirr":
        sub = _CIRR_IMAGE_DIR[split]
        return (
            f"CIRR {split} layouts accepted under {r}:\n"
            f"  SEARLE:      {r}/cirr/captions/cap.rc2.{split}.json, {r}/cirr/image_splits/split.rc2.{split}.json, "
            f"images {r}/{sub}/{sub}-*.png\n"
            f"  flat:        {r}/captions/cap.rc2.{split}.json, {r}/image_splits/split.rc2.{split}.json, "
            f"images {r}/{sub}/...\n"
            f"  CIRR README: images under {r}/img_raw/{sub}/... or {r}/cirr/img_raw/{sub}/...\n"
            f"  --images DIR: the folder that contains {sub}/ (image paths come from split.rc2.{split}.json)\n"
            f"  annotations: when {r} has no captions/ or image_splits/ folder (nor under {r}/cirr), "
            f"the project's bundled copy {ANNOTATIONS_DIR / 'cirr'} is used"
        )
    if key == "circo":
        return (
            f"CIRCO {split} layout accepted under {r} (CIRCO README):\n"
            f"  {r}/annotations/{split}.json (else the bundled copy {ANNOTATIONS_DIR / 'circo'})\n"
            f"  {r}/COCO2017_unlabeled/unlabeled2017/000000243611.jpg, ... (COCO 2017 unlabeled images; "
            f"or --images DIR holding them)\n"
            f"  {r}/COCO2017_unlabeled/annotations/image_info_unlabeled2017.json (optional: without it the "
            f"gallery is every 12-digit .jpg of the image folder)"
        )
    return (
        f"FashionIQ {split} layouts accepted under {r}:\n"
        f"  {r}/captions/cap.<dress|shirt|toptee>.{split}.json, {r}/image_splits/split.<cat>.{split}.json "
        f"(else the bundled copy {ANNOTATIONS_DIR / 'fashioniq'})\n"
        f"  SEARLE:    {r}/images/<ASIN>.jpg (flat)\n"
        f"  start kit: {r}/resized_images/<dress|shirt|toptee>/<ASIN>.jpg\n"
        f"  --images DIR: flat, or with dress/ shirt/ toptee/ sub-folders; .jpg or .png"
    )


@dataclass(frozen=True)
class DataLayout:
    """Where one real benchmark split lives on disk.

    ``split`` is the upstream name (CIRR ``test1``). ``annotations`` is a dataset folder in
    upstream layout; ``annotations_bundled`` says it is the project's copy because the user's folder
    had none. ``images`` is the image root: CIRR's raw-image root (paths from the split file), the
    CIRCO image folder, the FashionIQ image folder (flat, or holding one folder per category).
    ``image_layout`` says how files are found: ``split-file`` (CIRR), ``coco-info`` /
    ``coco-listing`` (CIRCO gallery from the image-info file / from the folder), ``flat`` /
    ``per-category`` (FashionIQ). ``image_info``: CIRCO's image-info file when used."""

    benchmark: str
    split: str
    root: Path
    annotations: Path
    annotations_bundled: bool
    images: Path
    image_layout: str = ""
    image_info: Path | None = None

    @property
    def public_split(self) -> str:
        return _public_split(self.benchmark, self.split)

    def annotation_files(self) -> list[Path]:
        return _annotation_files(self.benchmark, self.split, self.annotations)

    def describe(self) -> dict:
        """JSON-able description: paths as strings, annotation files with their sha256."""
        files = {
            path.relative_to(self.annotations).as_posix(): file_sha256(path) for path in self.annotation_files()
        }
        return {
            "benchmark": self.benchmark,
            "split": self.split,
            "public_split": self.public_split,
            "root": str(self.root),
            "annotations": str(self.annotations),
            "annotations_bundled": self.annotations_bundled,
            "annotation_files": files,
            "images": str(self.images),
            "image_layout": self.image_layout,
            "image_info": None if self.image_info is None else str(self.image_info),
            "image_info_sha256": None if self.image_info is None else file_sha256(self.image_info),
        }


def _find_annotations(key: str, split: str, root: Path, help_text: str) -> tuple[Path, bool]:
    candidates = [root, root / "cirr"] if key == "cirr" else [root]
    for folder in candidates:
        subdirs = [folder / s for s in _ANNOTATION_SUBDIRS[key]]
        if not any(d.is_dir() for d in subdirs):
            continue
        needed = _annotation_files(key, split, folder)
        absent = [p for p in needed if not p.is_file()]
        if absent:
            raise DataNotFoundError(
                f"{BENCHMARK_NAMES[key]} annotation files missing in {folder}: "
                + ", ".join(str(p) for p in absent)
                + f" (the folder has {', '.join(d.name + '/' for d in subdirs if d.is_dir())}, so it is "
                "used as the annotation folder; the bundled copy is only used when it has none)\n" + help_text
            )
        return folder, False
    bundled = ANNOTATIONS_DIR / key
    tried = ", ".join(str(f / s) for f in candidates for s in _ANNOTATION_SUBDIRS[key])
    needed = _annotation_files(key, split, bundled)
    absent = [p for p in needed if not p.is_file()]
    if absent:
        raise DataNotFoundError(
            f"no {BENCHMARK_NAMES[key]} annotations found: tried {tried}, then the bundled copy, which "
            f"lacks {', '.join(str(p) for p in absent)}\n{help_text}"
        )
    log.warning(
        "%s %s: no annotation folder under %s (tried %s); using the project's bundled annotations %s",
        BENCHMARK_NAMES[key],
        split,
        root,
        tried,
        bundled,
    )
    return bundled, True


def _require_dir(path: Path, what: str, help_text: str) -> None:
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise DataNotFoundError(f"{path} {state}: expected {what}\n{help_text}")


def _find_images(
    key: str, split: str, root: Path, images: Path | None, help_text: str
) -> tuple[Path, str, Path | None]:
    if key == "cirr":
        sub = _CIRR_IMAGE_DIR[split]
        what = f"the CIRR {split} images ({sub}/{sub}-*.png, as named by split.rc2.{split}.json)"
        if images is not None:
            _require_dir(images, f"the CIRR raw-image root, holding {sub}/", help_text)
            hint = " (pass the folder that contains it, not the folder itself)" if images.name == sub else ""
            _require_dir(images / sub, what + hint, help_text)
            return images, "split-file", None
        tried = [root / sub, root / "img_raw" / sub, root / "cirr" / "img_raw" / sub]
        for folder in tried:
            if folder.is_dir():
                return folder.parent, "split-file", None
        raise DataNotFoundError(
            f"no CIRR {split} image folder: tried {', '.join(str(t) for t in tried)}; expected {what}\n"
            f"{help_text}"
        )
    if key == "circo":
        info = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
        folder = images if images is not None else root / "COCO2017_unlabeled" / "unlabeled2017"
        has_info = info.is_file()
        note = f" ({info} exists)" if has_info else f" (nor does {info})"
        if not folder.is_dir():
            raise DataNotFoundError(
                f"{folder} {'is not a folder' if folder.exists() else 'does not exist'}{note}: expected the "
                f"COCO 2017 unlabeled images of the CIRCO gallery, 000000243611.jpg, ...\n{help_text}"
            )
        return folder, ("coco-info" if has_info else "coco-listing"), (info if has_info else None)
    # FashionIQ
    if images is not None:
        _require_dir(images, "the FashionIQ images (<ASIN>.jpg, flat or in dress/ shirt/ toptee/)", help_text)
        per_cat = any((images / c).is_dir() for c in ann.FASHIONIQ_CATEGORIES)
        folder, layout = images, ("per-category" if per_cat else "flat")
    elif (root / "images").is_dir():
        folder, layout = root / "images", "flat"
    elif (root / "resized_images").is_dir():
        folder, layout = root / "resized_images", "per-category"
    else:
        raise DataNotFoundError(
            f"no FashionIQ image folder: tried {root / 'images'} (flat, SEARLE) and "
            f"{root / 'resized_images'} (per category, start kit); expected <ASIN>.jpg files\n{help_text}"
        )
    if layout == "per-category":
        for cat in ann.FASHIONIQ_CATEGORIES:
            _require_dir(folder / cat, f"the FashionIQ {cat} images (<ASIN>.jpg)", help_text)
    return folder, layout, None


def resolve_layout(
    benchmark: str, split: str, root: Path | str, *, images: Path | str | None = None
) -> DataLayout:
    """Find the annotation folder and the image root of ``benchmark`` / ``split`` under ``root``.

    Only filesystem checks (no file is parsed). ``split`` is the public name (``val`` / ``test``)
    or the upstream one (CIRR ``test1``). Raises :class:`DataNotFoundError` naming every location
    tried and what must be there."""
    key = _benchmark_key(benchmark)
    up = _upstream_split(key, split)
    root_p = Path(root)
    help_text = _layout_help(key, up, str(root))
    if not root_p.is_dir():
        state = "is a file, not a folder" if root_p.exists() else "does not exist"
        raise DataNotFoundError(
            f"--data folder {root} {state}: expected the {BENCHMARK_NAMES[key]} dataset folder\n{help_text}"
        )
    annotations, bundled = _find_annotations(key, up, root_p, help_text)
    image_root, image_layout, info = _find_images(
        key, up, root_p, None if images is None else Path(images), help_text
    )
    return DataLayout(
        benchmark=key,
        split=up,
        root=root_p,
        annotations=annotations,
        annotations_bundled=bundled,
        images=image_root,
        image_layout=image_layout,
        image_info=info,
    )


# --------------------------------------------------------------------------------------------
# missing-image report
# --------------------------------------------------------------------------------------------


@dataclass
class MissingImageReport:
    """Which images named by the annotations have no file, and what was done about it.

    ``gallery_size``: per category, the gallery as listed (CIRR / FashionIQ: the split files;
    CIRCO: the image-info file or the folder). ``missing_gallery``: gallery ids without a file.
    ``missing_references`` / ``missing_targets`` (target or any ground truth; val only) /
    ``missing_subset`` (CIRR subset member): query ids. ``dropped_queries``: the queries removed
    by ``on_missing="drop"``. ``expected_paths``: the exact path looked for, for every missing
    image id; ``query_missing``: per affected query, its missing image ids by role."""

    benchmark: str
    split: str
    gallery_size: dict[str, int]
    missing_gallery: dict[str, list[str]]
    missing_references: list[str]
    missing_targets: list[str]
    dropped_queries: list[str] = field(default_factory=list)
    missing_subset: list[str] = field(default_factory=list)
    queries_before: int = 0
    queries_after: int = 0
    expected_paths: dict[str, str] = field(default_factory=dict)
    query_missing: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    on_missing: str = "error"

    @property
    def ok(self) -> bool:
        """True when no image named by the annotations is missing."""
        return not (
            any(self.missing_gallery.values())
            or self.missing_references
            or self.missing_targets
            or self.missing_subset
        )

    def summary(self) -> dict:
        """JSON-able counts (no long lists)."""
        return {
            "gallery_size": dict(self.gallery_size),
            "missing_gallery": {cat: len(ids) for cat, ids in self.missing_gallery.items()},
            "missing_references": len(self.missing_references),
            "missing_targets": len(self.missing_targets),
            "missing_subset": len(self.missing_subset),
            "dropped_queries": len(self.dropped_queries),
            "queries_before": self.queries_before,
            "queries_after": self.queries_after,
        }

    def message(self, limit: int = 10) -> str:
        """Human text: counts per role, then the first ``limit`` missing ids of each role with the
        exact path expected."""
        name = BENCHMARK_NAMES.get(self.benchmark, self.benchmark)
        lines = [f"{name} {self.split}: " + ("no image is missing" if self.ok else "images are missing")]
        for cat, size in self.gallery_size.items():
            lines.append(
                f"  gallery {cat}: {len(self.missing_gallery.get(cat, [])):,} of {size:,} images missing"
            )
        n = self.queries_before
        lines.append(f"  references: {len(self.missing_references):,} of {n:,} queries miss theirs")
        lines.append(f"  targets / ground truths: {len(self.missing_targets):,} of {n:,} queries miss one")
        if self.benchmark == "cirr":
            lines.append(f"  CIRR subset members: {len(self.missing_subset):,} of {n:,} queries miss one")
        if self.dropped_queries or self.on_missing == "drop":
            lines.append(
                f"  dropped: {len(self.dropped_queries):,} queries ({self.queries_after:,} of {n:,} kept)"
            )
        if self.benchmark == "fashioniq" and not self.ok:
            lines.append("  (a FashionIQ image may be <ASIN>.jpg or <ASIN>.png; the .jpg path is shown)")
        for cat, ids in self.missing_gallery.items():
            if ids:
                lines.append(f"missing gallery images ({cat}), first {min(limit, len(ids))} of {len(ids):,}:")
                lines += [f"  {i}: {self.expected_paths.get(i, '?')}" for i in ids[:limit]]
        for role, qids, label in (
            ("reference", self.missing_references, "references"),
            ("target", self.missing_targets, "targets / ground truths"),
            ("subset", self.missing_subset, "subset members"),
        ):
            if not qids:
                continue
            lines.append(f"queries with missing {label}, first {min(limit, len(qids))} of {len(qids):,}:")
            for qid in qids[:limit]:
                ids = self.query_missing.get(qid, {}).get(role, [])
                lines += [f"  query {qid}: {role} {i}: {self.expected_paths.get(i, '?')}" for i in ids[:3]]
                if len(ids) > 3:
                    lines.append(f"  query {qid}: ... and {len(ids) - 3} more")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "benchmark": self.benchmark,
            "split": self.split,
            "on_missing": self.on_missing,
            "ok": self.ok,
            "summary": self.summary(),
            "gallery_size": self.gallery_size,
            "missing_gallery": self.missing_gallery,
            "missing_references": self.missing_references,
            "missing_targets": self.missing_targets,
            "missing_subset": self.missing_subset,
            "dropped_queries": self.dropped_queries,
            "expected_paths": self.expected_paths,
            "query_missing": self.query_missing,
        }

    def write(self, path: Path) -> None:
        """The full report (every list) as JSON, written atomically."""
        atomic_write_json(Path(path), self.to_json())


# --------------------------------------------------------------------------------------------
# image files
# --------------------------------------------------------------------------------------------


def _listing(folder: Path | str) -> set[str]:
    """Names in ``folder`` (one scandir; an absent folder is empty)."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries}
    except (FileNotFoundError, NotADirectoryError):
        return set()


@dataclass
class _Files:
    """One gallery's ids, the path of each id (found, or expected), and which have a file."""

    ids: list[str]
    paths: dict[str, str]
    present: set[str]
    expected: Callable[[str], str]

    def path(self, image_id: str) -> str:
        return self.paths.get(image_id) or self.expected(image_id)


def _cirr(layout: DataLayout) -> tuple[list[Query], dict[str, _Files]]:
    data = ann.load_cirr(layout.annotations, layout.split)
    base = os.path.abspath(layout.images)
    rel = {name: os.path.normpath(p) for name, p in data.images.items()}
    listings = {d: _listing(os.path.join(base, d)) for d in {os.path.dirname(r) for r in rel.values()}}
    paths = {name: os.path.join(base, r) for name, r in rel.items()}
    present = {name for name, r in rel.items() if os.path.basename(r) in listings[os.path.dirname(r)]}
    files = _Files(list(data.images), paths, present, lambda i: f"<{i} is not in the split file>")
    queries = [
        Query(
            qid=str(q.pairid),
            reference=q.reference,
            texts=(q.caption,),
            target=q.target_hard,
            ground_truth=(),
            subset=tuple(q.members),
            category="all",
            info={"target_soft": None if q.target_soft is None else dict(q.target_soft)},
        )
        for q in data.queries
    ]
    return queries, {"all": files}


def _circo_gallery(layout: DataLayout) -> _Files:
    folder = os.path.abspath(layout.images)
    names = _listing(layout.images)
    expected = lambda i: os.path.join(folder, f"{int(i):012d}.jpg")
    if layout.image_info is not None:
        info = ann.read_json_file(layout.image_info)
        entries = info.get("images") if isinstance(info, dict) else None
        if not isinstance(entries, list):
            raise ann.AnnotationError(f"{layout.image_info}: expected a JSON object with an 'images' list")
        ids: list[str] = []
        paths: dict[str, str] = {}
        present: set[str] = set()
        for k, entry in enumerate(entries):
            ok = isinstance(entry, dict) and isinstance(entry.get("file_name"), str)
            image_id = entry.get("id") if ok else None
            if not ok or isinstance(image_id, bool) or not isinstance(image_id, int):
                raise ann.AnnotationError(
                    f"{layout.image_info}: images[{k}] needs an int 'id' and a str 'file_name', got {entry!r:.80}"
                )
            sid = str(image_id)
            if sid in paths:
                raise ann.AnnotationError(f"{layout.image_info}: image id {image_id} is listed twice")
            ids.append(sid)
            paths[sid] = os.path.join(folder, entry["file_name"])
            if entry["file_name"] in names:
                present.add(sid)
        log.info("CIRCO gallery: %d images listed by %s", len(ids), layout.image_info)
        return _Files(ids, paths, present, expected)
    parsed: list[tuple[int, str]] = []
    for name in names:
        if name.startswith("."):
            continue
        match = _COCO_NAME.match(name)
        if match is None:
            raise DataLayoutError(
                f"{os.path.join(layout.images, name)}: not a COCO image name (12 digits + .jpg, e.g. "
                f"000000243611.jpg), so no CIRCO image id can be read from it. Without "
                f"{layout.root / 'COCO2017_unlabeled' / 'annotations' / 'image_info_unlabeled2017.json'} "
                f"the gallery is every file of {layout.images}: remove the file or add the image-info file"
            )
        parsed.append((int(match.group(1)), name))
    parsed.sort()
    ids = [str(i) for i, _ in parsed]
    paths = {str(i): os.path.join(folder, name) for i, name in parsed}
    log.info(
        "CIRCO gallery: %d images listed from the folder %s (no image-info file)", len(ids), layout.images
    )
    return _Files(ids, paths, set(ids), expected)


def _circo(layout: DataLayout, circo_text: str) -> tuple[list[Query], dict[str, _Files]]:
    data = ann.load_circo(layout.annotations, layout.split)
    files = _circo_gallery(layout)
    queries = [
        Query(
            qid=str(q.id),
            reference=str(q.reference_img_id),
            texts=(circo_query_text(q.relative_caption, q.shared_concept, circo_text),),
            target=None if q.target_img_id is None else str(q.target_img_id),
            ground_truth=() if q.gt_img_ids is None else tuple(str(g) for g in q.gt_img_ids),
            category="all",
            info={"semantic_aspects": q.semantic_aspects, "shared_concept": q.shared_concept},
        )
        for q in data.queries
    ]
    return queries, {"all": files}


def _fashioniq(layout: DataLayout) -> tuple[list[Query], dict[str, _Files]]:
    flat = layout.image_layout == "flat"
    flat_names = _listing(layout.images) if flat else set()
    queries: list[Query] = []
    galleries: dict[str, _Files] = {}
    for cat in ann.FASHIONIQ_CATEGORIES:
        data = ann.load_fashioniq(layout.annotations, cat, layout.split)
        folder = os.path.abspath(layout.images if flat else layout.images / cat)
        names = flat_names if flat else _listing(folder)
        paths: dict[str, str] = {}
        present: set[str] = set()
        for image_id in data.gallery:
            found = next((image_id + e for e in _FIQ_EXTS if image_id + e in names), None)
            paths[image_id] = os.path.join(folder, found or image_id + ".jpg")
            if found is not None:
                present.add(image_id)
        expected = lambda i, folder=folder: os.path.join(folder, i + ".jpg")
        galleries[cat] = _Files(list(data.gallery), paths, present, expected)
        queries += [
            Query(
                qid=f"{cat}-{q.index}",
                reference=q.candidate,
                texts=tuple(q.captions),
                target=q.target,
                category=cat,
            )
            for q in data.queries
        ]
    return queries, galleries


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _check_missing(
    layout: DataLayout, queries: list[Query], files: dict[str, _Files], on_missing: str
) -> tuple[MissingImageReport, list[Query], dict[str, Gallery]]:
    key = layout.benchmark
    is_test = layout.public_split == "test"
    report = MissingImageReport(
        benchmark=key,
        split=layout.split,
        gallery_size={cat: len(f.ids) for cat, f in files.items()},
        missing_gallery={cat: [i for i in f.ids if i not in f.present] for cat, f in files.items()},
        missing_references=[],
        missing_targets=[],
        queries_before=len(queries),
        on_missing=on_missing,
    )
    for cat, ids in report.missing_gallery.items():
        for i in ids:
            report.expected_paths[i] = files[cat].path(i)
    kept: list[Query] = []
    for q in queries:
        f = files[q.category]
        roles: dict[str, list[str]] = {}
        if q.reference not in f.present:
            roles["reference"] = [q.reference]
        wanted = list(dict.fromkeys(([q.target] if q.target is not None else []) + list(q.ground_truth)))
        absent = [i for i in wanted if i not in f.present]
        if absent:
            roles["target"] = absent
        if q.subset is not None:
            absent = [m for m in q.subset if m != q.reference and m not in f.present]
            if absent:
                roles["subset"] = absent
        if roles:
            report.query_missing[q.qid] = roles
            for ids in roles.values():
                for i in ids:
                    report.expected_paths[i] = f.path(i)
            if "reference" in roles:
                report.missing_references.append(q.qid)
            if "target" in roles:
                report.missing_targets.append(q.qid)
            if "subset" in roles:
                report.missing_subset.append(q.qid)
        drop = "reference" in roles or (q.target is not None and q.target not in f.present)
        if key == "cirr" and "subset" in roles:
            if is_test:
                kept_members = tuple(m for m in q.subset if m == q.reference or m in f.present)
                q = replace(q, subset=kept_members)
            else:
                drop = True
        if drop and on_missing == "drop" and not is_test:
            report.dropped_queries.append(q.qid)
        else:
            kept.append(q)
    report.queries_after = len(kept)  # == len(queries) unless on_missing="drop" dropped some
    if not report.ok and on_missing == "error":
        if not is_test:
            hint = 'pass --on-missing drop (cirlib eval) or on_missing="drop" to drop the affected queries and the missing gallery images'
        elif report.missing_references:
            hint = "a test split cannot drop queries (the server needs every one): download the references"
        else:
            hint = 'pass --on-missing drop (cirlib eval) or on_missing="drop" to remove the missing gallery images (every test query is kept)'
        raise MissingImagesError(f"{report.message()}\n{hint}, or complete the download", report)
    if is_test and report.missing_references:
        raise MissingImagesError(
            report.message() + f"\n{len(report.missing_references):,} {layout.split} queries have no "
            "reference image; a test split cannot drop queries (the evaluation server needs every one), "
            "so these images must be downloaded",
            report,
        )
    galleries = {
        cat: Gallery(
            ids=[i for i in f.ids if i in f.present], paths=[f.paths[i] for i in f.ids if i in f.present]
        )
        for cat, f in files.items()
    }
    return report, kept, galleries


def load_real_benchmark(
    benchmark: str,
    split: str,
    root: Path | str,
    *,
    images: Path | str | None = None,
    on_missing: Literal["error", "drop"] = "error",
    circo_text: Literal["relative", "concept"] = "relative",
    report_path: Path | None = None,
) -> tuple[Benchmark, MissingImageReport]:
    """Load a real benchmark split from the user's folders (see the module docstring).

    Returns the :class:`Benchmark` (galleries of absolute file paths, no pixels) and its
    :class:`MissingImageReport`. ``report_path``: where to write the full report (always, when
    given; also before :class:`MissingImagesError` is raised)."""
    if on_missing not in ("error", "drop"):
        raise ValueError(f"unknown on_missing {on_missing!r}; expected 'error' or 'drop'")
    circo_query_text("", "", circo_text)  # validates circo_text before any work
    layout = resolve_layout(benchmark, split, root, images=images)
    if layout.benchmark == "cirr":
        queries, files = _cirr(layout)
    elif layout.benchmark == "circo":
        queries, files = _circo(layout, circo_text)
    else:
        queries, files = _fashioniq(layout)
    try:
        report, queries, galleries = _check_missing(layout, queries, files, on_missing)
    except MissingImagesError as err:
        if report_path is not None:
            err.report.write(Path(report_path))
            err.args = (f"{err.args[0]}\nfull report: {report_path}",)
        raise
    if report_path is not None:
        report.write(Path(report_path))
    if not report.ok:
        log.warning(
            "%s %s: missing images handled by on_missing=%r: %s",
            BENCHMARK_NAMES[layout.benchmark],
            layout.split,
            on_missing,
            report.summary(),
        )
    bench = Benchmark(
        name=BENCHMARK_NAMES[layout.benchmark],
        form=layout.benchmark,  # type: ignore[arg-type]
        split=layout.public_split,
        queries=queries,
        galleries=galleries,
        version="rc2" if layout.benchmark == "cirr" else "",
        meta={
            "layout": layout.describe(),
            "missing": report.summary(),
            "circo_text": circo_text if layout.benchmark == "circo" else None,
        },
    )
    return bench, report
