"""Search your own images: index a folder with any method's CLIP and run a composed query on it.

::

    from cirlib.methods import build_method
    from cirlib.search import for_image_files, index_folder, search

    method = for_image_files(build_method("sum", "tiny"))
    gallery = index_folder("photos/", method)  # encoded once, then cached
    for image_id, path, score in search(method, gallery, "photos/cat.jpg", ["make it a dog"], k=5):
        print(f"{score:.3f} {path}")

**Indexing.** :func:`index_folder` makes a :class:`~cirlib.data.types.Gallery` of every image file
under a folder (:data:`IMAGE_EXTENSIONS`, any case, recursively; names starting with "." -- hidden
files and folders, macOS ``._*`` resource forks -- are skipped), sorted by id for determinism, with
ids the paths relative to the folder (POSIX form). It is encoded through the method's own file
gallery path (:meth:`cirlib.methods.base.Method.gallery_features`): cached in shards keyed by the
files' ids, sizes and modification times, so a second run reads the cache, an interrupted one
resumes at the first shard not on disk, and moving the folder keeps the cache valid.

**The tiny profile on image files.** The tiny CLIP preprocesses in-memory uint8 arrays
(``preprocess="tensor"``) and its ``encode_image_files`` refuses to read files (it needs
``preprocess="pil"``). :func:`for_image_files` gives a method a twin of its CLIP -- the same network,
read through open_clip's inference transform at the tiny CLIP's 64 px (short side resized with
antialiased bilinear interpolation, then a centre crop, CLIP's mean and std) -- so files of any size
work. For 64 px images the twin's features equal the tiny profile's in-memory ones exactly; its cache
key differs (its preprocessing does). Paper-profile methods already read files and are returned as is.

The torch-free helpers (:func:`list_images`, :func:`folder_gallery`, :func:`check_reference`,
:func:`check_paper_files`) let ``cirlib search`` reject a bad path before torch is imported.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from cirlib.data.types import Gallery, Query

if TYPE_CHECKING:
    from cirlib.methods.base import Method
    from cirlib.run import EvalConfig

log = logging.getLogger("cirlib.search")

#: File extensions indexed (compared in lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

#: The query id of a search (queries need one; it appears nowhere else).
QUERY_ID = "search"


class SearchError(ValueError):
    """A folder, an image or a reference cannot be used; one line naming the file and what to do."""


class Hit(NamedTuple):
    """One result: gallery id (path relative to the folder), file path, similarity (higher is better)."""

    id: str
    path: str
    score: float


# ------------------------------------------------------------------------------ torch-free checks
def list_images(folder: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[str]:
    """The image files under ``folder`` as sorted ids: POSIX paths relative to it (recursive; names
    starting with "." skipped). Raises :class:`SearchError` when the folder is missing, is not a
    folder or holds no image."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise SearchError(f"{root}: image folder not found; give an existing folder of images")
    if not root.is_dir():
        raise SearchError(f"{root}: not a folder; give the folder that holds the images")
    wanted = tuple(e.lower() for e in extensions)
    ids = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(wanted):
                ids.append((rel / name).as_posix())
    if not ids:
        raise SearchError(
            f"{root}: no image files ({' '.join(extensions)}) in this folder or its subfolders; "
            "give a folder of images"
        )
    return sorted(ids)


