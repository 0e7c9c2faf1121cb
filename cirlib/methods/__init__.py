"""CIR methods behind one interface (:class:`Method`) and one registry (``cirlib eval --list-methods``).

Tiny profile: the committed world checkpoints. Paper profile: real open_clip backbones and phi
weights from local files (see :mod:`cirlib.models.paper`), failing at once when a file is missing.
"""

from __future__ import annotations

from pathlib import Path

from cirlib.methods.base import METHOD_INFO, METHODS, Method, build_method, list_methods, register
from cirlib.methods.baselines import (
    PIC2WORD_PROMPT,
    ImageOnly,
    SumFusion,
    TextOnly,
    TextualInversion,
    caption_variants,
)
from cirlib.models.clip import CLIPModel


def _clip(profile: str, backbone: str | None, weights: Path | str | None) -> CLIPModel:
    if profile == "tiny":
        from cirlib.models.tiny import CLIP_NAME, load_tiny

        clip = load_tiny(CLIP_NAME)
        assert isinstance(clip, CLIPModel)
        return clip
    from cirlib.models.paper import load_clip

    return load_clip(backbone or "ViT-L-14", profile="paper", weights=weights)


@register("image", description="reference image alone (modality-redundancy probe)")
def _image(profile: str = "tiny", backbone: str | None = None, weights=None, **_) -> Method:
    return ImageOnly(_clip(profile, backbone, weights))


@register("text", description="modification text alone (modality-redundancy probe)")
def _text(profile: str = "tiny", backbone: str | None = None, weights=None, **_) -> Method:
    return TextOnly(_clip(profile, backbone, weights))


@register("sum", description="normalize(image + text) late fusion")
def _sum(profile: str = "tiny", backbone: str | None = None, weights=None, **_) -> Method:
    return SumFusion(_clip(profile, backbone, weights))


def _tiny_phi(name: str):
    from cirlib.models.tiny import load_tiny

    return load_tiny(name)


@register("pic2word", profiles=("tiny",), description="Pic2Word-style phi trained on images only")
def _pic2word(profile: str = "tiny", **_) -> Method:
    from cirlib.models.tiny import PIC2WORD_NAME

    return TextualInversion(
        _clip(profile, None, None), _tiny_phi(PIC2WORD_NAME), PIC2WORD_PROMPT, name="pic2word"
    )


@register("searle", profiles=("tiny",), description="SEARLE-style OTI distilled into phi")
def _searle(profile: str = "tiny", **_) -> Method:
    from cirlib.models.tiny import SEARLE_NAME

    return TextualInversion(
        _clip(profile, None, None), _tiny_phi(SEARLE_NAME), PIC2WORD_PROMPT, name="searle"
    )


@register(
    "supervised",
    profiles=("tiny",),
    zero_shot=False,
    description="SUPERVISED Combiner trained on world triplets",
)
def _supervised(profile: str = "tiny", **_) -> Method:
    from cirlib.methods.supervised import SupervisedCombiner, load_tiny_combiner

    clip = _clip(profile, None, None)
    return SupervisedCombiner(clip, load_tiny_combiner(clip))


__all__ = [
    "METHODS",
    "METHOD_INFO",
    "Method",
    "ImageOnly",
    "SumFusion",
    "TextOnly",
    "TextualInversion",
    "build_method",
    "caption_variants",
    "list_methods",
    "register",
]
