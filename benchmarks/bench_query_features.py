"""Warm evaluations with the query-side feature caches, against recomputing those features.

A warm notebook rerun evaluates the same methods on the same queries: every image and text it needs
is on disk, but before the query-side feature caches each evaluation still tokenised and encoded
its texts, re-read every generated image (one file each) and encoded it again. This script times
``cirlib.evaluation.evaluate`` on CIRR-like test queries for the methods of notebooks 01-04:

* ours: ``Method.text_features``, ``pseudo_text_features`` and ``generated_image_features`` (CIG's
  pseudo-targets, IP-CIR's proxies) read from a warm embedding cache;
* baseline: the same evaluation with those three recomputed from their (warm) inputs, which is what
  the code did before they were cached: texts encoded by the CLIP, pseudo-targets and proxies read
  from the pseudo-target cache and encoded.

Both sides get freshly built methods each round (no in-memory memo carries over) and return the
same rankings (checked). The ratio is the median over rounds of baseline seconds over ours. Uses the
committed checkpoints and the project cache (run ``make reproduce`` first so that the generated
images exist; otherwise the first round generates them). Writes
``benchmarks/results/query_features.json``.

    .venv/bin/python benchmarks/bench_query_features.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cirlib.config import atomic_write_json  # noqa: E402
from cirlib.evaluation import evaluate  # noqa: E402
from cirlib.methods import build_method  # noqa: E402
from cirlib.methods.base import Method  # noqa: E402
from cirlib.world import load_world_benchmark  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _uncached_text_features(self: Method, texts) -> torch.Tensor:
    texts = list(texts)
    return self.clip.encode_texts(texts).float() if texts else torch.zeros(0, self.clip.embed_dim)


def _uncached_pseudo_text_features(self: Method, texts, pseudo) -> torch.Tensor:
    return self.clip.encode_texts_with_pseudo(list(texts), pseudo)


def _uncached_generated_image_features(self: Method, queries, gallery, signature, texts, seeds, images):
    array = images()
    flat = array.reshape(-1, *array.shape[2:])
    return self.clip.encode_images(flat, normalize=False).view(*array.shape[:2], -1)


@contextlib.contextmanager
def uncached() -> Iterator[None]:
    """The three query-side feature functions as they were before they were cached."""
    swaps = [
        (Method, "text_features", _uncached_text_features),
        (Method, "pseudo_text_features", _uncached_pseudo_text_features),
        (Method, "generated_image_features", _uncached_generated_image_features),
    ]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in swaps]
    try:
        for owner, name, replacement in swaps:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def methods() -> dict[str, Method]:
    """Fresh methods (no memo carries over between rounds), as notebooks 01-04 build them."""
    built = {name: build_method(name) for name in ("text", "sum", "pic2word", "predicir")}
    built["cig"] = build_method("cig", fusion_weight=0.5)
    built["ipcir"] = build_method("ipcir", base="pic2word", lam=0.5, n_proxies=2)
    return built


def run(benchmark) -> tuple[float, dict[str, np.ndarray]]:
    ms = methods()
    start = time.perf_counter()
    hits = {name: np.asarray(evaluate(m, benchmark).per_query["recall@1"]) for name, m in ms.items()}
    return time.perf_counter() - start, hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="CIRR-like test queries")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "query_features.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    benchmark = load_world_benchmark("cirr", "test").subsample(args.n, seed=0)
    _, reference = run(benchmark)  # fills every cache (generates only on a cold project cache)
    rounds = []
    for i in range(args.repeats):
        order = ("ours", "baseline") if i % 2 == 0 else ("baseline", "ours")
        times = {}
        for side in order:
            with uncached() if side == "baseline" else contextlib.nullcontext():
                seconds, hits = run(benchmark)
            if any(not np.array_equal(hits[name], reference[name]) for name in reference):
                raise SystemExit(f"{side}: recall@1 differs from the reference run")
            times[side] = seconds
        rounds.append(times)
    med = {side: statistics.median(r[side] for r in rounds) for side in ("ours", "baseline")}
    result = {
        "n_queries": len(benchmark.queries),
        "methods": list(reference),
        "threads": args.threads,
        "ours_s": med["ours"],
        "baseline_s": med["baseline"],
        "ratio_baseline_over_ours": med["baseline"] / med["ours"],
        "rounds": rounds,
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
