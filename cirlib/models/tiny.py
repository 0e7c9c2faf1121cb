"""The tiny profile's trained models as recipes: what data, which config, which seed.

Each recipe names a checkpoint. :func:`load_tiny` returns the committed checkpoint from
``data/checkpoints`` when its config matches, else trains it (progress bar) into the cache;
``cirlib train --from-scratch`` retrains every recipe and rewrites the committed checkpoints.

Zero-shot means zero-shot: the CLIP learns from world image-caption pairs, phi networks from world
images only. No recipe here sees a CIR triplet (the supervised reference lives in
:mod:`cirlib.methods.supervised` and is labelled as such).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cirlib.models import zoo
from cirlib.models.clip import CLIPModel, CLIPTrainConfig, train_clip
from cirlib.models.phi import (
    DistilConfig,
    OTIConfig,
    Phi,
    PhiTrainConfig,
    optimise_pseudo_tokens,
    train_phi,
    train_phi_distilled,
)
from cirlib.models.predicir import CropConfig, PrediCIRArch, PrediCIRNet, PrediCIRTrainConfig, train_predicir
from cirlib.world import pretraining_pairs

if TYPE_CHECKING:
    from cirlib.generation.composed import GeneratorTrainConfig, GeneratorUNet

CLIP_NAME = "tiny-clip"
PIC2WORD_NAME = "tiny-phi-pic2word"
SEARLE_NAME = "tiny-phi-searle"
GENERATOR_NAME = "tiny-cig-generator"
PREDICIR_NAME = "tiny-predicir"
CAPTIONER_NAME = "tiny-ipcir-captioner"
PLANNER_NAME = "tiny-ipcir-planner"
LAYOUT_GENERATOR_NAME = "tiny-ipcir-generator"


@dataclass(frozen=True)
class ClipRecipe:
    n_pairs: int = 40_000
    data_seed: int = 0
    seed: int = 0
    train: CLIPTrainConfig = field(
        default_factory=lambda: CLIPTrainConfig(
            steps=600, batch_size=256, lr=1e-3, warmup_steps=50, checkpoint_every=100
        )
    )


@dataclass(frozen=True)
class Pic2WordRecipe:
    n_images: int = 20_000
    data_seed: int = 1  # images the CLIP never saw in pre-training
    seed: int = 0
    train: PhiTrainConfig = field(default_factory=lambda: PhiTrainConfig(steps=600, lr=2e-4))


@dataclass(frozen=True)
class SearleRecipe:
    # OTI costs one text-encoder pass per image per step: 1,024 images x 200 steps fit the CPU
    # budget (SEARLE's code runs 350 steps over all of ImageNet's test images on a GPU).
    n_images: int = 1_024
    data_seed: int = 2
    seed: int = 0
    oti: OTIConfig = field(default_factory=lambda: OTIConfig(steps=200))
    distil: DistilConfig = field(default_factory=lambda: DistilConfig(steps=1000, lambda_reg=0.0))


def _generator_train_config(**overrides) -> GeneratorTrainConfig:
    from cirlib.generation.composed import GeneratorTrainConfig

    return GeneratorTrainConfig(**overrides)


@dataclass(frozen=True)
class GeneratorRecipe:
    """CIG's composed-image generator (:mod:`cirlib.generation.composed`): world image-caption pairs
    the CLIP never saw, conditioned through the Pic2Word phi (our better-composing phi, notebook 01)."""

    n_pairs: int = 20_000
    data_seed: int = 3
    seed: int = 0
    phi: str = PIC2WORD_NAME
    train: GeneratorTrainConfig = field(
        default_factory=lambda: _generator_train_config(steps=2400, lr=1e-3, snapshot_steps=(300, 600, 1200))
    )


@dataclass(frozen=True)
class PrediCIRRecipe:
    """PrediCIR (:mod:`cirlib.models.predicir`): world views of image-caption pairs the CLIP never saw."""

    n_pairs: int = 20_000
    data_seed: int = 4
    seed: int = 0
    train: PrediCIRTrainConfig = field(default_factory=PrediCIRTrainConfig)
    arch: PrediCIRArch = field(default_factory=PrediCIRArch)


def _captioner_train_config(**overrides):
    from cirlib.models.captioner import CaptionerTrainConfig

    return CaptionerTrainConfig(**overrides)


def _planner_train_config(**overrides):
    from cirlib.models.planner import PlannerTrainConfig

    return PlannerTrainConfig(**overrides)


@dataclass(frozen=True)
class CaptionerRecipe:
    """IP-CIR's captioner, the BLIP-2 stand-in (:mod:`cirlib.models.captioner`): world images the
    CLIP never saw, with dense captions (image-caption pairs only)."""

    n_pairs: int = 20_000
    data_seed: int = 5
    seed: int = 0
    train: Any = field(default_factory=_captioner_train_config)


@dataclass(frozen=True)
class PlannerRecipe:
    """IP-CIR's planner, the LLM stand-in (:mod:`cirlib.models.planner`): text only, examples written
    from the world's edit language (its own seeds, never a benchmark query)."""

    data_seed: int = 6
    seed: int = 0
    train: Any = field(default_factory=_planner_train_config)


