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
    parser.add_argument("--benchmark", choices=("cirr", "circo", "fashioniq"), help="benchmark form")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--method", help="a name from --list-methods")
    parser.add_argument("--list-methods", action="store_true", help="print the method names and exit")
    parser.add_argument("--data", type=Path, metavar="DIR", help="paper profile: dataset folder")
    parser.add_argument("--weights", type=Path, metavar="DIR", help="paper profile: weights folder")
    parser.add_argument("--n-queries", type=int, help="tiny profile: evaluate the first N queries only")


@command(
    "eval", help="evaluate a method on a benchmark split; prints one JSON object", configure=_configure_eval
)
def _run_eval(args: argparse.Namespace) -> int:
    from cirlib.methods import METHOD_INFO, build_method, list_methods

    if args.list_methods:
        for name in list_methods(args.profile):
            profiles, zero_shot, description = METHOD_INFO[name]
            label = "" if zero_shot else " [SUPERVISED]"
            sys.stdout.write(f"{name}\t{description}{label}\n")
        return 0
    if args.benchmark is None or args.method is None:
        raise CLIError("--benchmark and --method are required (or use --list-methods)")
    if args.method not in list_methods(args.profile):
        raise CLIError(
            f"unknown method {args.method!r} for profile {args.profile}; known: {', '.join(list_methods(args.profile))}"
        )
    for flag in ("data", "weights"):
        path = getattr(args, flag)
        if path is not None and not path.exists():
            raise CLIError(f"{path}: --{flag} folder not found")
    if args.profile == "paper":
        raise CLIError(
            "the paper profile's real-benchmark evaluation (image loading for CIRR/CIRCO/FashionIQ) is not "
            "built yet; score your own predictions with `cirlib score` meanwhile"
        )
    from cirlib.evaluation import evaluate
    from cirlib.world import load_world_benchmark

    benchmark = load_world_benchmark(args.benchmark, args.split)
    if args.n_queries:
        benchmark = benchmark.subsample(args.n_queries)
    method = build_method(args.method, args.profile)
    result = evaluate(method, benchmark)
    log.info("%s on world %s/%s: %d queries", args.method, args.benchmark, args.split, result.n_queries)
    sys.stdout.write(json.dumps(result.summary) + "\n")
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
