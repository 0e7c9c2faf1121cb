"""Where the generative models' local files are expected, checked without importing torch.

``cirlib eval`` checks every input of a paper-profile run before torch, diffusers or transformers is
imported (a missing folder is reported in milliseconds, and nothing is ever downloaded): the folder
checks of :mod:`cirlib.generation.pipelines` and the inputs of CIG's generator
(:mod:`cirlib.generation.paper_cig`) live here, as :mod:`cirlib.models.weights` does for CLIP weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cirlib.models.released import ReleasedPhi, released_phi, resolve_phi_weights
from cirlib.models.weights import MissingWeightsError, resolve_weights

#: What each kind of folder should hold (the upstream model the papers use, as an example).
SD_UPSTREAM: dict[str, str] = {
    "sd15": "a Stable Diffusion 1.x pipeline, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0 (CIG's base pipeline)",
}
UNET_UPSTREAM = "a UNet2DConditionModel folder, e.g. CIG's fine-tuned SDXL UNet ({model_path}/unet)"
VAE_UPSTREAM = "an AutoencoderKL folder, e.g. madebyollin/sdxl-vae-fp16-fix (the VAE CIG uses)"
CAPTIONER_UPSTREAM = "a BLIP-2 model with its processor, e.g. Salesforce/blip2-opt-2.7b"
LLM_UPSTREAM = "a causal language model with its tokenizer, e.g. Qwen/Qwen1.5-32B-Chat (IP-CIR)"
LOCAL_ONLY = (
    "saved with save_pretrained, or downloaded with `huggingface-cli download REPO --local-dir DIR`; "
    "cirlib never downloads models, so pass a local folder, not a hub id"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class LocalModelNotFoundError(FileNotFoundError):
    """A local model folder is missing or lacks its index file; the message names the path as given
    and the upstream model that should be there."""


def folder_problem(path: str | Path, required: Sequence[str] = (), any_of: Sequence[str] = ()) -> str | None:
    """What is wrong with ``path`` as a saved model folder (it must hold every file of ``required``
    and one of ``any_of``), as a phrase to follow the path in a message; None if nothing is."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return "is a file, not a folder" if folder.exists() else "does not exist"
    missing = [name for name in required if not (folder / name).is_file()]
    if any_of and not any((folder / name).is_file() for name in any_of):
        missing.append(" or ".join(any_of))
    if missing:
        return f"has no {', '.join(missing)}, so it is not a saved model folder"
    return None


def local_dir(
    path: str | Path,
    what: str,
    upstream: str,
    required: Sequence[str] = (),
    any_of: Sequence[str] = (),
) -> Path:
    """``path`` as a folder holding every file of ``required`` and one of ``any_of``, else
    :class:`LocalModelNotFoundError` (before any heavy import or loading)."""
    problem = folder_problem(path, required, any_of)
    if problem is not None:
        raise LocalModelNotFoundError(
            f"{what}: {str(path)!r} {problem}; it should hold {upstream}, {LOCAL_ONLY}"
        )
    return Path(path).expanduser()


def unet_folder(unet: str | Path) -> Path:
    """CIG's ``--model_path`` holds the UNet in a ``unet`` subfolder: accept either."""
    candidate = Path(unet).expanduser()
    if not (candidate / "config.json").is_file() and (candidate / "unet" / "config.json").is_file():
        return candidate / "unet"
    return candidate


#: The released phis CIG conditions each text encoder with, in the pipeline's text-encoder order.
CIG_PHIS: dict[str, tuple[str, ...]] = {
    "sdxl": ("cig-lincir-vit-l14", "lincir-vit-bigg14"),
    "sd15": ("cig-lincir-vit-l14",),
}


