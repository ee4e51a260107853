"""The ``make-cohort`` subcommand: write a synthetic post-thrombectomy cohort."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from inference.synthetic.cohort import DEFAULT_SEED, make_cohort


def register(subparsers: Any) -> None:
    """Add the ``make-cohort`` subcommand to the CLI."""
    parser = subparsers.add_parser(
        "make-cohort",
        help="write a synthetic cohort (DICOM studies, true masks, cohort.json) to OUT",
        description="Generate synthetic head CT studies with HT, CE or mixed hyperdensities, "
        "their 24-72 h follow-up studies and true lesion masks. Nothing comes from a patient.",
    )
    parser.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    parser.add_argument(
        "--cases", type=int, default=111, help="cases with a hyperdensity (default 111)"
    )
    parser.add_argument(
        "--normal", type=int, default=4, help="extra cases without hyperdensity (default 4)"
    )
    parser.add_argument(
        "--hard", type=int, default=None, help="cases flagged hard (default about 8%%)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--matrix", type=int, choices=(256, 512), default=256, help="pixels per side"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a cohort already in OUT")
    parser.add_argument("--json", action="store_true", help="print cohort.json's summary")
    parser.set_defaults(handler=run_make_cohort)


def run_make_cohort(args: argparse.Namespace) -> int:
    try:
        manifest = make_cohort(
            args.out,
            n_cases=args.cases,
            seed=args.seed,
            matrix=args.matrix,
            n_normal=args.normal,
            n_hard=args.hard,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as error:
        print(f"error: invalid_argument: {error}", file=sys.stderr)
        return 1
    summary = {
        "cohort_id": manifest.cohort_id,
        "root": str(manifest.root),
        "n_cases": len(manifest.cases),
        "class_counts": manifest.class_counts(),
        "train": len(manifest.split("train")),
        "test": len(manifest.split("test")),
        "hard": sum(case.hard for case in manifest.cases),
    }
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        print(
            f"wrote {summary['n_cases']} synthetic cases to {summary['root']} "
            f"({summary['train']} train, {summary['test']} test): {summary['class_counts']}"
        )
    return 0
