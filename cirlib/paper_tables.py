"""Published numbers of the papers, one CSV per benchmark and split, each row with its source.

Why: "ours vs paper" comparisons need the papers' numbers in a form code can read, and a number
copied without its source (which paper, which table, primary or secondary) cannot be checked.
The files live in ``data/paper_tables/`` (``README.md`` there documents the schema, every file,
the sources and what is missing); they are transcribed from ``shared/papers/REFERENCE.md``.

Each file has the metadata columns :data:`REQUIRED_COLUMNS` (plus ``configuration`` in ablation
tables) and metric columns named exactly like the keys ``cirlib score`` prints (``recall@1``,
``recall_subset@2``, ``map@10``, ``dress/recall@10``, ``average/recall@50``), in percent. An empty
metric cell means the number was not published and loads as NaN.

:func:`load_table` validates while loading; any problem raises :class:`PaperTableError` (a
``ValueError``) whose message starts with ``<file>:<line>:`` (the header is line 1).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pandas as pd

from cirlib.config import REPO_ROOT

__all__ = [
    "CONFIGURATION",
    "KEY_COLUMNS",
    "PAPER_TABLES_DIR",
    "REQUIRED_COLUMNS",
    "SOURCE_KINDS",
    "PaperTableError",
    "all_tables",
    "list_tables",
    "load_table",
    "metric_columns",
    "paper_gain",
]

PAPER_TABLES_DIR = REPO_ROOT / "data" / "paper_tables"
REQUIRED_COLUMNS: tuple[str, ...] = (
    "method",
    "backbone",
    "source_paper",
    "source_table",
    "source_kind",
    "source_url",
    "note",
)
#: Optional metadata column of ablation tables: the row label as the paper writes it ("+PI").
CONFIGURATION = "configuration"
#: Columns that identify a row; ``configuration`` joins them where a table has it.
KEY_COLUMNS: tuple[str, ...] = ("method", "backbone", "source_paper", "source_table")
SOURCE_KINDS: frozenset[str] = frozenset({"primary", "secondary"})
_NON_EMPTY: tuple[str, ...] = ("method", "backbone", "source_paper", "source_table")
_METRIC = re.compile(r"^(?:(?:dress|shirt|toptee|average)/)?(?:recall|recall_subset|map)@[1-9][0-9]*$")


class PaperTableError(ValueError):
    """A paper table is malformed, or a lookup in one has no single answer; the message says where."""


def _is_metric(column: str) -> bool:
    return bool(_METRIC.match(column))


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a paper table (``recall@1``, ``map@5``, ``dress/recall@10``, ...), in file order."""
    return [c for c in df.columns if _is_metric(str(c))]


def list_tables(root: Path | None = None) -> list[str]:
    """Names (file stems) of the paper tables in ``root`` (default :data:`PAPER_TABLES_DIR`), sorted."""
    return sorted(p.stem for p in (root or PAPER_TABLES_DIR).glob("*.csv"))


def _check_header(path: Path, header: list[str]) -> None:
    where = f"{path}:1"
    if len(set(header)) != len(header):
        dupes = sorted({c for c in header if header.count(c) > 1})
        raise PaperTableError(f"{where}: duplicate column(s) {dupes}")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise PaperTableError(f"{where}: missing required column(s) {missing}")
    known = set(REQUIRED_COLUMNS) | {CONFIGURATION}
    unknown = [c for c in header if c not in known and not _is_metric(c)]
    if unknown:
        raise PaperTableError(
            f"{where}: unknown column(s) {unknown}: neither metadata nor a cirlib metric key "
            "(recall@K, recall_subset@K, map@K, <dress|shirt|toptee|average>/recall@K)"
        )
    if not any(_is_metric(c) for c in header):
        raise PaperTableError(f"{where}: no metric column")


def _parse_metric(where: str, column: str, text: str) -> float:
    if text == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise PaperTableError(
            f"{where}: {column} is {text!r}, not a number (leave the cell empty for a number not published)"
        ) from None
    if not 0.0 <= value <= 100.0:  # also rejects nan
        raise PaperTableError(f"{where}: {column} is {text}, outside [0, 100] (metrics are in percent)")
    return value


