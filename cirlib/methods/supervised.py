"""A *supervised* reference: a CLIP4Cir-style Combiner trained on world CIR triplets.

This is NOT a zero-shot method. It exists for the primer's "supervised vs zero-shot" comparison
and is registered with ``zero_shot=False``; it is trained on the world's *train* split triplets
(reference, text, target), which no zero-shot method ever sees. The CLIP stays frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cirlib.config import progress_bar
from cirlib.data.types import Gallery, Query
from cirlib.methods.base import Method
from cirlib.models.clip import CLIPModel
from cirlib.models.tiny import MICRO, default_root, train_command
from cirlib.retrieval import EmbeddingCache


class Combiner(nn.Module):
    """Combiner of Baldrati et al. (CLIP4Cir): a learned residual mix of image and text features,
    with a learned gate that keeps a convex combination of the two inputs."""

    def __init__(self, dim: int, hidden: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.image_proj = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.text_proj = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.mix = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.gate = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid()
        )
        self.arch = {"dim": dim, "hidden": hidden, "dropout": dropout}
        #: :attr:`CLIPModel.hash` of the CLIP this Combiner was trained on.
        self.clip_hash: str | None = None

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.image_proj(image), self.text_proj(text)], dim=-1)
        g = self.gate(h)
        return F.normalize(self.mix(h) + g * image + (1 - g) * text, dim=-1)


@dataclass(frozen=True)
class CombinerTrainConfig:
    steps: int = 1500
    batch_size: int = 256
    lr: float = 5e-4
    temperature: float = 0.07
    hidden: int = 512


def train_combiner(
    clip: CLIPModel,
    references: np.ndarray,
    texts: Sequence[str],
    targets: np.ndarray,
    config: CombinerTrainConfig,
    seed: int,
    progress: bool = True,
) -> Combiner:
    """Train on triplets (supervised): InfoNCE between composed features and target features."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ref = clip.encode_images(references)
    tgt = clip.encode_images(targets)
    txt = clip.encode_texts(list(texts))
    model = Combiner(clip.embed_dim, config.hidden)
    model.clip_hash = clip.hash
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    model.train()
    for _ in progress_bar(range(config.steps), desc="train combiner (supervised)", show=progress):
        idx = torch.randint(0, len(ref), (config.batch_size,), generator=generator)
        out = model(ref[idx], txt[idx])
        logits = out @ tgt[idx].T / config.temperature
        loss = F.cross_entropy(logits, torch.arange(len(idx)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


class SupervisedCombiner(Method):
    name = "supervised"
    zero_shot = False
    description = "SUPERVISED reference: CLIP4Cir-style Combiner trained on world triplets"

    def __init__(self, clip: CLIPModel, combiner: Combiner, cache: EmbeddingCache | None = None) -> None:
        super().__init__(clip, cache)
        self.combiner = combiner.eval()

    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        image = self.reference_features(queries, gallery)
        text = self.encode_captions(queries, lambda texts, _: self.text_features(texts))
        with torch.inference_mode():
            return self.combiner(image, text)


COMBINER_NAME = "tiny-combiner-supervised"


@dataclass(frozen=True)
class CombinerRecipe:
    n_triplets: int = 20_000
    data_seed: int = 3  # world *train* split triplets, disjoint from the val/test streams
    seed: int = 0
    train: CombinerTrainConfig = CombinerTrainConfig()


COMBINER_RECIPE = CombinerRecipe()
if MICRO:  # seconds-long recipe for pipeline tests, see cirlib.models.tiny
    COMBINER_RECIPE = CombinerRecipe(n_triplets=256, train=CombinerTrainConfig(steps=5, batch_size=64))


def combiner_config(clip: CLIPModel) -> dict:
    """The recipe plus the CLIP it is trained on: the checkpoint's config (and cache key)."""
    return {**asdict(COMBINER_RECIPE), "clip_hash": clip.hash}


def train_tiny_combiner(clip: CLIPModel, progress: bool = True) -> Combiner:
    """Train the supervised Combiner of the tiny profile on world train-split triplets."""
    from cirlib.world import training_triplets

    data = training_triplets(COMBINER_RECIPE.n_triplets, COMBINER_RECIPE.data_seed)
    with torch.random.fork_rng():
        return train_combiner(
            clip,
            data.references,
            data.texts,
            data.targets,
            COMBINER_RECIPE.train,
            COMBINER_RECIPE.seed,
            progress,
        )


def load_tiny_combiner(clip: CLIPModel) -> Combiner:
    """The committed supervised Combiner for this CLIP, else trained and cached."""
    from cirlib.models import zoo

    model = zoo.load_or_train(
        COMBINER_NAME,
        lambda: train_tiny_combiner(clip),
        config=combiner_config(clip),
        seed=COMBINER_RECIPE.seed,
        command=train_command(COMBINER_NAME),
        root=default_root(),
    )
    assert isinstance(model, Combiner)
    return model
