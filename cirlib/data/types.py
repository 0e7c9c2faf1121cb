"""The types every method and metric works on: queries, galleries and benchmarks.

One shape serves the world's benchmarks and the real ones. A query names its reference image by
gallery id; the protocol (``form``) says how the official scorer of that benchmark treats it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Form = Literal["cirr", "circo", "fashioniq"]
FORMS: tuple[str, ...] = ("cirr", "circo", "fashioniq")


@dataclass(frozen=True)
class Query:
    """One composed query.

    ``texts`` holds one relative caption (CIRR, CIRCO) or two (FashionIQ). ``target`` is the
    labelled target (what the official protocol scores), ``ground_truth`` every valid target the
    benchmark knows (CIRCO: all annotated; the world: complete). ``subset`` is the CIRR-style
    visually similar set including the reference. ``info`` holds diagnostics (edit kinds, ...);
    methods must never read it."""

    qid: str
    reference: str
    texts: tuple[str, ...]
    target: str | None
    ground_truth: tuple[str, ...] = ()
    subset: tuple[str, ...] | None = None
    category: str = "all"
    info: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def text(self) -> str:
        """The captions joined the simplest way ("c1 and c2"); methods may join them otherwise."""
        return " and ".join(t.strip() for t in self.texts if t.strip())


@dataclass
class Gallery:
    """Images with ids; pixels are in memory (world) or loaded from ``paths`` (real data)."""

    ids: list[str]
    images: np.ndarray | None = None  # uint8 [N, H, W, 3]
    paths: list[str] | None = None
    scenes: list | None = None  # world only: symbolic scenes for diagnostics, never for methods

    def __post_init__(self) -> None:
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("gallery ids must be unique")
        if self.images is not None and len(self.images) != len(self.ids):
            raise ValueError(f"gallery has {len(self.ids)} ids but {len(self.images)} images")
        self._index = {g: i for i, g in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, image_id: str) -> int:
        try:
            return self._index[image_id]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in the gallery") from None

    def pixels(self, image_ids: list[str]) -> np.ndarray:
        if self.images is None:
            raise ValueError("this gallery holds no pixels in memory")
        return self.images[[self.index(i) for i in image_ids]]

    def pixel_digest(self) -> str:
        """The content digest of the in-memory pixels (the key of cached gallery embeddings), hashed
        once per array: hashing a 7,000-image gallery takes about 0.1 s, and sweeps ask for it on every
        evaluation. The array is made read-only on the first call, so the digest cannot go stale
        through an in-place edit; assigning another array to ``images`` hashes that one."""
        from cirlib.retrieval import content_digest  # retrieval imports this module

        if self.images is None:
            raise ValueError("this gallery holds no pixels in memory")
        memo = self.__dict__.get("_pixel_digest")
        if memo is None or memo[0] is not self.images:
            self.images.flags.writeable = False
            memo = (self.images, content_digest(self.images))
            self._pixel_digest = memo
        return memo[1]


@dataclass
class Benchmark:
    """Queries over one gallery per category, scored with the protocol of ``form``."""

    name: str
    form: Form
    split: str
    queries: list[Query]
    galleries: dict[str, Gallery]
    version: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"unknown benchmark form {self.form!r}")
        for q in self.queries:
            if q.category not in self.galleries:
                raise ValueError(f"query {q.qid} has category {q.category!r} with no gallery")

    @property
    def categories(self) -> list[str]:
        return list(self.galleries)

    def queries_of(self, category: str) -> list[Query]:
        return [q for q in self.queries if q.category == category]

    def subsample(self, n: int, seed: int = 0) -> Benchmark:
        """The first ``n`` queries of a seeded permutation (galleries unchanged): smoke runs."""
        if n >= len(self.queries):
            return self
        order = np.random.default_rng(seed).permutation(len(self.queries))[:n]
        queries = [self.queries[i] for i in sorted(order)]
        return Benchmark(
            self.name, self.form, self.split, queries, self.galleries, self.version, dict(self.meta)
        )