def load_table(name: str, root: Path | None = None) -> pd.DataFrame:
    """Load and validate the paper table ``<root>/<name>.csv`` (default root :data:`PAPER_TABLES_DIR`).

    Metric columns come back as float (NaN where not published), the others as str (``""`` where
    empty). Raises :class:`PaperTableError` naming the file and line for a missing or unknown
    column, a row of the wrong length, a metric that is not a number in [0, 100], a row without
    any metric, a ``source_kind`` other than primary/secondary, an empty method, backbone,
    source_paper or source_table, a cell with surrounding whitespace, or a duplicate row
    (same method, backbone, source_paper, source_table and configuration)."""
    path = (root or PAPER_TABLES_DIR) / f"{name}.csv"
    if not path.is_file():
        known = ", ".join(list_tables(root)) or "none"
        raise PaperTableError(f"{path}: no such paper table (known: {known})")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise PaperTableError(f"{path}:1: empty file, expected a header")
        _check_header(path, header)
        key = [*KEY_COLUMNS, *([CONFIGURATION] if CONFIGURATION in header else [])]
        records: list[dict[str, object]] = []
        seen: dict[tuple[str, ...], int] = {}
        for cells in reader:
            where = f"{path}:{reader.line_num}"
            if len(cells) != len(header):
                raise PaperTableError(f"{where}: {len(cells)} fields, the header has {len(header)}")
            row = dict(zip(header, cells))
            for column, text in row.items():
                if text != text.strip():
                    raise PaperTableError(f"{where}: {column} has leading or trailing whitespace: {text!r}")
            for column in _NON_EMPTY:
                if not row[column]:
                    raise PaperTableError(f"{where}: {column} is empty; every row needs its source")
            if row["source_kind"] not in SOURCE_KINDS:
                raise PaperTableError(
                    f"{where}: source_kind is {row['source_kind']!r}, expected one of {sorted(SOURCE_KINDS)}"
                )
            metrics = {c: _parse_metric(where, c, t) for c, t in row.items() if _is_metric(c)}
            if all(math.isnan(v) for v in metrics.values()):
                raise PaperTableError(f"{where}: no metric value; a row needs at least one published number")
            ident = tuple(row[c] for c in key)
            if ident in seen:
                raise PaperTableError(f"{where}: duplicate of line {seen[ident]} (same {', '.join(key)})")
            seen[ident] = reader.line_num
            records.append({**row, **metrics})
    df = pd.DataFrame.from_records(records, columns=header)
    for column in metric_columns(df):
        df[column] = df[column].astype("float64")
    df.attrs["path"] = str(path)
    return df


def all_tables(root: Path | None = None) -> dict[str, pd.DataFrame]:
    """Every paper table in ``root`` (default :data:`PAPER_TABLES_DIR`), loaded and validated, by name."""
    return {name: load_table(name, root) for name in list_tables(root)}


def _rows(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows whose ``method`` is ``name``, or whose ``configuration`` is, where the table has one."""
    hit = df["method"] == name
    if CONFIGURATION in df.columns:
        hit |= df[CONFIGURATION] == name
    return df[hit]


def _sources(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["source_paper"], df["source_table"]))


def _one_value(rows: pd.DataFrame, name: str, metric: str, context: str) -> float:
    if len(rows) != 1:
        found = "; ".join(
            f"{r.source_paper} {r.source_table}" + (f" [{r.configuration}]" if CONFIGURATION in rows else "")
            for r in rows.itertuples()
        )
        raise PaperTableError(
            f"{context}: {name!r} is ambiguous, {len(rows)} rows ({found}); narrow it with source_kind, a configuration name or a filtered table"
        )
    value = float(rows[metric].iloc[0])
    if math.isnan(value):
        row = rows.iloc[0]
        raise PaperTableError(
            f"{context}: {metric} of {name!r} was not published ({row.source_paper}, {row.source_table})"
        )
    return value


def paper_gain(
    table: str | pd.DataFrame,
    method: str,
    baseline: str,
    metric: str,
    backbone: str,
    source_kind: str | None = None,
) -> float:
    """Published ``metric`` of ``method`` minus that of ``baseline``, both on ``backbone``.

    ``table`` is a table name or a loaded table. A name matches ``method`` or, in ablation
    tables, ``configuration``. Rows can be narrowed to one ``source_kind``. When the two appear
    together in one source (same source_paper and source_table) only that source is used, so a
    gain is never taken across papers when the paper itself compares the two; otherwise each must
    have exactly one row. Raises :class:`PaperTableError` when a metric, method or baseline is
    missing, a value was not published, or the choice of rows is ambiguous. The difference is a
    plain float (``27.2 - 23.9`` is ``3.3000000000000007``)."""
    df = load_table(table) if isinstance(table, str) else table
    label = table if isinstance(table, str) else str(df.attrs.get("path", "table"))
    context = f"{label}, {metric}, {backbone}" + (f", {source_kind}" if source_kind else "")
    if metric not in metric_columns(df):
        raise PaperTableError(f"{label}: no metric {metric!r}; it has {metric_columns(df)}")
    if source_kind is not None and source_kind not in SOURCE_KINDS:
        raise PaperTableError(f"source_kind must be one of {sorted(SOURCE_KINDS)}, got {source_kind!r}")
    pool = df[df["backbone"] == backbone]
    if source_kind is not None:
        pool = pool[pool["source_kind"] == source_kind]
    found = {name: _rows(pool, name) for name in (method, baseline)}
    for name, rows in found.items():
        if rows.empty:
            available = sorted(set(pool["method"]))
            raise PaperTableError(f"{context}: no row for {name!r}; methods there: {available}")
    shared = _sources(found[method]) & _sources(found[baseline])
    if len(shared) > 1:
        raise PaperTableError(
            f"{context}: {method!r} and {baseline!r} appear together in {len(shared)} sources "
            f"{sorted(shared)}; pass source_kind or a filtered table"
        )
    if shared:
        for name, rows in found.items():
            found[name] = rows[[s in shared for s in zip(rows["source_paper"], rows["source_table"])]]
    return _one_value(found[method], method, metric, context) - _one_value(
        found[baseline], baseline, metric, context
    )
