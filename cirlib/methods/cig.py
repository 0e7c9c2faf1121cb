"""CIG: generative zero-shot CIR ("Generative Zero-Shot Composed Image Retrieval", CVPR 2025).

A textual-inversion method (phi maps an image embedding to a pseudo-word ``$``) gets a second view
of the query: a *pseudo-target image* generated from the reference's token and the modification text
(:mod:`cirlib.generation.composed`). The pseudo-target is inverted with the same phi, composed with
the same text, and the two text embeddings are fused (official ``SEARLE_CIG`` code)::

    f = normalize(w * f_ref + (1 - w) * f_gen),   f_x = CLIP_text("a photo of $ that {text}", $ = phi(x))

The paper compares this *text-level* fusion with two alternatives, both implemented here:

* ``image``: ``normalize(w * f_ref + (1 - w) * CLIP_image(pseudo-target))`` (the generated image's
  own embedding, no inversion);
* ``token``: one prompt with ``$ = w * phi(ref) + (1 - w) * phi(pseudo-target)``.

With several pseudo-targets per query their features (or tokens) are averaged before fusion. ``w``
is a per-split constant in the official code (:data:`OFFICIAL_FUSION_WEIGHTS`); in the world it is
chosen on the val split (notebook 02).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from cirlib.data.types import Gallery, Query
from cirlib.generation.composed import CIG_SEED, PseudoTargetCache, PseudoTargetGenerator, seeds_for
from cirlib.methods.base import query_batch_key
from cirlib.methods.baselines import PIC2WORD_PROMPT, TextualInversion, fill
from cirlib.models.clip import CLIPModel
from cirlib.retrieval import EmbeddingCache, content_digest

FUSIONS: tuple[str, ...] = ("text", "image", "token")

#: ``w`` (weight of the reference-based embedding) hard-coded per split in the official
#: ``SEARLE_CIG`` code (REFERENCE.md); CIRCO val runs without fusion there (w = 1).
OFFICIAL_FUSION_WEIGHTS: dict[tuple[str, str], float] = {
    ("cirr", "test"): 0.5,
    ("circo", "test"): 0.7,
    ("cirr", "val"): 0.85,
    ("fashioniq", "val"): 0.9,
    ("circo", "val"): 1.0,
}


def official_fusion_weight(form: str, split: str) -> float:
    """The official ``w`` for a benchmark split (FashionIQ test has none: its val value is used)."""
    key = (form, "val" if (form, split) == ("fashioniq", "test") else split)
    if key not in OFFICIAL_FUSION_WEIGHTS:
        raise KeyError(f"no official CIG fusion weight for {form} {split}; pass one explicitly")
    return OFFICIAL_FUSION_WEIGHTS[key]


class CIG(TextualInversion):
    """Textual inversion plus a generated pseudo-target, fused at text, image or token level."""

    name = "cig"
    description = "phi(reference) and phi(generated pseudo-target), text embeddings fused"
    #: How several captions (FashionIQ) become the generation prompt's text: one forward join, as the
    #: prompt must be one sentence (retrieval still uses :attr:`caption_join`).
    generation_join: ClassVar[str] = " and "

    def __init__(
        self,
        clip: CLIPModel,
        phi: torch.nn.Module,
        generator: PseudoTargetGenerator,
        *,
        fusion: str = "text",
        weight: float = 0.85,
        n_images: int = 1,
        base_seed: int = CIG_SEED,
        prompt: str = PIC2WORD_PROMPT,
        cache: EmbeddingCache | None = None,
        name: str | None = None,
        phi_input_normalized: bool = True,
    ) -> None:
        super().__init__(clip, phi, prompt, cache, name, phi_input_normalized)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"fusion weight w must lie in [0, 1], got {weight}")
        if n_images < 1:
            raise ValueError(f"n_images must be at least 1, got {n_images}")
        self.generator = generator
        self.fusion, self.weight, self.n_images, self.base_seed = fusion, weight, n_images, base_seed
        self.pseudo_target_cache = PseudoTargetCache(generator, self.cache)
        self._views_memo: dict[tuple, dict[str, torch.Tensor]] = {}

    def with_options(self, **options) -> CIG:
        """A copy with other fusion options (``fusion``, ``weight``, ``n_images``, ``base_seed``, ``name``)
        sharing this one's models and caches: sweeps generate each pseudo-target once."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)  # the same models, caches and memos (gallery features too)
        for key, value in options.items():
            if key not in ("fusion", "weight", "n_images", "base_seed", "name"):
                raise TypeError(f"unknown CIG option {key!r}")
            setattr(other, key, value)
        if other.fusion not in FUSIONS or not 0.0 <= other.weight <= 1.0 or other.n_images < 1:
            raise ValueError(f"invalid CIG options {options}")
        return other

    # ------------------------------------------------------------------ pseudo-targets
    def generation_texts(self, queries: Sequence[Query]) -> list[str]:
        """The text each query's pseudo-target is generated from."""
        return [self.generation_join.join(t.strip() for t in q.texts if t.strip()) for q in queries]

    def pseudo_targets(self, queries: Sequence[Query], gallery: Gallery) -> np.ndarray:
        """Generated pseudo-targets ``[Q, n_images, H, W, 3]`` (uint8), from the cache when present."""
        references, digests = self.reference_images(queries, gallery)
        texts = self.generation_texts(queries)
        seeds = seeds_for(self.n_images, self.base_seed)
        flat = self.pseudo_target_cache.get(
            [r for r in references for _ in seeds],
            [d for d in digests for _ in seeds],
            [t for t in texts for _ in seeds],
            [s for _ in queries for s in seeds],
        )
        return flat.reshape(len(queries), self.n_images, *flat.shape[1:])

    # ------------------------------------------------------------------ retrieval
    def _composed(self, queries: Sequence[Query], tokens: torch.Tensor) -> torch.Tensor:
        """Normalised ``"a photo of $ that {text}"`` embeddings with ``$ = tokens[q]``."""

        def encode(texts: list[str], owner: torch.Tensor) -> torch.Tensor:
            return self.pseudo_text_features([fill(self.prompt, t) for t in texts], tokens[owner])

        return self.encode_captions(queries, encode)

    def pseudo_target_features(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        """Unnormalised CLIP features ``[Q, n_images, D]`` of the pseudo-targets, cached on disk
        (:meth:`Method.generated_image_features`)."""
        return self.generated_image_features(
            queries,
            gallery,
            self.pseudo_target_cache.generator.signature,
            self.generation_texts(queries),
            seeds_for(self.n_images, self.base_seed),
            lambda: self.pseudo_targets(queries, gallery),
        )

    def _invert(self, raw_features: torch.Tensor) -> torch.Tensor:
        """phi tokens ``[N, W]`` of generated images' raw CLIP features (normalised first if phi
        expects it)."""
        features = F.normalize(raw_features, dim=-1) if self.phi_input_normalized else raw_features
        device = next(self.phi.parameters()).device
        with torch.inference_mode():
            return self.phi(features.to(device)).float().cpu()

    def _views(self, queries: Sequence[Query], gallery: Gallery, generated: bool) -> dict[str, torch.Tensor]:
        """The fusion-independent parts of a query batch: the reference's token and composed
        embedding, and (``generated``) the pseudo-targets' tokens, composed and image embeddings.
        Memoised per query batch and settings, and shared by :meth:`with_options` copies, so that a
        sweep over fusion levels and weights computes each part once."""
        key = (
            *query_batch_key(queries, gallery),
            self.n_images,
            self.base_seed,
            self.prompt,
            self.caption_join,
            self.caption_strip or "",
            content_digest(self.generator.signature),
        )
        views = self._views_memo.setdefault(key, {})
        if len(self._views_memo) > 16:  # keep memory bounded in long sessions
            self._views_memo.pop(next(iter(self._views_memo)))
        if "ref_tokens" not in views:
            views["ref_tokens"] = self.pseudo_tokens(queries, gallery)
            views["f_ref"] = self._composed(queries, views["ref_tokens"])
        if generated and "gen_tokens" not in views:
            raw = self.pseudo_target_features(queries, gallery)
            q, n = raw.shape[:2]
            flat = raw.reshape(q * n, -1)
            views["gen_image"] = F.normalize(F.normalize(flat, dim=-1).view(q, n, -1).mean(1), dim=-1)
            views["gen_tokens"] = self._invert(flat).view(q, n, -1)
            views["f_gen"] = F.normalize(
                sum(self._composed(queries, views["gen_tokens"][:, j]) for j in range(n)) / n, dim=-1
            )
        return views

    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        w = self.weight
        views = self._views(queries, gallery, generated=w < 1.0)
        if w == 1.0:  # no fusion (the official CIRCO val setting): nothing to generate
            return views["f_ref"]
        if self.fusion == "token":
            return self._composed(queries, w * views["ref_tokens"] + (1 - w) * views["gen_tokens"].mean(1))
        gen = views["gen_image"] if self.fusion == "image" else views["f_gen"]
        if w == 0.0:
            return gen
        return F.normalize(w * views["f_ref"] + (1 - w) * gen, dim=-1)


def fusion_sweep(
    method: CIG,
    benchmark,
    weights: Sequence[float],
    fusions: Sequence[str] = FUSIONS,
    metric: str | None = None,
):
    """Headline metric (percent) of ``method`` for every fusion level and weight ``w`` on one
    benchmark: a DataFrame indexed by ``w`` with one column per fusion level. The pseudo-targets
    are generated once (cached) and reused by every cell."""
    import pandas as pd

    from cirlib.evaluation import HEADLINE, evaluate

    metric = metric or HEADLINE[benchmark.form]
    table = {
        fusion: {
            w: evaluate(method.with_options(fusion=fusion, weight=w), benchmark).summary[metric]
            for w in weights
        }
        for fusion in fusions
    }
    frame = pd.DataFrame(table)
    frame.index.name = "w"
    return frame
