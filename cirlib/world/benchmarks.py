"""Benchmarks of the shapes world in the three real forms, with complete ground truth.

* ``cirr``: one labelled target, a 6-image visually similar subset (reference, target and four
  reference-like negatives), the reference removed from the gallery at scoring time.
* ``circo``: several valid targets (under-specified edits and several photos of the target), all
  of them ground truth, scored with mAP@K; the reference stays in the gallery.
* ``fashioniq``: three categories (shape families), two relative captions per query, one
  labelled target, a gallery per category, the reference kept.

Every gallery is built on purpose with hard negatives: *reference-like* images (the reference
with another edit, or the same kind of edit with a wrong value) that keep the reference but do not
satisfy the text, and *text-like* images (the edited content in an unrelated scene) that satisfy
the text but do not keep the reference. A method must use both modalities. Because scenes are
symbolic, every query's ``ground_truth`` lists every gallery image that satisfies it.

The world is versioned (``WORLD_VERSION``): a change to anything that alters a benchmark bumps it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cirlib.config import atomic_write_bytes, cache_root, config_hash, progress_bar
from cirlib.data.types import Benchmark, Form, Gallery, Query
from cirlib.world import language as lang
from cirlib.world.edits import (
    EDIT_KINDS,
    OPEN_KINDS,
    Edit,
    EditNotApplicable,
    apply_edit,
    changed_objects,
    sample_edit,
)
from cirlib.world.render import render_many
from cirlib.world.scene import MAX_OBJECTS, Obj, Scene, random_object, sample_scene

WORLD_VERSION = "1.0"
SPLITS = ("train", "val", "test")
DEFAULT_QUERIES = {"val": 500, "test": 1000, "train": 20000}
#: FashionIQ-like categories: families of shapes, as dress / shirt / toptee are families of clothes.
FIQ_CATEGORIES: dict[str, tuple[str, ...]] = {
    "round": ("circle", "heart"),
    "angular": ("square", "diamond", "triangle"),
    "spiky": ("star", "cross"),
}
FIQ_KINDS = ("color", "size", "shape", "background")


@dataclass(frozen=True)
class WorldSpec:
    """Everything that determines a world benchmark (its cache key)."""

    form: str
    split: str
    n_queries: int
    image_size: int = 64
    version: str = WORLD_VERSION


def split_seed(form: str, split: str) -> int:
    """Disjoint, stable seeds per (form, split): val and test never share a random stream.

    Derived from the world version alone (not from ``CODE_VERSION``, which keys caches), so that
    cache-format changes never alter the frozen world."""
    digest = hashlib.sha256(f"world {WORLD_VERSION} {form} {split}".encode()).hexdigest()
    return int(digest[:8], 16)


class _GalleryBuilder:
    """Collects scenes with unique ids; renders them all at the end."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ids: list[str] = []
        self.scenes: list[Scene] = []

    def add(self, scene: Scene) -> str:
        image_id = f"{self.prefix}-{len(self.ids):06d}"
        self.ids.append(image_id)
        self.scenes.append(scene)
        return image_id

    def build(self, image_size: int, seed: int) -> Gallery:
        jitter = [seed * 1_000_003 + i for i in range(len(self.scenes))]
        images = render_many(self.scenes, image_size, jitter)
        return Gallery(list(self.ids), images, None, list(self.scenes))


def _reference_like(
    reference: Scene, edit: Edit, rng: np.random.Generator, n: int, allowed_shapes=None, kinds=EDIT_KINDS
) -> list[Scene]:
    """The reference with another edit: first the same kind with another value, then other kinds."""
    out: list[Scene] = []
    extra = {} if allowed_shapes is None else {"allowed_shapes": allowed_shapes}
    for attempt in range(20 * n):
        try:
            if attempt < 5 and not out:
                other = apply_edit(reference, edit.kinds, rng, **extra)
            else:
                other = sample_edit(reference, rng, kinds=kinds, p_compose=0.2, **extra)
        except EditNotApplicable:
            continue
        scene = other.spec.sample(rng)
        if not edit.spec.matches(scene) and scene != reference and scene not in out:
            out.append(scene)
        if len(out) == n:
            break
    return out


