"""Models of the companion: tiny CLIPs of the real kind, pseudo-word mappings and the checkpoint zoo.

See docs/ARCHITECTURE.md. ``clip`` holds :class:`CLIPModel` and :func:`train_clip`; ``phi`` the Pic2Word
and SEARLE mappings; ``zoo`` the checkpoint registry; ``weights`` where paper-profile files are
expected (no torch needed); ``paper`` the paper-profile backbones and :func:`load_clip` for both
profiles; ``released`` the public phi checkpoints.

Attributes are imported lazily (PEP 562), so that ``cirlib eval`` can check every weights path
through :mod:`cirlib.models.weights` in milliseconds, before torch and open_clip are imported.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_LAZY: dict[str, str] = {
    **{
        name: "cirlib.models.clip"
        for name in (
            "PLACEHOLDER",
            "TINY_CLIP_CONFIG",
            "TINY_CLIP_CONFIGS",
            "CLIPModel",
            "CLIPTrainConfig",
            "PlaceholderError",
            "build_open_clip",
            "contrastive_loss",
            "images_to_tensor",
            "train_clip",
        )
    },
    **{
        name: "cirlib.models.weights"
        for name in ("PAPER_BACKBONES", "MissingWeightsError", "resolve_weights")
    },
    "load_clip": "cirlib.models.paper",
    **{
        name: "cirlib.models.phi"
        for name in (
            "DistilConfig",
            "OTIConfig",
            "Phi",
            "PhiTrainConfig",
            "optimise_pseudo_tokens",
            "train_phi",
            "train_phi_distilled",
        )
    },
    **{
        name: "cirlib.models.zoo"
        for name in ("CheckpointError", "load_checkpoint", "load_or_train", "save_checkpoint")
    },
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cirlib.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(_LAZY)
