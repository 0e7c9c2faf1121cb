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
import torch.nn.functional as F

from cirlib.data.types import Gallery, Query
from cirlib.models.clip import CLIPModel
from cirlib.retrieval import EmbeddingCache, content_digest, file_fingerprints

#: How a query with two captions (FashionIQ) becomes text. ``both_orders`` (default) encodes
#: "c1 and c2" and "c2 and c1" and averages the two embeddings, as SEARLE's FashionIQ evaluation and
#: CIG's code do; ``forward`` / ``reversed`` keep one order; ``first`` / ``second`` one caption.
#: Plain concatenation is known to cost reproductions a lot (sotayang/SEIZE#2, REFERENCE.md), so the
#: choice is explicit and recorded with every result. Queries with one caption ignore it.
CAPTION_JOINS: tuple[str, ...] = ("both_orders", "forward", "reversed", "first", "second")


def caption_variants(query: Query, join: str = "both_orders", strip: str | None = None) -> list[str]:
    """The text(s) a method encodes for a query (embeddings averaged by
    :func:`mean_over_caption_variants`); see :data:`CAPTION_JOINS`. Each caption is stripped of
    whitespace, or of the characters ``strip`` (SEARLE and LinCIR strip ``".?, "`` from FashionIQ
    captions); empty captions (FashionIQ has a few) are skipped."""
    if join not in CAPTION_JOINS:
        raise ValueError(f"unknown caption join {join!r}; expected one of {', '.join(CAPTION_JOINS)}")
    cleaned = [t.strip(strip) for t in query.texts]
    texts = [t for t in cleaned if t]
    if len(texts) <= 1:
        return [texts[0] if texts else ""]
    if join == "first" or join == "second":
        return [cleaned[0 if join == "first" else 1] or texts[0]]
    forward, backward = " and ".join(texts), " and ".join(reversed(texts))
    return {"both_orders": [forward, backward], "forward": [forward], "reversed": [backward]}[join]


def mean_over_caption_variants(
    queries: Sequence[Query], encode, join: str = "both_orders", strip: str | None = None
) -> torch.Tensor:
    """Encode every caption variant of every query in one batch, average per query, normalise."""
    variants = [caption_variants(q, join, strip) for q in queries]
    flat = [v for vs in variants for v in vs]
    owner = torch.tensor([i for i, vs in enumerate(variants) for _ in vs])
    features = encode(flat, owner)
    summed = torch.zeros(len(queries), features.shape[1]).index_add_(0, owner, features)
    return F.normalize(summed, dim=-1)


def query_batch_key(queries: Sequence[Query], gallery: Gallery) -> tuple:
    """An in-memory memo key of a query batch against a gallery (ids, references, texts). A tuple,
    not a :func:`content_digest`: hashing 1,000 queries' strings in Python costs about 30 ms, and
    every score of a sweep asks for its batch's memoised parts."""
    return tuple((q.qid, q.reference, tuple(q.texts)) for q in queries), tuple(gallery.ids)


