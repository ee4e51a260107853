"""Time and memory of hyperdensity segmentation, and speed of the synthetic generator.

Segmentation runs on 512 x 512 synthetic HT+CE heads of 40 slices (3.75 mm) and 200 slices
(0.75 mm) over the same 150 mm. Time is the
median of several in-process runs. Peak memory is the largest extra memory that numpy and
scipy allocate during one run (tracemalloc), as a multiple of the volume's float32 size.
Targets: 40 slices <= 0.5 s, 200 slices <= 2.5 s, peak <= 4x the volume.

Generation is timed per study (baseline or follow-up) written as DICOM at 256 x 256, with the
true masks; the target is <= 0.3 s per study.

    python benchmarks/bench_segment.py [--repeats 5]
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

from inference.segmentation import segment_hyperdensities  # noqa: E402
from inference.synthetic import generate_case_volume, make_cohort  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size")
    parser.add_argument("--cases", type=int, default=6, help="cases generated for timing")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
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
