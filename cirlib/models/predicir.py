"""PrediCIR (CVPR 2025): predict the target content the reference lacks, then map it to a pseudo-word.

The authors' repository holds a README only (``shared/papers/REFERENCE.md``), so this is an open
implementation from the paper's description. Three parts, trained together on image-caption pairs
only (zero-shot: no CIR triplet is ever seen):

1. **World view generation** (:func:`sample_boxes`, :func:`crop_views`): the original image is the
   *target view*; a random crop of it, resized back to the CLIP's input size (a natural image, which
   a frozen CLIP expects, unlike a masked one) is the *source view*; the caption is the *action*.
2. **Target content predictor** (:class:`TargetContentPredictor`), a JEPA-style world model over the
   frozen CLIP's patch features: the source view's patch features (placed at their position in the
   target canvas), the action's CLIP text embedding and one *mask token* per region of the target
   canvas the crop left out go through a transformer; the mask tokens' outputs predict the target's
   patch features there (loss in latent space, on the missing regions only), the source tokens'
   outputs are the *enhanced* source content.
3. **Predictive cross-modal alignment** (:class:`PredictiveAlignment`): attention-pools the
   predicted and the enhanced tokens, fuses them with the global source feature by input-dependent
   (adaptive) weights and maps the result to a pseudo-word token; "a photo of $" with that token is
   pulled towards the *target* image's CLIP feature by a contrastive loss.

Our choices (the paper leaves them open or we could not read them), each documented where it is
made: the canvas is a ``grid`` x ``grid`` grid of *regions* (mean-pooled CLIP patch tokens; 4 x 4 of
2 x 2 patches in the tiny profile, so a crop keeps whole regions); positions are 2-D sine-cosine
codes of a region's centre in the target canvas; targets are the layer-normalised patch features
(as I-JEPA); the loss is the contrastive loss plus ``prediction_weight`` times the latent MSE; where a
reference sits in the target canvas at inference is a setting (:data:`INFERENCE_BOXES`) chosen on val.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cirlib.config import progress_bar
from cirlib.models.clip import (
    STATE_FILE,
    CLIPModel,
    EpochSampler,
    contrastive_loss,
    save_training_state,
    torch_threads,
)
from cirlib.models.phi import _cosine_lr

#: What the predictor is trained to predict: the regions the crop left out (the paper's choice),
#: the whole target canvas (the paper's ablation), or nothing (no mask tokens: the alignment sees
#: the enhanced source content and the global feature only, our ablation isolating prediction).
Prediction = Literal["missing", "whole", "none"]
PREDICTIONS: tuple[str, ...] = ("missing", "whole", "none")

#: Where the reference sits in the target canvas at inference. ``center``: the middle half of the
#: canvas on each axis (a crop as in training; the regions around it are predicted); ``full``: the
#: whole canvas, every region predicted. The paper does not say; the notebook chooses on val.
INFERENCE_BOXES: tuple[str, ...] = ("center", "full")


# --------------------------------------------------------------------------- world view generation
@dataclass(frozen=True)
class CropConfig:
    """Which source views the crops make: a crop keeps whole regions of the ``grid`` x ``grid`` canvas,
    covering a fraction of its area in ``[min_area, max_area]`` with an aspect ratio of at most
    ``max_aspect``; the full canvas is never a crop (something is always missing)."""

    min_area: float = 0.25
    max_area: float = 0.5
    max_aspect: float = 2.0

    def box_shapes(self, grid: int) -> list[tuple[int, int]]:
        """Allowed crop shapes ``(width, height)`` in regions."""
        shapes = [
            (w, h)
            for w in range(1, grid + 1)
            for h in range(1, grid + 1)
            if self.min_area - 1e-9 <= w * h / grid**2 <= self.max_area + 1e-9
            and max(w / h, h / w) <= self.max_aspect + 1e-9
            and (w, h) != (grid, grid)
        ]
        if not shapes:
            raise ValueError(f"{self} allows no crop of a {grid}x{grid} region grid")
        return shapes

    def mean_area(self, grid: int) -> float:
        """Mean kept area fraction of the sampled crops (shapes are drawn uniformly)."""
        return float(np.mean([w * h / grid**2 for w, h in self.box_shapes(grid)]))


def sample_boxes(n: int, crop: CropConfig, grid: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` crop boxes ``[n, 4]`` (x0, y0, x1, y1, in regions; x1, y1 exclusive): a shape drawn
    uniformly from :meth:`CropConfig.box_shapes`, then a position drawn uniformly."""
    shapes = np.array(crop.box_shapes(grid))
    chosen = shapes[rng.integers(len(shapes), size=n)]
    x0 = rng.integers(0, grid - chosen[:, 0] + 1)
    y0 = rng.integers(0, grid - chosen[:, 1] + 1)
    return np.stack([x0, y0, x0 + chosen[:, 0], y0 + chosen[:, 1]], axis=1).astype(np.int64)


