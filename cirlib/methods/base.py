"""One interface for every CIR method, and the registry behind ``cirlib eval --list-methods``.

A method turns queries (a reference image id plus text) into one embedding per query in the
CLIP image space; gallery images are encoded once with the method's CLIP and cached. Scores are
inner products. Methods see pixels and text only: :attr:`cirlib.data.types.Query.info` (the world's
edit diagnostics) is never read here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch

from cirlib.data.types import Gallery, Query
from cirlib.models.clip import CLIPModel
from cirlib.retrieval import EmbeddingCache, content_digest


class Method(ABC):
    """A composed-image-retrieval method over one CLIP.

    Subclasses set :attr:`name`, :attr:`zero_shot` and implement :meth:`encode_queries`."""

    name: ClassVar[str] = ""
    zero_shot: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, clip: CLIPModel, cache: EmbeddingCache | None = None) -> None:
        self.clip = clip
        self.cache = cache if cache is not None else EmbeddingCache()

    # ---------------------------------------------------------------- images
    def gallery_features(self, gallery: Gallery) -> torch.Tensor:
        """Normalised image embeddings of the whole gallery, cached by model and pixel content."""
        if gallery.images is None:
            raise ValueError("this gallery has no pixels in memory; load its images first")
        images = gallery.images
        key = {"model": self.clip.hash, "images": content_digest(images)}
        array = self.cache.get_or_compute("images", key, lambda: self.clip.encode_images(images).numpy())
        return torch.from_numpy(np.ascontiguousarray(array))

    def reference_features(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        """Embeddings of the queries' reference images, looked up in the cached gallery features."""
        features = self.gallery_features(gallery)
        return features[[gallery.index(q.reference) for q in queries]]

    # ---------------------------------------------------------------- queries
    @abstractmethod
    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        """L2-normalised query embeddings ``[Q, D]`` comparable with :meth:`gallery_features`."""

    def score(self, queries: Sequence[Query], gallery: Gallery) -> np.ndarray:
        """Similarities ``[Q, G]`` (higher is better) of each query to each gallery image."""
        if not queries:
            return np.zeros((0, len(gallery)), dtype=np.float32)
        with torch.inference_mode():
            q = self.encode_queries(queries, gallery)
            g = self.gallery_features(gallery)
            return (q @ g.T).numpy().astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, clip={self.clip!r})"


#: name -> factory(profile, **options) -> Method; filled by :func:`register`.
METHODS: dict[str, Callable[..., Method]] = {}
#: name -> (profiles it runs in, zero-shot?, one-line description)
METHOD_INFO: dict[str, tuple[tuple[str, ...], bool, str]] = {}


def register(
    name: str, *, profiles: tuple[str, ...] = ("tiny", "paper"), zero_shot: bool = True, description: str = ""
) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Register a method factory under a stable name."""

    def decorator(factory: Callable[..., Method]) -> Callable[..., Method]:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        METHODS[name] = factory
        METHOD_INFO[name] = (profiles, zero_shot, description)
        return factory

    return decorator


def list_methods(profile: str | None = None) -> list[str]:
    return [n for n, (profiles, _, _) in METHOD_INFO.items() if profile is None or profile in profiles]


def build_method(name: str, profile: str = "tiny", **options) -> Method:
    """Build a registered method for a profile (tiny: committed checkpoints; paper: local weights)."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(list_methods())}")
    profiles = METHOD_INFO[name][0]
    if profile not in profiles:
        raise ValueError(f"method {name!r} runs in profiles {profiles}, not {profile!r}")
    return METHODS[name](profile=profile, **options)
