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
against the predicted lesions assigned to it (each predicted lesion goes to the true lesion it
overlaps most, see ``inference.segmentation.evaluation``). Lesions are grouped as compact or
thin (cortical or sulcal staining), by case class, and as isolated or touching another true
lesion. Touching lesions are also scored together as one hyperdensity. The target is a Dice
of at least 0.9.

``--oracle`` (with ``--dice``) adds, per true lesion, the best Dice that one HU threshold
(voxels at or above it) and one HU band (voxels from one value up to below another) could
reach on the stored image in the lesion's neighbourhood: the brain voxels within
``ORACLE_MARGIN_MM`` in-plane and one slice of the lesion's bounding box. A lesion whose
oracle stays below 0.9 cannot reach the target with any voxel-wise threshold.

``--borders refined`` times or scores the learned border refiner
(``inference.segmentation.refine``) instead of the default threshold borders, and ``--split
test`` scores only the cohort's test cases.

    python benchmarks/bench_segment.py [--repeats 5] [--borders refined]
    python benchmarks/bench_segment.py --dice [--cohort DIR] [--oracle] [--borders refined]
        [--split test]
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
from inference.segmentation import (  # noqa: E402
    SegmentationConfig,
    lesion_dice,
    segment_hyperdensities,
)
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


def bench_segmentation(n_slices: int, repeats: int, borders: str = "threshold") -> dict[str, float]:
    volume = study_with_slices(n_slices)
    config = SegmentationConfig(refine_with_model=borders == "refined")
    segment_hyperdensities(volume, config)  # warm-up: imports and first-touch page faults
    times_s = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = segment_hyperdensities(volume, config)
        times_s.append(time.perf_counter() - started)
    tracemalloc.start()
    segment_hyperdensities(volume, config)
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
# In-plane reach of the oracle's neighbourhood around a true lesion's bounding box.
ORACLE_MARGIN_MM = 5.0
# HU grid on which the oracle tries thresholds: every whole HU from -20 to 400.
ORACLE_GRID_HU = np.arange(-20.0, 401.0, 1.0)


def oracle_dice(
    hu: np.ndarray, brain: np.ndarray, truth: np.ndarray, pixel_mm: float
) -> tuple[float, float]:
    """Best Dice of one threshold and of one band of HU around ``truth`` (see module doc)."""
    zs, ys, xs = np.nonzero(truth)
    reach = int(np.ceil(ORACLE_MARGIN_MM / pixel_mm))
    box = (
        slice(max(0, zs.min() - 1), zs.max() + 2),
        slice(max(0, ys.min() - reach), ys.max() + reach + 1),
        slice(max(0, xs.min() - reach), xs.max() + reach + 1),
    )
    # True voxels outside the brain mask stay in the count (as misses), not in the search.
    searched = brain[box]
    true_count = int(np.count_nonzero(truth))
    edges = np.concatenate([[-np.inf], ORACLE_GRID_HU, [np.inf]])
    lesion_hist, _ = np.histogram(hu[box][searched & truth[box]], bins=edges)
    all_hist, _ = np.histogram(hu[box][searched], bins=edges)
    # Cumulative counts below each grid value; index i is "below ORACLE_GRID_HU[i]".
    lesion_below = np.concatenate([[0], np.cumsum(lesion_hist)])[1:-1]
    all_below = np.concatenate([[0], np.cumsum(all_hist)])[1:-1]
    lesion_total = int(lesion_hist.sum())
    all_total = int(all_hist.sum())
    above = 2.0 * (lesion_total - lesion_below) / ((all_total - all_below) + true_count)
    # Band [low, high): true positives and predicted counts for every pair low < high.
    band_true = lesion_below[None, :] - lesion_below[:, None]
    band_all = all_below[None, :] - all_below[:, None]
    # Pairs with low >= high have no voxels, and their Dice is set to 0.
    band = np.where(band_true > 0, 2.0 * band_true / np.maximum(band_all + true_count, 1), 0.0)
    return float(above.max()), max(float(band.max()), float(above.max()))


