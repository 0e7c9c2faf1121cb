"""``cirlib train``: (re)train the tiny profile's models and commit them as checkpoints.

Order matters: the CLIP first, then everything trained against it (phi networks, the supervised
Combiner), because their checkpoints record the CLIP's hash. Each model is timed and, where it has
one, a sanity metric is stored with it in the registry.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cirlib.config import CHECKPOINTS_DIR
from cirlib.methods.supervised import COMBINER_NAME, COMBINER_RECIPE, combiner_config, train_tiny_combiner
from cirlib.models import zoo
from cirlib.models.clip import CLIPModel
from cirlib.models.tiny import (
    CLIP_NAME,
    CLIP_RECIPE,
    GENERATOR_NAME,
    IPCIR_NAMES,
    PIC2WORD_NAME,
    PIC2WORD_RECIPE,
    SEARLE_NAME,
    SEARLE_RECIPE,
    _recipe_config,
    ipcir_config,
    ipcir_recipe,
    predicir_recipes,
    save_generator,
    train_command,
    train_tiny_clip,
    train_tiny_generator,
    train_tiny_ipcir,
    train_tiny_pic2word,
    train_tiny_predicir,
    train_tiny_searle,
)
from cirlib.world import pretraining_pairs

ALL_MODELS = (
    CLIP_NAME,
    PIC2WORD_NAME,
    SEARLE_NAME,
    COMBINER_NAME,
    GENERATOR_NAME,
    *predicir_recipes(),
    *IPCIR_NAMES,
)


def heldout_text_to_image_r1(clip: CLIPModel, n: int = 1000, seed: int = 99) -> float:
    """Text->image R@1 (percent) on held-out world pairs with full captions: a CLIP sanity check."""
    from cirlib.world.language import full_caption

    data = pretraining_pairs(n, seed)
    rng = np.random.default_rng(seed)
    captions = [full_caption(s, rng) for s in data.scenes]
    with torch.inference_mode():
        sims = clip.encode_texts(captions) @ clip.encode_images(data.images).T
    return float((sims.argmax(dim=1) == torch.arange(n)).float().mean() * 100)


def train_all(
    only: list[str] | None = None, *, from_scratch: bool = False, root: Path | None = None
) -> dict[str, dict]:
    """Train the named models (default: all) into ``data/checkpoints``; skip existing ones unless
    ``from_scratch``. ``root`` writes elsewhere than the committed ``data/checkpoints`` (e.g. to
    check that a retrain reproduces the committed models). Returns {name: {metrics...}}."""
    root = CHECKPOINTS_DIR if root is None else Path(root)
    names = list(only or ALL_MODELS)
    unknown = [n for n in names if n not in ALL_MODELS]
    if unknown:
        raise SystemExit(f"cirlib train: unknown model(s) {unknown}; known: {', '.join(ALL_MODELS)}")
    report: dict[str, dict] = {}
    existing = zoo.read_registry(root)

    def needed(name: str) -> bool:
        return name in names and (from_scratch or name not in existing)

    if needed(CLIP_NAME):
        start = time.perf_counter()
        if from_scratch:
            _clear_resume(CLIP_NAME)
        clip = train_tiny_clip()
        seconds = time.perf_counter() - start
        metrics = {"heldout_t2i_r1": heldout_text_to_image_r1(clip), "train_seconds": round(seconds, 1)}
        _save(CLIP_NAME, clip, _recipe_config(CLIP_RECIPE, None), CLIP_RECIPE.seed, metrics, root)
        report[CLIP_NAME] = metrics
    clip = zoo.load_checkpoint(CLIP_NAME, root=root)
    assert isinstance(clip, CLIPModel)
    for name, recipe, train in (
        (PIC2WORD_NAME, PIC2WORD_RECIPE, train_tiny_pic2word),
        (SEARLE_NAME, SEARLE_RECIPE, train_tiny_searle),
    ):
        if needed(name) or (CLIP_NAME in report and name in names):
            start = time.perf_counter()
            phi = train(clip)
            metrics = {"train_seconds": round(time.perf_counter() - start, 1)}
            _save(name, phi, _recipe_config(recipe, clip), recipe.seed, metrics, root)
            report[name] = metrics
    if needed(COMBINER_NAME) or (CLIP_NAME in report and COMBINER_NAME in names):
        start = time.perf_counter()
        combiner = train_tiny_combiner(clip)
        metrics = {"train_seconds": round(time.perf_counter() - start, 1)}
        _save(COMBINER_NAME, combiner, combiner_config(clip), COMBINER_RECIPE.seed, metrics, root)
        report[COMBINER_NAME] = metrics
    retrained_phi = PIC2WORD_NAME in report
    if needed(GENERATOR_NAME) or ((CLIP_NAME in report or retrained_phi) and GENERATOR_NAME in names):
        # CIG's generator is conditioned through the Pic2Word phi: it is retrained with it.
        phi = zoo.load_checkpoint(PIC2WORD_NAME, root=root)
        start = time.perf_counter()
        if from_scratch:
            _clear_resume(GENERATOR_NAME)
        final, snapshots = train_tiny_generator(clip, phi)  # type: ignore[arg-type]
        metrics = {"train_seconds": round(time.perf_counter() - start, 1)}
        save_generator(final, snapshots, clip, phi, root, metrics)  # type: ignore[arg-type]
        report[GENERATOR_NAME] = metrics
    for name, recipe in predicir_recipes().items():
        if needed(name) or (CLIP_NAME in report and name in names):
            start = time.perf_counter()
            if from_scratch:
                _clear_resume(name)
            net = train_tiny_predicir(clip, recipe, name)
            last = np.asarray(net.training_losses[-50:])  # type: ignore[attr-defined]
            metrics = {
                "train_seconds": round(time.perf_counter() - start, 1),
                "final_align_loss": round(float(last[:, 0].mean()), 4),
                "final_prediction_loss": round(float(last[:, 1].mean()), 4),
            }
            _save(name, net, _recipe_config(recipe, clip), recipe.seed, metrics, root)
            report[name] = metrics
    for name in IPCIR_NAMES:
        # The layout generator starts from CIG's generator: it is retrained with it.
        upstream = CLIP_NAME in report or (name == IPCIR_NAMES[-1] and GENERATOR_NAME in report)
        if needed(name) or (upstream and name in names):
            start = time.perf_counter()
            if from_scratch:
                _clear_resume(name)
            model = train_tiny_ipcir(name, clip, root=root)
            metrics = {"train_seconds": round(time.perf_counter() - start, 1)}
            _save(name, model, ipcir_config(name, clip, root), ipcir_recipe(name).seed, metrics, root)
            report[name] = metrics
    return report


def _save(name: str, model, config: dict, seed: int, metrics: dict, root: Path) -> None:
    zoo.save_checkpoint(name, model, config, seed, train_command(name), metrics, root=root)


def _clear_resume(name: str) -> None:
    import shutil

    from cirlib.models.tiny import _resume_dir

    shutil.rmtree(_resume_dir(name), ignore_errors=True)
