"""Time loading a 512x512 CT series against plainly reading the same files' bytes.

Usage: python benchmarks/bench_load.py [--runs N] [--slices 40 200] [--threads N]

For each series size, the script writes a synthetic series into a temporary folder. In the
same run, alternating, it times six things:

- reading every file's bytes, dropping each before the next (the strictest floor: the memory
  is reused, so no page is new to the process);
- reading every file's bytes into one new array that is kept (a plain read of the series: its
  contents end up in new memory, as the loaded volume does);
- filling a new float32 array of the volume's shape, which is the cost of producing the output
  in fresh memory that the byte read does not pay;
- plain pydicom reading of headers and pixels (context);
- ``scan_paths`` alone (header reading and choice);
- ``load_study`` (scan plus decoding and HU conversion).

It prints medians, the ratios of load to both plain reads and to pydicom, and the peak memory
that tracemalloc records during ``load_study`` as a multiple of the volume's size.
``--threads`` sets the loader's thread count (default: the loader's own).
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
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.dicom import load as dicom_load  # noqa: E402
from inference.dicom import load_study, scan_paths  # noqa: E402


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


def read_into_new_memory(folder: Path) -> np.ndarray:
    """Read every file's bytes into one new array and keep it, as a reader of the series must.

    The contents end up in memory that is new to the process, as the loader's volume does, so
    this pays the first-touch page faults for the bytes it reads. One preallocated array with
    ``readinto`` is the cheapest way to do that in Python (a list of ``read_bytes`` results
    took up to 2.5 times longer on the development machine).
    """
    paths = sorted(folder.iterdir())
    sizes = [path.stat().st_size for path in paths]
    contents = np.empty(sum(sizes), dtype=np.uint8)
    view = memoryview(contents)
    offset = 0
    for path, size in zip(paths, sizes, strict=True):
        with open(path, "rb", buffering=0) as handle:
            offset += handle.readinto(view[offset : offset + size])
    return contents


def read_with_pydicom(folder: Path) -> int:
    """Read every file and its pixels with plain pydicom, for context (no sorting, no HU)."""
    return sum(int(pydicom.dcmread(path).pixel_array.size) for path in sorted(folder.iterdir()))


def fill_new_volume(n_slices: int, size: int = 512) -> None:
    """Write every voxel of a new float32 array: the page faults a fresh volume costs."""
    np.empty((n_slices, size, size), dtype=np.float32).fill(-1000.0)


def bench(n_slices: int, runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_series(folder, n_slices)
        read_bytes(folder)  # warm the page cache for both measurements
        plain: list[float] = []
        kept: list[float] = []
        fill: list[float] = []
        scan: list[float] = []
        naive: list[float] = []
        load: list[float] = []
        for _ in range(runs):
            start = time.perf_counter()
            read_bytes(folder)
            plain.append(time.perf_counter() - start)

            start = time.perf_counter()
            contents = read_into_new_memory(folder)
            kept.append(time.perf_counter() - start)
            del contents

            start = time.perf_counter()
            fill_new_volume(n_slices)
            fill.append(time.perf_counter() - start)

            start = time.perf_counter()
            read_with_pydicom(folder)
            naive.append(time.perf_counter() - start)

            start = time.perf_counter()
            scan_paths(folder)
            scan.append(time.perf_counter() - start)

            start = time.perf_counter()
            volume, _ = load_study(folder)
            load.append(time.perf_counter() - start)
        volume_bytes = volume.hu.nbytes
        del volume
        tracemalloc.start()
        volume, _ = load_study(folder)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "plain_s": statistics.median(plain),
        "kept_s": statistics.median(kept),
        "kept_ratio": statistics.median(load) / statistics.median(kept),
        "fill_s": statistics.median(fill),
        "scan_s": statistics.median(scan),
        "pydicom_s": statistics.median(naive),
        "load_s": statistics.median(load),
        "ratio": statistics.median(load) / statistics.median(plain),
        "pydicom_ratio": statistics.median(load) / statistics.median(naive),
        "volume_mib": volume_bytes / 2**20,
        "peak_mib": peak / 2**20,
        "peak_ratio": peak / volume_bytes,
    }


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
        f"loader threads={dicom_load.LOAD_THREADS}"
    )
    print(
        "slices  plain_read_s  read_kept_s  fill_volume_s  pydicom_s  scan_paths_s  "
        "load_study_s  load/plain  load/kept  load/pydicom  volume_MiB  peak_MiB  peak/volume"
    )
    for n_slices in args.slices:
        r = bench(n_slices, args.runs)
        print(
            f"{n_slices:6d}  {r['plain_s']:12.4f}  {r['kept_s']:11.4f}  {r['fill_s']:13.4f}  "
            f"{r['pydicom_s']:9.4f}  {r['scan_s']:12.4f}  {r['load_s']:12.4f}  "
            f"{r['ratio']:10.1f}  {r['kept_ratio']:9.1f}  {r['pydicom_ratio']:12.2f}  "
            f"{r['volume_mib']:10.1f}  {r['peak_mib']:8.1f}  {r['peak_ratio']:11.2f}"
        )


if __name__ == "__main__":
    main()
