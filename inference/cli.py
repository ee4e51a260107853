"""Command-line entry point: ``python -m inference SUBCOMMAND ...``.

Each subcommand lives in its own module, which exposes ``register(subparsers)``. That function
adds the subcommand's parser and calls ``parser.set_defaults(handler=...)`` with a function
that takes the parsed arguments and returns the exit status. To add a subcommand, add its
module name to :data:`SUBCOMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .errors import InferenceError

logger = logging.getLogger(__name__)

SUBCOMMAND_MODULES: list[str] = [
    "inference.dicom.cli",
    "inference.segmentation.cli",
    "inference.synthetic.cli",
    "inference.models.cli",
]

EXIT_BAD_INPUT = 1


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description="CT analysis of post-thrombectomy hyperdensities (research use only).",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress (INFO level) to stderr"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            # One subcommand with a missing optional dependency must not disable the others;
            # its failure is logged and shown when the CLI's help is printed.
            logger.warning("subcommands of %s unavailable: %s", module_name, exc)
            parser.epilog = f"{parser.epilog or ''}unavailable: {module_name} ({exc}). "
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return its exit status.

    Bad input (an InferenceError) prints one line, ``error: <code>: <message>``, to stderr
    and returns 1; usage errors exit with argparse's status 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except InferenceError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
