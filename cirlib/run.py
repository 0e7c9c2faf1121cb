"""One evaluation run end to end, for both profiles: what ``cirlib eval`` does.

:func:`check_paths` validates every path a run needs (dataset folder, annotation files, image
folders, weight files) with the light modules :mod:`cirlib.data.real` and
:mod:`cirlib.models.weights` / :mod:`cirlib.models.released` only, so a missing file fails in a
fraction of a second, before torch or any model is loaded. :func:`run_eval` then loads the
benchmark (tiny: the world's benchmark of that form; paper: the real one with its missing-image
report), builds the method, evaluates it and writes

* ``run.json``: metrics, configuration, data layout, missing-image summary, timings, throughput;
* the val metrics' prediction files in the server formats (CIRR, CIRCO) or cirlib's FashionIQ
  format, which ``cirlib score`` reproduces; or, on the real test splits, the files to upload to
  the CIRR / CIRCO evaluation servers (validated against the split before they are written).

Embeddings are cached content-keyed (:class:`cirlib.retrieval.EmbeddingCache`) in shards, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# torch-free: these paths are checked before torch is imported
from cirlib.config import file_sha256
from cirlib.generation.files import (
    CAPTIONER_UPSTREAM,
    CIG_PHIS,
    GLIGEN_UPSTREAM,
    LLM_UPSTREAM,
    LOCAL_ONLY,
    SD_UPSTREAM,
    UNET_UPSTREAM,
    VAE_UPSTREAM,
    folder_problem,
    unet_folder,
)
from cirlib.models.weights import PREDICIR_HOW

log = logging.getLogger("cirlib.run")

#: Methods that load a released textual-inversion network in the paper profile.
RELEASED_PHI_METHODS = ("pic2word", "searle", "lincir")
#: Methods that retrieve with another method's released phi: cig with SEARLE's, as the official
#: SEARLE_CIG code does (``--phi`` picks another SEARLE release).
RETRIEVAL_PHI_OF = {"cig": "searle"}

#: Options only method ``cig`` takes: EvalConfig field (and build_method keyword) -> command-line option.
CIG_OPTIONS: dict[str, str] = {
    "generator": "--generator",
    "generator_kind": "--generator-kind",
    "unet": "--unet",
    "vae": "--vae",
    "fusion_weight": "--fusion-weight",
    "n_generated": "--n-generated",
    "generation_steps": "--generation-steps",
    "guidance": "--guidance",
}
#: Of those, the folders of the diffusion generator, which only the paper profile has (the tiny
#: profile's cig samples the generator trained on the world).
CIG_PAPER_OPTIONS = ("generator", "generator_kind", "unet", "vae")
GENERATOR_KINDS = ("sdxl", "sd15")

#: Options only method ``predicir`` takes: EvalConfig field -> command-line option.
PREDICIR_OPTIONS: dict[str, str] = {
    "predicir_checkpoint": "--predicir-checkpoint",
    "predicir_box": "--predicir-box",
}
#: Where the reference sits in the target canvas (``cirlib.models.predicir.INFERENCE_BOXES``, named
#: here without importing torch).
PREDICIR_BOXES = ("center", "full")
#: The zoo kind a paper-profile ``--predicir-checkpoint`` file must carry in its safetensors metadata.
PREDICIR_KIND = "predicir"

#: Options of the methods ``planned-text`` and ``ipcir``, which share the captioner and planner:
#: EvalConfig field -> command-line option. Their EvalConfig defaults are None and only the options
#: given reach build_method (:data:`PLANNING_KEYWORDS` renames a field), so the factories' defaults
#: (``cirlib.methods._planned_text`` / ``_ipcir``) are the only ones.
PLANNED_TEXT_OPTIONS: dict[str, str] = {
    "planner": "--planner",
    "captioner": "--captioner",
    "llm": "--llm",
}
IPCIR_OPTIONS: dict[str, str] = {
    **PLANNED_TEXT_OPTIONS,
    "layout_generator": "--layout-generator",
    "ipcir_base": "--ipcir-base",
    "lam": "--lam",
    "n_proxies": "--n-proxies",
    "proxy_feature": "--proxy-feature",
    "combine": "--combine",
}
#: Of those, the paper profile's model folders (the tiny profile's are trained on the world; its
#: ``--planner`` choice is the tiny profile's only, the paper profile plans with ``--llm``).
PLANNING_PAPER_OPTIONS = ("captioner", "llm", "layout_generator")
#: EvalConfig field -> build_method keyword, where they differ.
PLANNING_KEYWORDS: dict[str, str] = {"ipcir_base": "base"}
#: Torch-free copies of ``cirlib.methods.PLANNERS`` / ``IPCIR_BASES`` and
#: ``cirlib.methods.ipcir.PROXY_FEATURES`` / ``COMBINES`` (a test keeps them equal).
PLANNERS = ("tiny", "oracle")
IPCIR_BASES = ("planned-text", "pic2word", "searle", "lincir", "cig", "predicir", "text", "sum")
PROXY_FEATURES = ("raw", "robust")
COMBINES = ("weighted", "balanced")
#: IP-CIR bases cirlib eval cannot build per profile: LinCIR has no tiny phi; a paper-profile cig or
#: predicir needs its own generator or checkpoint, which are not passed to an IP-CIR base.
IPCIR_BASES_NOT_IN = {"tiny": ("lincir",), "paper": ("cig", "predicir")}

#: Method -> the options only it takes (giving one to another method is an error naming it); an
#: option may belong to more than one method (planned-text's belong to ipcir too).
METHOD_OPTIONS: dict[str, dict[str, str]] = {
    "cig": CIG_OPTIONS,
    "predicir": PREDICIR_OPTIONS,
    "planned-text": PLANNED_TEXT_OPTIONS,
    "ipcir": IPCIR_OPTIONS,
}
_ALL_OPTIONS: dict[str, str] = {k: v for options in METHOD_OPTIONS.values() for k, v in options.items()}


@dataclass
class EvalConfig:
    """Everything a run depends on (recorded in ``run.json``)."""

    benchmark: str
    method: str
    split: str = "val"
    profile: str = "tiny"
    data: Path | None = None
    images: Path | None = None
    weights: Path | None = None
    backbone: str | None = None
    phi: str | None = None  # paper: a released phi by name (default: the method's own for the backbone)
    preprocess: str | None = None  # paper: None means the method's official choice
    caption_join: str | None = None  # None: the method's own (both orders; Pic2Word: reversed)
    circo_text: str = "relative"
    on_missing: str = "error"
    index: str = "exact"
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = 4
    n_queries: int | None = None
    soft: bool = False
    out: Path | None = None
    # method cig only (CIG_OPTIONS); the first four (CIG_PAPER_OPTIONS) are the paper profile's
    generator: Path | None = None  # paper: the SD / SDXL pipeline folder (required)
    generator_kind: str = "sdxl"  # "sdxl" (CIG's) or "sd15"
    unet: Path | None = None  # paper: CIG's fine-tuned UNet ({model_path} or {model_path}/unet)
    vae: Path | None = None  # paper: e.g. madebyollin/sdxl-vae-fp16-fix, saved locally
    fusion_weight: float | None = None  # weight of the reference query; None: the official one per split
    n_generated: int = 1  # pseudo-target images per query
    generation_steps: int | None = None  # None: the generator's own (paper: 50, as CIG)
    guidance: float | None = None  # None: the generator's own (paper: the pipeline's; CIG never sets it)
    # method predicir only (PREDICIR_OPTIONS)
    predicir_checkpoint: Path | str | None = None  # tiny: a checkpoint name; paper: a FILE (required)
    predicir_box: str = "center"  # where the reference sits in the target canvas (PREDICIR_BOXES)
    # methods planned-text and ipcir (IPCIR_OPTIONS; planned-text takes the first three); None: the
    # method's own default (run.json records the values that ran)
    planner: str | None = None  # tiny: "tiny" (the trained planner) or "oracle" (rule-based ablation)
    captioner: Path | None = None  # paper: a BLIP-2 folder (required)
    llm: Path | None = None  # paper: an instruction causal LM folder, the planner (required)
    layout_generator: Path | None = None  # ipcir, paper: a text-box GLIGEN pipeline folder (required)
    ipcir_base: str | None = None  # ipcir: the base method (IPCIR_BASES; default planned-text)
    lam: float | None = None  # ipcir: weight of the base score (default 0.3)
    n_proxies: int | None = None  # ipcir: proxy images per query (default 5)
    proxy_feature: str | None = None  # ipcir: "raw" (PI) or "robust" (PI+RP, default)
    combine: str | None = None  # ipcir: "weighted" or "balanced" (BM, default)

    def resolved_backbone(self) -> str | None:
        if self.profile == "tiny":
            return None
        if self.phi and not self.backbone:
            from cirlib.models.released import released_phi

            return released_phi(self.phi).backbone
        from cirlib.models.weights import DEFAULT_BACKBONE

        return self.backbone or DEFAULT_BACKBONE

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        if self.profile == "tiny":
            from cirlib.config import default_device

            return default_device()
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def output_dir(self) -> Path:
        if self.out is not None:
            return self.out
        tag = "-".join(
            x for x in (self.profile, self.benchmark, self.split, self.method, self.resolved_backbone()) if x
        )
        return Path("runs") / tag


class RunError(Exception):
    """A run cannot start: a path or an option is wrong. The message says which and why."""


_OPTION_DEFAULTS = {f.name: f.default for f in fields(EvalConfig) if f.name in _ALL_OPTIONS}


def _options(names: Any) -> str:
    return ", ".join(_ALL_OPTIONS[n] for n in _ALL_OPTIONS if n in set(names))


def method_options_given(namespace: Any) -> list[str]:
    """The method-option fields (:data:`METHOD_OPTIONS`, each once) a parsed command line sets to a
    value; a command that lacks some of them (``cirlib search``) has not given them."""
    return [k for k in _ALL_OPTIONS if getattr(namespace, k, None) is not None]


def _owners(name: str) -> tuple[str, ...]:
    return tuple(method for method, options in METHOD_OPTIONS.items() if name in options)


def check_method_options(cfg: EvalConfig, given: Any = None) -> None:
    """Check the options only some methods take (:data:`METHOD_OPTIONS`: cig's, predicir's,
    planned-text's and ipcir's): giving one to another method is an error naming it; for the method
    itself their values, and which profile each belongs to. ``given``: the option fields the user
    gave (the CLI knows); default: those differing from their defaults. Raises :class:`RunError`;
    imports nothing."""
    given = (
        set(given) if given is not None else {k for k, v in _OPTION_DEFAULTS.items() if getattr(cfg, k) != v}
    )
    foreign = given - set(METHOD_OPTIONS.get(cfg.method, ()))
    if foreign:  # the first one's methods, with every other foreign option of the same methods
        owners = _owners(next(n for n in _ALL_OPTIONS if n in foreign))
        theirs = {n for n in foreign if _owners(n) == owners}
        verb = "is an option" if len(theirs) == 1 else "are options"
        raise RunError(
            f"{_options(theirs)} {verb} of --method {' or '.join(owners)} only, not of --method {cfg.method}"
        )
    if cfg.method == "cig":
        _check_cig_options(cfg, given)
    elif cfg.method == "predicir":
        _check_predicir_options(cfg)
    elif cfg.method in ("planned-text", "ipcir"):
        _check_planning_options(cfg)


def _check_cig_options(cfg: EvalConfig, given: set[str]) -> None:
    if cfg.generator_kind not in GENERATOR_KINDS:
        raise RunError(
            f"--generator-kind must be one of {', '.join(GENERATOR_KINDS)}, not {cfg.generator_kind!r}"
        )
    w = cfg.fusion_weight
    if w is not None and not (isinstance(w, (int, float)) and 0.0 <= w <= 1.0):
        raise RunError(f"--fusion-weight must be a number in [0, 1] (the reference query's weight), not {w}")
    for name in ("n_generated", "generation_steps"):
        value = getattr(cfg, name)
        if value is None and name == "generation_steps":
            continue
        if not isinstance(value, int) or value < 1:
            raise RunError(f"{CIG_OPTIONS[name]} must be a whole number >= 1, not {value}")
    g = cfg.guidance
    if g is not None and not (isinstance(g, (int, float)) and math.isfinite(g) and g >= 0):
        raise RunError(f"--guidance must be a finite number >= 0 (classifier-free guidance scale), not {g}")
    if cfg.profile != "paper":
        paper_only = given & set(CIG_PAPER_OPTIONS)
        if paper_only:
            verb = "is" if len(paper_only) == 1 else "are"
            raise RunError(
                f"{_options(paper_only)} {verb} for the paper profile's diffusion pipeline; the tiny "
                "profile's cig samples the generator trained on the world"
            )
    elif cfg.generator is None:
        raise RunError(
            "--method cig --profile paper needs --generator DIR: a local Stable Diffusion pipeline folder, "
            f"{SD_UPSTREAM['sdxl']} (or, with --generator-kind sd15, {SD_UPSTREAM['sd15']}), "
            f"{LOCAL_ONLY}; CIG's fine-tuned UNet goes in --unet DIR and its VAE (madebyollin/sdxl-vae-fp16-fix) "
            "in --vae DIR"
        )


def _check_predicir_options(cfg: EvalConfig) -> None:
    if cfg.predicir_box not in PREDICIR_BOXES:
        raise RunError(f"--predicir-box must be one of {', '.join(PREDICIR_BOXES)}, not {cfg.predicir_box!r}")
    if cfg.profile == "paper" and cfg.predicir_checkpoint is None:
        from cirlib.models.weights import DEFAULT_BACKBONE

        how = PREDICIR_HOW.format(backbone=cfg.backbone or DEFAULT_BACKBONE)
        raise RunError(f"--method predicir --profile paper needs --predicir-checkpoint FILE: {how}")


def _check_planning_options(cfg: EvalConfig) -> None:
    """planned-text's and ipcir's options: values, profiles, and the paper profile's folders given."""
    options = METHOD_OPTIONS[cfg.method]
    if cfg.planner is not None and cfg.planner not in PLANNERS:
        raise RunError(f"--planner must be one of {', '.join(PLANNERS)}, not {cfg.planner!r}")
    if cfg.method == "ipcir":
        _check_ipcir_values(cfg)
    if cfg.profile != "paper":
        paper_only = [n for n in PLANNING_PAPER_OPTIONS if n in options and getattr(cfg, n) is not None]
        if paper_only:
            verb = "is" if len(paper_only) == 1 else "are"
            raise RunError(
                f"{_options(paper_only)} {verb} for the paper profile's models; the tiny profile's "
                "captioner, planner and layout generator are trained on the world"
            )
        return
    if cfg.planner is not None:
        raise RunError(
            "--planner is for the tiny profile (tiny: the planner trained on the world; oracle: the "
            "rule-based planner ablation); the paper profile plans with the language model of --llm"
        )
    what = {"captioner": CAPTIONER_UPSTREAM, "llm": LLM_UPSTREAM, "layout_generator": GLIGEN_UPSTREAM}
    missing = [n for n in PLANNING_PAPER_OPTIONS if n in options and getattr(cfg, n) is None]
    if missing:
        needed = "; ".join(f"{options[n]} DIR: {what[n]}" for n in missing)
        raise RunError(f"--method {cfg.method} --profile paper needs {needed}; each {LOCAL_ONLY}")


