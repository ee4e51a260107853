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
    parser.set_defaults(handler=run_segment)


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
        config = SegmentationConfig(low_hu=args.low_hu, min_volume_ml=args.min_volume_ml)
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
