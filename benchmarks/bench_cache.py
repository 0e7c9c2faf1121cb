"""EmbeddingCache: cold (compute + atomic write) against warm (read + sha256 check + load).

The computation stands in for encoding a gallery: a fixed, seeded torch workload (a 4-layer MLP
"encoder" applied to 20,000 inputs of 512 features, repeated until it takes a few seconds),
returning a float32 ``[20000, 512]`` array (40 MB). It is independent of cirlib.models so the
benchmark measures the cache alone. Each repeat uses a fresh temporary cache folder for the
cold run and then reads it back warm; the ratio is the median over repeats of cold / warm time
(> 1 means the cache pays off), written to ``benchmarks/results/cache.json``.

    .venv/bin/python benchmarks/bench_cache.py
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
from cirlib.retrieval import EmbeddingCache, content_digest  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def workload(n: int, dim: int, passes: int, seed: int) -> np.ndarray:
    """A deterministic stand-in for an image encoder: seeded weights, several passes."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen)
    layers = [torch.randn(dim, dim, generator=gen) / dim**0.5 for _ in range(4)]
    with torch.inference_mode():
        out = torch.zeros(n, dim)
        for _ in range(passes):
            h = x
            for w in layers:
                h = torch.relu(h @ w)
            out += h
        out = torch.nn.functional.normalize(out, dim=1)
    return out.numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "cache.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    inputs_digest = content_digest([args.n, args.dim, args.passes])
    key = {"model": "bench-mlp-seed0", "inputs": inputs_digest}
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="cirlib-bench-cache-") as tmp:
            cache = EmbeddingCache(Path(tmp))
            start = time.perf_counter()
            first = cache.get_or_compute("bench", key, lambda: workload(args.n, args.dim, args.passes, 0))
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            second = cache.get_or_compute("bench", key, lambda: workload(args.n, args.dim, args.passes, 0))
            warm.append(time.perf_counter() - start)
            if cache.misses != 1 or cache.hits != 1 or not np.array_equal(first, second):
                print(f"ERROR: expected 1 miss, 1 hit and equal arrays, got {cache!r}", file=sys.stderr)
                return 1
    ratios = [c / w for c, w in zip(cold, warm)]
    result = {
        "benchmark": "cache",
        "setting": {k: v for k, v in vars(args).items() if k != "out"},
        "baseline": "cold: compute() + atomic write of .npy and sidecar",
        "ours": "warm: read + size/sha256 check + np.load",
        "array_mb": first.nbytes / 2**20,
        "seconds_cold": cold,
        "seconds_warm": warm,
        "median_seconds_cold": statistics.median(cold),
        "median_seconds_warm": statistics.median(warm),
        "ratio_cold_over_warm": statistics.median(ratios),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    print(json.dumps(result, indent=1))
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