@dataclass(frozen=True)
class LayoutGeneratorRecipe:
    """IP-CIR's layout-controlled generator (:mod:`cirlib.generation.grounded`): CIG's text-to-image
    UNet fine-tuned on grounded captions (world images with their objects' phrases and boxes)."""

    n_pairs: int = 20_000
    data_seed: int = 7
    seed: int = 0
    base: str = GENERATOR_NAME
    layout_channels: int = 8
    train: Any = field(
        default_factory=lambda: _generator_train_config(
            steps=800, batch_size=64, lr=5e-4, warmup_steps=50, checkpoint_every=100
        )
    )


#: The crop-size sweep (fraction of the image area a source view keeps), by name.
PREDICIR_CROPS: dict[str, CropConfig] = {
    "small": CropConfig(0.1, 0.25),
    "medium": CropConfig(0.25, 0.5),
    "large": CropConfig(0.5, 0.75),
}
#: The crop setting of ``tiny-predicir`` and of its other ablations: the best of the sweep on the
#: world's val splits (notebook 03 shows the sweep), frozen before any test number was computed.
PREDICIR_CROP = "large"

CLIP_RECIPE = ClipRecipe()
PIC2WORD_RECIPE = Pic2WordRecipe()
SEARLE_RECIPE = SearleRecipe()
GENERATOR_RECIPE = GeneratorRecipe()
PREDICIR_RECIPE = PrediCIRRecipe()
CAPTIONER_RECIPE = CaptionerRecipe()
PLANNER_RECIPE = PlannerRecipe()
LAYOUT_GENERATOR_RECIPE = LayoutGeneratorRecipe()

