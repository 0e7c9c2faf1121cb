"""Checkpoint registry: every trained model has a name, a file, a sha256 and the command that made it.

Two roots share one format (``<root>/registry.json`` + ``<root>/<name>.safetensors``):

* ``data/checkpoints/`` (:data:`cirlib.config.CHECKPOINTS_DIR`): committed checkpoints, so that the
  notebooks run without training;
* ``cache_root()/"models"``: checkpoints trained on demand by :func:`load_or_train`.

Weights are stored in fp16 (half the size of the repository; loaded back as float32) with the model's
architecture in the file's own metadata, so that a file can be loaded without the registry. Every
load verifies the file's sha256 against the registry and fails loudly, naming the file and the
command that rebuilds it. A model returned by :func:`load_or_train` is always the one *read back* from
the fp16 file, so a first run and every later run embed identically.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import io
import json
import re
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from cirlib.config import CHECKPOINTS_DIR, atomic_write_bytes, atomic_write_json, cache_root, config_hash
from cirlib.models.clip import CLIPModel, clip_from_state_dict
from cirlib.models.phi import Phi

try:  # safetensors arrives with transformers; fall back to torch.save without it
    import safetensors.torch as _st
except ImportError:  # pragma: no cover - depends on the environment
    _st = None

REGISTRY_FILE = "registry.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Model = CLIPModel | Phi | torch.nn.Module

#: Other modules the zoo stores: kind -> (module, class). Each has an ``arch`` dict of constructor
#: arguments and a ``clip_hash``; named by path so the zoo need not import the methods layer.
MODULE_KINDS: dict[str, tuple[str, str]] = {
    "combiner": ("cirlib.methods.supervised", "Combiner"),
    "decoder": ("cirlib.models.decoders", "TextDecoder"),
    "generator": ("cirlib.generation.composed", "GeneratorUNet"),
    "grounded-generator": ("cirlib.generation.grounded", "GroundedUNet"),
    "predicir": ("cirlib.models.predicir", "PrediCIRNet"),
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unregistered, or its file does not match its recorded sha256."""


def committed_root() -> Path:
    return CHECKPOINTS_DIR


def cache_models_root() -> Path:
    return cache_root() / "models"


def _roots(root: Path | None) -> list[Path]:
    return [Path(root)] if root is not None else [committed_root(), cache_models_root()]


def read_registry(root: Path) -> dict[str, dict[str, Any]]:
    """``name -> entry`` of the registry under ``root`` (empty if none)."""
    path = Path(root) / REGISTRY_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"checkpoint registry {path} is not valid JSON ({err}); fix or delete it"
        ) from err


