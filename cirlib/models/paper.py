"""Paper-profile backbones (real open_clip CLIPs from local files) and :func:`load_clip` for both profiles.

The papers use OpenAI CLIP ViT-B/32 and ViT-L/14 and LAION ViT-g/14 and ViT-bigG/14. cirlib never
downloads them: the user puts the weights file open_clip would fetch into a folder (``--weights DIR``
or ``CIRLIB_WEIGHTS=DIR``) under the name :func:`expected_filename` gives, and :func:`load_clip` builds
the architecture with ``open_clip.create_model(arch, pretrained=<that file>)``: a file path, never a
hub tag. A missing file raises :class:`MissingWeightsError` at once, before anything is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import open_clip
from open_clip.pretrained import get_pretrained_cfg

from cirlib.config import check_profile
from cirlib.models.clip import TARGETPAD_RATIO, CLIPModel
from cirlib.models.weights import (
    PAPER_BACKBONES,
    WEIGHTS_ENV,
    MissingWeightsError,
    PaperBackbone,
    expected_filename,
    resolve_weights,
)

#: Image preprocessing choices of the paper profile: open_clip's own (resize the short side, centre
#: crop) or SEARLE's ``targetpad`` (pad elongated images to ratio 1.25 first), which SEARLE, LinCIR,
#: CIG and IP-CIR evaluate with (REFERENCE.md; miccunifi/SEARLE#4 shows it changes scores).
PREPROCESS_CHOICES = ("clip", "targetpad")


def load_paper_clip(
    name: str, weights: Path | str | None = None, *, preprocess: Literal["clip", "targetpad"] = "clip"
) -> CLIPModel:
    """Build open_clip architecture ``name`` from its local weights file (never a hub tag)."""
    if preprocess not in PREPROCESS_CHOICES:
        raise ValueError(f"preprocess must be one of {PREPROCESS_CHOICES}, got {preprocess!r}")
    path = resolve_weights(name, weights)  # raises before anything is built
    backbone = PAPER_BACKBONES[name]
    if get_pretrained_cfg(backbone.arch, str(path)):  # a path that is also a tag would download: refuse
        raise MissingWeightsError(
            f"weights path {path} looks like an open_clip pretrained tag; give a file path"
        )
    model = open_clip.create_model(
        backbone.arch,
        pretrained=str(path),
        force_quick_gelu=backbone.quick_gelu,
        device="cpu",
        precision="fp32",
    )
    model_config = open_clip.get_model_config(backbone.arch)
    model_config["quick_gelu"] = backbone.quick_gelu
    preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
    if preprocess == "targetpad":
        preprocess_cfg = {**preprocess_cfg, "resize_mode": "targetpad", "target_ratio": TARGETPAD_RATIO}
    return CLIPModel(
        model,
        model_config,
        name=f"{backbone.arch}-{backbone.tag}",
        profile="paper",
        preprocess="pil",
        preprocess_cfg=preprocess_cfg,
    )


def load_clip(
    name: str | Path,
    profile: Literal["tiny", "paper"] = "tiny",
    weights: Path | str | None = None,
    *,
    preprocess: Literal["clip", "targetpad"] = "clip",
) -> CLIPModel:
    """The CLIP of a profile.

    * ``tiny``: ``name`` is a zoo checkpoint name (committed or cached; sha256-verified) or a path to
      a checkpoint file (also when ``weights`` is given, it is that file).
    * ``paper``: ``name`` is one of :data:`PAPER_BACKBONES`; ``weights`` a file or folder (default
      ``$CIRLIB_WEIGHTS``)."""
    check_profile(profile)
    if profile == "paper":
        return load_paper_clip(str(name), weights, preprocess=preprocess)
    from cirlib.models import zoo

    path = Path(weights) if weights is not None else Path(name)
    model = zoo.load_file(path) if path.suffix in (".safetensors", ".pt") and path.is_file() else None
    if model is None:
        if weights is not None:
            raise zoo.CheckpointError(f"tiny-profile weights file {weights} does not exist")
        model = zoo.load_checkpoint(str(name))
    if not isinstance(model, CLIPModel):
        raise TypeError(f"checkpoint {name} is a {type(model).__name__}, not a CLIP")
    return model


__all__ = [
    "PAPER_BACKBONES",
    "PREPROCESS_CHOICES",
    "WEIGHTS_ENV",
    "MissingWeightsError",
    "PaperBackbone",
    "expected_filename",
    "load_clip",
    "load_paper_clip",
    "resolve_weights",
]
