"""IP-CIR's layout-controlled generator in the tiny profile: a box-grounded diffusers UNet.

IP-CIR draws its proxy images with MIGC on SD 1.5; GLIGEN is the diffusers equivalent. Both take a
pretrained text-to-image model and teach it, on grounded captions (images with their objects'
phrases and boxes), to put each phrase inside its box. This module does the same at world scale:

* the **pretrained text-to-image model** is CIG's tiny generator UNet
  (:mod:`cirlib.generation.composed`), whose weights initialise this one (GLIGEN keeps SD's weights
  and adds layers; here everything is fine-tuned, as a CPU budget allows few steps);
* **grounding tokens** (GLIGEN's text-box position net): for each object, an MLP of its phrase's
  CLIP text embedding and a Fourier embedding of its box, appended to the description's text
  hidden states that the UNet cross-attends to; empty slots get a learned null token;
* a **layout canvas**: each object's phrase embedding, projected to ``layout_channels`` planes, is
  painted inside its box and given to the UNet as extra input channels (zero-initialised, as
  InstructPix2Pix adds input channels). At 32x32 with cross-attention only at 8x8, tokens alone
  place objects poorly; the canvas is how layout-to-image models such as LayoutDiffusion give the
  boxes a spatial path;
* the condition also carries the description's pooled embedding (as CIG's UNet does).

Training data are world image-caption pairs with their objects' boxes (grounded captions): the
caption is :func:`cirlib.world.language.dense_caption`, the phrases canonical object phrases and the
boxes :func:`cirlib.world.render.object_box`. No triplet, no query. At query time the generator sees
only a :class:`~cirlib.generation.layout.Plan` written by a planner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cirlib.generation.composed import (
    GeneratorArch,
    GeneratorTrainConfig,
    GeneratorUNet,
    SamplingConfig,
    _module_digest,
    _to_unit_range,
    build_unet,
    ddim_sample,
    train_diffusion,
)
from cirlib.generation.layout import LayoutObject, Plan
from cirlib.models.clip import CLIPModel, torch_threads
from cirlib.retrieval import content_digest

#: Objects a layout may hold (the world's scenes hold at most 4).
MAX_LAYOUT_OBJECTS = 4

#: The grounded generator's condition: description hidden states ``[N, L, W]``, pooled description
#: ``[N, D]``, phrase embeddings ``[N, K, D]``, boxes ``[N, K, 4]``, object mask ``[N, K]``.
GroundedCondition = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class GroundedArch(GeneratorArch):
    """CIG's UNet architecture plus the grounding inputs."""

    max_objects: int = MAX_LAYOUT_OBJECTS
    layout_channels: int = 8
    fourier_freqs: int = 8
    phrase_dim: int = 128  # the CLIP's embedding size


