"""PrediCIR in the paper profile, offline: `cirlib eval --method predicir` and `cirlib train-predicir`.

A tiny random open_clip CLIP of the real class (registered as a paper backbone, 2 x 2 patches, so
the PrediCIR grid is 2) runs through the real loaders over the real CIRCO val annotations with
placeholder images. No official PrediCIR weights exist, so the checkpoint is either a random network
saved through the zoo or one trained here for 2 steps by `cirlib train-predicir`. The input errors
must come before torch is imported, as one line naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_components import random_backbone

from cirlib.cli import main
from cirlib.config import REPO_ROOT
from cirlib.data.placeholders import make_placeholder_dataset
from cirlib.models import zoo
from cirlib.models.predicir import INFERENCE_BOXES, PrediCIRNet, load_predicir_file
from cirlib.run import (
    PREDICIR_BOXES,
    EvalConfig,
    RunError,
    check_method_options,
    check_predicir_checkpoint,
)

TEST_ARCH = "cirlib-test-predicir-ViT-T-16"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    """A weights folder holding a random tiny open_clip CLIP registered as paper backbone TEST_ARCH."""
    yield from random_backbone(tmp_path_factory, TEST_ARCH)


@pytest.fixture(scope="module")
def clip_hash(tiny_backbone) -> str:
    from cirlib.models.paper import load_clip

    return load_clip(TEST_ARCH, profile="paper", weights=tiny_backbone).hash


@pytest.fixture(scope="module")
def circo_data(tmp_path_factory) -> Path:
    """CIRCO val (220 queries, 1,121 annotated images) with placeholder images."""
    return make_placeholder_dataset("circo", tmp_path_factory.mktemp("circo"), splits=("val",))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def cache(cache_dir, monkeypatch) -> Path:
    """One embedding cache for the module: the gallery is encoded once for every run on this CLIP."""
    monkeypatch.setenv("CIRLIB_CACHE", str(cache_dir))
    return cache_dir


def _small_net(seed: int = 0) -> PrediCIRNet:
    torch.manual_seed(seed)  # the tiny backbone: 32-wide patch tokens, 16-d embeddings and tokens
    return PrediCIRNet(32, 16, 16, grid=2, width=16, depth=1, heads=2, hidden_dim=32, dropout=0.0).eval()


@pytest.fixture(scope="module")
def zoo_checkpoint(tmp_path_factory, clip_hash) -> Path:
    """A random-init PrediCIR network for the tiny backbone, saved through the zoo."""
    net = _small_net()
    net.clip_hash = clip_hash
    root = tmp_path_factory.mktemp("predicir")
    return zoo.save_checkpoint("predicir-random", net, {"backbone": TEST_ARCH}, 0, "test", root=root)


def _eval_args(data: Path, weights: Path, checkpoint: Path | None, out: Path) -> list[str]:
    args = ["eval", "--profile", "paper", "--benchmark", "circo", "--method", "predicir", "--data", str(data),
            "--weights", str(weights), "--backbone", TEST_ARCH, "--device", "cpu", "--workers", "0",
            "--out", str(out)]  # fmt: skip
    return args + (["--predicir-checkpoint", str(checkpoint)] if checkpoint is not None else [])


def _write_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = [(40, 56), (32, 32), (70, 35), (50, 50)][i % 4]
        path = folder / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# --------------------------------------------------------------------------- (a) eval end to end
def test_paper_eval_runs_predicir_and_writes_the_server_file(
    tiny_backbone, circo_data, zoo_checkpoint, cache, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    assert main(_eval_args(circo_data, tiny_backbone, zoo_checkpoint, out)) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"map@5", "map@10", "map@25", "map@50"} <= set(metrics)
    assert any(k.startswith("semantic_map@10/") for k in metrics)
    record = json.loads((out / "run.json").read_text())
    assert record["n_queries"] == 220 and record["metrics"] == metrics
    names = {Path(f).name for f in record["files"]}
    assert names == {"rankings.json", "circo_val_submission.json"}
    submission = json.loads((out / "circo_val_submission.json").read_text())
    assert len(submission) == 220 and all(len(v) == 50 for v in submission.values())
    # the options are recorded, and the checkpoint by path and content
    assert record["config"]["predicir_checkpoint"] == str(zoo_checkpoint)
    assert record["config"]["predicir_box"] == "center"
    assert record["weights"]["predicir_weights"] == str(zoo_checkpoint)
    entry = zoo.read_registry(zoo_checkpoint.parent)["predicir-random"]
    assert record["model"]["predicir"] == {
        "file": str(zoo_checkpoint),
        "sha256": entry["sha256"],
        "box": "center",
    }


def test_a_network_trained_for_another_clip_is_a_one_line_error(
    tiny_backbone, circo_data, cache, tmp_path, capsys
) -> None:
    net = _small_net(1)
    net.clip_hash = "0123456789abcdef"
    path = zoo.save_checkpoint("other-clip", net, {}, 0, "test", root=tmp_path / "ckpt")
    args = _eval_args(circo_data, tiny_backbone, path, tmp_path / "out")
    assert main([*args, "--n-queries", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"cirlib eval: error: --predicir-checkpoint {path}: ")
    assert "0123456789abcdef" in err and "cirlib train-predicir" in err


# --------------------------------------------------------------------------- (b) errors before torch
_CALLS = """
import json, sys
from cirlib.cli import main
results = []
for args in json.loads(sys.argv[1]):
    import io, contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(args)
    results.append([rc, err.getvalue().strip()])
