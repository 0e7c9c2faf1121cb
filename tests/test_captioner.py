"""The tiny captioner (IP-CIR's BLIP-2 stand-in): vocabulary, training, resumption, captioning,
quality measures and the checkpoint round trip, on a micro random CLIP (seconds)."""

from __future__ import annotations

import copy
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from tiny_components import MICRO_CLIP

from cirlib.models import zoo
from cirlib.models.captioner import (
    CaptionerTrainConfig,
    TinyCaptioner,
    _fold_standardisation,
    caption_facts,
    caption_quality,
    caption_vocab,
    captioning_pairs,
    image_prefix,
    prefix_dim,
    train_captioner,
)
from cirlib.models.clip import CLIPModel, build_open_clip
from cirlib.models.decoders import TextDecoder, WordTokenizer
from cirlib.world.language import dense_caption
from cirlib.world.scene import Obj, Scene, sample_scene

#: A micro decoder; the stop step of the resume test (15) is not a multiple of checkpoint_every,
#: so the resumed run starts from the state written by ``stop_after`` itself. Dropout is on, so that
#: the resume test also checks that dropout masks are a function of (seed, step).
TRAIN = CaptionerTrainConfig(
    steps=30,
    batch_size=16,
    lr=3e-3,
    warmup_steps=5,
    checkpoint_every=10,
    dropout=0.1,
    n_layer=1,
    n_embd=32,
    n_head=2,
    prefix_tokens=2,
    n_positions=64,
)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _micro_clip(seed: int) -> CLIPModel:
    torch.manual_seed(seed)
    return CLIPModel(build_open_clip(MICRO_CLIP), MICRO_CLIP, name=f"micro-{seed}")


