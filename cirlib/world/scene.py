"""Symbolic scenes of the shapes world: objects on a 3x3 grid over a textured background.

Scenes are the world's ground truth. Methods never see them; they see rendered pixels and text.
The benchmark builders use them to decide, for every query, which gallery images satisfy it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross", "diamond")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "wavy")
GRID = 3
CELLS: tuple[tuple[int, int], ...] = tuple((r, c) for r in range(GRID) for c in range(GRID))
MAX_OBJECTS = 4


@dataclass(frozen=True, order=True)
class Obj:
    """One object: what it is (shape, colour, size) and where (grid row and column)."""

    shape: str
    color: str
    size: str
    row: int
    col: int

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)

    def moved(self, cell: tuple[int, int]) -> Obj:
        return replace(self, row=cell[0], col=cell[1])


@dataclass(frozen=True)
class Scene:
    """A scene: 1 to 4 objects in distinct cells, and a background texture.

    Objects are kept sorted so that two scenes with the same content compare equal."""

    objects: tuple[Obj, ...]
    background: str

    def __post_init__(self) -> None:
        cells = [o.cell for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two objects share a cell in {self}")
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects, got {len(self.objects)}")
        for o in self.objects:
            if o.shape not in SHAPES or o.color not in COLORS or o.size not in SIZES or o.cell not in CELLS:
                raise ValueError(f"invalid object {o}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"invalid background {self.background!r}")
        object.__setattr__(self, "objects", tuple(sorted(self.objects, key=lambda o: o.cell)))

    @property
    def free_cells(self) -> list[tuple[int, int]]:
        used = {o.cell for o in self.objects}
        return [c for c in CELLS if c not in used]

    def with_objects(self, objects: list[Obj] | tuple[Obj, ...]) -> Scene:
        return Scene(tuple(objects), self.background)

    def key(self) -> str:
        """A canonical string, used for hashing and exact comparisons."""
        objs = ";".join(f"{o.shape},{o.color},{o.size},{o.row},{o.col}" for o in self.objects)
        return f"{self.background}|{objs}"

    def to_dict(self) -> dict:
        return {
            "background": self.background,
            "objects": [[o.shape, o.color, o.size, o.row, o.col] for o in self.objects],
        }

    @staticmethod
    def from_dict(d: dict) -> Scene:
        return Scene(tuple(Obj(s, c, z, int(r), int(k)) for s, c, z, r, k in d["objects"]), d["background"])


def random_object(rng: np.random.Generator, cell: tuple[int, int]) -> Obj:
    return Obj(
        SHAPES[rng.integers(len(SHAPES))],
        COLORS[rng.integers(len(COLORS))],
        SIZES[rng.integers(len(SIZES))],
        cell[0],
        cell[1],
    )


def sample_scene(
    rng: np.random.Generator, n_objects: int | None = None, *, max_objects: int = MAX_OBJECTS
) -> Scene:
    """A random scene. Object count is uniform on 1..max_objects unless given."""
    n = int(rng.integers(1, max_objects + 1)) if n_objects is None else n_objects
    cell_ids = rng.choice(len(CELLS), size=n, replace=False)
    objects = tuple(random_object(rng, CELLS[i]) for i in cell_ids)
    return Scene(objects, BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