def list_checkpoints(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """All registered checkpoints (committed first; a committed name shadows a cached one)."""
    out: dict[str, dict[str, Any]] = {}
    for r in reversed(_roots(root)):
        out.update({k: {**v, "root": str(r)} for k, v in read_registry(r).items()})
    return out


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".registry.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _describe(model: Model) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """kind, architecture (what rebuilds the module) and state dict of a model."""
    if isinstance(model, CLIPModel):
        if model.profile != "tiny":
            raise ValueError(
                "only tiny-profile CLIP models are stored in the zoo (paper weights are the user's)"
            )
        return "clip", {"model_config": model.model_config, "name": model.name}, model.model.state_dict()
    if isinstance(model, Phi):
        return "phi", {**model.arch, "clip_hash": model.clip_hash}, model.state_dict()
    for kind, (module, cls) in MODULE_KINDS.items():
        if type(model).__name__ == cls and type(model).__module__ == module:
            return kind, {**model.arch, "clip_hash": getattr(model, "clip_hash", None)}, model.state_dict()
    raise TypeError(
        f"cannot store a {type(model).__name__}; expected CLIPModel, Phi or one of {sorted(MODULE_KINDS)}"
    )


def _serialise(kind: str, arch: dict[str, Any], state: Mapping[str, torch.Tensor]) -> tuple[bytes, str]:
    half = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous().clone()
        for k, v in state.items()
    }
    meta = {"cirlib_kind": kind, "cirlib_arch": json.dumps(arch, sort_keys=True)}
    if _st is not None:
        return _st.save(half, metadata=meta), ".safetensors"
    buf = io.BytesIO()
    torch.save({"state_dict": half, "metadata": meta}, buf)
    return buf.getvalue(), ".pt"


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def _deserialise(path: Path, data: bytes) -> Model:
    if path.suffix == ".safetensors":
        if _st is None:
            raise CheckpointError(
                f"{path} is a safetensors file but the safetensors package is not installed"
            )
        meta, state = _safetensors_metadata(data), _st.load(data)
    else:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        meta, state = blob["metadata"], blob["state_dict"]
    kind, arch = meta.get("cirlib_kind"), json.loads(meta.get("cirlib_arch", "{}"))
    if kind == "clip":
        return clip_from_state_dict(arch["model_config"], state, name=arch.get("name", path.stem))
    if kind == "phi":
        clip_hash = arch.pop("clip_hash", None)
        phi = Phi(**arch)
        phi.load_state_dict({k: v.float() for k, v in state.items()})
        phi.clip_hash = clip_hash
        return phi.eval()
    if kind in MODULE_KINDS:
        import importlib

        module, cls = MODULE_KINDS[kind]
        clip_hash = arch.pop("clip_hash", None)
        model = getattr(importlib.import_module(module), cls)(**arch)
        model.load_state_dict({k: v.float() for k, v in state.items()})
        model.clip_hash = clip_hash
        return model.eval()
    raise CheckpointError(
        f"{path} has no cirlib metadata (kind {kind!r}); was it written by cirlib.models.zoo?"
    )


def load_file(path: Path, sha256: str | None = None) -> Model:
    """Load a checkpoint file directly (verifying ``sha256`` if given)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    data = path.read_bytes()
    if sha256 is not None and _sha256(data) != sha256:
        raise CheckpointError(
            f"checkpoint file {path} has sha256 {_sha256(data)}, but the registry records {sha256}: "
            "the file is corrupt or was replaced"
        )
    return _deserialise(path, data)


def save_checkpoint(
    name: str,
    model: Model,
    config: Any,
    seed: int,
    command: str,
    metrics: Mapping[str, float] | None = None,
    *,
    root: Path | None = None,
) -> Path:
    """Write ``model`` (fp16) to ``<root>/<name>.<ext>`` atomically and register it (atomically, under
    a file lock). ``root`` defaults to the committed ``data/checkpoints``. Returns the file path."""
    if not _NAME_RE.match(name):
        raise ValueError(f"checkpoint name {name!r} must match {_NAME_RE.pattern}")
    root = Path(root) if root is not None else committed_root()
    kind, arch, state = _describe(model)
    data, ext = _serialise(kind, arch, state)
    path = root / f"{name}{ext}"
    with _locked(root):
        atomic_write_bytes(path, data)
        registry = read_registry(root)
        registry[name] = {
            "file": path.name,
            "kind": kind,
            "arch": arch,
            "config": json.loads(json.dumps(config, default=_jsonable)),
            "config_hash": config_hash(config),
            "seed": seed,
            "command": command,
            "sha256": _sha256(data),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "metrics": dict(metrics or {}),
        }
        atomic_write_json(root / REGISTRY_FILE, registry)
    return path


def _jsonable(o: Any) -> Any:
    if hasattr(o, "__dataclass_fields__"):
        return {k: getattr(o, k) for k in o.__dataclass_fields__}
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"cannot store object of type {type(o).__name__} in a checkpoint config")


def find_checkpoint(name: str, root: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """``(root, entry)`` of the registered checkpoint ``name``, committed root first; None if unknown."""
    for r in _roots(root):
        entry = read_registry(r).get(name)
        if entry is not None:
            return r, entry
    return None


def load_checkpoint(name: str, *, root: Path | None = None) -> Model:
    """Load a registered checkpoint, verifying its sha256; loud errors name the file and the command
    that rebuilds it."""
    found = find_checkpoint(name, root)
    if found is None:
        known = ", ".join(sorted(list_checkpoints(root))) or "none"
        where = " and ".join(str(r / REGISTRY_FILE) for r in _roots(root))
        raise CheckpointError(f"no checkpoint named {name!r} in {where}; registered: {known}")
    r, entry = found
    path = r / entry["file"]
    rebuild = f"rebuild it with: {entry.get('command') or '(no command recorded)'}"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {name!r}: file {path} is missing; {rebuild}")
    try:
        return load_file(path, entry["sha256"])
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {name!r}: {err}; {rebuild}") from err


def load_or_train(
    name: str,
    train_fn: Callable[[], Model],
    *,
    config: Any,
    seed: int,
    command: str,
    metrics: Mapping[str, float] | None = None,
    root: Path | None = None,
) -> Model:
    """The checkpoint ``name`` if registered with the same config hash, else ``train_fn()`` saved to the
    cache (``cache_root()/"models"``, or ``root``) and read back from its fp16 file.

    A committed checkpoint with a different config is an error (the committed file would silently
    disagree with the code); a cached one is retrained with a warning."""
    want = config_hash(config)
    found = find_checkpoint(name, root)
    target = Path(root) if root is not None else cache_models_root()
    if found is not None:
        r, entry = found
        if entry.get("config_hash") == want:
            return load_checkpoint(name, root=r)
        if r == committed_root():
            raise CheckpointError(
                f"committed checkpoint {name!r} ({r / entry['file']}) was made with config {entry.get('config_hash')}, "
                f"but the code now asks for {want}; rebuild it with: {entry.get('command')}"
            )
        warnings.warn(
            f"cached checkpoint {name!r} was made with config {entry.get('config_hash')}, not {want}; retraining",
            stacklevel=2,
        )
    model = train_fn()
    save_checkpoint(name, model, config, seed, command, metrics, root=target)
    return load_checkpoint(name, root=target)


__all__ = [
    "CheckpointError",
    "REGISTRY_FILE",
    "cache_models_root",
    "committed_root",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_file",
    "load_or_train",
    "read_registry",
    "save_checkpoint",
]