def _check_ipcir_values(cfg: EvalConfig) -> None:
    base = cfg.ipcir_base
    if base is not None:
        if base not in IPCIR_BASES:
            raise RunError(f"--ipcir-base must be one of {', '.join(IPCIR_BASES)}, not {base!r}")
        if base in IPCIR_BASES_NOT_IN.get(cfg.profile, ()):
            usable = [b for b in IPCIR_BASES if b not in IPCIR_BASES_NOT_IN.get(cfg.profile, ())]
            flag = "--generator" if base == "cig" else "--predicir-checkpoint"
            why = (
                "LinCIR has no tiny-profile phi"
                if cfg.profile == "tiny"
                else f"{base}'s {flag} is not passed to an IP-CIR base"
            )
            raise RunError(
                f"--ipcir-base {base} is not available in the {cfg.profile} profile ({why}); "
                f"use one of {', '.join(usable)}"
            )
    lam = cfg.lam
    if lam is not None and not (isinstance(lam, (int, float)) and 0.0 <= lam <= 1.0):
        raise RunError(f"--lam must be a number in [0, 1] (the base score's weight), not {lam}")
    n = cfg.n_proxies
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise RunError(f"--n-proxies must be a whole number >= 1, not {n}")
    for name, allowed in (("proxy_feature", PROXY_FEATURES), ("combine", COMBINES)):
        value = getattr(cfg, name)
        if value is not None and value not in allowed:
            raise RunError(f"{IPCIR_OPTIONS[name]} must be one of {', '.join(allowed)}, not {value!r}")


