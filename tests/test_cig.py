"""CIG in the tiny profile: the composed-image generator (training, resumption, sampling, the official
quality filter, the pseudo-target cache) and the method's three fusion levels, on micro models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_components import MICRO_CLIP  # noqa: E402

from cirlib.data.types import Benchmark
from cirlib.evaluation import evaluate
from cirlib.generation.composed import (
    GeneratorArch,
    GeneratorTrainConfig,
    GeneratorUNet,
    PseudoTargetCache,
    SamplingConfig,
    TinyComposedGenerator,
    composed_conditions,
    generate_with_retries,
    seeds_for,
    train_generator,
)
from cirlib.methods.baselines import TextualInversion
from cirlib.methods.cig import CIG, official_fusion_weight
from cirlib.models import zoo
from cirlib.models.clip import CLIPModel, build_open_clip
from cirlib.models.phi import Phi
from cirlib.retrieval import CacheCorruptionWarning, EmbeddingCache
from cirlib.world import load_world_benchmark, pretraining_pairs

MICRO = MICRO_CLIP
ARCH = GeneratorArch(
    block_out_channels=(16, 16),
    norm_num_groups=8,
    attention_head_dim=8,
    cross_attention_dim=32,
    pooled_dim=32,
)
TRAIN = GeneratorTrainConfig(steps=6, batch_size=8, warmup_steps=2, snapshot_steps=(3,), checkpoint_every=2)


@pytest.fixture(scope="module")
def clip() -> CLIPModel:
    torch.manual_seed(0)
    return CLIPModel(build_open_clip(MICRO), MICRO, name="micro")


@pytest.fixture(scope="module")
def phi(clip) -> Phi:
    torch.manual_seed(1)
    return Phi(clip.embed_dim, clip.token_dim, hidden_dim=32).eval()


@pytest.fixture(scope="module")
def pairs():
    return pretraining_pairs(24, seed=5)


@pytest.fixture(scope="module")
def trained(clip, phi, pairs):
    return train_generator(clip, phi, pairs.images, pairs.captions, TRAIN, seed=0, arch=ARCH, progress=False)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    import os

    old = os.environ.get("CIRLIB_CACHE")
    os.environ["CIRLIB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        return load_world_benchmark("cirr", "val", n_queries=12)
    finally:
        if old is None:
            del os.environ["CIRLIB_CACHE"]
        else:
            os.environ["CIRLIB_CACHE"] = old


def test_training_gives_an_ema_model_and_snapshots(trained):
    final, snapshots = trained
    assert isinstance(final, GeneratorUNet) and set(snapshots) == {3}
    a = dict(final.named_parameters())
    b = dict(snapshots[3].named_parameters())
    assert any(not torch.equal(a[k], b[k]) for k in a), "the snapshot is the final model"


def test_resumed_training_equals_an_uninterrupted_run(clip, phi, pairs, trained, tmp_path):
    train_generator(
        clip,
        phi,
        pairs.images,
        pairs.captions,
        TRAIN,
        0,
        arch=ARCH,
        resume_dir=tmp_path,
        stop_after=4,
        progress=False,
    )
    assert (tmp_path / "train_state.pt").exists()
    resumed, snaps = train_generator(
        clip, phi, pairs.images, pairs.captions, TRAIN, 0, arch=ARCH, resume_dir=tmp_path, progress=False
    )
    final, snapshots = trained
    for (k, v), (_, w) in zip(resumed.state_dict().items(), final.state_dict().items()):
        assert torch.equal(v, w), k
    assert torch.equal(next(iter(snaps[3].parameters())), next(iter(snapshots[3].parameters())))


def test_other_seed_trains_another_model(clip, phi, pairs, trained):
    other, _ = train_generator(
        clip, phi, pairs.images, pairs.captions, TRAIN, seed=1, arch=ARCH, progress=False
    )
    assert not torch.equal(next(iter(other.parameters())), next(iter(trained[0].parameters())))


def test_bad_settings_are_refused(clip, phi, pairs):
    with pytest.raises(ValueError, match="snapshot steps"):
        train_generator(
            clip,
            phi,
            pairs.images,
            pairs.captions,
            GeneratorTrainConfig(steps=4, snapshot_steps=(4,)),
            0,
            arch=ARCH,
        )
    with pytest.raises(ValueError, match="cross_attention_dim"):
        train_generator(
            clip, phi, pairs.images, pairs.captions, TRAIN, 0, arch=GeneratorArch(cross_attention_dim=64)
        )
    with pytest.raises(ValueError, match="pooled_dim"):
        train_generator(
            clip,
            phi,
            pairs.images,
            pairs.captions,
            TRAIN,
            0,
            arch=GeneratorArch(cross_attention_dim=32, pooled_dim=7),
        )


def test_generator_round_trips_through_the_zoo(trained, tmp_path):
    final = trained[0]
    zoo.save_checkpoint("micro-generator", final, {"a": 1}, 0, "pytest", root=tmp_path)
    loaded = zoo.load_checkpoint("micro-generator", root=tmp_path)
    assert isinstance(loaded, GeneratorUNet) and loaded.clip_hash == final.clip_hash
    x, t, c = torch.randn(2, 3, 32, 32), torch.tensor([10, 500]), (torch.randn(2, 32, 32), torch.randn(2, 32))
    with torch.inference_mode():  # fp16 storage: equal up to half precision
        assert torch.allclose(loaded(x, t, c), final(x, t, c), atol=2e-2)


def test_sampling_is_seeded_per_image_and_batch_independent(trained, clip, phi, pairs):
    gen = TinyComposedGenerator(trained[0], clip, phi, SamplingConfig(steps=3, batch_size=2))
    refs, texts = list(pairs.images[:3]), ["make it red", "add a star", "make it red"]
    images = gen.generate(refs, texts, [7, 7, 8])
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    alone = gen.generate(refs[1:2], texts[1:2], [7])
    assert np.array_equal(alone[0], images[1])  # same image in a batch of one and of three
    again = gen.generate(refs[:1], texts[:1], [8])
    assert not np.array_equal(again[0], images[0])  # another seed, another image
    guided = TinyComposedGenerator(trained[0], clip, phi, SamplingConfig(steps=3, guidance_scale=3.0))
    assert not np.array_equal(guided.generate(refs[:1], texts[:1], [7])[0], images[0])
    assert guided.signature != gen.signature


def test_generator_refuses_another_clip(trained, phi):
    other = CLIPModel(build_open_clip(MICRO), MICRO, name="other")
    with pytest.raises(ValueError, match="trained against CLIP"):
        TinyComposedGenerator(trained[0], other, phi)


def test_conditions_carry_the_pseudo_token(clip, phi, pairs):
    states, pooled = composed_conditions(clip, phi, pairs.images[:2], ["make it red", "make it red"])
    assert states.shape == (2, clip.context_length, clip.token_dim) and pooled.shape == (2, clip.embed_dim)
    assert not torch.allclose(states[0], states[1])  # different images, tokens, states
    assert not torch.allclose(pooled[0], pooled[1])
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(2), atol=1e-5)


class _Scripted:
    """A generator whose output brightness depends on the seed (black for seeds in ``dark``)."""

    def __init__(self, dark: set[int]) -> None:
        self.dark, self.calls = dark, []
        self.signature = {"scripted": sorted(dark)}

    def generate(self, references, texts, seeds):
        self.calls.append(list(seeds))
        return np.stack([np.full((8, 8, 3), 0 if s in self.dark else 120, np.uint8) for s in seeds])


def test_quality_filter_reseeds_like_the_official_code():
    gen = _Scripted(dark={100, 101, 200, 201, 202, 203, 204, 205})
    refs = [np.zeros((8, 8, 3), np.uint8)] * 3
    images, retries = generate_with_retries(gen, refs, ["a", "b", "c"], [100, 200, 300])
    assert retries.tolist() == [2, 6, 0]  # 100 -> 101 -> 102 ok; 200..205 all dark: given up
    assert gen.calls == [[100, 200, 300], [101, 201], [102, 202], [203], [204], [205]]
    assert images[0].mean() == 120 and images[1].mean() == 0 and images[2].mean() == 120


def test_pseudo_target_cache_generates_once_and_survives_corruption(tmp_path):
    gen = _Scripted(dark=set())
    store = PseudoTargetCache(gen, EmbeddingCache(tmp_path))
    refs = [np.zeros((8, 8, 3), np.uint8)] * 2
    first = store.get(refs, ["r1", "r2"], ["a", "b"], [1, 1])
    assert store.generated == 2 and first.shape == (2, 8, 8, 3)
    again = store.get(refs, ["r1", "r2"], ["a", "b"], [1, 1])
    assert store.generated == 2 and np.array_equal(first, again)
    store.get(refs, ["r1", "r3"], ["a", "b"], [1, 1])
    assert store.generated == 3  # only the new reference is generated
    victim = next((tmp_path / "pseudo-targets").glob("*.npy"))
    victim.write_bytes(b"broken")
    with pytest.warns(CacheCorruptionWarning, match="unusable"):
        store.get(refs, ["r1", "r2"], ["a", "b"], [1, 1])
    assert store.generated == 4


def test_seeds_keep_retries_apart():
    seeds = seeds_for(3)
    assert seeds[0] == 1600
    assert all(b - a == 6 for a, b in zip(seeds, seeds[1:]))


class _Oracle:
    """Returns each query's labelled target image as its pseudo-target (an upper bound for CIG)."""

    def __init__(self, benchmark: Benchmark) -> None:
        self.by_text = {q.texts[0]: q for q in benchmark.queries}
        assert len(self.by_text) == len(benchmark.queries), "the oracle needs distinct texts"
        self.gallery = benchmark.galleries["all"]
        self.signature = {"oracle": benchmark.name}

    def generate(self, references, texts, seeds):
        return self.gallery.pixels([self.by_text[t].target for t in texts])


