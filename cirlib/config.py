"""Profiles, paths, seeds and devices: the one place every other module asks.

Two profiles share one code path:

* ``tiny`` (default): offline, CPU, the procedural shapes world and tiny models trained here.
* ``paper``: real backbones and real benchmarks from local files the user supplies.

The cache root defaults to ``<repo>/.cache/cirlib`` and is overridden by ``CIRLIB_CACHE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Profile = Literal["tiny", "paper"]
PROFILES: tuple[str, ...] = ("tiny", "paper")

#: Bumped when a change to cirlib alters what a cached artefact would contain
#: (world generation, training code, embedding code). Part of every cache key.
CODE_VERSION = "1"

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
ANNOTATIONS_DIR = DATA_DIR / "annotations"
RESULTS_DIR = DATA_DIR / "results"
CHECKPOINTS_DIR = DATA_DIR / "checkpoints"
FIGURES_DIR = REPO_ROOT / "figures"


def results_dir() -> Path:
    """Where notebooks write and read result tables: ``data/results/``, or ``CIRLIB_RESULTS``
    (``python -m cirlib.reproduce --output-dir`` points it away from the committed tables)."""
    return Path(os.environ.get("CIRLIB_RESULTS", RESULTS_DIR))


def figures_dir() -> Path:
    """Where figures are saved: ``figures/``, or ``CIRLIB_FIGURES`` (smoke runs and ``--output-dir``)."""
    return Path(os.environ.get("CIRLIB_FIGURES", FIGURES_DIR))


def shown_path(path: Path | str) -> str:
    """``path`` relative to the repository when it lies inside it (what notebooks print), else absolute."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(resolved)


def cache_root() -> Path:
    """Root folder of every cache (embeddings, worlds, trained models not committed)."""
    root = Path(os.environ.get("CIRLIB_CACHE", REPO_ROOT / ".cache" / "cirlib"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def check_profile(profile: str) -> Profile:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return profile  # type: ignore[return-value]


@dataclass(frozen=True)
class RunConfig:
    """What a notebook or command runs with: the profile, the seeds and the device."""

    profile: Profile = "tiny"
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so runs repeat on the same machine."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device() -> str:
    """CPU unless the user asks for another device with ``CIRLIB_DEVICE`` (never automatic,
    so that the tiny profile gives the same numbers everywhere)."""
    return os.environ.get("CIRLIB_DEVICE", "cpu")


def config_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-serialisable config (dataclasses via ``__dict__``)."""

    def default(o: Any) -> Any:
        if hasattr(o, "__dataclass_fields__"):
            return {k: getattr(o, k) for k in o.__dataclass_fields__}
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, (np.integer, np.floating)):
            return o.item()
        raise TypeError(f"cannot hash object of type {type(o).__name__}")

    payload = json.dumps({"code_version": CODE_VERSION, "config": obj}, sort_keys=True, default=default)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so that an interrupted
    write never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def progress_bar(iterable: Any = None, *, show: bool = True, **kwargs: Any) -> Any:
    """A tqdm progress bar (widgets in notebooks, text elsewhere), shown when ``show`` unless the
    environment turns bars off with ``TQDM_DISABLE`` (``make reproduce`` does, so that committed
    notebooks carry no widget state). Every bar in cirlib goes through here because tqdm lets an
    explicit ``disable=`` argument override ``TQDM_DISABLE``."""
    from tqdm.auto import tqdm

    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")
    return tqdm(iterable, disable=off or not show, **kwargs)