def check_planning_folders(cfg: EvalConfig) -> dict[str, str]:
    """The paper-profile model folders of planned-text (captioner, language model) and ipcir (also
    the GLIGEN pipeline), checked without importing torch by
    :func:`cirlib.generation.files.resolve_ipcir_files`: one :class:`RunError` carrying its
    ``MissingIPCIRFilesError`` message, which lists every missing folder. Returns role -> path."""
    from cirlib.generation.files import MissingIPCIRFilesError, resolve_ipcir_files

    assert cfg.captioner is not None and cfg.llm is not None  # check_method_options requires them
    generator = cfg.layout_generator if cfg.method == "ipcir" else None
    try:
        files = resolve_ipcir_files(cfg.captioner, cfg.llm, generator)
    except MissingIPCIRFilesError as err:
        raise RunError(str(err)) from None
    found = {"captioner": str(files.captioner), "llm": str(files.llm)}
    if files.generator is not None:
        found["layout_generator"] = str(files.generator)
    return found


def safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The ``__metadata__`` of a safetensors file's header (8-byte little-endian length, then JSON),
    read without torch; ``{}`` if it has none, None if the file is not a safetensors file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n > min(path.stat().st_size - 8, 100 << 20):
                return None
            header = json.loads(handle.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


def check_predicir_checkpoint(cfg: EvalConfig) -> Path:
    """A paper-profile ``--predicir-checkpoint``: an existing safetensors file whose metadata says
    ``cirlib_kind`` "predicir" (and, when its registry entry beside it records the backbone it was
    trained for, that backbone). Torch-free; raises :class:`RunError` naming the file."""
    path = Path(cfg.predicir_checkpoint).expanduser()  # type: ignore[arg-type]  # checked by the caller
    backbone = cfg.resolved_backbone()
    how = PREDICIR_HOW.format(backbone=backbone)
    if not path.exists():
        raise RunError(f"--predicir-checkpoint {path} does not exist; {how}")
    if not path.is_file():
        raise RunError(f"--predicir-checkpoint {path} is not a file; {how}")
    meta = safetensors_metadata(path)
    if meta is None:
        raise RunError(
            f"--predicir-checkpoint {path} is not a safetensors file; give a checkpoint written by "
            "cirlib train-predicir"
        )
    kind = meta.get("cirlib_kind")
    if kind != PREDICIR_KIND:
        what = f"a cirlib {kind!r} checkpoint" if kind else "a safetensors file without cirlib metadata"
        raise RunError(
            f"--predicir-checkpoint {path} is {what}, not a PrediCIR network; give a checkpoint written by "
            "cirlib train-predicir"
        )
    trained_for = _registered_backbone(path)
    if trained_for is not None and trained_for != backbone:
        raise RunError(
            f"--predicir-checkpoint {path} was trained for backbone {trained_for} (its entry in "
            f"{path.parent / 'registry.json'}), not {backbone}: pass --backbone {trained_for}, or train one "
            f"for {backbone} with cirlib train-predicir"
        )
    return path


def _registered_backbone(path: Path) -> str | None:
    """The backbone recorded for ``path`` in the zoo registry beside it (cirlib train-predicir writes
    one), or None."""
    try:
        entry = json.loads((path.parent / "registry.json").read_text()).get(path.stem)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict) or entry.get("file") != path.name:
        return None
    config = entry.get("config")
    backbone = config.get("backbone") if isinstance(config, dict) else None
    return backbone if isinstance(backbone, str) else None


