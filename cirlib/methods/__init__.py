"""CIR methods behind one interface (:class:`Method`) and one registry (``cirlib eval --list-methods``).

Tiny profile: the committed world checkpoints. Paper profile: real open_clip backbones and phi
weights from local files (see :mod:`cirlib.models.paper`), failing at once when a file is missing.
"""

from __future__ import annotations

from pathlib import Path

from cirlib.methods.base import (
    METHOD_INFO,
    METHODS,
    Method,
    build_method,
    caption_variants,
    list_methods,
    register,
)
from cirlib.methods.baselines import PIC2WORD_PROMPT, ImageOnly, SumFusion, TextOnly, TextualInversion
from cirlib.models.clip import CLIPModel
from cirlib.models.weights import DEFAULT_BACKBONE


def _clip(
    profile: str,
    backbone: str | None,
    weights: Path | str | None,
    *,
    preprocess: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    form: str | None = None,  # the benchmark form: no effect on the CLIP (prompts depend on it)
) -> CLIPModel:
    if profile == "tiny":
        from cirlib.models.tiny import CLIP_NAME, load_tiny

        clip = load_tiny(CLIP_NAME)
        assert isinstance(clip, CLIPModel)
        return clip
    from cirlib.models.paper import load_clip

    clip = load_clip(
        backbone or DEFAULT_BACKBONE, profile="paper", weights=weights, preprocess=preprocess or "clip"
    )
    return clip.to(device, precision)  # type: ignore[arg-type]


@register("image", description="reference image alone (modality-redundancy probe)")
def _image(profile: str = "tiny", backbone: str | None = None, weights=None, **options) -> Method:
    return ImageOnly(_clip(profile, backbone, weights, **options))


@register("text", description="modification text alone (modality-redundancy probe)")
def _text(profile: str = "tiny", backbone: str | None = None, weights=None, **options) -> Method:
    return TextOnly(_clip(profile, backbone, weights, **options))


@register("sum", description="normalize(image + text) late fusion")
def _sum(profile: str = "tiny", backbone: str | None = None, weights=None, **options) -> Method:
    return SumFusion(_clip(profile, backbone, weights, **options))


#: FashionIQ caption order of a release -> our caption join (Pic2Word encodes "c2 and c1" once).
_RELEASED_JOIN = {"both_orders": "both_orders", "second_first": "reversed"}


def _released(
    method: str,
    backbone: str | None,
    weights,
    *,
    phi: str | None = None,
    form: str | None = None,
    preprocess: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> Method:
    """A textual-inversion method from a publicly released phi checkpoint (paper profile; ``phi``
    names one, else the method's own release for ``backbone``), set up as its official evaluation
    is: prompt per benchmark, preprocessing, FashionIQ caption handling."""
    from cirlib.models.released import load_released_phi, select_released

    spec = select_released(method, backbone, phi)
    network = load_released_phi(spec, weights).to(device)
    clip = _clip(
        "paper",
        spec.backbone,
        weights,
        preprocess=preprocess or spec.preprocess,
        device=device,
        precision=precision,
    )
    prompt = spec.prompt(form) if form else PIC2WORD_PROMPT
    inversion = TextualInversion(
        clip, network, prompt, name=method, phi_input_normalized=spec.input_normalized
    )
    inversion.caption_join = _RELEASED_JOIN[spec.fashioniq_captions]
    inversion.caption_strip = ".?, " if spec.fashioniq_captions == "both_orders" else None
    return inversion


def _inversion(method: str, tiny_checkpoint: str, profile: str, backbone, weights, options) -> Method:
    """Pic2Word / SEARLE: the phi trained here on the world (tiny) or the released one (paper)."""
    if profile == "paper":
        return _released(method, backbone, weights, **options)
    from cirlib.models.tiny import load_tiny

    return TextualInversion(
        _clip(profile, None, None), load_tiny(tiny_checkpoint), PIC2WORD_PROMPT, name=method
    )


@register("pic2word", description="Pic2Word phi (tiny: trained here on images only; paper: released)")
def _pic2word(profile: str = "tiny", backbone: str | None = None, weights=None, **options) -> Method:
    from cirlib.models.tiny import PIC2WORD_NAME

    return _inversion("pic2word", PIC2WORD_NAME, profile, backbone, weights, options)


@register("searle", description="SEARLE phi, OTI distilled (tiny: trained here; paper: released)")
def _searle(profile: str = "tiny", backbone: str | None = None, weights=None, **options) -> Method:
    from cirlib.models.tiny import SEARLE_NAME

    return _inversion("searle", SEARLE_NAME, profile, backbone, weights, options)


@register("lincir", profiles=("paper",), description="LinCIR phi trained on text only (released)")
def _lincir(profile: str = "paper", backbone: str | None = None, weights=None, **options) -> Method:
    return _released("lincir", backbone, weights, **options)


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