def inference_box(kind: str, grid: int) -> np.ndarray:
    """The box ``[4]`` a reference occupies in the target canvas at inference (see :data:`INFERENCE_BOXES`)."""
    if kind == "full":
        return np.array([0, 0, grid, grid])
    if kind == "center":
        lo, hi = grid // 4, grid - grid // 4
        return np.array([lo, lo, hi, hi])
    raise ValueError(f"inference box must be one of {INFERENCE_BOXES}, got {kind!r}")


def missing_regions(boxes: np.ndarray, grid: int) -> np.ndarray:
    """``[n, grid*grid]`` bool, row-major: True where a region lies outside its crop box."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    cols, rows = np.meshgrid(np.arange(grid), np.arange(grid))
    cols, rows = cols.reshape(1, -1), rows.reshape(1, -1)
    inside = (
        (cols >= boxes[:, :1]) & (cols < boxes[:, 2:3]) & (rows >= boxes[:, 1:2]) & (rows < boxes[:, 3:4])
    )
    return ~inside


def crop_tensor(x: torch.Tensor, boxes: np.ndarray | torch.Tensor, grid: int) -> torch.Tensor:
    """Crop each image of ``x`` ``[n, C, S, S]`` to its box (in regions) and resize it back to S x S
    (bilinear; a crop is only ever enlarged, so no anti-aliasing is needed)."""
    from torchvision.ops import roi_align

    n, _, size, _ = x.shape
    boxes = torch.as_tensor(np.asarray(boxes), dtype=x.dtype, device=x.device).reshape(n, 4) * (size / grid)
    # Half a pixel in from each edge: the samples then span the box's first to last pixel centre, so
    # no pixel outside the box leaks into the view (as align_corners=True resizing of the crop).
    boxes = boxes + torch.tensor([0.5, 0.5, -0.5, -0.5], dtype=x.dtype, device=x.device)
    rois = torch.cat([torch.arange(n, dtype=x.dtype, device=x.device).unsqueeze(1), boxes], dim=1)
    return roi_align(x, rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def crop_views(images: np.ndarray, boxes: np.ndarray, grid: int) -> np.ndarray:
    """Source views as uint8 pictures ``[n, S, S, 3]`` (for figures; training crops tensors directly)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    out = crop_tensor(x, boxes, grid)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@dataclass
class WorldViews:
    """<source view, action, target view> triplets made from image-caption pairs."""

    sources: np.ndarray  # uint8 [n, S, S, 3]: the crops, resized
    actions: list[str]  # the captions
    targets: np.ndarray  # uint8 [n, S, S, 3]: the original images
    boxes: np.ndarray  # int [n, 4]: where each crop lies in its target, in regions
    missing: np.ndarray  # bool [n, grid*grid]: the regions each source view lacks