def cohort_dice(
    manifest: CohortManifest,
    oracle: bool = False,
    borders: str = "threshold",
    split: str = "all",
) -> list[dict[str, object]]:
    """Dice of every true lesion of at least 0.5 mL in the cohort's baseline studies.

    ``borders`` "refined" scores the borders of the learned refiner, "threshold" those of the
    default segmentation; ``split`` "train" or "test" keeps that split's cases only.
    """
    records: list[dict[str, object]] = []
    normal_with_lesions = 0
    predicted_count = 0
    false_positives = 0
    split_cases = 0
    config = SegmentationConfig(refine_with_model=borders == "refined")
    for case in manifest.cases:
        if split != "all" and case.split != split:
            continue
        volume, _scan = load_study(case.baseline_dir)
        result = segment_hyperdensities(volume, config)
        predicted_count += len(result.lesions)
        split_cases += any(note.code == "two_densities_split" for note in result.notes)
        if case.label == "none":
            normal_with_lesions += bool(result.lesions)
            continue
        true_labels = case.true_labels()
        false_positives += sum(
            not np.any(true_labels[result.labels == lesion.label]) for lesion in result.lesions
        )
        pixel_mm = min(volume.spacing_zyx_mm[1], volume.spacing_zyx_mm[2])
        for item in lesion_dice(true_labels, result.labels, volume.voxel_volume_ml):
            (value,) = item.true_label_values
            pattern = str(case.lesions[value - 1]["pattern"])
            group = tuple(sorted((value, *item.touching_label_values)))
            extra: dict[str, object] = {}
            if oracle:
                threshold_dice, band_dice = oracle_dice(
                    volume.hu, result.brain_mask, true_labels == value, pixel_mm
                )
                extra = {"oracle_threshold": threshold_dice, "oracle_band": band_dice}
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
                    **extra,
                }
            )
    print(f"normal studies with a lesion found: {normal_with_lesions}")
    print(
        f"predicted lesions: {predicted_count}, overlapping no true lesion: {false_positives}, "
        f"cases with a lesion split into two densities: {split_cases}"
    )
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
        place = "touching" if record["touching"] else "isolated"
        groups.setdefault(f"kind {record['kind']}, {place}", []).append(dice)
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
    if records and "oracle_threshold" in records[0]:
        print_oracle_counts(records)


def print_oracle_counts(records: list[dict[str, object]]) -> None:
    """Count the lesions that one HU threshold or band could, or could not, bring to 0.9.

    The oracle classifies each voxel alone, so the segmenter, which smooths and grows
    regions, can score above it.
    """

    def value(record: dict[str, object], key: str) -> float:
        return float(record[key])  # type: ignore[arg-type]

    print(
        "| lesions | n | threshold oracle < 0.9 | band oracle < 0.9 | "
        "Dice < 0.9 but band oracle >= 0.9 | Dice above band oracle |"
    )
    print("|---|---|---|---|---|---|")
    for place in ("isolated", "touching", "all"):
        chosen = [
            record
            for record in records
            if place == "all" or bool(record["touching"]) == (place == "touching")
        ]
        below_threshold = sum(value(r, "oracle_threshold") < 0.9 for r in chosen)
        below_band = sum(value(r, "oracle_band") < 0.9 for r in chosen)
        reachable = sum(value(r, "dice") < 0.9 <= value(r, "oracle_band") for r in chosen)
        above = sum(value(r, "dice") > value(r, "oracle_band") for r in chosen)
        print(
            f"| {place} | {len(chosen)} | {below_threshold} | {below_band} | {reachable} | "
            f"{above} |"
        )
    for record in records:
        if value(record, "oracle_band") < 0.9:
            print(
                f"band oracle below 0.9: {record['case']} lesion {record['label_value']} "
                f"{record['pattern']} {record['true_ml']} mL, touching {record['touching']}: "
                f"threshold {value(record, 'oracle_threshold'):.3f}, "
                f"band {value(record, 'oracle_band'):.3f}, segmenter {value(record, 'dice'):.3f}"
            )


def run_dice(cohort: Path | None, oracle: bool, borders: str, split: str) -> None:
    print(f"split: {split}")
    if cohort is not None:
        print_dice_table(cohort_dice(load_cohort(cohort), oracle, borders, split))
        return
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        manifest = make_cohort(Path(folder) / "cohort")
        print(f"generated {manifest.cohort_id} in {time.perf_counter() - started:.0f} s")
        print_dice_table(cohort_dice(manifest, oracle, borders, split))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size")
    parser.add_argument("--cases", type=int, default=6, help="cases generated for timing")
    parser.add_argument("--dice", action="store_true", help="measure Dice on a cohort instead")
    parser.add_argument("--cohort", type=Path, help="cohort folder for --dice (default: generate)")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="with --dice, also report the best Dice of one HU threshold or band per lesion",
    )
    parser.add_argument(
        "--borders",
        choices=("refined", "threshold"),
        default="threshold",
        help="time or score the threshold borders (the default segmentation) or the learned "
        "refiner's",
    )
    parser.add_argument(
        "--split",
        choices=("all", "train", "test"),
        default="all",
        help="with --dice, score only the cohort's train or test cases",
    )
    args = parser.parse_args()
    if args.oracle and not args.dice:
        parser.error("--oracle requires --dice")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"borders: {args.borders}")
    if args.dice:
        run_dice(args.cohort, args.oracle, args.borders, args.split)
        return
    for n_slices in (40, 200):
        row = bench_segmentation(n_slices, args.repeats, args.borders)
        print(
            f"segment {int(row['slices'])} x 512 x 512 ({row['volume_mb']:.0f} MB float32): "
            f"median {row['median_s']:.3f} s (min {row['min_s']:.3f}, max {row['max_s']:.3f}), "
            f"peak extra memory {row['peak_ratio']:.2f}x the volume, "
            f"{int(row['lesions'])} lesion(s)"
        )
    print(f"generate one 256 x 256 study as DICOM: median {bench_generation(args.cases):.3f} s")


if __name__ == "__main__":
    main()
