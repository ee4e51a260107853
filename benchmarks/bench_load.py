"""Time loading a 512x512 CT series against plainly reading the same files' bytes.

Usage: python benchmarks/bench_load.py [--runs N] [--slices 40 200] [--threads N]

For each series size, the script writes a synthetic series into a temporary folder. In the
same run, alternating, it times seven things:

- reading every file's bytes, dropping each before the next (the strictest floor: the memory
  is reused, so no page is new to the process);
- reading every file's bytes into one new array that is kept (a plain read of the series: its
  contents end up in new memory, as the loaded volume does). The array is a new anonymous
  mapping in every run, advised for huge pages as numpy advises large arrays;
- the same read into a numpy array, as earlier versions of this script measured it. glibc
  hands a freed block of up to 32 MiB back to the next request of its size, so at 40 slices
  this array reuses the previous run's memory: the page-fault columns show it;
- filling a new float32 array of the volume's shape, allocated as the loader allocates its
  volume, which is the cost of producing the output in fresh memory;
- plain pydicom reading of headers and pixels (context);
- ``scan_paths`` alone (header reading and choice);
- ``load_study`` (scan plus decoding and HU conversion).

It prints medians, the ratios of load to the plain reads and to pydicom, the ratio of load to
the read into new memory in CPU time (process time, which other jobs on the machine disturb
less than elapsed time) and of their fastest runs (the least disturbed), the median minor
page faults of the reads and of the load, and the peak memory of ``load_study`` as a multiple
of the volume's size: what tracemalloc records, plus the padding mask at full size.
``--threads`` sets the loader's thread count (default: the loader's own; with threads, CPU
time adds up over them).
"""

from __future__ import annotations

import argparse
import mmap
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.dicom import load as dicom_load  # noqa: E402
from inference.dicom import load_study, scan_paths  # noqa: E402
from inference.dicom.pixels import HUGE_PAGE_BYTES, empty_aligned  # noqa: E402


