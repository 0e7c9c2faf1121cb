"""PrediCIR in the tiny profile: the reference-feature cache, and the region grid.

Two ratios, each against a named baseline measured back to back in this process:

* ``ratio_cold_over_warm``: :meth:`cirlib.methods.predicir.PrediCIR.encode_queries` over N CIRR-like val
  queries with the reference-region cache cold (a fresh cache folder: every reference is encoded by the
  frozen CLIP) over the same call warm (the region features read back). Notebook 03 and every rerun
  after the first only read.
* ``ratio_patch_grid_over_region_grid``: one training step of the network (forward and backward of
  predictor and alignment, batch 128) on the 8x8 patch grid (129 tokens) over the 4x4 region grid the
  recipe uses (33 tokens): the cost that made us pool patches into regions.

Uses the committed ``tiny-predicir`` and ``tiny-clip``. Writes ``benchmarks/results/predicir.json``.

    .venv/bin/python benchmarks/bench_predicir.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cirlib.config import atomic_write_json  # noqa: E402
from cirlib.methods.predicir import PrediCIR  # noqa: E402
from cirlib.models.predicir import CropConfig, PrediCIRNet, sample_boxes  # noqa: E402
from cirlib.models.tiny import CLIP_NAME, PREDICIR_NAME, load_tiny  # noqa: E402
from cirlib.retrieval import EmbeddingCache  # noqa: E402
from cirlib.world import load_world_benchmark  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def training_step_seconds(grid: int, batch: int, clip, repeats: int) -> float:
    """Median seconds of one forward + backward of a fresh network on random region features."""
    torch.manual_seed(0)
    net = PrediCIRNet(clip.model.visual.transformer.width, clip.embed_dim, clip.token_dim, grid=grid)
    regions = torch.randn(batch, grid * grid, clip.model.visual.transformer.width)
    features = torch.nn.functional.normalize(torch.randn(batch, clip.embed_dim), dim=-1)
    boxes = sample_boxes(batch, CropConfig(0.5, 0.75), grid, np.random.default_rng(0))
    times = []
    for _ in range(repeats + 1):  # the first round warms up
        start = time.perf_counter()
        out = net(regions, features, features, boxes)
        (out.token.pow(2).mean() + out.predicted.pow(2).mean()).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="queries for the cache measurement")
    parser.add_argument("--batch", type=int, default=128, help="training batch for the grid measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "predicir.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clip, net = load_tiny(CLIP_NAME), load_tiny(PREDICIR_NAME)
    bench = load_world_benchmark("cirr", "val")
    queries, gallery = bench.queries[: args.n], bench.galleries["all"]

    rounds = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            method = PrediCIR(clip, net, box="full", cache=EmbeddingCache(Path(tmp)))  # type: ignore[arg-type]
            start = time.perf_counter()
            with torch.inference_mode():
                cold_q = method.encode_queries(queries, gallery)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            with torch.inference_mode():
                warm_q = method.encode_queries(queries, gallery)
            warm = time.perf_counter() - start
            assert torch.equal(cold_q, warm_q), "a warm cache must give the same query embeddings"
        rounds.append({"cold": cold, "warm": warm})
    cold, warm = (statistics.median(r[k] for r in rounds) for k in ("cold", "warm"))
    patch_grid = training_step_seconds(8, args.batch, clip, args.repeats)
    region_grid = training_step_seconds(4, args.batch, clip, args.repeats)
    result = {
        "n": len(queries),
        "threads": args.threads,
        "queries_per_s_cold": len(queries) / cold,
        "queries_per_s_warm": len(queries) / warm,
        "ratio_cold_over_warm": cold / warm,
        "batch": args.batch,
        "step_s_patch_grid_8x8": patch_grid,
        "step_s_region_grid_4x4": region_grid,
        "ratio_patch_grid_over_region_grid": patch_grid / region_grid,
        "rounds": rounds,
    }
    atomic_write_json(args.out, result)
    print(
        json.dumps(
            {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items() if k != "rounds"},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