def _text_like(
    reference: Scene, target: Scene, edit: Edit, rng: np.random.Generator, sampler: Callable[[], Scene]
) -> Scene | None:
    """The edited content placed in an unrelated scene: satisfies the words, not the reference."""
    for _ in range(20):
        other = sampler()
        objs = list(other.objects)
        for new in changed_objects(reference, target):
            objs = [o for o in objs if o.cell != new.cell]
            if len(objs) >= MAX_OBJECTS:
                objs.pop(int(rng.integers(len(objs))))
            objs.append(new)
        background = target.background if "background" in edit.kinds else other.background
        scene = Scene(tuple(objs), background)
        if not edit.spec.matches(scene) and scene != reference:
            return scene
    return None


def _complete_ground_truth(queries: list[dict], gallery: _GalleryBuilder) -> None:
    by_key: dict[str, list[str]] = defaultdict(list)
    for image_id, scene in zip(gallery.ids, gallery.scenes, strict=True):
        by_key[scene.key()].append(image_id)
    for q in queries:
        keys = q["edit"].spec.enumerate_keys()
        gt = sorted({i for k in keys for i in by_key.get(k, [])})
        if q["target"] not in gt:
            raise AssertionError(f"labelled target of {q['qid']} does not satisfy its own spec")
        q["ground_truth"] = tuple(gt)


def _to_queries(raw: list[dict]) -> list[Query]:
    out = []
    for q in raw:
        edit: Edit = q["edit"]
        info = {
            "kinds": list(edit.kinds),
            "needs_image": edit.needs_image,
            "n_objects": len(q["reference_scene"].objects),
            "reference_scene": q["reference_scene"].to_dict(),
        }
        out.append(
            Query(
                qid=q["qid"],
                reference=q["reference"],
                texts=q["texts"],
                target=q["target"],
                ground_truth=q["ground_truth"],
                subset=q.get("subset"),
                category=q.get("category", "all"),
                info=info,
            )
        )
    return out


def build_cirr(split: str, n_queries: int, image_size: int = 64) -> Benchmark:
    seed = split_seed("cirr", split)
    rng = np.random.default_rng(seed)
    gallery = _GalleryBuilder(f"cirr-{split}")
    raw: list[dict] = []
    with progress_bar(total=n_queries, desc=f"world cirr/{split}", show=n_queries >= 2000) as bar:
        while len(raw) < n_queries:
            reference = sample_scene(rng)
            try:
                edit = sample_edit(reference, rng, p_compose=0.25)
            except EditNotApplicable:
                continue
            target = edit.spec.sample(rng)
            negatives = _reference_like(reference, edit, rng, 4)
            text_like = _text_like(reference, target, edit, rng, lambda: sample_scene(rng))
            if len(negatives) < 4 or text_like is None:
                continue
            ref_id = gallery.add(reference)
            tgt_id = gallery.add(target)
            neg_ids = [gallery.add(s) for s in negatives]
            gallery.add(text_like)
            members = [ref_id, tgt_id, *neg_ids]
            order = rng.permutation(len(members))
            raw.append(
                {
                    "qid": str(len(raw)),
                    "reference": ref_id,
                    "reference_scene": reference,
                    "texts": (edit.text,),
                    "target": tgt_id,
                    "subset": tuple(members[i] for i in order),
                    "edit": edit,
                }
            )
            bar.update()
    _complete_ground_truth(raw, gallery)
    return Benchmark(
        "world-cirr", "cirr", split, _to_queries(raw), {"all": gallery.build(image_size, seed)}, WORLD_VERSION
    )


def build_circo(split: str, n_queries: int, image_size: int = 64) -> Benchmark:
    seed = split_seed("circo", split)
    rng = np.random.default_rng(seed)
    gallery = _GalleryBuilder(f"circo-{split}")
    raw: list[dict] = []
    with progress_bar(total=n_queries, desc=f"world circo/{split}", show=n_queries >= 2000) as bar:
        while len(raw) < n_queries:
            reference = sample_scene(rng)
            try:
                if rng.random() < 0.6:  # an open edit, sometimes composed with a closed one
                    kinds = [OPEN_KINDS[int(rng.integers(len(OPEN_KINDS)))]]
                    if rng.random() < 0.3:
                        kinds.append(EDIT_KINDS[int(rng.integers(len(EDIT_KINDS)))])
                    edit = apply_edit(reference, kinds, rng)
                else:
                    edit = sample_edit(reference, rng, p_compose=0.25)
            except EditNotApplicable:
                continue
            n_targets = int(rng.integers(1, 5))
            targets = [edit.spec.sample(rng) for _ in range(n_targets)]
            negatives = _reference_like(reference, edit, rng, 2)
            text_like = _text_like(reference, targets[0], edit, rng, lambda: sample_scene(rng))
            if len(negatives) < 2 or text_like is None:
                continue
            ref_id = gallery.add(reference)
            tgt_ids = [gallery.add(t) for t in targets]
            for s in [*negatives, text_like]:
                gallery.add(s)
            if rng.random() < 0.5:
                gallery.add(sample_scene(rng))
            raw.append(
                {
                    "qid": str(len(raw)),
                    "reference": ref_id,
                    "reference_scene": reference,
                    "texts": (edit.text,),
                    "target": tgt_ids[0],
                    "edit": edit,
                }
            )
            bar.update()
    _complete_ground_truth(raw, gallery)
    return Benchmark(
        "world-circo",
        "circo",
        split,
        _to_queries(raw),
        {"all": gallery.build(image_size, seed)},
        WORLD_VERSION,
    )


