"""CIG's composed-image generator in the tiny profile: trained here, self-supervised, then sampled.

CIG ("Generative Zero-Shot Composed Image Retrieval", CVPR 2025) fine-tunes a latent diffusion model
to *reconstruct* an image from a composed prompt: the image's own pseudo-word token (a textual
inversion network phi applied to its CLIP embedding) inside a prompt with the image's caption. No
CIR triplet is ever used. At query time the same prompt is built from the *reference* image's token
and the *modification* text, and the sample is the pseudo-target image. The authors released the
fine-tuned SDXL UNet but no training code; this module is the whole recipe at world scale:

* :class:`GeneratorUNet`: a diffusers ``UNet2DConditionModel`` in 32x32 pixel space (channels
  32/64/64, cross-attention at the 8x8 level and in the middle block only, about 1.5M parameters),
  cross-attending to the tiny CLIP's text hidden states (``[32 tokens, 128]``, the role SD 1.x
  gives to CLIP-L's last hidden state) and adding the pooled text embedding to its timestep
  embedding (as SDXL adds its pooled embedding).
* :func:`train_generator`: v-prediction DDPM training on world image-caption pairs with the
  prompt ``"a photo of $ that {caption}"`` (the official inference prompt) and ``$ = phi(image)``;
  10% of prompts are replaced by the empty prompt so that classifier-free guidance is available; an
  EMA of the weights is what gets sampled; resumable, with EMA snapshots for the training-steps
  ablation.
* :class:`TinyComposedGenerator`: seeded DDIM sampling (diffusers ``DDIMScheduler``), optional
  guidance, output upsampled to the CLIP's 64x64 input. Same reference, text and seed give the same
  image whatever else is in the batch (each image draws its own noise).
* :func:`generate_with_retries`: the official quality filter: an image whose mean brightness is 10
  or less (of 255) is regenerated with the next seed, up to 5 times.
* :class:`PseudoTargetCache`: generated pseudo-targets on disk, keyed by the generator's signature,
  the reference's content, the text and the seed.

The paper profile's SD / SDXL generator (:mod:`cirlib.generation.paper_cig`) has the same
``generate(references, texts, seeds)`` interface (:class:`PseudoTargetGenerator`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cirlib.config import progress_bar
from cirlib.generation.paper_cig import CIG_PROMPT  # for training (captions) and generation (edits)
from cirlib.models.clip import STATE_FILE, CLIPModel, EpochSampler, save_training_state, torch_threads
from cirlib.retrieval import EmbeddingCache, content_digest

#: The official filter: reject an image whose mean brightness (0-255) is at most this, re-seed.
MIN_MEAN_BRIGHTNESS = 10.0
MAX_RETRIES = 5


class PseudoTargetGenerator(Protocol):
    """What CIG needs from a generator (tiny: :class:`TinyComposedGenerator`; paper: SD / SDXL)."""

    #: JSON-able content key of everything that changes the output (weights, sampler settings).
    signature: dict[str, Any]

    def generate(
        self, references: Sequence[np.ndarray], texts: Sequence[str], seeds: Sequence[int]
    ) -> np.ndarray:
        """uint8 images ``[N, H, W, 3]``: reference ``i`` modified by ``texts[i]``, noise seed ``seeds[i]``."""
        ...


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class GeneratorArch:
    """The UNet and its noise schedule, as data (stored with the checkpoint)."""

    image_size: int = 32
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 16
    cross_attention_dim: int = 128  # the CLIP's text width
    #: The pooled text embedding is projected and added to the timestep embedding (diffusers
    #: ``class_embed_type="projection"``), as SDXL adds its pooled text embedding: it conditions every
    #: block. With cross-attention alone a 400-step pilot ignored the condition entirely (the same
    #: sample for every prompt); 0 disables it.
    pooled_dim: int = 128  # the CLIP's embedding size
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    #: v-prediction: with epsilon-prediction a short CPU run predicts x0 badly at high noise (a 400-step
    #: pilot: x0 error 4x the data variance at t = 800, so samples stayed noise); v keeps x0 usable.
    prediction_type: str = "v_prediction"


def build_unet(spec: GeneratorArch, in_channels: int = 3) -> nn.Module:
    """The diffusers ``UNet2DConditionModel`` of ``spec`` (``in_channels`` > 3: extra input planes,
    e.g. the layout canvas of :mod:`cirlib.generation.grounded`)."""
    from diffusers import UNet2DConditionModel

    n = len(spec.block_out_channels)
    # Cross-attention only at the lowest resolution (and the middle block): attention at 32x32 or
    # 16x16 would cost most of the compute for little at this scale.
    return UNet2DConditionModel(
        sample_size=spec.image_size,
        in_channels=in_channels,
        out_channels=3,
        block_out_channels=spec.block_out_channels,
        down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        layers_per_block=spec.layers_per_block,
        attention_head_dim=spec.attention_head_dim,
        norm_num_groups=spec.norm_num_groups,
        cross_attention_dim=spec.cross_attention_dim,
        class_embed_type="projection" if spec.pooled_dim else None,
        projection_class_embeddings_input_dim=spec.pooled_dim or None,
    )


class GeneratorUNet(nn.Module):
    """A ``UNet2DConditionModel`` with its architecture recorded (what the checkpoint zoo stores)."""

    def __init__(self, **arch: Any) -> None:
        super().__init__()
        spec = GeneratorArch(
            **{**arch, "block_out_channels": tuple(arch.get("block_out_channels", (32, 64, 64)))}
        )
        self.arch: dict[str, Any] = asdict(spec)
        self.unet = build_unet(spec)
        #: :attr:`CLIPModel.hash` of the CLIP whose text states condition this UNet.
        self.clip_hash: str | None = None

    @property
    def spec(self) -> GeneratorArch:
        return GeneratorArch(**{**self.arch, "block_out_channels": tuple(self.arch["block_out_channels"])})

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        states, pooled = cond
        return self.unet(
            x, t, encoder_hidden_states=states, class_labels=pooled if self.arch["pooled_dim"] else None
        ).sample


def _ddpm(spec: GeneratorArch):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=spec.num_train_timesteps,
        beta_schedule=spec.beta_schedule,
        prediction_type=spec.prediction_type,
    )


def _to_unit_range(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 ``[N,H,W,3]`` -> float ``[N,3,size,size]`` in [-1, 1] (antialiased downsampling)."""
    x = (
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        .permute(0, 3, 1, 2)
        .div_(127.5)
        .sub_(1.0)
    )
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def _to_uint8(x: torch.Tensor, size: int) -> np.ndarray:
    """float ``[N,3,s,s]`` in [-1, 1] -> uint8 ``[N,size,size,3]`` (bilinear upsampling)."""
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