print(json.dumps({"results": results, "torch": "torch" in sys.modules}))
"""


def _cli_calls_in_subprocess(calls: list[list[str]]) -> tuple[list[tuple[int, str]], bool]:
    """Run several `cirlib` commands in one fresh interpreter: [(status, stderr)], torch imported?"""
    env = {k: v for k, v in os.environ.items() if k != "CIRLIB_WEIGHTS"}
    out = subprocess.run(
        [sys.executable, "-c", _CALLS, json.dumps(calls)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return [(rc, err) for rc, err in result["results"]], result["torch"]


def _safetensors_bytes(metadata: dict[str, str] | None) -> bytes:
    header = {"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + b"\0\0\0\0"


def test_checkpoint_errors_come_before_torch_is_imported(tmp_path: Path) -> None:
    phi = tmp_path / "phi.safetensors"
    phi.write_bytes(_safetensors_bytes({"cirlib_kind": "phi", "cirlib_arch": "{}"}))
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(_safetensors_bytes(None))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    missing = tmp_path / "nope.safetensors"
    base = ["eval", "--profile", "paper", "--benchmark", "cirr", "--method", "predicir"]
    calls = [
        base,
        *([*base, "--predicir-checkpoint", str(p)] for p in (missing, phi, bare, garbage, tmp_path)),
    ]
    results, torch_imported = _cli_calls_in_subprocess(calls)
    assert not torch_imported
    assert all(rc == 2 and err.count("\n") == 0 for rc, err in results), results
    errs = [err for _, err in results]
    assert "needs --predicir-checkpoint FILE" in errs[0]
    assert "no official PrediCIR weights exist" in errs[0] and "cirlib train-predicir" in errs[0]
    assert "--backbone ViT-L-14" in errs[0]  # the default backbone, the one to train for
    assert f"--predicir-checkpoint {missing} does not exist" in errs[1]
    assert f"{phi} is a cirlib 'phi' checkpoint, not a PrediCIR network" in errs[2]
    assert f"{bare} is a safetensors file without cirlib metadata" in errs[3]
    assert f"{garbage} is not a safetensors file" in errs[4]
    assert f"{tmp_path} is not a file" in errs[5]


def test_a_checkpoint_registered_for_another_backbone_is_refused(zoo_checkpoint, tmp_path) -> None:
    cfg = EvalConfig(benchmark="cirr", method="predicir", profile="paper", backbone=TEST_ARCH,
                     predicir_checkpoint=zoo_checkpoint)  # fmt: skip
    assert check_predicir_checkpoint(cfg) == zoo_checkpoint
    with pytest.raises(RunError, match=f"was trained for backbone {TEST_ARCH} .*not ViT-B-32"):
        check_predicir_checkpoint(dataclasses.replace(cfg, backbone="ViT-B-32"))


def test_predicir_options_are_refused_for_other_methods_and_checked(capsys) -> None:
    assert main(["eval", "--benchmark", "cirr", "--method", "sum", "--predicir-box", "center"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "cirlib eval: error: --predicir-box is an option of --method predicir only, not of --method sum"
    )
    assert main(["eval", "--benchmark", "cirr", "--method", "cig", "--predicir-checkpoint", "x"]) == 2
    assert (
        "--predicir-checkpoint is an option of --method predicir only, not of --method cig"
        in capsys.readouterr().err
    )
    assert main(["eval", "--benchmark", "cirr", "--method", "predicir", "--fusion-weight", "0.5"]) == 2
    assert (
        "--fusion-weight is an option of --method cig only, not of --method predicir"
        in capsys.readouterr().err
    )
    with pytest.raises(RunError, match="--predicir-box must be one of center, full, not 'left'"):
        check_method_options(EvalConfig(benchmark="cirr", method="predicir", predicir_box="left"))
    with pytest.raises(
        RunError, match="--predicir-checkpoint, --predicir-box are options of --method predicir"
    ):
        check_method_options(
            EvalConfig(benchmark="cirr", method="image", predicir_checkpoint="a", predicir_box="full")
        )
    assert PREDICIR_BOXES == INFERENCE_BOXES  # the torch-free copy agrees with the model's


# --------------------------------------------------------------------------- (c) cirlib train-predicir
def test_train_predicir_end_to_end_then_eval(
    tiny_backbone, clip_hash, circo_data, cache, tmp_path, capsys
) -> None:
    images = _write_images(tmp_path / "pairs" / "images", 8)
    captions = [
        "a red dog",
        "two cats",
        "a blue car",
        "a tree",
        "a boat at sea",
        "a house",
        "a cup",
        "a bird",
    ]
    rows = [{"image": str(p.relative_to(tmp_path / "pairs")), "caption": c} for p, c in zip(images, captions)]
    rows[0]["image"] = str(images[0])  # absolute paths work too
    pairs = _write_jsonl(tmp_path / "pairs" / "pairs.jsonl", rows)
    output = tmp_path / "ckpts" / "predicir-tiny-test.safetensors"  # the folder does not exist yet
    args = ["train-predicir", "--backbone", TEST_ARCH, "--weights", str(tiny_backbone), "--pairs", str(pairs),
            "--output", str(output), "--steps", "2", "--batch-size", "4", "--device", "cpu",
            "--resume-dir", str(tmp_path / "state")]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checkpoint"] == str(output) and output.is_file()
    assert (report["n_pairs"], report["steps"], report["grid"], report["clip_hash"]) == (8, 2, 2, clip_hash)
    assert np.isfinite(report["final_align_loss"]) and np.isfinite(report["final_prediction_loss"])
    assert (tmp_path / "state").is_dir() and any((tmp_path / "state").iterdir())  # resumable state
    net = load_predicir_file(output)
    assert isinstance(net, PrediCIRNet) and net.clip_hash == clip_hash and net.grid == 2
    entry = zoo.read_registry(output.parent)["predicir-tiny-test"]
    assert (
        entry["file"] == output.name and entry["kind"] == "predicir" and entry["sha256"] == report["sha256"]
    )
    assert entry["config"]["backbone"] == TEST_ARCH and entry["config"]["n_pairs"] == 8
    assert entry["command"].startswith("cirlib train-predicir --backbone " + TEST_ARCH)
    # the checkpoint works with cirlib eval
    out = tmp_path / "eval"
    assert (
        main(
            [
                *_eval_args(circo_data, tiny_backbone, output, out),
                "--predicir-box",
                "full",
                "--n-queries",
                "20",
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert "map@5" in metrics
    record = json.loads((out / "run.json").read_text())
    assert record["n_queries"] == 20 and record["config"]["predicir_box"] == "full"
    assert record["model"]["predicir"]["sha256"] == report["sha256"]


def test_train_predicir_input_errors_come_before_torch(tmp_path: Path) -> None:
    images = _write_images(tmp_path / "images", 3)
    weights = tmp_path / "ViT-L-14.safetensors"  # any file: only its path is checked before torch
    weights.write_bytes(b"")
    rows = [{"image": f"images/{p.name}", "caption": f"caption {i}"} for i, p in enumerate(images)]
    rows.insert(2, {"image": "images/absent.jpg", "caption": "gone"})
    with_missing = tmp_path / "missing.jsonl"
    with_missing.write_text(
        "".join(json.dumps(r) + "\n" + ("\n" if i == 0 else "") for i, r in enumerate(rows))
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    bad_json = _write_jsonl(tmp_path / "bad.jsonl", rows[:1])
    bad_json.write_text(bad_json.read_text() + "{not json\n")
    base = ["train-predicir", "--weights", str(weights), "--output", str(tmp_path / "out.safetensors")]
    calls = [
        [*base, "--pairs", str(with_missing)],
        [*base, "--pairs", str(empty)],
        [*base, "--pairs", str(bad_json)],
        [*base, "--pairs", str(tmp_path / "absent.jsonl")],
        [*base[:-1], str(tmp_path / "out.pt"), "--pairs", str(empty)],
        [*base[:-1], str(tmp_path / "bad name.safetensors"), "--pairs", str(empty)],
        [*base, "--pairs", str(empty), "--steps", "0"],
    ]
    results, torch_imported = _cli_calls_in_subprocess(calls)
    assert not torch_imported
    assert all(rc == 2 and err.count("\n") == 0 for rc, err in results), results
    errs = [err.removeprefix("cirlib train-predicir: error: ") for _, err in results]
    # line 4: the blank line after the first pair still counts
    assert errs[0] == f"{with_missing} line 4: image {tmp_path / 'images' / 'absent.jpg'} does not exist"
    assert errs[1] == f"--pairs {empty} holds no image-caption pairs"
    assert errs[2].startswith(f"{bad_json} line 2: not valid JSON")
    assert errs[3] == f"--pairs {tmp_path / 'absent.jsonl'} does not exist"
    assert "must end in .safetensors" in errs[4]
    assert "'bad name'" in errs[5] and "must match" in errs[5]
    assert errs[6] == "--steps must be a whole number >= 1, not 0"


def test_pairs_files_and_unreadable_images(tmp_path: Path) -> None:
    from cirlib.predicir_training import PrediCIRTrainingError, choose_grid, load_pair_images, read_pairs

    images = _write_images(tmp_path / "im", 3)
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        'image,caption\nim/img0.jpg,"a dog, running"\n' + f"{images[1]},a cat\nim/img2.jpg,a car\n"
    )
    pairs = read_pairs(csv_file)
    assert [p.image for p in pairs] == images and [p.line for p in pairs] == [2, 3, 4]
    assert pairs[0].caption == "a dog, running"
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("path,text\na.jpg,b\n")
    with pytest.raises(
        PrediCIRTrainingError, match=r"bad.csv line 1: the header must name the columns image,caption"
    ):
        read_pairs(bad_header)
    no_caption = _write_jsonl(tmp_path / "nc.jsonl", [{"image": "a.jpg", "caption": "x"}, {"image": "b.jpg"}])
    with pytest.raises(PrediCIRTrainingError, match='nc.jsonl line 2: no "caption" text'):
        read_pairs(no_caption)
    with pytest.raises(PrediCIRTrainingError, match="expected a .jsonl file"):
        read_pairs(_write_jsonl(tmp_path / "pairs.txt", []))
    out = load_pair_images(pairs, 24, csv_file)
    assert out.shape == (3, 24, 24, 3) and out.dtype == np.uint8
    images[2].write_bytes(b"not a jpeg")
    with pytest.raises(PrediCIRTrainingError, match=f"pairs.csv line 4: cannot read image {images[2]}"):
        load_pair_images(pairs, 24, csv_file)
    assert [choose_grid(s) for s in (16, 7, 2, 14)] == [4, 7, 2, 2]
    with pytest.raises(PrediCIRTrainingError, match="--grid 3 must divide the backbone's 16x16 patch grid"):
        choose_grid(16, 3)


# --------------------------------------------------------------------------- (d) the tiny profile
def test_tiny_profile_box_and_checkpoint_reach_the_method(monkeypatch) -> None:
    import cirlib.methods
    import cirlib.run
    from cirlib.run import build

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def fake_build_method(name: str, profile: str, **options):
        seen.update(name=name, profile=profile, **options)
        raise Stop

    monkeypatch.setattr(cirlib.methods, "build_method", fake_build_method)
    cfg = EvalConfig(
        benchmark="cirr", method="predicir", predicir_box="full", predicir_checkpoint="tiny-predicir-whole"
    )
    with pytest.raises(Stop):
        build(cfg)
    assert seen == {"name": "predicir", "profile": "tiny", "checkpoint": "tiny-predicir-whole", "box": "full"}
    with pytest.raises(RunError, match="'nope' is not a tiny PrediCIR checkpoint; known: tiny-predicir, "):
        build(dataclasses.replace(cfg, predicir_checkpoint="nope"))
    assert dataclasses.asdict(cfg)["predicir_box"] == "full"  # run.json's "config" is built from this
    assert cirlib.run._method_model(cfg, {}) == {"predicir": {"name": "tiny-predicir-whole", "box": "full"}}

    # and through the command line
    def fake_run_eval(cfg: EvalConfig) -> dict:
        seen["cfg"] = cfg
        return {"metrics": {"recall@1": 0.0}, "n_queries": 0, "files": []}

    monkeypatch.setattr(cirlib.run, "run_eval", fake_run_eval)
    assert main(["eval", "--benchmark", "cirr", "--method", "predicir", "--predicir-box", "full"]) == 0
    got = seen["cfg"]
    assert isinstance(got, EvalConfig) and (got.predicir_box, got.predicir_checkpoint) == ("full", None)


def test_tiny_profile_eval_with_the_committed_checkpoint(tmp_path, capsys) -> None:
    assert zoo.find_checkpoint("tiny-predicir", zoo.committed_root()) is not None, (
        "tiny-predicir is committed"
    )
    args = ["eval", "--benchmark", "cirr", "--method", "predicir", "--predicir-box", "full", "--n-queries", "20",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    assert "recall@1" in json.loads(capsys.readouterr().out)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["model"]["predicir"] == {"name": "tiny-predicir", "box": "full"}
