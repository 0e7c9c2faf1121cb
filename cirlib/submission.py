"""Read, strictly validate and score prediction files; write CIRR and CIRCO test-server files.

Why strict: a submission that silently drops queries, repeats an id or ranks the CIRR reference
gives numbers that are not comparable with papers (PROTOCOLS §2.5, §3). Every problem raises
:class:`SubmissionError` (a ``ValueError``) with a *one-line* message ``<file>: <problem>``, so
that ``cirlib score`` can print it as is.

Formats (PROTOCOLS §2.5):

* **CIRR**: ``{"version": "rc2", "metric": "recall", "<pairid>": [<= 50 image names], ...}`` and a
  second file with ``"metric": "recall_subset"`` and ``<= 3`` names per query taken from
  ``img_set.members`` minus the reference. Every pairid of the split must be present; names must
  be images of the split, never the query's own reference (CIRR removes it from the gallery).
* **CIRCO**: ``{"<query id>": [<= 50 COCO ids], ...}`` with every id ``"0"..."n-1"``; ids are ints
  or numeric strings; duplicates are rejected (as the server does). The reference is allowed.
* **FashionIQ** (cirlib's own format; there is no server): ``{"dress": [[<= 50 ids] per query in
  the order of cap.dress.val.json], "shirt": [...], "toptee": [...]}``; ids must be in the
  category's gallery; the reference (candidate) is allowed.
"""

from __future__ import annotations

import json
import logging
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from cirlib.config import atomic_write_json
from cirlib.data.annotations import (
    FASHIONIQ_CATEGORIES,
    CIRCOSplit,
    CIRRSplit,
    FashionIQSplit,
    load_circo,
    load_cirr,
    load_fashioniq_all,
)
from cirlib.metrics import circo_metrics, cirr_metrics, fashioniq_metrics

__all__ = [
    "BENCHMARKS",
    "CIRR_SUBSET_TOP",
    "CIRR_VERSION",
    "MAX_FILE_BYTES",
    "TOP_N",
    "SubmissionError",
    "read_circo_predictions",
    "read_cirr_predictions",
    "read_fashioniq_predictions",
    "read_prediction_json",
    "score_predictions",
    "validate_circo_predictions",
    "validate_cirr_predictions",
    "validate_fashioniq_predictions",
    "write_circo_submission",
    "write_cirr_submission",
    "write_fashioniq_predictions",
]

BENCHMARKS: tuple[str, ...] = ("cirr", "circo", "fashioniq")
#: Longest ranking the servers take (and all that matters for K <= 50).
TOP_N = 50
#: Longest list of the CIRR ``recall_subset`` file (Recall_subset@1,2,3).
CIRR_SUBSET_TOP = 3
CIRR_VERSION = "rc2"
CIRR_METRICS: tuple[str, ...] = ("recall", "recall_subset")
#: The CIRR server's upload limit per file (``Test-split_server.md``: "at most 5 MB").
MAX_FILE_BYTES = 5_000_000

_NUMERIC = re.compile(r"[0-9]+")


log = logging.getLogger("cirlib.submission")


class SubmissionError(ValueError):
    """A prediction file is missing or invalid; the message is one line naming file and problem."""


def _short(value: Any, width: int = 60) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _fail(source: str | Path, problem: str) -> NoReturn:
    raise SubmissionError(f"{source}: {problem}".replace("\n", " "))


