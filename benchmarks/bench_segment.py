"""Time and memory of hyperdensity segmentation, and speed of the synthetic generator.

Segmentation runs on 512 x 512 synthetic HT+CE heads of 40 slices (3.75 mm) and 200 slices
(0.75 mm) over the same 150 mm. Time is the
median of several in-process runs. Peak memory is the largest extra memory that numpy and
scipy allocate during one run (tracemalloc), as a multiple of the volume's float32 size.
Targets: 40 slices <= 0.5 s, 200 slices <= 2.5 s, peak <= 4x the volume.

Generation is timed per study (baseline or follow-up) written as DICOM at 256 x 256, with the
true masks; the target is <= 0.3 s per study.

``--dice`` instead measures Dice against the true masks on a cohort (by default the default
cohort, generated into a temporary folder; or the cohort in ``--cohort DIR``). Every baseline
study is read back with ``load_study`` and segmented. Each true lesion of at least 0.5 mL
(one label value of the true mask with all its voxels, as drawn by the generator) is scored
against the predicted lesions that overlap it, grouped as compact or thin (cortical or sulcal
staining), by case class, and as isolated or touching another true lesion. Touching lesions
are also scored together as one hyperdensity. The target is a Dice of at least 0.9.

    python benchmarks/bench_segment.py [--repeats 5]
    python benchmarks/bench_segment.py --dice [--cohort DIR]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.dicom import load_study  # noqa: E402
from inference.segmentation import lesion_dice, segment_hyperdensities  # noqa: E402
from inference.synthetic import (  # noqa: E402
    CohortManifest,
    generate_case_volume,
    load_cohort,
    make_cohort,
)
from inference.volume import Volume  # noqa: E402


def study_with_slices(n_slices: int) -> Volume:
    """Generate a 512 x 512 synthetic HT+CE head of ``n_slices`` slices over 150 mm."""
    case = generate_case_volume(
        "HT+CE", seed=11, matrix=512, n_slices=n_slices, slice_mm=150.0 / n_slices
    )
    return case.baseline_volume()


def bench_segmentation(n_slices: int, repeats: int) -> dict[str, float]:
    volume = study_with_slices(n_slices)
    segment_hyperdensities(volume)  # warm-up: imports and first-touch page faults
    times_s = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = segment_hyperdensities(volume)
        times_s.append(time.perf_counter() - started)
    tracemalloc.start()
    segment_hyperdensities(volume)
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "slices": float(volume.shape[0]),
        "median_s": statistics.median(times_s),
        "min_s": min(times_s),
        "max_s": max(times_s),
        "peak_ratio": peak_bytes / volume.hu.nbytes,
        "volume_mb": volume.hu.nbytes / 2**20,
        "lesions": float(len(result.lesions)),
    }


def bench_generation(n_cases: int) -> float:
    """Median seconds per written study (two studies per case) at 256 x 256."""
    per_case_s = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(n_cases):
            started = time.perf_counter()
            make_cohort(
                Path(folder) / f"c{index}",
                n_cases=1,
                seed=100 + index,
                class_counts={"HT": 0, "CE": 0, "HT+CE": 1},
                n_normal=0,
            )
            per_case_s.append(time.perf_counter() - started)
    return statistics.median(per_case_s) / 2.0


THIN_PATTERNS = frozenset({"cortical", "sulcal"})


def cohort_dice(manifest: CohortManifest) -> list[dict[str, object]]:
    """Dice of every true lesion of at least 0.5 mL in the cohort's baseline studies."""
    records: list[dict[str, object]] = []
    normal_with_lesions = 0
    for case in manifest.cases:
        volume, _scan = load_study(case.baseline_dir)
        result = segment_hyperdensities(volume)
        if case.label == "none":
            normal_with_lesions += bool(result.lesions)
            continue
        for item in lesion_dice(case.true_labels(), result.labels, volume.voxel_volume_ml):
            (value,) = item.true_label_values
            pattern = str(case.lesions[value - 1]["pattern"])
            group = tuple(sorted((value, *item.touching_label_values)))
            records.append(
                {
                    "case": case.code,
                    "label": case.label,
                    "kind": "thin" if pattern in THIN_PATTERNS else "compact",
                    "pattern": pattern,
                    "label_value": value,
                    "pieces": item.n_pieces,
                    "touching": list(item.touching_label_values),
                    "group": f"{case.code}:{'+'.join(str(v) for v in group)}",
                    "true_ml": item.true_volume_ml,
                    "predicted_ml": item.predicted_volume_ml,
                    "dice": item.dice,
                    "group_dice": item.group_dice,
                }
            )
    print(f"normal studies with a lesion found: {normal_with_lesions}")
    return records


def _row(name: str, values: list[float]) -> str:
    share = sum(value >= 0.9 for value in values) / len(values)
    return (
        f"| {name} | {len(values)} | {statistics.median(values):.3f} | "
        f"{statistics.fmean(values):.3f} | {share:.0%} |"
    )


def print_dice_table(records: list[dict[str, object]]) -> None:
    groups: dict[str, list[float]] = {}
    touching_groups: dict[str, float] = {}
    for record in records:
        dice = float(record["dice"])  # type: ignore[arg-type]
        groups.setdefault(f"kind {record['kind']}", []).append(dice)
        groups.setdefault(f"class {record['label']}", []).append(dice)
        groups.setdefault("all", []).append(dice)
        if record["touching"]:
            groups.setdefault("touching another true lesion", []).append(dice)
            touching_groups[str(record["group"])] = float(record["group_dice"])  # type: ignore[arg-type]
        else:
            groups.setdefault("isolated", []).append(dice)
    print("| lesions | n | median Dice | mean Dice | share >= 0.9 |")
    print("|---|---|---|---|---|")
    for name, values in sorted(groups.items()):
        print(_row(name, values))
    if touching_groups:
        print(_row("touching lesions taken together", list(touching_groups.values())))
        print(
            _row(
                "isolated lesions and touching groups",
                groups.get("isolated", []) + list(touching_groups.values()),
            )
        )
    worst = sorted(records, key=lambda record: float(record["dice"]))[:10]  # type: ignore[arg-type]
    for record in worst:
        print(f"lowest: {record}")


def run_dice(cohort: Path | None) -> None:
    if cohort is not None:
        print_dice_table(cohort_dice(load_cohort(cohort)))
        return
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        manifest = make_cohort(Path(folder) / "cohort")
        print(f"generated {manifest.cohort_id} in {time.perf_counter() - started:.0f} s")
        print_dice_table(cohort_dice(manifest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size")
    parser.add_argument("--cases", type=int, default=6, help="cases generated for timing")
    parser.add_argument("--dice", action="store_true", help="measure Dice on a cohort instead")
    parser.add_argument("--cohort", type=Path, help="cohort folder for --dice (default: generate)")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    if args.dice:
        run_dice(args.cohort)
        return
    for n_slices in (40, 200):
        row = bench_segmentation(n_slices, args.repeats)
        print(
            f"segment {int(row['slices'])} x 512 x 512 ({row['volume_mb']:.0f} MB float32): "
            f"median {row['median_s']:.3f} s (min {row['min_s']:.3f}, max {row['max_s']:.3f}), "
            f"peak extra memory {row['peak_ratio']:.2f}x the volume, "
            f"{int(row['lesions'])} lesion(s)"
        )
    print(f"generate one 256 x 256 study as DICOM: median {bench_generation(args.cases):.3f} s")


if __name__ == "__main__":
    main()