def _folder_problem(path: Path, option: str, index_file: str, what: str) -> str | None:
    problem = folder_problem(path, required=(index_file,))
    return None if problem is None else f"{option} {path} {problem}; it should hold {what}, {LOCAL_ONLY}"


def check_generator_paths(cfg: EvalConfig) -> dict[str, str]:
    """The inputs of cig's paper-profile generator, checked without importing torch: the pipeline,
    UNet and VAE folders, and each generator phi's weights file and its CLIP backbone's weights file.
    Raises one :class:`RunError` listing every missing input; returns role -> path."""
    from cirlib.models.released import released_phi, resolve_phi_weights
    from cirlib.models.weights import MissingWeightsError, resolve_weights

    assert cfg.generator is not None  # check_method_options requires it
    problems: list[str] = []
    found: dict[str, str] = {"generator": str(cfg.generator)}
    problem = _folder_problem(
        cfg.generator, "--generator", "model_index.json", SD_UPSTREAM[cfg.generator_kind]
    )
    problems += [problem] if problem else []
    if cfg.unet is not None:
        unet = unet_folder(cfg.unet)
        problem = _folder_problem(unet, "--unet", "config.json", UNET_UPSTREAM)
        problems += [problem] if problem else []
        found["unet"] = str(unet)
    if cfg.vae is not None:
        problem = _folder_problem(cfg.vae, "--vae", "config.json", VAE_UPSTREAM)
        problems += [problem] if problem else []
        found["vae"] = str(cfg.vae)
    for name in CIG_PHIS[cfg.generator_kind]:
        spec = released_phi(name)
        for role, resolve, what in (
            (f"phi:{name}", resolve_phi_weights, spec),
            (f"clip:{spec.backbone}", resolve_weights, spec.backbone),
        ):
            try:
                found[role] = str(resolve(what, cfg.weights))
            except MissingWeightsError as err:
                message = "generator: " + str(err).strip('"')
                if message not in problems:  # e.g. "no weights folder was given", once
                    problems.append(message)
    if problems:
        listed = " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise RunError(f"cig's generator: {len(problems)} missing input(s): {listed}")
    return found


