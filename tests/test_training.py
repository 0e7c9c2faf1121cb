"""`cirlib train` end to end with micro recipes: checkpoints, registry, hash checks, reuse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cirlib.models.tiny import IPCIR_NAMES, predicir_recipes


@pytest.mark.slow
def test_cirlib_train_writes_a_verified_registry(tmp_path):
    root = tmp_path / "ckpt"
    env = {
        **os.environ,
        "CIRLIB_RECIPES": "micro",
        "CIRLIB_CACHE": str(tmp_path / "cache"),
        "CIRLIB_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "cirlib", "train", "--from-scratch", "--root", str(root)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=900)
    report = json.loads(out.stdout)
    assert set(report) == {
        "tiny-clip",
        "tiny-phi-pic2word",
        "tiny-phi-searle",
        "tiny-combiner-supervised",
        "tiny-cig-generator",
        *predicir_recipes(),
        *IPCIR_NAMES,
    }
    registry = json.loads((root / "registry.json").read_text())
    assert "tiny-cig-generator-step00002" in registry  # the micro recipe's snapshot
    for name, entry in registry.items():
        assert (root / entry["file"]).is_file()
        owner = "tiny-cig-generator" if name.startswith("tiny-cig-generator") else name
        assert entry["command"] == f"cirlib train --only {owner} --from-scratch"
    clip_hash = None
    from cirlib.models import zoo

    clip = zoo.load_checkpoint("tiny-clip", root=root)
    clip_hash = clip.hash
    assert zoo.load_checkpoint("tiny-phi-pic2word", root=root).clip_hash == clip_hash
    assert zoo.load_checkpoint("tiny-combiner-supervised", root=root).clip_hash == clip_hash
    assert zoo.load_checkpoint("tiny-cig-generator", root=root).clip_hash == clip_hash
    assert zoo.load_checkpoint("tiny-cig-generator-step00002", root=root).clip_hash == clip_hash
    for name in predicir_recipes():
        assert zoo.load_checkpoint(name, root=root).clip_hash == clip_hash
    # nothing to do the second time
    again = subprocess.run(
        cmd[:-3] + ["--root", str(root)], capture_output=True, text=True, env=env, check=True, timeout=300
    )
    assert json.loads(again.stdout) == {}
    # a damaged file is refused with the command that rebuilds it
    path = root / registry["tiny-phi-pic2word"]["file"]
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(zoo.CheckpointError, match="cirlib train --only tiny-phi-pic2word"):
        zoo.load_checkpoint("tiny-phi-pic2word", root=root)