def _fiq_scene(rng: np.random.Generator, shapes: tuple[str, ...]) -> Scene:
    """A 'product photo': one item of the category's shapes, sometimes with a second one."""
    n = 1 if rng.random() < 0.5 else 2
    cells = rng.choice(9, size=n, replace=False)
    objs = []
    for c in cells:
        o = random_object(rng, (int(c) // 3, int(c) % 3))
        objs.append(Obj(lang.pick(rng, shapes), o.color, o.size, o.row, o.col))
    return Scene(tuple(objs), sample_scene(rng).background)


def build_fashioniq(split: str, n_queries: int, image_size: int = 64) -> Benchmark:
    seed = split_seed("fashioniq", split)
    rng = np.random.default_rng(seed)
    per_category = int(np.ceil(n_queries / len(FIQ_CATEGORIES)))
    galleries: dict[str, Gallery] = {}
    queries: list[Query] = []
    for category, shapes in FIQ_CATEGORIES.items():
        gallery = _GalleryBuilder(f"fiq-{split}-{category}")
        raw: list[dict] = []
        while len(raw) < per_category:
            reference = _fiq_scene(rng, shapes)
            try:
                if rng.random() < 0.75:
                    kinds = [FIQ_KINDS[i] for i in rng.choice(len(FIQ_KINDS), size=2, replace=False)]
                    edit = apply_edit(reference, kinds, rng, allowed_shapes=shapes)
                    texts = edit.parts
                else:
                    edit = sample_edit(reference, rng, kinds=FIQ_KINDS, p_compose=0.0, allowed_shapes=shapes)
                    texts = (
                        edit.text,
                        lang.pick(
                            rng,
                            ("otherwise the same", "keep the rest", "nothing else changes", "same otherwise"),
                        ),
                    )
            except EditNotApplicable:
                continue
            if rng.random() < 0.5:
                texts = (texts[1], texts[0])
            target = edit.spec.sample(rng)
            negatives = _reference_like(reference, edit, rng, 2, allowed_shapes=shapes, kinds=FIQ_KINDS)
            text_like = _text_like(reference, target, edit, rng, lambda: _fiq_scene(rng, shapes))  # noqa: B023
            if len(negatives) < 2 or text_like is None:
                continue
            ref_id = gallery.add(reference)
            tgt_id = gallery.add(target)
            for s in [*negatives, text_like, _fiq_scene(rng, shapes)]:
                gallery.add(s)
            raw.append(
                {
                    "qid": f"{category}-{len(raw)}",
                    "reference": ref_id,
                    "reference_scene": reference,
                    "texts": tuple(texts),
                    "target": tgt_id,
                    "category": category,
                    "edit": edit,
                }
            )
        _complete_ground_truth(raw, gallery)
        queries.extend(_to_queries(raw))
        galleries[category] = gallery.build(image_size, seed + len(galleries))
    return Benchmark("world-fashioniq", "fashioniq", split, queries, galleries, WORLD_VERSION)


BUILDERS: dict[str, Callable[[str, int, int], Benchmark]] = {
    "cirr": build_cirr,
    "circo": build_circo,
    "fashioniq": build_fashioniq,
}


def world_code_digest() -> str:
    """sha256 of the world's source files: part of every world cache key, so that an edit to the
    generator can never be served a benchmark built by older code (the frozen-world test then
    says whether the edit changed the world)."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _cache_path(spec: WorldSpec) -> Path:
    key = config_hash({"spec": spec, "code": world_code_digest()})
    return cache_root() / "world" / f"{spec.form}-{spec.split}-{key}.npz"


def _save(benchmark: Benchmark, path: Path) -> None:
    import io

    meta = {
        "name": benchmark.name,
        "form": benchmark.form,
        "split": benchmark.split,
        "version": benchmark.version,
        "queries": [
            {
                "qid": q.qid,
                "reference": q.reference,
                "texts": list(q.texts),
                "target": q.target,
                "ground_truth": list(q.ground_truth),
                "subset": None if q.subset is None else list(q.subset),
                "category": q.category,
                "info": q.info,
            }
            for q in benchmark.queries
        ],  # fmt: skip
        "galleries": {
            c: {"ids": g.ids, "scenes": [s.to_dict() for s in g.scenes or []]}
            for c, g in benchmark.galleries.items()
        },
    }
    arrays = {f"images_{c}": g.images for c, g in benchmark.galleries.items()}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


class _LazyScenes(Sequence):
    """Scenes of a cached gallery, parsed on first access: methods never read them, and a warm
    load should not pay for thousands of scene validations only diagnostics need."""

    def __init__(self, dicts: list[dict]) -> None:
        self._dicts = dicts
        self._scenes: list[Scene | None] = [None] * len(dicts)

    def __len__(self) -> int:
        return len(self._dicts)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        scene = self._scenes[index]
        if scene is None:
            scene = self._scenes[index] = Scene.from_dict(self._dicts[index])
        return scene


def _load(path: Path) -> Benchmark:
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        galleries = {
            c: Gallery(g["ids"], data[f"images_{c}"], None, _LazyScenes(g["scenes"]))
            for c, g in meta["galleries"].items()
        }
    queries = [
        Query(
            q["qid"], q["reference"], tuple(q["texts"]), q["target"], tuple(q["ground_truth"]),
            None if q["subset"] is None else tuple(q["subset"]), q["category"], q["info"],
        )
        for q in meta["queries"]
    ]  # fmt: skip
    return Benchmark(meta["name"], meta["form"], meta["split"], queries, galleries, meta["version"])


def load_world_benchmark(
    form: Form | str,
    split: str,
    n_queries: int | None = None,
    *,
    image_size: int = 64,
    use_cache: bool = True,
) -> Benchmark:
    """The world benchmark of a form and split, built once and cached (content-keyed, atomic)."""
    if form not in BUILDERS:
        raise ValueError(f"unknown world benchmark {form!r}; expected one of {', '.join(BUILDERS)}")
    if split not in ("val", "test"):
        raise ValueError(f"world benchmarks have splits 'val' and 'test', not {split!r}")
    spec = WorldSpec(form, split, n_queries or DEFAULT_QUERIES[split], image_size)
    path = _cache_path(spec)
    if use_cache and path.exists():
        try:
            return _load(path)
        except Exception as error:  # a damaged cache file is rebuilt, loudly
            import warnings

            warnings.warn(f"world cache {path} is unreadable ({error}); rebuilding it", stacklevel=2)
    benchmark = BUILDERS[form](split, spec.n_queries, image_size)
    if use_cache:
        _save(benchmark, path)
    return benchmark


@dataclass
class PretrainingPairs:
    """Image-caption pairs: the only data the world's CLIP ever sees (no triplets)."""

    images: np.ndarray
    captions: list[str]
    scenes: list[Scene]


def pretraining_pairs(
    n: int, seed: int, image_size: int = 64, captions_per_image: int = 1
) -> PretrainingPairs:
    """``n`` random scenes rendered with jitter, each with alt-text-like captions."""
    rng = np.random.default_rng([seed, 7919])
    scenes = [sample_scene(rng) for _ in range(n)]
    images = render_many(scenes, image_size, [seed * 10_000_019 + i for i in range(n)])
    captions = [lang.alt_text_caption(s, rng) for s in scenes for _ in range(captions_per_image)]
    return PretrainingPairs(images, captions, scenes)


@dataclass
class Triplets:
    """World CIR triplets, for the *supervised* reference only (never for zero-shot methods)."""

    references: np.ndarray
    texts: list[str]
    targets: np.ndarray


def training_triplets(n: int, seed: int, image_size: int = 64) -> Triplets:
    rng = np.random.default_rng([seed, 104729])
    refs, texts, tgts = [], [], []
    while len(refs) < n:
        reference = sample_scene(rng)
        try:
            edit = sample_edit(reference, rng, p_compose=0.25)
        except EditNotApplicable:
            continue
        refs.append(reference)
        texts.append(edit.text)
        tgts.append(edit.spec.sample(rng))
    base = seed * 7_000_003
    return Triplets(
        render_many(refs, image_size, [base + 2 * i for i in range(n)]),
        texts,
        render_many(tgts, image_size, [base + 2 * i + 1 for i in range(n)]),
    )