def check_model_files(cfg: EvalConfig) -> dict[str, Any]:
    """The model inputs of a paper-profile run, checked without importing torch: cig's generator
    folders, predicir's checkpoint, the phi and CLIP weight files. Returns what was found; raises
    :class:`RunError`. (``cirlib search`` needs exactly these, without a dataset.)"""
    return {**_check_generative_files(cfg), **_check_weight_files(cfg)}


def _check_generative_files(cfg: EvalConfig) -> dict[str, Any]:
    if cfg.method == "cig":
        return {"generator_files": check_generator_paths(cfg)}
    if cfg.method in ("planned-text", "ipcir"):
        return {"generator_files": check_planning_folders(cfg)}
    if cfg.method == "predicir":
        return {"predicir_weights": check_predicir_checkpoint(cfg)}
    return {}


def _check_weight_files(cfg: EvalConfig) -> dict[str, Any]:
    from cirlib.models.weights import MissingWeightsError, resolve_weights

    phi_methods = (*RELEASED_PHI_METHODS, *RETRIEVAL_PHI_OF)
    if cfg.phi and cfg.method not in phi_methods:
        raise RunError(f"--phi is for the methods {', '.join(phi_methods)}, not {cfg.method}")
    # ipcir over a released-phi base loads that base's own release for the backbone
    method = cfg.ipcir_base if cfg.method == "ipcir" and cfg.ipcir_base in phi_methods else cfg.method
    try:
        if method in phi_methods:
            from cirlib.models.released import resolve_phi_weights, select_released

            owner = RETRIEVAL_PHI_OF.get(method, method)
            spec = select_released(owner, cfg.resolved_backbone(), cfg.phi)
            return {
                "phi_weights": resolve_phi_weights(spec, cfg.weights),
                "clip_weights": resolve_weights(spec.backbone, cfg.weights),
            }
        return {"clip_weights": resolve_weights(cfg.resolved_backbone(), cfg.weights)}
    except (MissingWeightsError, KeyError, ValueError) as err:
        raise RunError(str(err).strip('"')) from None


