"""The ``cirlib`` command line: a registry of sub-commands sharing one argparse entry point.

Why a registry: each sub-command (``score`` here; ``eval``, ``train``, ``reproduce`` later) is
declared next to its implementation with :func:`command`, and :func:`main` builds the parser from
:data:`COMMANDS`, so adding one never touches the dispatch code.

Conventions every sub-command follows: machine-readable results go to stdout (``score`` prints
exactly one JSON object), logs go to stderr, and bad input exits with status 2 and a single
``cirlib <command>: error: <file>: <problem>`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("cirlib.cli")

#: Exit status for invalid or missing input (argparse uses the same for usage errors).
EXIT_USAGE = 2

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One sub-command: ``configure`` adds its arguments, ``run`` executes it and returns the
    exit status."""

    name: str
    help: str
    configure: Configure
    run: Run


#: Sub-command name -> Command, in registration order (the order of ``cirlib --help``).
COMMANDS: dict[str, Command] = {}


class CLIError(Exception):
    """Bad input detected by a sub-command; printed as one line, exit status 2."""


def command(name: str, help: str, configure: Configure) -> Callable[[Run], Run]:
    """Decorator registering ``run`` as sub-command ``name``::

    def _configure_eval(p: argparse.ArgumentParser) -> None: ...

    @command("eval", help="...", configure=_configure_eval)
    def _run_eval(args: argparse.Namespace) -> int: ...
    """

    def register(run: Run) -> Run:
        if name in COMMANDS:
            raise ValueError(f"sub-command {name!r} is registered twice")
        COMMANDS[name] = Command(name=name, help=help, configure=configure, run=run)
        return run

    return register


# --------------------------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------------------------


def _configure_score(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--benchmark", required=True, choices=("cirr", "circo", "fashioniq"), help="benchmark to score"
    )
    parser.add_argument(
        "--annotations",
        required=True,
        type=Path,
        metavar="DIR",
        help="dataset folder in upstream layout, e.g. shared/cir-annotations/cirr",
    )
    parser.add_argument(
        "predictions",
        type=Path,
        metavar="PRED.json",
        help="CIRR: server file with pairid keys; CIRCO: {query id: [top-50 ids]}; "
        "FashionIQ: {category: [[top-50 ids] per query in caption-file order]}",
    )
    parser.add_argument(
        "--subset-predictions",
        type=Path,
        metavar="SUBSET.json",
        help="CIRR only: the recall_subset server file (adds recall_subset@1,2,3)",
    )
    parser.add_argument(
        "--soft",
        action="store_true",
        help="CIRR only: also report CIRPLANT soft-label recalls under soft/...",
    )


@command("score", help="score a prediction file on a benchmark's val split", configure=_configure_score)
def _run_score(args: argparse.Namespace) -> int:
    from cirlib.data.annotations import AnnotationError
    from cirlib.submission import SubmissionError, score_predictions

    if args.benchmark != "cirr" and args.subset_predictions is not None:
        raise CLIError(f"--subset-predictions is only for --benchmark cirr, not {args.benchmark}")
    if args.benchmark != "cirr" and args.soft:
        raise CLIError(f"--soft is only for --benchmark cirr, not {args.benchmark}")
    if not args.annotations.is_dir():
        raise CLIError(f"{args.annotations}: annotations folder not found")
    try:
        result = score_predictions(
            args.benchmark,
            args.annotations,
            args.predictions,
            subset_path=args.subset_predictions,
            soft=args.soft,
        )
    except (SubmissionError, AnnotationError) as err:
        raise CLIError(str(err)) from None
    log.info("scored %s on %s val (%d values)", args.predictions, args.benchmark, len(result))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------


