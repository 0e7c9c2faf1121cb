"""IP-CIR: an imagined proxy image, a robust proxy feature and a balanced score ("Imagine and Seek",
CVPR 2025).

IP-CIR is training-free and sits on top of a *base* method that gives a text-side similarity
``S_t``. For each query it

1. captions the reference image (:class:`~cirlib.generation.layout.Captioner`), lets a planner read
   the caption and the modification text and write the target's description and layout
   (:class:`~cirlib.generation.layout.Planner`), and draws ``n_proxies`` proxy images from that layout
   (:class:`~cirlib.generation.layout.LayoutGenerator`);
2. builds the **robust proxy feature** from the proxies' mean image feature ``f_p``, the reference
   image's feature ``f_q`` and the *semantic perturbation* ``f_s = f_t - f_o`` (target description's
   text feature minus the reference caption's)::

       f_RP = f_p + (max f_p / max f_q) * f_q + (max f_p / max f_s) * f_s

   where ``max`` is the largest component of each vector (per query, as the paper writes it; the
   official code takes one max over the whole query set's matrix, which makes a query's score depend
   on the other queries in the batch);
3. scores the gallery with the **balanced similarity** ``S = lam * S_t + (1 - lam) * S_t * S_p``,
   ``S_p = cos(f_RP, gallery)``.

Conventions where paper and code are silent or differ (all switchable, all tested):

* **Guard for a max <= 0.** A ratio ``max f_p / max f_x`` is only taken when ``max f_x`` is
  positive; otherwise (e.g. ``f_s = 0`` when target description and caption are the same text) that
  term is dropped (coefficient 0) rather than divided by zero or flipped in sign.
* **Negative similarities in the product.** ``S_t * S_p`` of two negative cosines would be a large
  positive score for an image that fails both tests. ``negatives="clamp"`` (default) uses
  ``max(S, 0)`` for both factors of the product (real CLIP cosines are almost always positive, so
  this matches the paper there); ``"none"`` is the raw product.
* **Cosine, not dot product.** ``S_p`` is a cosine (``f_RP`` normalised), as the paper defines
  similarities; the official code multiplies by the unnormalised ``f_RP`` (``normalize_proxy=False``),
  whose norm then acts as a per-query change of ``lam``.
* Several proxies: their normalised features are averaged (as the official code does) before
  ``f_RP``; the reference's feature is normalised too; ``f_t`` and ``f_o`` are normalised text
  features.
* Seeds: proxy ``j`` of every query uses noise seed ``IPCIR_SEED + 6 j`` (the official code draws a
  random seed per image, so its proxies cannot be regenerated).

The ablation of the paper's Table 3 is a choice of ``proxy_feature`` (``"raw"``: PI, ``"robust"``:
PI+RP) and ``combine`` (``"weighted"``: ``lam * S_t + (1 - lam) * S_p``; ``"balanced"``: BM).
``lam = 1`` is the base method alone (nothing is generated), ``lam = 0`` the product (or ``S_p``)
alone.

:class:`PlannedText` is the CIReVL / LDRE-style base: retrieve by the CLIP text feature of the
planner's target description (caption the reference, let the language model rewrite it, search by
text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from cirlib.data.types import Gallery, Query
from cirlib.generation.layout import Captioner, LayoutGenerator, Plan, Planner, format_plan, parse_plan
from cirlib.methods.base import Method, query_batch_key
from cirlib.models.clip import CLIPModel
from cirlib.retrieval import EmbeddingCache, content_digest

PROXY_FEATURES: tuple[str, ...] = ("raw", "robust")
COMBINES: tuple[str, ...] = ("weighted", "balanced")
NEGATIVES: tuple[str, ...] = ("clamp", "none")
#: Noise seed of every query's first proxy (proxy j uses IPCIR_SEED + 6 j: CIG's retry offsets).
IPCIR_SEED = 0
#: How a query with two captions (FashionIQ) becomes one modification text for the planner.
MODIFICATION_JOIN = " and "


# --------------------------------------------------------------------------- the formulas
def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` where the denominator is positive, else 0 (the guard)."""
    positive = denominator > 0
    return torch.where(
        positive, numerator / torch.where(positive, denominator, torch.ones_like(denominator)), 0.0
    )


