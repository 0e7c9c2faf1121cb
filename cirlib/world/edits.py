"""The edit language: modifications of a reference scene, their text, and what they allow.

An edit turns a reference scene into a :class:`TargetSpec`: one pattern per target object (a set of
allowed shapes, colours, sizes and cells) and a set of allowed backgrounds. A fully specified edit
("make the circle red") allows one scene; an under-specified one ("add a star") allows many, which
is how the world knows *every* valid target of a query. Texts are free relative captions with
varied wording, some of which need the reference image to resolve ("make it red", "the one on
the left").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cirlib.world import language as lang
from cirlib.world.scene import BACKGROUNDS, CELLS, COLORS, MAX_OBJECTS, SHAPES, SIZES, Obj, Scene

EDIT_KINDS: tuple[str, ...] = ("color", "shape", "size", "add", "remove", "move", "background")
#: Edits that leave some attribute of the target open (CIRCO-like multi-target queries).
OPEN_KINDS: tuple[str, ...] = ("add_open", "recolor_open")
MAX_ENUMERATION = 200_000


@dataclass(frozen=True)
class Pattern:
    """The allowed values of one target object."""

    shapes: frozenset[str]
    colors: frozenset[str]
    sizes: frozenset[str]
    cells: frozenset[tuple[int, int]]

    @staticmethod
    def exact(obj: Obj) -> Pattern:
        return Pattern(
            frozenset([obj.shape]), frozenset([obj.color]), frozenset([obj.size]), frozenset([obj.cell])
        )

    def matches(self, obj: Obj) -> bool:
        return (
            obj.shape in self.shapes
            and obj.color in self.colors
            and obj.size in self.sizes
            and obj.cell in self.cells
        )

    @property
    def n_options(self) -> int:
        return len(self.shapes) * len(self.colors) * len(self.sizes) * len(self.cells)


@dataclass(frozen=True)
class TargetSpec:
    """Every scene that satisfies a query: exactly one object per pattern, nothing else."""

    patterns: tuple[Pattern, ...]
    backgrounds: frozenset[str]

    def matches(self, scene: Scene) -> bool:
        if scene.background not in self.backgrounds or len(scene.objects) != len(self.patterns):
            return False
        return any(
            all(p.matches(o) for p, o in zip(self.patterns, perm, strict=True))
            for perm in itertools.permutations(scene.objects)
        )

    def enumerate_keys(self) -> set[str]:
        """The canonical keys of all satisfying scenes (used to find every valid gallery image)."""
        total = len(self.backgrounds)
        for p in self.patterns:
            total *= p.n_options
        if total > MAX_ENUMERATION:
            raise ValueError(f"target spec allows too many scenes to enumerate ({total})")
        keys: set[str] = set()
        options = [
            [Obj(s, c, z, r, k) for s in p.shapes for c in p.colors for z in p.sizes for (r, k) in p.cells]
            for p in self.patterns
        ]
        for combo in itertools.product(*options):
            if len({o.cell for o in combo}) != len(combo):
                continue
            for bg in self.backgrounds:
                keys.add(Scene(tuple(combo), bg).key())
        return keys

    def sample(self, rng: np.random.Generator) -> Scene:
        """One concrete satisfying scene (retrying cell collisions)."""
        for _ in range(100):
            objs = []
            for p in self.patterns:
                cells = sorted(p.cells)
                objs.append(
                    Obj(
                        lang.pick(rng, sorted(p.shapes)),
                        lang.pick(rng, sorted(p.colors)),
                        lang.pick(rng, sorted(p.sizes)),
                        *cells[int(rng.integers(len(cells)))],
                    )
                )
            if len({o.cell for o in objs}) == len(objs):
                return Scene(tuple(objs), lang.pick(rng, sorted(self.backgrounds)))
        raise RuntimeError(f"could not sample a scene from {self}")


@dataclass(frozen=True)
class Edit:
    """A (possibly composed) modification: its text, what it allows, and its kinds."""

    text: str
    spec: TargetSpec
    kinds: tuple[str, ...]
    needs_image: bool  # the text names an object in a way only the reference image resolves
    parts: tuple[str, ...]  # the text of each atomic edit (FashionIQ-like queries use two)


class EditNotApplicable(Exception):
    """The sampled edit does not fit this scene (no free cell, nothing to remove, ...)."""


@dataclass
class _State:
    """Edits are applied to this working copy of the reference's patterns."""

    reference: Scene
    patterns: dict[int, Pattern]  # reference object index (or >= 100 for added objects) -> pattern
    backgrounds: frozenset[str]
    touched: set[int]

    def occupied(self, exclude: int | None = None) -> set[tuple[int, int]]:
        cells: set[tuple[int, int]] = set()
        for k, p in self.patterns.items():
            if k != exclude and len(p.cells) == 1:
                cells |= p.cells
        return cells

    def spec(self) -> TargetSpec:
        return TargetSpec(tuple(self.patterns[k] for k in sorted(self.patterns)), self.backgrounds)