def _configure_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=("tiny", "paper"), default="tiny")
    parser.add_argument(
        "--benchmark", choices=("cirr", "circo", "fashioniq"), help="tiny: the world's benchmark of that form"
    )
    parser.add_argument("--split", choices=("val", "test"), default="val", help="CIRR's test is test1")
    parser.add_argument("--method", help="a name from --list-methods")
    parser.add_argument("--list-methods", action="store_true", help="print the method names and exit")
    parser.add_argument("--n-queries", type=int, help="evaluate a seeded sample of N queries only")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default runs/<profile>-...)")
    parser.add_argument(
        "--index",
        choices=("exact", "faiss"),
        default="exact",
        help="top-k backend (same results; see README)",
    )
    paper = parser.add_argument_group("paper profile")
    paper.add_argument(
        "--data", type=Path, metavar="DIR", help="dataset folder in upstream layout, with images"
    )
    paper.add_argument("--images", type=Path, metavar="DIR", help="image root, if not inside --data")
    paper.add_argument(
        "--weights", type=Path, metavar="DIR", help="folder of weight files (or $CIRLIB_WEIGHTS)"
    )
    paper.add_argument("--backbone", help="ViT-B-32, ViT-L-14 (default), ViT-g-14 or ViT-bigG-14")
    paper.add_argument(
        "--phi",
        metavar="NAME",
        help="pic2word/searle/lincir: a released phi by name, e.g. cig-lincir-vit-l14 "
        "(default: the method's own release for the backbone; see cirlib.models.released); "
        "cig: its retrieval phi, a SEARLE release",
    )
    paper.add_argument(
        "--preprocess",
        choices=("clip", "targetpad"),
        help="image preprocessing (default: the method's official one: targetpad for searle, clip otherwise)",
    )
    paper.add_argument(
        "--caption-join",
        choices=("both_orders", "forward", "reversed", "first", "second"),
        help="FashionIQ: how the two captions become text (default: the method's official choice; "
        "both orders, embeddings averaged, except Pic2Word's 'c2 and c1')",
    )
    paper.add_argument(
        "--circo-text", choices=("relative", "concept"), default="relative", help="CIRCO query text"
    )
    paper.add_argument(
        "--on-missing",
        choices=("error", "drop"),
        default="error",
        help="missing images: stop with the list (default) or drop the affected queries and say how many",
    )
    paper.add_argument("--soft", action="store_true", help="CIRR val: also CIRPLANT soft-label recalls")
    paper.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    paper.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="CUDA autocast")
    paper.add_argument("--batch-size", type=int, default=64, help="images per encoder batch")
    paper.add_argument("--workers", type=int, default=4, help="image-decoding worker processes")
    # Defaults are None here so that a given option is told from an absent one (giving one to another
    # method is an error); EvalConfig holds the real defaults.
    cig = parser.add_argument_group("method cig (generative: pseudo-target images)")
    cig.add_argument(
        "--generator",
        type=Path,
        metavar="DIR",
        help="paper profile, required: local SDXL (or SD 1.x) pipeline folder, e.g. "
        "stabilityai/stable-diffusion-xl-base-1.0 saved with huggingface-cli download --local-dir",
    )
    cig.add_argument(
        "--generator-kind",
        choices=("sdxl", "sd15"),
        help="pipeline kind of --generator (default sdxl, as CIG)",
    )
    cig.add_argument(
        "--unet", type=Path, metavar="DIR", help="CIG's fine-tuned UNet ({model_path} or {model_path}/unet)"
    )
    cig.add_argument(
        "--vae", type=Path, metavar="DIR", help="VAE folder, e.g. madebyollin/sdxl-vae-fp16-fix (CIG's)"
    )
    cig.add_argument(
        "--fusion-weight",
        type=float,
        metavar="W",
        help="weight in [0, 1] of the reference query against the generated one (default: the official "
        "value per split)",
    )
    cig.add_argument(
        "--n-generated", type=int, metavar="N", help="pseudo-target images per query (default 1)"
    )
    cig.add_argument(
        "--generation-steps",
        type=int,
        metavar="S",
        help="diffusion steps (default: paper 50, as CIG; tiny: its generator's own)",
    )
    cig.add_argument(
        "--guidance",
        type=float,
        metavar="G",
        help="classifier-free guidance scale (default: paper, the pipeline's own, as CIG never sets it; "
        "tiny: its generator's own)",
    )
    predicir = parser.add_argument_group("method predicir (predicted target content -> pseudo-word)")
    predicir.add_argument(
        "--predicir-checkpoint",
        metavar="FILE",
        help="paper profile, required: a PrediCIR checkpoint file made with 'cirlib train-predicir' for the "
        "same backbone (no official PrediCIR weights exist); tiny: a checkpoint name, tiny-predicir "
        "(default) or one of its ablations (cirlib.models.tiny.predicir_recipes)",
    )
    predicir.add_argument(
        "--predicir-box",
        choices=("center", "full"),
        help="where the reference sits in the target canvas: center (default; the regions around it are "
        "predicted, as a training crop) or full (every region predicted)",
    )
    planning = parser.add_argument_group(
        "methods planned-text and ipcir (IP-CIR)",
        "caption the reference, let a planner write the target's description and layout; planned-text "
        "retrieves by that description, ipcir adds proxy images drawn from the layout to a base method. "
        "Options not given keep the method's defaults; ipcir's layout generator samples with its own "
        "settings (paper: 50 steps, guidance 7.5; --generation-steps and --guidance are cig's).",
    )
    planning.add_argument(
        "--captioner",
        type=Path,
        metavar="DIR",
        help="paper profile, required: local BLIP-2 folder (model and processor), e.g. "
        "Salesforce/blip2-opt-2.7b saved with huggingface-cli download --local-dir",
    )
    planning.add_argument(
        "--llm",
        type=Path,
        metavar="DIR",
        help="paper profile, required: local instruction-tuned causal LM folder with its tokenizer, the "
        "planner, e.g. Qwen/Qwen1.5-32B-Chat (IP-CIR's)",
    )
    planning.add_argument(
        "--layout-generator",
        type=Path,
        metavar="DIR",
        help="ipcir, paper profile, required: local diffusers text-box GLIGEN pipeline folder, e.g. "
        "masterful/gligen-1-4-generation-text-box",
    )
    planning.add_argument(
        "--planner",
        choices=("tiny", "oracle"),
        help="tiny profile only: the planner trained on the world (tiny, default) or oracle, the "
        "rule-based planner ablation (the paper profile plans with --llm)",
    )
    planning.add_argument(
        "--ipcir-base",
        choices=("planned-text", "pic2word", "searle", "lincir", "cig", "predicir", "text", "sum"),
        metavar="NAME",
        help="ipcir: the base method whose score it extends: planned-text (default; CIReVL/LDRE-style, as "
        "the paper builds on LDRE), pic2word, searle, lincir (paper profile), cig or predicir (tiny "
        "profile), text or sum",
    )
    planning.add_argument(
        "--lam",
        type=float,
        metavar="FLOAT",
        help="ipcir: weight in [0, 1] of the base score (default 0.3, the official code's; the paper's best: "
        "0.3 CIRCO, 0.0 CIRR, 0.8 FashionIQ); 1: the base alone, nothing generated",
    )
    planning.add_argument(
        "--n-proxies", type=int, metavar="INT", help="ipcir: proxy images per query (default 5)"
    )
    planning.add_argument(
        "--proxy-feature",
        choices=("raw", "robust"),
        help="ipcir: the proxies' mean feature (raw: PI) or the robust proxy feature (robust: PI+RP, default)",
    )
    planning.add_argument(
        "--combine",
        choices=("balanced", "weighted"),
        help="ipcir: balanced score lam*S_t + (1-lam)*S_t*S_p (BM, default) or weighted "
        "lam*S_t + (1-lam)*S_p",
    )


