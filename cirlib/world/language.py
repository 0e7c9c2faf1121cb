"""The world's language: captions like web alt-text, referring expressions and place names.

Pre-training captions vary the way alt-text does (full descriptions, partial ones, dropped
attributes, synonyms, prefixes, relations), so that a CLIP trained on them learns attribute and
object words that a modification text can use. Every choice is drawn from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cirlib.world.scene import Obj, Scene

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circle", "disk", "round shape"),
    "square": ("square", "square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
    "heart": ("heart",),
    "cross": ("cross", "cross", "plus sign"),
    "diamond": ("diamond", "diamond", "rhombus"),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("yellow",),
    "purple": ("purple", "purple", "violet"),
    "orange": ("orange",),
    "white": ("white",),
    "black": ("black",),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "small", "little", "tiny"),
    "large": ("large", "big"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "plain", "blank"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "polka dot"),
    "checkered": ("checkered", "checkerboard"),
    "wavy": ("wavy", "wavy lines"),
}
CELL_NAMES: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("top left corner", "upper left"),
    (0, 1): ("top middle", "top center"),
    (0, 2): ("top right corner", "upper right"),
    (1, 0): ("middle left", "center left"),
    (1, 1): ("center", "middle"),
    (1, 2): ("middle right", "center right"),
    (2, 0): ("bottom left corner", "lower left"),
    (2, 1): ("bottom middle", "bottom center"),
    (2, 2): ("bottom right corner", "lower right"),
}
PREFIXES: tuple[str, ...] = (
    "", "", "", "a photo of ", "an image of ", "a picture of ", "clip art of ", "a drawing of ",
    "illustration: ", "stock image of ",
)  # fmt: skip
NUMBER_WORDS = ("no", "one", "two", "three", "four")


def pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def shape_word(shape: str, rng: np.random.Generator) -> str:
    return pick(rng, SHAPE_WORDS[shape])


def cell_phrase(cell: tuple[int, int], rng: np.random.Generator) -> str:
    return "in the " + pick(rng, CELL_NAMES[cell])


def object_phrase(
    obj: Obj, rng: np.random.Generator, *, p_color: float = 1.0, p_size: float = 1.0, p_place: float = 0.0
) -> str:
    """'small red circle' with each attribute kept with its probability (alt-text drops them)."""
    words = []
    if rng.random() < p_size:
        words.append(pick(rng, SIZE_WORDS[obj.size]))
    if rng.random() < p_color:
        words.append(pick(rng, COLOR_WORDS[obj.color]))
    words.append(shape_word(obj.shape, rng))
    phrase = " ".join(words)
    if rng.random() < p_place:
        phrase += " " + cell_phrase(obj.cell, rng)
    return phrase


def background_phrase(background: str, rng: np.random.Generator) -> str:
    return f"on a {pick(rng, BACKGROUND_WORDS[background])} background"


def _join(parts: list[str], rng: np.random.Generator) -> str:
    if len(parts) == 1:
        return parts[0]
    sep = pick(rng, (", ", ", ", " and ", " with "))
    if sep == ", ":
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    return sep.join(parts)


def full_caption(scene: Scene, rng: np.random.Generator) -> str:
    """Every object with every attribute and its place, and the background."""
    parts = [article(object_phrase(o, rng, p_place=1.0)) for o in scene.objects]
    order = rng.permutation(len(parts))
    return _join([parts[i] for i in order], rng) + " " + background_phrase(scene.background, rng)


def alt_text_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption in the style of web alt-text; about half of them are full descriptions."""
    style = rng.random()
    prefix = pick(rng, PREFIXES)
    objs = list(scene.objects)
    if style < 0.45:
        text = full_caption(scene, rng)
    elif style < 0.65:  # a subset of the objects, attributes sometimes dropped
        k = int(rng.integers(1, len(objs) + 1))
        chosen = [objs[i] for i in rng.choice(len(objs), size=k, replace=False)]
        parts = [article(object_phrase(o, rng, p_color=0.85, p_size=0.5, p_place=0.4)) for o in chosen]
        text = _join(parts, rng)
        if rng.random() < 0.4:
            text += " " + background_phrase(scene.background, rng)
    elif style < 0.75:  # one attribute phrase: "red circle", "big star"
        o = objs[int(rng.integers(len(objs)))]
        text = object_phrase(o, rng, p_color=0.8, p_size=0.4)
    elif style < 0.85 and len(objs) >= 2:  # a relation between two objects
        a, b = (objs[i] for i in rng.choice(len(objs), size=2, replace=False))
        text = f"{article(object_phrase(a, rng, p_size=0.5))} {_relation(a, b)} {article(object_phrase(b, rng, p_size=0.5))}"
    elif style < 0.93:  # counts: "two red shapes", "three objects"
        text = _count_caption(scene, rng)
    else:  # the background alone, or the scene's gist
        text = f"{NUMBER_WORDS[len(objs)]} {'shape' if len(objs) == 1 else 'shapes'} " + background_phrase(
            scene.background, rng
        )
    return (prefix + text).strip()