#: The generator's condition: text hidden states ``[N, L, W]`` and pooled text embeddings ``[N, D]``.
Condition = tuple[torch.Tensor, torch.Tensor]


def composed_conditions(
    clip: CLIPModel,
    phi: nn.Module,
    images: np.ndarray,
    texts: Sequence[str],
    prompt: str = CIG_PROMPT,
    batch_size: int = 1024,
) -> Condition:
    """The condition (hidden states and pooled embedding) of ``prompt`` with ``{text}`` = ``texts[i]``
    and ``$`` = phi(CLIP embedding of ``images[i]``), for training and sampling."""
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    features = clip.encode_images(images, batch_size=batch_size)  # normalised: our phis' input
    tokens = phi.pseudo_tokens(features)
    prompts = [prompt.replace("{text}", t) for t in texts]
    return clip.text_hidden_states_with_pseudo(prompts, tokens, batch_size=batch_size)


def empty_condition(clip: CLIPModel) -> Condition:
    """The condition of the empty prompt (batch of one): the unconditional input of guidance."""
    return clip.text_hidden_states_with_pseudo([""])


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class GeneratorTrainConfig:
    steps: int = 2600
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0
    ema_decay: float = 0.999
    #: Probability of training on the empty prompt (enables classifier-free guidance).
    cond_dropout: float = 0.1
    #: EMA weights kept at these steps (the training-steps ablation samples them).
    snapshot_steps: tuple[int, ...] = ()
    checkpoint_every: int = 200


