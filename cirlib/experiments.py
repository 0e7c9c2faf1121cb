"""Uncertainty and the project-wide results schema.

Every number a notebook reports comes with a 95% percentile-bootstrap confidence interval over
queries (:func:`bootstrap_ci`), and every "A beats B" claim with a paired bootstrap on the same
queries (:func:`paired_bootstrap`), because the benchmarks are small enough (CIRCO: 800 test
queries) that differences of a point or two are often noise. Resampling is seeded and vectorised,
so the same inputs always give the same interval.

Results go to ``data/results/<notebook>.json`` as :class:`ResultRow` records (metric values in
percent), written atomically with a schema version; :func:`read_results` refuses malformed files
loudly and :func:`results_table` formats rows as ``"value [lo, hi]"`` for notebooks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from cirlib.config import atomic_write_bytes, atomic_write_json, results_dir

__all__ = [
    "CI",
    "LABELS",
    "SCHEMA_VERSION",
    "PairedCI",
    "ResultRow",
    "ResultsFileError",
    "SeedSummary",
    "aggregate_seeds",
    "bootstrap_ci",
    "paired_bootstrap",
    "read_results",
    "results_path",
    "results_table",
    "row_from_per_query",
    "write_results",
]

#: Version of the ``data/results/<notebook>.json`` layout; bump on incompatible changes.
SCHEMA_VERSION = 1
LABELS: tuple[str, ...] = ("ours", "paper")
#: Bootstrap resamples drawn per batch, bounded so that a batch holds at most ~4M indices (32 MB);
#: the batch size depends only on n, so results do not depend on memory.
_BATCH_ELEMENTS = 1 << 22


# ------------------------------------------------------------------------------------ bootstrap
class CI(NamedTuple):
    """Mean of per-query values and its percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float


class PairedCI(NamedTuple):
    """Mean difference ``mean(a) - mean(b)`` on the same queries, its CI and two-sided p-value."""

    diff: float
    low: float
    high: float
    p_value: float


def _per_query(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per query), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: no queries to bootstrap")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf at positions {np.flatnonzero(~np.isfinite(array))[:5]}")
    return array


