"""CIR methods behind one interface (:class:`Method`) and one registry (``cirlib eval --list-methods``).

Tiny profile: the committed world checkpoints. Paper profile: real open_clip backbones and phi
weights from local files (see :mod:`cirlib.models.paper`), failing at once when a file is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

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


#: Options every factory accepts and hands to the CLIP (``form`` only picks released prompts).
SHARED_OPTIONS: tuple[str, ...] = ("preprocess", "device", "precision", "form")


def _check_options(method: str, options: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Refuse options a factory would otherwise drop without a word (e.g. ``box`` for pic2word).
    ``extra``: the options it hands on besides the shared ones (``phi`` for a released phi)."""
    unknown = sorted(set(options) - set(SHARED_OPTIONS) - set(extra))
    if unknown:
        raise TypeError(
            f"method {method!r} has no option {', '.join(map(repr, unknown))}; besides its own keyword "
            f"arguments it takes {', '.join((*SHARED_OPTIONS, *extra))}"
        )


@register("image", description="reference image alone (modality-redundancy probe)")
def _image(profile: str = "tiny", backbone: str | None = None, weights=None, **options) -> Method:
    _check_options("image", options)
    return ImageOnly(_clip(profile, backbone, weights, **options))


@register("text", description="modification text alone (modality-redundancy probe)")
def _text(profile: str = "tiny", backbone: str | None = None, weights=None, **options) -> Method:
    _check_options("text", options)
    return TextOnly(_clip(profile, backbone, weights, **options))


@register("sum", description="normalize(image + text) late fusion")
def _sum(profile: str = "tiny", backbone: str | None = None, weights=None, **options) -> Method:
    _check_options("sum", options)
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
    _check_options(method, options, extra=("phi",))
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


#: --precision -> the generator's torch dtype
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@register("cig", description="CIG: phi(reference) + phi(generated pseudo-target), text-level fusion")
def _cig(
    profile: str = "tiny",
    backbone: str | None = None,
    weights=None,
    *,
    generator: Path | str | None = None,
    generator_kind: str = "sdxl",
    unet: Path | str | None = None,
    vae: Path | str | None = None,
    fusion_weight: float | None = None,
    fusion: str = "text",
    n_generated: int = 1,
    generation_steps: int | None = None,
    guidance: float | None = None,
    split: str | None = None,
    **options,
) -> Method:
    """Tiny: the Pic2Word phi and the generator trained here (:mod:`cirlib.generation.composed`;
    ``generator`` may name one of its training snapshots, see ``cirlib.models.tiny.generator_names``).
    Paper: a released phi for retrieval (SEARLE by default, as the official ``SEARLE_CIG``) and
    CIG's SD / SDXL generator from local folders (:mod:`cirlib.generation.paper_cig`).
    ``fusion_weight=None`` takes the official per-split value when the split is known, else the
    official CIRR val value 0.85."""
    from cirlib.methods.cig import CIG, official_fusion_weight

    _check_options("cig", options, extra=("phi",))
    form = options.get("form")
    if fusion_weight is None:
        fusion_weight = official_fusion_weight(form, split) if form and split else 0.85
    if profile == "tiny":
        from cirlib.generation.composed import SamplingConfig, TinyComposedGenerator
        from cirlib.models.tiny import GENERATOR_NAME, PIC2WORD_NAME, load_tiny

        if unet is not None or vae is not None:
            raise ValueError("--unet / --vae are paper-profile options (the tiny generator is trained here)")
        clip = _clip(profile, None, None)
        phi = load_tiny(PIC2WORD_NAME)
        sampling = SamplingConfig(
            steps=generation_steps or SamplingConfig.steps,
            guidance_scale=SamplingConfig.guidance_scale if guidance is None else guidance,
        )
        checkpoint = str(generator or GENERATOR_NAME)  # tiny: a checkpoint name (e.g. a training snapshot)
        tiny_generator = TinyComposedGenerator(load_tiny(checkpoint), clip, phi, sampling, name=checkpoint)  # type: ignore[arg-type]
        return CIG(clip, phi, tiny_generator, fusion=fusion, weight=fusion_weight, n_images=n_generated)
    if generator is None:
        raise ValueError("CIG in the paper profile needs --generator: a local SD 1.5 / SDXL pipeline folder")
    from cirlib.generation.paper_cig import load_paper_cig_generator

    base = _released("searle", backbone, weights, **options)
    assert isinstance(base, TextualInversion)
    paper_generator = load_paper_cig_generator(
        generator,
        generator_kind,
        weights=weights,
        unet=unet,
        vae=vae,
        steps=generation_steps or 50,
        guidance_scale=guidance,
        output_size=None,
        device=options.get("device", "cpu"),
        # fp16 as CIG's own SDXL runs (its text encoders stay float32 inside the loader)
        dtype=_TORCH_DTYPES[options.get("precision", "fp32")],
    )
    method = CIG(
        base.clip,
        base.phi,
        paper_generator,
        fusion=fusion,
        weight=fusion_weight,
        n_images=n_generated,
        prompt=base.prompt,
        phi_input_normalized=base.phi_input_normalized,
    )
    method.caption_join, method.caption_strip = base.caption_join, base.caption_strip
    return method