def world_views(
    images: np.ndarray, captions: Sequence[str], crop: CropConfig, grid: int, seed: int
) -> WorldViews:
    """World views of image-caption pairs (one random crop each, seeded)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    boxes = sample_boxes(len(images), crop, grid, np.random.default_rng([seed, 7727]))
    return WorldViews(
        crop_views(images, boxes, grid), list(captions), images, boxes, missing_regions(boxes, grid)
    )


# --------------------------------------------------------------------------- positions and regions
def region_centres(grid: int) -> torch.Tensor:
    """``[grid*grid, 2]`` (x, y) centres of the regions of the unit canvas, row-major."""
    ticks = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def source_positions(boxes: np.ndarray | torch.Tensor, grid: int) -> torch.Tensor:
    """``[n, grid*grid, 2]`` canvas positions of a source view's regions: region (i, j) of the
    resized crop lies at the matching point of the crop box in the target canvas."""
    boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32).reshape(-1, 4) / grid
    unit = region_centres(grid).unsqueeze(0)  # [1, R, 2]
    origin, extent = boxes[:, None, :2], (boxes[:, None, 2:] - boxes[:, None, :2])
    return origin + unit * extent


def sincos_2d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine codes ``[..., dim]`` of positions ``[..., 2]`` in [0, 1] (half the
    channels per axis, as I-JEPA's positional embeddings, here at continuous positions)."""
    if dim % 4:
        raise ValueError(f"sine-cosine position codes need a width divisible by 4, got {dim}")
    freqs = 1.0 / (
        100.0 ** (torch.arange(dim // 4, dtype=torch.float32, device=positions.device) / (dim // 4))
    )
    angles = positions.unsqueeze(-1) * (2 * math.pi * 8) * freqs  # [..., 2, dim/4]
    codes = torch.cat([angles.sin(), angles.cos()], dim=-1)  # [..., 2, dim/2]
    return codes.flatten(-2)


def pool_regions(patch_tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean-pool a ViT's patch tokens ``[n, P, W]`` (P a square) into ``[n, grid*grid, W]`` regions."""
    n, p, width = patch_tokens.shape
    side = math.isqrt(p)
    if side * side != p or side % grid:
        raise ValueError(f"{p} patch tokens do not form a square grid divisible into {grid}x{grid} regions")
    x = patch_tokens.transpose(1, 2).reshape(n, width, side, side)
    return F.avg_pool2d(x, side // grid).flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------- the networks
class TargetContentPredictor(nn.Module):
    """The world model: a pre-norm transformer over [action token; source regions; mask tokens].

    Returns the predicted target features at every mask slot ``[n, R, patch_dim]`` (meaningful where
    ``query_active``) and the enhanced source tokens ``[n, R, width]``."""

    def __init__(self, patch_dim: int, action_dim: int, width: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.width = width
        self.source_in = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, width))
        self.action_in = nn.Linear(action_dim, width)
        self.mask_token = nn.Parameter(torch.randn(width) * 0.02)
        self.kind = nn.Parameter(torch.randn(3, width) * 0.02)  # action, source, mask
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            int(width * mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, patch_dim)

    def forward(
        self,
        source_regions: torch.Tensor,
        source_pos: torch.Tensor,
        action: torch.Tensor,
        query_pos: torch.Tensor,
        query_active: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, r, _ = source_regions.shape
        source = self.source_in(source_regions) + sincos_2d(source_pos, self.width) + self.kind[1]
        act = (self.action_in(action) + self.kind[0]).unsqueeze(1)
        queries = self.mask_token + sincos_2d(query_pos, self.width).expand(n, -1, -1) + self.kind[2]
        sequence = torch.cat([act, source, queries], dim=1)
        # Inactive mask slots are neither attended to nor used: the sequence keeps a fixed length.
        padding = torch.cat(
            [torch.zeros(n, 1 + r, dtype=torch.bool, device=query_active.device), ~query_active], dim=1
        )
        out = self.norm(self.blocks(sequence, src_key_padding_mask=padding))
        return self.head(out[:, 1 + r :]), out[:, 1 : 1 + r]


class AttentionPool(nn.Module):
    """A learned score per token, softmax over the valid tokens, weighted mean."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.score = nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        scores = self.score(tokens).squeeze(-1).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no valid token pools to 0
        return (weights.unsqueeze(-1) * tokens).sum(dim=1)


class PredictiveAlignment(nn.Module):
    """PMA: pool predicted and enhanced source content, fuse them with the global source feature, map
    the result to a pseudo-word token. ``adaptive``: the three weights come from a small network of the
    three inputs (softmax); otherwise they are equal (the ablation)."""

    def __init__(
        self,
        patch_dim: int,
        width: int,
        embed_dim: int,
        token_dim: int,
        hidden_dim: int,
        dropout: float,
        adaptive: bool,
        use_prediction: bool,
    ) -> None:
        super().__init__()
        self.adaptive, self.use_prediction = adaptive, use_prediction
        self.n_parts = 3 if use_prediction else 2
        self.global_in = nn.Linear(embed_dim, width)
        self.predicted_in = nn.Linear(patch_dim, width)
        self.pool_predicted = AttentionPool(width)
        self.pool_source = AttentionPool(width)
        self.gate = nn.Sequential(
            nn.Linear(self.n_parts * width, width), nn.GELU(), nn.Linear(width, self.n_parts)
        )
        self.to_token = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, token_dim),
        )

    def forward(
        self,
        predicted: torch.Tensor,
        query_active: torch.Tensor,
        enhanced: torch.Tensor,
        global_feature: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self.global_in(global_feature)]
        parts.append(
            self.pool_source(
                enhanced, torch.ones(enhanced.shape[:2], dtype=torch.bool, device=enhanced.device)
            )
        )
        if self.use_prediction:
            parts.append(self.pool_predicted(self.predicted_in(predicted), query_active))
        stacked = torch.stack(parts, dim=1)  # [n, parts, width]
        if self.adaptive:
            weights = torch.softmax(self.gate(stacked.flatten(1)), dim=-1)
        else:
            weights = torch.full(stacked.shape[:2], 1.0 / self.n_parts, device=stacked.device)
        fused = (weights.unsqueeze(-1) * stacked).sum(dim=1)
        return self.to_token(fused), weights


class PrediCIROutput(NamedTuple):
    token: torch.Tensor  # [n, token_dim]: the pseudo-word
    predicted: torch.Tensor  # [n, R, patch_dim]: predicted target features per mask slot
    query_active: torch.Tensor  # [n, R]: which mask slots were used
    fusion_weights: torch.Tensor  # [n, parts]: global, source[, predicted]


class PrediCIRNet(nn.Module):
    """Target content predictor + predictive cross-modal alignment over one frozen CLIP (a zoo kind:
    ``arch`` rebuilds it, ``clip_hash`` names the CLIP it belongs to)."""

    def __init__(
        self,
        patch_dim: int,
        embed_dim: int,
        token_dim: int,
        grid: int = 4,
        width: int = 128,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        hidden_dim: int = 512,
        dropout: float = 0.1,
        adaptive_fusion: bool = True,
        prediction: str = "missing",
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.arch = {
            "patch_dim": patch_dim,
            "embed_dim": embed_dim,
            "token_dim": token_dim,
            "grid": grid,
            "width": width,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": mlp_ratio,
            "hidden_dim": hidden_dim,
            "dropout": dropout,
            "adaptive_fusion": adaptive_fusion,
            "prediction": prediction,
        }
        self.grid, self.prediction = grid, prediction
        self.predictor = TargetContentPredictor(patch_dim, embed_dim, width, depth, heads, mlp_ratio)
        self.alignment = PredictiveAlignment(
            patch_dim, width, embed_dim, token_dim, hidden_dim, dropout, adaptive_fusion, prediction != "none"
        )
        self.clip_hash: str | None = None

    def query_slots(self, boxes: np.ndarray) -> torch.Tensor:
        """Which mask slots ``[n, R]`` are used for source views at ``boxes``: the missing regions, every
        region (``whole``, or a box covering the canvas), or none (``none``)."""
        missing = torch.from_numpy(missing_regions(boxes, self.grid))
        if self.prediction == "none":
            return torch.zeros_like(missing)
        if self.prediction == "whole":
            return torch.ones_like(missing)
        return torch.where(missing.any(dim=1, keepdim=True), missing, torch.ones_like(missing))

    def forward(
        self,
        source_regions: torch.Tensor,
        global_feature: torch.Tensor,
        action: torch.Tensor,
        boxes: np.ndarray,
    ) -> PrediCIROutput:
        """Pseudo-words of source views: their region features ``[n, R, patch_dim]``, global CLIP
        features ``[n, D]`` (normalised), the actions' CLIP text embeddings ``[n, D]`` and where each
        source lies in its target canvas (``boxes`` ``[n, 4]`` in regions)."""
        n = source_regions.shape[0]
        boxes = np.asarray(boxes).reshape(-1, 4)
        if len(boxes) == 1 and n > 1:
            boxes = np.repeat(boxes, n, axis=0)
        device = source_regions.device
        active = self.query_slots(boxes).to(device)
        predicted, enhanced = self.predictor(
            source_regions,
            source_positions(boxes, self.grid).to(device),
            action,
            region_centres(self.grid).to(device),
            active,
        )
        token, weights = self.alignment(predicted, active, enhanced, global_feature)
        return PrediCIROutput(token, predicted, active, weights)


def encode_regions(clip: CLIPModel, x: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-CLIP features of preprocessed images ``x``: normalised global embeddings ``[n, D]`` and
    region features ``[n, grid*grid, W]`` (mean-pooled final-layer patch tokens, after ``ln_post``)."""
    global_feature, tokens = clip.encode_pixels_with_tokens(x)
    return global_feature, pool_regions(tokens, grid)


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class PrediCIRTrainConfig:
    """Joint training of predictor and alignment on world views of image-caption pairs (CLIP frozen)."""

    steps: int = 700
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    crop: CropConfig = field(default_factory=CropConfig)
    #: weight of the latent prediction loss next to the contrastive alignment loss
    prediction_weight: float = 1.0
    prompt: str = "a photo of $"
    checkpoint_every: int = 100


@dataclass(frozen=True)
class PrediCIRArch:
    """Network size and the two ablation switches (see :class:`PrediCIRNet`)."""

    grid: int = 4
    width: int = 128
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0
    hidden_dim: int = 512
    dropout: float = 0.1
    adaptive_fusion: bool = True
    prediction: str = "missing"


def layer_norm_targets(regions: torch.Tensor) -> torch.Tensor:
    """Prediction targets: each region feature layer-normalised (no affine), as I-JEPA's targets."""
    return F.layer_norm(regions, regions.shape[-1:])


def prediction_loss(output: PrediCIROutput, target_regions: torch.Tensor) -> torch.Tensor:
    """Mean squared error in latent space over the used mask slots (0 when none is used)."""
    active = output.query_active
    if not bool(active.any()):
        return output.predicted.sum() * 0.0
    error = (output.predicted - layer_norm_targets(target_regions)).pow(2).mean(dim=-1)
    return error[active].mean()


def _target_features(clip: CLIPModel, images: np.ndarray, grid: int, batch_size: int = 512):
    """Global features and region features of the training images (the targets), computed once."""
    globals_, regions = [], []
    for start in progress_bar(
        range(0, len(images), batch_size), desc="encode target views", show=len(images) > 4096
    ):
        g, r = encode_regions(clip, clip.preprocess_images(images[start : start + batch_size]), grid)
        globals_.append(g)
        regions.append(r.half())  # half the memory; targets are layer-normalised later anyway
    return torch.cat(globals_), torch.cat(regions)


def train_predicir(
    clip: CLIPModel,
    images: np.ndarray,
    captions: Sequence[str],
    config: PrediCIRTrainConfig | None = None,
    seed: int = 0,
    *,
    arch: PrediCIRArch | None = None,
    resume_dir: Path | None = None,
    stop_after: int | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> PrediCIRNet:
    """Train PrediCIR on image-caption pairs (uint8 ``[N,H,W,3]`` and their captions).

    Each step: a batch of pairs; one random crop each (the source view); frozen-CLIP region features
    and global features of source and target views; the caption's CLIP text embedding as the action.
    Loss = contrastive(text feature of ``config.prompt`` with $ = the pseudo-word, target global
    feature) at CLIP's temperature + ``prediction_weight`` x latent MSE on the used mask slots.
    Deterministic given ``seed``; every random draw (batch, crops, dropout) is a function of
    ``(seed, step)``, so a run resumed from ``resume_dir`` equals an uninterrupted one. The network
    trains on the CLIP's device."""
    from cirlib.retrieval import content_digest

    config = config or PrediCIRTrainConfig()
    arch = arch or PrediCIRArch()
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    config.crop.box_shapes(arch.grid)  # fails early on an impossible crop setting
    with torch_threads(num_threads):
        torch.manual_seed(seed)
        device = clip.device
        net = PrediCIRNet(clip.model.visual.transformer.width, clip.embed_dim, clip.token_dim, **asdict(arch))
        net.clip_hash = clip.hash
        net.to(device)
        optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        key = content_digest(
            [asdict(config), asdict(arch), seed, clip.hash, len(images), list(captions[:64])]
        )
        state_path = resume_dir / STATE_FILE if resume_dir is not None else None
        start, losses = 0, []
        if state_path is not None and state_path.exists():
            state = torch.load(state_path, map_location=device, weights_only=True)
            if state.get("key") == key:
                net.load_state_dict(state["model"])
                optimiser.load_state_dict(state["optimiser"])
                start, losses = int(state["step"]), list(state["losses"])
        target_global, target_regions = (t.to(device) for t in _target_features(clip, images, arch.grid))
        actions = clip.encode_texts(list(captions)).to(device)
        tokens, positions = (t.to(device) for t in clip.tokenize_with_placeholder([config.prompt]))
        scale = float(clip.model.logit_scale.exp())
        sampler = EpochSampler(len(images), config.batch_size, seed)
        net.train()

        def save_state(step: int) -> None:
            if state_path is not None:
                save_training_state(
                    state_path,
                    {
                        "key": key,
                        "step": step,
                        "model": net.state_dict(),
                        "optimiser": optimiser.state_dict(),
                        "losses": losses,
                    },
                )

        bar = progress_bar(
            range(start, config.steps),
            desc="train PrediCIR",
            show=progress,
            initial=start,
            total=config.steps,
        )
        for step in bar:
            for group in optimiser.param_groups:
                group["lr"] = _cosine_lr(step, config.steps, config.warmup_steps, config.lr)
            index = sampler.batch(step)
            boxes = sample_boxes(len(index), config.crop, arch.grid, np.random.default_rng([seed, step, 31]))
            sources = crop_tensor(clip.preprocess_images(images[index]), boxes, arch.grid)
            source_global, source_regions = (t.to(device) for t in encode_regions(clip, sources, arch.grid))
            torch.manual_seed(seed * 1_000_003 + step)  # dropout masks: a function of (seed, step)
            output = net(source_regions, source_global, actions[index], boxes)
            n = len(index)
            text = clip.text_features_with_pseudo(tokens.expand(n, -1), positions.expand(n), output.token)
            align = contrastive_loss(target_global[index], F.normalize(text, dim=-1), scale)
            predict = prediction_loss(output, target_regions[index].float())
            loss = align + config.prediction_weight * predict
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append([float(align.detach()), float(predict.detach())])
            bar.set_postfix(align=f"{losses[-1][0]:.3f}", predict=f"{losses[-1][1]:.3f}")
            done = step + 1
            stopping = stop_after is not None and done >= stop_after
            if done % config.checkpoint_every == 0 or done == config.steps or stopping:
                save_state(done)
            if stopping:
                break
        net.eval().cpu()
        net.training_losses = losses  # type: ignore[attr-defined]
        return net


def load_predicir_file(path: Path | str) -> PrediCIRNet:
    """A PrediCIR network from a checkpoint file (written by ``zoo.save_checkpoint``); a missing or
    foreign file is an error naming it."""
    from cirlib.models import zoo

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PrediCIR checkpoint {path} does not exist")
    net = zoo.load_file(path)
    if not isinstance(net, PrediCIRNet):
        raise ValueError(f"{path} holds a {type(net).__name__}, not a PrediCIR network")
    return net


# --------------------------------------------------------------------------- looking inside
def prediction_quality(
    clip: CLIPModel,
    net: PrediCIRNet,
    images: np.ndarray,
    captions: Sequence[str],
    crop: CropConfig,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """How well the world model predicts held-out target views: per view, the mean cosine between the
    predicted and the true (layer-normalised) features over the mask slots it fills, for the
    predictor with the view's own caption, with another view's caption (actions rolled by one: does
    the action steer the prediction?), and for the per-region mean of the true features over these
    views (the best prediction that ignores both source and action)."""
    views = world_views(images, captions, crop, net.grid, seed)
    target_global, target_regions = encode_regions(clip, clip.preprocess_images(images), net.grid)
    source_global, source_regions = encode_regions(clip, clip.preprocess_images(views.sources), net.grid)
    truth = layer_norm_targets(target_regions)
    actions = clip.encode_texts(list(captions))
    with torch.inference_mode():
        own = net(source_regions, source_global, actions, views.boxes)
        other = net(source_regions, source_global, actions.roll(1, dims=0), views.boxes)
    mean = truth.mean(dim=0, keepdim=True).expand_as(truth)

    def per_view(predicted: torch.Tensor) -> np.ndarray:
        cos = F.cosine_similarity(predicted, truth, dim=-1)
        active = own.query_active.float()
        return ((cos * active).sum(dim=1) / active.sum(dim=1).clamp(min=1)).numpy()

    return {
        "predictor": per_view(own.predicted),
        "predictor, another view's action": per_view(other.predicted),
        "per-region mean": per_view(mean),
    }


def nearest_region_picture(
    source: np.ndarray,
    box: np.ndarray,
    predicted: torch.Tensor,
    active: torch.Tensor,
    bank_regions: torch.Tensor,
    bank_images: np.ndarray,
    grid: int,
) -> np.ndarray:
    """A picture of a prediction: the source view shrunk into its box on the target canvas, and every
    predicted region painted with the pixels of the bank region (any image, any position) whose
    layer-normalised feature is nearest by cosine. ``predicted`` ``[R, W]``, ``active`` ``[R]``,
    ``bank_regions`` ``[M, R, W]`` of ``bank_images`` ``[M, S, S, 3]``."""
    size = source.shape[0]
    cell = size // grid
    canvas = np.full_like(source, 255)
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 > x0 and y1 > y0:
        shrunk = F.interpolate(
            torch.from_numpy(source).permute(2, 0, 1)[None].float(),
            size=((y1 - y0) * cell, (x1 - x0) * cell),
            mode="bilinear",
            antialias=True,
        )
        canvas[y0 * cell : y1 * cell, x0 * cell : x1 * cell] = (
            shrunk[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        )
    bank = F.normalize(layer_norm_targets(bank_regions).reshape(-1, bank_regions.shape[-1]), dim=-1)
    wanted = F.normalize(predicted, dim=-1)
    for slot in torch.nonzero(active).flatten().tolist():
        best = int((bank @ wanted[slot]).argmax())
        image, region = divmod(best, grid * grid)
        (ry, rx), (sy, sx) = divmod(region, grid), divmod(slot, grid)
        canvas[sy * cell : (sy + 1) * cell, sx * cell : (sx + 1) * cell] = bank_images[image][
            ry * cell : (ry + 1) * cell, rx * cell : (rx + 1) * cell
        ]
    return canvas
