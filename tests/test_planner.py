"""The tiny planner (IP-CIR's LLM in the tiny profile) and the oracle planner: target plans, data,
vocabulary, the rule-based oracle, training (loss, resumption, batched decoding), accuracy, zoo."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cirlib.generation.layout import format_plan, parse_plan
from cirlib.models.decoders import split_words
from cirlib.models.planner import (
    FORMS,
    PLAN_TOKENS,
    OraclePlanner,
    PlannerTrainConfig,
    PlanningExample,
    TinyPlanner,
    plan_accuracy,
    plan_for_spec,
    planner_vocab,
    planning_examples,
    train_planner,
)
from cirlib.world import language as lang
from cirlib.world.edits import EDIT_KINDS, OPEN_KINDS, Pattern, TargetSpec
from cirlib.world.scene import CELLS, COLORS, SIZES, Obj

CIRCLE = Obj("circle", "red", "large", 0, 0)  # top left corner, box [2 2 31 31]
STAR = Obj("star", "blue", "small", 1, 1)  # center, box [41 41 59 59]


def _spec(*patterns: Pattern, background: str = "plain") -> TargetSpec:
    return TargetSpec(tuple(patterns), frozenset([background]))


def _text(spec: TargetSpec) -> str:
    return format_plan(plan_for_spec(spec))


# --------------------------------------------------------------------------- target plans
def test_plan_for_spec_hand_built_specs():
    circle, star = Pattern.exact(CIRCLE), Pattern.exact(STAR)
    recolour = replace(circle, colors=frozenset(["green"]))
    assert _text(_spec(recolour, star)) == (
        "a large green circle in the top left corner and a small blue star in the center on a plain background"
        " | large green circle [2 2 31 31] ; small blue star [41 41 59 59] | plain"
    )
    # an open add: shape fixed, colour, size and place open -> "a star", first free cell, large box
    free = frozenset(c for c in CELLS if c != CIRCLE.cell)
    added = Pattern(frozenset(["star"]), frozenset(COLORS), frozenset(SIZES), free)
    assert _text(_spec(circle, added)) == (
        "a large red circle in the top left corner and a star on a plain background"
        " | large red circle [2 2 31 31] ; star [36 2 64 31] | plain"
    )
    # an open add with a fixed colour and size is named, still without a place, after the fixed ones
    named = Pattern(frozenset(["heart"]), frozenset(["orange"]), frozenset(["small"]), free)
    assert _text(_spec(named, star)) == (
        "a small blue star in the center and a small orange heart on a plain background"
        " | small blue star [41 41 59 59] ; small orange heart [41 8 59 25] | plain"
    )
    # a remove (the circle is gone)
    assert _text(_spec(star)) == (
        "a small blue star in the center on a plain background | small blue star [41 41 59 59] | plain"
    )
    # a background change
    assert _text(_spec(circle, star, background="striped")) == (
        "a large red circle in the top left corner and a small blue star in the center on a striped background"
        " | large red circle [2 2 31 31] ; small blue star [41 41 59 59] | striped"
    )
    # an open recolour: the colour is not named; an open background: no background at all
    other = replace(circle, colors=frozenset(COLORS) - {"red"})
    spec = TargetSpec((other,), frozenset(["plain", "dotted"]))
    assert _text(spec) == "a large circle in the top left corner | large circle [2 2 31 31] | "


def test_plan_for_spec_matches_dense_caption_for_exact_specs():
    import numpy as np

    from cirlib.world.scene import sample_scene

    rng = np.random.default_rng(0)
    for _ in range(50):
        scene = sample_scene(rng)
        spec = TargetSpec(tuple(Pattern.exact(o) for o in scene.objects), frozenset([scene.background]))
        assert plan_for_spec(spec).description == lang.dense_caption(scene)


# --------------------------------------------------------------------------- data and vocabulary
@pytest.fixture(scope="module")
def examples() -> list[PlanningExample]:
    return planning_examples(3000, seed=11)


def test_planning_examples_cover_the_edit_language(examples):
    assert planning_examples(20, seed=11) == examples[:20]  # deterministic
    assert planning_examples(20, seed=12) != examples[:20]
    kinds = {k for e in examples for k in e.kinds}
    assert kinds == set(EDIT_KINDS) | set(OPEN_KINDS)
    assert {e.form for e in examples} == set(FORMS)
    assert sum(len(e.kinds) == 2 for e in examples) > 500
    texts = [e.modification for e in examples]
    for joiner in (", then ", "; also ", " and also "):
        assert any(joiner in t for t in texts), joiner
    assert any("otherwise the same" in t or "keep the rest" in t for t in texts)  # FashionIQ fillers
    for e in examples:
        assert parse_plan(e.plan_text)  # every target is a valid plan
        assert e.caption.endswith("background")


def test_vocabulary_covers_examples_and_lengths_fit(examples):
    vocab = planner_vocab()
    assert vocab == planner_vocab()  # deterministic
    words = set(vocab)
    fresh = planning_examples(5000, seed=2024)
    unknown = {
        w for e in fresh for t in (e.caption, e.modification, e.plan_text) for w in split_words(t)
    } - words
    assert not unknown
    tables = (lang.SHAPE_WORDS, lang.COLOR_WORDS, lang.SIZE_WORDS, lang.BACKGROUND_WORDS, lang.CELL_NAMES)
    assert {w for t in tables for options in t.values() for o in options for w in o.split()} <= words
    assert {str(i) for i in range(101)} | {"|", ";", "[", "]"} <= words
    # prompt (<bos> caption <sep> text <sep>) and plan + <eos> fit the default positions and the
    # room TinyPlanner gives a plan
    n = PlannerTrainConfig().n_positions
    prompt = max(
        len(split_words(e.caption)) + len(split_words(e.modification)) + 3 for e in [*examples, *fresh]
    )
    plan = max(len(split_words(e.plan_text)) + 1 for e in [*examples, *fresh])
    assert plan <= PLAN_TOKENS and prompt <= n - PLAN_TOKENS, (prompt, plan, n)


# --------------------------------------------------------------------------- the oracle
def test_oracle_reproduces_the_targets(examples):
    oracle = OraclePlanner()
    out = oracle.plan_texts([e.caption for e in examples], [e.modification for e in examples])
    misses = [(e, o) for e, o in zip(examples, out, strict=True) if o != e.plan_text]
    for e, o in misses[:20]:
        print(f"{e.caption} || {e.modification}\n  target: {e.plan_text}\n  oracle: {o}")
    assert len(misses) <= 0.01 * len(examples)
    assert oracle.failures <= 0.01 * len(examples)


def test_oracle_resolves_references_and_never_crashes():
    oracle = OraclePlanner()
    caption = (
        "a large red circle in the top left corner and a small blue star in the center on a plain background"
    )
    one = "a small blue star in the center on a plain background"
    expected_move = (
        "a small blue star in the center and a large red circle in the bottom right corner on a plain background"
        " | small blue star [41 41 59 59] ; large red circle [69 69 98 98] | plain"
    )
    for text in (
        "move the disk to the lower right",
        "put the one on the left in the bottom right corner",
        "the red one goes to the bottom right corner",
        "shift the object at the top to the lower right",
        "move the shape in the upper left to the bottom right corner",
    ):
        assert oracle.plan_text(caption, text) == expected_move, text
    assert oracle.plan_text(one, "make it violet and also show a big plus sign") == (
        "a small purple star in the center and a large cross on a plain background"
        " | small purple star [41 41 59 59] ; large cross [2 2 31 31] | plain"
    )
    assert oracle.failures == 0
    # nonsense is counted, never raised; the result is still a valid plan text
    for cap, text in (
        (caption, "draw me a sheep"),
        ("", ""),
        ("gibberish", "remove the circle"),
        (caption, "remove the heart"),
    ):
        parse_plan(oracle.plan_text(cap, text))
    assert oracle.failures == 4
    assert len(oracle.failure_log) == 4


# --------------------------------------------------------------------------- accuracy
class _Fixed:
    signature = {"kind": "fixed"}

    def __init__(self, outputs):
        self.outputs = outputs

    def plan_texts(self, captions, texts):
        return list(self.outputs)


def test_plan_accuracy_on_hand_made_outputs():
    a = PlanningExample(
        "c", "t", "a red star in the center | red star [36 36 64 64] | plain", ("color",), "closed"
    )
    b = PlanningExample(
        "c",
        "t",
        "two things | red star [36 36 64 64] ; star [2 2 31 31] | dotted",
        ("add_open", "color"),
        "open",
    )
    c = PlanningExample(
        "c", "t", "a star on a wavy background | star [2 2 31 31] | wavy", ("add_open",), "open"
    )
    outputs = [
        "a red star in the center | red star [36 36 64 64] | plain",  # exact
        "two things | star [2 2 31 31] ; red star [36 40 64 64] | dotted",  # boxes within 0.05, other order
        "a star on a wavy background | star [2 2 31 38] | wavy",  # one box off by 0.07
    ]
    acc = plan_accuracy(_Fixed(outputs), [a, b, c])
    assert acc["n"] == 3
    assert acc["valid"] == 1.0 and acc["exact"] == pytest.approx(1 / 3)
    assert acc["description"] == 1.0 and acc["background"] == 1.0 and acc["layout"] == pytest.approx(2 / 3)
    outputs[0] = "a red star in the center | red star [36 36 64 | plain"  # invalid: matches nothing
    acc = plan_accuracy(_Fixed(outputs), [a, b, c])
    assert acc["valid"] == pytest.approx(2 / 3) and acc["exact"] == 0.0
    assert acc["description"] == pytest.approx(2 / 3) and acc["layout"] == pytest.approx(1 / 3)
    assert acc["background"] == pytest.approx(2 / 3)
    assert acc["per_kind"]["color"] == {
        "n": 2,
        "valid": 0.5,
        "exact": 0.0,
        "description": 0.5,
        "layout": 0.5,
        "background": 0.5,
    }
    assert acc["per_kind"]["add_open"]["layout"] == 0.5
    assert acc["per_form"]["open"]["n"] == 2


# --------------------------------------------------------------------------- training
TINY = PlannerTrainConfig(
    steps=40, batch_size=16, lr=5e-3, warmup_steps=5, checkpoint_every=10, n_layer=1, n_embd=32, n_head=2
)


@pytest.fixture(scope="module")
def small_data() -> list[PlanningExample]:
    return planning_examples(300, seed=5)


@pytest.fixture(scope="module")
def tiny_decoder(small_data):
    return train_planner(small_data, TINY, seed=3, progress=False, num_threads=1)


def test_training_reduces_the_loss(tiny_decoder):
    losses = tiny_decoder.training_losses
    assert len(losses) == TINY.steps
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert not tiny_decoder.training


def test_resumed_training_equals_uninterrupted(small_data, tiny_decoder, tmp_path):
    cfg = replace(TINY, steps=20)
    full = train_planner(small_data, cfg, seed=3, progress=False, num_threads=1)
    part = train_planner(
        small_data, cfg, seed=3, progress=False, num_threads=1, resume_dir=tmp_path, stop_after=13
    )
    assert len(part.training_losses) == 13
    resumed = train_planner(small_data, cfg, seed=3, progress=False, num_threads=1, resume_dir=tmp_path)
    assert resumed.training_losses == full.training_losses
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(RuntimeError, match="another run"):
        train_planner(small_data, replace(cfg, lr=1e-3), seed=3, progress=False, resume_dir=tmp_path)


def test_batched_planning_equals_one_at_a_time(tiny_decoder, small_data):
    queries = small_data[:5]  # prompts of different lengths: left padding in a batch
    captions, texts = [e.caption for e in queries], [e.modification for e in queries]
    batched = TinyPlanner(tiny_decoder, batch_size=3, max_new_tokens=24).plan_texts(captions, texts)
    single = [
        TinyPlanner(tiny_decoder, batch_size=1, max_new_tokens=24).plan_texts([c], [t])[0]
        for c, t in zip(captions, texts)
    ]
    assert batched == single
    assert TinyPlanner(tiny_decoder).signature["kind"] == "tiny-planner"
    acc = plan_accuracy(TinyPlanner(tiny_decoder, max_new_tokens=24), queries)
    assert acc["n"] == len(queries) and 0.0 <= acc["valid"] <= 1.0


def test_decoder_round_trips_through_the_zoo(tiny_decoder, small_data, tmp_path):
    from cirlib.models.decoders import TextDecoder
    from cirlib.models.zoo import load_file, save_checkpoint

    # the zoo stores fp16: round the weights first, so the reload must be bit-identical
    decoder = TextDecoder(**tiny_decoder.arch)
    decoder.load_state_dict({k: v.half().float() for k, v in tiny_decoder.state_dict().items()})
    decoder.eval()
    path = save_checkpoint("planner-test", decoder, TINY, 3, "pytest", root=tmp_path)
    loaded = load_file(path)
    assert isinstance(loaded, TextDecoder) and loaded.arch == decoder.arch
    for (k, a), b in zip(decoder.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    captions, texts = [e.caption for e in small_data[:6]], [e.modification for e in small_data[:6]]
    before, after = TinyPlanner(decoder, max_new_tokens=24), TinyPlanner(loaded, max_new_tokens=24)
    assert before.plan_texts(captions, texts) == after.plan_texts(captions, texts)
    assert before.signature == after.signature
