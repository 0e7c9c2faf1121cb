"""Tiny CLIP throughput: cirlib's training loop and image encoder against raw open_clip calls.

* training: ``train_clip`` pairs/s (sampler, tokenised captions, uint8 -> tensor conversion, loss,
  clipping, logit-scale clamp) against a bare open_clip forward + backward + AdamW step on batches
  already in tensor form (the floor any training loop pays). Ratio = ours / raw throughput.
* encoding: ``CLIPModel.encode_images`` images/s (uint8 in, normalised features out, batched,
  inference mode) against raw ``model.encode_image`` on pre-converted float tensors.

Results go to ``benchmarks/results/clip.json``.

    .venv/bin/python benchmarks/bench_clip.py [--steps 20] [--images 4096]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cirlib.config import atomic_write_json  # noqa: E402
from cirlib.models.clip import (  # noqa: E402
    TINY_CLIP_CONFIG,
    CLIPModel,
    CLIPTrainConfig,
    build_open_clip,
    contrastive_loss,
    images_to_tensor,
    train_clip,
)
from cirlib.world import pretraining_pairs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def raw_training(images, captions, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model = build_open_clip(TINY_CLIP_CONFIG).train()
    import open_clip

    tokens = open_clip.SimpleTokenizer(context_length=model.context_length)(list(captions))
    x_all = images_to_tensor(images, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for step in range(steps):
        sl = slice((step * batch) % (len(images) - batch), (step * batch) % (len(images) - batch) + batch)
        img = F.normalize(model.encode_image(x_all[sl]), dim=-1)
        txt = F.normalize(model.encode_text(tokens[sl]), dim=-1)
        loss = contrastive_loss(img, txt, model.logit_scale.exp())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def ours_training(images, captions, steps: int, batch: int) -> float:
    config = CLIPTrainConfig(steps=steps, batch_size=batch, warmup_steps=1, checkpoint_every=10**9)
    start = time.perf_counter()
    train_clip(images, captions, config, seed=0, progress=False)
    return steps * batch / (time.perf_counter() - start)


def encoding(images) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_open_clip(TINY_CLIP_CONFIG).eval()
    clip = CLIPModel(model, TINY_CLIP_CONFIG)
    clip.encode_images(images[:256])  # warm-up
    start = time.perf_counter()
    clip.encode_images(images, progress=False)
    ours = len(images) / (time.perf_counter() - start)
    x = images_to_tensor(images, 64)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), 256):
            model.encode_image(x[i : i + 256])
    raw = len(images) / (time.perf_counter() - start)
    return ours, raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--images", type=int, default=4096)
    args = parser.parse_args()
    data = pretraining_pairs(max(args.images, args.batch * 4), seed=5)
    raw_train = raw_training(data.images, data.captions, args.steps, args.batch)
    our_train = ours_training(data.images, data.captions, args.steps, args.batch)
    our_enc, raw_enc = encoding(data.images[: args.images])
    result = {
        "threads": torch.get_num_threads(),
        "train_pairs_per_s": {
            "ours": round(our_train, 1),
            "raw_open_clip": round(raw_train, 1),
            "ratio": round(our_train / raw_train, 3),
        },
        "encode_images_per_s": {
            "ours": round(our_enc, 1),
            "raw_open_clip": round(raw_enc, 1),
            "ratio": round(our_enc / raw_enc, 3),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "clip.json", result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