def _lr_at(step: int, cfg: GeneratorTrainConfig) -> float:
    """Linear warm-up, then constant (the usual diffusion fine-tuning schedule; snapshots taken
    along the way are then the same run stopped early, not another schedule)."""
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def train_generator(
    clip: CLIPModel,
    phi: nn.Module,
    images: np.ndarray,
    captions: Sequence[str],
    config: GeneratorTrainConfig,
    seed: int,
    *,
    arch: GeneratorArch | None = None,
    resume_dir: Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    num_threads: int | None = None,
) -> tuple[GeneratorUNet, dict[int, GeneratorUNet]]:
    """Train the composed-image generator on image-caption pairs (self-supervised reconstruction).

    Returns the EMA model at ``config.steps`` and the EMA snapshots at ``config.snapshot_steps``.
    With ``resume_dir`` the full training state is saved every ``checkpoint_every`` steps and a rerun
    continues from it; every random draw is a function of ``(seed, step)``, so a resumed run equals
    an uninterrupted one. ``stop_after`` stops early (tests of resumption)."""
    arch = arch or GeneratorArch(cross_attention_dim=clip.token_dim, pooled_dim=clip.embed_dim)
    if arch.cross_attention_dim != clip.token_dim:
        raise ValueError(
            f"cross_attention_dim {arch.cross_attention_dim} != the CLIP's text width {clip.token_dim}"
        )
    if arch.pooled_dim not in (0, clip.embed_dim):
        raise ValueError(f"pooled_dim {arch.pooled_dim} != the CLIP's embedding size {clip.embed_dim} (or 0)")
    bad = [s for s in config.snapshot_steps if not 0 < s < config.steps]
    if bad:
        raise ValueError(f"snapshot steps {bad} must lie strictly between 0 and steps={config.steps}")
    with torch_threads(num_threads):
        torch.manual_seed(seed)
        model = GeneratorUNet(**asdict(arch))
        model.clip_hash = clip.hash
        key = content_digest(
            [asdict(config), asdict(arch), seed, clip.hash, _module_digest(phi), len(images)]
        )
        with torch.inference_mode():
            x0_all = _to_unit_range(images, arch.image_size)
        cond_all = composed_conditions(clip, phi, images, captions)
        ema, snapshots = train_diffusion(
            model,
            x0_all,
            cond_all,
            empty_condition(clip),
            config,
            seed,
            key=key,
            resume_dir=resume_dir,
            stop_after=stop_after,
            progress=progress,
            desc="train CIG generator",
        )
    out = {}
    for s, state in snapshots.items():
        snap = GeneratorUNet(**asdict(arch))
        snap.load_state_dict(state)
        snap.clip_hash = clip.hash
        out[s] = snap.eval()
    return ema, out


