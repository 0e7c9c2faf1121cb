"""The paper profile end to end, without weights or images: `cirlib eval --profile paper`.

A tiny random-initialised open_clip CLIP of the real class (registered as a paper backbone) runs
through the real loaders over the real annotation files and placeholder images
(:mod:`cirlib.data.placeholders`), so every paper-profile code path executes here: path checks,
missing-image handling, file-gallery encoding in cached shards (and resuming), chunked and FAISS
top-k, metrics, and the server files, which must pass the same checks as the official examples and
score identically with ``cirlib score``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_components import random_backbone

from cirlib.cli import main
from cirlib.config import REPO_ROOT
from cirlib.data.placeholders import make_placeholder_dataset
from cirlib.run import EvalConfig, run_eval
from cirlib.submission import read_circo_predictions, read_cirr_predictions, score_predictions

TEST_ARCH = "cirlib-test-ViT-T-16"


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    """A weights folder holding a random tiny open_clip CLIP registered as paper backbone TEST_ARCH."""
    yield from random_backbone(tmp_path_factory, TEST_ARCH)


@pytest.fixture(scope="module")
def cirr_data(tmp_path_factory) -> Path:
    return make_placeholder_dataset("cirr", tmp_path_factory.mktemp("cirr"), splits=("val", "test"))


@pytest.fixture(scope="module")
def circo_data(tmp_path_factory) -> Path:
    return make_placeholder_dataset(
        "circo", tmp_path_factory.mktemp("circo"), splits=("val", "test"), circo_gallery=300
    )


@pytest.fixture(scope="module")
def fiq_data(tmp_path_factory) -> Path:
    return make_placeholder_dataset(
        "fashioniq", tmp_path_factory.mktemp("fiq"), splits=("val",), missing=0.02
    )


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CIRLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cfg(benchmark: str, data: Path, weights: Path, out: Path, **kw) -> EvalConfig:
    return EvalConfig(
        benchmark=benchmark,
        method=kw.pop("method", "sum"),
        profile="paper",
        data=data,
        weights=weights,
        backbone=TEST_ARCH,
        device="cpu",
        workers=0,
        out=out,
        **kw,
    )


# ------------------------------------------------------------------------------- CIRR
def test_cirr_val_metrics_match_cirlib_score(tiny_backbone, cirr_data, cache, tmp_path):
    record = run_eval(_cfg("cirr", cirr_data, tiny_backbone, tmp_path / "out", soft=True))
    assert record["n_queries"] == 4181
    assert record["throughput"]["gallery_images"] == 2297 and not record["throughput"]["gallery_from_cache"]
    files = {Path(f).name: Path(f) for f in record["files"]}
    recall, subset = files["val_pred_ranks_recall.json"], files["val_pred_ranks_recall_subset.json"]
    scored = score_predictions("cirr", cirr_data / "cirr", recall, subset_path=subset, soft=True)
    assert scored.keys() == record["metrics"].keys()
    for key, value in scored.items():
        assert record["metrics"][key] == pytest.approx(value, abs=1e-9), key
    # a random model is near chance: Recall_subset@1 is about 1/5 on 5 candidates
    assert 10 < record["metrics"]["recall_subset@1"] < 30
    # the second run reads every shard from the cache and gives the same numbers
    again = run_eval(_cfg("cirr", cirr_data, tiny_backbone, tmp_path / "out2", soft=True))
    assert again["throughput"]["gallery_from_cache"] and again["metrics"] == record["metrics"]


def test_cirr_test_server_files_pass_the_official_checks(
    tiny_backbone, cirr_data, cache, tmp_path, annotations_root
):
    from cirlib.data.annotations import load_cirr

    record = run_eval(_cfg("cirr", cirr_data, tiny_backbone, tmp_path / "out", split="test"))
    assert record["metrics"] == {} and record["n_queries"] == 4148
    files = {Path(f).name: Path(f) for f in record["files"]}
    split = load_cirr(annotations_root / "cirr", "test1")
    recall = read_cirr_predictions(files["test1_pred_ranks_recall.json"], split, metric="recall")
    subset = read_cirr_predictions(
        files["test1_pred_ranks_recall_subset.json"], split, metric="recall_subset"
    )
    # the same properties the official demo files have
    demo = json.loads((annotations_root / "cirr" / "demo_files" / "test1_pred_ranks_recall.json").read_text())
    ours = json.loads(files["test1_pred_ranks_recall.json"].read_text())
    assert ours.keys() == demo.keys() and ours["version"] == "rc2" and ours["metric"] == "recall"
    for q in split.queries:
        assert len(recall[q.pairid]) == 50 and q.reference not in recall[q.pairid]
        assert len(subset[q.pairid]) == 3 and set(subset[q.pairid]) <= set(q.subset)


# ------------------------------------------------------------------------------- CIRCO
def test_circo_val_and_test(tiny_backbone, circo_data, cache, tmp_path, annotations_root):
    from cirlib.data.annotations import load_circo

    val = run_eval(_cfg("circo", circo_data, tiny_backbone, tmp_path / "val"))
    sub = next(Path(f) for f in val["files"] if f.endswith("circo_val_submission.json"))
    scored = score_predictions("circo", circo_data, sub)
    for key, value in scored.items():
        assert val["metrics"][key] == pytest.approx(value, abs=1e-9), key
    assert any(k.startswith("semantic_map@10/") for k in val["metrics"])
    test = run_eval(_cfg("circo", circo_data, tiny_backbone, tmp_path / "test", split="test"))
    sub = next(Path(f) for f in test["files"] if f.endswith("circo_test_submission.json"))
    split = load_circo(annotations_root / "circo", "test")
    preds = read_circo_predictions(sub, split)
    example = json.loads(
        (annotations_root / "circo" / "submission_examples" / "submission_test.json").read_text()
    )
    assert set(json.loads(sub.read_text())) == set(example) and all(len(v) == 50 for v in preds.values())
    # the gallery is counted from the user's folder: annotated images plus 300 distractors
    assert test["missing_images"]["gallery_size"]["all"] == val["missing_images"]["gallery_size"]["all"]


# ------------------------------------------------------------------------------- FashionIQ
def test_fashioniq_missing_images_stop_then_drop(tiny_backbone, fiq_data, cache, tmp_path, capsys):
    args = ["eval", "--profile", "paper", "--benchmark", "fashioniq", "--method", "sum", "--data", str(fiq_data),
            "--weights", str(tiny_backbone), "--backbone", TEST_ARCH, "--device", "cpu", "--workers", "0",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "--on-missing drop" in err and err.strip().count("\n") == 0
    assert (tmp_path / "out" / "missing_images.json").is_file()
    assert main([*args, "--on-missing", "drop", "--caption-join", "forward"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"dress/recall@10", "shirt/recall@50", "average/recall@10"} <= set(metrics)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    missing = record["missing_images"]
    assert missing["dropped_queries"] > 0
    assert (
        record["n_queries"]
        == missing["queries_after"]
        == missing["queries_before"] - missing["dropped_queries"]
    )
    assert record["config"]["caption_join"] == "forward"


# ------------------------------------------------------------------------------- retrieval
def test_faiss_backend_gives_the_exact_rankings(tiny_backbone, cirr_data, cache, tmp_path):
    from cirlib.evaluation import evaluate
    from cirlib.run import build, load_benchmark

    cfg = _cfg("cirr", cirr_data, tiny_backbone, tmp_path / "out", n_queries=300)
    benchmark, _ = load_benchmark(cfg)
    method = build(cfg)
    exact = evaluate(method, benchmark)
    fast = evaluate(method, benchmark, backend="faiss")
    assert fast.subset == exact.subset
    same = np.mean(
        [a[:10] == b[:10] for a, b in zip(exact.rankings["all"], fast.rankings["all"], strict=True)]
    )
    assert same > 0.98  # faiss' BLAS may reorder exact float ties; these are random-model scores
    assert exact.summary["recall@1"] == pytest.approx(fast.summary["recall@1"], abs=1.0)


def test_interrupted_encoding_resumes_from_the_finished_shards(
    tiny_backbone, cirr_data, cache, tmp_path, monkeypatch
):
    from cirlib.methods.base import Method
    from cirlib.models.clip import CLIPModel

    monkeypatch.setattr(Method, "shard_size", 500)  # 2,297 images: 5 shards
    calls = {"n": 0}
    real = CLIPModel.encode_image_files

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CLIPModel, "encode_image_files", flaky)
    cfg = _cfg("cirr", cirr_data, tiny_backbone, tmp_path / "out", n_queries=50)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg)
    calls["n"] = 10  # no more interruptions
    record = run_eval(cfg)
    assert calls["n"] == 10 + 3  # shards 3, 4 and 5 only: the first two came from the cache
    cold = run_eval(_cfg("cirr", cirr_data, tiny_backbone, tmp_path / "out2", n_queries=50))
    assert cold["metrics"] == record["metrics"]


# ------------------------------------------------------------------------------- fast path errors
def _cli_in_subprocess(args: list[str]) -> tuple[int, str, bool]:
    """Run `cirlib <args>` in a fresh interpreter; return (status, stderr, torch imported?)."""
    code = (
        "import sys; from cirlib.cli import main; rc = main(sys.argv[1:]); "
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', file=sys.stderr); sys.exit(rc)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    lines = out.stderr.strip().splitlines()
    return out.returncode, "\n".join(lines[:-1]), lines[-1] == "TORCH"


def test_missing_data_folder_fails_fast_naming_the_path(tmp_path):
    given = tmp_path / "no-such-cirr"
    rc, err, torch_imported = _cli_in_subprocess(
        ["eval", "--profile", "paper", "--benchmark", "cirr", "--method", "sum", "--data", str(given)]
    )
    assert rc == 2 and str(given) in err and not torch_imported
    assert err.count("\n") == 0


def test_missing_weights_fail_fast_naming_the_expected_file(tmp_path, cirr_data):
    empty = tmp_path / "weights"
    empty.mkdir()
    rc, err, torch_imported = _cli_in_subprocess(
        ["eval", "--profile", "paper", "--benchmark", "cirr", "--method", "sum", "--data", str(cirr_data),
         "--weights", str(empty)]
    )  # fmt: skip
    assert rc == 2 and not torch_imported
    assert str(empty / "ViT-L-14-openai.safetensors") in err and "huggingface.co" in err


def test_every_missing_input_is_named_at_once(tmp_path):
    """Data and weights both missing: one error lists both, so one fix-up round is enough."""
    given, empty = tmp_path / "no-such-cirr", tmp_path / "weights"
    empty.mkdir()
    rc, err, torch_imported = _cli_in_subprocess(
        ["eval", "--profile", "paper", "--benchmark", "cirr", "--method", "sum", "--data", str(given),
         "--weights", str(empty)]
    )  # fmt: skip
    assert rc == 2 and not torch_imported and err.count("\n") == 0
    assert "2 problems" in err and str(given) in err and "ViT-L-14-openai.safetensors" in err


def test_paper_profile_needs_data(tmp_path):
    rc, err, torch_imported = _cli_in_subprocess(
        ["eval", "--profile", "paper", "--benchmark", "circo", "--method", "sum"]
    )
    assert rc == 2 and "--data" in err and not torch_imported


def test_missing_image_folder_names_what_should_be_there(tmp_path):
    data = tmp_path / "CIRCO"
    (data / "annotations").mkdir(parents=True)
    rc, err, torch_imported = _cli_in_subprocess(
        ["eval", "--profile", "paper", "--benchmark", "circo", "--method", "sum", "--data", str(data)]
    )
    assert rc == 2 and not torch_imported and "unlabeled2017" in err


def test_unreadable_image_is_an_error_naming_the_file(tiny_backbone, tmp_path, cache):
    from cirlib.models.clip import ImageFileError
    from cirlib.models.paper import load_clip

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    clip = load_clip(TEST_ARCH, profile="paper", weights=tiny_backbone)
    with pytest.raises(ImageFileError, match="broken.png"):
        clip.encode_image_files([bad])


def test_targetpad_pads_elongated_images_only():
    from PIL import Image

    from cirlib.models.clip import TargetPad, targetpad_transform

    pad = TargetPad(1.25)
    assert pad(Image.new("RGB", (100, 90))).size == (100, 90)  # ratio 1.11 < 1.25: unchanged
    wide = pad(Image.new("RGB", (200, 100), "white"))
    assert wide.size == (200, 160) and wide.getpixel((0, 0)) == (0, 0, 0)  # 200 / 1.25 = 160
    x = targetpad_transform(32)(Image.new("RGB", (200, 100), "white"))
    assert x.shape == (3, 32, 32)


# ------------------------------------------------------------------------------- released phi methods
@pytest.fixture(scope="module")
def released_test_phis(tiny_backbone) -> Path:
    """SEARLE- and Pic2Word-format phi checkpoints for the test backbone, written in the upstream
    key layout (container key, DDP prefix) and registered like the real releases."""
    import dataclasses

    from cirlib.models import released

    added = []
    # "searle-alt-test" is a second SEARLE release for the same backbone: only --phi reaches it
    for name, real_name in [("searle-xl-vit-l14-test", "searle-xl-vit-l14"), ("pic2word-vit-l14-test", "pic2word-vit-l14"),
                            ("searle-alt-test", "searle-xl-vit-l14")]:  # fmt: skip
        real = released.RELEASED_PHIS[real_name]
        arch = {**real.arch, "input_dim": 16, "output_dim": 16, "hidden_dim": 24}
        spec = dataclasses.replace(real, name=name, backbone=TEST_ARCH, filename=f"{name}.pt", arch=arch)
        torch.manual_seed(len(added))
        checkpoint = released.to_upstream_checkpoint(spec, spec.build().state_dict())
        torch.save({**checkpoint, "epoch": 3}, tiny_backbone / spec.filename)
        released.RELEASED_PHIS[spec.name] = spec
        added.append(spec.name)
    yield tiny_backbone
    for name in added:
        released.RELEASED_PHIS.pop(name, None)


@pytest.mark.parametrize("method", ["searle", "pic2word"])
def test_released_phi_methods_run_as_their_official_evaluation(
    released_test_phis, fiq_data, cache, tmp_path, method
):
    from cirlib.run import build, load_benchmark

    cfg = _cfg(
        "fashioniq",
        fiq_data,
        released_test_phis,
        tmp_path / "out",
        method=method,
        on_missing="drop",
        n_queries=60,
    )
    record = run_eval(cfg)
    assert record["n_queries"] == 60 and "average/recall@10" in record["metrics"]
    conf = record["config"]
    if method == "searle":  # SEARLE: targetpad, both caption orders, ".?, " stripped
        assert (conf["preprocess"], conf["caption_join"], conf["caption_strip"]) == (
            "targetpad",
            "both_orders",
            ".?, ",
        )
    else:  # Pic2Word: CLIP's own preprocessing, "c2 and c1" once
        assert conf["preprocess"] != "targetpad" and conf["caption_join"] == "reversed"
    # phi sees the raw (unnormalised) reference features, as every release was trained with
    benchmark, _ = load_benchmark(cfg)
    m = build(cfg)
    q = benchmark.queries[:4]
    gallery = benchmark.galleries[q[0].category]
    q = [x for x in q if x.category == q[0].category]
    paths = [gallery.paths[gallery.index(x.reference)] for x in q]
    raw = m.clip.encode_image_files(paths, normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(q)))
    with torch.inference_mode():
        expected = m.phi(raw)
    assert torch.allclose(m.pseudo_tokens(q, gallery), expected, atol=1e-5)


def test_released_phi_missing_file_fails_fast(released_test_phis, cirr_data, tmp_path):
    empty = tmp_path / "weights"
    empty.mkdir()
    rc, err, torch_imported = _cli_in_subprocess(
        ["eval", "--profile", "paper", "--benchmark", "cirr", "--method", "lincir", "--data", str(cirr_data),
         "--weights", str(empty)]
    )  # fmt: skip
    assert rc == 2 and not torch_imported
    assert str(empty / "lincir_large.pt") in err and "navervision" in err


@pytest.mark.parametrize("preprocess", ["clip", "targetpad"])
def test_file_encoding_sends_uint8_and_matches_the_float_transform(tiny_backbone, tmp_path, preprocess):
    """Workers ship uint8 pixels and the model's device normalises them: the same features as
    open_clip's (or targetpad's) float transform applied image by image."""
    from PIL import Image

    from cirlib.models.paper import load_clip

    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(50, 40), (120, 60), (33, 90)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    clip = load_clip(TEST_ARCH, profile="paper", weights=tiny_backbone, preprocess=preprocess)
    assert clip._file_transform()[0](Image.open(paths[0]).convert("RGB")).dtype == torch.uint8
    via_files = clip.encode_image_files(paths, batch_size=2, normalize=False)
    with torch.inference_mode():
        x = torch.stack([clip.pil_transform(Image.open(p).convert("RGB")) for p in paths])
        reference = clip.model.encode_image(x)
    assert torch.allclose(via_files, reference, atol=1e-6)


def test_corrupt_phi_file_and_image_are_one_line_errors(
    released_test_phis, cirr_data, cache, tmp_path, capsys
):
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(released_test_phis, weights)
    (weights / "searle-xl-vit-l14-test.pt").write_bytes(b"garbage")
    base = ["eval", "--profile", "paper", "--benchmark", "cirr", "--data", str(cirr_data), "--backbone", TEST_ARCH,
            "--device", "cpu", "--workers", "0", "--n-queries", "5", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main([*base, "--method", "searle", "--weights", str(weights)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "searle-xl-vit-l14-test.pt" in err
    data = tmp_path / "cirr"
    shutil.copytree(cirr_data, data)
    broken = sorted((data / "dev").iterdir())[0]
    broken.write_bytes(b"not an image")
    assert (
        main([*base[:5], "--data", str(data), *base[7:], "--method", "image", "--weights", str(weights)]) == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("cirlib eval: error: ") and broken.name in last and "cannot read" in last


def test_a_released_phi_can_be_chosen_by_name(cirr_data, tmp_path):
    empty = tmp_path / "weights"
    empty.mkdir()
    base = [
        "eval",
        "--profile",
        "paper",
        "--benchmark",
        "cirr",
        "--data",
        str(cirr_data),
        "--weights",
        str(empty),
    ]
    rc, err, torch_imported = _cli_in_subprocess([*base, "--method", "lincir", "--phi", "cig-lincir-vit-l14"])
    assert rc == 2 and not torch_imported and str(empty / "phi_best.pt") in err
    rc, err, _ = _cli_in_subprocess([*base, "--method", "lincir", "--phi", "searle-xl-vit-l14"])
    assert rc == 2 and "is a searle network" in err
    rc, err, _ = _cli_in_subprocess([*base, "--method", "lincir", "--phi", "nope"])
    assert rc == 2 and "unknown released phi" in err and "cig-lincir-vit-l14" in err


def test_phi_option_loads_the_named_release(released_test_phis, cirr_data, cache, tmp_path):
    from cirlib.run import build

    default = build(_cfg("cirr", cirr_data, released_test_phis, tmp_path / "o1", method="searle"))
    chosen = build(
        _cfg("cirr", cirr_data, released_test_phis, tmp_path / "o2", method="searle", phi="searle-alt-test")
    )
    assert Path(default.phi.weights_path).name == "searle-xl-vit-l14-test.pt"
    assert Path(chosen.phi.weights_path).name == "searle-alt-test.pt"
    assert not torch.equal(default.phi.fc_out.weight, chosen.phi.fc_out.weight)
    record = run_eval(_cfg("cirr", cirr_data, released_test_phis, tmp_path / "o3", method="searle",
                           phi="searle-alt-test", n_queries=20))  # fmt: skip
    assert Path(record["weights"]["phi_weights"]).name == "searle-alt-test.pt"
