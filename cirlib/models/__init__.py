"""Models of the companion: tiny CLIPs of the real kind, pseudo-word mappings and the checkpoint zoo.

See docs/ARCHITECTURE.md. ``clip`` holds :class:`CLIPModel` and :func:`train_clip`; ``phi`` the Pic2Word
and SEARLE mappings; ``zoo`` the checkpoint registry; ``paper`` the paper-profile backbones and
:func:`load_clip` for both profiles.
"""

from cirlib.models import zoo
from cirlib.models.clip import (
    PLACEHOLDER,
    TINY_CLIP_CONFIG,
    TINY_CLIP_CONFIGS,
    CLIPModel,
    CLIPTrainConfig,
    PlaceholderError,
    build_open_clip,
    contrastive_loss,
    images_to_tensor,
    train_clip,
)
from cirlib.models.paper import PAPER_BACKBONES, MissingWeightsError, load_clip, resolve_weights
from cirlib.models.phi import (
    DistilConfig,
    OTIConfig,
    Phi,
    PhiTrainConfig,
    optimise_pseudo_tokens,
    train_phi,
    train_phi_distilled,
)
from cirlib.models.zoo import CheckpointError, load_checkpoint, load_or_train, save_checkpoint

__all__ = [
    "PAPER_BACKBONES",
    "PLACEHOLDER",
    "TINY_CLIP_CONFIG",
    "TINY_CLIP_CONFIGS",
    "CLIPModel",
    "CLIPTrainConfig",
    "CheckpointError",
    "DistilConfig",
    "MissingWeightsError",
    "OTIConfig",
    "Phi",
    "PhiTrainConfig",
    "PlaceholderError",
    "build_open_clip",
    "contrastive_loss",
    "images_to_tensor",
    "load_checkpoint",
    "load_clip",
    "load_or_train",
    "optimise_pseudo_tokens",
    "resolve_weights",
    "save_checkpoint",
    "train_clip",
    "train_phi",
    "train_phi_distilled",
    "zoo",
]