def train_diffusion(
    model: nn.Module,
    x0_all: torch.Tensor,
    cond_all: tuple[torch.Tensor, ...],
    uncond: tuple[torch.Tensor, ...],
    config: GeneratorTrainConfig,
    seed: int,
    *,
    key: str,
    resume_dir: Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    desc: str = "train generator",
) -> tuple[nn.Module, dict[int, dict[str, torch.Tensor]]]:
    """The DDPM training loop shared by CIG's generator and IP-CIR's grounded generator.

    ``model(x_t, t, cond)`` predicts the target of ``model.spec.prediction_type`` given a condition
    tuple; ``cond_all`` holds one row per image in each tensor and ``uncond`` the unconditional
    condition (batch of one), used for a ``config.cond_dropout`` share of each batch. Returns the EMA
    model (eval mode) and the EMA state dicts at ``config.snapshot_steps``. Resumable from
    ``resume_dir`` when the saved state's ``key`` matches; every random draw is a function of
    ``(seed, step)``, so a resumed run equals an uninterrupted one."""
    arch = model.spec
    ema = copy.deepcopy(model).requires_grad_(False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    start = 0
    state_path = resume_dir / STATE_FILE if resume_dir is not None else None
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimiser.load_state_dict(state["optimiser"])
            snapshots = {int(k): v for k, v in state["snapshots"].items()}
            start = int(state["step"])
    scheduler = _ddpm(arch)
    sampler = EpochSampler(len(x0_all), config.batch_size, seed)
    model.train()

    def save_state(step: int) -> None:
        if state_path is None:
            return
        save_training_state(
            state_path,
            {
                "key": key,
                "step": step,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimiser": optimiser.state_dict(),
                "snapshots": {str(k): v for k, v in snapshots.items()},
            },
        )

    bar = progress_bar(
        range(start, config.steps), show=progress, desc=desc, initial=start, total=config.steps
    )
    for step in bar:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.from_numpy(sampler.batch(step))
        x0 = x0_all[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, arch.num_train_timesteps, (len(idx),), generator=gen)
        drop = torch.rand(len(idx), generator=gen) < config.cond_dropout
        cond = tuple(
            torch.where(drop.view(-1, *[1] * (c.dim() - 1)), u, c[idx])
            for c, u in zip(cond_all, uncond, strict=True)
        )
        xt = scheduler.add_noise(x0, noise, t)
        target = noise if arch.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
        loss = F.mse_loss(model(xt, t, cond), target)
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(step, config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
        optimiser.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))  # warm EMA start
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
        if hasattr(bar, "set_postfix") and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done in config.snapshot_steps:
            snapshots[done] = {k: v.clone() for k, v in ema.state_dict().items()}
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_state(done)
        if stop_after is not None and done >= stop_after and done < config.steps:
            save_state(done)
            break
    return ema.eval(), snapshots


def _module_digest(module: nn.Module) -> str:
    return content_digest({k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})


# --------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class SamplingConfig:
    #: 10 DDIM steps: in a pilot at 400 training steps, 25 steps gave the same similarity to the
    #: labelled targets (cosine 0.286 vs 0.284 over 64 CIRR-like val queries) at 2.5x the cost.
    steps: int = 10
    #: Classifier-free guidance scale; 1.0 = no guidance (one UNet pass per step instead of two).
    guidance_scale: float = 1.0
    eta: float = 0.0
    batch_size: int = 128


class TinyComposedGenerator:
    """The tiny profile's pseudo-target generator: CLIP + phi build the condition, the UNet samples."""

    def __init__(
        self,
        unet: GeneratorUNet,
        clip: CLIPModel,
        phi: nn.Module,
        sampling: SamplingConfig = SamplingConfig(),
        prompt: str = CIG_PROMPT,
        name: str = "tiny-cig-generator",
    ) -> None:
        if unet.clip_hash is not None and unet.clip_hash != clip.hash:
            raise ValueError(f"generator {name!r} was trained against CLIP {unet.clip_hash}, not {clip.hash}")
        self.unet = unet.eval()
        self.clip, self.phi = clip, phi
        self.sampling, self.prompt, self.name = sampling, prompt, name
        self.output_size = clip.image_size
        self.signature: dict[str, Any] = {
            "generator": name,
            "unet": _module_digest(unet),
            "clip": clip.hash,
            "phi": _module_digest(phi),
            "prompt": prompt,
            "sampling": asdict(sampling),
            "output_size": self.output_size,
        }

    def generate(
        self, references: Sequence[np.ndarray], texts: Sequence[str], seeds: Sequence[int]
    ) -> np.ndarray:
        if not (len(references) == len(texts) == len(seeds)):
            raise ValueError(f"{len(references)} references, {len(texts)} texts, {len(seeds)} seeds")
        if len(references) == 0:
            return np.zeros((0, self.output_size, self.output_size, 3), dtype=np.uint8)
        refs = np.stack([np.asarray(r, dtype=np.uint8) for r in references])
        cond = composed_conditions(self.clip, self.phi, refs, texts, self.prompt)
        return self.sample(cond, seeds)

    def sample(self, cond: Condition, seeds: Sequence[int], show: bool | None = None) -> np.ndarray:
        """DDIM samples (uint8, CLIP size) for conditions of ``N`` prompts, one noise seed each."""
        uncond = empty_condition(self.clip) if self.sampling.guidance_scale != 1.0 else None
        return ddim_sample(self.unet, cond, uncond, seeds, self.sampling, self.output_size, show=show)