@command(
    "eval", help="evaluate a method on a benchmark split; prints one JSON object", configure=_configure_eval
)
def _run_eval(args: argparse.Namespace) -> int:
    if args.list_methods:
        from cirlib.methods import METHOD_INFO, list_methods

        for name in list_methods(args.profile):
            profiles, zero_shot, description = METHOD_INFO[name]
            label = "" if zero_shot else " [SUPERVISED]"
            sys.stdout.write(f"{name}\t{description}{label}\n")
        return 0
    if args.benchmark is None or args.method is None:
        raise CLIError("--benchmark and --method are required (or use --list-methods)")
    from cirlib.run import EvalConfig, RunError, check_method_options, check_paths, method_options_given

    given = method_options_given(args)  # the rest keep EvalConfig's defaults
    cfg = EvalConfig(
        **{
            k: getattr(args, k)
            for k in (
                "benchmark", "method", "split", "profile", "data", "images", "weights", "backbone", "phi",
                "preprocess", "caption_join", "circo_text", "on_missing", "index", "device",
                "precision", "batch_size", "workers", "n_queries", "soft", "out", *given,
            )
        }
    )  # fmt: skip
    if cfg.soft and (cfg.benchmark != "cirr" or cfg.split != "val"):
        raise CLIError("--soft is only for --benchmark cirr --split val")
    try:
        check_method_options(cfg, given)  # also an option given with its default value
        check_paths(cfg)  # every path, before torch is imported
    except RunError as err:
        raise CLIError(str(err)) from None
    from cirlib.methods import list_methods

    if args.method not in list_methods(args.profile):
        raise CLIError(
            f"unknown method {args.method!r} for profile {args.profile}; known: {', '.join(list_methods(args.profile))}"
        )
    from cirlib.data.annotations import AnnotationError
    from cirlib.data.real import DataLayoutError, DataNotFoundError, MissingImagesError
    from cirlib.generation.files import LocalModelNotFoundError
    from cirlib.models.clip import ImageFileError
    from cirlib.models.released import ReleasedWeightsError
    from cirlib.run import run_eval

    try:
        record = run_eval(cfg)
    except (
        AnnotationError,
        DataLayoutError,
        DataNotFoundError,
        ImageFileError,
        LocalModelNotFoundError,  # a model folder (e.g. IP-CIR's MissingIPCIRFilesError)
        MissingImagesError,
        ReleasedWeightsError,
        RunError,
    ) as err:  # bad input, named in the message: one line, status 2
        raise CLIError(str(err)) from None
    log.info(
        "%s on %s %s/%s: %d queries; outputs in %s",
        cfg.method,
        cfg.profile,
        cfg.benchmark,
        cfg.split,
        record["n_queries"],
        cfg.output_dir(),
    )
    if record["metrics"]:
        sys.stdout.write(json.dumps(record["metrics"]) + "\n")
    else:  # a test split: no ground truth, the server files are the result
        sys.stdout.write(json.dumps({"n_queries": record["n_queries"], "files": record["files"]}) + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------


def _configure_search(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder of images to search (.jpg .jpeg .png .webp .bmp, recursively); encoded once, then cached",
    )
    parser.add_argument(
        "--reference",
        required=True,
        type=Path,
        metavar="FILE",
        help="reference image: one of the folder's (then left out of the results) or any other image file",
    )
    parser.add_argument(
        "--text",
        required=True,
        action="append",
        metavar="TEXT",
        help="modification text; give it twice for two captions (joined as the method joins FashionIQ's)",
    )
    parser.add_argument(
        "--method", default="sum", help="a name from cirlib eval --list-methods (default sum)"
    )
    parser.add_argument("--profile", choices=("tiny", "paper"), default="tiny")
    parser.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    parser.add_argument(
        "--json",
        type=Path,
        metavar="OUT",
        help="write the results as JSON to OUT ('-': stdout) instead of a table",
    )
    paper = parser.add_argument_group("paper profile (as for cirlib eval)")
    paper.add_argument(
        "--weights", type=Path, metavar="DIR", help="folder of weight files (or $CIRLIB_WEIGHTS)"
    )
    paper.add_argument("--backbone", help="ViT-B-32, ViT-L-14 (default), ViT-g-14 or ViT-bigG-14")
    paper.add_argument("--phi", metavar="NAME", help="pic2word/searle/lincir/cig: a released phi by name")
    paper.add_argument(
        "--preprocess", choices=("clip", "targetpad"), help="image preprocessing (default: the method's own)"
    )
    paper.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    paper.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="CUDA autocast")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder batch")
    parser.add_argument("--workers", type=int, default=4, help="image-decoding worker processes")
    options = parser.add_argument_group("method options (as for cirlib eval)")
    options.add_argument(
        "--predicir-checkpoint", metavar="FILE", help="predicir: the network (paper: required)"
    )
    options.add_argument("--predicir-box", choices=("center", "full"), help="predicir: the reference's box")
    options.add_argument(
        "--generator", type=Path, metavar="DIR", help="cig, paper: SD / SDXL pipeline folder"
    )
    options.add_argument("--generator-kind", choices=("sdxl", "sd15"), help="cig, paper: pipeline kind")
    options.add_argument("--unet", type=Path, metavar="DIR", help="cig, paper: CIG's fine-tuned UNet")
    options.add_argument("--vae", type=Path, metavar="DIR", help="cig, paper: VAE folder")
    options.add_argument("--fusion-weight", type=float, metavar="W", help="cig: the reference query's weight")
    options.add_argument("--n-generated", type=int, metavar="N", help="cig: pseudo-targets per query")
    options.add_argument("--generation-steps", type=int, metavar="S", help="cig: diffusion steps")
    options.add_argument("--guidance", type=float, metavar="G", help="cig: classifier-free guidance scale")


