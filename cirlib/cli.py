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