def ddim_sample(
    unet: nn.Module,
    cond: tuple[torch.Tensor, ...],
    uncond: tuple[torch.Tensor, ...] | None,
    seeds: Sequence[int],
    sampling: SamplingConfig,
    output_size: int,
    *,
    show: bool | None = None,
    desc: str = "generate pseudo-targets",
) -> np.ndarray:
    """Seeded DDIM sampling of ``unet`` (uint8 ``[N, output_size, output_size, 3]``) for a condition
    tuple of ``N`` rows; each image draws its own noise from its seed, so an image does not depend on
    the batch. ``uncond`` (batch of one) is needed when ``sampling.guidance_scale != 1``."""
    from diffusers import DDIMScheduler

    spec = unet.spec
    cfg = sampling
    scheduler = DDIMScheduler(
        num_train_timesteps=spec.num_train_timesteps,
        beta_schedule=spec.beta_schedule,
        prediction_type=spec.prediction_type,
        clip_sample=True,
        set_alpha_to_one=True,
    )
    scheduler.set_timesteps(cfg.steps)
    guided = cfg.guidance_scale != 1.0
    if guided and uncond is None:
        raise ValueError("classifier-free guidance needs the unconditional condition")
    size = spec.image_size
    out = []
    starts = range(0, len(seeds), cfg.batch_size)
    show = len(seeds) > cfg.batch_size if show is None else show
    with torch.inference_mode():
        for start in progress_bar(starts, show=show, desc=desc, unit="batch"):
            sl = slice(start, start + cfg.batch_size)
            c = tuple(v[sl] for v in cond)
            x = torch.stack(
                [
                    torch.randn(3, size, size, generator=torch.Generator().manual_seed(int(s)))
                    for s in seeds[sl]
                ]
            )
            for t in scheduler.timesteps:
                tt = torch.full((len(x),), int(t))
                if guided:
                    pair = tuple(torch.cat([u.expand_as(v), v]) for u, v in zip(uncond, c))
                    both = unet(torch.cat([x, x]), torch.cat([tt, tt]), pair)
                    e_u, e_c = both.chunk(2)
                    eps = e_u + cfg.guidance_scale * (e_c - e_u)
                else:
                    eps = unet(x, tt, c)
                x = scheduler.step(eps, t, x, eta=cfg.eta).prev_sample
            out.append(_to_uint8(x, output_size))
    return np.concatenate(out) if out else np.zeros((0, output_size, output_size, 3), dtype=np.uint8)


def mean_brightness_ok(image: np.ndarray) -> bool:
    """CIG's filter: keep an image whose mean pixel value (0-255) exceeds 10."""
    return float(np.asarray(image, dtype=np.float32).mean()) > MIN_MEAN_BRIGHTNESS


