"""PrediCIR (cirlib.models.predicir, cirlib.methods.predicir): world view generation, the target content
predictor, predictive alignment, training and resumption, the zoo kind, the method and the tiny registry,
on micro random models (no committed checkpoint is read; every cache lives under tmp_path)."""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_components import MICRO_CLIP  # noqa: E402

from cirlib.data.types import Gallery, Query
from cirlib.methods.baselines import PIC2WORD_PROMPT, fill
from cirlib.methods.predicir import PrediCIR
from cirlib.models import zoo
from cirlib.models.clip import CLIPModel, EpochSampler, build_open_clip, contrastive_loss
from cirlib.models.phi import Phi
from cirlib.models.predicir import (
    AttentionPool,
    CropConfig,
    PrediCIRArch,
    PrediCIRNet,
    PrediCIROutput,
    PrediCIRTrainConfig,
    PredictiveAlignment,
    TargetContentPredictor,
    crop_tensor,
    crop_views,
    encode_regions,
    inference_box,
    load_predicir_file,
    missing_regions,
    pool_regions,
    prediction_loss,
    region_centres,
    sample_boxes,
    sincos_2d,
    source_positions,
    train_predicir,
    world_views,
)
from cirlib.retrieval import EmbeddingCache
from cirlib.world import pretraining_pairs

MICRO = MICRO_CLIP
MEDIUM = CropConfig(0.25, 0.5)
MEDIUM_SHAPES = {(2, 2), (2, 3), (3, 2), (2, 4), (4, 2)}
#: A micro network; no dropout, so that a training step can be replayed by hand.
ARCH = PrediCIRArch(width=32, depth=1, heads=2, mlp_ratio=2.0, hidden_dim=32, dropout=0.0)
#: The warm-up covers the stop step of the resume test (see test_resume_after_warmup_*).
TRAIN = PrediCIRTrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=2, crop=MEDIUM, checkpoint_every=2)


def _net(
    arch: PrediCIRArch = ARCH, seed: int = 0, patch_dim: int = 24, embed_dim: int = 16, token_dim: int = 20
):
    torch.manual_seed(seed)
    return PrediCIRNet(patch_dim, embed_dim, token_dim, **asdict(arch)).eval()


def _inputs(n: int, seed: int = 0, patch_dim: int = 24, embed_dim: int = 16, grid: int = 4):
    g = torch.Generator().manual_seed(seed)
    regions = torch.randn(n, grid * grid, patch_dim, generator=g)
    global_feature = F.normalize(torch.randn(n, embed_dim, generator=g), dim=-1)
    action = F.normalize(torch.randn(n, embed_dim, generator=g), dim=-1)
    return regions, global_feature, action


