"""CIG pseudo-target generation in the tiny profile: sampler settings, and the pseudo-target cache.

Three ratios, each against a named baseline measured back to back in this process:

* ``ratio_cold_over_warm``: :class:`cirlib.generation.composed.PseudoTargetCache` generating N
  pseudo-targets (cold, fresh cache folder) over reading the same N back (warm: size + sha256 check
  + load). A rerun of notebook 02 only reads.
* ``ratio_25_over_10_steps``: sampling with 25 DDIM steps (the issue's measured setting) over 10
  steps, the images/s of each written too.
* ``ratio_guided_over_unguided``: the cost of classifier-free guidance (two UNet passes per step).

Uses the committed ``tiny-cig-generator`` and real world queries (CIRR-like val). Writes
``benchmarks/results/cig.json``.

    .venv/bin/python benchmarks/bench_cig.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cirlib.config import atomic_write_json  # noqa: E402
from cirlib.generation.composed import PseudoTargetCache, SamplingConfig, TinyComposedGenerator  # noqa: E402
from cirlib.models.tiny import CLIP_NAME, GENERATOR_NAME, PIC2WORD_NAME, load_tiny  # noqa: E402
from cirlib.retrieval import EmbeddingCache, content_digest  # noqa: E402
from cirlib.world import load_world_benchmark  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=256, help="queries (pseudo-targets) per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "cig.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clip, phi, unet = load_tiny(CLIP_NAME), load_tiny(PIC2WORD_NAME), load_tiny(GENERATOR_NAME)
    bench = load_world_benchmark("cirr", "val")
    queries = bench.queries[: args.n]
    gallery = bench.galleries["all"]
    refs = list(gallery.pixels([q.reference for q in queries]))
    digests = [content_digest(r) for r in refs]
    texts = [q.texts[0] for q in queries]
    seeds = [1600] * len(queries)

    def timed(target, method: str) -> float:
        start = time.perf_counter()
        if method == "generate":
            target.generate(refs, texts, seeds)
        else:
            target.get(refs, digests, texts, seeds)
        return time.perf_counter() - start

    def sampler(steps: int, guidance: float) -> TinyComposedGenerator:
        return TinyComposedGenerator(unet, clip, phi, SamplingConfig(steps=steps, guidance_scale=guidance))  # type: ignore[arg-type]

    rounds = []
    for _ in range(args.repeats):
        fast, slow, guided = sampler(10, 1.0), sampler(25, 1.0), sampler(10, 3.0)
        t10, t25, tg = (timed(g, "generate") for g in (fast, slow, guided))
        with tempfile.TemporaryDirectory() as tmp:
            store = PseudoTargetCache(sampler(SamplingConfig.steps, 1.0), EmbeddingCache(Path(tmp)))
            cold = timed(store, "get")
            warm = timed(store, "get")
        rounds.append({"t10": t10, "t25": t25, "tguided": tg, "cold": cold, "warm": warm})
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    result = {
        "n": len(queries),
        "threads": args.threads,
        "default_steps": SamplingConfig.steps,
        "images_per_s_10_steps": len(queries) / med["t10"],
        "images_per_s_25_steps": len(queries) / med["t25"],
        "images_per_s_10_steps_guided": len(queries) / med["tguided"],
        "ratio_25_over_10_steps": med["t25"] / med["t10"],
        "ratio_guided_over_unguided": med["tguided"] / med["t10"],
        "cache_cold_s": med["cold"],
        "cache_warm_s": med["warm"],
        "ratio_cold_over_warm": med["cold"] / med["warm"],
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
