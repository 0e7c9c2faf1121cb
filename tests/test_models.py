"""Tests of cirlib.models on stand-in data (random uint8 images, simple captions) and micro widths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cirlib.models import (
    CLIPModel,
    CLIPTrainConfig,
    MissingWeightsError,
    Phi,
    PhiTrainConfig,
    PlaceholderError,
    build_open_clip,
    load_clip,
    train_clip,
    train_phi,
    zoo,
)
from cirlib.models import paper as paper_mod
from cirlib.models.clip import TINY_CLIP_CONFIG, EpochSampler
from cirlib.models.phi import DistilConfig, OTIConfig, optimise_pseudo_tokens, train_phi_distilled

#: Real kind (open_clip.CLIP, real tokenizer and vocabulary), micro widths so that tests take seconds.
MICRO = {
    "embed_dim": 32,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["cube", "ball", "cone", "ring"]


def micro_cfg(**kw) -> CLIPTrainConfig:
    base = dict(arch=MICRO, steps=6, batch_size=16, lr=2e-3, warmup_steps=1, checkpoint_every=3)
    base.update(kw)
    return CLIPTrainConfig(**base)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Micro models run fastest on one thread (and do not stall when other jobs share the cores)."""
    prev, prev_env = torch.get_num_threads(), os.environ.get("CIRLIB_THREADS")
    torch.set_num_threads(1)
    os.environ["CIRLIB_THREADS"] = "1"
    yield
    torch.set_num_threads(prev)
    if prev_env is None:
        del os.environ["CIRLIB_THREADS"]
    else:
        os.environ["CIRLIB_THREADS"] = prev_env


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[str]]:
    """48 images whose mean colour encodes the caption, so that a few steps can learn something."""
    rng = np.random.default_rng(0)
    n = 48
    images = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        c, s = i % 4, (i // 4) % 4
        images[i, :, :, c % 3] += np.uint8(120 + 40 * (c // 3))
        images[i, : 8 * (s + 1), :, :] += np.uint8(50)
        captions.append(f"a {COLOURS[c]} {SHAPES[s]}")
    return images, captions


@pytest.fixture(scope="module")
def clip(data) -> CLIPModel:
    images, captions = data
    return train_clip(images, captions, micro_cfg(steps=4), seed=0, progress=False, num_threads=1)


def state(clip: CLIPModel) -> dict[str, torch.Tensor]:
    return clip.model.state_dict()


def assert_same_weights(a: CLIPModel, b: CLIPModel) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- encoders
def test_tiny_config_is_real_open_clip_and_sized_as_documented() -> None:
    model = build_open_clip(TINY_CLIP_CONFIG)
    n = sum(p.numel() for p in model.parameters())
    assert 7.0e6 < n < 8.5e6
    assert model.visual.image_size == (64, 64) and model.context_length == 32


def test_shapes_and_normalisation(clip: CLIPModel, data) -> None:
    images, captions = data
    img = clip.encode_images(images, batch_size=7)
    txt = clip.encode_texts(captions[:5])
    assert img.shape == (len(images), clip.embed_dim) and txt.shape == (5, clip.embed_dim)
    assert torch.allclose(img.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(5), atol=1e-5)
    assert not img.is_inference() and not img.requires_grad
    # batching does not change results; other image sizes are resized
    assert torch.allclose(img, clip.encode_images(images, batch_size=256), atol=1e-6)
    assert clip.encode_images(np.zeros((2, 48, 40, 3), np.uint8)).shape == (2, clip.embed_dim)
    assert clip.token_dim == 32 and clip.embed_dim == 32 and clip.image_size == 32


def test_long_texts_warn(clip: CLIPModel) -> None:
    with pytest.warns(UserWarning, match="1 of 2 texts fill the context length 16"):
        clip.encode_texts(["a red cube", " ".join(["red"] * 40)])


def test_encode_images_rejects_wrong_input(clip: CLIPModel) -> None:
    with pytest.raises(ValueError, match="uint8"):
        clip.encode_images(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        clip.encode_images(np.zeros((32, 32, 3), np.uint8))


def test_placeholder_is_one_token(clip: CLIPModel) -> None:
    assert clip.tokenizer.encode("$") == [clip.placeholder_id]
    # glued to punctuation it would merge; the wrapper spaces it
    tokens, pos = clip.tokenize_with_placeholder(["a photo of $.", "$, red", "($)"])
    assert (tokens == clip.placeholder_id).sum(dim=1).tolist() == [1, 1, 1]
    assert tokens[torch.arange(3), pos].tolist() == [clip.placeholder_id] * 3


def test_pseudo_injection_equals_encode_text(clip: CLIPModel) -> None:
    words = ["cube", "red", "cat"]
    templates = ["a photo of $", "a $ ball on the left", "$ that is big"]
    pseudo = clip.token_embedding_of(words)
    got = clip.encode_texts_with_pseudo(templates, pseudo)
    want = clip.encode_texts([t.replace("$", w) for t, w in zip(templates, words)])
    assert torch.allclose(got, want, atol=1e-5)
    # and the raw (unnormalised) features match open_clip's encode_text itself
    tokens, pos = clip.tokenize_with_placeholder(templates)
    raw = clip.text_features_with_pseudo(tokens, pos, pseudo)
    ref = clip.model.encode_text(clip.tokenize([t.replace("$", w) for t, w in zip(templates, words)]))
    assert torch.allclose(raw, ref, atol=1e-5)
    # a different pseudo token changes the result
    other = clip.encode_texts_with_pseudo(templates, torch.randn(3, clip.token_dim))
    assert not torch.allclose(other, got, atol=1e-3)


def test_placeholder_errors(clip: CLIPModel) -> None:
    pseudo = torch.zeros(1, clip.token_dim)
    with pytest.raises(PlaceholderError, match="0 times"):
        clip.encode_texts_with_pseudo(["a photo of a cat"], pseudo)
    with pytest.raises(PlaceholderError, match="2 times"):
        clip.encode_texts_with_pseudo(["a $ and a $"], pseudo)
    with pytest.raises(PlaceholderError, match="2 times"):
        clip.encode_texts_with_pseudo(["$$"], pseudo)
    with pytest.raises(PlaceholderError, match="truncat"), pytest.warns(UserWarning, match="truncated"):
        clip.encode_texts_with_pseudo([" ".join(["word"] * 30) + " $"], pseudo)
    with pytest.raises(ValueError, match="shape"):
        clip.encode_texts_with_pseudo(["a photo of $"], torch.zeros(2, clip.token_dim))
    with pytest.raises(ValueError, match="not one"):
        clip.token_embedding_of(["photograph123xyz"])


def test_hash_depends_on_weights(clip: CLIPModel) -> None:
    h = clip.hash
    assert len(h) == 16 and h == clip.hash
    copy = CLIPModel(build_open_clip(MICRO), MICRO)
    copy.model.load_state_dict(clip.model.state_dict())
    assert copy.hash == h
    with torch.no_grad():
        copy.model.ln_final.weight[0] += 1e-3
    copy._hash = None
    assert copy.hash != h


# ----------------------------------------------------------------------------- training
def test_training_reduces_loss(data) -> None:
    images, captions = data
    clip = train_clip(
        images[:16], captions[:16], micro_cfg(steps=15, batch_size=16), seed=0, progress=False, num_threads=1
    )
    losses = clip.training_losses
    assert len(losses) == 15
    assert np.mean(losses[-3:]) < losses[0] - 0.3


def test_training_is_deterministic(data) -> None:
    images, captions = data
    a = train_clip(images, captions, micro_cfg(steps=3), seed=1, progress=False, num_threads=1)
    b = train_clip(images, captions, micro_cfg(steps=3), seed=1, progress=False, num_threads=1)
    c = train_clip(images, captions, micro_cfg(steps=3), seed=2, progress=False, num_threads=1)
    assert_same_weights(a, b)
    assert a.hash == b.hash != c.hash


def test_resume_equals_uninterrupted(data, tmp_path: Path) -> None:
    images, captions = data
    cfg = micro_cfg(steps=6, augment_max_shift=2, augment_hflip=True)
    full = train_clip(images, captions, cfg, seed=3, progress=False, num_threads=1)
    part = train_clip(
        images, captions, cfg, seed=3, resume_dir=tmp_path, stop_after=3, progress=False, num_threads=1
    )
    assert (tmp_path / "train_state.pt").exists() and len(part.training_losses) == 3
    resumed = train_clip(images, captions, cfg, seed=3, resume_dir=tmp_path, progress=False, num_threads=1)
    assert_same_weights(full, resumed)
    assert resumed.training_losses == pytest.approx(full.training_losses, abs=0)
    with pytest.raises(RuntimeError, match="another run"):
        train_clip(images, captions, cfg, seed=4, resume_dir=tmp_path, progress=False, num_threads=1)


def test_sampler_is_a_function_of_step() -> None:
    s1, s2 = EpochSampler(10, 4, seed=0), EpochSampler(10, 4, seed=0)
    seq = [s1.batch(i) for i in range(6)]
    assert np.array_equal(s2.batch(5), seq[5])
    first_epoch = np.concatenate(seq)[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))


# ----------------------------------------------------------------------------- phi
def test_phi_training_shapes(clip: CLIPModel, data) -> None:
    images, _ = data
    phi = train_phi(
        clip,
        images,
        PhiTrainConfig(steps=5, batch_size=16, hidden_dim=64),
        seed=0,
        progress=False,
    )
    assert isinstance(phi, Phi) and phi.clip_hash == clip.hash and len(phi.training_losses) == 5
    feats = clip.encode_images(images)
    tokens = phi.pseudo_tokens(feats)
    assert tokens.shape == (len(images), clip.token_dim)
    q = clip.encode_texts_with_pseudo(["a photo of $ that is red"] * len(images), tokens)
    assert q.shape == (len(images), clip.embed_dim)
    again = train_phi(
        clip,
        None,
        PhiTrainConfig(steps=5, batch_size=16, hidden_dim=64),
        seed=0,
        image_features=feats,
        progress=False,
    )
    for (k, v), w in zip(phi.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k


def test_phi_learns_to_invert(data) -> None:
    """With a frozen CLIP, phi's prompt features move towards their own images over training."""
    images, captions = data
    clip = train_clip(images, captions, micro_cfg(steps=10), seed=0, progress=False, num_threads=1)
    phi = train_phi(
        clip,
        images,
        PhiTrainConfig(steps=40, batch_size=48, lr=3e-3, hidden_dim=64, warmup_steps=2),
        seed=0,
        progress=False,
    )
    assert np.mean(phi.training_losses[-5:]) < phi.training_losses[0]


def test_oti_and_distillation(clip: CLIPModel, data) -> None:
    images, _ = data
    feats = clip.encode_images(images[:12])
    cfg = OTIConfig(steps=15, batch_size=8, lr=5e-2)
    tokens = optimise_pseudo_tokens(clip, feats, cfg, seed=0, progress=False, num_threads=1)
    assert tokens.shape == (12, clip.token_dim)
    sims = (clip.encode_texts_with_pseudo(["a photo of $"] * 12, tokens) * feats).sum(-1)
    init = torch.randn(12, clip.token_dim, generator=torch.Generator().manual_seed(0)) * 0.02
    sims0 = (clip.encode_texts_with_pseudo(["a photo of $"] * 12, init) * feats).sum(-1)
    assert sims.mean() > sims0.mean()
    reg = optimise_pseudo_tokens(
        clip,
        feats,
        OTIConfig(steps=3, batch_size=8),
        seed=0,
        concept_words=COLOURS + SHAPES,
        progress=False,
    )
    assert reg.shape == tokens.shape
    phi = train_phi_distilled(
        clip,
        feats,
        tokens,
        DistilConfig(steps=4, batch_size=8),
        seed=0,
        concept_words=COLOURS,
        progress=False,
    )
    assert phi.pseudo_tokens(feats).shape == (12, clip.token_dim)
    assert phi.arch["activation"] == "gelu" and phi.arch["hidden_dim"] == 4 * clip.embed_dim


# ----------------------------------------------------------------------------- zoo
def test_zoo_round_trip(clip: CLIPModel, tmp_path: Path) -> None:
    path = zoo.save_checkpoint(
        "micro-clip", clip, micro_cfg(steps=4), 0, "pytest", {"r1": 1.5}, root=tmp_path
    )
    assert path.exists() and path.suffix == ".safetensors"
    reg = json.loads((tmp_path / "registry.json").read_text())
    entry = reg["micro-clip"]
    assert entry["kind"] == "clip" and entry["seed"] == 0 and entry["command"] == "pytest"
    assert entry["metrics"] == {"r1": 1.5} and len(entry["sha256"]) == 64
    loaded = zoo.load_checkpoint("micro-clip", root=tmp_path)
    assert isinstance(loaded, CLIPModel)
    for k, v in state(clip).items():  # fp16 storage: close, not equal
        assert torch.allclose(loaded.model.state_dict()[k], v, atol=2e-3, rtol=1e-3), k
    assert loaded.model.token_embedding.weight.dtype == torch.float32
    # tiny-profile load_clip through a path, and a phi round trip
    assert load_clip(path).hash == loaded.hash
    phi = Phi(clip.embed_dim, clip.token_dim, hidden_dim=16)
    phi.clip_hash = clip.hash
    zoo.save_checkpoint("micro-phi", phi, {"steps": 1}, 0, "pytest", root=tmp_path)
    phi2 = zoo.load_checkpoint("micro-phi", root=tmp_path)
    assert isinstance(phi2, Phi) and phi2.clip_hash == clip.hash and phi2.arch == phi.arch
    assert set(zoo.list_checkpoints(tmp_path)) == {"micro-clip", "micro-phi"}


def test_zoo_sha_mismatch_and_missing_file(clip: CLIPModel, tmp_path: Path) -> None:
    path = zoo.save_checkpoint(
        "micro-clip", clip, {"a": 1}, 0, "cirlib train --name micro-clip", root=tmp_path
    )
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.CheckpointError, match="sha256.*cirlib train --name micro-clip"):
        zoo.load_checkpoint("micro-clip", root=tmp_path)
    path.unlink()
    with pytest.raises(zoo.CheckpointError, match=r"micro-clip\.safetensors is missing.*cirlib train"):
        zoo.load_checkpoint("micro-clip", root=tmp_path)
    with pytest.raises(zoo.CheckpointError, match="no checkpoint named 'nope'"):
        zoo.load_checkpoint("nope", root=tmp_path)


def test_load_or_train(clip: CLIPModel, tmp_path: Path) -> None:
    calls = []

    def train():
        calls.append(1)
        return clip

    a = zoo.load_or_train("lot", train, config={"x": 1}, seed=0, command="pytest", root=tmp_path)
    b = zoo.load_or_train("lot", train, config={"x": 1}, seed=0, command="pytest", root=tmp_path)
    assert len(calls) == 1 and a.hash == b.hash  # first result is the one read back from fp16
    with pytest.warns(UserWarning, match="retraining"):
        zoo.load_or_train("lot", train, config={"x": 2}, seed=0, command="pytest", root=tmp_path)
    assert len(calls) == 2


# ----------------------------------------------------------------------------- paper profile
def test_paper_missing_weights_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CIRLIB_WEIGHTS", raising=False)
    with pytest.raises(MissingWeightsError, match="--weights DIR or CIRLIB_WEIGHTS"):
        load_clip("ViT-L-14", profile="paper")
    with pytest.raises(MissingWeightsError) as err:
        load_clip("ViT-L-14", profile="paper", weights=tmp_path)
    msg = str(err.value)
    assert "ViT-L-14-openai.safetensors" in msg and str(tmp_path) in msg
    assert "timm/vit_large_patch14_clip_224.openai" in msg and "pretrained='openai'" in msg
    monkeypatch.setenv("CIRLIB_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="ViT-bigG-14-laion2b_s39b_b160k"):
        load_clip("ViT-bigG-14", profile="paper")
    with pytest.raises(KeyError):
        load_clip("ViT-H-99", profile="paper", weights=tmp_path)


def test_paper_tiny_random_model_loads_through_open_clip(tmp_path: Path, monkeypatch) -> None:
    """A ViT of the real kind (open_clip built-in-style config, QuickGELU like OpenAI) but tiny, with
    random weights saved to a file, loaded by the paper code path (create_model(pretrained=file))."""
    import open_clip
    import safetensors.torch

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "cirlib-test-ViT-T-16.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfg" / "cirlib-test-ViT-T-16.json")
    backbone = paper_mod.PaperBackbone("cirlib-test-ViT-T-16", "random", "none/none", quick_gelu=True)
    monkeypatch.setitem(paper_mod.PAPER_BACKBONES, "cirlib-test-ViT-T-16", backbone)
    torch.manual_seed(0)
    ref = open_clip.CLIP(**cfg, quick_gelu=True)
    weights = tmp_path / "w"
    weights.mkdir()
    safetensors.torch.save_file(ref.state_dict(), weights / paper_mod.expected_filename(backbone))

    clip = load_clip("cirlib-test-ViT-T-16", profile="paper", weights=weights)
    assert clip.profile == "paper" and clip.image_size == 32 and clip.embed_dim == 16
    for k, v in ref.state_dict().items():
        assert torch.equal(clip.model.state_dict()[k], v), k
    imgs = np.random.default_rng(0).integers(0, 255, (3, 50, 40, 3), dtype=np.uint8)
    emb = clip.encode_images(imgs)  # open_clip's own PIL transform (resize + centre crop)
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    with torch.inference_mode():
        x = clip.preprocess_images(imgs)
        assert torch.allclose(emb, torch.nn.functional.normalize(ref.encode_image(x), dim=-1), atol=1e-5)
    t = clip.encode_texts_with_pseudo(["a photo of $"], clip.token_embedding_of(["dog"]))
    assert torch.allclose(t, clip.encode_texts(["a photo of dog"]), atol=1e-5)


def test_tiny_config_is_registered_with_open_clip():
    import open_clip

    from cirlib.models.clip import TINY_CLIP_CONFIG

    assert "cir-tiny" in open_clip.list_models()
    model = open_clip.create_model("cir-tiny")
    assert model.context_length == TINY_CLIP_CONFIG["text_cfg"]["context_length"] == 32
    assert model.visual.image_size == (64, 64)