def robust_proxy_feature(f_p: torch.Tensor, f_q: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
    """``f_RP = f_p + (max f_p / max f_q) f_q + (max f_p / max f_s) f_s`` row by row (``[N, D]``
    each), the max taken over each row's components; a term whose max is <= 0 is dropped."""
    if not f_p.shape == f_q.shape == f_s.shape:
        raise ValueError(f"f_p {tuple(f_p.shape)}, f_q {tuple(f_q.shape)} and f_s {tuple(f_s.shape)} differ")
    max_p = f_p.amax(dim=-1, keepdim=True)
    return (
        f_p
        + _ratio(max_p, f_q.amax(dim=-1, keepdim=True)) * f_q
        + _ratio(max_p, f_s.amax(dim=-1, keepdim=True)) * f_s
    )


def combine_scores(
    s_t: torch.Tensor, s_p: torch.Tensor, lam: float, combine: str = "balanced", negatives: str = "clamp"
) -> torch.Tensor:
    """``lam * S_t + (1 - lam) * S_t * S_p`` (``balanced``) or ``lam * S_t + (1 - lam) * S_p``
    (``weighted``); with ``negatives="clamp"`` the product's factors are ``max(S, 0)``."""
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    if combine == "weighted":
        return lam * s_t + (1 - lam) * s_p
    if negatives == "clamp":
        product = s_t.clamp(min=0) * s_p.clamp(min=0)
    else:
        product = s_t * s_p
    return lam * s_t + (1 - lam) * product


# --------------------------------------------------------------------------- caption, then plan
def modification_text(query: Query) -> str:
    """The query's modification text as one sentence (FashionIQ's two captions joined)."""
    return MODIFICATION_JOIN.join(t.strip() for t in query.texts if t.strip())


@dataclass
class PlanOutputs:
    """What the captioner and planner made of a list of queries."""

    captions: list[str]
    raw: list[str]  # the planner's text
    plans: list[Plan]
    valid: np.ndarray  # bool [Q]: the planner's text parsed as a plan

    @property
    def validity(self) -> float:
        return float(self.valid.mean()) if len(self.valid) else float("nan")


class PlanningChain:
    """Caption the reference, then plan the target: shared by :class:`PlannedText` and
    :class:`IPCIR`, so a query is captioned and planned once. Captions and plans are cached on disk
    (keyed by the captioner's or planner's signature and the inputs) and memoised in memory.

    A planner answer that is not a valid plan becomes a plan with no layout whose description is the
    answer's first field (or, if empty, the caption followed by the modification text); the failures
    are counted in :attr:`PlanOutputs.valid`, never hidden."""

    def __init__(self, captioner: Captioner, planner: Planner, cache: EmbeddingCache | None = None) -> None:
        self.captioner, self.planner = captioner, planner
        self.cache = cache if cache is not None else EmbeddingCache()
        self._memo: dict[str, PlanOutputs] = {}

    @property
    def signature(self) -> dict[str, Any]:
        return {"captioner": self.captioner.signature, "planner": self.planner.signature}

    def captions(
        self, method: Method, queries: Sequence[Query], gallery: Gallery, digests: Sequence[str] | None = None
    ) -> list[str]:
        """One caption per query's reference (``digests``: the references' content digests, when the
        caller already has them)."""
        if digests is None:
            digests = method.reference_digests(queries, gallery)
        key = {"captioner": self.captioner.signature, "references": content_digest(digests)}

        def compute() -> np.ndarray:
            images, _ = method.reference_images(queries, gallery)
            return np.array(self.captioner.caption(images) or [""], dtype=str)[: len(queries)]

        if not queries:
            return []
        return [str(c) for c in self.cache.get_or_compute("captions", key, compute)]

    def outputs(self, method: Method, queries: Sequence[Query], gallery: Gallery) -> PlanOutputs:
        digests = method.reference_digests(queries, gallery)
        memo_key = content_digest(
            [
                self.signature,
                [(q.reference, list(q.texts)) for q in queries],
                method.reference_digests(queries, gallery),
            ]
        )
        if memo_key in self._memo:
            return self._memo[memo_key]
        captions = self.captions(method, queries, gallery, digests)
        texts = [modification_text(q) for q in queries]
        key = {"planner": self.planner.signature, "inputs": content_digest([captions, texts])}
        raw = (
            [
                str(t)
                for t in self.cache.get_or_compute(
                    "plans", key, lambda: np.array(self.planner.plan_texts(captions, texts), dtype=str)
                )
            ]
            if queries
            else []
        )
        plans, valid = [], []
        for caption, text, answer in zip(captions, texts, raw, strict=True):
            try:
                plans.append(parse_plan(answer))
                valid.append(True)
            except ValueError:
                first = answer.split("|")[0].strip()
                plans.append(Plan(first or f"{caption} {text}".strip(), ()))
                valid.append(False)
        out = PlanOutputs(captions, raw, plans, np.array(valid, dtype=bool))
        if len(self._memo) > 16:  # keep memory bounded in long sessions
            self._memo.pop(next(iter(self._memo)))
        self._memo[memo_key] = out
        return out


class PlannedText(Method):
    """CIReVL / LDRE-style training-free base: caption the reference, let the planner (the LLM)
    write the target description, retrieve by that description's CLIP text feature."""

    name = "planned-text"
    description = "caption -> planner's target description -> CLIP text-to-image retrieval"

    def __init__(
        self,
        clip: CLIPModel,
        chain: PlanningChain,
        cache: EmbeddingCache | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(clip, cache if cache is not None else chain.cache)
        self.chain = chain
        if name is not None:
            self.name = name  # type: ignore[misc]

    def use_cache(self, cache: EmbeddingCache) -> None:
        """Put this method and its captions and plans on ``cache`` and forget what the chain memoised
        (cost measurements with cold query caches, :func:`cirlib.evaluation.query_cost`)."""
        self.cache = self.chain.cache = cache
        self.chain._memo.clear()

    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        plans = self.chain.outputs(self, queries, gallery).plans
        return F.normalize(self.text_features([p.description for p in plans]), dim=-1)


# --------------------------------------------------------------------------- IP-CIR
class _PlanTextGenerator:
    """A :class:`LayoutGenerator` seen through the pseudo-target cache's interface (text = plan text)."""

    def __init__(self, generator: LayoutGenerator) -> None:
        self.generator = generator
        self.signature = {"layout_generator": generator.signature}

    def generate(
        self, references: Sequence[np.ndarray], texts: Sequence[str], seeds: Sequence[int]
    ) -> np.ndarray:
        return self.generator.generate([parse_plan(t) for t in texts], references, seeds)


class IPCIR(Method):
    """A base method's ``S_t`` combined with imagined-proxy similarities (see the module docstring)."""

    name = "ipcir"
    description = (
        "base method + proxy images drawn from a planned layout; robust proxy feature; balanced score"
    )
    #: IP-CIR's balanced score is not an inner product of one query embedding: exact search only.
    single_embedding: ClassVar[bool] = False
    _OPTIONS: ClassVar[tuple[str, ...]] = (
        "lam", "n_proxies", "proxy_feature", "combine", "negatives", "normalize_proxy", "base_seed", "name",
    )  # fmt: skip

    def __init__(
        self,
        base: Method,
        chain: PlanningChain,
        generator: LayoutGenerator,
        *,
        lam: float = 0.3,
        n_proxies: int = 5,
        proxy_feature: str = "robust",
        combine: str = "balanced",
        negatives: str = "clamp",
        normalize_proxy: bool = True,
        base_seed: int = IPCIR_SEED,
        name: str | None = None,
    ) -> None:
        super().__init__(base.clip, base.cache)
        if chain.cache is not base.cache:
            chain.cache = base.cache
        self.base, self.chain, self.generator = base, chain, generator
        self.lam, self.n_proxies, self.proxy_feature, self.combine = lam, n_proxies, proxy_feature, combine
        self.negatives, self.normalize_proxy, self.base_seed = negatives, normalize_proxy, base_seed
        if name is not None:
            self.name = name  # type: ignore[misc]
        self._check()
        from cirlib.generation.composed import PseudoTargetCache

        self.pseudo_target_cache = PseudoTargetCache(_PlanTextGenerator(generator), self.cache)
        self._views_memo: dict[tuple, dict[str, Any]] = {}

    def _check(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lambda must lie in [0, 1], got {self.lam}")
        if self.n_proxies < 1:
            raise ValueError(f"n_proxies must be at least 1, got {self.n_proxies}")
        if self.proxy_feature not in PROXY_FEATURES:
            raise ValueError(
                f"proxy_feature must be one of {', '.join(PROXY_FEATURES)}, got {self.proxy_feature!r}"
            )
        combine_scores(torch.zeros(1), torch.zeros(1), self.lam, self.combine, self.negatives)  # validates

    def with_options(self, **options) -> IPCIR:
        """A copy with other options (``lam``, ``n_proxies``, ``proxy_feature``, ``combine``,
        ``negatives``, ``normalize_proxy``, ``base_seed``, ``name``) sharing this one's models, caches
        and memos: sweeps caption, plan and generate each query once."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        for key, value in options.items():
            if key not in self._OPTIONS:
                raise TypeError(f"unknown IP-CIR option {key!r}")
            setattr(other, key, value)
        other._check()
        return other

    def use_cache(self, cache: EmbeddingCache) -> None:
        """Put every part (base method, captions and plans, proxies) on ``cache`` and forget what is
        memoised in memory (cost measurements with cold query caches)."""
        self.cache = self.base.cache = self.chain.cache = self.pseudo_target_cache.cache = cache
        self._views_memo.clear()
        self.chain._memo.clear()
        for memo in ("_memo", "_views_memo"):
            if isinstance(getattr(self.base, memo, None), dict):
                getattr(self.base, memo).clear()

    # ------------------------------------------------------------------ the chain
    def plan_outputs(self, queries: Sequence[Query], gallery: Gallery) -> PlanOutputs:
        return self.chain.outputs(self, queries, gallery)

    def proxy_seeds(self, n: int | None = None) -> list[int]:
        from cirlib.generation.composed import seeds_for

        return seeds_for(self.n_proxies if n is None else n, self.base_seed)

    def proxies(self, queries: Sequence[Query], gallery: Gallery) -> np.ndarray:
        """Proxy images ``[Q, n_proxies, H, W, 3]`` (uint8), from the cache when present."""
        plans = self.plan_outputs(queries, gallery).plans
        references, digests = self.reference_images(queries, gallery)
        seeds = self.proxy_seeds()
        texts = [format_plan(p) for p in plans]
        flat = self.pseudo_target_cache.get(
            [r for r in references for _ in seeds],
            [d for d in digests for _ in seeds],
            [t for t in texts for _ in seeds],
            [s for _ in queries for s in seeds],
        )
        return flat.reshape(len(queries), len(seeds), *flat.shape[1:])

    def draw(self, plans: Sequence[Plan], references: Sequence[np.ndarray], seed: int = 0) -> np.ndarray:
        """The generator's image of each plan (noise ``seed``), cached on disk by the generator's
        signature, the plans, the references and the seed: for diagnostics that draw plans which are
        not queries' (e.g. :func:`cirlib.generation.grounded.layout_fidelity`). Unlike :meth:`proxies`,
        no brightness retries: the generator's raw output."""
        key = {
            "generator": self.generator.signature,
            "plans": [format_plan(p) for p in plans],
            "references": content_digest(np.stack(references)) if len(references) else "",
            "seed": seed,
        }
        return self.cache.get_or_compute(
            "layout-drawings",
            key,
            lambda: self.generator.generate(plans, list(references), [seed] * len(plans)),
        )

    def _views(self, queries: Sequence[Query], gallery: Gallery) -> dict[str, Any]:
        """The option-independent parts of a query batch, memoised and shared by copies: the base's
        ``S_t``, ``f_q``, ``f_t``, ``f_o`` and the per-proxy image features."""
        key = (
            *query_batch_key(queries, gallery),
            content_digest([self.chain.signature, self.generator.signature]),
            repr(self.base),
            self.base_seed,
        )
        views = self._views_memo.setdefault(key, {})
        if len(self._views_memo) > 16:
            self._views_memo.pop(next(iter(self._views_memo)))
        if "s_t" not in views:
            views["s_t"] = torch.from_numpy(self.base.score(queries, gallery))
        return views

    def _proxy_views(self, queries: Sequence[Query], gallery: Gallery, views: dict[str, Any]) -> None:
        have = views.get("proxy_features")
        if have is None or have.shape[1] < self.n_proxies:
            views["proxy_features"] = self.proxy_features(queries, gallery)
        if "f_t" not in views:
            outputs = self.plan_outputs(queries, gallery)
            views["f_t"] = F.normalize(self.text_features([p.description for p in outputs.plans]), dim=-1)
            views["f_o"] = F.normalize(self.text_features(outputs.captions), dim=-1)
            views["f_q"] = self.reference_features(queries, gallery).float()

    def proxy_features(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        """L2-normalised CLIP features ``[Q, n_proxies, D]`` of each query's proxies, cached on disk
        (:meth:`Method.generated_image_features`, keyed by the plans)."""
        plans = self.plan_outputs(queries, gallery).plans
        raw = self.generated_image_features(
            queries,
            gallery,
            self.pseudo_target_cache.generator.signature,
            [format_plan(p) for p in plans],
            self.proxy_seeds(),
            lambda: self.proxies(queries, gallery),
        )
        # normalised twice, as when the proxies were encoded with normalize=True and normalised again:
        # the committed numbers stay bit-identical
        return F.normalize(F.normalize(raw, dim=-1), dim=-1)

    def proxy_query_features(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        """The proxy-side query feature ``[Q, D]``: ``f_p`` (raw) or ``f_RP`` (robust), normalised
        unless ``normalize_proxy=False``."""
        views = self._views(queries, gallery)
        self._proxy_views(queries, gallery, views)
        f_p = views["proxy_features"][:, : self.n_proxies].mean(1)
        if self.proxy_feature == "robust":
            feature = robust_proxy_feature(f_p, views["f_q"], views["f_t"] - views["f_o"])
        else:
            feature = f_p
        return F.normalize(feature, dim=-1) if self.normalize_proxy else feature

    def score(self, queries: Sequence[Query], gallery: Gallery) -> np.ndarray:
        if not queries:
            return np.zeros((0, len(gallery)), dtype=np.float32)
        with torch.inference_mode():
            s_t = self._views(queries, gallery)["s_t"]
            if self.lam == 1.0:  # the base alone: nothing to generate
                return s_t.numpy().astype(np.float32, copy=False)
            s_p = self.proxy_query_features(queries, gallery) @ self.gallery_features(gallery).T
            combined = combine_scores(s_t, s_p, self.lam, self.combine, self.negatives)
            return combined.numpy().astype(np.float32, copy=False)

    def encode_queries(self, queries: Sequence[Query], gallery: Gallery) -> torch.Tensor:
        raise NotImplementedError(
            "IP-CIR's balanced score is not the inner product of one query embedding; use the exact "
            "search (Method.score), not FAISS"
        )

    def __repr__(self) -> str:
        return (
            f"IPCIR(base={self.base!r}, lam={self.lam}, n_proxies={self.n_proxies}, "
            f"proxy_feature={self.proxy_feature!r}, combine={self.combine!r}, negatives={self.negatives!r})"
        )