#: ``CIRLIB_RECIPES=micro`` swaps in recipes that train in seconds (pipeline checks and tests that
#: must not depend on committed checkpoints). Their checkpoints have other config hashes, so they
#: never mix with the real ones; they are useless for measuring anything.
MICRO = os.environ.get("CIRLIB_RECIPES") == "micro"
if MICRO:
    CLIP_RECIPE = ClipRecipe(
        n_pairs=512, train=CLIPTrainConfig(steps=6, batch_size=64, warmup_steps=2, checkpoint_every=3)
    )
    PIC2WORD_RECIPE = Pic2WordRecipe(n_images=256, train=PhiTrainConfig(steps=4, batch_size=64))
    SEARLE_RECIPE = SearleRecipe(
        n_images=64,
        oti=OTIConfig(steps=3, batch_size=64),
        distil=DistilConfig(steps=4, batch_size=64, lambda_reg=0.0),
    )
    GENERATOR_RECIPE = GeneratorRecipe(
        n_pairs=128,
        train=_generator_train_config(steps=4, batch_size=16, snapshot_steps=(2,), checkpoint_every=2),
    )
    PREDICIR_RECIPE = PrediCIRRecipe(
        n_pairs=128, train=PrediCIRTrainConfig(steps=3, batch_size=32, warmup_steps=1, checkpoint_every=2)
    )
    CAPTIONER_RECIPE = CaptionerRecipe(
        n_pairs=128, train=_captioner_train_config(steps=3, batch_size=32, warmup_steps=1, checkpoint_every=2)
    )
    PLANNER_RECIPE = PlannerRecipe(
        train=_planner_train_config(
            steps=3, batch_size=32, warmup_steps=1, checkpoint_every=2, n_examples=256
        )
    )
    LAYOUT_GENERATOR_RECIPE = LayoutGeneratorRecipe(
        n_pairs=128, train=_generator_train_config(steps=3, batch_size=16, warmup_steps=1, checkpoint_every=2)
    )
elif os.environ.get("CIRLIB_RECIPES") not in (None, "", "default"):
    raise ValueError(f"CIRLIB_RECIPES must be 'default' or 'micro', not {os.environ['CIRLIB_RECIPES']!r}")


def predicir_recipes() -> dict[str, PrediCIRRecipe]:
    """``tiny-predicir`` (the chosen crop setting, missing-part prediction, adaptive fusion) and its
    ablations: the other crop settings, whole-target prediction, fixed fusion weights, no prediction."""
    base = replace(PREDICIR_RECIPE, train=replace(PREDICIR_RECIPE.train, crop=PREDICIR_CROPS[PREDICIR_CROP]))
    recipes = {PREDICIR_NAME: base}
    for crop_name, crop in PREDICIR_CROPS.items():
        if crop_name != PREDICIR_CROP:
            recipes[f"{PREDICIR_NAME}-crop-{crop_name}"] = replace(base, train=replace(base.train, crop=crop))
    recipes[f"{PREDICIR_NAME}-whole"] = replace(base, arch=replace(base.arch, prediction="whole"))
    recipes[f"{PREDICIR_NAME}-fixed-fusion"] = replace(base, arch=replace(base.arch, adaptive_fusion=False))
    recipes[f"{PREDICIR_NAME}-no-prediction"] = replace(base, arch=replace(base.arch, prediction="none"))
    return recipes


def predicir_crop_names() -> dict[str, str]:
    """Crop setting name -> the checkpoint trained with it (everything else as ``tiny-predicir``)."""
    return {c: PREDICIR_NAME if c == PREDICIR_CROP else f"{PREDICIR_NAME}-crop-{c}" for c in PREDICIR_CROPS}


def default_root() -> Path | None:
    """Where :func:`load_tiny` looks: committed then cached checkpoints, or (micro recipes) a cache
    folder of their own, so that micro models never meet the committed registry."""
    return zoo.cache_models_root() / "micro" if MICRO else None


def train_command(name: str) -> str:
    """The command that rebuilds checkpoint ``name`` (recorded in the registry, quoted in errors); the
    generator's snapshots come from the generator's own training run."""
    if name.startswith(f"{GENERATOR_NAME}-step"):
        name = GENERATOR_NAME
    return f"cirlib train --only {name} --from-scratch"


def _recipe_config(recipe, clip: CLIPModel | None) -> dict:
    config = asdict(recipe)
    if clip is not None:
        config["clip_hash"] = clip.hash  # a phi belongs to one CLIP
    return config


def _resume_dir(name: str) -> Path:
    from cirlib.config import cache_root

    return cache_root() / "training" / name


def train_tiny_clip(recipe: ClipRecipe = CLIP_RECIPE, progress: bool = True) -> CLIPModel:
    data = pretraining_pairs(recipe.n_pairs, recipe.data_seed)
    return train_clip(
        data.images,
        data.captions,
        recipe.train,
        recipe.seed,
        resume_dir=_resume_dir(CLIP_NAME),
        progress=progress,
    )


