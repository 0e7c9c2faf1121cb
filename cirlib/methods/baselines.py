"""Zero-shot baselines: image only, text only, image + text sum, and textual inversion (phi).

* ``image``: the reference image alone (measures how much the gallery rewards "looks like the
  reference"; a valid benchmark keeps it low).
* ``text``: the modification text alone (measures how much the words alone solve).
* ``sum``: ``normalize(f_img(ref) + f_txt(text))``, the simplest late fusion.
* ``pic2word`` / ``searle``: a textual-inversion network phi maps the reference image feature to a
  pseudo-word token ``$``; the query is the text encoder's embedding of a prompt such as
  "a photo of $ that {text}" (Pic2Word, CVPR 2023; SEARLE, ICCV 2023). Both phi networks are
  trained on images only.

Several captions (FashionIQ) are joined as :attr:`Method.caption_join` says (default: both orders,
the two embeddings averaged, as SEARLE does); :func:`cirlib.methods.base.caption_variants` is the
one place that decides this.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from cirlib.data.types import Gallery, Query
from cirlib.methods.base import Method
from cirlib.models.clip import PLACEHOLDER, CLIPModel
from cirlib.retrieval import EmbeddingCache

TEXT_PROMPT = "{text}"
PIC2WORD_PROMPT = "a photo of $ that {text}"


def fill(prompt: str, text: str) -> str:
    """The prompt with ``{text}`` replaced (``str.format`` would choke on braces in user text)."""
    return prompt.replace("{text}", text)


class ImageOnly(Method):
    name = "image"
    description = "reference image embedding alone"

    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        return self.reference_features(queries, gallery)


class TextOnly(Method):
    name = "text"
    description = "modification text embedding alone"

    def __init__(
        self, clip: CLIPModel, prompt: str = TEXT_PROMPT, cache: EmbeddingCache | None = None
    ) -> None:
        super().__init__(clip, cache)
        self.prompt = prompt

    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        return self.encode_captions(
            queries, lambda texts, _: self.text_features([fill(self.prompt, t) for t in texts])
        )


class SumFusion(Method):
    name = "sum"
    description = "normalize(image embedding + text embedding)"

    def __init__(
        self,
        clip: CLIPModel,
        prompt: str = TEXT_PROMPT,
        image_weight: float = 0.5,
        cache: EmbeddingCache | None = None,
    ) -> None:
        super().__init__(clip, cache)
        self.prompt = prompt
        self.image_weight = image_weight

    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        image = self.reference_features(queries, gallery)
        text = self.encode_captions(
            queries, lambda texts, _: self.text_features([fill(self.prompt, t) for t in texts])
        )
        return F.normalize(self.image_weight * image + (1 - self.image_weight) * text, dim=-1)


class TextualInversion(Method):
    """Pic2Word / SEARLE-style composition through a pseudo-word token produced by ``phi``."""

    name = "pic2word"
    description = "phi(reference) as pseudo-word $ in 'a photo of $ that {text}'"

    def __init__(
        self,
        clip: CLIPModel,
        phi: torch.nn.Module,
        prompt: str = PIC2WORD_PROMPT,
        cache: EmbeddingCache | None = None,
        name: str | None = None,
        phi_input_normalized: bool = True,
    ) -> None:
        super().__init__(clip, cache)
        if prompt.count(PLACEHOLDER) != 1 or "{text}" not in prompt:
            raise ValueError(f"prompt {prompt!r} must contain {PLACEHOLDER!r} once and '{{text}}'")
        self.phi = phi.eval()
        self.prompt = prompt
        #: Our phis take L2-normalised image features; every released phi takes raw ones.
        self.phi_input_normalized = phi_input_normalized
        if name is not None:
            self.name = name  # type: ignore[misc]

    def pseudo_tokens(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        features = self.reference_features(queries, gallery, normalized=self.phi_input_normalized)
        device = next(self.phi.parameters()).device
        with torch.inference_mode():
            return self.phi(features.to(device)).float().cpu()

    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        tokens = self.pseudo_tokens(queries, gallery)

        def encode(texts: list[str], owner: torch.Tensor) -> torch.Tensor:
            prompts = [fill(self.prompt, t) for t in texts]
            return self.pseudo_text_features(prompts, tokens[owner])

        return self.encode_captions(queries, encode)
