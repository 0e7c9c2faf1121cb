"""PrediCIR as a CIR method: predict the target content the reference lacks, compose a pseudo-word.

At query time the reference image is the *source view* and the modification text the *action*: the
trained :class:`~cirlib.models.predicir.PrediCIRNet` predicts the target's features in the regions
the reference is taken to lack (see :data:`~cirlib.models.predicir.INFERENCE_BOXES`), fuses them with
the reference's own content into a pseudo-word ``$`` and the query is the text embedding of
"a photo of $ that {text}", as Pic2Word composes (the paper names the training prompt "a photo of
S*"; for retrieval we keep the project's shared composition prompt so that the comparison with the
Pic2Word-style phi isolates the pseudo-word).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cirlib.data.types import Gallery, Query
from cirlib.methods.base import Method, caption_variants
from cirlib.methods.baselines import PIC2WORD_PROMPT, fill
from cirlib.models.clip import PLACEHOLDER, CLIPModel
from cirlib.models.predicir import (
    INFERENCE_BOXES,
    PrediCIRNet,
    PrediCIROutput,
    encode_regions,
    inference_box,
    layer_norm_targets,
)
from cirlib.retrieval import EmbeddingCache, content_digest


class ForeignNetworkError(ValueError):
    """A PrediCIR network meets a CLIP other than the one it was trained with."""


class PrediCIR(Method):
    """PrediCIR over one frozen CLIP and its trained predictor + alignment network."""

    name = "predicir"
    description = (
        "PrediCIR: predicted target content + reference -> pseudo-word $ in 'a photo of $ that {text}'"
    )

    def __init__(
        self,
        clip: CLIPModel,
        net: PrediCIRNet,
        *,
        prompt: str = PIC2WORD_PROMPT,
        box: str = "center",
        cache: EmbeddingCache | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(clip, cache)
        if prompt.count(PLACEHOLDER) != 1 or "{text}" not in prompt:
            raise ValueError(f"prompt {prompt!r} must contain {PLACEHOLDER!r} once and '{{text}}'")
        if box not in INFERENCE_BOXES:
            raise ValueError(f"box must be one of {INFERENCE_BOXES}, got {box!r}")
        if net.clip_hash is not None and net.clip_hash != clip.hash:
            raise ForeignNetworkError(
                f"this PrediCIR network was trained with CLIP {net.clip_hash}, not with {clip.hash}"
            )
        self.net = net.eval()
        self.prompt = prompt
        self.box = box
        if name is not None:
            self.name = name  # type: ignore[misc]

    def with_options(self, **options) -> PrediCIR:
        """A copy with other settings (``box``, ``prompt``, ``name``) sharing network, CLIP and caches."""
        unknown = set(options) - {"box", "prompt", "name"}
        if unknown:
            raise TypeError(f"unknown PrediCIR options: {', '.join(sorted(unknown))}")
        other = copy.copy(self)
        for key, value in options.items():
            setattr(other, key, value)
        if other.box not in INFERENCE_BOXES:
            raise ValueError(f"box must be one of {INFERENCE_BOXES}, got {other.box!r}")
        return other

    # ------------------------------------------------------------------ the source view
    def reference_regions(
        self, queries: Sequence[Query], gallery: Gallery
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Global features ``[Q, D]`` and region features ``[Q, R, W]`` of the queries' references,
        cached per CLIP, compute signature, region grid and reference content."""
        digests = self.reference_digests(queries, gallery)  # decoding files only on a cache miss
        grid = self.net.grid
        key = {"grid": grid, "images": content_digest(digests)}

        def compute() -> np.ndarray:
            images, _ = self.reference_images(queries, gallery)
            rows = []
            for start in range(0, len(images), 256):
                batch = images[start : start + 256]
                pixels = self.clip.preprocess_images(
                    np.stack(batch) if self.clip.preprocess == "tensor" else batch
                )
                global_feature, regions = encode_regions(self.clip, pixels, grid)
                rows.append(torch.cat([global_feature, regions.flatten(1)], dim=1))
            return torch.cat(rows).numpy()

        array = self._cached_features("reference-regions", key, compute)
        d = self.clip.embed_dim
        return array[:, :d], array[:, d:].reshape(len(queries), grid * grid, -1)

    def predict(
        self, global_feature: torch.Tensor, regions: torch.Tensor, texts: Sequence[str]
    ) -> PrediCIROutput:
        """The network's output for references (global and region features) and action texts."""
        action = self.text_features(texts)
        device = next(self.net.parameters()).device
        with torch.inference_mode():
            output = self.net(
                regions.to(device),
                global_feature.to(device),
                action.to(device),
                inference_box(self.box, self.net.grid),
            )
        return PrediCIROutput(*(t.float().cpu() for t in output))

    def predict_queries(self, queries: Sequence[Query], gallery: Gallery) -> PrediCIROutput:
        """The output for each query's first caption variant (figures and diagnostics)."""
        global_feature, regions = self.reference_regions(queries, gallery)
        texts = [caption_variants(q, self.caption_join, self.caption_strip)[0] for q in queries]
        return self.predict(global_feature, regions, texts)

    def pseudo_tokens(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        """The pseudo-word ``[Q, W]`` of each query's first caption variant (diagnostics)."""
        return self.predict_queries(queries, gallery).token

    def gallery_regions(self, gallery: Gallery) -> torch.Tensor:
        """Region features ``[G, R, W]`` of an in-memory gallery (what predictions are compared with)."""
        if gallery.images is None:
            raise ValueError("gallery_regions needs a gallery with pixels in memory")
        images, grid = gallery.images, self.net.grid
        key = {"grid": grid, "images": gallery.pixel_digest()}

        def compute() -> np.ndarray:
            chunks = [
                encode_regions(self.clip, self.clip.preprocess_images(images[i : i + 512]), grid)[1]
                for i in range(0, len(images), 512)
            ]
            return torch.cat(chunks).numpy()

        return self._cached_features("gallery-regions", key, compute)

    def nearest_to_prediction(
        self, queries: Sequence[Query], gallery: Gallery, k: int = 3, *, references: Gallery | None = None
    ) -> list[list[str]]:
        """For each query, the ``k`` gallery images whose features in the predicted regions are closest
        (mean cosine over the used mask slots, layer-normalised features) to what the network predicted.
        ``references``: where the queries' references are, when not in ``gallery`` (a drawn scene)."""
        output = self.predict_queries(queries, gallery if references is None else references)
        bank = F.normalize(layer_norm_targets(self.gallery_regions(gallery)), dim=-1)  # [G, R, W]
        predicted = F.normalize(output.predicted, dim=-1)  # [Q, R, W]
        active = output.query_active.float()  # [Q, R]
        cos = torch.einsum("qrw,grw->qgr", predicted, bank)
        score = (cos * active[:, None, :]).sum(-1) / active.sum(-1, keepdim=True).clamp(min=1)
        top = score.topk(min(k, len(gallery)), dim=1).indices
        return [[gallery.ids[j] for j in row] for row in top.tolist()]

    # ------------------------------------------------------------------ retrieval
    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        global_feature, regions = self.reference_regions(queries, gallery)

        def encode(texts: list[str], owner: torch.Tensor) -> torch.Tensor:
            tokens = self.predict(global_feature[owner], regions[owner], texts).token
            return self.pseudo_text_features([fill(self.prompt, t) for t in texts], tokens)

        return self.encode_captions(queries, encode)