def train_tiny_pic2word(
    clip: CLIPModel, recipe: Pic2WordRecipe = PIC2WORD_RECIPE, progress: bool = True
) -> Phi:
    images = pretraining_pairs(recipe.n_images, recipe.data_seed).images
    return train_phi(clip, images, recipe.train, recipe.seed, progress=progress)


def train_tiny_searle(clip: CLIPModel, recipe: SearleRecipe = SEARLE_RECIPE, progress: bool = True) -> Phi:
    images = pretraining_pairs(recipe.n_images, recipe.data_seed).images
    features = clip.encode_images(images)
    tokens = optimise_pseudo_tokens(clip, features, recipe.oti, recipe.seed, progress=progress)
    return train_phi_distilled(clip, features, tokens, recipe.distil, recipe.seed, progress=progress)


def train_tiny_predicir(
    clip: CLIPModel, recipe: PrediCIRRecipe, name: str, progress: bool = True
) -> PrediCIRNet:
    data = pretraining_pairs(recipe.n_pairs, recipe.data_seed)
    return train_predicir(
        clip,
        data.images,
        data.captions,
        recipe.train,
        recipe.seed,
        arch=recipe.arch,
        resume_dir=_resume_dir(name),
        progress=progress,
    )


IPCIR_NAMES = (CAPTIONER_NAME, PLANNER_NAME, LAYOUT_GENERATOR_NAME)


def ipcir_recipe(name: str) -> CaptionerRecipe | PlannerRecipe | LayoutGeneratorRecipe:
    """The recipe of an IP-CIR component, by checkpoint name."""
    recipes = {
        CAPTIONER_NAME: CAPTIONER_RECIPE,
        PLANNER_NAME: PLANNER_RECIPE,
        LAYOUT_GENERATOR_NAME: LAYOUT_GENERATOR_RECIPE,
    }
    if name not in recipes:
        raise KeyError(f"{name!r} is not an IP-CIR component; known: {', '.join(IPCIR_NAMES)}")
    return recipes[name]


def ipcir_config(name: str, clip: CLIPModel | None, root: Path | None = None) -> dict:
    """The registry config of an IP-CIR component (the generator's includes its base UNet's digest)."""
    from cirlib.retrieval import content_digest

    if name == CAPTIONER_NAME:
        return _recipe_config(CAPTIONER_RECIPE, clip)
    if name == PLANNER_NAME:
        return _recipe_config(PLANNER_RECIPE, None)  # text only: no CLIP
    if name == LAYOUT_GENERATOR_NAME:
        base = load_tiny(LAYOUT_GENERATOR_RECIPE.base, root=root)
        digest = content_digest({k: v.numpy() for k, v in base.state_dict().items()})
        return {**_recipe_config(LAYOUT_GENERATOR_RECIPE, clip), "base_digest": digest}
    raise KeyError(f"{name!r} is not an IP-CIR component; known: {', '.join(IPCIR_NAMES)}")


