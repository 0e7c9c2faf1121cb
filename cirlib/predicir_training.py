"""``cirlib train-predicir``: a PrediCIR checkpoint for a paper-profile backbone, from image-caption pairs.

No official PrediCIR weights exist (the authors' repository is README only), so evaluating
``--method predicir --profile paper`` needs a network trained here, on image-caption pairs the user
supplies (a CC3M subset, say), over the same frozen open_clip backbone the evaluation uses.

:func:`check_inputs` reads the pairs file and checks every path (pairs, images, backbone weights,
output, resume folder) without importing torch, so a typo fails in a fraction of a second.
:func:`train_from_pairs` then loads the CLIP, reads every image into memory (resized, short side then
centre crop, to the backbone's input size: ``N * S * S * 3`` bytes, 150 KB an image at 224 px, so
this is for modest pair sets), calls :func:`cirlib.models.predicir.train_predicir` and writes the
network with :func:`cirlib.models.zoo.save_checkpoint` under ``--output``'s folder, registry entry
included (name: the file's stem; config: backbone, pairs, training settings).

Pairs file: ``.jsonl``, one ``{"image": path, "caption": text}`` object per line (blank lines are
skipped), or ``.csv`` with a header naming the columns ``image`` and ``caption``. Relative image
paths are resolved against the pairs file's folder. Errors name the file and the line.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cirlib.config import CHECKPOINTS_DIR

log = logging.getLogger("cirlib.predicir_training")

#: The zoo's checkpoint-name rule (``cirlib.models.zoo._NAME_RE``): ``--output``'s stem is the name.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PAIRS_FORMATS = {".jsonl": "jsonl", ".csv": "csv"}
#: The grid the paper-size backbones (16 x 16 patches) use; others take the divisor of their patch
#: grid closest to it (see :func:`choose_grid`).
PREFERRED_GRID = 4


class PrediCIRTrainingError(Exception):
    """Bad input to ``cirlib train-predicir``; the message names the file (and line) and the problem."""


@dataclass(frozen=True)
class TrainPrediCIR:
    """The command's settings (the registry entry records them)."""

    pairs: Path
    output: Path
    backbone: str | None = None  # None: the paper profile's default (ViT-L-14)
    weights: Path | None = None  # a file or folder; None: $CIRLIB_WEIGHTS
    steps: int = 700  # as the tiny recipe (cirlib.models.predicir.PrediCIRTrainConfig)
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    grid: int | None = None  # None: choose_grid
    resume_dir: Path | None = None

    def resolved_backbone(self) -> str:
        from cirlib.models.weights import DEFAULT_BACKBONE

        return self.backbone or DEFAULT_BACKBONE


@dataclass(frozen=True)
class Pair:
    image: Path
    caption: str
    line: int  # 1-based line of the pairs file


@dataclass(frozen=True)
class CheckedInputs:
    pairs: list[Pair]
    weights_file: Path


# --------------------------------------------------------------------------- pairs (torch-free)
def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8-sig") as handle:
        for line, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as err:
                raise PrediCIRTrainingError(f"{path} line {line}: not valid JSON ({err.msg})") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if columns and not {"image", "caption"} <= set(columns):
            raise PrediCIRTrainingError(
                f"{path} line 1: the header must name the columns image,caption, not {','.join(columns)}"
            )
        for row in reader:
            yield reader.line_num, row