def _ref(state: _State, index: int, rng: np.random.Generator) -> tuple[str, bool]:
    options = lang.referring_expressions(state.reference, index)
    # Prefer descriptive names most of the time, image-dependent ones sometimes.
    weights = np.array([0.6 if needs else 1.0 for _, needs in options])
    key, needs = options[int(rng.choice(len(options), p=weights / weights.sum()))]
    return lang.realise_reference(key, state.reference.objects[index], rng), needs


def _pick_object(state: _State, rng: np.random.Generator) -> int:
    free = [i for i in range(len(state.reference.objects)) if i not in state.touched and i in state.patterns]
    if not free:
        raise EditNotApplicable("no untouched object")
    return free[int(rng.integers(len(free)))]


def _atomic(
    kind: str, state: _State, rng: np.random.Generator, allowed_shapes: Sequence[str]
) -> tuple[str, bool]:
    """Apply one atomic edit to ``state``; return its text and whether the text needs the image."""
    if kind == "background":
        if len(state.backgrounds) != 1:
            raise EditNotApplicable("background already edited")
        (old,) = state.backgrounds
        new = lang.pick(rng, [b for b in BACKGROUNDS if b != old])
        state.backgrounds = frozenset([new])
        bg = lang.pick(rng, lang.BACKGROUND_WORDS[new])
        text = lang.pick(
            rng,
            (
                f"change the background to {bg}",
                f"make the background {bg}",
                f"put it on a {bg} background",
                f"use a {bg} background instead",
                f"same objects but on a {bg} background",
                f"the background should be {bg}",
            ),
        )
        return text, False
    if kind in ("add", "add_open"):
        if len(state.patterns) >= MAX_OBJECTS:
            raise EditNotApplicable("scene is full")
        free_cells = [c for c in CELLS if c not in state.occupied()]
        if not free_cells:
            raise EditNotApplicable("no free cell")
        shape = lang.pick(rng, list(allowed_shapes))
        color = lang.pick(rng, COLORS)
        size = lang.pick(rng, SIZES)
        cell = free_cells[int(rng.integers(len(free_cells)))]
        new_obj = Obj(shape, color, size, *cell)
        if kind == "add":
            pattern = Pattern.exact(new_obj)
            phrase = lang.object_phrase(new_obj, rng) + " " + lang.cell_phrase(cell, rng)
        else:  # the place and possibly the size or colour are left open
            open_size, open_color = rng.random() < 0.7, rng.random() < 0.3
            pattern = Pattern(
                frozenset([shape]),
                frozenset(COLORS) if open_color else frozenset([color]),
                frozenset(SIZES) if open_size else frozenset([size]),
                frozenset(free_cells),
            )
            phrase = lang.object_phrase(
                new_obj, rng, p_color=0.0 if open_color else 1.0, p_size=0.0 if open_size else 1.0
            )
        state.patterns[max([99, *state.patterns]) + 1] = pattern
        obj_words = lang.article(phrase)
        text = lang.pick(
            rng,
            (
                f"add {obj_words}",
                f"put {obj_words}",
                f"also show {obj_words}",
                f"include {obj_words}",
                f"with an extra {phrase}",
            ),
        )
        return text, False
    index = _pick_object(state, rng)
    obj = state.reference.objects[index]
    ref, needs = _ref(state, index, rng)
    state.touched.add(index)
    p = state.patterns[index]
    if kind == "color":
        new = lang.pick(rng, [c for c in COLORS if c != obj.color])
        state.patterns[index] = replace(p, colors=frozenset([new]))
        c = lang.pick(rng, lang.COLOR_WORDS[new])
        text = lang.pick(
            rng,
            (
                f"make {ref} {c}",
                f"change {ref} to {c}",
                f"{ref} should be {c}",
                f"paint {ref} {c}",
                f"turn {ref} {c}",
                f"color {ref} {c}",
            ),
        )
    elif kind == "recolor_open":
        state.patterns[index] = replace(p, colors=frozenset(c for c in COLORS if c != obj.color))
        text = lang.pick(
            rng, (f"change the color of {ref}", f"make {ref} a different color", f"give {ref} another color")
        )
    elif kind == "shape":
        options = [s for s in allowed_shapes if s != obj.shape]
        if not options:
            raise EditNotApplicable("no other shape allowed")
        new = lang.pick(rng, options)
        state.patterns[index] = replace(p, shapes=frozenset([new]))
        s = lang.article(lang.shape_word(new, rng))
        text = lang.pick(
            rng,
            (
                f"turn {ref} into {s}",
                f"make {ref} {s}",
                f"change {ref} into {s}",
                f"replace {ref} with {s} of the same color",
                f"{ref} becomes {s}",
            ),
        )
    elif kind == "size":
        new = "small" if obj.size == "large" else "large"
        state.patterns[index] = replace(p, sizes=frozenset([new]))
        if new == "large":
            text = lang.pick(
                rng,
                (
                    f"make {ref} bigger",
                    f"make {ref} larger",
                    f"enlarge {ref}",
                    f"{ref} should be big",
                    f"increase the size of {ref}",
                ),
            )
        else:
            text = lang.pick(
                rng,
                (
                    f"make {ref} smaller",
                    f"shrink {ref}",
                    f"{ref} should be small",
                    f"reduce the size of {ref}",
                    f"make {ref} tiny",
                ),
            )
    elif kind == "remove":
        if len(state.patterns) <= 1:
            raise EditNotApplicable("cannot remove the only object")
        del state.patterns[index]
        text = lang.pick(
            rng, (f"remove {ref}", f"take away {ref}", f"delete {ref}", f"get rid of {ref}", f"without {ref}")
        )
    elif kind == "move":
        free_cells = [c for c in CELLS if c not in state.occupied(exclude=index) and c != obj.cell]
        if not free_cells:
            raise EditNotApplicable("no free cell to move to")
        cell = free_cells[int(rng.integers(len(free_cells)))]
        state.patterns[index] = replace(p, cells=frozenset([cell]))
        place = lang.pick(rng, lang.CELL_NAMES[cell])
        text = lang.pick(
            rng,
            (
                f"move {ref} to the {place}",
                f"put {ref} in the {place}",
                f"{ref} goes to the {place}",
                f"shift {ref} to the {place}",
            ),
        )
    else:
        raise ValueError(f"unknown edit kind {kind!r}")
    return text, needs