def train_tiny_ipcir(
    name: str, clip: CLIPModel, progress: bool = True, root: Path | None = None
) -> torch.nn.Module:
    """Train one IP-CIR component (resumable): the captioner on image-caption pairs, the planner on
    text, the layout generator on grounded captions."""
    if name == CAPTIONER_NAME:
        from cirlib.models.captioner import captioning_pairs, train_captioner

        r = CAPTIONER_RECIPE
        images, captions, _ = captioning_pairs(r.n_pairs, r.data_seed)
        return train_captioner(
            clip, images, captions, r.train, r.seed, resume_dir=_resume_dir(name), progress=progress
        )
    if name == PLANNER_NAME:
        from cirlib.models.planner import planning_examples, train_planner

        p = PLANNER_RECIPE
        examples = planning_examples(p.train.n_examples, p.data_seed)
        return train_planner(examples, p.train, p.seed, resume_dir=_resume_dir(name), progress=progress)
    if name == LAYOUT_GENERATOR_NAME:
        from cirlib.generation.grounded import scene_plans, train_grounded_generator

        g = LAYOUT_GENERATOR_RECIPE
        data = pretraining_pairs(g.n_pairs, g.data_seed)
        return train_grounded_generator(
            clip,
            load_tiny(g.base, root=root),  # type: ignore[arg-type]
            data.images,
            scene_plans(data.scenes),
            g.train,
            g.seed,
            layout_channels=g.layout_channels,
            resume_dir=_resume_dir(name),
            progress=progress,
        )
    raise KeyError(f"{name!r} is not an IP-CIR component; known: {', '.join(IPCIR_NAMES)}")


def generator_snapshot_name(step: int) -> str:
    """Checkpoint name of the generator's EMA weights after ``step`` training steps."""
    return f"{GENERATOR_NAME}-step{step:05d}"


def generator_training_step(name: str) -> int:
    """How many training steps the generator checkpoint ``name`` (final or snapshot) had."""
    if name == GENERATOR_NAME:
        return GENERATOR_RECIPE.train.steps
    if not name.startswith(f"{GENERATOR_NAME}-step"):
        raise KeyError(f"{name!r} is not a generator checkpoint; known: {', '.join(generator_names())}")
    return int(name.rsplit("step", 1)[1])


def generator_names() -> list[str]:
    """The final generator and its snapshots (the training-steps ablation), by training step."""
    return [generator_snapshot_name(s) for s in GENERATOR_RECIPE.train.snapshot_steps] + [GENERATOR_NAME]


def generator_config(clip: CLIPModel, phi: Phi, snapshot_step: int | None = None) -> dict:
    from cirlib.retrieval import content_digest

    config = {
        **_recipe_config(GENERATOR_RECIPE, clip),
        "phi_digest": content_digest({k: v.numpy() for k, v in phi.state_dict().items()}),
    }
    if snapshot_step is not None:
        config["snapshot_step"] = snapshot_step
    return config


def train_tiny_generator(
    clip: CLIPModel, phi: Phi, recipe: GeneratorRecipe | None = None, progress: bool = True
) -> tuple[GeneratorUNet, dict[int, GeneratorUNet]]:
    """The final EMA generator and its snapshots, trained on world pairs (resumable)."""
    from cirlib.generation.composed import train_generator

    recipe = recipe or GENERATOR_RECIPE
    data = pretraining_pairs(recipe.n_pairs, recipe.data_seed)
    return train_generator(
        clip,
        phi,
        data.images,
        data.captions,
        recipe.train,
        recipe.seed,
        resume_dir=_resume_dir(GENERATOR_NAME),
        progress=progress,
    )


def save_generator(
    final: GeneratorUNet,
    snapshots: dict[int, GeneratorUNet],
    clip: CLIPModel,
    phi: Phi,
    root: Path,
    metrics: dict | None = None,
    skip: str | None = None,
) -> dict[str, GeneratorUNet]:
    """Register the trained generator and its snapshots under ``root`` (``metrics`` go with the final
    one; ``skip`` names one not to save); returns them by checkpoint name."""
    models = {generator_snapshot_name(s): m for s, m in snapshots.items()} | {GENERATOR_NAME: final}
    for name, model in models.items():
        if name == skip:
            continue
        step = None if name == GENERATOR_NAME else generator_training_step(name)
        zoo.save_checkpoint(
            name,
            model,
            generator_config(clip, phi, step),
            GENERATOR_RECIPE.seed,
            train_command(name),
            metrics if name == GENERATOR_NAME else None,
            root=root,
        )
    return models


