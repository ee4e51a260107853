"""The ``segment`` subcommand: hyperdense lesions of the chosen series under PATH."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from inference.errors import NoUsableSeriesError
from inference.segmentation.hyperdensity import segment_hyperdensities
from inference.segmentation.masks import load_user_mask
from inference.segmentation.result import SegmentationConfig, SegmentationResult


def register(subparsers: Any) -> None:
    """Add the ``segment`` subcommand to the CLI."""
    defaults = SegmentationConfig()
    parser = subparsers.add_parser(
        "segment",
        help="segment hyperdensities in the head CT series under PATH",
        description="Load the series chosen for analysis under PATH and list its hyperdense "
        "lesions (volume, HU statistics, extent, compartment), or measure the lesions of a "
        "user-supplied mask on it.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders")
    parser.add_argument("--json", action="store_true", help="print one JSON object (UTF-8)")
    parser.add_argument(
        "--mask", metavar="FILE", help="NIfTI or DICOM SEG mask to measure instead of segmenting"
    )
    parser.add_argument(
        "--low-hu",
        type=float,
        default=defaults.low_hu,
        help=f"lower end of the hyperdense window in HU (default {defaults.low_hu:g})",
    )
    parser.add_argument(
        "--min-volume-ml",
        type=float,
        default=defaults.min_volume_ml,
        help=f"smallest lesion kept, in mL (default {defaults.min_volume_ml:g}; 0 keeps all)",
    )
    parser.add_argument(
        "--refiner",
        action="store_true",
        help="redraw the lesion borders with the learned refiner (default: threshold borders)",
    )
    parser.set_defaults(handler=run_segment)

    train = subparsers.add_parser(
        "train-refiner",
        help="train the learned border refiner of the segmentation and write it to OUT",
        description="Train the border refiner on the train split of a synthetic cohort (the "
        "default cohort, generated into a temporary folder, unless --cohort is given) and "
        "write its weights as JSON to OUT. Test cases are never read.",
    )
    train.add_argument("out", metavar="OUT", help="weights file to write (JSON)")
    train.add_argument("--cohort", metavar="DIR", help="cohort folder from make-cohort")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.set_defaults(handler=run_train_refiner)


def run_segment(args: argparse.Namespace) -> int:
    from inference.dicom import load_study

    missing = [path for path in [*args.paths, args.mask] if path and not os.path.exists(path)]
    if missing:
        raise NoUsableSeriesError(
            f"{missing[0]}: file or folder not found; check the path",
            path=missing[0],
            code="path_not_found",
        )
    try:
        config = SegmentationConfig(
            low_hu=args.low_hu,
            min_volume_ml=args.min_volume_ml,
            refine_with_model=args.refiner,
        )
    except ValueError as error:
        print(f"error: invalid_argument: {error}", file=sys.stderr)
        return 2
    volume, _scan = load_study(args.paths)
    if args.mask:
        result = load_user_mask(args.mask, volume, config)
    else:
        result = segment_hyperdensities(volume, config)
    if args.json:
        payload = {"volume_shape_zyx": list(volume.shape), "segmentation": result.to_dict()}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2) + "\n")
    else:
        _print_text(result)
    return 0


def run_train_refiner(args: argparse.Namespace) -> int:
    import tempfile
    import time
    from pathlib import Path

    from inference.segmentation.refine import save_refiner, train_refiner
    from inference.synthetic import load_cohort, make_cohort

    started = time.perf_counter()
    if args.cohort:
        refiner = train_refiner(load_cohort(args.cohort), seed=args.seed)
    else:
        with tempfile.TemporaryDirectory() as folder:
            refiner = train_refiner(make_cohort(Path(folder) / "cohort"), seed=args.seed)
    save_refiner(refiner, args.out)
    print(
        f"wrote {args.out}: {refiner.metadata['samples']} band voxels of "
        f"{refiner.metadata['cases']} training cases, {time.perf_counter() - started:.0f} s"
    )
    return 0


def _print_text(result: SegmentationResult) -> None:
    if result.is_empty:
        print("no hyperdensity found")
    else:
        print(f"{len(result.lesions)} lesion(s), {result.total_volume_ml:.2f} mL in total")
    for lesion in result.lesions:
        print(
            f"  #{lesion.label}: {lesion.volume_ml:.3f} mL, mean {lesion.mean_hu:.1f} HU, "
            f"max {lesion.max_hu:.1f} HU, slices {lesion.slices[0]}-{lesion.slices[-1]}, "
            f"{lesion.compartment}"
        )
    for note in result.notes:
        print(f"{note.level}: {note.code}: {note.message}")