def apply_edit(
    reference: Scene,
    kinds: Sequence[str],
    rng: np.random.Generator,
    *,
    allowed_shapes: Sequence[str] = SHAPES,
) -> Edit:
    """Apply the atomic edits ``kinds`` (one or two) to ``reference``; raises EditNotApplicable."""
    state = _State(
        reference,
        {i: Pattern.exact(o) for i, o in enumerate(reference.objects)},
        frozenset([reference.background]),
        set(),
    )
    texts, needs = [], False
    for kind in kinds:
        text, n = _atomic(kind, state, rng, allowed_shapes)
        texts.append(text)
        needs |= n
    spec = state.spec()
    if spec.matches(reference):
        raise EditNotApplicable("edit leaves the reference unchanged")
    if len(texts) == 1:
        text = texts[0]
    else:
        joiner = lang.pick(rng, (" and ", ", then ", "; also ", " and also "))
        text = joiner.join(texts)
    return Edit(text, spec, tuple(kinds), needs, tuple(texts))


def sample_edit(
    reference: Scene,
    rng: np.random.Generator,
    *,
    kinds: Sequence[str] = EDIT_KINDS,
    p_compose: float = 0.25,
    allowed_shapes: Sequence[str] = SHAPES,
    max_tries: int = 50,
) -> Edit:
    """A random applicable edit: one kind, or with probability ``p_compose`` two different kinds."""
    for _ in range(max_tries):
        n = 2 if rng.random() < p_compose else 1
        chosen = [kinds[i] for i in rng.choice(len(kinds), size=min(n, len(kinds)), replace=False)]
        try:
            return apply_edit(reference, chosen, rng, allowed_shapes=allowed_shapes)
        except EditNotApplicable:
            continue
    raise EditNotApplicable(f"no applicable edit for {reference} after {max_tries} tries")


def changed_objects(reference: Scene, target: Scene) -> list[Obj]:
    """Objects of ``target`` that are not in ``reference`` (new or modified): the text's content."""
    ref = set(reference.objects)
    return [o for o in target.objects if o not in ref]


def iter_edits(reference: Scene, rng: np.random.Generator, n: int, **kwargs) -> Iterator[Edit]:
    for _ in range(n):
        yield sample_edit(reference, rng, **kwargs)