def _train_generator_into(root: Path | None, wanted: str, progress: bool):
    """Train the generator, register every snapshot under ``root`` (the cache by default), and return
    the one called ``wanted`` (:func:`zoo.load_or_train` registers that one itself)."""
    clip, phi = (
        load_tiny(CLIP_NAME, root=root, progress=progress),
        load_tiny(PIC2WORD_NAME, root=root, progress=progress),
    )
    final, snapshots = train_tiny_generator(clip, phi, progress=progress)  # type: ignore[arg-type]
    target = root if root is not None else zoo.cache_models_root()
    return save_generator(final, snapshots, clip, phi, target, skip=wanted)[wanted]  # type: ignore[arg-type]


#: Models already loaded in this process, by (name, root): they are immutable, and every
#: method of a notebook shares one CLIP instead of reading and hashing it again.
_LOADED: dict[tuple[str, str], CLIPModel | Phi | torch.nn.Module] = {}


def load_tiny(
    name: str, *, root: Path | None = None, progress: bool = True
) -> CLIPModel | Phi | torch.nn.Module:
    """A tiny-profile model by checkpoint name: committed if present, else trained and cached."""
    root = default_root() if root is None else root
    key = (name, str(root))
    if key not in _LOADED:
        _LOADED[key] = _load_tiny(name, root, progress)
    return _LOADED[key]


def _load_tiny(name: str, root: Path | None, progress: bool) -> CLIPModel | Phi | torch.nn.Module:
    if name == CLIP_NAME:
        train: Callable[[], CLIPModel | Phi] = lambda: train_tiny_clip(progress=progress)  # noqa: E731
        config = _recipe_config(CLIP_RECIPE, None)
        seed = CLIP_RECIPE.seed
    elif name in (PIC2WORD_NAME, SEARLE_NAME):
        clip = load_tiny(CLIP_NAME, root=root, progress=progress)
        assert isinstance(clip, CLIPModel)
        if name == PIC2WORD_NAME:
            config, seed = _recipe_config(PIC2WORD_RECIPE, clip), PIC2WORD_RECIPE.seed
            train = lambda: train_tiny_pic2word(clip, progress=progress)  # noqa: E731
        else:
            config, seed = _recipe_config(SEARLE_RECIPE, clip), SEARLE_RECIPE.seed
            train = lambda: train_tiny_searle(clip, progress=progress)  # noqa: E731
    elif name in generator_names():
        clip, phi = (
            load_tiny(CLIP_NAME, root=root, progress=progress),
            load_tiny(PIC2WORD_NAME, root=root, progress=progress),
        )
        step = None if name == GENERATOR_NAME else generator_training_step(name)
        config, seed = generator_config(clip, phi, step), GENERATOR_RECIPE.seed  # type: ignore[arg-type]
        train = lambda: _train_generator_into(root, name, progress)  # noqa: E731
    elif name in predicir_recipes():
        clip = load_tiny(CLIP_NAME, root=root, progress=progress)
        assert isinstance(clip, CLIPModel)
        recipe = predicir_recipes()[name]
        config, seed = _recipe_config(recipe, clip), recipe.seed
        train = lambda: train_tiny_predicir(clip, recipe, name, progress=progress)  # noqa: E731
    elif name in IPCIR_NAMES:
        clip = load_tiny(CLIP_NAME, root=root, progress=progress)
        assert isinstance(clip, CLIPModel)
        config = ipcir_config(name, clip, root)
        seed = ipcir_recipe(name).seed
        train = lambda: train_tiny_ipcir(name, clip, progress=progress, root=root)  # noqa: E731
    else:
        known = ", ".join(
            [CLIP_NAME, PIC2WORD_NAME, SEARLE_NAME, *generator_names(), *predicir_recipes(), *IPCIR_NAMES]
        )
        raise KeyError(f"unknown tiny model {name!r}; known: {known}")
    with torch.random.fork_rng():
        return zoo.load_or_train(
            name, train, config=config, seed=seed, command=train_command(name), root=root
        )