def test_fusion_levels_reduce_to_their_parts(clip, phi, bench, tmp_path):
    cache = EmbeddingCache(tmp_path)
    cig = CIG(clip, phi, _Oracle(bench), weight=1.0, cache=cache)
    inversion = TextualInversion(clip, phi, cache=cache)
    qs, gallery = bench.queries, bench.galleries["all"]
    with torch.inference_mode():
        base = inversion.encode_queries(qs, gallery)
        assert torch.allclose(cig.encode_queries(qs, gallery), base, atol=1e-6)
        assert torch.allclose(cig.with_options(fusion="token").encode_queries(qs, gallery), base, atol=1e-6)
        image_only = cig.with_options(fusion="image", weight=0.0).encode_queries(qs, gallery)
        targets = F.normalize(clip.encode_images(gallery.pixels([q.target for q in qs])), dim=-1)
        assert torch.allclose(image_only, targets, atol=1e-5)
        text_only = cig.with_options(weight=0.0).encode_queries(qs, gallery)
        inverted = TextualInversion(clip, phi, cache=cache).encode_queries(
            [dataclasses.replace(q, reference=q.target) for q in qs], gallery
        )
        assert torch.allclose(text_only, inverted, atol=1e-5)
        half = cig.with_options(weight=0.5).encode_queries(qs, gallery)
        assert torch.allclose(half, F.normalize(base + text_only, dim=-1), atol=1e-5)


