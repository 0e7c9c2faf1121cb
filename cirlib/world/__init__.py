"""The shapes world: scenes, rendering, captions, edits and benchmarks with complete ground truth."""

from cirlib.world.benchmarks import (
    FIQ_CATEGORIES,
    WORLD_VERSION,
    PretrainingPairs,
    Triplets,
    load_world_benchmark,
    pretraining_pairs,
    training_triplets,
)
from cirlib.world.edits import EDIT_KINDS, Edit, TargetSpec, apply_edit, sample_edit
from cirlib.world.language import alt_text_caption, full_caption
from cirlib.world.render import render, render_many
from cirlib.world.scene import BACKGROUNDS, COLORS, SHAPES, SIZES, Obj, Scene, sample_scene

caption = alt_text_caption

__all__ = [
    "BACKGROUNDS", "COLORS", "EDIT_KINDS", "FIQ_CATEGORIES", "SHAPES", "SIZES", "WORLD_VERSION",
    "Edit", "Obj", "PretrainingPairs", "Scene", "TargetSpec", "Triplets", "alt_text_caption", "apply_edit",
    "caption", "full_caption", "load_world_benchmark", "pretraining_pairs", "render", "render_many",
    "sample_edit", "sample_scene", "training_triplets",
]  # fmt: skip