def read_pairs(path: Path) -> list[Pair]:
    """The image-caption pairs of a ``.jsonl`` or ``.csv`` file (see the module docstring); image
    paths resolved, nothing opened yet. Raises :class:`PrediCIRTrainingError` naming file and line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PrediCIRTrainingError(
            f"--pairs {path} {'is not a file' if path.exists() else 'does not exist'}"
        )
    kind = PAIRS_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise PrediCIRTrainingError(
            f'--pairs {path}: expected a .jsonl file (one {{"image": path, "caption": text}} per line) or a '
            ".csv file with columns image,caption"
        )
    pairs: list[Pair] = []
    try:
        for line, row in (_jsonl_rows if kind == "jsonl" else _csv_rows)(path):
            image = row.get("image") if isinstance(row, dict) else None
            caption = row.get("caption") if isinstance(row, dict) else None
            if not isinstance(image, str) or not image.strip():
                raise PrediCIRTrainingError(f'{path} line {line}: no "image" path')
            if not isinstance(caption, str) or not caption.strip():
                raise PrediCIRTrainingError(f'{path} line {line}: no "caption" text')
            image_path = Path(image.strip()).expanduser()
            pairs.append(
                Pair(
                    image_path if image_path.is_absolute() else path.parent / image_path,
                    caption.strip(),
                    line,
                )
            )
    except UnicodeDecodeError as err:
        raise PrediCIRTrainingError(f"{path}: not UTF-8 text ({err.reason})") from None
    if not pairs:
        raise PrediCIRTrainingError(f"--pairs {path} holds no image-caption pairs")
    if len(pairs) < 2:
        raise PrediCIRTrainingError(
            f"--pairs {path} holds 1 pair; training needs at least 2 (contrastive batches)"
        )
    return pairs


def check_inputs(cfg: TrainPrediCIR) -> CheckedInputs:
    """Every input of a run, checked without importing torch: settings, the pairs file and each image
    it names, the backbone's weights file, the output file and the resume folder."""
    from cirlib.models.weights import MissingWeightsError, resolve_weights

    for name, value in (("--steps", cfg.steps), ("--batch-size", cfg.batch_size), ("--grid", cfg.grid)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise PrediCIRTrainingError(f"{name} must be a whole number >= 1, not {value}")
    output = Path(cfg.output).expanduser()
    if output.suffix != ".safetensors":
        raise PrediCIRTrainingError(
            f"--output {output} must end in .safetensors: the checkpoint is written as <folder>/<name>.safetensors "
            "with <name> its entry in the folder's registry.json"
        )
    if not NAME_PATTERN.match(output.stem):
        raise PrediCIRTrainingError(
            f"--output {output}: the file name without .safetensors ({output.stem!r}) names the checkpoint in "
            f"the registry and must match {NAME_PATTERN.pattern}"
        )
    if output.is_dir():
        raise PrediCIRTrainingError(f"--output {output} is a folder; give the checkpoint file to write")
    if output.parent.exists() and not output.parent.is_dir():
        raise PrediCIRTrainingError(f"--output {output}: {output.parent} is not a folder")
    if output.parent.resolve() == CHECKPOINTS_DIR.resolve():
        raise PrediCIRTrainingError(
            f"--output {output}: {CHECKPOINTS_DIR} holds the committed tiny-profile checkpoints; write a "
            "paper-profile checkpoint to a folder of its own"
        )
    if importlib.util.find_spec("safetensors") is None:
        raise PrediCIRTrainingError(
            "writing a checkpoint needs the safetensors package (pip install safetensors)"
        )
    if cfg.resume_dir is not None and Path(cfg.resume_dir).exists() and not Path(cfg.resume_dir).is_dir():
        raise PrediCIRTrainingError(f"--resume-dir {cfg.resume_dir} is not a folder")
    try:
        weights_file = resolve_weights(cfg.resolved_backbone(), cfg.weights)
    except (MissingWeightsError, KeyError) as err:
        raise PrediCIRTrainingError(str(err).strip('"')) from None
    pairs = read_pairs(cfg.pairs)
    missing = [p for p in pairs if not p.image.is_file()]
    if missing:
        first = missing[0]
        more = (
            f" (and {len(missing) - 1} more of the {len(pairs)} images are missing)"
            if len(missing) > 1
            else ""
        )
        raise PrediCIRTrainingError(
            f"{cfg.pairs} line {first.line}: image {first.image} does not exist{more}"
        )
    return CheckedInputs(pairs, weights_file)


# --------------------------------------------------------------------------- training
def choose_grid(patch_side: int, grid: int | None = None) -> int:
    """Regions per side: ``grid`` if given (it must divide the patch grid), else the divisor of
    ``patch_side`` closest to :data:`PREFERRED_GRID`, the larger on a tie (16 -> 4, 7 -> 7, 2 -> 2)."""
    divisors = [d for d in range(1, patch_side + 1) if patch_side % d == 0]
    if grid is not None:
        if grid not in divisors:
            raise PrediCIRTrainingError(
                f"--grid {grid} must divide the backbone's {patch_side}x{patch_side} patch grid: "
                f"one of {', '.join(map(str, divisors))}"
            )
        return grid
    return min(divisors, key=lambda d: (abs(d - PREFERRED_GRID), -d))


def load_pair_images(pairs: list[Pair], size: int, source: Path, workers: int | None = None):
    """uint8 ``[N, size, size, 3]``: each image converted to RGB, its short side resized to ``size``
    (bicubic) and centre-cropped, as CLIP's own preprocessing frames it. An unreadable image is a
    :class:`PrediCIRTrainingError` naming it and its line of ``source``."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image, ImageOps

    from cirlib.config import progress_bar

    out = np.empty((len(pairs), size, size, 3), dtype=np.uint8)
    log.info("reading %d images into memory (%.2f GB at %d px)", len(pairs), out.nbytes / 1e9, size)

    def read(i: int) -> str | None:
        pair = pairs[i]
        try:
            with Image.open(pair.image) as image:
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale >= size, much faster
                fitted = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
            out[i] = np.asarray(fitted, dtype=np.uint8)
        except Exception as err:  # any decoding failure is reported with its file
            return f"{source} line {pair.line}: cannot read image {pair.image} ({type(err).__name__}: {err})"
        return None

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for problem in progress_bar(
            pool.map(read, range(len(pairs))), desc="read images", total=len(pairs), show=len(pairs) > 2000
        ):
            if problem is not None:
                raise PrediCIRTrainingError(problem)
    return out


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise PrediCIRTrainingError(f"--device {device}: {err}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise PrediCIRTrainingError(f"--device {device}: no CUDA device is available")
    return device


def command_line(cfg: TrainPrediCIR) -> str:
    """The command that rebuilds the checkpoint (recorded in its registry entry)."""
    args = ["cirlib", "train-predicir", "--backbone", cfg.resolved_backbone(), "--pairs", str(cfg.pairs)]
    if cfg.weights is not None:
        args += ["--weights", str(cfg.weights)]
    args += ["--output", str(cfg.output), "--steps", str(cfg.steps), "--batch-size", str(cfg.batch_size)]
    args += ["--seed", str(cfg.seed)]
    if cfg.grid is not None:
        args += ["--grid", str(cfg.grid)]
    return shlex.join(args)


def train_from_pairs(cfg: TrainPrediCIR, inputs: CheckedInputs | None = None) -> dict[str, Any]:
    """Train PrediCIR for ``cfg``'s backbone on its pairs and write the checkpoint; returns a report
    (checkpoint, sha256, backbone, CLIP hash, pairs, grid, final losses)."""
    inputs = inputs or check_inputs(cfg)
    from dataclasses import replace

    from cirlib.models import zoo
    from cirlib.models.paper import load_clip
    from cirlib.models.predicir import PrediCIRArch, PrediCIRTrainConfig, train_predicir

    backbone = cfg.resolved_backbone()
    device = _resolve_device(cfg.device)
    clip = load_clip(backbone, profile="paper", weights=inputs.weights_file).to(device)
    visual = clip.model.visual
    if not hasattr(visual, "grid_size") or not hasattr(visual, "output_tokens"):
        raise PrediCIRTrainingError(f"PrediCIR needs a ViT backbone (patch tokens); {backbone} is not one")
    grid = choose_grid(int(visual.grid_size[0]), cfg.grid)
    images = load_pair_images(inputs.pairs, clip.image_size, cfg.pairs)
    captions = [p.caption for p in inputs.pairs]
    defaults = PrediCIRTrainConfig()
    train = replace(
        defaults,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        warmup_steps=min(defaults.warmup_steps, cfg.steps // 10),  # 50 at the default 700 steps
    )
    arch = PrediCIRArch(grid=grid)
    log.info(
        "training PrediCIR on %d pairs over %s (%s, grid %d) on %s",
        len(captions),
        backbone,
        clip.hash,
        grid,
        device,
    )
    net = train_predicir(
        clip,
        images,
        captions,
        train,
        cfg.seed,
        arch=arch,
        resume_dir=Path(cfg.resume_dir).expanduser() if cfg.resume_dir is not None else None,
    )
    align, predict = net.training_losses[-1] if net.training_losses else (float("nan"), float("nan"))  # type: ignore[attr-defined]
    output = Path(cfg.output).expanduser()
    config = {
        "backbone": backbone,
        "clip": clip.name,
        "clip_hash": clip.hash,
        "weights_file": str(inputs.weights_file),
        "pairs": str(cfg.pairs),
        "n_pairs": len(captions),
        "train": train,
        "arch": arch,
    }
    metrics = {"final_align_loss": align, "final_prediction_loss": predict}
    path = zoo.save_checkpoint(
        output.stem, net, config, cfg.seed, command_line(cfg), metrics, root=output.parent
    )
    if path != output:  # save_checkpoint names the file <root>/<name>.safetensors
        raise PrediCIRTrainingError(f"the checkpoint was written to {path}, not --output {output}")
    entry = zoo.read_registry(output.parent)[output.stem]
    log.info("wrote %s (registry entry %r in %s)", path, output.stem, output.parent / zoo.REGISTRY_FILE)
    return {
        "checkpoint": str(path),
        "sha256": entry["sha256"],
        "backbone": backbone,
        "clip_hash": clip.hash,
        "n_pairs": len(captions),
        "steps": cfg.steps,
        "grid": grid,
        **metrics,
    }


__all__ = [
    "CheckedInputs",
    "Pair",
    "PrediCIRTrainingError",
    "TrainPrediCIR",
    "check_inputs",
    "choose_grid",
    "load_pair_images",
    "read_pairs",
    "train_from_pairs",
]
