"""Image-to-pseudo-word mappings of zero-shot CIR: Pic2Word's phi, SEARLE's OTI and distilled phi.

All of them turn an image into a *pseudo word*: a vector in CLIP's token-embedding space that, put in
place of ``$`` in a prompt ("a photo of $"), makes the text encoder describe the image. They are
trained on images only (zero-shot CIR never sees triplets):

* :func:`train_phi` (Pic2Word): an MLP phi maps the frozen CLIP image feature v to a token; the text
  feature of "a photo of $" with $ = phi(v) is pulled towards v by a symmetric contrastive loss over
  the batch (Pic2Word's objective, with CLIP's own frozen temperature).
* :func:`optimise_pseudo_tokens` (SEARLE's OTI): one free token per image, optimised by AdamW so that
  the prompt's text feature has a high cosine with the image feature, plus an optional regulariser
  that keeps the token near words (the same prompt with the image's nearest concept word instead of
  ``$`` should give a similar text feature); the exponential moving average of the token is returned.
* :func:`train_phi_distilled` (SEARLE): an MLP phi regresses the OTI tokens with a contrastive loss in
  token space, plus the same optional word regulariser.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cirlib.config import progress_bar
from cirlib.models.clip import CLIPModel, EpochSampler, contrastive_loss, torch_threads


class Phi(nn.Module):
    """MLP from an image embedding (D) to a token embedding (W).

    ``n_layers`` blocks of Linear -> activation -> Dropout, then an output Linear. With ReLU, dropout
    0.1 and hidden 512 this is Pic2Word's IM2TEXT (its Dropout-before-ReLU order is equivalent); with
    GELU, dropout 0.5 and hidden 4*D it is SEARLE's phi."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_dim: int = 512,
        n_layers: int = 2,
        dropout: float = 0.1,
        activation: Literal["relu", "gelu"] = "relu",
    ) -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        self.arch: dict[str, Any] = {
            "input_dim": input_dim,
            "output_dim": output_dim,
            "hidden_dim": hidden_dim,
            "n_layers": n_layers,
            "dropout": dropout,
            "activation": activation,
        }
        act = nn.ReLU if activation == "relu" else nn.GELU
        blocks: list[nn.Module] = []
        dim = input_dim
        for _ in range(n_layers):
            blocks += [nn.Linear(dim, hidden_dim), act(), nn.Dropout(dropout)]
            dim = hidden_dim
        self.layers = nn.Sequential(*blocks)
        self.fc_out = nn.Linear(dim, output_dim)
        #: :attr:`CLIPModel.hash` of the CLIP this phi was trained against (None if unknown).
        self.clip_hash: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(x))

    def pseudo_tokens(self, image_features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Eval-mode tokens ``[N, W]`` for image features ``[N, D]`` (no dropout, no grad)."""
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            out = (
                torch.cat(
                    [
                        self(image_features[i : i + batch_size])
                        for i in range(0, len(image_features), batch_size)
                    ]
                )
                if len(image_features)
                else torch.zeros(0, self.arch["output_dim"])
            )
        self.train(was_training)
        return out.clone()


# --------------------------------------------------------------------------- Pic2Word
@dataclass(frozen=True)
class PhiTrainConfig:
    """Pic2Word-style training of phi on images only (CLIP frozen)."""

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup_steps: int = 50
    hidden_dim: int = 512
    n_layers: int = 2
    dropout: float = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    prompt: str = "a photo of $"
    #: None: CLIP's own (frozen) learned logit scale, as Pic2Word does.
    logit_scale: float | None = None


def _cosine_lr(step: int, steps: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return float(lr * 0.5 * (1.0 + np.cos(np.pi * progress)))  # a float: optimiser states are saved


def _image_features(
    clip: CLIPModel, images: np.ndarray | None, image_features: torch.Tensor | None
) -> torch.Tensor:
    if image_features is None:
        if images is None:
            raise ValueError("give images or image_features")
        image_features = clip.encode_images(images)
    feats = torch.as_tensor(image_features, dtype=torch.float32).clone()
    if feats.ndim != 2 or feats.shape[1] != clip.embed_dim:
        raise ValueError(f"image features must be [N, {clip.embed_dim}], got {list(feats.shape)}")
    return F.normalize(feats, dim=-1)


def train_phi(
    clip: CLIPModel,
    images: np.ndarray | None,
    config: PhiTrainConfig | None = None,
    seed: int = 0,
    *,
    image_features: torch.Tensor | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> Phi:
    """Train a Pic2Word phi on ``images`` (uint8 ``[N,H,W,3]``; or pass precomputed ``image_features``).

    Each step: v = frozen image features of a batch, t = text feature of ``config.prompt`` with
    $ = phi(v); loss = symmetric InfoNCE(v, t) at CLIP's temperature. Deterministic given ``seed``."""
    config = config or PhiTrainConfig()
    with torch_threads(num_threads):
        feats = _image_features(clip, images, image_features)
        torch.manual_seed(seed)
        phi = Phi(
            clip.embed_dim,
            clip.token_dim,
            config.hidden_dim,
            config.n_layers,
            config.dropout,
            config.activation,
        )
        phi.clip_hash = clip.hash
        phi.train()
        optimizer = torch.optim.AdamW(phi.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        tokens, positions = clip.tokenize_with_placeholder([config.prompt])
        scale = float(clip.model.logit_scale.exp()) if config.logit_scale is None else config.logit_scale
        sampler = EpochSampler(len(feats), config.batch_size, seed)
        losses: list[float] = []
        bar = progress_bar(range(config.steps), desc="train phi (Pic2Word)", show=progress)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(step, config.steps, config.warmup_steps, config.lr)
            v = feats[sampler.batch(step)]
            n = len(v)
            t = clip.text_features_with_pseudo(tokens.expand(n, -1), positions.expand(n), phi(v))
            loss = contrastive_loss(v, F.normalize(t, dim=-1), scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        phi.eval()
        phi.training_losses = losses  # type: ignore[attr-defined]
        return phi


# --------------------------------------------------------------------------- SEARLE: OTI
@dataclass(frozen=True)
class OTIConfig:
    """SEARLE's optimisation-based textual inversion (defaults from the paper's code: AdamW lr 2e-2,
    weight decay 0.01, 350 steps, EMA 0.99, lambda_cos 1, lambda_reg 0.5, tokens ~ N(0, 0.02))."""

    steps: int = 350
    batch_size: int = 256
    lr: float = 2e-2
    weight_decay: float = 0.01
    ema_decay: float = 0.99
    lambda_cos: float = 1.0
    lambda_reg: float = 0.5
    init_std: float = 0.02
    templates: tuple[str, ...] = ("a photo of {}",)
    #: how many nearest concept words per image the regulariser samples from
    top_k_concepts: int = 5


def nearest_concepts(
    clip: CLIPModel, image_features: torch.Tensor, words: Sequence[str], k: int
) -> np.ndarray:
    """Indices ``[N, k]`` of the words whose "a photo of {word}" is nearest each image feature (SEARLE's
    image-concept association, by zero-shot classification)."""
    word_feats = clip.encode_texts([f"a photo of {w}" for w in words])
    sims = F.normalize(image_features, dim=-1) @ word_feats.T
    return sims.topk(min(k, len(words)), dim=1).indices.numpy()


def _reg_texts(
    words: Sequence[str], concepts: np.ndarray, templates: Sequence[str], rng: random.Random
) -> tuple[list[str], list[str]]:
    """For each row: a template filled with one of its concept words, and the same with ``$``."""
    plain, pseudo = [], []
    for row in concepts:
        template = rng.choice(templates)
        word = words[int(rng.choice(list(row)))]
        plain.append(template.format(word))
        pseudo.append(template.format("$"))
    return plain, pseudo


def optimise_pseudo_tokens(
    clip: CLIPModel,
    image_features: torch.Tensor,
    config: OTIConfig | None = None,
    seed: int = 0,
    *,
    concept_words: Sequence[str] | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """SEARLE OTI: one pseudo token per image, ``[N, token_dim]`` (the EMA of the optimised tokens).

    Loss per batch: ``(lambda_cos * (1 - cos(text("a photo of $"), v)) + lambda_reg * reg) / (sum)``;
    ``reg`` (only with ``concept_words``) is ``1 - cos`` between the template with ``$`` and the same
    template with one of the image's nearest concept words. Images are optimised in independent
    batches; deterministic given ``seed``."""
    config = config or OTIConfig()
    with torch_threads(num_threads):
        feats = _image_features(clip, None, image_features)
        use_reg = concept_words is not None and config.lambda_reg > 0
        concepts = nearest_concepts(clip, feats, concept_words, config.top_k_concepts) if use_reg else None
        lam_reg = config.lambda_reg if use_reg else 0.0
        rng = random.Random(seed)
        gen = torch.Generator().manual_seed(seed)
        out = []
        starts = range(0, len(feats), config.batch_size)
        for start in progress_bar(starts, desc="OTI", show=progress and len(starts) >= 2):
            v = feats[start : start + config.batch_size]
            n = len(v)
            tokens = nn.Parameter(torch.randn(n, clip.token_dim, generator=gen) * config.init_std)
            ema = tokens.detach().clone()
            optimizer = torch.optim.AdamW([tokens], lr=config.lr, weight_decay=config.weight_decay)
            for _ in range(config.steps):
                texts = [rng.choice(config.templates).format("$") for _ in range(n)]
                ids, pos = clip.tokenize_with_placeholder(texts)
                t = F.normalize(clip.text_features_with_pseudo(ids, pos, tokens), dim=-1)
                loss = config.lambda_cos * (1 - (t * v).sum(-1)).mean()
                if use_reg:
                    plain, pseudo = _reg_texts(
                        concept_words, concepts[start : start + n], config.templates, rng
                    )
                    target = clip.encode_texts(plain)
                    ids, pos = clip.tokenize_with_placeholder(pseudo)
                    r = F.normalize(clip.text_features_with_pseudo(ids, pos, tokens), dim=-1)
                    loss = loss + lam_reg * (1 - (r * target).sum(-1)).mean()
                loss = loss / (config.lambda_cos + lam_reg)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    ema.mul_(config.ema_decay).add_(tokens.detach(), alpha=1 - config.ema_decay)
            out.append(ema)
        return torch.cat(out) if out else torch.zeros(0, clip.token_dim)


# --------------------------------------------------------------------------- SEARLE: distilled phi
@dataclass(frozen=True)
class DistilConfig:
    """SEARLE's phi distillation (its code: hidden 4*D, GELU, dropout 0.5, contrastive distillation in
    token space at temperature 0.25, AdamW; here with a cosine schedule and a fixed step budget)."""

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    hidden_dim: int | None = None  # None: 4 * embed_dim
    n_layers: int = 2
    dropout: float = 0.5
    activation: Literal["relu", "gelu"] = "gelu"
    temperature: float = 0.25
    lambda_distil: float = 1.0
    lambda_reg: float = 0.1
    templates: tuple[str, ...] = ("a photo of {}",)
    top_k_concepts: int = 5


def train_phi_distilled(
    clip: CLIPModel,
    image_features: torch.Tensor,
    oti_tokens: torch.Tensor,
    config: DistilConfig | None = None,
    seed: int = 0,
    *,
    concept_words: Sequence[str] | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> Phi:
    """Distil OTI tokens into a phi (SEARLE): ``lambda_distil * InfoNCE(phi(v), oti; T)`` in token space
    (rows normalised) plus, with ``concept_words``, ``lambda_reg`` times the word regulariser."""
    config = config or DistilConfig()
    with torch_threads(num_threads):
        feats = _image_features(clip, None, image_features)
        targets = torch.as_tensor(oti_tokens, dtype=torch.float32).clone()
        if targets.shape != (len(feats), clip.token_dim):
            raise ValueError(
                f"oti_tokens must be [{len(feats)}, {clip.token_dim}], got {list(targets.shape)}"
            )
        use_reg = concept_words is not None and config.lambda_reg > 0
        concepts = nearest_concepts(clip, feats, concept_words, config.top_k_concepts) if use_reg else None
        torch.manual_seed(seed)
        rng = random.Random(seed)
        hidden = config.hidden_dim or 4 * clip.embed_dim
        phi = Phi(clip.embed_dim, clip.token_dim, hidden, config.n_layers, config.dropout, config.activation)
        phi.clip_hash = clip.hash
        phi.train()
        optimizer = torch.optim.AdamW(phi.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sampler = EpochSampler(len(feats), config.batch_size, seed)
        losses: list[float] = []
        bar = progress_bar(range(config.steps), desc="train phi (SEARLE distil)", show=progress)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(step, config.steps, config.warmup_steps, config.lr)
            idx = sampler.batch(step)
            est = phi(feats[idx])
            loss = config.lambda_distil * contrastive_loss(
                F.normalize(est, dim=-1), F.normalize(targets[idx], dim=-1), 1.0 / config.temperature
            )
            if use_reg:
                plain, pseudo = _reg_texts(concept_words, concepts[idx], config.templates, rng)
                target = clip.encode_texts(plain)
                ids, pos = clip.tokenize_with_placeholder(pseudo)
                r = F.normalize(clip.text_features_with_pseudo(ids, pos, est), dim=-1)
                loss = loss + config.lambda_reg * (1 - (r * target).sum(-1)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        phi.eval()
        phi.training_losses = losses  # type: ignore[attr-defined]
        return phi


__all__ = [
    "DistilConfig",
    "OTIConfig",
    "Phi",
    "PhiTrainConfig",
    "nearest_concepts",
    "optimise_pseudo_tokens",
    "train_phi",
    "train_phi_distilled",
]
