"""IP-CIR's plans: a target description plus a layout (objects with boxes), as text and as data.

IP-CIR ("Imagine and Seek", CVPR 2025) asks an LLM to read the reference image's captions and the
modification text and write (a) a description of the target image and (b) a layout of it: each
object with a bounding box. A layout-controlled generator (MIGC / GLIGEN) then draws the proxy
image. This module is the contract between those parts, shared by both profiles:

* :class:`Plan` (description, objects with boxes, background) and its one-line text form
  (:func:`format_plan` / :func:`parse_plan`), which the tiny planner is trained to write and which a
  paper-profile LLM is prompted to write;
* the three roles as protocols: :class:`Captioner` (image -> caption), :class:`Planner`
  (caption + modification text -> :class:`Plan`) and :class:`LayoutGenerator` (plan -> image).

No torch here: plans are checked and drawn without importing a model.

Text form (boxes are ``x0 y0 x1 y1`` in integer percent of the image, y pointing down)::

    a large red circle in the center on a striped background | large red circle [30 30 70 70] | striped
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

#: Separates the three fields of a plan's text form.
FIELD_SEP = " | "
#: Separates the layout's objects.
OBJECT_SEP = " ; "
_OBJECT_RE = re.compile(r"^(?P<phrase>[^\[\]|;]+?)\s*\[\s*(?P<box>-?\d+\s+-?\d+\s+-?\d+\s+-?\d+)\s*\]$")


class PlanError(ValueError):
    """A plan's text cannot be read (the message names the problem and quotes the text)."""


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class LayoutObject:
    """One planned object: a phrase ("large red circle") and its box ``(x0, y0, x1, y1)`` in [0, 1]."""

    phrase: str
    box: Box

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise PlanError(
                f"box {self.box} of {self.phrase!r} is not inside the unit square with x0<x1, y0<y1"
            )
        if not self.phrase.strip():
            raise PlanError("a layout object has an empty phrase")


@dataclass(frozen=True)
class Plan:
    """What the planner imagines the target to be.

    ``description`` is the target's text (IP-CIR's target caption, whose CLIP text feature is f_t);
    ``objects`` is the layout; ``background`` the scene's backdrop ("" when the plan leaves it open)."""

    description: str
    objects: tuple[LayoutObject, ...]
    background: str = ""

    @property
    def boxes(self) -> np.ndarray:
        """``[K, 4]`` float32 boxes."""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)

    @property
    def phrases(self) -> list[str]:
        return [o.phrase for o in self.objects]


def _percent(v: float) -> int:
    return int(round(100 * v))


def format_plan(plan: Plan) -> str:
    """The one-line text form of ``plan`` (see the module docstring)."""
    layout = OBJECT_SEP.join(
        f"{o.phrase} [{' '.join(str(_percent(v)) for v in o.box)}]" for o in plan.objects
    )
    return FIELD_SEP.join([plan.description.strip(), layout, plan.background.strip()])


def parse_plan(text: str) -> Plan:
    """Read a plan's text form; raises :class:`PlanError` naming what is wrong.

    Tolerant of what language models add around an answer: surrounding whitespace and a trailing
    period; strict about structure: three ``|``-separated fields, each object ``phrase [x0 y0 x1 y1]``
    with integer percentages and a non-empty box."""
    raw = text
    text = text.strip().rstrip(".").strip()
    fields = [f.strip() for f in text.split("|")]
    if len(fields) != 3:
        raise PlanError(
            f"a plan has 3 '|'-separated fields (description | layout | background), got {len(fields)}: {raw!r}"
        )
    description, layout, background = fields
    if not description:
        raise PlanError(f"the plan's description is empty: {raw!r}")
    objects = []
    for part in [p.strip() for p in layout.split(";")] if layout else []:
        match = _OBJECT_RE.match(part)
        if match is None:
            raise PlanError(f"layout object {part!r} is not 'phrase [x0 y0 x1 y1]': {raw!r}")
        x0, y0, x1, y1 = (int(v) / 100 for v in match["box"].split())
        try:
            objects.append(LayoutObject(match["phrase"].strip(), (x0, y0, x1, y1)))
        except PlanError as error:
            raise PlanError(f"{error}: {raw!r}") from None
    return Plan(description, tuple(objects), background)


def try_parse_plan(text: str, fallback_description: str) -> tuple[Plan, bool]:
    """:func:`parse_plan`, or (when the text is not a valid plan) a plan with no layout whose
    description is ``fallback_description``; the flag says whether the text parsed. Callers count
    the failures and report them (planner validity), they are never silent."""
    try:
        return parse_plan(text), True
    except PlanError:
        return Plan(fallback_description.strip() or text.strip() or "an image", (), ""), False


class Captioner(Protocol):
    """Image -> caption (tiny: a CLIP-prefix decoder; paper: BLIP-2)."""

    #: JSON-able content key of everything that changes the output.
    signature: dict[str, Any]

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        """One caption per uint8 ``[H, W, 3]`` image."""
        ...


class Planner(Protocol):
    """Caption of the reference + modification text -> :class:`Plan` (tiny: a text-only decoder;
    the oracle: a rule-based parser of the world's edit language; paper: an instruction LLM)."""

    signature: dict[str, Any]

    def plan_texts(self, captions: Sequence[str], texts: Sequence[str]) -> list[str]:
        """The raw plan text for each (caption, modification text) pair."""
        ...


class LayoutGenerator(Protocol):
    """:class:`Plan` -> proxy image (tiny: a box-conditioned diffusers UNet; paper: GLIGEN)."""

    signature: dict[str, Any]

    def generate(
        self, plans: Sequence[Plan], references: Sequence[np.ndarray], seeds: Sequence[int]
    ) -> np.ndarray:
        """uint8 images ``[N, H, W, 3]``: plan ``i`` drawn with noise seed ``seeds[i]``; the reference
        image is available to generators that copy its appearance (MIGC + ELITE do)."""
        ...


__all__ = [
    "Box",
    "Captioner",
    "LayoutGenerator",
    "LayoutObject",
    "Plan",
    "PlanError",
    "Planner",
    "format_plan",
    "parse_plan",
    "try_parse_plan",
]
