"""GPU check of the paper profile: one short end-to-end evaluation, with throughput.

Two modes, one code path (:func:`cirlib.run.run_eval`, what ``cirlib eval --profile paper`` runs):

* **real** (``--data DIR --weights DIR``): a user with the images and the released weights runs
  each ``--methods`` entry on ``--benchmark`` / ``--split`` and gets metrics plus images/s encoded
  and queries/s scored, e.g.::

      python benchmarks/gpu_check.py --benchmark cirr --data ~/data/CIRR --weights ~/weights \\
          --methods sum searle --precision fp16

* **synthetic** (default; no weights or images needed): the real architecture (ViT-L/14 unless
  ``--backbone``) with *random* weights written to a temporary weights folder, and placeholder
  images for every image the real CIRR val annotations name, plus a CIRCO test run over a
  placeholder gallery of ``--circo-gallery`` distractors. Metrics are chance-level by construction;
  what is measured is the pipeline (loaders, decoding workers, CUDA encoders, autocast, chunked
  top-k, server-file writers) and its speed. Each configuration runs twice: cold (encoding) and
  warm (embedding cache), which also checks that resuming from the cache gives identical rankings.

Prints one JSON object (also written to ``$OUT/gpu_check.json`` when ``OUT`` is set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _random_weights(backbone: str, folder: Path) -> None:
    """Write a random-initialised open_clip model of the real architecture where the paper profile
    expects the released file (throughput does not depend on the values of the weights)."""
    import open_clip
    import safetensors.torch
    import torch

    from cirlib.models.weights import PAPER_BACKBONES, expected_filename

    spec = PAPER_BACKBONES[backbone]
    torch.manual_seed(0)
    model = open_clip.create_model(spec.arch, force_quick_gelu=spec.quick_gelu)
    folder.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(model.state_dict(), folder / expected_filename(spec))


def _random_released_phi(method: str, backbone: str, folder: Path) -> None:
    """A random phi in the upstream file format of ``method``'s release for ``backbone`` (same key
    layout and container as the public file), so the released-phi path runs without the file."""
    import torch

    from cirlib.models.released import released_for, to_upstream_checkpoint

    spec = released_for(method, backbone)
    torch.manual_seed(0)
    torch.save(to_upstream_checkpoint(spec, spec.build().state_dict()), folder / spec.filename)


def _run(cfg, repeat: int) -> list[dict]:
    from cirlib.run import run_eval

    records = []
    for _ in range(repeat):
        start = time.perf_counter()
        record = run_eval(cfg)
        record["wall_s"] = time.perf_counter() - start
        records.append(record)
    return records


def _summary(name: str, records: list[dict]) -> dict:
    cold, *warm = records
    out = {
        "run": name,
        "n_queries": cold["n_queries"],
        "gallery_images": cold["throughput"]["gallery_images"],
        "images_per_s_cold": cold["throughput"]["images_per_s"],
        "queries_per_s_cold": cold["throughput"]["queries_per_s"],
        "wall_s_cold": cold["wall_s"],
        "timings_s_cold": cold["timings_s"],
        "metrics_head": {k: v for k, v in list(cold["metrics"].items())[:4]},
        "files": [Path(f).name for f in cold["files"]],
    }
    if warm:
        out["wall_s_warm"] = warm[0]["wall_s"]
        out["warm_from_cache"] = warm[0]["throughput"]["gallery_from_cache"]
        out["warm_queries_per_s"] = warm[0]["throughput"]["queries_per_s"]
        out["warm_metrics_identical"] = warm[0]["metrics"] == cold["metrics"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="real mode: dataset folder (upstream layout, images)")
    parser.add_argument("--weights", type=Path, help="real mode: weights folder")
    parser.add_argument("--benchmark", default="cirr", choices=("cirr", "circo", "fashioniq"))
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--methods", nargs="+", default=["image", "sum", "searle"])
    parser.add_argument("--backbone", default="ViT-L-14")
    parser.add_argument("--precision", nargs="+", default=["fp32", "fp16"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--image-size", type=int, default=256, help="synthetic: placeholder image side")
    parser.add_argument("--circo-gallery", type=int, default=10000, help="synthetic: CIRCO distractors")
    parser.add_argument("--n-queries", type=int, help="evaluate a sample of N queries")
    parser.add_argument("--device", default="cuda", help="cpu only for a dry run of this script")
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; this script checks the GPU path", file=sys.stderr)
        return 2
    from cirlib.run import EvalConfig

    out_root = Path(os.environ.get("OUT", tempfile.mkdtemp(prefix="gpu_check_out_")))
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    os.environ.setdefault("CIRLIB_CACHE", str(work / "cache"))
    report: dict = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "cpu_workers": args.workers,
        "mode": "real" if args.data else "synthetic",
        "runs": [],
    }
    plans: list[tuple[str, EvalConfig]] = []
    common = dict(
        device=args.device, batch_size=args.batch_size, workers=args.workers, n_queries=args.n_queries
    )
    if args.data:
        for method in args.methods:
            for precision in args.precision:
                cfg = EvalConfig(
                    args.benchmark, method, args.split, "paper", data=args.data, weights=args.weights,
                    backbone=args.backbone, precision=precision, out=work / f"{method}-{precision}", **common,
                )  # fmt: skip
                plans.append((f"{args.benchmark}/{args.split} {method} {precision}", cfg))
    else:
        from cirlib.data.placeholders import make_placeholder_dataset

        t0 = time.perf_counter()
        weights = work / "weights"
        _random_weights(args.backbone, weights)
        for method in set(args.methods) & {"searle", "lincir", "pic2word"}:
            _random_released_phi(method, args.backbone, weights)
        cirr = make_placeholder_dataset("cirr", work / "data", splits=("val",), size=args.image_size)
        circo = make_placeholder_dataset(
            "circo", work / "data", splits=("test",), size=args.image_size, circo_gallery=args.circo_gallery
        )
        report["setup_s"] = time.perf_counter() - t0
        for method in args.methods:
            for precision in args.precision:
                cfg = EvalConfig(
                    "cirr", method, "val", "paper", data=cirr, weights=weights, backbone=args.backbone,
                    precision=precision, out=work / f"cirr-{method}-{precision}", **common,
                )  # fmt: skip
                plans.append((f"cirr/val {method} {precision}", cfg))
        cfg = EvalConfig(
            "circo", args.methods[-1], "test", "paper", data=circo, weights=weights, backbone=args.backbone,
            precision=args.precision[-1], out=out_root / "circo_test", **common,
        )  # fmt: skip
        plans.append((f"circo/test {args.methods[-1]} {args.precision[-1]}", cfg))
    for name, cfg in plans:
        print(f"gpu_check: {name}", file=sys.stderr, flush=True)
        report["runs"].append(_summary(name, _run(cfg, repeat=2)))
    if args.device.startswith("cuda"):
        report["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    text = json.dumps(report, indent=1)
    print(text)
    if "OUT" in os.environ:
        (out_root / "gpu_check.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