def folder_gallery(folder: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Gallery:
    """A file gallery of the images under ``folder`` (see :func:`list_images`); nothing is read."""
    root = Path(folder).expanduser()
    ids = list_images(root, extensions)
    return Gallery(ids=ids, paths=[str(root / i) for i in ids])


def check_reference(reference: str | Path) -> Path:
    """The reference image file, checked to exist and decode (PIL, no torch). Raises
    :class:`SearchError` naming it."""
    path = Path(reference).expanduser()
    if not path.exists():
        raise SearchError(f"{path}: reference image not found; give an existing image file")
    if not path.is_file():
        raise SearchError(f"{path}: the reference is not a file; give an image file")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise SearchError(
            f"{path}: cannot read this reference image ({_one_line(str(err))}); give a readable "
            f"image file ({' '.join(IMAGE_EXTENSIONS)})"
        ) from None
    return path


def check_paper_files(cfg: EvalConfig) -> dict[str, Any]:
    """The weight files (and, for ``cig`` / ``predicir``, generator folders or checkpoint) a
    paper-profile search needs, checked without importing torch as ``cirlib eval`` does
    (:func:`cirlib.run.check_model_files`). Raises :class:`cirlib.run.RunError`."""
    from cirlib.run import check_method_options, check_model_files

    check_method_options(cfg)
    return check_model_files(cfg) if cfg.profile == "paper" else {}


# ------------------------------------------------------------------------------ methods on files
def reads_image_files(method: Method) -> bool:
    """Whether the method's CLIP can encode image files (``preprocess="pil"``)."""
    return method.clip.preprocess == "pil"


def for_image_files(method: Method) -> Method:
    """``method`` itself if its CLIP reads image files (paper profile), else a shallow copy whose
    CLIP is a file-reading twin of the tiny one (same network; see the module docstring) and whose
    in-memory memos are fresh. Other parts (phi, generator, caches) are shared."""
    if reads_image_files(method):
        return method
    from cirlib.models.clip import OPENAI_MEAN, OPENAI_STD, CLIPModel

    clip = method.clip
    twin = CLIPModel(
        clip.model,
        clip.model_config,
        name=clip.name,
        profile=clip.profile,  # type: ignore[arg-type]
        preprocess="pil",
        preprocess_cfg={
            "size": clip.image_size,
            "mode": "RGB",
            "mean": tuple(OPENAI_MEAN),
            "std": tuple(OPENAI_STD),
            "interpolation": "bilinear",  # as the tiny profile's antialiased resize
            "resize_mode": "shortest",
            "fill_color": 0,
        },
    ).to(clip.device, clip.precision)
    other = copy.copy(method)
    other.clip = twin
    other._memo = {}
    if hasattr(other, "_views_memo"):  # CIG's per-batch memo is keyed by gallery ids, not the CLIP
        other._views_memo = {}
    return other


def _one_line(message: str) -> str:
    """The message of an error, on one line; for an error re-raised from a DataLoader worker (whose
    message carries the worker's traceback), the original exception's own message."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > 1 and "Original Traceback" in message:
        last = lines[-1]
        head, sep, tail = last.partition(": ")
        return tail if sep and "Error" in head else last
    return " ".join(lines)


def _encode_error(err: Exception) -> SearchError:
    return SearchError(
        f"{_one_line(str(err))}; replace or remove this file and run again (images already encoded "
        "are reused from the cache)"
    )


def _require_file_method(method: Method) -> None:
    if not reads_image_files(method):
        raise SearchError(
            f"method {method.name!r}: its CLIP {method.clip.name!r} encodes in-memory arrays only; pass "
            "cirlib.search.for_image_files(method) to read image files"
        )


def _encode(method: Method, gallery: Gallery):
    """``method.gallery_features(gallery)``, with an unreadable or vanished file as :class:`SearchError`."""
    from cirlib.models.clip import ImageFileError

    try:
        return method.gallery_features(gallery)
    except (ImageFileError, FileNotFoundError) as err:
        raise _encode_error(err) from None


# ------------------------------------------------------------------------------ index and search
def index_folder(
    folder: str | Path, method: Method, *, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> Gallery:
    """The file gallery of every image under ``folder`` (see :func:`list_images`), encoded with
    ``method`` through its cached, resumable file-gallery path. ``method`` must read image files
    (wrap a tiny-profile one with :func:`for_image_files`). Raises :class:`SearchError` for a missing
    or image-less folder and for an image that cannot be read (naming it)."""
    _require_file_method(method)
    gallery = folder_gallery(folder, extensions)
    misses = method.cache.misses
    features = _encode(method, gallery)
    encoded = method.cache.misses - misses
    log.info(
        "indexed %d images under %s (%s)",
        len(gallery),
        folder,
        f"{encoded} shard(s) encoded now" if encoded else "from the cache",
    )
    assert features.shape[0] == len(gallery)
    return gallery


def reference_in_gallery(gallery: Gallery, reference: str | Path) -> str | None:
    """The id of the gallery image that is the file ``reference`` (the same path once links are
    resolved; only files with the reference's name or its link target's name are compared), or None."""
    if gallery.paths is None:
        raise ValueError("search needs a file gallery (see index_folder)")
    given = Path(reference).expanduser()
    target = given.resolve()
    names = {given.name, target.name}
    for image_id, path in zip(gallery.ids, gallery.paths, strict=True):
        if Path(path).name in names and Path(path).resolve() == target:
            return image_id
    return None


def search(
    method: Method, gallery: Gallery, reference: str | Path, texts: list[str], k: int = 10
) -> list[Hit]:
    """The ``k`` best gallery images for the composed query (``reference`` image + ``texts``) by
    decreasing score (ties: gallery order; fewer if the gallery is smaller), as :class:`Hit`
    ``(id, path, score)`` tuples.

    ``reference`` may be one of the gallery's files: then it is **excluded from the results**, as
    CIRR's protocol does (it would otherwise rank first for any method that looks at it), and its
    features come from the cached gallery. Any other readable image file works too: it is encoded as
    a one-image gallery of its own (cached like any file gallery) and nothing is excluded. Several
    texts are joined as the method joins FashionIQ's two captions (``method.caption_join``).
    The scores are those of ``method.score`` for the same query and gallery."""
    import numpy as np
    import torch

    from cirlib.models.clip import ImageFileError

    _require_file_method(method)
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise SearchError("give the modification text as a list of one or more strings")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise SearchError(f"k must be a whole number >= 1, not {k!r}")
    path = check_reference(reference)
    inside = reference_in_gallery(gallery, path)
    if inside is not None:
        query = Query(qid=QUERY_ID, reference=inside, texts=tuple(texts), target=None)
        try:
            scores = method.score([query], gallery)[0]
        except (ImageFileError, FileNotFoundError) as err:
            raise _encode_error(err) from None
        excluded = gallery.index(inside)
    else:
        own = Gallery(ids=[str(path.resolve())], paths=[str(path)])
        query = Query(qid=QUERY_ID, reference=own.ids[0], texts=tuple(texts), target=None)
        g = _encode(method, gallery)  # before the query: encoding the reference evicts its memo
        try:
            with torch.inference_mode():
                q = method.encode_queries([query], own)
        except (ImageFileError, FileNotFoundError) as err:
            raise _encode_error(err) from None
        scores = (q @ g.T).numpy().astype(np.float32, copy=False)[0]
        excluded = None
    rows = np.arange(len(gallery))
    if excluded is not None:
        rows = rows[rows != excluded]
    order = rows[np.argsort(-scores[rows], kind="stable")][:k]
    return [Hit(gallery.ids[i], gallery.paths[i], float(scores[i])) for i in order]  # type: ignore[index]