@command(
    "search",
    help="search a folder of your own images with a composed query (reference image + text); prints the top k",
    configure=_configure_search,
)
def _run_search(args: argparse.Namespace) -> int:
    from cirlib.run import EvalConfig, RunError, check_method_options, method_options_given
    from cirlib.search import SearchError, check_paper_files, check_reference, folder_gallery

    if args.k < 1:
        raise CLIError(f"-k must be a whole number >= 1, not {args.k}")
    if args.batch_size < 1 or args.workers < 0:
        raise CLIError("--batch-size must be >= 1 and --workers >= 0")
    if args.profile != "paper":
        paper_only = [f"--{f}" for f in ("weights", "backbone", "phi", "preprocess") if getattr(args, f)]
        if paper_only:
            raise CLIError(
                f"{', '.join(paper_only)}: for --profile paper; the tiny profile uses its committed checkpoints"
            )
    # search has cig's and predicir's options only (planned-text and ipcir keep their defaults)
    given = method_options_given(args)
    # benchmark=None: no benchmark's prompt or fusion weight applies to a folder of your own images
    cfg = EvalConfig(
        benchmark=None,  # type: ignore[arg-type]
        method=args.method,
        profile=args.profile,
        **{
            k: getattr(args, k)
            for k in ("weights", "backbone", "phi", "preprocess", "device", "precision", "batch_size",
                      "workers", *given)
        },
    )  # fmt: skip
    try:
        folder_gallery(args.images)  # every path, before torch is imported
        reference = check_reference(args.reference)
        check_method_options(cfg, given)  # also an option given with its default value
        check_paper_files(cfg)
    except (SearchError, RunError) as err:
        raise CLIError(str(err)) from None
    from cirlib.methods import list_methods

    if args.method not in list_methods(args.profile):
        raise CLIError(
            f"unknown method {args.method!r} for profile {args.profile}; known: {', '.join(list_methods(args.profile))}"
        )
    from cirlib.models.released import ReleasedWeightsError
    from cirlib.run import build
    from cirlib.search import for_image_files, index_folder, reference_in_gallery, search

    try:
        method = for_image_files(build(cfg))
        gallery = index_folder(args.images, method)
        hits = search(method, gallery, reference, args.text, k=args.k)
    except (SearchError, RunError, ReleasedWeightsError) as err:
        raise CLIError(str(err)) from None
    inside = reference_in_gallery(gallery, reference)
    if inside is not None:
        log.info("the reference %s is in the folder: left out of the results", inside)
    if args.json is None:
        width = max(len(str(len(hits))), 4)
        lines = [f"{'rank':>{width}}  {'score':>7}  path"]
        lines += [f"{r:>{width}}  {h.score:7.4f}  {h.path}" for r, h in enumerate(hits, 1)]
        sys.stdout.write("\n".join(lines) + "\n")
        return 0
    record = {
        "images": str(args.images),
        "n_images": len(gallery),
        "reference": str(reference),
        "reference_in_folder": inside,
        "texts": list(args.text),
        "method": args.method,
        "profile": args.profile,
        "backbone": cfg.resolved_backbone(),
        "k": args.k,
        "results": [{"rank": r, "id": h.id, "path": h.path, "score": h.score} for r, h in enumerate(hits, 1)],
    }
    if str(args.json) == "-":
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        from cirlib.config import atomic_write_json

        atomic_write_json(args.json, record)
        log.info("wrote %d results to %s", len(hits), args.json)
    return 0


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def _configure_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="*", help="checkpoint names (default: all tiny-profile models)")
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="retrain even if a checkpoint exists, and commit the result",
    )
    parser.add_argument(
        "--root", type=Path, metavar="DIR", help="write checkpoints here instead of data/checkpoints"
    )