def check_paths(cfg: EvalConfig) -> dict[str, Any]:
    """Check the method options and every input path of a paper-profile run without importing
    torch; returns what was found (layout, weight files, generator files). Raises one
    :class:`RunError` naming every missing input (generator or checkpoint, data, weights) with the
    path or option as given, so that a user fixes them in one go."""
    check_method_options(cfg)
    if cfg.profile != "paper":
        for flag in ("data", "images", "weights"):
            if getattr(cfg, flag) is not None:
                raise RunError(
                    f"--{flag} is for the paper profile; the tiny profile uses the world and committed checkpoints"
                )
        return {}
    from cirlib.data.real import DataNotFoundError, resolve_layout

    problems: list[str] = []

    def collect(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return check()
        except (RunError, DataNotFoundError) as err:
            problems.append(str(err))
            return {}

    def data() -> dict[str, Any]:
        if cfg.data is None:
            raise RunError(
                f"the paper profile needs --data DIR: the {cfg.benchmark} dataset folder with its images "
                "(see README, 'Reproducing on the real benchmarks')"
            )
        return {"layout": resolve_layout(cfg.benchmark, _upstream_split(cfg), cfg.data, images=cfg.images)}

    # the generator (or PrediCIR's checkpoint) first: the most likely to be missing, and needs no data
    found = {**collect(lambda: _check_generative_files(cfg)), **collect(data)}
    found.update(collect(lambda: _check_weight_files(cfg)))
    if len(problems) == 1:
        raise RunError(problems[0])
    if problems:
        raise RunError(
            f"{len(problems)} problems: " + " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        )
    return found


def _upstream_split(cfg: EvalConfig) -> str:
    from cirlib.data.real import REAL_SPLITS

    return REAL_SPLITS[cfg.benchmark][cfg.split]


def load_benchmark(cfg: EvalConfig):
    """The benchmark of a run (tiny: the frozen world's; paper: the real one) and, for the paper
    profile, its missing-image report."""
    if cfg.profile == "tiny":
        from cirlib.world import load_world_benchmark

        benchmark, report = load_world_benchmark(cfg.benchmark, cfg.split), None
    else:
        from cirlib.data.real import load_real_benchmark

        out = cfg.output_dir()
        benchmark, report = load_real_benchmark(
            cfg.benchmark,
            cfg.split,
            cfg.data,
            images=cfg.images,
            on_missing=cfg.on_missing,
            circo_text=cfg.circo_text,
            report_path=out / "missing_images.json",
        )
        if not report.ok:
            log.warning("missing images: %s", json.dumps(report.summary()))
    if cfg.n_queries:
        benchmark = benchmark.subsample(cfg.n_queries)
    return benchmark, report


def build(cfg: EvalConfig):
    """The method of a run, on the run's device."""
    from cirlib.methods import build_method

    options: dict[str, Any] = {}
    if cfg.profile == "paper":
        options = {
            "backbone": cfg.resolved_backbone(),
            "weights": cfg.weights,
            "preprocess": cfg.preprocess,
            "device": cfg.resolved_device(),
            "precision": cfg.precision,
            "form": cfg.benchmark,
        }
        if cfg.phi:
            options["phi"] = cfg.phi
    if cfg.method == "cig":
        # the split too: the official fusion weight is per benchmark split
        options.update({k: getattr(cfg, k) for k in CIG_OPTIONS}, form=cfg.benchmark, split=cfg.split)
    if cfg.method in ("planned-text", "ipcir"):  # only the options given: the factory has the defaults
        options.update(
            {
                PLANNING_KEYWORDS.get(k, k): getattr(cfg, k)
                for k in METHOD_OPTIONS[cfg.method]
                if getattr(cfg, k) is not None
            }
        )
    if cfg.method == "predicir":
        return _build_predicir(cfg, options)
    method = build_method(cfg.method, cfg.profile, **options)
    return _configure(cfg, method)


def _configure(cfg: EvalConfig, method):
    if cfg.caption_join is not None:
        method.caption_join = cfg.caption_join
    method.batch_size, method.num_workers = cfg.batch_size, cfg.workers
    return method


def _build_predicir(cfg: EvalConfig, options: dict[str, Any]):
    """Method predicir: the tiny checkpoint name is checked against the ones the tiny profile can
    make; in the paper profile a network trained for another CLIP is a :class:`RunError` naming the file."""
    from cirlib.methods import build_method

    check_method_options(cfg)  # a paper profile run needs a checkpoint file
    checkpoint = cfg.predicir_checkpoint
    if cfg.profile == "paper":
        checkpoint = Path(checkpoint).expanduser()  # type: ignore[arg-type]  # checked just above
    elif checkpoint is not None:
        from cirlib.models.tiny import predicir_recipes

        if str(checkpoint) not in predicir_recipes():
            raise RunError(
                f"--predicir-checkpoint {checkpoint!r} is not a tiny PrediCIR checkpoint; known: "
                f"{', '.join(predicir_recipes())} (a checkpoint FILE is for --profile paper)"
            )
    from cirlib.methods.predicir import ForeignNetworkError

    try:
        method = build_method(cfg.method, cfg.profile, checkpoint=checkpoint, box=cfg.predicir_box, **options)
    except ForeignNetworkError as err:
        how = PREDICIR_HOW.format(backbone=cfg.resolved_backbone())
        raise RunError(f"--predicir-checkpoint {checkpoint}: {err}; {how}") from None
    return _configure(cfg, method)


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Run one evaluation and write its outputs; returns the ``run.json`` content."""
    from cirlib.evaluation import evaluate

    found = check_paths(cfg)
    t_start = time.perf_counter()
    benchmark, report = load_benchmark(cfg)
    t_loaded = time.perf_counter()
    method = build(cfg)
    t_built = time.perf_counter()
    misses_before = method.cache.misses
    n_images = 0
    for gallery in benchmark.galleries.values():
        method.gallery_features(gallery)  # encode (or load) every gallery first: timed on its own
        n_images += len(gallery)
    t_encoded = time.perf_counter()
    encoded_now = method.cache.misses > misses_before
    result = evaluate(method, benchmark, backend=cfg.index, soft=cfg.soft)
    t_scored = time.perf_counter()
    out = cfg.output_dir()
    files = write_predictions(cfg, benchmark, result, out, complete=not cfg.n_queries)
    record: dict[str, Any] = {
        "metrics": result.summary,
        "n_queries": result.n_queries,
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            "backbone": cfg.resolved_backbone(),
            "preprocess": method.clip.preprocess_cfg.get("resize_mode", method.clip.preprocess),
            "caption_join": method.caption_join,
            "caption_strip": method.caption_strip,
            "device": cfg.resolved_device(),
            **_planning_config(cfg, method),
        },
        "benchmark": {"name": benchmark.name, "form": benchmark.form, "split": benchmark.split},
        "layout": benchmark.meta.get("layout"),
        "missing_images": report.summary() if report is not None else None,
        "weights": {k: str(v) for k, v in found.items() if k.endswith("weights")},
        "generator_files": found.get("generator_files"),
        "model": {
            "clip": method.clip.name,
            "clip_hash": method.clip.hash,
            **_method_model(cfg, found, method),
        },
        "timings_s": {
            "load_benchmark": t_loaded - t_start,
            "build_method": t_built - t_loaded,
            "encode_gallery": t_encoded - t_built,
            "score_queries": t_scored - t_encoded,
        },
        "throughput": {
            "gallery_images": n_images,
            "gallery_from_cache": not encoded_now,
            "images_per_s": n_images / max(t_encoded - t_built, 1e-9) if encoded_now else None,
            "queries_per_s": result.n_queries / max(t_scored - t_encoded, 1e-9),
        },
        "files": [str(f) for f in files],
    }
    if report is not None and report.dropped_queries:
        log.warning(
            "%d queries were dropped because their images are missing; the metrics cover %d queries",
            len(report.dropped_queries),
            result.n_queries,
        )
    from cirlib.config import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "run.json", record)
    return record


def _planning_config(cfg: EvalConfig, method) -> dict[str, Any]:
    """planned-text's and ipcir's options as they ran (the factory's defaults in place of the
    options not given), so that run.json's "config" reproduces the run even if a default changes."""
    if cfg.method not in ("planned-text", "ipcir"):
        return {}
    out: dict[str, Any] = {}
    if cfg.profile == "tiny":
        import inspect

        from cirlib.methods import METHODS

        factory_default = inspect.signature(METHODS[cfg.method]).parameters["planner"].default
        out["planner"] = cfg.planner or factory_default
    if cfg.method == "ipcir":
        out.update(
            ipcir_base=method.base.name,
            lam=method.lam,
            n_proxies=method.n_proxies,
            proxy_feature=method.proxy_feature,
            combine=method.combine,
        )
    return out


def _method_model(cfg: EvalConfig, found: dict[str, Any], method=None) -> dict[str, Any]:
    """What a run.json's "model" records beyond the CLIP: PrediCIR's checkpoint (tiny: its name;
    paper: the file and its sha256, since a user-trained file may be retrained in place) and box;
    planned-text's and ipcir's captioner and planner signatures (and ipcir's layout generator's)."""
    if cfg.method in ("planned-text", "ipcir") and method is not None:
        model = {"planning": method.chain.signature}
        if cfg.method == "ipcir":
            model["layout_generator"] = method.generator.signature
        return {cfg.method: model}
    if cfg.method != "predicir":
        return {}
    if cfg.profile == "paper":
        path = found["predicir_weights"]
        checkpoint = {"file": str(path), "sha256": file_sha256(path)}
    else:
        from cirlib.models.tiny import PREDICIR_NAME

        checkpoint = {"name": str(cfg.predicir_checkpoint or PREDICIR_NAME)}
    return {"predicir": {**checkpoint, "box": cfg.predicir_box}}


def write_predictions(cfg: EvalConfig, benchmark, result, out: Path, *, complete: bool) -> list[Path]:
    """Write the rankings: server files (CIRR, CIRCO; validated against the split when the run
    covers every query) or cirlib's FashionIQ prediction format, plus ``rankings.json`` always."""
    from cirlib.config import atomic_write_json
    from cirlib.data.annotations import load_circo, load_cirr, load_fashioniq_all
    from cirlib.submission import write_circo_submission, write_cirr_submission, write_fashioniq_predictions

    out.mkdir(parents=True, exist_ok=True)
    files = [out / "rankings.json"]
    atomic_write_json(files[0], {"qids": result.qids, "rankings": result.rankings, "subset": result.subset})
    if cfg.profile != "paper" or not complete:
        return files
    annotations = Path(benchmark.meta["layout"]["annotations"])
    split = _upstream_split(cfg)
    if benchmark.form == "cirr":
        cirr = load_cirr(annotations, split)
        name = "test1_pred_ranks_recall.json" if split == "test1" else f"{split}_pred_ranks_recall.json"
        pairids = [int(q) for q in result.qids]
        paths = write_cirr_submission(
            out / name,
            pairids,
            result.rankings["all"],
            result.subset,
            split=cirr if len(pairids) == len(cirr.queries) else None,
        )
        files += list(paths)
    elif benchmark.form == "circo":
        circo = load_circo(annotations, split)
        ranking = {
            int(q): [int(x) for x in r] for q, r in zip(result.qids, result.rankings["all"], strict=True)
        }
        files.append(
            write_circo_submission(
                out / f"circo_{split}_submission.json",
                ranking,
                split=circo if len(ranking) == len(circo.queries) else None,
            )
        )
    else:
        splits = load_fashioniq_all(annotations, split)
        if all(len(result.rankings.get(c, [])) == len(s.queries) for c, s in splits.items()):
            files.append(
                write_fashioniq_predictions(
                    out / f"fashioniq_{split}_predictions.json", result.rankings, splits=splits
                )
            )
        else:
            log.info("FashionIQ predictions file skipped: queries were dropped or subsampled")
    return files