def fourier_boxes(boxes: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """GLIGEN's Fourier embedding of boxes ``[..., 4]`` -> ``[..., 4 * 2 * n_freqs]``."""
    freqs = (2.0 ** torch.arange(n_freqs, dtype=torch.float32)) * math.pi
    angles = boxes.unsqueeze(-1) * freqs  # [..., 4, F]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def box_masks(boxes: torch.Tensor, mask: torch.Tensor, size: int) -> torch.Tensor:
    """Hard box masks ``[N, K, size, size]`` (pixel centres inside the box; masked-out slots 0)."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))  # [N, K, 1]
    inside_x = (centres >= x0) & (centres <= x1)  # [N, K, size]
    inside_y = (centres >= y0) & (centres <= y1)
    return (inside_y.unsqueeze(-1) & inside_x.unsqueeze(-2)).float() * mask[..., None, None]


class GroundedUNet(nn.Module):
    """CIG's UNet with grounding tokens and a layout canvas (what the checkpoint zoo stores)."""

    def __init__(self, **arch: Any) -> None:
        super().__init__()
        spec = GroundedArch(
            **{**arch, "block_out_channels": tuple(arch.get("block_out_channels", (32, 64, 64)))}
        )
        self.arch: dict[str, Any] = asdict(spec)
        self.unet = build_unet(spec, in_channels=3 + spec.layout_channels)
        fourier = 4 * 2 * spec.fourier_freqs
        self.position_net = nn.Sequential(
            nn.Linear(spec.phrase_dim + fourier, 256),
            nn.SiLU(),
            nn.Linear(256, 256),
            nn.SiLU(),
            nn.Linear(256, spec.cross_attention_dim),
        )
        self.null_token = nn.Parameter(torch.zeros(spec.cross_attention_dim))
        self.canvas_proj = nn.Linear(spec.phrase_dim, spec.layout_channels)
        self.clip_hash: str | None = None

    @property
    def spec(self) -> GroundedArch:
        return GroundedArch(**{**self.arch, "block_out_channels": tuple(self.arch["block_out_channels"])})

    def canvas(self, phrases: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The layout canvas ``[N, C, H, W]``: each object's projected phrase inside its box
        (averaged where boxes overlap, zero outside every box)."""
        masks = box_masks(boxes, mask, self.arch["image_size"])  # [N, K, H, W]
        features = self.canvas_proj(phrases)  # [N, K, C]
        painted = torch.einsum("nkhw,nkc->nchw", masks, features)
        return painted / masks.sum(1, keepdim=True).clamp(min=1.0)

    def grounding_tokens(
        self, phrases: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        tokens = self.position_net(torch.cat([phrases, fourier_boxes(boxes, self.arch["fourier_freqs"])], -1))
        return torch.where(mask.unsqueeze(-1) > 0, tokens, self.null_token.to(tokens.dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: GroundedCondition) -> torch.Tensor:
        states, pooled, phrases, boxes, mask = cond
        context = torch.cat([states, self.grounding_tokens(phrases, boxes, mask)], dim=1)
        inputs = torch.cat([x, self.canvas(phrases, boxes, mask).to(x.dtype)], dim=1)
        return self.unet(
            inputs, t, encoder_hidden_states=context, class_labels=pooled if self.arch["pooled_dim"] else None
        ).sample

    def init_from_text_to_image(self, base: GeneratorUNet) -> None:
        """Copy a text-to-image UNet's weights; the canvas's extra input channels start at zero, so
        the initial model is exactly the base model plus grounding tokens."""
        own = self.unet.state_dict()
        for name, value in base.unet.state_dict().items():
            if name == "conv_in.weight":
                own[name] = torch.cat(
                    [
                        value,
                        torch.zeros(value.shape[0], own[name].shape[1] - value.shape[1], *value.shape[2:]),
                    ],
                    1,
                )
            elif own[name].shape == value.shape:
                own[name] = value.clone()
            else:
                raise ValueError(
                    f"base UNet parameter {name} has shape {tuple(value.shape)}, expected {tuple(own[name].shape)}"
                )
        self.unet.load_state_dict(own)


# --------------------------------------------------------------------------- conditions
def plan_conditions(
    clip: CLIPModel, plans: Sequence[Plan], max_objects: int = MAX_LAYOUT_OBJECTS, batch_size: int = 1024
) -> GroundedCondition:
    """The condition tuple of ``plans``: their descriptions through the CLIP text tower, each
    object's phrase embedding and box; layouts longer than ``max_objects`` keep the first ones."""
    states, pooled = clip.text_hidden_states_with_pseudo(
        [p.description for p in plans], batch_size=batch_size
    )
    n = len(plans)
    phrases = torch.zeros(n, max_objects, clip.embed_dim)
    boxes = torch.zeros(n, max_objects, 4)
    mask = torch.zeros(n, max_objects)
    flat = [(i, k, o) for i, p in enumerate(plans) for k, o in enumerate(p.objects[:max_objects])]
    if flat:
        embedded = clip.encode_texts([o.phrase for _, _, o in flat], batch_size=batch_size).float()
        for (i, k, o), e in zip(flat, embedded, strict=True):
            phrases[i, k], boxes[i, k], mask[i, k] = e, torch.tensor(o.box), 1.0
    return states, pooled, phrases, boxes, mask


def empty_plan_condition(clip: CLIPModel, max_objects: int = MAX_LAYOUT_OBJECTS) -> GroundedCondition:
    """The unconditional input (empty description, no objects), batch of one."""
    return plan_conditions(clip, [Plan(" ", ())], max_objects)


def scene_plans(scenes: Sequence[Any]) -> list[Plan]:
    """Grounded captions of world scenes: dense caption, canonical phrases and render boxes."""
    from cirlib.world.language import BACKGROUND_WORDS, canonical_object_phrase, dense_caption
    from cirlib.world.render import object_box

    return [
        Plan(
            dense_caption(s),
            tuple(LayoutObject(canonical_object_phrase(o), object_box(o)) for o in s.objects),
            BACKGROUND_WORDS[s.background][0],
        )
        for s in scenes
    ]


# --------------------------------------------------------------------------- training
def train_grounded_generator(
    clip: CLIPModel,
    base: GeneratorUNet,
    images: np.ndarray,
    plans: Sequence[Plan],
    config: GeneratorTrainConfig,
    seed: int,
    *,
    layout_channels: int = 8,
    resume_dir: Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    num_threads: int | None = None,
) -> GroundedUNet:
    """Fine-tune a text-to-image UNet (``base``) into a grounded generator on images with their
    grounded captions (``plans``), with the loop of :func:`~cirlib.generation.composed.train_diffusion`
    (v-prediction, EMA, empty-condition dropout for guidance, resumable)."""
    if len(images) != len(plans):
        raise ValueError(f"{len(images)} images but {len(plans)} plans")
    if base.clip_hash is not None and base.clip_hash != clip.hash:
        raise ValueError(f"the base UNet was trained against CLIP {base.clip_hash}, not {clip.hash}")
    arch = GroundedArch(
        **{**base.arch, "block_out_channels": tuple(base.arch["block_out_channels"])},
        layout_channels=layout_channels,
        phrase_dim=clip.embed_dim,
    )
    with torch_threads(num_threads):
        torch.manual_seed(seed)
        model = GroundedUNet(**asdict(arch))
        model.init_from_text_to_image(base)
        model.clip_hash = clip.hash
        key = content_digest(
            [
                asdict(config),
                asdict(arch),
                seed,
                clip.hash,
                _module_digest(base),
                content_digest(images),
                [repr(p) for p in plans],
            ]
        )
        with torch.inference_mode():
            x0_all = _to_unit_range(images, arch.image_size)
        cond_all = plan_conditions(clip, plans, arch.max_objects)
        ema, _ = train_diffusion(
            model,
            x0_all,
            cond_all,
            empty_plan_condition(clip, arch.max_objects),
            config,
            seed,
            key=key,
            resume_dir=resume_dir,
            stop_after=stop_after,
            progress=progress,
            desc="train grounded generator",
        )
    ema.clip_hash = clip.hash
    return ema


# --------------------------------------------------------------------------- sampling
class TinyLayoutGenerator:
    """The tiny profile's :class:`~cirlib.generation.layout.LayoutGenerator`: plan -> proxy image.
    The reference image is accepted and not used (MIGC + ELITE copy the reference's appearance; this
    generator, like GLIGEN's text-box model, draws from the plan alone)."""

    def __init__(
        self,
        unet: GroundedUNet,
        clip: CLIPModel,
        sampling: SamplingConfig = SamplingConfig(),
        name: str = "tiny-ipcir-generator",
    ) -> None:
        if unet.clip_hash is not None and unet.clip_hash != clip.hash:
            raise ValueError(f"generator {name!r} was trained against CLIP {unet.clip_hash}, not {clip.hash}")
        self.unet, self.clip, self.sampling, self.name = unet.eval(), clip, sampling, name
        self.output_size = clip.image_size
        self.signature: dict[str, Any] = {
            "generator": name,
            "unet": _module_digest(unet),
            "clip": clip.hash,
            "sampling": asdict(sampling),
            "output_size": self.output_size,
        }

    def generate(
        self, plans: Sequence[Plan], references: Sequence[np.ndarray], seeds: Sequence[int]
    ) -> np.ndarray:
        if not (len(plans) == len(references) == len(seeds)):
            raise ValueError(f"{len(plans)} plans, {len(references)} references, {len(seeds)} seeds")
        if not plans:
            return np.zeros((0, self.output_size, self.output_size, 3), dtype=np.uint8)
        k = self.unet.arch["max_objects"]
        cond = plan_conditions(self.clip, plans, k)
        uncond = empty_plan_condition(self.clip, k) if self.sampling.guidance_scale != 1.0 else None
        return ddim_sample(
            self.unet, cond, uncond, seeds, self.sampling, self.output_size, desc="generate proxies"
        )


def layout_fidelity(images: np.ndarray, plans: Sequence[Plan], clip: CLIPModel) -> dict[str, float]:
    """How well images follow their plans, measured with the CLIP: for each object, the CLIP score
    of its phrase against the image's crop inside the box, minus the score of the same phrase in a
    box of another object of the same image (or the mirrored box); positive: the phrase sits in its
    box. Also the description's CLIP score against the whole image."""
    from cirlib.models.predicir import crop_tensor  # region crops of the PrediCIR module

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    inside, elsewhere, texts = [], [], []
    for i, plan in enumerate(plans):
        for o in plan.objects:
            x0, y0, x1, y1 = o.box
            mirrored = (1 - x1, 1 - y1, 1 - x0, 1 - y0)
            inside.append((i, o.box))
            elsewhere.append((i, mirrored))
            texts.append(o.phrase)
    result = {"objects": float(len(texts))}
    if texts:

        def crops(items: list) -> np.ndarray:
            boxes = torch.tensor([b for _, b in items], dtype=torch.float32)
            c = crop_tensor(x[[i for i, _ in items]], boxes, grid=1)
            return c.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

        t = clip.encode_texts(texts)
        a = (clip.encode_images(crops(inside)) * t).sum(-1)
        b = (clip.encode_images(crops(elsewhere)) * t).sum(-1)
        result["phrase in box"] = float(a.mean())
        result["phrase in mirrored box"] = float(b.mean())
        result["in-box margin"] = float((a - b).mean())
    d = clip.encode_texts([p.description for p in plans])
    result["description score"] = float((clip.encode_images(images) * d).sum(-1).mean())
    return result
