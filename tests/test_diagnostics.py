"""The world's after-the-fact diagnostics, on hand-built scenes."""

from __future__ import annotations

import pytest

from cirlib.diagnostics import OUTCOMES, classify_miss
from cirlib.world.scene import Obj, Scene

RED_CIRCLE = Obj("circle", "red", "large", 0, 0)
BLUE_SQUARE = Obj("square", "blue", "small", 1, 1)
GREEN_STAR = Obj("star", "green", "large", 2, 2)


def scene(*objects: Obj, background: str = "plain") -> Scene:
    return Scene(tuple(objects), background)


@pytest.mark.parametrize(
    ("got", "expected"),
    [
        # The reference itself: the circle is still there.
        (scene(RED_CIRCLE, BLUE_SQUARE), "kept reference, missed text"),
        # The circle is gone but so is the square that should have stayed.
        (scene(GREEN_STAR), "applied text, lost reference"),
        # The square kept, the circle gone, on the wrong background: the edit did not touch it.
        (scene(BLUE_SQUARE, background="striped"), "applied text, lost reference"),
        (scene(RED_CIRCLE, background="dotted"), "neither"),
    ],
)
def test_a_removal_is_applied_only_when_the_removed_object_is_gone(got, expected):
    reference = scene(RED_CIRCLE, BLUE_SQUARE)
    target = scene(BLUE_SQUARE)
    assert classify_miss(reference, target, got, background_edited=False) == expected


def test_recolour_and_background_edits():
    reference = scene(RED_CIRCLE, BLUE_SQUARE)
    target = scene(Obj("circle", "green", "large", 0, 0), BLUE_SQUARE, background="wavy")
    # The new colour on the new background, but the square lost.
    got = scene(Obj("circle", "green", "large", 0, 0), background="wavy")
    assert classify_miss(reference, target, got, background_edited=True) == "applied text, lost reference"
    # The reference's objects on the edited background: the colour edit was missed.
    got = scene(RED_CIRCLE, BLUE_SQUARE, background="wavy")
    assert classify_miss(reference, target, got, background_edited=True) == "kept reference, missed text"
    assert set(OUTCOMES[1:]) >= {classify_miss(reference, target, reference, background_edited=True)}
