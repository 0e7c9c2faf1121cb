"""Paper-profile backbones (real open_clip CLIPs from local files) and :func:`load_clip` for both profiles.

The papers use OpenAI CLIP ViT-B/32 and ViT-L/14 and LAION ViT-g/14 and ViT-bigG/14. cirlib never
downloads them: the user puts the weights file open_clip would fetch into a folder (``--weights DIR``
or ``CIRLIB_WEIGHTS=DIR``) under the name :func:`expected_filename` gives, and :func:`load_clip` builds
the architecture with ``open_clip.create_model(arch, pretrained=<that file>)``: a file path, never a
hub tag. A missing file raises :class:`MissingWeightsError` at once, before anything is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import open_clip
from open_clip.pretrained import get_pretrained_cfg

from cirlib.config import check_profile
from cirlib.models.clip import CLIPModel

WEIGHTS_ENV = "CIRLIB_WEIGHTS"
_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class PaperBackbone:
    """A real backbone: open_clip architecture, the pretrained tag it corresponds to, and where the
    user can get the file (the Hugging Face repository open_clip itself downloads from)."""

    arch: str
    tag: str
    hf_repo: str
    hf_file: str = "open_clip_model.safetensors"
    quick_gelu: bool = False
    description: str = ""


#: name -> backbone. OpenAI weights were trained with QuickGELU, so those are built with it.
PAPER_BACKBONES: dict[str, PaperBackbone] = {
    "ViT-B-32": PaperBackbone(
        "ViT-B-32",
        "openai",
        "timm/vit_base_patch32_clip_224.openai",
        quick_gelu=True,
        description="OpenAI CLIP ViT-B/32",
    ),
    "ViT-L-14": PaperBackbone(
        "ViT-L-14",
        "openai",
        "timm/vit_large_patch14_clip_224.openai",
        quick_gelu=True,
        description="OpenAI CLIP ViT-L/14",
    ),
    "ViT-g-14": PaperBackbone(
        "ViT-g-14",
        "laion2b_s34b_b88k",
        "laion/CLIP-ViT-g-14-laion2B-s34B-b88K",
        description="LAION CLIP ViT-g/14",
    ),
    "ViT-bigG-14": PaperBackbone(
        "ViT-bigG-14",
        "laion2b_s39b_b160k",
        "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
        description="LAION CLIP ViT-bigG/14",
    ),
}


class MissingWeightsError(FileNotFoundError):
    """The local weights file of a paper-profile backbone is not there (cirlib never downloads)."""


def expected_filename(backbone: PaperBackbone) -> str:
    """The file name cirlib looks for in the weights folder, e.g. ``ViT-L-14-openai.safetensors``."""
    return f"{backbone.arch}-{backbone.tag}.safetensors"


def _candidates(backbone: PaperBackbone, folder: Path) -> list[Path]:
    stem = f"{backbone.arch}-{backbone.tag}"
    return [folder / f"{stem}{ext}" for ext in _EXTENSIONS] + [
        folder / stem / "open_clip_model.safetensors",
        folder / stem / "open_clip_pytorch_model.bin",
    ]


def resolve_weights(name: str, weights: Path | str | None = None) -> Path:
    """The local weights file of backbone ``name``: ``weights`` itself if it is a file, else the first
    expected file in the folder ``weights`` (default: ``$CIRLIB_WEIGHTS``); raises
    :class:`MissingWeightsError` saying what to download and where to put it."""
    if name not in PAPER_BACKBONES:
        raise KeyError(f"unknown paper backbone {name!r}; known: {', '.join(PAPER_BACKBONES)}")
    backbone = PAPER_BACKBONES[name]
    source = weights if weights is not None else os.environ.get(WEIGHTS_ENV)
    how = (
        f"download {backbone.hf_file} from https://huggingface.co/{backbone.hf_repo} (the file open_clip "
        f"loads for create_model({backbone.arch!r}, pretrained={backbone.tag!r})) and save it as "
        f"DIR/{expected_filename(backbone)}, then pass --weights DIR or set {WEIGHTS_ENV}=DIR"
    )
    if source is None:
        raise MissingWeightsError(
            f"paper backbone {name} ({backbone.description}) needs local weights, and no weights folder was "
            f"given (--weights DIR or {WEIGHTS_ENV}); {how}. cirlib never downloads weights."
        )
    source = Path(source).expanduser()
    if source.is_file():
        return source
    tried = _candidates(backbone, source)
    for path in tried:
        if path.is_file():
            return path
    raise MissingWeightsError(
        f"paper backbone {name} ({backbone.description}): none of {', '.join(str(p) for p in tried)} exists; "
        f"{how}. cirlib never downloads weights."
    )


def load_paper_clip(name: str, weights: Path | str | None = None) -> CLIPModel:
    """Build open_clip architecture ``name`` from its local weights file (never a hub tag)."""
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
    return CLIPModel(
        model,
        model_config,
        name=f"{backbone.arch}-{backbone.tag}",
        profile="paper",
        preprocess="pil",
        preprocess_cfg=preprocess_cfg,
    )


def load_clip(
    name: str | Path, profile: Literal["tiny", "paper"] = "tiny", weights: Path | str | None = None
) -> CLIPModel:
    """The CLIP of a profile.

    * ``tiny``: ``name`` is a zoo checkpoint name (committed or cached; sha256-verified) or a path to
      a checkpoint file (also when ``weights`` is given, it is that file).
    * ``paper``: ``name`` is one of :data:`PAPER_BACKBONES`; ``weights`` a file or folder (default
      ``$CIRLIB_WEIGHTS``)."""
    check_profile(profile)
    if profile == "paper":
        return load_paper_clip(str(name), weights)
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
    "WEIGHTS_ENV",
    "MissingWeightsError",
    "PaperBackbone",
    "expected_filename",
    "load_clip",
    "load_paper_clip",
    "resolve_weights",
]
