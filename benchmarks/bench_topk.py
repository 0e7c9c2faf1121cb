"""Exact top-k (cirlib.retrieval.topk) against faiss.IndexFlatIP, in one process, same threads.

Setting (defaults): a random L2-normalised float32 gallery of 100,000 x 512, 1,000 queries, k=50,
2 threads for torch and for faiss (OpenMP). Each repeat times faiss and ours back to back and the
order alternates between repeats, so that load from other processes on a shared machine hits both
alike; the reported ratio is the median of per-repeat ratios (ours / faiss throughput, > 1 means
ours is faster), next to the medians of each.

Also checks that both return the same neighbours: per query the index sets must match, except
where the scores at the cut-off are within float tolerance of each other (a near-tie that the two
BLAS libraries may round either way).

    .venv/bin/python benchmarks/bench_topk.py            # writes benchmarks/results/topk.json
    .venv/bin/python benchmarks/bench_topk.py --gallery 20000 --repeats 3   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cirlib.config import atomic_write_json  # noqa: E402
from cirlib.retrieval import topk  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def normalised(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def agreement(ours: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray], atol: float) -> dict:
    """How many queries return the same index set, and whether every difference is a near-tie."""
    (v1, i1), (v2, i2) = ours, ref
    same, near_tie, bad = 0, 0, 0
    for q in range(i1.shape[0]):
        a, b = set(i1[q].tolist()), set(i2[q].tolist())
        if a == b:
            same += 1
            continue
        # Elements in only one set must score within atol of that row's k-th score.
        kth = min(v1[q, -1], v2[q, -1])
        only = np.concatenate([v1[q][~np.isin(i1[q], i2[q])], v2[q][~np.isin(i2[q], i1[q])]])
        if np.all(np.abs(only - kth) <= atol):
            near_tie += 1
        else:
            bad += 1
    max_score_diff = float(np.abs(v1 - v2).max())
    return {
        "same_set": same,
        "near_tie_only": near_tie,
        "mismatch": bad,
        "max_abs_score_diff": max_score_diff,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "topk.json")
    args = parser.parse_args(argv)

    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    gallery = normalised(rng, args.gallery, args.dim)
    queries = normalised(rng, args.queries, args.dim)
    index = faiss.IndexFlatIP(args.dim)
    index.add(gallery)

    def run_faiss() -> tuple[np.ndarray, np.ndarray]:
        return index.search(queries, args.k)

    def run_ours() -> tuple[np.ndarray, np.ndarray]:
        return topk(queries, gallery, args.k)

    # warm-up (page faults, thread pools, BLAS buffers) and the agreement check
    ref, ours = run_faiss(), run_ours()
    agree = agreement(ours, ref, atol=1e-5)
    t_faiss: list[float] = []
    t_ours: list[float] = []
    for r in range(args.repeats):
        order = [("faiss", run_faiss), ("ours", run_ours)]
        if r % 2:
            order.reverse()
        for name, fn in order:
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            (t_faiss if name == "faiss" else t_ours).append(elapsed)
    ratios = [f / o for f, o in zip(t_faiss, t_ours)]  # throughput ours / faiss = time faiss / time ours
    result = {
        "benchmark": "topk",
        "setting": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "baseline": "faiss.IndexFlatIP.search",
        "ours": "cirlib.retrieval.topk",
        "seconds_faiss": t_faiss,
        "seconds_ours": t_ours,
        "median_seconds_faiss": statistics.median(t_faiss),
        "median_seconds_ours": statistics.median(t_ours),
        "queries_per_s_faiss": args.queries / statistics.median(t_faiss),
        "queries_per_s_ours": args.queries / statistics.median(t_ours),
        "ratio_ours_over_faiss_throughput": statistics.median(ratios),
        "ratio_of_medians": statistics.median(t_faiss) / statistics.median(t_ours),
        "agreement": agree,
        "versions": {"torch": torch.__version__, "faiss": faiss.__version__, "numpy": np.__version__},
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
    }
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("seconds_")}, indent=1))
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    if agree["mismatch"]:
        print(f"ERROR: {agree['mismatch']} queries disagree with faiss beyond near-ties", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