def _equal_states(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _train(clip: CLIPModel, pairs, config: PrediCIRTrainConfig, seed: int = 0, **options) -> PrediCIRNet:
    return train_predicir(
        clip, pairs.images, pairs.captions, config, seed, num_threads=1, progress=False, **options
    )


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
    torch.manual_seed(0)
    return CLIPModel(build_open_clip(MICRO), MICRO, name="micro")


@pytest.fixture(scope="module")
def pairs():
    return pretraining_pairs(32, seed=3)


@pytest.fixture(scope="module")
def trained(clip, pairs) -> PrediCIRNet:
    return _train(clip, pairs, TRAIN, seed=0, arch=ARCH)


@pytest.fixture(scope="module")
def trained_seed1(clip, pairs) -> PrediCIRNet:
    return _train(clip, pairs, TRAIN, seed=1, arch=ARCH)


@pytest.fixture(scope="module")
def method_net(clip) -> PrediCIRNet:
    torch.manual_seed(3)
    net = PrediCIRNet(clip.model.visual.transformer.width, clip.embed_dim, clip.token_dim, **asdict(ARCH))
    net.clip_hash = clip.hash
    return net.eval()


@pytest.fixture(scope="module")
def small_gallery():
    data = pretraining_pairs(6, seed=11)
    gallery = Gallery([f"img{i}" for i in range(6)], data.images)
    texts = ["make it red", "add a star", "remove the circle", "make it bigger"]
    queries = [Query(f"q{i}", f"img{i}", (t,), f"img{i + 2}") for i, t in enumerate(texts)]
    return queries, gallery


# --------------------------------------------------------------------------- crop geometry
def test_box_shapes_of_the_medium_crop():
    assert set(MEDIUM.box_shapes(4)) == MEDIUM_SHAPES
    assert len(MEDIUM.box_shapes(4)) == len(MEDIUM_SHAPES)  # no duplicates
    assert MEDIUM.mean_area(4) == pytest.approx((4 + 6 + 6 + 8 + 8) / 5 / 16)


def test_the_full_canvas_is_never_a_crop():
    shapes = CropConfig(0.5, 1.0, max_aspect=4.0).box_shapes(4)
    assert (4, 4) not in shapes and (4, 3) in shapes and (3, 4) in shapes
    with pytest.raises(ValueError, match="allows no crop"):
        CropConfig(1.0, 1.0).box_shapes(4)  # only the full canvas would fit
    with pytest.raises(ValueError, match="allows no crop"):
        CropConfig(0.9, 0.95).box_shapes(4)


def test_sample_boxes_lie_inside_the_grid_with_allowed_shapes():
    boxes = sample_boxes(300, MEDIUM, 4, np.random.default_rng(0))
    assert boxes.shape == (300, 4) and boxes.dtype == np.int64
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 4).all()
    shapes = {(int(x1 - x0), int(y1 - y0)) for x0, y0, x1, y1 in boxes}
    assert shapes == MEDIUM_SHAPES  # only allowed shapes, and every one is drawn
    assert len({tuple(b[:2]) for b in boxes}) > 1  # positions vary too
    again = sample_boxes(300, MEDIUM, 4, np.random.default_rng(0))
    assert np.array_equal(boxes, again)
    other = sample_boxes(300, MEDIUM, 4, np.random.default_rng(1))
    assert not np.array_equal(boxes, other)


def test_missing_regions_are_row_major():
    centre = missing_regions(np.array([1, 1, 3, 3]), 4)
    assert centre.shape == (1, 16) and centre.dtype == bool
    assert set(np.flatnonzero(~centre[0])) == {5, 6, 9, 10}
    assert centre.sum() == 12
    # x0, y0, x1, y1: a box of the two left columns, then of the two top rows
    both = missing_regions(np.array([[0, 0, 2, 4], [0, 0, 4, 2]]), 4)
    assert set(np.flatnonzero(~both[0])) == {0, 1, 4, 5, 8, 9, 12, 13}
    assert set(np.flatnonzero(~both[1])) == set(range(8))
    assert not missing_regions(np.array([0, 0, 4, 4]), 4).any()