def _train(clip: CLIPModel, pairs, **options) -> TextDecoder:
    images, captions, _ = pairs
    return train_captioner(clip, images, captions, TRAIN, 0, num_threads=1, progress=False, **options)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Micro models run fastest on one thread (and leave the other core to whoever shares the machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def clip() -> CLIPModel:
    return _micro_clip(0)


@pytest.fixture(scope="module")
def pairs():
    return captioning_pairs(200, seed=3)


@pytest.fixture(scope="module")
def trained(clip, pairs) -> TextDecoder:
    return _train(clip, pairs)


# --------------------------------------------------------------------------- vocabulary and data
def test_vocabulary_covers_every_dense_caption():
    vocab = caption_vocab()
    assert vocab == caption_vocab()  # deterministic
    tokenizer = WordTokenizer(vocab)
    rng = np.random.default_rng(0)
    unknown = {w for _ in range(2000) for w in tokenizer.unknown_words(dense_caption(sample_scene(rng)))}
    assert not unknown
    assert len(vocab) < 50  # closed: canonical words only, no synonyms


def test_captioning_pairs_are_images_with_dense_captions(pairs):
    images, captions, scenes = pairs
    assert images.dtype == np.uint8 and images.shape == (200, 64, 64, 3)
    assert captions == [dense_caption(s) for s in scenes]
    again = captioning_pairs(200, seed=3)
    assert np.array_equal(again[0], images) and again[1] == captions


# --------------------------------------------------------------------------- training
def test_training_reduces_the_loss(clip, trained):
    losses = trained.training_losses
    assert len(losses) == TRAIN.steps
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert not trained.training and trained.clip_hash == clip.hash
    assert trained.arch["vocab"] == caption_vocab()
    assert trained.arch["prefix_dim"] == prefix_dim(clip, "tokens") == 16 * 32  # 4x4 patches, width 32


def test_the_global_embedding_prefix_is_kept_for_comparison(clip, pairs):
    images, captions, _ = pairs
    config = replace(TRAIN, prefix="global", steps=3)
    decoder = train_captioner(clip, images, captions, config, 0, num_threads=1, progress=False)
    assert decoder.arch["prefix_dim"] == clip.embed_dim
    captioner = TinyCaptioner(clip, decoder)
    assert captioner.signature["prefix"] == "global" and len(captioner.caption(images[:2])) == 2
    assert image_prefix(clip, images[:3], "global").shape == (3, clip.embed_dim)
    assert image_prefix(clip, images[:3], "tokens").shape == (3, prefix_dim(clip, "tokens"))
    with pytest.raises(ValueError, match="prefix must be"):
        train_captioner(clip, images, captions, replace(TRAIN, prefix="pixels"), 0, progress=False)


def test_a_resumed_run_equals_an_uninterrupted_one(clip, pairs, trained, tmp_path):
    stopped = _train(clip, pairs, resume_dir=tmp_path, stop_after=15)
    assert len(stopped.training_losses) == 15
    resumed = _train(clip, pairs, resume_dir=tmp_path)
    assert _states_equal(resumed, trained)
    assert resumed.training_losses == trained.training_losses
    finished = _train(clip, pairs, resume_dir=tmp_path)  # a finished state: nothing left to train
    assert _states_equal(finished, trained)


def test_a_foreign_training_state_is_refused(clip, pairs, tmp_path):
    _train(clip, pairs, resume_dir=tmp_path, stop_after=2)
    images, captions, _ = pairs
    with pytest.raises(RuntimeError, match="another run"):
        train_captioner(clip, images, captions, TRAIN, 1, resume_dir=tmp_path, num_threads=1, progress=False)


def test_captions_outside_the_vocabulary_are_refused(clip, pairs):
    images, captions, _ = pairs
    bad = ["a fluffy cat on a mat", *captions[1:]]
    with pytest.raises(ValueError, match="fluffy"):
        train_captioner(clip, images, bad, TRAIN, 0, num_threads=1, progress=False)


# --------------------------------------------------------------------------- captioning
def test_batch_captioning_equals_one_at_a_time(clip, trained, pairs):
    images = pairs[0][:9]
    batched = TinyCaptioner(clip, trained, batch_size=4).caption(images)
    single = [TinyCaptioner(clip, trained, batch_size=1).caption(images[i : i + 1])[0] for i in range(9)]
    assert batched == single
    assert all(isinstance(c, str) and c for c in batched)
    assert TinyCaptioner(clip, trained).caption([]) == []


def test_a_decoder_of_another_clip_is_refused(trained):
    with pytest.raises(ValueError, match="another|not of this CLIP"):
        TinyCaptioner(_micro_clip(1), trained)


def test_signature_names_kind_weights_and_clip(clip, trained):
    signature = TinyCaptioner(clip, trained).signature
    assert signature["kind"] == "tiny-captioner" and signature["clip"] == clip.hash
    other = copy.deepcopy(trained)
    with torch.no_grad():
        other.prefix[0].bias.add_(1e-3)
    assert TinyCaptioner(clip, other).signature["decoder"] != signature["decoder"]
    assert TinyCaptioner(clip, copy.deepcopy(trained)).signature == signature


def test_checkpoint_round_trip_captions_identically(clip, trained, pairs, tmp_path):
    images = pairs[0][:6]
    first = zoo.load_file(zoo.save_checkpoint("cap", trained, asdict(TRAIN), 0, "test", root=tmp_path / "a"))
    second = zoo.load_file(zoo.save_checkpoint("cap", first, asdict(TRAIN), 0, "test", root=tmp_path / "b"))
    assert isinstance(first, TextDecoder) and first.clip_hash == clip.hash
    assert first.arch == trained.arch
    assert _states_equal(first, second)  # fp16 values survive a second fp16 round trip exactly
    a, b = TinyCaptioner(clip, first), TinyCaptioner(clip, second)
    assert a.signature == b.signature
    assert a.caption(images) == b.caption(images)


# --------------------------------------------------------------------------- quality
class _FixedCaptioner:
    """Writes the given captions, whatever the images."""

    signature = {"kind": "fixed"}

    def __init__(self, captions: list[str]) -> None:
        self.captions = captions

    def caption(self, images) -> list[str]:
        return list(self.captions[: len(images)])


TRUTH = (
    "a large red circle in the top left corner and a small blue star in the center on a striped background"
)


def test_caption_facts_split_objects_and_background():
    assert caption_facts(TRUTH) == (
        ["a large red circle in the top left corner", "a small blue star in the center"],
        "on a striped background",
    )
    assert caption_facts("a red circle, a blue star and a cross") == (
        ["a red circle", "a blue star", "a cross"],
        None,
    )


def test_caption_quality_by_hand():
    scene = Scene((Obj("circle", "red", "large", 0, 0), Obj("star", "blue", "small", 1, 1)), "striped")
    assert dense_caption(scene) == TRUTH
    captions = [
        TRUTH,  # exact: 3 of 3 facts
        TRUTH.replace("blue star", "green star"),  # one wrong object: 2 of 3 right, 3 written
        TRUTH.replace(" on a striped background", ""),  # no background: 2 of 3 right, 2 written
        "a large red circle in the top left corner on a plain background",  # 1 of 3 right, 2 written, 1 object
    ]
    images = np.zeros((4, 64, 64, 3), np.uint8)
    q = caption_quality(_FixedCaptioner(captions), images, [scene] * 4)
    assert q["n"] == 4
    assert q["exact_match"] == pytest.approx(1 / 4)
    assert q["fact_recall"] == pytest.approx((3 + 2 + 2 + 1) / 12)
    assert q["fact_precision"] == pytest.approx((3 + 2 + 2 + 1) / (3 + 3 + 2 + 2))
    assert q["object_recall"] == pytest.approx((2 + 1 + 2 + 1) / 8)
    assert q["object_precision"] == pytest.approx((2 + 1 + 2 + 1) / (2 + 2 + 2 + 1))
    assert q["background_accuracy"] == pytest.approx(2 / 4)
    assert q["wrong_object_count"] == pytest.approx(1 / 4)
    # 7 of the 8 true objects have a clause at their cell; among those one colour is wrong
    assert q["cell_recall"] == pytest.approx(7 / 8)
    assert q["size_accuracy"] == q["shape_accuracy"] == 1.0
    assert q["color_accuracy"] == pytest.approx(6 / 7)
    assert all(0.0 <= v <= 1.0 for k, v in q.items() if k != "n")


def test_folding_the_standardisation_keeps_the_prefix():
    torch.manual_seed(0)
    decoder = TextDecoder(caption_vocab(), n_layer=1, n_embd=16, n_head=2, prefix_dim=6, prefix_tokens=2)
    x = torch.randn(5, 6) * 3 + 2
    mean, scale = x.mean(0), x.std(0)
    before = decoder.prefix((x - mean) / scale)
    _fold_standardisation(decoder, mean, scale)
    assert torch.allclose(decoder.prefix(x), before, atol=1e-5)