def read_prediction_json(path: Path | str) -> Any:
    """Parse a prediction file; a missing file, non-UTF-8 bytes or bad JSON raise SubmissionError."""
    path = Path(path)
    if not path.is_file():
        _fail(path, "is a directory, not a prediction file" if path.is_dir() else "prediction file not found")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as err:
        _fail(path, f"not UTF-8 text ({err.reason} at byte {err.start})")
    except json.JSONDecodeError as err:
        _fail(path, f"invalid JSON ({err.msg} at line {err.lineno} column {err.colno})")
    except _DuplicateKey as err:
        _fail(
            path, f"key {_short(err.args[0])} occurs twice in a JSON object (two predictions for one query?)"
        )


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` keeps the last of repeated keys silently; a prediction file must not."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _check_ranking(
    source: str | Path,
    where: str,
    value: Any,
    max_len: int,
    item: Callable[[Any], Any],
    item_desc: str,
) -> list[Any]:
    """Shared list checks: a JSON list, at most ``max_len`` entries, each converted by ``item``
    (which returns None when the entry is invalid), no duplicates after conversion."""
    if not isinstance(value, list):
        _fail(source, f"{where}: expected a list of {item_desc}s, got {type(value).__name__}")
    if len(value) > max_len:
        _fail(source, f"{where}: list has {len(value)} entries, more than the {max_len} allowed")
    out: list[Any] = []
    seen: set[Any] = set()
    for entry in value:
        converted = item(entry)
        if converted is None:
            article = "an" if item_desc[0] in "aeiou" else "a"
            _fail(source, f"{where}: entry {_short(entry)} is not {article} {item_desc}")
        if converted in seen:
            _fail(source, f"{where}: duplicate id {_short(entry)} in the list")
        seen.add(converted)
        out.append(converted)
    return out


def _as_name(entry: Any) -> str | None:
    return entry if isinstance(entry, str) else None


def _as_coco_id(entry: Any) -> int | None:
    if isinstance(entry, bool):
        return None
    if isinstance(entry, numbers.Integral):  # JSON ints, and numpy ints when writing
        return int(entry) if entry >= 0 else None
    if isinstance(entry, str) and _NUMERIC.fullmatch(entry):
        return int(entry)
    return None


def _missing_message(missing: Sequence[str], total: int, what: str) -> str:
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    return f"missing query id(s) {shown} ({len(missing)} of {total} {what} have no prediction)"


# --------------------------------------------------------------------------------------------
# CIRR
# --------------------------------------------------------------------------------------------


def validate_cirr_predictions(
    obj: Any, split: CIRRSplit, *, metric: str = "recall", source: str | Path = "<predictions>"
) -> dict[int, list[str]]:
    """Validate a parsed CIRR server file against ``split`` and return ``{pairid: names}``.

    ``metric="recall"``: at most 50 gallery names per query. The query's own reference is not part
    of its gallery (PROTOCOLS §2.1): if a list names it, it is dropped, keeping the order of the
    rest, exactly as SEARLE's reference mask removes it from a ranking, and a warning is logged.
    ``metric="recall_subset"``: at most 3 names, all in ``members`` minus the reference."""
    if metric not in CIRR_METRICS:
        raise ValueError(f"unknown CIRR metric {metric!r}; expected one of {', '.join(CIRR_METRICS)}")
    if not isinstance(obj, dict):
        _fail(source, f"expected a JSON object with pairid keys, got {type(obj).__name__}")
    for key, expected in (("version", CIRR_VERSION), ("metric", metric)):
        if key not in obj:
            _fail(source, f'missing key "{key}" (expected "{key}": "{expected}")')
        if obj[key] != expected:
            _fail(source, f'"{key}" is {_short(obj[key])}, expected "{expected}"')
    by_key = {str(q.pairid): q for q in split.queries}
    for key in obj:
        if key not in by_key and key not in ("version", "metric"):
            _fail(source, f"unknown query id {_short(key)} (not a pairid of the CIRR {split.split} split)")
    missing = [key for key in by_key if key not in obj]
    if missing:
        _fail(source, _missing_message(missing, len(by_key), f"CIRR {split.split} pairids"))
    max_len = TOP_N if metric == "recall" else CIRR_SUBSET_TOP
    out: dict[int, list[str]] = {}
    dropped_reference = 0
    for key, query in by_key.items():
        where = f"query {key}"
        names = _check_ranking(source, where, obj[key], max_len, _as_name, "image name string")
        allowed = set(query.subset) if metric == "recall_subset" else None
        for name in names:
            if allowed is not None:
                if name not in allowed:
                    _fail(
                        source,
                        f"{where}: {_short(name)} is outside the query's subset (img_set.members minus "
                        f"the reference {query.reference})",
                    )
            elif name not in split.images:
                _fail(source, f"{where}: {_short(name)} is not an image of the CIRR {split.split} split")
        if allowed is None and query.reference in names:
            dropped_reference += 1
            names = [n for n in names if n != query.reference]
        out[query.pairid] = names
    if dropped_reference:
        log.warning(
            "%s: %d lists name their own reference; it was dropped before scoring (CIRR removes the "
            "reference from the gallery), so those lists rank one image fewer",
            source,
            dropped_reference,
        )
    return out


def read_cirr_predictions(
    path: Path | str, split: CIRRSplit, *, metric: str = "recall"
) -> dict[int, list[str]]:
    """Read and validate a CIRR server file (``recall`` or ``recall_subset``) against ``split``."""
    return validate_cirr_predictions(read_prediction_json(path), split, metric=metric, source=path)


def _default_subset_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_subset{path.suffix or '.json'}")


def _check_size(path: Path, obj: Any) -> None:
    size = len((json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())
    if size > MAX_FILE_BYTES:
        _fail(path, f"would be {size} bytes, over the server's {MAX_FILE_BYTES}-byte limit")


def write_cirr_submission(
    path: Path | str,
    pairids: Sequence[int],
    rankings: Sequence[Sequence[str]],
    subset_rankings: Sequence[Sequence[str]],
    *,
    split: CIRRSplit | None = None,
    subset_path: Path | str | None = None,
) -> tuple[Path, Path]:
    """Write the two CIRR server files and return their paths.

    ``path`` gets ``{"version": "rc2", "metric": "recall", "<pairid>": [top 50 names]}``; the
    subset file (default ``<stem>_subset.json`` next to it, mirroring the official demo names
    ``test1_pred_ranks_recall{,_subset}.json``) gets the top 3 of each subset ranking.
    Rankings are truncated to 50 / 3 entries; they must already exclude the reference. When
    ``split`` is given (normally the ``test1`` split) the files are validated against it exactly
    as :func:`read_cirr_predictions` would, *before* anything is written. Writes are atomic."""
    path = Path(path)
    sub_path = Path(subset_path) if subset_path is not None else _default_subset_path(path)
    if not len(pairids) == len(rankings) == len(subset_rankings):
        raise ValueError(
            f"pairids ({len(pairids)}), rankings ({len(rankings)}) and subset_rankings "
            f"({len(subset_rankings)}) must have the same length"
        )
    recall: dict[str, Any] = {"version": CIRR_VERSION, "metric": "recall"}
    subset: dict[str, Any] = {"version": CIRR_VERSION, "metric": "recall_subset"}
    for pairid, ranking, sub in zip(pairids, rankings, subset_rankings, strict=True):
        key = str(int(pairid))
        if key in recall:
            _fail(path, f"pairid {key} given twice")
        recall[key] = [str(x) for x in list(ranking)[:TOP_N]]
        subset[key] = [str(x) for x in list(sub)[:CIRR_SUBSET_TOP]]
    if split is not None:
        validate_cirr_predictions(recall, split, metric="recall", source=path)
        validate_cirr_predictions(subset, split, metric="recall_subset", source=sub_path)
    else:
        for key in recall:
            if key not in ("version", "metric"):
                _check_ranking(path, f"query {key}", recall[key], TOP_N, _as_name, "image name")
                _check_ranking(sub_path, f"query {key}", subset[key], CIRR_SUBSET_TOP, _as_name, "image name")
    _check_size(path, recall)
    _check_size(sub_path, subset)
    atomic_write_json(path, recall)
    atomic_write_json(sub_path, subset)
    return path, sub_path


# --------------------------------------------------------------------------------------------
# CIRCO
# --------------------------------------------------------------------------------------------


def validate_circo_predictions(
    obj: Any, split: CIRCOSplit | int, *, source: str | Path = "<predictions>"
) -> dict[int, list[int]]:
    """Validate a parsed CIRCO file; keys must be exactly ``"0"..."n-1"`` (``n`` = number of
    queries of ``split``, or ``split`` itself when an int). Returns ``{query id: [COCO ids]}``."""
    n = split if isinstance(split, int) else len(split.queries)
    name = "queries" if isinstance(split, int) else f"CIRCO {split.split} query ids"
    if not isinstance(obj, dict):
        _fail(source, f"expected a JSON object with query-id keys, got {type(obj).__name__}")
    expected = [str(i) for i in range(n)]
    allowed = set(expected)
    for key in obj:
        if key not in allowed:
            _fail(source, f"unknown query id {_short(key)} (expected the strings '0'..'{n - 1}')")
    missing = [key for key in expected if key not in obj]
    if missing:
        _fail(source, _missing_message(missing, n, name))
    return {
        int(key): _check_ranking(source, f"query {key}", obj[key], TOP_N, _as_coco_id, "COCO image id")
        for key in expected
    }


def read_circo_predictions(path: Path | str, split: CIRCOSplit) -> dict[int, list[int]]:
    """Read and validate a CIRCO prediction / server file against ``split`` (val or test)."""
    return validate_circo_predictions(read_prediction_json(path), split, source=path)


def write_circo_submission(
    path: Path | str,
    rankings: Sequence[Sequence[int | str]] | Mapping[int | str, Sequence[int | str]],
    *,
    split: CIRCOSplit | None = None,
) -> Path:
    """Write a CIRCO server file ``{"<query id>": [top-50 COCO ids as ints]}``.

    ``rankings`` is a list indexed by query id or a mapping from query id; lists are truncated
    to 50. The object is validated first (ids ``0..n-1``, no duplicates, numeric ids; with
    ``split``, n must be its number of queries). Write is atomic."""
    path = Path(path)
    items = rankings.items() if isinstance(rankings, Mapping) else enumerate(rankings)
    obj: dict[str, Any] = {}
    for qid, ranking in items:
        key = str(int(qid))
        if key in obj:
            _fail(path, f"query id {key} given twice")
        obj[key] = list(ranking)[:TOP_N]
    parsed = validate_circo_predictions(obj, split if split is not None else len(obj), source=path)
    out = {str(qid): ids for qid, ids in parsed.items()}
    atomic_write_json(path, out)
    return path


# --------------------------------------------------------------------------------------------
# FashionIQ
# --------------------------------------------------------------------------------------------


def validate_fashioniq_predictions(
    obj: Any, splits: Mapping[str, FashionIQSplit], *, source: str | Path = "<predictions>"
) -> dict[str, list[list[str]]]:
    """Validate ``{category: [ranking per query, in caption-file order]}`` against ``splits``
    (all categories of ``splits`` must be present, no others)."""
    if not isinstance(obj, dict):
        _fail(source, f"expected a JSON object with category keys, got {type(obj).__name__}")
    for key in obj:
        if key not in splits:
            _fail(source, f"unknown category {_short(key)} (expected {', '.join(splits)})")
    out: dict[str, list[list[str]]] = {}
    for category, split in splits.items():
        if category not in obj:
            _fail(source, f'missing category "{category}"')
        value = obj[category]
        n = len(split.queries)
        if not isinstance(value, list):
            _fail(source, f"{category}: expected a list of rankings, got {type(value).__name__}")
        if len(value) != n:
            _fail(
                source,
                f"{category}: {len(value)} rankings, expected {n} (one per query of "
                f"cap.{category}.{split.split}.json, in file order)",
            )
        gallery = set(split.gallery)
        rankings = []
        for i, ranking in enumerate(value):
            where = f"{category} query {i}"
            names = _check_ranking(source, where, ranking, TOP_N, _as_name, "image id string")
            for name in names:
                if name not in gallery:
                    _fail(
                        source,
                        f"{where}: {_short(name)} is not an image of split.{category}.{split.split}.json",
                    )
            rankings.append(names)
        out[category] = rankings
    return out


def read_fashioniq_predictions(
    path: Path | str, splits: Mapping[str, FashionIQSplit]
) -> dict[str, list[list[str]]]:
    """Read and validate a FashionIQ prediction file against ``splits``."""
    return validate_fashioniq_predictions(read_prediction_json(path), splits, source=path)


def write_fashioniq_predictions(
    path: Path | str,
    rankings: Mapping[str, Sequence[Sequence[str]]],
    *,
    splits: Mapping[str, FashionIQSplit] | None = None,
) -> Path:
    """Write cirlib's FashionIQ prediction file (top 50 per query), validated against ``splits``
    when given. Write is atomic."""
    path = Path(path)
    obj = {category: [list(r)[:TOP_N] for r in value] for category, value in rankings.items()}
    if splits is not None:
        validate_fashioniq_predictions(obj, splits, source=path)
    atomic_write_json(path, obj)
    return path


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def score_predictions(
    benchmark: str,
    annotations_dir: Path | str,
    pred_path: Path | str,
    subset_path: Path | str | None = None,
    soft: bool = False,
) -> dict[str, float]:
    """Score a prediction file on the **val** split of ``benchmark`` (percent, unrounded).

    ``annotations_dir`` is the dataset folder in upstream layout (e.g. ``.../cir-annotations/cirr``).
    CIRR: ``recall@{1,5,10,50}``; with ``subset_path`` also ``recall_subset@{1,2,3}``; with
    ``soft`` the CIRPLANT soft-label variants under ``soft/...``. CIRCO: ``map@K``, ``recall@K``
    for K in 5, 10, 25, 50 and ``semantic_map@10/<aspect>``. FashionIQ: ``<cat>/recall@{10,50}``
    and ``average/recall@{10,50}`` (unweighted category mean).

    Invalid files raise :class:`SubmissionError`; missing or malformed annotations raise
    :class:`cirlib.data.annotations.AnnotationError`."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARKS)}")
    if benchmark != "cirr" and subset_path is not None:
        raise ValueError("subset predictions (Recall_subset) exist only for CIRR")
    if benchmark != "cirr" and soft:
        raise ValueError("soft labels exist only for CIRR")
    root = Path(annotations_dir)
    if benchmark == "cirr":
        split = load_cirr(root, "val")
        preds = read_cirr_predictions(pred_path, split, metric="recall")
        subset = (
            read_cirr_predictions(subset_path, split, metric="recall_subset")
            if subset_path is not None
            else None
        )
        queries = split.queries
        return cirr_metrics(
            [preds[q.pairid] for q in queries],
            [q.target_hard for q in queries],  # type: ignore[misc]
            subset_rankings=None if subset is None else [subset[q.pairid] for q in queries],
            target_soft=[q.target_soft for q in queries] if soft else None,  # type: ignore[misc]
            references=[q.reference for q in queries],
        )
    if benchmark == "circo":
        circo = load_circo(root, "val")
        preds_c = read_circo_predictions(pred_path, circo)
        cq = circo.queries
        return circo_metrics(
            [preds_c[q.id] for q in cq],
            [q.gt_img_ids for q in cq],  # type: ignore[misc]
            [q.target_img_id for q in cq],  # type: ignore[misc]
            semantic_aspects=[q.semantic_aspects for q in cq],  # type: ignore[misc]
        )
    splits = load_fashioniq_all(root, "val")
    preds_f = read_fashioniq_predictions(pred_path, splits)
    return fashioniq_metrics(
        preds_f,
        {c: [q.target for q in splits[c].queries] for c in FASHIONIQ_CATEGORIES},  # type: ignore[misc]
    )
