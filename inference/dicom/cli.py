"""The ``inspect`` subcommand: series found, the choice, the volume's geometry and warnings."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

import numpy as np

from ..errors import InferenceError, NoUsableSeriesError
from ..volume import Volume
from .load import LoadLimits, describe_rejections, load_volume
from .scan import ScanResult, scan_paths


def register(subparsers: Any) -> None:
    """Add the ``inspect`` subcommand to the CLI."""
    parser = subparsers.add_parser(
        "inspect",
        help="list the DICOM series under PATH, the one chosen, and its volume geometry",
        description="Scan files and folders for DICOM, classify every series, choose the "
        "series for analysis, load it, and report geometry, corrections and warnings.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders")
    parser.add_argument("--json", action="store_true", help="print one JSON object (UTF-8)")
    parser.add_argument(
        "--no-load", action="store_true", help="scan headers only; do not decode pixels"
    )
    parser.add_argument(
        "--allow-gaps",
        action="store_true",
        help="interpolate across missing slices instead of rejecting the series",
    )
    parser.add_argument(
        "--max-slices", type=int, default=LoadLimits.max_slices, help="reject larger series"
    )
    parser.add_argument(
        "--max-voxels", type=int, default=LoadLimits.max_voxels, help="reject larger volumes"
    )
    parser.set_defaults(handler=run_inspect)


def volume_summary(volume: Volume) -> dict[str, Any]:
    """Describe a volume's geometry and notes as JSON-safe values."""
    valid = volume.hu[~volume.padding_mask] if volume.padding_mask is not None else volume.hu
    return {
        "shape_zyx": list(volume.shape),
        "spacing_zyx_mm": list(volume.spacing_zyx_mm),
        "origin_xyz_mm": list(volume.origin_xyz_mm),
        "direction": np.round(volume.direction, 6).tolist(),
        "hu_min": float(valid.min()) if valid.size else None,
        "hu_max": float(valid.max()) if valid.size else None,
        "padding_voxels": int(volume.padding_mask.sum()) if volume.padding_mask is not None else 0,
        "n_source_instances": len(volume.sop_instance_uids),
        "notes": [note.to_dict() for note in volume.notes],
    }


def run_inspect(args: argparse.Namespace) -> int:
    missing = [path for path in args.paths if not os.path.exists(path)]
    if missing:
        raise NoUsableSeriesError(
            f"{missing[0]}: file or folder not found; check the path",
            path=missing[0],
            code="path_not_found",
        )
    report: dict[str, Any] = {"scan": None, "volume": None, "error": None}
    status = 0
    # Zip archives are extracted here and removed when the report is complete.
    with tempfile.TemporaryDirectory(prefix="ceht-inspect-") as archive_dir:
        scan = scan_paths(args.paths, archive_dir=archive_dir)
        report["scan"] = scan.to_dict()
        if scan.chosen is None:
            report["error"] = {
                "code": "no_usable_series",
                "message": f"no series qualifies for analysis: {describe_rejections(scan)}",
            }
            status = 1
        elif not args.no_load:
            limits = LoadLimits(max_slices=args.max_slices, max_voxels=args.max_voxels)
            try:
                volume = load_volume(scan.chosen, limits=limits, allow_gaps=args.allow_gaps)
                report["volume"] = volume_summary(volume)
            except InferenceError as exc:
                report["error"] = exc.to_dict()
                status = 1
    if args.json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    else:
        _print_text(scan, report)
    if status and report["error"]:
        print(
            f"error: {report['error']['code']}: {printable(report['error']['message'])}",
            file=sys.stderr,
        )
    return status


def printable(text: str) -> str:
    """Escape control characters, so that names from files cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _print_text(scan: ScanResult, report: dict[str, Any]) -> None:
    print(f"{scan.n_files} files, {len(scan.studies)} studies, {len(scan.series)} series")
    for series in scan.series:
        mark = "*" if series.chosen else " "
        thickness = f"{series.slice_thickness_mm:g} mm" if series.slice_thickness_mm else "?"
        print(
            f"{mark} {series.series_number!s:>5} {printable(series.description[:30]):30} "
            f"{series.kind:17} {series.kernel_class:11} {thickness:>8} "
            f"{series.n_instances:5} images"
        )
        print(f"        {printable(series.reason)}")
        for note in series.notes:
            print(f"        {note.level}: {note.code}: {printable(note.message)}")
    if scan.skipped:
        print(f"skipped {len(scan.skipped)} files:")
        for item in scan.skipped:
            print(
                f"  {item.reason:10} {printable(scan.display_path(item.path))}: "
                f"{printable(item.detail)}"
            )
    for note in scan.notes:
        print(f"{note.level}: {note.code}: {printable(note.message)}")
    volume = report.get("volume")
    if volume:
        print(
            f"volume {volume['shape_zyx']} (z, y, x), spacing {volume['spacing_zyx_mm']} mm, "
            f"origin {volume['origin_xyz_mm']} mm, HU {volume['hu_min']:.0f}..{volume['hu_max']:.0f}"
        )
        for note in volume["notes"]:
            print(f"  {note['level']}: {note['code']}: {printable(note['message'])}")