@register("predicir", description="PrediCIR: predicted missing target content + reference -> pseudo-word")
def _predicir(
    profile: str = "tiny",
    backbone: str | None = None,
    weights=None,
    *,
    checkpoint: Path | str | None = None,
    box: str = "center",
    **options,
) -> Method:
    """Tiny: the network trained here (``checkpoint`` may name one of its ablations, see
    ``cirlib.models.tiny.predicir_recipes``). Paper: no PrediCIR weights were ever released, so
    ``checkpoint`` is a file written by ``cirlib.models.predicir.train_predicir`` +
    ``zoo.save_checkpoint`` for the same backbone. ``box``: where the reference sits in the target
    canvas (``cirlib.models.predicir.INFERENCE_BOXES``)."""
    from cirlib.methods.predicir import PrediCIR

    _check_options("predicir", options)
    if profile == "tiny":
        from cirlib.models.tiny import PREDICIR_NAME, load_tiny

        name = str(checkpoint or PREDICIR_NAME)
        return PrediCIR(_clip(profile, None, None), load_tiny(name), box=box, name="predicir")  # type: ignore[arg-type]
    from cirlib.models.predicir import load_predicir_file

    if checkpoint is None:
        from cirlib.models.weights import PREDICIR_HOW

        raise ValueError(
            "PrediCIR in the paper profile needs --predicir-checkpoint FILE: "
            + PREDICIR_HOW.format(backbone=backbone or DEFAULT_BACKBONE)
        )
    net = load_predicir_file(checkpoint)
    return PrediCIR(_clip("paper", backbone, weights, **options), net, box=box, name="predicir")


PLANNERS: tuple[str, ...] = ("tiny", "oracle")


def _planning_chain(profile: str, planner: str, captioner, llm, options: dict):
    """Captioner + planner of the profile (tiny: trained here, or the rule-based oracle planner;
    paper: BLIP-2 and an instruction LLM from local folders)."""
    from cirlib.methods.ipcir import PlanningChain

    if profile == "tiny":
        from cirlib.models.captioner import TinyCaptioner
        from cirlib.models.planner import OraclePlanner, TinyPlanner
        from cirlib.models.tiny import CAPTIONER_NAME, PLANNER_NAME, load_tiny

        if planner not in PLANNERS:
            raise ValueError(f"planner must be one of {', '.join(PLANNERS)}, got {planner!r}")
        clip = _clip(profile, None, None)
        chosen = OraclePlanner() if planner == "oracle" else TinyPlanner(load_tiny(PLANNER_NAME))  # type: ignore[arg-type]
        return PlanningChain(TinyCaptioner(clip, load_tiny(CAPTIONER_NAME)), chosen)  # type: ignore[arg-type]
    from cirlib.generation.paper_ipcir import Blip2Captioner, LLMPlanner

    if captioner is None or llm is None:
        raise ValueError(
            "the paper profile needs captioner= (a BLIP-2 folder) and llm= (a causal LM folder): "
            "cirlib eval's --captioner DIR and --llm DIR"
        )
    device, dtype = options.get("device", "cpu"), _TORCH_DTYPES[options.get("precision", "fp32")]
    return PlanningChain(
        Blip2Captioner(captioner, device=device, dtype=dtype), LLMPlanner(llm, device=device, dtype=dtype)
    )


@register("planned-text", description="CIReVL/LDRE-style: caption, planner's target description, text search")
def _planned_text(
    profile: str = "tiny",
    backbone: str | None = None,
    weights=None,
    *,
    planner: str = "tiny",
    captioner: Path | str | None = None,
    llm: Path | str | None = None,
    **options,
) -> Method:
    """Training-free text base of IP-CIR (:class:`cirlib.methods.ipcir.PlannedText`)."""
    from cirlib.methods.ipcir import PlannedText

    _check_options("planned-text", options)
    chain = _planning_chain(profile, planner, captioner, llm, options)
    return PlannedText(_clip(profile, backbone, weights, **options), chain)