class MissingGeneratorFilesError(LocalModelNotFoundError, MissingWeightsError):
    """One or more inputs of the generator (pipeline / UNet / VAE folders, CLIP or phi weights files)
    are missing; the message lists every one with what to put where. Catchable as either
    :class:`LocalModelNotFoundError` or :class:`MissingWeightsError`."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        listed = "\n".join(f"  {i}. {p}" for i, p in enumerate(self.problems, 1))
        super().__init__(f"CIG generator: {len(self.problems)} missing input(s):\n{listed}")


@dataclass(frozen=True)
class GeneratorFiles:
    """Every local input of the generator, resolved and checked."""

    kind: Literal["sd15", "sdxl"]
    pipeline: Path
    unet: Path | None
    vae: Path | None
    #: per text encoder: the released phi, its weights file, its backbone's CLIP weights file
    phis: tuple[tuple[ReleasedPhi, Path, Path], ...] = field(default_factory=tuple)


def resolve_generator_files(
    pipeline_dir: str | Path,
    kind: Literal["sd15", "sdxl"] = "sdxl",
    *,
    weights: str | Path | None = None,
    unet: str | Path | None = None,
    vae: str | Path | None = None,
    phis: Sequence[str | ReleasedPhi] | None = None,
) -> GeneratorFiles:
    """Check every input of the generator without loading anything: the pipeline folder (with
    ``model_index.json``), the optional UNet / VAE folders (with ``config.json``), and for each phi
    (default :data:`CIG_PHIS` of ``kind``, one per text encoder) its weights file and its backbone's
    CLIP weights file in the weights folder ``weights`` (default ``$CIRLIB_WEIGHTS``). Raises
    :class:`MissingGeneratorFilesError` listing every missing input, each with the message of
    :func:`load_sd_pipeline`, :func:`resolve_weights` or :func:`resolve_phi_weights`; ValueError /
    KeyError for a bad ``kind``, phi count or phi name."""
    if kind not in CIG_PHIS:
        raise ValueError(f"kind must be one of {', '.join(CIG_PHIS)}, got {kind!r}")
    names = list(CIG_PHIS[kind] if phis is None else phis)
    if len(names) != len(CIG_PHIS[kind]):
        encoders = "text_encoder and text_encoder_2" if kind == "sdxl" else "text_encoder"
        raise ValueError(
            f"a {kind} pipeline has {len(CIG_PHIS[kind])} text encoder(s) ({encoders}), so it needs "
            f"{len(CIG_PHIS[kind])} phi(s), one per encoder; got {len(names)}: {names}"
        )
    specs = [s if isinstance(s, ReleasedPhi) else released_phi(s) for s in names]  # KeyError: a bad name
    if weights is not None and Path(weights).expanduser().is_file():
        raise ValueError(
            f"weights {weights} is a file; the generator needs a weights folder holding the CLIP and phi "
            f"files of {', '.join(s.name for s in specs)}"
        )
    problems: list[str] = []

    def check(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (LocalModelNotFoundError, MissingWeightsError) as err:
            message = str(err).strip('"')
            if message not in problems:  # e.g. "no weights folder was given", once
                problems.append(message)
            return None

    label = "SDXL" if kind == "sdxl" else "Stable Diffusion 1.x"
    pipeline = check(
        local_dir,
        pipeline_dir,
        f"{label} pipeline folder",
        SD_UPSTREAM[kind],
        required=("model_index.json",),
    )
    unet_dir = None
    if unet is not None:
        unet_dir = check(
            local_dir, unet_folder(unet), "UNet folder", UNET_UPSTREAM, required=("config.json",)
        )
    vae_dir = None
    if vae is not None:
        vae_dir = check(local_dir, vae, "VAE folder", VAE_UPSTREAM, required=("config.json",))
    resolved = []
    for spec in specs:
        phi_path = check(resolve_phi_weights, spec, weights)
        clip_path = check(resolve_weights, spec.backbone, weights)
        resolved.append((spec, phi_path, clip_path))
    if problems:
        raise MissingGeneratorFilesError(problems)
    return GeneratorFiles(kind=kind, pipeline=pipeline, unet=unet_dir, vae=vae_dir, phis=tuple(resolved))


# --------------------------------------------------------------------------- IP-CIR
#: What the IP-CIR generator folder should hold.
GLIGEN_UPSTREAM = (
    "a text-box GLIGEN pipeline (diffusers StableDiffusionGLIGENPipeline, SD 1.4 with gated layers), "
    "e.g. masterful/gligen-1-4-generation-text-box"
)


class MissingIPCIRFilesError(MissingGeneratorFilesError):
    """One or more of IP-CIR's model folders (captioner, language model, layout generator) are
    missing or incomplete; the message lists every one. A :class:`MissingGeneratorFilesError` (so a
    :class:`LocalModelNotFoundError` too), titled for IP-CIR."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        listed = "\n".join(f"  {i}. {p}" for i, p in enumerate(self.problems, 1))
        # skip MissingGeneratorFilesError's own title ("CIG generator: ...")
        super(MissingGeneratorFilesError, self).__init__(
            f"IP-CIR components: {len(self.problems)} missing input(s):\n{listed}"
        )