def _relation(a: Obj, b: Obj) -> str:
    if a.row < b.row:
        return "above"
    if a.row > b.row:
        return "below"
    return "to the left of" if a.col < b.col else "to the right of"


def _count_caption(scene: Scene, rng: np.random.Generator) -> str:
    counts: dict[str, int] = {}
    by: Callable[[Obj], str] = (lambda o: o.color) if rng.random() < 0.5 else (lambda o: o.shape)
    for o in scene.objects:
        counts[by(o)] = counts.get(by(o), 0) + 1
    key = pick(rng, sorted(counts))
    n = counts[key]
    if key in SHAPE_WORDS:
        noun = shape_word(key, rng)
        return f"{NUMBER_WORDS[n]} {noun}{'s' if n > 1 and not noun.endswith('s') else ''}"
    return f"{NUMBER_WORDS[n]} {pick(rng, COLOR_WORDS[key])} {'shape' if n == 1 else 'shapes'}"


def referring_expressions(scene: Scene, index: int) -> list[tuple[str, bool]]:
    """All ways of naming object ``index`` that pick it out uniquely in ``scene``.

    Each is (canonical key, needs_image): 'it' and place-only names such as 'the one on the left'
    can only be resolved by looking at the reference image; keys are expanded to words later."""
    objs = scene.objects
    target = objs[index]
    options: list[tuple[str, bool]] = []
    if len(objs) == 1:
        options.append(("it", True))
        options.append(("the object", True))

    def unique(pred: Callable[[Obj], bool]) -> bool:
        return pred(target) and sum(pred(o) for o in objs) == 1

    if unique(lambda o: o.shape == target.shape):
        options.append(("shape", False))
    if unique(lambda o: o.shape == target.shape and o.color == target.color):
        options.append(("color shape", False))
    if unique(lambda o: o.shape == target.shape and o.size == target.size):
        options.append(("size shape", False))
    if unique(lambda o: o.color == target.color):
        options.append(("color one", True))
    if unique(lambda o: o.col == target.col and o.col != 1):
        options.append(("side", True))
    if unique(lambda o: o.row == target.row and o.row != 1):
        options.append(("vertical", True))
    if unique(lambda o: o.shape == target.shape and o.col == target.col and o.col != 1):
        options.append(("shape side", False))
    options.append(("cell", True))
    return options


def realise_reference(key: str, obj: Obj, rng: np.random.Generator) -> str:
    """Words for a referring-expression key chosen by :func:`referring_expressions`."""
    shape = shape_word(obj.shape, rng)
    color = pick(rng, COLOR_WORDS[obj.color])
    side = "left" if obj.col == 0 else "right"
    vertical = "top" if obj.row == 0 else "bottom"
    return {
        "it": "it",
        "the object": pick(rng, ("the object", "the shape", "the thing")),
        "shape": f"the {shape}",
        "color shape": f"the {color} {shape}",
        "size shape": f"the {pick(rng, SIZE_WORDS[obj.size])} {shape}",
        "color one": f"the {color} {pick(rng, ('one', 'shape', 'object'))}",
        "side": f"the {pick(rng, ('one', 'shape', 'object'))} on the {side}",
        "vertical": f"the {pick(rng, ('one', 'shape', 'object'))} at the {vertical}",
        "shape side": f"the {shape} on the {side}",
        "cell": f"the {pick(rng, ('one', 'shape', 'object'))} {cell_phrase(obj.cell, rng)}",
    }[key]


def canonical_object_phrase(obj: Obj) -> str:
    """'large red circle': size, colour and shape in their first (canonical) words."""
    return f"{SIZE_WORDS[obj.size][0]} {COLOR_WORDS[obj.color][0]} {SHAPE_WORDS[obj.shape][0]}"


def dense_caption(scene: Scene) -> str:
    """A complete caption in canonical words and reading order (top-left to bottom-right), the
    dense, COCO-style description a captioner is trained to write: "a large red circle in the top
    left corner and a small blue star in the center on a striped background"."""
    parts = [
        f"{article(canonical_object_phrase(o))} in the {CELL_NAMES[o.cell][0]}"
        for o in sorted(scene.objects, key=lambda o: o.cell)
    ]
    objects = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{objects} on a {BACKGROUND_WORDS[scene.background][0]} background"