@command(
    "train", help="train the tiny profile's models (writes data/checkpoints)", configure=_configure_train
)
def _run_train(args: argparse.Namespace) -> int:
    from cirlib.training import train_all

    report = train_all(args.only, from_scratch=args.from_scratch, root=args.root)
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# train-predicir
# --------------------------------------------------------------------------------------------


def _configure_train_predicir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pairs",
        required=True,
        type=Path,
        metavar="FILE",
        help='image-caption pairs: a .jsonl file, one {"image": path, "caption": text} per line, or a .csv '
        "file with columns image,caption; relative image paths are resolved against the file's folder",
    )
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        metavar="FILE.safetensors",
        help="the checkpoint to write; its folder also gets a registry.json entry named after the file's stem",
    )
    parser.add_argument("--backbone", help="ViT-B-32, ViT-L-14 (default), ViT-g-14 or ViT-bigG-14")
    parser.add_argument(
        "--weights", type=Path, metavar="DIR", help="folder of weight files (or $CIRLIB_WEIGHTS), as for eval"
    )
    parser.add_argument(
        "--steps", type=int, default=700, help="optimiser steps (default 700, as the tiny recipe)"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per step (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="crops, batches and initialisation (default 0)")
    parser.add_argument("--device", default="auto", help="where the frozen CLIP runs: auto, cpu, cuda, ...")
    parser.add_argument(
        "--grid",
        type=int,
        metavar="G",
        help="regions per side of the target canvas; must divide the backbone's patch grid (default: the "
        "divisor closest to 4: 4 for the /14 backbones, 7 for ViT-B-32)",
    )
    parser.add_argument(
        "--resume-dir",
        type=Path,
        metavar="DIR",
        help="keep a training state here every 100 steps; rerunning the same command resumes from it",
    )


@command(
    "train-predicir",
    help="train a PrediCIR checkpoint for a paper-profile backbone on image-caption pairs (no official "
    "weights exist); prints one JSON object",
    configure=_configure_train_predicir,
)
def _run_train_predicir(args: argparse.Namespace) -> int:
    from cirlib.predicir_training import PrediCIRTrainingError, TrainPrediCIR, check_inputs

    cfg = TrainPrediCIR(
        pairs=args.pairs,
        output=args.output,
        backbone=args.backbone,
        weights=args.weights,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        grid=args.grid,
        resume_dir=args.resume_dir,
    )
    try:
        inputs = check_inputs(cfg)  # every path, before torch is imported
        from cirlib.predicir_training import train_from_pairs

        report = train_from_pairs(cfg, inputs)
    except PrediCIRTrainingError as err:
        raise CLIError(str(err)) from None
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# reproduce
# --------------------------------------------------------------------------------------------


def _configure_reproduce(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01")
    parser.add_argument("--smoke", action="store_true", help="small parameters, outputs to a scratch folder")


@command("reproduce", help="run every notebook with papermill (the main job)", configure=_configure_reproduce)
def _run_reproduce(args: argparse.Namespace) -> int:
    from cirlib import reproduce

    argv = (["--only", *args.only] if args.only else []) + (["--smoke"] if args.smoke else [])
    return reproduce.main(argv)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered command."""
    parser = argparse.ArgumentParser(
        prog="cirlib", description="cirlib: zero-shot Composed Image Retrieval companion tools"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        sub_parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(sub_parser)
        sub_parser.set_defaults(_command=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cirlib`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Usage errors (argparse) and invalid input both give status 2 with a one-line message."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    cmd: Command = args._command
    try:
        return cmd.run(args)
    except CLIError as err:
        message = str(err).replace("\n", " ")
        print(f"cirlib {cmd.name}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