def _check_boot(n_boot: int, confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement, over queries) of ``values``.

    ``values`` may be ``[n]`` or ``[m, n]`` (m statistics resampled with the *same* query indices,
    which is what makes a bootstrap paired); returns ``[n_boot]`` or ``[m, n_boot]``."""
    n = values.shape[-1]
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_ELEMENTS // n)
    out = np.empty(values.shape[:-1] + (n_boot,), dtype=np.float64)
    for start in range(0, n_boot, batch):
        stop = min(start + batch, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[..., start:stop] = values[..., idx].mean(axis=-1)
    return out


def _stratified_bootstrap_means(values: np.ndarray, strata: Any, n_boot: int, seed: int) -> np.ndarray:
    """Like :func:`_bootstrap_means`, but each stratum (e.g. a FashionIQ category) is resampled
    within itself, keeping its size: the right bootstrap for a statistic such as the unweighted
    mean of per-category means (pass per-query values reweighted by N / (C * n_c))."""
    labels = np.asarray(strata)
    if labels.shape != values.shape[-1:]:
        raise ValueError(f"strata has shape {labels.shape}, values have {values.shape[-1]} queries")
    total = np.zeros(values.shape[:-1] + (n_boot,), dtype=np.float64)
    for i, label in enumerate(dict.fromkeys(labels.tolist())):
        part = values[..., labels == label]
        total += _bootstrap_means(part, n_boot, seed + 7919 * i) * part.shape[-1]
    return total / values.shape[-1]


def _interval(boot: np.ndarray, point: float, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    # The bootstrap means are sums in another order than the point estimate, so for constant
    # data they can differ from it in the last bit; keep low <= point <= high exactly.
    return float(min(low, point)), float(max(high, point))


def bootstrap_ci(
    values: Any, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0, *, strata: Any = None
) -> CI:
    """Percentile-bootstrap CI of the mean of per-query ``values`` (bool or float, any unit).

    Queries are resampled with replacement ``n_boot`` times (within each stratum when ``strata``
    labels are given); the interval is the ``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles
    of the resampled means."""
    _check_boot(n_boot, confidence)
    array = _per_query(values, "values")
    mean = float(array.mean())
    boot = (
        _bootstrap_means(array, n_boot, seed)
        if strata is None
        else _stratified_bootstrap_means(array, strata, n_boot, seed)
    )
    low, high = _interval(boot, mean, confidence)
    return CI(mean, low, high)


def paired_bootstrap(
    a: Any, b: Any, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0, *, strata: Any = None
) -> PairedCI:
    """Paired bootstrap of ``mean(a) - mean(b)`` where ``a[i]`` and ``b[i]`` are the same query.

    The CI is the percentile interval of resampled differences. The two-sided p-value tests "no
    difference" with the bootstrap distribution shifted to mean zero (Efron & Tibshirani 1993,
    §16.4): ``p = (1 + #{|d* - d| >= |d|}) / (1 + n_boot)``; identical inputs give ``p = 1``."""
    _check_boot(n_boot, confidence)
    x, y = _per_query(a, "a"), _per_query(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired arrays must have the same queries: shapes {x.shape} and {y.shape}")
    d = x - y
    diff = float(d.mean())
    boot = (
        _bootstrap_means(d, n_boot, seed)
        if strata is None
        else _stratified_bootstrap_means(d, strata, n_boot, seed)
    )
    low, high = _interval(boot, diff, confidence)
    # tolerance: resampled means of constant differences differ from `diff` by rounding only
    tol = 1e-12 * max(1.0, abs(diff))
    extreme = np.count_nonzero(np.abs(boot - diff) >= abs(diff) - tol)
    p_value = float((1 + extreme) / (1 + n_boot))
    return PairedCI(diff, low, high, min(1.0, p_value))


# ------------------------------------------------------------------------------------ seeds
class SeedSummary(NamedTuple):
    """A metric over several training/evaluation seeds."""

    mean: float
    std: float  # sample standard deviation (ddof=1); 0.0 for a single seed
    per_seed: dict[int, float]


def aggregate_seeds(values_by_seed: Mapping[int, float]) -> SeedSummary:
    """Mean, sample std and the per-seed values (kept so that tables can show the spread)."""
    if not values_by_seed:
        raise ValueError("aggregate_seeds needs at least one seed")
    per_seed = {int(s): float(v) for s, v in sorted(values_by_seed.items())}
    array = np.array(list(per_seed.values()), dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"non-finite metric values in {per_seed}")
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return SeedSummary(float(array.mean()), std, per_seed)


# ------------------------------------------------------------------------------------ schema
class ResultsFileError(ValueError):
    """A results file exists but does not follow the schema."""


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ResultRow:
    """One reported number: a metric of a method on a benchmark split, in percent.

    ``label="ours"`` rows are measured here and need a CI, query count, seeds and the config hash
    of the run; ``label="paper"`` rows quote a paper and may leave ``ci_low``/``ci_high``/
    ``n_queries`` as None, ``seeds`` empty and ``config_hash`` empty."""

    notebook: str
    benchmark: str
    split: str
    method: str
    metric: str
    value: float
    ci_low: float | None
    ci_high: float | None
    n_queries: int | None
    seeds: tuple[int, ...] = field(default=())
    config_hash: str = ""
    label: Literal["ours", "paper"] = "ours"

    def __post_init__(self) -> None:
        where = f"result row {self.notebook}/{self.benchmark}/{self.split}/{self.method}/{self.metric}"
        for name in ("notebook", "benchmark", "split", "method", "metric"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{where}: {name} must be a non-empty string, got {getattr(self, name)!r}")
        if not _NAME_RE.match(self.notebook):
            raise ValueError(f"{where}: notebook name must match {_NAME_RE.pattern} (it names a file)")
        if self.label not in LABELS:
            raise ValueError(f"{where}: label must be one of {LABELS}, got {self.label!r}")
        if isinstance(self.seeds, (str, bytes)) or not isinstance(self.seeds, Iterable):
            raise ValueError(f"{where}: seeds must be a sequence of ints, got {self.seeds!r}")
        seeds = tuple(self.seeds)
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
            raise ValueError(f"{where}: seeds must be ints, got {seeds!r}")
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        if not isinstance(self.config_hash, str):
            raise ValueError(f"{where}: config_hash must be a string, got {self.config_hash!r}")
        object.__setattr__(self, "value", _percent(self.value, "value", where))
        ours = self.label == "ours"
        for name in ("ci_low", "ci_high"):
            v = getattr(self, name)
            if v is None:
                if ours:
                    raise ValueError(f"{where}: {name} is required for label='ours'")
            else:
                object.__setattr__(self, name, _percent(v, name, where))
        if self.ci_low is not None and self.ci_high is not None:
            if not self.ci_low <= self.value <= self.ci_high:
                raise ValueError(
                    f"{where}: need ci_low <= value <= ci_high, got {self.ci_low} <= {self.value} <= {self.ci_high}"
                )
        elif (self.ci_low is None) != (self.ci_high is None):
            raise ValueError(f"{where}: give both ci_low and ci_high or neither")
        if self.n_queries is None:
            if ours:
                raise ValueError(f"{where}: n_queries is required for label='ours'")
        elif (
            not isinstance(self.n_queries, (int, np.integer))
            or isinstance(self.n_queries, bool)
            or self.n_queries < 1
        ):
            raise ValueError(f"{where}: n_queries must be a positive int, got {self.n_queries!r}")
        else:
            object.__setattr__(self, "n_queries", int(self.n_queries))
        if ours and not seeds:
            raise ValueError(f"{where}: seeds are required for label='ours'")
        if ours and not self.config_hash:
            raise ValueError(f"{where}: config_hash is required for label='ours'")

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What identifies a row within a notebook's file (duplicates are refused)."""
        return (self.benchmark, self.split, self.method, self.metric, self.label)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["seeds"] = list(self.seeds)
        return record


def _percent(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where}: {name} must be a number, got {value!r}")
    v = float(value)
    if math.isfinite(v) and -1e-9 <= v <= 100.0 + 1e-9:  # reweighted means round in the last bits
        v = min(max(v, 0.0), 100.0)
    if not math.isfinite(v) or not 0.0 <= v <= 100.0:
        raise ValueError(
            f"{where}: {name}={v} is not a percentage in [0, 100] (metric values are in percent)"
        )
    return v


def row_from_per_query(
    *,
    notebook: str,
    benchmark: str,
    split: str,
    method: str,
    metric: str,
    per_query: Mapping[int, Any],
    config_hash: str,
    scale: float = 100.0,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    strata: Any = None,
) -> ResultRow:
    """A :class:`ResultRow` from per-query values of one or more seeds (``{seed: values [n]}``).

    Per-query values are averaged over seeds first (each query's value is its mean over seeds),
    then bootstrapped over queries; ``scale`` turns fractions into percent (use 1.0 if the values
    already are)."""
    if not per_query:
        raise ValueError("per_query needs at least one seed")
    arrays = [_per_query(v, f"per_query[{s}]") for s, v in sorted(per_query.items())]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"seeds evaluated different numbers of queries: {[a.shape[0] for a in arrays]}")
    values = np.mean(arrays, axis=0) * scale
    ci = bootstrap_ci(values, n_boot=n_boot, confidence=confidence, seed=seed, strata=strata)
    return ResultRow(
        notebook=notebook,
        benchmark=benchmark,
        split=split,
        method=method,
        metric=metric,
        value=ci.mean,
        ci_low=ci.low,
        ci_high=ci.high,
        n_queries=int(values.shape[0]),
        seeds=tuple(sorted(int(s) for s in per_query)),
        config_hash=config_hash,
    )


# ------------------------------------------------------------------------------------ files
def results_path(notebook: str, root: Path | None = None) -> Path:
    """``data/results/<notebook>.json`` (or under ``root``, else ``CIRLIB_RESULTS``: :func:`cirlib.config.results_dir`)."""
    if not isinstance(notebook, str) or not _NAME_RE.match(notebook):
        raise ValueError(f"notebook name {notebook!r} must match {_NAME_RE.pattern} (it names a file)")
    return (Path(root) if root is not None else results_dir()) / f"{notebook}.json"


def write_results(notebook: str, rows: Iterable[ResultRow], *, root: Path | None = None) -> Path:
    """Write all rows of a notebook atomically (replacing the file) and return its path.

    Rows must belong to ``notebook`` and be unique by (benchmark, split, method, metric, label)."""
    path = results_path(notebook, root)
    rows = list(rows)
    seen: set[tuple[str, ...]] = set()
    for i, row in enumerate(rows):
        if not isinstance(row, ResultRow):
            raise TypeError(f"rows[{i}] is a {type(row).__name__}, not a ResultRow")
        if row.notebook != notebook:
            raise ValueError(f"rows[{i}] belongs to notebook {row.notebook!r}, not {notebook!r}")
        if row.key in seen:
            raise ValueError(f"rows[{i}] duplicates {row.key} in {path}")
        seen.add(row.key)
    payload = {"schema_version": SCHEMA_VERSION, "notebook": notebook, "rows": [r.to_json() for r in rows]}
    atomic_write_json(path, payload)
    return path


# ------------------------------------------------------------------------------ per-query values
@dataclass
class PerQuery:
    """Per-query metric values of several methods on the same queries of one benchmark split, so
    that a later notebook can pair them (paired bootstrap, per-edit-kind breakdowns)."""

    benchmark: str
    split: str
    qids: list[str]
    categories: list[str] | None  # strata of the "average/" metrics (FashionIQ), else None
    values: dict[str, dict[str, np.ndarray]]  # method -> metric -> [Q], in [0, 1]

    def strata(self, metric: str) -> list[str] | None:
        return self.categories if "average/" in metric else None


def per_query_path(notebook: str, root: Path | None = None) -> Path:
    """``data/results/<notebook>.per_query.npz`` (or under ``root``)."""
    path = results_path(notebook, root)
    return path.with_name(f"{notebook}.per_query.npz")


def write_per_query(
    notebook: str,
    evaluations: Mapping[str, Mapping[str, Any]],
    metric_names: Mapping[str, Sequence[str]],
    *,
    root: Path | None = None,
) -> Path:
    """Write the per-query values behind a notebook's result rows: ``evaluations`` maps a benchmark
    form to ``{method label: Evaluation}`` (all on the same queries), ``metric_names`` maps the form to
    the metrics kept. One compressed ``.npz``, written atomically; read back with :func:`read_per_query`."""
    import io
    import zipfile

    arrays: dict[str, np.ndarray] = {}
    for form, by_method in evaluations.items():
        evs = list(by_method.items())
        if not evs:
            continue
        first = evs[0][1]
        prefix = f"{first.benchmark}|{first.split}"
        for label, ev in evs:
            if ev.qids != first.qids:
                raise ValueError(f"{label} on {prefix} was evaluated on other queries than {evs[0][0]}")
            for metric in metric_names[form]:
                if metric in ev.per_query:
                    if "|" in label or "|" in metric:
                        raise ValueError(f"method {label!r} / metric {metric!r} must not contain '|'")
                    arrays[f"{prefix}|{label}|{metric}"] = np.asarray(ev.per_query[metric], dtype=np.float32)
        arrays[f"{prefix}|#qids"] = np.asarray(first.qids)
        if first.categories is not None:
            arrays[f"{prefix}|#categories"] = np.asarray(first.categories)
    # np.savez stamps each member with the current time; fixed stamps make equal values equal bytes,
    # so a rerun that reproduces the numbers leaves the committed file unchanged.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
    path = per_query_path(notebook, root)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_per_query(notebook: str, *, root: Path | None = None) -> dict[str, PerQuery]:
    """The per-query values of a notebook, by benchmark name (e.g. ``world-cirr``); raises naming the
    file when it is missing or damaged."""
    path = per_query_path(notebook, root)
    if not path.is_file():
        raise ResultsFileError(f"{path} does not exist: run the notebook {notebook} (make reproduce)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ResultsFileError(
            f"{path} is not a readable .npz file ({err}); rerun the notebook {notebook}"
        ) from err
    out: dict[str, PerQuery] = {}
    for key, array in arrays.items():
        benchmark, split, name, *rest = key.split("|")
        entry = out.setdefault(benchmark, PerQuery(benchmark, split, [], None, {}))
        if name == "#qids":
            entry.qids = [str(q) for q in array]
        elif name == "#categories":
            entry.categories = [str(c) for c in array]
        else:
            entry.values.setdefault(name, {})[rest[0]] = array.astype(float)
    for entry in out.values():
        for method, metrics in entry.values.items():
            for metric, values in metrics.items():
                if len(values) != len(entry.qids):
                    raise ResultsFileError(
                        f"{path}: {entry.benchmark} {method} {metric} has {len(values)} values for {len(entry.qids)} queries"
                    )
    return out


# ------------------------------------------------------------------------------ claims
def claims_path(notebook: str, root: Path | None = None) -> Path:
    """``data/results/<notebook>.claims.csv`` (or under ``root``)."""
    return results_path(notebook, root).with_name(f"{notebook}.claims.csv")


def write_claims(notebook: str, table: Any, *, root: Path | None = None) -> Path:
    """Write a method notebook's claims table (one row per claim and benchmark, with at least the
    columns ``claim``, ``benchmark``, ``verdict``; index levels count as columns) as CSV, atomically."""
    frame = table.reset_index()
    missing = {"claim", "benchmark", "verdict"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"a claims table needs the columns claim, benchmark, verdict; missing {sorted(missing)}"
        )
    path = claims_path(notebook, root)
    atomic_write_bytes(path, frame.to_csv(index=False).encode())
    return path


def read_claims(notebook: str, *, root: Path | None = None) -> Any:
    """A notebook's claims table (pandas), or None when the notebook writes none."""
    import pandas as pd

    path = claims_path(notebook, root)
    return pd.read_csv(path) if path.is_file() else None


def read_results(notebook: str, *, root: Path | None = None) -> list[ResultRow]:
    """Rows of ``data/results/<notebook>.json``; raises naming the file and the problem."""
    path = results_path(notebook, root)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results for notebook {notebook!r}; run the notebook first")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsFileError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(payload, dict):
        raise ResultsFileError(f"{path}: top level must be an object, got {type(payload).__name__}")
    version = payload.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsFileError(f"{path}: schema_version {version!r}, this cirlib reads {SCHEMA_VERSION}")
    if payload.get("notebook") != notebook:
        raise ResultsFileError(f"{path}: file is for notebook {payload.get('notebook')!r}, not {notebook!r}")
    records = payload.get("rows")
    if not isinstance(records, list):
        raise ResultsFileError(f"{path}: 'rows' must be a list")
    names = {f.name for f in fields(ResultRow)}
    required = {f.name for f in fields(ResultRow) if f.name not in ("seeds", "config_hash", "label")}
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ResultsFileError(f"{path}: rows[{i}] must be an object")
        unknown, missing = set(record) - names, required - set(record)
        if unknown or missing:
            raise ResultsFileError(
                f"{path}: rows[{i}] has unknown fields {sorted(unknown)}, missing {sorted(missing)}"
            )
        try:
            rows.append(ResultRow(**record))
        except ValueError as error:
            raise ResultsFileError(f"{path}: rows[{i}]: {error}") from error
    return rows


def _format_value(row: ResultRow, decimals: int) -> str:
    if row.ci_low is None or row.ci_high is None:
        return f"{row.value:.{decimals}f}"
    return f"{row.value:.{decimals}f} [{row.ci_low:.{decimals}f}, {row.ci_high:.{decimals}f}]"


def results_table(rows: Sequence[ResultRow], *, decimals: int = 2, pivot: bool = False) -> Any:
    """A pandas DataFrame of rows with a ``result`` column formatted ``"value [lo, hi]"``.

    Long form by default (one line per row, with n_queries and seeds); ``pivot=True`` gives one
    line per (benchmark, split, method, label) and one column per metric, as papers print."""
    import pandas as pd

    records = [
        {
            "benchmark": r.benchmark,
            "split": r.split,
            "method": r.method,
            "label": r.label,
            "metric": r.metric,
            "result": _format_value(r, decimals),
            "value": r.value,
            "n_queries": r.n_queries,
            "seeds": ",".join(str(s) for s in r.seeds),
        }
        for r in rows
    ]
    columns = ["benchmark", "split", "method", "label", "metric", "result", "value", "n_queries", "seeds"]
    table = pd.DataFrame.from_records(records, columns=columns)
    if not pivot:
        return table
    index = ["benchmark", "split", "method", "label"]
    wide = table.pivot(index=index, columns="metric", values="result")
    metric_order = list(dict.fromkeys(table["metric"]))
    wide = wide[metric_order].fillna("")
    wide.columns.name = None
    return wide
