"""Time the whole pipeline on one synthetic study, and radiomics on the bounding box vs the
whole volume.

Usage:
    python benchmarks/bench_pipeline.py [--models DIR] [--matrix 512] [--slices 40] [--runs 5]

Without ``--models`` a small registry is trained first on in-memory synthetic cases (not
timed). Prints the median and range of each step over ``--runs`` runs after one warm-up, the
per-lesion radiomics time with and without the bounding-box crop, and the process's peak
resident memory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.dicom import load_study  # noqa: E402
from inference.evaluation.metrics import CLASS_LABELS  # noqa: E402
from inference.models.classical import TrainingConfig  # noqa: E402
from inference.models.registry import ModelRegistry  # noqa: E402
from inference.pipeline import predict_study  # noqa: E402
from inference.radiomics import extract_lesion_features, load_settings  # noqa: E402
from inference.segmentation import segment_hyperdensities  # noqa: E402
from inference.synthetic.case import generate_case_volume  # noqa: E402
from inference.synthetic.writer import SeriesInfo, write_series  # noqa: E402
from inference.training import CohortEntry, build_feature_table, train_models  # noqa: E402


def _quick_registry(root: Path) -> Path:
    entries = [
        CohortEntry(
            f"{label}-{index}",
            label,
            "train",
            load_volume=lambda label=label, index=index: generate_case_volume(
                label, seed=(500 + index,), matrix=256
            ).baseline_volume(),
        )
        for label in CLASS_LABELS
        for index in range(6)
    ]
    table = build_feature_table(entries)
    config = TrainingConfig(n_splits=3, n_repeats=1, k_features=(10,), rf_trees=100)
    train_models(table, ModelRegistry(root), version="bench", cohort_id="bench", config=config)
    return root


def _summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"
    )


def _write_study(matrix: int, n_slices: int, study: Path) -> None:
    case = generate_case_volume("HT+CE", seed=(42,), matrix=matrix, n_slices=n_slices)
    info = SeriesInfo(0, "BENCH-01", "baseline", datetime(2026, 1, 1, 8, 0), 2, "bench", "O", 70)
    write_series(case.baseline_hu, case.grid, study, info)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="model registry; trained quickly if absent")
    parser.add_argument("--matrix", type=int, default=512, choices=(256, 512))
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        models = args.models or _quick_registry(scratch_dir / "models")
        study = scratch_dir / "study"
        # The generator's arrays (both studies and the true labels) would stay in this
        # process and dominate its peak memory, so a separate process writes the study.
        writer = multiprocessing.get_context("spawn").Process(
            target=_write_study, args=(args.matrix, args.slices, study)
        )
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            print(f"error: writing the synthetic study failed (exit {writer.exitcode})")
            return 1

        steps: dict[str, list[float]] = {}
        predict_study(study, models)  # warm-up: imports, first-call caches
        for _ in range(args.runs):
            result = predict_study(study, models)
            for step, seconds in result.timings_s.items():
                steps.setdefault(step, []).append(seconds)
        print(
            f"study: {args.slices} slices of {args.matrix} x {args.matrix}, {len(result.lesions)} lesions, "
            f"{len(result.models)} models ({', '.join(model.model_id for model in result.models)})"
        )
        for step, values in steps.items():
            print(f"  {step:10s} {_summary(values)}")

        pipeline_peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory of the pipeline runs: {pipeline_peak_mib:.0f} MiB")

        volume, _scan = load_study(study)
        segmentation = segment_hyperdensities(volume)
        settings = load_settings()
        largest = max(segmentation.lesions, key=lambda lesion: lesion.n_voxels)
        timings: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.runs):
            for crop in (True, False):
                started = time.perf_counter()
                extract_lesion_features(
                    volume, segmentation.labels, largest.label, settings, crop=crop
                )
                timings[crop].append(time.perf_counter() - started)
        ratios = [whole / box for box, whole in zip(timings[True], timings[False], strict=True)]
        print(f"radiomics of the largest lesion ({largest.volume_ml:.2f} mL):")
        print(f"  bounding box {_summary(timings[True])}")
        print(f"  whole volume {_summary(timings[False])}")
        print(f"  whole / box  median {statistics.median(ratios):.1f}x")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory, radiomics comparison included: {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
