"""One evaluation run end to end, for both profiles: what ``cirlib eval`` does.

:func:`check_paths` validates every path a run needs (dataset folder, annotation files, image
folders, weight files) with the light modules :mod:`cirlib.data.real` and
:mod:`cirlib.models.weights` / :mod:`cirlib.models.released` only, so a missing file fails in a
fraction of a second, before torch or any model is loaded. :func:`run_eval` then loads the
benchmark (tiny: the world's benchmark of that form; paper: the real one with its missing-image
report), builds the method, evaluates it and writes

* ``run.json``: metrics, configuration, data layout, missing-image summary, timings, throughput;
* the val metrics' prediction files in the server formats (CIRR, CIRCO) or cirlib's FashionIQ
  format, which ``cirlib score`` reproduces; or, on the real test splits, the files to upload to
  the CIRR / CIRCO evaluation servers (validated against the split before they are written).

Embeddings are cached content-keyed (:class:`cirlib.retrieval.EmbeddingCache`) in shards, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("cirlib.run")

#: Methods that load a released textual-inversion network in the paper profile.
RELEASED_PHI_METHODS = ("pic2word", "searle", "lincir")


@dataclass
class EvalConfig:
    """Everything a run depends on (recorded in ``run.json``)."""

    benchmark: str
    method: str
    split: str = "val"
    profile: str = "tiny"
    data: Path | None = None
    images: Path | None = None
    weights: Path | None = None
    backbone: str | None = None
    phi: str | None = None  # paper: a released phi by name (default: the method's own for the backbone)
    preprocess: str | None = None  # paper: None means the method's official choice
    caption_join: str | None = None  # None: the method's own (both orders; Pic2Word: reversed)
    circo_text: str = "relative"
    on_missing: str = "error"
    index: str = "exact"
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = 4
    n_queries: int | None = None
    soft: bool = False
    out: Path | None = None

    def resolved_backbone(self) -> str | None:
        if self.profile == "tiny":
            return None
        if self.phi and not self.backbone:
            from cirlib.models.released import released_phi

            return released_phi(self.phi).backbone
        from cirlib.models.weights import DEFAULT_BACKBONE

        return self.backbone or DEFAULT_BACKBONE

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        if self.profile == "tiny":
            from cirlib.config import default_device

            return default_device()
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def output_dir(self) -> Path:
        if self.out is not None:
            return self.out
        tag = "-".join(
            x for x in (self.profile, self.benchmark, self.split, self.method, self.resolved_backbone()) if x
        )
        return Path("runs") / tag


class RunError(Exception):
    """A run cannot start: a path or an option is wrong. The message says which and why."""


def check_paths(cfg: EvalConfig) -> dict[str, Any]:
    """Check every input path of a paper-profile run without importing torch; returns what was
    found (layout, weight files). Raises :class:`RunError` with the path as given."""
    if cfg.profile != "paper":
        for flag in ("data", "images", "weights"):
            if getattr(cfg, flag) is not None:
                raise RunError(
                    f"--{flag} is for the paper profile; the tiny profile uses the world and committed checkpoints"
                )
        return {}
    from cirlib.data.real import DataNotFoundError, resolve_layout
    from cirlib.models.weights import MissingWeightsError, resolve_weights

    if cfg.data is None:
        raise RunError(
            f"the paper profile needs --data DIR: the {cfg.benchmark} dataset folder with its images "
            "(see README, 'Reproducing on the real benchmarks')"
        )
    try:
        layout = resolve_layout(cfg.benchmark, _upstream_split(cfg), cfg.data, images=cfg.images)
    except DataNotFoundError as err:
        raise RunError(str(err)) from None
    found: dict[str, Any] = {"layout": layout}
    if cfg.phi and cfg.method not in RELEASED_PHI_METHODS:
        raise RunError(f"--phi is for the methods {', '.join(RELEASED_PHI_METHODS)}, not {cfg.method}")
    try:
        if cfg.method in RELEASED_PHI_METHODS:
            from cirlib.models.released import resolve_phi_weights, select_released

            spec = select_released(cfg.method, cfg.resolved_backbone(), cfg.phi)
            found["phi_weights"] = resolve_phi_weights(spec, cfg.weights)
            found["clip_weights"] = resolve_weights(spec.backbone, cfg.weights)
        else:
            found["clip_weights"] = resolve_weights(cfg.resolved_backbone(), cfg.weights)
    except (MissingWeightsError, KeyError, ValueError) as err:
        raise RunError(str(err).strip('"')) from None
    return found


def _upstream_split(cfg: EvalConfig) -> str:
    from cirlib.data.real import REAL_SPLITS

    return REAL_SPLITS[cfg.benchmark][cfg.split]


def load_benchmark(cfg: EvalConfig):
    """The benchmark of a run (tiny: the frozen world's; paper: the real one) and, for the paper
    profile, its missing-image report."""
    if cfg.profile == "tiny":
        from cirlib.world import load_world_benchmark

        benchmark, report = load_world_benchmark(cfg.benchmark, cfg.split), None
    else:
        from cirlib.data.real import load_real_benchmark

        out = cfg.output_dir()
        benchmark, report = load_real_benchmark(
            cfg.benchmark,
            cfg.split,
            cfg.data,
            images=cfg.images,
            on_missing=cfg.on_missing,
            circo_text=cfg.circo_text,
            report_path=out / "missing_images.json",
        )
        if not report.ok:
            log.warning("missing images: %s", json.dumps(report.summary()))
    if cfg.n_queries:
        benchmark = benchmark.subsample(cfg.n_queries)
    return benchmark, report


def build(cfg: EvalConfig):
    """The method of a run, on the run's device."""
    from cirlib.methods import build_method

    options: dict[str, Any] = {}
    if cfg.profile == "paper":
        options = {
            "backbone": cfg.resolved_backbone(),
            "weights": cfg.weights,
            "preprocess": cfg.preprocess,
            "device": cfg.resolved_device(),
            "precision": cfg.precision,
            "form": cfg.benchmark,
        }
        if cfg.phi:
            options["phi"] = cfg.phi
    method = build_method(cfg.method, cfg.profile, **options)
    if cfg.caption_join is not None:
        method.caption_join = cfg.caption_join
    method.batch_size, method.num_workers = cfg.batch_size, cfg.workers
    return method


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Run one evaluation and write its outputs; returns the ``run.json`` content."""
    from cirlib.evaluation import evaluate

    found = check_paths(cfg)
    t_start = time.perf_counter()
    benchmark, report = load_benchmark(cfg)
    t_loaded = time.perf_counter()
    method = build(cfg)
    t_built = time.perf_counter()
    misses_before = method.cache.misses
    n_images = 0
    for gallery in benchmark.galleries.values():
        method.gallery_features(gallery)  # encode (or load) every gallery first: timed on its own
        n_images += len(gallery)
    t_encoded = time.perf_counter()
    encoded_now = method.cache.misses > misses_before
    result = evaluate(method, benchmark, backend=cfg.index, soft=cfg.soft)
    t_scored = time.perf_counter()
    out = cfg.output_dir()
    files = write_predictions(cfg, benchmark, result, out, complete=not cfg.n_queries)
    record: dict[str, Any] = {
        "metrics": result.summary,
        "n_queries": result.n_queries,
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            "backbone": cfg.resolved_backbone(),
            "preprocess": method.clip.preprocess_cfg.get("resize_mode", method.clip.preprocess),
            "caption_join": method.caption_join,
            "caption_strip": method.caption_strip,
            "device": cfg.resolved_device(),
        },
        "benchmark": {"name": benchmark.name, "form": benchmark.form, "split": benchmark.split},
        "layout": benchmark.meta.get("layout"),
        "missing_images": report.summary() if report is not None else None,
        "weights": {k: str(v) for k, v in found.items() if k.endswith("weights")},
        "model": {"clip": method.clip.name, "clip_hash": method.clip.hash},
        "timings_s": {
            "load_benchmark": t_loaded - t_start,
            "build_method": t_built - t_loaded,
            "encode_gallery": t_encoded - t_built,
            "score_queries": t_scored - t_encoded,
        },
        "throughput": {
            "gallery_images": n_images,
            "gallery_from_cache": not encoded_now,
            "images_per_s": n_images / max(t_encoded - t_built, 1e-9) if encoded_now else None,
            "queries_per_s": result.n_queries / max(t_scored - t_encoded, 1e-9),
        },
        "files": [str(f) for f in files],
    }
    if report is not None and report.dropped_queries:
        log.warning(
            "%d queries were dropped because their images are missing; the metrics cover %d queries",
            len(report.dropped_queries),
            result.n_queries,
        )
    from cirlib.config import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "run.json", record)
    return record


def write_predictions(cfg: EvalConfig, benchmark, result, out: Path, *, complete: bool) -> list[Path]:
    """Write the rankings: server files (CIRR, CIRCO; validated against the split when the run
    covers every query) or cirlib's FashionIQ prediction format, plus ``rankings.json`` always."""
    from cirlib.config import atomic_write_json
    from cirlib.data.annotations import load_circo, load_cirr, load_fashioniq_all
    from cirlib.submission import write_circo_submission, write_cirr_submission, write_fashioniq_predictions

    out.mkdir(parents=True, exist_ok=True)
    files = [out / "rankings.json"]
    atomic_write_json(files[0], {"qids": result.qids, "rankings": result.rankings, "subset": result.subset})
    if cfg.profile != "paper" or not complete:
        return files
    annotations = Path(benchmark.meta["layout"]["annotations"])
    split = _upstream_split(cfg)
    if benchmark.form == "cirr":
        cirr = load_cirr(annotations, split)
        name = "test1_pred_ranks_recall.json" if split == "test1" else f"{split}_pred_ranks_recall.json"
        pairids = [int(q) for q in result.qids]
        paths = write_cirr_submission(
            out / name,
            pairids,
            result.rankings["all"],
            result.subset,
            split=cirr if len(pairids) == len(cirr.queries) else None,
        )
        files += list(paths)
    elif benchmark.form == "circo":
        circo = load_circo(annotations, split)
        ranking = {
            int(q): [int(x) for x in r] for q, r in zip(result.qids, result.rankings["all"], strict=True)
        }
        files.append(
            write_circo_submission(
                out / f"circo_{split}_submission.json",
                ranking,
                split=circo if len(ranking) == len(circo.queries) else None,
            )
        )
    else:
        splits = load_fashioniq_all(annotations, split)
        if all(len(result.rankings.get(c, [])) == len(s.queries) for c, s in splits.items()):
            files.append(
                write_fashioniq_predictions(
                    out / f"fashioniq_{split}_predictions.json", result.rankings, splits=splits
                )
            )
        else:
            log.info("FashionIQ predictions file skipped: queries were dropped or subsampled")
    return files