class Method(ABC):
    """A composed-image-retrieval method over one CLIP.

    Subclasses set :attr:`name`, :attr:`zero_shot` and implement :meth:`encode_queries`."""

    name: ClassVar[str] = ""
    zero_shot: ClassVar[bool] = True
    description: ClassVar[str] = ""
    #: How two captions (FashionIQ) become text: see :data:`CAPTION_JOINS`.
    caption_join: str = "both_orders"
    #: Characters stripped from each caption (None: whitespace), see ``caption_variants``.
    caption_strip: str | None = None

    def __init__(self, clip: CLIPModel, cache: EmbeddingCache | None = None) -> None:
        self.clip = clip
        self.cache = cache if cache is not None else EmbeddingCache()
        self._memo: dict[str, torch.Tensor] = {}  # the last file gallery's raw features

    # ---------------------------------------------------------------- images
    #: Images per cached shard of a file gallery: an interrupted encoding resumes at the first
    #: shard not on disk. 4,096 images of ViT-L/14 are 12 MiB of float32 features.
    shard_size: ClassVar[int] = 4096
    #: DataLoader settings for file galleries (the CLI sets them from --batch-size / --workers).
    batch_size: int = 64
    num_workers: int = 0

    def raw_gallery_features(self, gallery: Gallery) -> torch.Tensor:
        """Unnormalised image embeddings ``[G, D]`` of the whole gallery, cached per model, compute
        signature and content: pixel bytes for in-memory galleries; for file galleries, each shard
        keyed by its files' ids, sizes and modification times (re-reading 100k files just to hash
        them would cost as much as encoding them)."""
        if gallery.images is not None:
            images = gallery.images
            return self._cached_features(
                "image-features",
                {"images": gallery.pixel_digest()},
                lambda: self.clip.encode_images(images, normalize=False).numpy(),
            )
        if gallery.paths is None:
            raise ValueError("this gallery has neither pixels in memory nor image paths")
        key_base = {"model": self.clip.hash, **self.clip.compute_signature}
        stats = file_fingerprints(gallery.paths)
        # Evaluation scores queries in chunks: keep a file gallery's features in memory rather than
        # re-reading (and re-verifying) every shard from the cache for each chunk.
        memo_key = content_digest([key_base, gallery.ids, stats])
        if memo_key not in self._memo:
            self._memo = {memo_key: self._encode_file_gallery(gallery, key_base, stats)}
        return self._memo[memo_key]

    def _encode_file_gallery(self, gallery: Gallery, key_base: dict, stats: list) -> torch.Tensor:
        shards = []
        starts = range(0, len(gallery), self.shard_size)
        for n, start in enumerate(starts):
            stop = min(start + self.shard_size, len(gallery))
            key = {**key_base, "files": content_digest([gallery.ids[start:stop], stats[start:stop]])}
            paths = gallery.paths[start:stop]
            desc = f"encode images {n + 1}/{len(starts)}"
            shards.append(
                self.cache.get_or_compute(
                    "image-features",
                    key,
                    lambda paths=paths, desc=desc: self.clip.encode_image_files(
                        paths,
                        self.batch_size,
                        num_workers=self.num_workers,
                        normalize=False,
                        desc=desc,
                    ).numpy(),
                )
            )
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(shards)))

    def gallery_features(self, gallery: Gallery) -> torch.Tensor:
        """L2-normalised image embeddings ``[G, D]`` of the whole gallery (see :meth:`raw_gallery_features`)."""
        return F.normalize(self.raw_gallery_features(gallery), dim=-1)

    def reference_features(
        self, queries: Sequence[Query], gallery: Gallery, *, normalized: bool = True
    ) -> torch.Tensor:
        """Embeddings of the queries' reference images, looked up in the cached gallery features
        (raw with ``normalized=False``: the released phi networks take unnormalised features)."""
        rows = [gallery.index(q.reference) for q in queries]
        if normalized:
            return self.gallery_features(gallery)[rows]
        return self.raw_gallery_features(gallery)[rows]

    def reference_digests(self, queries: Sequence[Query], gallery: Gallery) -> list[str]:
        """A content digest of each query's reference image, for cache keys, without decoding files:
        the pixels of an in-memory gallery; for a file gallery, path, size and modification time."""
        ids = [q.reference for q in queries]
        if gallery.images is not None:
            return [content_digest(p) for p in gallery.pixels(ids)]
        paths = self._reference_paths(ids, gallery)
        return [content_digest([str(p), s]) for p, s in zip(paths, file_fingerprints(paths))]

    def reference_images(
        self, queries: Sequence[Query], gallery: Gallery
    ) -> tuple[list[np.ndarray], list[str]]:
        """The queries' reference images (uint8 arrays; read from disk for file galleries) and their
        :meth:`reference_digests`."""
        ids = [q.reference for q in queries]
        if gallery.images is not None:
            pixels = gallery.pixels(ids)
            return list(pixels), [content_digest(p) for p in pixels]
        from PIL import Image

        images = []
        for path in self._reference_paths(ids, gallery):
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
        return images, self.reference_digests(queries, gallery)

    @staticmethod
    def _reference_paths(ids: list[str], gallery: Gallery) -> list[str]:
        if gallery.paths is None:
            raise ValueError("this gallery has neither pixels in memory nor image paths")
        return [gallery.paths[gallery.index(i)] for i in ids]

    # ---------------------------------------------------------------- queries
    def _cached_features(self, namespace: str, key: dict, compute: Callable[[], np.ndarray]) -> torch.Tensor:
        """``compute()`` through the embedding cache under ``namespace``, keyed by ``key`` plus this
        method's model hash and compute signature."""
        full_key = {"model": self.clip.hash, **self.clip.compute_signature, **key}
        return torch.from_numpy(np.ascontiguousarray(self.cache.get_or_compute(namespace, full_key, compute)))

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised CLIP text embeddings ``[N, D]`` of ``texts``, cached per model, compute
        signature and the texts themselves: sweeps and notebooks encode the same captions, prompts
        and plans many times, and tokenising and encoding them cost more than scoring."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.clip.embed_dim)
        return self._cached_features(
            "text-features",
            {"texts": content_digest(texts)},
            lambda: self.clip.encode_texts(texts).float().numpy(),
        )

    def pseudo_text_features(self, texts: Sequence[str], pseudo: torch.Tensor) -> torch.Tensor:
        """:meth:`CLIPModel.encode_texts_with_pseudo`, cached like :meth:`text_features` (the key adds
        the pseudo-word tokens' values)."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.clip.embed_dim)
        key = {
            "texts": content_digest(texts),
            "pseudo": content_digest(torch.as_tensor(pseudo, dtype=torch.float32)),
        }
        return self._cached_features(
            "pseudo-text-features",
            key,
            lambda: self.clip.encode_texts_with_pseudo(texts, pseudo).float().numpy(),
        )

    def generated_image_features(
        self,
        queries: Sequence[Query],
        gallery: Gallery,
        generator_signature: dict,
        texts: Sequence[str],
        seeds: Sequence[int],
        images: Callable[[], np.ndarray],
    ) -> torch.Tensor:
        """Unnormalised CLIP features ``[Q, n, D]`` of images generated for each query (CIG's
        pseudo-targets, IP-CIR's proxies), cached by the model and what decides the images: the
        generator, the queries' references, the generation ``texts`` (one per query) and the ``seeds``
        (the same ``n`` per query). ``images()`` gives them ``[Q, n, H, W, 3]`` on a miss, so a warm
        rerun neither loads nor encodes a generated image."""
        key = {
            "generator": generator_signature,
            "references": self.reference_digests(queries, gallery),
            "texts": list(texts),
            "seeds": list(seeds),
        }

        def compute() -> np.ndarray:
            array = images()
            flat = array.reshape(-1, *array.shape[2:])
            return self.clip.encode_images(flat, normalize=False).view(*array.shape[:2], -1).numpy()

        return self._cached_features("generated-image-features", key, compute)

    def encode_captions(self, queries: Sequence[Query], encode) -> torch.Tensor:
        """:func:`mean_over_caption_variants` with this method's caption join and strip settings."""
        return mean_over_caption_variants(queries, encode, self.caption_join, self.caption_strip)

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
