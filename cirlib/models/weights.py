"""Where the paper profile expects its weight files, checked without importing torch.

cirlib never downloads weights. The user puts each file where :func:`resolve_weights` looks (a folder
given with ``--weights DIR`` or ``$CIRLIB_WEIGHTS``), and every command checks these paths before any
model is built, so a missing file fails in milliseconds with a message naming the path and the
public source of the file. Loading happens in :mod:`cirlib.models.paper` (CLIP) and
:mod:`cirlib.models.released` (phi networks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_ENV = "CIRLIB_WEIGHTS"
#: The paper profile's backbone when none is named: OpenAI ViT-L/14, the one every paper reports.
DEFAULT_BACKBONE = "ViT-L-14"

#: How to make a PrediCIR checkpoint for a paper-profile backbone (``.format(backbone=...)``): no official weights exist (the authors' repository is README only).
PREDICIR_HOW = (
    "no official PrediCIR weights exist (the authors' repository has neither code nor weights); train one "
    "on image-caption pairs with the same backbone: cirlib train-predicir --backbone {backbone} --weights DIR "
    "--pairs PAIRS.jsonl --output FILE.safetensors (see README, 'PrediCIR on the real benchmarks')"
)
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


__all__ = [
    "DEFAULT_BACKBONE",
    "PAPER_BACKBONES",
    "WEIGHTS_ENV",
    "MissingWeightsError",
    "PaperBackbone",
    "expected_filename",
    "resolve_weights",
]