def test_an_oracle_pseudo_target_finds_the_target(clip, phi, bench, tmp_path):
    """Image-level fusion with w = 0 and the true target as pseudo-target must retrieve it first:
    the test that the generated view reaches retrieval at all (fails if it were ignored)."""
    cig = CIG(clip, phi, _Oracle(bench), fusion="image", weight=0.0, cache=EmbeddingCache(tmp_path))
    assert evaluate(cig, bench).summary["recall@1"] == pytest.approx(100.0)


def test_cig_options_are_checked(clip, phi, bench):
    with pytest.raises(ValueError, match="fusion must be"):
        CIG(clip, phi, _Oracle(bench), fusion="pixel")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CIG(clip, phi, _Oracle(bench), weight=1.5)
    with pytest.raises(TypeError, match="unknown CIG option"):
        CIG(clip, phi, _Oracle(bench)).with_options(guidance=2)


def test_official_fusion_weights():
    assert official_fusion_weight("cirr", "test") == 0.5
    assert official_fusion_weight("circo", "test") == 0.7
    assert official_fusion_weight("cirr", "val") == 0.85
    assert official_fusion_weight("fashioniq", "val") == 0.9
    assert official_fusion_weight("fashioniq", "test") == 0.9
    assert official_fusion_weight("circo", "val") == 1.0


def test_cli_eval_runs_cig_with_micro_models(tmp_path):
    """recipes -> zoo (generator and its snapshot) -> CIG -> metrics, through the CLI, fresh cache."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "CIRLIB_RECIPES": "micro", "CIRLIB_CACHE": str(tmp_path), "CIRLIB_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "cirlib", "eval", "--benchmark", "cirr", "--split", "val", "--method", "cig",
         "--n-queries", "8", "--fusion-weight", "0.5", "--generation-steps", "2", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "recall@1" in json.loads(out.stdout)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"]["fusion_weight"] == 0.5 and record["config"]["generation_steps"] == 2
    registry = json.loads((tmp_path / "models" / "micro" / "registry.json").read_text())
    assert {"tiny-cig-generator", "tiny-cig-generator-step00002"} <= set(registry)
    assert len(list((tmp_path / "embeddings" / "pseudo-targets").glob("*.npy"))) == 8


def test_a_warm_rerun_reads_pseudo_target_features_from_disk(clip, phi, bench, tmp_path):
    """A second CIG on the same cache (a new process, in effect) neither loads nor encodes a
    pseudo-target, and scores the same; copies made by with_options are of the same class."""
    qs, gallery = bench.queries, bench.galleries["all"]
    first = CIG(clip, phi, _Oracle(bench), weight=0.5, cache=EmbeddingCache(tmp_path))
    expected = first.score(qs, gallery)

    class NoImages(CIG):
        def pseudo_targets(self, queries, gallery):
            raise AssertionError("a warm rerun loaded pseudo-target images")

    again = NoImages(clip, phi, _Oracle(bench), weight=0.5, cache=EmbeddingCache(tmp_path))
    assert np.array_equal(again.score(qs, gallery), expected)
    assert isinstance(again.with_options(weight=0.3), NoImages)
    other_seed = again.with_options(base_seed=7)
    with pytest.raises(AssertionError, match="loaded pseudo-target images"):
        other_seed.score(qs, gallery)  # other seeds are other images: the key tells them apart