def write_series(folder: Path, n_slices: int, size: int = 512) -> None:
    """Write an axial series of 5 mm slices, unsigned 16-bit with intercept -1024."""
    rng = np.random.default_rng(0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    y, x = np.mgrid[0:size, 0:size]
    head = ((y - size / 2) / (size * 0.42)) ** 2 + ((x - size / 2) / (size * 0.36)) ** 2 <= 1
    for index in range(n_slices):
        hu = np.where(head, 35, -1000) + rng.integers(-5, 6, (size, size))
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 2, index + 1, "BENCH 5mm"
        ds.ImagePositionPatient = [-115.0, -115.0, 5.0 * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.45, 0.45], 5
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{index:05d}", enforce_file_format=True)


def read_bytes(folder: Path) -> int:
    """Read every file's bytes, dropping each before the next: memory is reused throughout."""
    return sum(len(path.read_bytes()) for path in sorted(folder.iterdir()))


def new_memory(nbytes: int) -> np.ndarray:
    """Return a byte array in memory that is new to the process, aligned for huge pages.

    A private anonymous mapping is never memory that malloc kept from an earlier run.
    """
    block = mmap.mmap(-1, nbytes + HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block.madvise(mmap.MADV_HUGEPAGE)
    whole = np.frombuffer(block, dtype=np.uint8)
    start = -whole.ctypes.data % HUGE_PAGE_BYTES
    return whole[start : start + nbytes]


def read_into(paths: list[Path], sizes: list[int], contents: np.ndarray) -> np.ndarray:
    view = contents.data
    offset = 0
    for path, size in zip(paths, sizes, strict=True):
        with open(path, "rb", buffering=0) as handle:
            offset += handle.readinto(view[offset : offset + size])
    return contents


def read_into_new_memory(folder: Path) -> np.ndarray:
    """Read every file's bytes into one new array and keep it, as a reader of the series must.

    The contents end up in memory that is new to the process, as the loader's volume does, so
    this pays the first-touch page faults for the bytes it reads. One preallocated array with
    ``readinto`` is the cheapest way to do that in Python (a list of ``read_bytes`` results
    took up to 2.5 times longer on the development machine).
    """
    paths = sorted(folder.iterdir())
    sizes = [path.stat().st_size for path in paths]
    return read_into(paths, sizes, new_memory(sum(sizes)))


def read_into_numpy_array(folder: Path) -> np.ndarray:
    """Read like :func:`read_into_new_memory`, into a plain numpy array (memory may be reused)."""
    paths = sorted(folder.iterdir())
    sizes = [path.stat().st_size for path in paths]
    return read_into(paths, sizes, np.empty(sum(sizes), dtype=np.uint8))


def read_with_pydicom(folder: Path) -> int:
    """Read every file and its pixels with plain pydicom, for context (no sorting, no HU)."""
    return sum(int(pydicom.dcmread(path).pixel_array.size) for path in sorted(folder.iterdir()))


def fill_new_volume(n_slices: int, size: int = 512) -> None:
    """Write every voxel of a new float32 array: the page faults a fresh volume costs."""
    empty_aligned((n_slices, size, size), np.float32).fill(-1000.0)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def bench(n_slices: int, runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_series(folder, n_slices)
        read_bytes(folder)  # warm the page cache for all measurements
        times: dict[str, list[float]] = {
            name: [] for name in ("plain", "kept", "heap", "fill", "pydicom", "scan", "load")
        }
        faults: dict[str, list[int]] = {"kept": [], "heap": [], "load": []}
        cpu: dict[str, list[float]] = {"kept": [], "load": []}
        steps = [
            ("plain", lambda: read_bytes(folder)),
            ("kept", lambda: read_into_new_memory(folder)),
            ("heap", lambda: read_into_numpy_array(folder)),
            ("fill", lambda: fill_new_volume(n_slices)),
            ("pydicom", lambda: read_with_pydicom(folder)),
            ("scan", lambda: scan_paths(folder)),
            ("load", lambda: load_study(folder)),
        ]
        for _ in range(runs):
            for name, step in steps:
                before = minor_faults()
                cpu_start = time.process_time()
                start = time.perf_counter()
                result = step()
                times[name].append(time.perf_counter() - start)
                if name in cpu:
                    cpu[name].append(time.process_time() - cpu_start)
                if name in faults:
                    faults[name].append(minor_faults() - before)
                del result
        volume, _ = load_study(folder)
        volume_bytes = volume.hu.nbytes
        del volume
        tracemalloc.start()
        volume, _ = load_study(folder)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # tracemalloc does not see the padding mask, a mapping that takes memory only where
        # written. It is counted at full size, as if every slice had padding.
        assert volume.padding_mask is not None
        peak += volume.padding_mask.nbytes
    r = {f"{name}_s": statistics.median(values) for name, values in times.items()}
    r.update({f"{name}_faults": statistics.median(values) for name, values in faults.items()})
    for name in ("plain", "kept", "heap", "pydicom"):
        r[f"{name}_ratio"] = r["load_s"] / r[f"{name}_s"]
    r["cpu_ratio"] = statistics.median(cpu["load"]) / statistics.median(cpu["kept"])
    r["best_ratio"] = min(times["load"]) / min(times["kept"])
    r["volume_mib"] = volume_bytes / 2**20
    r["peak_ratio"] = peak / volume_bytes
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per size (median)")
    parser.add_argument("--slices", type=int, nargs="+", default=[40, 200])
    parser.add_argument("--threads", type=int, default=None, help="loader threads (1: none)")
    args = parser.parse_args()
    if args.threads is not None:
        dicom_load.LOAD_THREADS = args.threads
    print(
        f"python {platform.python_version()}, {platform.machine()}, runs={args.runs}, "
        f"loader threads={dicom_load.LOAD_THREADS}, times in ms"
    )
    columns = [
        ("slices", "{:6d}", None),
        ("plain_read", "{:10.2f}", "plain_s"),
        ("read_new", "{:8.2f}", "kept_s"),
        ("read_numpy", "{:10.2f}", "heap_s"),
        ("fill_volume", "{:11.2f}", "fill_s"),
        ("pydicom", "{:7.1f}", "pydicom_s"),
        ("scan_paths", "{:10.2f}", "scan_s"),
        ("load_study", "{:10.2f}", "load_s"),
        ("load/plain", "{:10.2f}", "plain_ratio"),
        ("load/new", "{:8.2f}", "kept_ratio"),
        ("load/numpy", "{:10.2f}", "heap_ratio"),
        ("load/pydicom", "{:12.2f}", "pydicom_ratio"),
        ("load/new_cpu", "{:12.2f}", "cpu_ratio"),
        ("load/new_best", "{:13.2f}", "best_ratio"),
        ("faults_new", "{:10.0f}", "kept_faults"),
        ("faults_numpy", "{:12.0f}", "heap_faults"),
        ("faults_load", "{:11.0f}", "load_faults"),
        ("peak/volume", "{:11.2f}", "peak_ratio"),
    ]
    print("  ".join(name for name, _, _ in columns))
    for n_slices in args.slices:
        r = bench(n_slices, args.runs)
        cells = []
        for _, form, key in columns:
            if key is None:
                cells.append(form.format(n_slices))
            elif key.endswith("_s"):
                cells.append(form.format(1000 * r[key]))
            else:
                cells.append(form.format(r[key]))
        print("  ".join(cells))


if __name__ == "__main__":
    main()