def generate_with_retries(
    generator: PseudoTargetGenerator,
    references: Sequence[np.ndarray],
    texts: Sequence[str],
    seeds: Sequence[int],
    *,
    accept: Callable[[np.ndarray], bool] = mean_brightness_ok,
    max_retries: int = MAX_RETRIES,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate, then regenerate each rejected image with seed + 1, + 2, ... up to ``max_retries``
    times, as CIG's ``test_CIG.py`` does. Returns the images and the retries each needed (an image
    still rejected after the last retry is kept, and its count is ``max_retries + 1``)."""
    images = generator.generate(references, texts, seeds)
    retries = np.zeros(len(images), dtype=np.int64)
    pending = [i for i in range(len(images)) if not accept(images[i])]
    for attempt in range(1, max_retries + 1):
        if not pending:
            break
        retries[pending] = attempt
        redo = generator.generate(
            [references[i] for i in pending],
            [texts[i] for i in pending],
            [seeds[i] + attempt for i in pending],
        )
        images[pending] = redo
        pending = [i for j, i in enumerate(pending) if not accept(redo[j])]
    retries[pending] = max_retries + 1
    return images, retries


# --------------------------------------------------------------------------- cache
class PseudoTargetCache:
    """Pseudo-target images on disk (the embedding cache's atomic, verified ``.npy`` entries), one
    entry per (generator signature, reference content, text, seed): a rerun generates nothing, and
    the fusion and weight sweeps reuse the same images."""

    namespace = "pseudo-targets"

    def __init__(self, generator: PseudoTargetGenerator, cache: EmbeddingCache | None = None) -> None:
        self.generator = generator
        self.cache = cache if cache is not None else EmbeddingCache()
        self.generated = 0
        self.retries = 0

    def _key(self, reference_digest: str, text: str, seed: int) -> dict[str, Any]:
        return {
            "generator": self.generator.signature,
            "reference": reference_digest,
            "text": text,
            "seed": seed,
        }

    def get(
        self,
        references: Sequence[np.ndarray],
        reference_digests: Sequence[str],
        texts: Sequence[str],
        seeds: Sequence[int],
    ) -> np.ndarray:
        """Images ``[N, H, W, 3]`` for the requests, generating (with retries) only the missing ones."""
        found: dict[int, np.ndarray] = {}
        missing = []
        for i, (digest, text, seed) in enumerate(zip(reference_digests, texts, seeds, strict=True)):
            key = self._key(digest, text, seed)
            if self.cache.paths(self.namespace, key)[0].exists():
                found[i] = self.cache.get_or_compute(
                    self.namespace, key, lambda i=i: self._one(references, texts, seeds, i)
                )
            else:
                missing.append(i)
        if missing:
            images, retries = generate_with_retries(
                self.generator,
                [references[i] for i in missing],
                [texts[i] for i in missing],
                [seeds[i] for i in missing],
            )
            self.generated += len(missing)
            self.retries += int(retries.sum())
            for j, i in enumerate(missing):
                found[i] = self.cache.get_or_compute(
                    self.namespace, self._key(reference_digests[i], texts[i], seeds[i]), lambda j=j: images[j]
                )
        return np.stack([found[i] for i in range(len(texts))]) if texts else np.zeros((0, 1, 1, 3), np.uint8)

    def _one(self, references, texts, seeds, i: int) -> np.ndarray:
        """Regenerate one entry (only reached when a cached file turned out corrupt)."""
        images, retries = generate_with_retries(self.generator, [references[i]], [texts[i]], [seeds[i]])
        self.generated += 1
        self.retries += int(retries.sum())
        return images[0]


#: CIG's ``test_CIG.py`` default seed: every query's first image uses it.
CIG_SEED = 1600


def seeds_for(n_images: int, base_seed: int = CIG_SEED) -> list[int]:
    """The noise seed of each of a query's ``n_images`` pseudo-targets. As in the official code the
    seed does not depend on the query (every query starts from the same noise, so differences between
    pseudo-targets come from the condition alone); image ``j`` uses ``base_seed + 6j``, so the
    filter's retries (seed + 1 ... + 5) never reuse another image's seed."""
    return [base_seed + j * (MAX_RETRIES + 1) for j in range(n_images)]


__all__ = [
    "CIG_PROMPT",
    "CIG_SEED",
    "GeneratorArch",
    "GeneratorTrainConfig",
    "GeneratorUNet",
    "PseudoTargetCache",
    "PseudoTargetGenerator",
    "SamplingConfig",
    "TinyComposedGenerator",
    "build_unet",
    "composed_conditions",
    "ddim_sample",
    "empty_condition",
    "generate_with_retries",
    "mean_brightness_ok",
    "seeds_for",
    "train_diffusion",
    "train_generator",
]