def gligen_problem(path: str | Path) -> str | None:
    """What is wrong with ``path`` as a text-box GLIGEN pipeline folder (``model_index.json`` and a
    UNet whose ``unet/config.json`` says ``attention_type: "gated"``), as a phrase to follow the path
    in a message; None if nothing is. A plain Stable Diffusion folder would load as a GLIGEN pipeline
    and fail only when sampling (its UNet has no gated layers and no box encoder), hence the UNet
    check."""
    problem = folder_problem(path, required=("model_index.json", "unet/config.json"))
    if problem is not None:
        return problem
    config_path = Path(path).expanduser() / "unet" / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        return f"has an unreadable unet/config.json ({err})"
    attention_type = config.get("attention_type", "default") if isinstance(config, dict) else None
    if attention_type == "gated":
        return None
    if attention_type == "gated-text-image":
        return (
            "holds the text-image GLIGEN (unet/config.json has attention_type 'gated-text-image'), which "
            "grounds boxes on images too; IP-CIR's generator is the text-box one (attention_type 'gated')"
        )
    return (
        f"has a UNet without GLIGEN's gated layers (unet/config.json has attention_type {attention_type!r}, "
        "not 'gated'), so it is not a text-box GLIGEN pipeline"
    )


def gligen_dir(path: str | Path) -> Path:
    """``path`` as a text-box GLIGEN pipeline folder (:func:`gligen_problem`), else
    :class:`LocalModelNotFoundError` naming the path and :data:`GLIGEN_UPSTREAM`."""
    problem = gligen_problem(path)
    if problem is not None:
        raise LocalModelNotFoundError(
            f"GLIGEN pipeline folder: {str(path)!r} {problem}; it should hold {GLIGEN_UPSTREAM}, {LOCAL_ONLY}"
        )
    return Path(path).expanduser()


@dataclass(frozen=True)
class IPCIRFiles:
    """IP-CIR's three local model folders, checked (``generator`` None for the planned-text method,
    which draws nothing)."""

    captioner: Path
    llm: Path
    generator: Path | None


def resolve_ipcir_files(captioner: str | Path, llm: str | Path, generator: str | Path | None) -> IPCIRFiles:
    """Check IP-CIR's three folders without loading anything: the BLIP-2 captioner and the language
    model (``config.json`` and a tokenizer file, as :func:`load_captioner` / :func:`load_llm` check)
    and the text-box GLIGEN pipeline (:func:`gligen_problem`; ``generator=None`` skips it: the
    planned-text method needs the captioner and the language model only). Raises
    :class:`MissingIPCIRFilesError` (a :class:`MissingGeneratorFilesError`) listing every problem,
    each with the path, what should be there and where it comes from. Imports neither torch,
    diffusers nor transformers."""
    problems: list[str] = []

    def check(fn: Any, *args: Any, **kwargs: Any) -> Path | None:
        try:
            return fn(*args, **kwargs)
        except LocalModelNotFoundError as err:
            problems.append(str(err).strip('"'))
            return None

    captioner_dir = check(
        local_dir,
        captioner,
        "BLIP-2 captioner folder",
        CAPTIONER_UPSTREAM,
        required=("config.json",),
        any_of=TOKENIZER_FILES,
    )
    llm_dir = check(
        local_dir,
        llm,
        "language model folder",
        LLM_UPSTREAM,
        required=("config.json",),
        any_of=TOKENIZER_FILES,
    )
    generator_dir = None if generator is None else check(gligen_dir, generator)
    if problems:
        raise MissingIPCIRFilesError(problems)
    assert captioner_dir is not None and llm_dir is not None
    return IPCIRFiles(captioner=captioner_dir, llm=llm_dir, generator=generator_dir)


__all__ = [
    "CAPTIONER_UPSTREAM",
    "CIG_PHIS",
    "GLIGEN_UPSTREAM",
    "LLM_UPSTREAM",
    "LOCAL_ONLY",
    "SD_UPSTREAM",
    "TOKENIZER_FILES",
    "UNET_UPSTREAM",
    "VAE_UPSTREAM",
    "GeneratorFiles",
    "IPCIRFiles",
    "LocalModelNotFoundError",
    "MissingGeneratorFilesError",
    "MissingIPCIRFilesError",
    "folder_problem",
    "gligen_dir",
    "gligen_problem",
    "local_dir",
    "resolve_generator_files",
    "resolve_ipcir_files",
    "unet_folder",
]