IPCIR_BASES: tuple[str, ...] = (
    "planned-text",
    "pic2word",
    "searle",
    "lincir",
    "cig",
    "predicir",
    "text",
    "sum",
)


@register("ipcir", description="IP-CIR: base method + imagined proxies, robust proxy feature, balanced score")
def _ipcir(
    profile: str = "tiny",
    backbone: str | None = None,
    weights=None,
    *,
    base: str = "planned-text",
    planner: str = "tiny",
    captioner: Path | str | None = None,
    llm: Path | str | None = None,
    layout_generator: Path | str | None = None,
    lam: float = 0.3,
    n_proxies: int = 5,
    proxy_feature: str = "robust",
    combine: str = "balanced",
    negatives: str = "clamp",
    generation_steps: int | None = None,
    guidance: float | None = None,
    base_options: dict[str, Any] | None = None,
    **options,
) -> Method:
    """IP-CIR over a base method (``base``: :data:`IPCIR_BASES`; the CIReVL/LDRE-style planned-text
    base by default, as the paper builds on LDRE), built with ``base_options`` (e.g. ``{"box": "full"}``
    for ``predicir``) on top of the shared ``options``. Tiny: the captioner, planner (or ``planner="oracle"``)
    and layout generator trained here. Paper: BLIP-2 (``captioner``), an LLM (``llm``) and a GLIGEN
    pipeline (``layout_generator``) from local folders. ``lam`` defaults to the official code's 0.3
    (ViT-G); the paper's best values differ per benchmark (0.3 CIRCO, 0.0 CIRR, 0.8 FashionIQ)."""
    from cirlib.methods.ipcir import IPCIR, PlannedText

    _check_options("ipcir", options)
    if base not in IPCIR_BASES:
        raise ValueError(f"IP-CIR base must be one of {', '.join(IPCIR_BASES)}, got {base!r}")
    if profile == "paper":  # every missing folder in one error, before anything is loaded
        from cirlib.generation.files import resolve_ipcir_files

        resolve_ipcir_files(str(captioner or ""), str(llm or ""), str(layout_generator or ""))
    chain = _planning_chain(profile, planner, captioner, llm, options)
    clip = _clip(profile, backbone, weights, **options)
    base_method = (
        PlannedText(clip, chain)
        if base == "planned-text"
        else build_method(
            base, profile, backbone=backbone, weights=weights, **{**options, **(base_options or {})}
        )
    )
    if profile == "tiny":
        from cirlib.generation.composed import SamplingConfig
        from cirlib.generation.grounded import TinyLayoutGenerator
        from cirlib.models.tiny import LAYOUT_GENERATOR_NAME, load_tiny

        sampling = SamplingConfig(
            steps=generation_steps or SamplingConfig.steps,
            guidance_scale=SamplingConfig.guidance_scale if guidance is None else guidance,
        )
        generator = TinyLayoutGenerator(load_tiny(LAYOUT_GENERATOR_NAME), clip, sampling)  # type: ignore[arg-type]
    else:
        if layout_generator is None:
            raise ValueError(
                "IP-CIR in the paper profile needs layout_generator=: a local GLIGEN pipeline folder "
                "(cirlib eval's --layout-generator DIR)"
            )
        from cirlib.generation.paper_ipcir import GligenLayoutGenerator

        generator = GligenLayoutGenerator(
            layout_generator,
            device=options.get("device", "cpu"),
            dtype=_TORCH_DTYPES[options.get("precision", "fp32")],
            steps=generation_steps or 50,
            guidance_scale=7.5 if guidance is None else guidance,
        )
    return IPCIR(
        base_method,
        chain,
        generator,
        lam=lam,
        n_proxies=n_proxies,
        proxy_feature=proxy_feature,
        combine=combine,
        negatives=negatives,
    )


@register(
    "supervised",
    profiles=("tiny",),
    zero_shot=False,
    description="SUPERVISED Combiner trained on world triplets",
)
def _supervised(profile: str = "tiny", **options) -> Method:
    from cirlib.methods.supervised import SupervisedCombiner, load_tiny_combiner

    _check_options("supervised", options)
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