def _left_red_right_blue(n: int = 1, size: int = 64) -> np.ndarray:
    image = np.zeros((n, size, size, 3), np.uint8)
    image[:, :, : size // 2, 0] = 255
    image[:, :, size // 2 :, 2] = 255
    return image


def test_crop_views_keep_the_box_content():
    image = _left_red_right_blue()
    left = crop_views(image, np.array([[0, 0, 2, 4]]), 4)
    right = crop_views(image, np.array([[2, 0, 4, 4]]), 4)
    assert left.shape == (1, 64, 64, 3) and left.dtype == np.uint8
    # nothing of the other half leaks in, not even at the crop's inner edge
    assert (left == np.array([255, 0, 0], np.uint8)).all()
    assert (right == np.array([0, 0, 255], np.uint8)).all()
    # bilinear resizing is exact on a ramp: the crop of pixels 8..23 of a 32-pixel ramp spans their
    # centres, 32 bins of 15/32 pixel, each the mean of two samples: 8 + (j + 0.5) * 15 / 32
    ramp = torch.arange(32, dtype=torch.float32).expand(2, 3, 32, 32)
    out = crop_tensor(ramp, np.array([[1, 0, 3, 4], [1, 1, 3, 3]]), 4)
    assert out.shape == (2, 3, 32, 32)
    expected = (8 + (torch.arange(32) + 0.5) * 15 / 32).expand(3, 32, 32)
    assert torch.allclose(out[0], expected, atol=1e-4) and torch.allclose(out[1], expected, atol=1e-4)
    assert out.min() >= 8 and out.max() <= 23
    transposed = crop_tensor(ramp.transpose(2, 3), np.array([[0, 1, 4, 3]] * 2), 4)
    assert torch.allclose(transposed[0], expected.transpose(1, 2), atol=1e-4)


def test_world_views_keep_targets_and_actions(pairs):
    images, captions = pairs.images[:8], pairs.captions[:8]
    views = world_views(images, captions, MEDIUM, 4, seed=5)
    assert views.targets is images and views.actions == list(captions)
    assert views.sources.shape == images.shape and views.sources.dtype == np.uint8
    assert np.array_equal(views.missing, missing_regions(views.boxes, 4))
    assert np.array_equal(views.sources, crop_views(images, views.boxes, 4))
    shapes = {(int(x1 - x0), int(y1 - y0)) for x0, y0, x1, y1 in views.boxes}
    assert shapes <= MEDIUM_SHAPES
    again = world_views(images, captions, MEDIUM, 4, seed=5)
    assert np.array_equal(views.boxes, again.boxes)
    with pytest.raises(ValueError, match="8 images but 7 captions"):
        world_views(images, captions[:7], MEDIUM, 4, seed=5)


# --------------------------------------------------------------------------- positions and regions
def test_region_centres_and_source_positions():
    centres = region_centres(4)
    assert centres.shape == (16, 2)
    assert torch.allclose(centres[0], torch.tensor([0.125, 0.125]))
    assert torch.allclose(centres[1], torch.tensor([0.375, 0.125]))  # x varies fastest (row-major)
    assert torch.allclose(centres[4], torch.tensor([0.125, 0.375]))
    assert torch.allclose(centres[15], torch.tensor([0.875, 0.875]))
    full = source_positions(np.array([0, 0, 4, 4]), 4)
    assert full.shape == (1, 16, 2) and torch.allclose(full[0], centres)
    corner = source_positions(np.array([[2, 2, 4, 4], [0, 0, 2, 4]]), 4)
    assert corner.shape == (2, 16, 2)
    assert ((corner[0] >= 0.5) & (corner[0] <= 1.0)).all()
    assert torch.allclose(corner[0], 0.5 + 0.5 * centres)
    assert torch.allclose(corner[1, :, 0], 0.5 * centres[:, 0])  # half the width, the full height
    assert torch.allclose(corner[1, :, 1], centres[:, 1])


def test_sincos_codes():
    codes = sincos_2d(torch.rand(3, 5, 2), 8)
    assert codes.shape == (3, 5, 8)
    origin = sincos_2d(torch.zeros(2), 8)
    assert torch.allclose(origin, torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    a, b = sincos_2d(torch.tensor([[0.2, 0.7], [0.7, 0.2]]), 16)
    assert not torch.allclose(a, b)  # x and y have channels of their own
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(torch.zeros(2), 6)


def test_pool_regions_averages_blocks():
    tokens = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1)  # a 4 x 4 patch grid, row-major
    pooled = pool_regions(torch.cat([tokens, -tokens], dim=2), 2)
    assert pooled.shape == (1, 4, 2)
    assert torch.allclose(pooled[0, :, 0], torch.tensor([2.5, 4.5, 10.5, 12.5]))
    assert torch.allclose(pooled[0, :, 1], -pooled[0, :, 0])
    assert torch.equal(pool_regions(tokens, 4), tokens)
    with pytest.raises(ValueError, match="square"):
        pool_regions(torch.zeros(1, 15, 4), 1)
    with pytest.raises(ValueError, match="square"):
        pool_regions(torch.zeros(1, 16, 4), 3)


def test_inference_boxes():
    assert inference_box("center", 4).tolist() == [1, 1, 3, 3]
    assert inference_box("full", 4).tolist() == [0, 0, 4, 4]
    assert inference_box("center", 8).tolist() == [2, 2, 6, 6]
    with pytest.raises(ValueError, match="inference box"):
        inference_box("left", 4)


# --------------------------------------------------------------------------- networks
def test_network_output_shapes_and_fusion_weights():
    net = _net()
    regions, global_feature, action = _inputs(3)
    boxes = np.array([[1, 1, 3, 3], [0, 0, 2, 4], [0, 0, 4, 4]])
    with torch.no_grad():
        out = net(regions, global_feature, action, boxes)
    assert isinstance(out, PrediCIROutput)
    assert out.token.shape == (3, 20) and out.predicted.shape == (3, 16, 24)
    assert out.query_active.shape == (3, 16) and out.fusion_weights.shape == (3, 3)
    assert torch.allclose(out.fusion_weights.sum(dim=1), torch.ones(3), atol=1e-6)
    assert (out.fusion_weights > 0).all()
    assert not torch.allclose(out.fusion_weights[0], out.fusion_weights[1])  # input-dependent
    assert torch.equal(out.query_active, net.query_slots(boxes))
    # one box serves the whole batch
    with torch.no_grad():
        single = net(regions, global_feature, action, np.array([1, 1, 3, 3]))
        repeated = net(regions, global_feature, action, np.repeat([[1, 1, 3, 3]], 3, axis=0))
    assert torch.allclose(single.token, repeated.token)
    none = _net(replace(ARCH, prediction="none"))
    with torch.no_grad():
        out = none(regions, global_feature, action, boxes)
    assert out.fusion_weights.shape == (3, 2) and not out.query_active.any()
    assert torch.allclose(out.fusion_weights.sum(dim=1), torch.ones(3), atol=1e-6)


def test_query_slots():
    boxes = np.array([[1, 1, 3, 3], [0, 0, 4, 4]])
    missing = _net().query_slots(boxes)
    assert missing.dtype == torch.bool
    assert torch.equal(missing[0], torch.from_numpy(missing_regions(boxes[:1], 4)[0]))
    assert missing[0].sum() == 12
    assert missing[1].all()  # nothing is missing: every region is predicted
    assert _net(replace(ARCH, prediction="whole")).query_slots(boxes).all()
    assert not _net(replace(ARCH, prediction="none")).query_slots(boxes).any()


def test_fixed_fusion_weights_are_equal():
    net = _net(replace(ARCH, adaptive_fusion=False))
    with torch.no_grad():
        out = net(*_inputs(4), np.array([1, 1, 3, 3]))
    assert torch.equal(out.fusion_weights, torch.full((4, 3), 1.0 / 3))
    none = _net(replace(ARCH, adaptive_fusion=False, prediction="none"))
    with torch.no_grad():
        assert torch.equal(none(*_inputs(2), np.array([1, 1, 3, 3])).fusion_weights, torch.full((2, 2), 0.5))


def test_invalid_prediction_is_refused():
    with pytest.raises(ValueError, match="prediction must be one of"):
        PrediCIRNet(24, 16, 20, prediction="target")


def test_attention_pool_ignores_invalid_tokens():
    torch.manual_seed(0)
    pool = AttentionPool(8)
    tokens = torch.randn(2, 5, 8)
    valid = torch.tensor([[True, True, False, True, False], [False, False, False, False, False]])
    pooled = pool(tokens, valid)
    poisoned = tokens.clone()
    poisoned[~valid] = 1e6
    assert torch.allclose(pool(poisoned, valid), pooled, atol=1e-6)
    assert torch.equal(pooled[1], torch.zeros(8))  # no valid token: zero, not NaN
    scores = pool.score(tokens[0]).squeeze(-1)[[0, 1, 3]]
    expected = (torch.softmax(scores, 0).unsqueeze(1) * tokens[0, [0, 1, 3]]).sum(0)
    assert torch.allclose(pooled[0], expected, atol=1e-6)


def test_inactive_slots_do_not_reach_the_token():
    torch.manual_seed(0)
    alignment = PredictiveAlignment(24, 32, 16, 20, 32, 0.0, adaptive=True, use_prediction=True).eval()
    active = torch.from_numpy(missing_regions(np.array([[1, 1, 3, 3], [0, 0, 2, 4]]), 4))
    predicted, enhanced = torch.randn(2, 16, 24), torch.randn(2, 16, 32)
    global_feature = F.normalize(torch.randn(2, 16), dim=-1)
    token, weights = alignment(predicted, active, enhanced, global_feature)
    poisoned = predicted.clone()
    poisoned[~active] = 1e4
    token2, weights2 = alignment(poisoned, active, enhanced, global_feature)
    assert torch.allclose(token, token2, atol=1e-5) and torch.allclose(weights, weights2, atol=1e-6)
    changed = predicted.clone()
    changed[active] += 1.0
    assert not torch.allclose(alignment(changed, active, enhanced, global_feature)[0], token)


def test_inactive_mask_slots_are_not_attended_to():
    torch.manual_seed(0)
    predictor = TargetContentPredictor(24, 16, 32, depth=2, heads=2, mlp_ratio=2.0).eval()
    regions, _, action = _inputs(2)
    boxes = np.array([[1, 1, 3, 3], [0, 0, 2, 4]])
    active = torch.from_numpy(missing_regions(boxes, 4))
    positions = source_positions(boxes, 4)
    query_pos = region_centres(4).expand(2, -1, -1).clone()
    with torch.no_grad():
        predicted, enhanced = predictor(regions, positions, action, query_pos, active)
        moved = query_pos.clone()
        moved[~active] = torch.rand(int((~active).sum()), 2)
        predicted2, enhanced2 = predictor(regions, positions, action, moved, active)
        assert torch.allclose(enhanced, enhanced2, atol=1e-5)
        assert torch.allclose(predicted[active], predicted2[active], atol=1e-5)
        everything = torch.ones_like(active)
        predicted3, enhanced3 = predictor(regions, positions, action, moved, everything)
    assert not torch.allclose(enhanced, enhanced3, atol=1e-4)  # active slots are attended to
    assert enhanced.shape == (2, 16, 32) and predicted.shape == (2, 16, 24)


def test_prediction_loss_by_hand():
    predicted = torch.tensor([[[-1.0, 1.0], [0.0, 0.0], [9.0, 9.0]]], requires_grad=True)
    targets = torch.tensor(
        [[[1.0, 3.0], [5.0, 1.0], [0.0, 0.0]]]
    )  # layer-normalised: (-1, 1), (1, -1), (0, 0)
    scale = 1.0 / (1.0 + 1e-5)  # (x - mean)^2 / (var + eps) with var = 1
    out = PrediCIROutput(torch.zeros(1, 4), predicted, torch.tensor([[True, True, False]]), torch.zeros(1, 3))
    loss = prediction_loss(out, targets)
    # slot 0: 0; slot 1: ((0 - (-1))^2 + (0 - 1)^2) / 2 = 1 (times the eps scale); slot 2 ignored
    assert float(loss.detach()) == pytest.approx(0.5 * scale, rel=1e-5)
    loss.backward()
    assert predicted.grad[0, 2].abs().sum() == 0 and predicted.grad[0, 1].abs().sum() > 0
    out = out._replace(query_active=torch.tensor([[True, False, True]]))
    assert float(prediction_loss(out, targets)) == pytest.approx(81.0 / 2, rel=1e-5)


def test_prediction_loss_without_active_slots_is_zero_and_differentiable():
    predicted = torch.randn(2, 16, 8, requires_grad=True)
    out = PrediCIROutput(
        torch.zeros(2, 4), predicted, torch.zeros(2, 16, dtype=torch.bool), torch.zeros(2, 2)
    )
    loss = prediction_loss(out, torch.randn(2, 16, 8))
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(predicted.grad, torch.zeros_like(predicted))


# --------------------------------------------------------------------------- training
def test_training_records_both_losses_and_replays_the_first_step(clip, pairs, trained):
    losses = trained.training_losses
    assert len(losses) == TRAIN.steps and all(len(pair) == 2 for pair in losses)
    assert all(np.isfinite(value) and value > 0 for pair in losses for value in pair)
    assert not trained.training and trained.clip_hash == clip.hash
    # step 0 by hand: batch, crops, frozen-CLIP features, the net's init, both losses
    torch.manual_seed(0)
    net = PrediCIRNet(
        clip.model.visual.transformer.width, clip.embed_dim, clip.token_dim, **asdict(ARCH)
    ).train()
    index = EpochSampler(len(pairs.images), TRAIN.batch_size, 0).batch(0)
    boxes = sample_boxes(len(index), TRAIN.crop, 4, np.random.default_rng([0, 0, 31]))
    images = pairs.images[index]
    source_global, source_regions = encode_regions(
        clip, crop_tensor(clip.preprocess_images(images), boxes, 4), 4
    )
    target_global, target_regions = encode_regions(clip, clip.preprocess_images(images), 4)
    with pytest.warns(UserWarning, match="context length"):
        actions = clip.encode_texts(list(pairs.captions))[index]
    out = net(source_regions, source_global, actions, boxes)
    tokens, positions = clip.tokenize_with_placeholder([TRAIN.prompt])
    text = clip.text_features_with_pseudo(
        tokens.expand(len(index), -1), positions.expand(len(index)), out.token
    )
    align = contrastive_loss(target_global, F.normalize(text, dim=-1), float(clip.model.logit_scale.exp()))
    predict = prediction_loss(out, target_regions.half().float())
    assert losses[0] == pytest.approx([float(align), float(predict)], rel=1e-4)
    # ... and training moved the weights of every part away from that init
    before, after = dict(net.named_parameters()), dict(trained.named_parameters())
    for name in (
        "predictor.mask_token",
        "predictor.head.weight",
        "predictor.source_in.1.weight",
        "alignment.gate.0.weight",
        "alignment.predicted_in.weight",
        "alignment.to_token.7.weight",
    ):
        assert not torch.equal(before[name], after[name]), name


def test_training_is_deterministic(clip, pairs, trained, trained_seed1):
    again = _train(clip, pairs, TRAIN, seed=0, arch=ARCH)
    assert _equal_states(again, trained)
    assert again.training_losses == trained.training_losses
    assert not _equal_states(trained_seed1, trained)


def test_resumed_training_equals_an_uninterrupted_run(clip, pairs, trained, tmp_path):
    stopped = _train(clip, pairs, TRAIN, 0, arch=ARCH, resume_dir=tmp_path, stop_after=2)
    assert (tmp_path / "train_state.pt").exists() and len(stopped.training_losses) == 2
    assert not _equal_states(stopped, trained)
    # mark the saved losses, to tell a resumed run from one that silently started over
    state_path = tmp_path / "train_state.pt"
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["losses"] == trained.training_losses[:2]
    assert all(torch.equal(v, stopped.state_dict()[k]) for k, v in state["model"].items())
    state["losses"] = [[-1.0, -1.0], [-2.0, -2.0]]
    torch.save(state, state_path)
    resumed = _train(clip, pairs, TRAIN, 0, arch=ARCH, resume_dir=tmp_path)
    assert _equal_states(resumed, trained)
    assert resumed.training_losses == [[-1.0, -1.0], [-2.0, -2.0]] + trained.training_losses[2:]


def test_a_state_of_another_run_is_not_resumed(clip, pairs, trained_seed1, tmp_path):
    _train(clip, pairs, TRAIN, 0, arch=ARCH, resume_dir=tmp_path, stop_after=2)
    seed1 = _train(clip, pairs, TRAIN, 1, arch=ARCH, resume_dir=tmp_path)
    assert _equal_states(seed1, trained_seed1) and len(seed1.training_losses) == TRAIN.steps


def test_resume_after_warmup_equals_an_uninterrupted_run(clip, pairs, tmp_path):
    config = replace(TRAIN, warmup_steps=1)
    _train(clip, pairs, config, 0, arch=ARCH, resume_dir=tmp_path, stop_after=2)
    resumed = _train(clip, pairs, config, 0, arch=ARCH, resume_dir=tmp_path)
    full = _train(clip, pairs, config, 0, arch=ARCH)
    assert _equal_states(resumed, full)


def test_resume_with_dropout_equals_an_uninterrupted_run(clip, pairs, tmp_path):
    arch = replace(ARCH, dropout=0.1)
    full = _train(clip, pairs, TRAIN, 0, arch=arch)
    _train(clip, pairs, TRAIN, 0, arch=arch, resume_dir=tmp_path, stop_after=2)
    resumed = _train(clip, pairs, TRAIN, 0, arch=arch, resume_dir=tmp_path)
    assert _equal_states(resumed, full)


def test_bad_training_inputs_are_refused(clip, pairs):
    with pytest.raises(ValueError, match="32 images but 31 captions"):
        train_predicir(clip, pairs.images, pairs.captions[:31], TRAIN, arch=ARCH, progress=False)
    with pytest.raises(ValueError, match="allows no crop"):
        _train(clip, pairs, replace(TRAIN, crop=CropConfig(1.0, 1.0)), arch=ARCH)


# --------------------------------------------------------------------------- zoo
def test_predicir_round_trips_through_the_zoo(tmp_path):
    net = _net(replace(ARCH, prediction="whole", adaptive_fusion=False, grid=2), seed=4)
    net.clip_hash = "0123456789abcdef"
    path = zoo.save_checkpoint("micro-predicir", net, {"steps": 1}, 0, "pytest", root=tmp_path)
    assert zoo.read_registry(tmp_path)["micro-predicir"]["kind"] == "predicir"
    for loaded in (
        zoo.load_file(path),
        load_predicir_file(path),
        zoo.load_checkpoint("micro-predicir", root=tmp_path),
    ):
        assert isinstance(loaded, PrediCIRNet) and not loaded.training
        assert loaded.arch == net.arch and loaded.clip_hash == net.clip_hash
        assert loaded.grid == 2 and loaded.prediction == "whole"
        regions, global_feature, action = _inputs(3, seed=1, grid=2)
        with torch.no_grad():  # fp16 storage: equal up to half precision
            a = net(regions, global_feature, action, np.array([0, 0, 1, 2]))
            b = loaded(regions, global_feature, action, np.array([0, 0, 1, 2]))
        assert torch.allclose(a.token, b.token, atol=1e-2, rtol=1e-2)
        assert torch.allclose(a.predicted, b.predicted, atol=1e-2, rtol=1e-2)
        assert torch.equal(a.fusion_weights, b.fusion_weights)


def test_load_predicir_file_refuses_missing_and_foreign_files(tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_predicir_file(missing)
    phi_path = zoo.save_checkpoint("micro-phi", Phi(16, 20, hidden_dim=8), {}, 0, "pytest", root=tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(phi_path)) + ".*Phi"):
        load_predicir_file(phi_path)


# --------------------------------------------------------------------------- the method
def test_method_composes_the_predicted_pseudo_word(clip, method_net, small_gallery, tmp_path):
    queries, gallery = small_gallery
    method = PrediCIR(clip, method_net, cache=EmbeddingCache(tmp_path))
    with torch.inference_mode():
        embeddings = method.encode_queries(queries, gallery)
    assert embeddings.shape == (len(queries), clip.embed_dim)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(len(queries)), atol=1e-5)
    # by hand: references -> regions -> net at the centre box -> "a photo of $ that {text}"
    texts = [q.texts[0] for q in queries]
    refs = gallery.pixels([q.reference for q in queries])
    global_feature, regions = encode_regions(clip, clip.preprocess_images(refs), 4)
    with torch.no_grad():
        out = method_net(regions, global_feature, clip.encode_texts(texts), inference_box("center", 4))
    expected = clip.encode_texts_with_pseudo([fill(PIC2WORD_PROMPT, t) for t in texts], out.token)
    assert torch.allclose(embeddings, F.normalize(expected, dim=-1), atol=1e-5)
    assert torch.allclose(method.predict_queries(queries, gallery).token, out.token, atol=1e-5)


def test_reference_regions_are_cached(clip, method_net, small_gallery, tmp_path):
    queries, gallery = small_gallery
    cache = EmbeddingCache(tmp_path)
    method = PrediCIR(clip, method_net, cache=cache)
    global_feature, regions = method.reference_regions(queries, gallery)
    assert global_feature.shape == (4, clip.embed_dim) and regions.shape == (4, 16, 32)
    assert (cache.hits, cache.misses) == (0, 1)
    again = method.reference_regions(queries, gallery)
    assert (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(again[0], global_feature) and torch.equal(again[1], regions)
    refs = gallery.pixels([q.reference for q in queries])
    expected_global, expected_regions = encode_regions(clip, clip.preprocess_images(refs), 4)
    assert torch.allclose(global_feature, expected_global, atol=1e-6)
    assert torch.allclose(regions, expected_regions, atol=1e-6)
    # another grid is another key
    coarse = _net(replace(ARCH, grid=2), patch_dim=32, embed_dim=32, token_dim=32)
    _, coarse_regions = PrediCIR(clip, coarse, cache=cache).reference_regions(queries, gallery)
    assert coarse_regions.shape == (4, 4, 32) and cache.misses == 2


def test_method_options(clip, method_net, small_gallery, tmp_path):
    queries, gallery = small_gallery
    method = PrediCIR(clip, method_net, cache=EmbeddingCache(tmp_path))
    full = method.with_options(box="full")
    assert full.box == "full" and method.box == "center"
    assert full.net is method.net and full.clip is method.clip and full.cache is method.cache
    with torch.inference_mode():
        a, b = method.encode_queries(queries, gallery), full.encode_queries(queries, gallery)
    assert not torch.allclose(a, b, atol=1e-4)
    assert method.with_options(name="predicir-full").name == "predicir-full" and method.name == "predicir"
    with pytest.raises(TypeError, match="unknown PrediCIR options: grid"):
        method.with_options(grid=2)
    with pytest.raises(ValueError, match="box must be one of"):
        method.with_options(box="left")
    with pytest.raises(ValueError, match="box must be one of"):
        PrediCIR(clip, method_net, box="left", cache=EmbeddingCache(tmp_path))
    with pytest.raises(ValueError, match="must contain"):
        PrediCIR(clip, method_net, prompt="a photo that {text}", cache=EmbeddingCache(tmp_path))


def test_method_refuses_a_network_of_another_clip(clip, method_net, tmp_path):
    other = copy.deepcopy(method_net)
    other.clip_hash = "0123456789abcdef"
    with pytest.raises(ValueError, match="trained with CLIP 0123456789abcdef"):
        PrediCIR(clip, other, cache=EmbeddingCache(tmp_path))
    other.clip_hash = None  # an untagged network is accepted
    assert PrediCIR(clip, other, cache=EmbeddingCache(tmp_path)).net is other


def test_paper_profile_needs_a_checkpoint(tmp_path):
    from cirlib.methods import build_method

    with pytest.raises(ValueError, match="no official PrediCIR weights"):
        build_method("predicir", "paper")
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_method("predicir", "paper", checkpoint=missing)


# --------------------------------------------------------------------------- registry
def test_tiny_registry_has_predicir_and_its_ablations():
    from cirlib.models.tiny import (
        PREDICIR_CROP,
        PREDICIR_CROPS,
        PREDICIR_NAME,
        PREDICIR_RECIPE,
        predicir_crop_names,
        predicir_recipes,
    )
    from cirlib.training import ALL_MODELS

    recipes = predicir_recipes()
    assert PREDICIR_NAME == "tiny-predicir" and PREDICIR_CROP == "large"  # chosen on val (notebook 03)
    assert set(recipes) == {
        "tiny-predicir",
        "tiny-predicir-crop-small",
        "tiny-predicir-crop-medium",
        "tiny-predicir-whole",
        "tiny-predicir-fixed-fusion",
        "tiny-predicir-no-prediction",
    }
    base = recipes["tiny-predicir"]
    assert base.train.crop == PREDICIR_CROPS["large"] and PREDICIR_CROPS["medium"] == MEDIUM
    assert (
        base.arch == PREDICIR_RECIPE.arch and base.arch.prediction == "missing" and base.arch.adaptive_fusion
    )
    assert replace(base.train, crop=PREDICIR_RECIPE.train.crop) == PREDICIR_RECIPE.train
    for crop_name in ("small", "medium"):
        recipe = recipes[f"tiny-predicir-crop-{crop_name}"]
        assert recipe.train.crop == PREDICIR_CROPS[crop_name] != base.train.crop
        assert recipe == replace(base, train=replace(base.train, crop=PREDICIR_CROPS[crop_name]))
    assert recipes["tiny-predicir-whole"] == replace(base, arch=replace(base.arch, prediction="whole"))
    assert recipes["tiny-predicir-fixed-fusion"] == replace(
        base, arch=replace(base.arch, adaptive_fusion=False)
    )
    assert recipes["tiny-predicir-no-prediction"] == replace(base, arch=replace(base.arch, prediction="none"))
    assert predicir_crop_names() == {
        "small": "tiny-predicir-crop-small",
        "medium": "tiny-predicir-crop-medium",
        "large": "tiny-predicir",
    }
    assert set(predicir_crop_names().values()) <= set(recipes)
    assert set(recipes) <= set(ALL_MODELS)
    assert len(set(ALL_MODELS)) == len(ALL_MODELS)
    for crop in PREDICIR_CROPS.values():
        crop.box_shapes(base.arch.grid)  # every crop of the sweep is possible on the recipes' grid
