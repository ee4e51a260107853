"""Shared fixtures for the inference tests: synthetic CT series written as DICOM files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

AIR_HU = -1000
BRAIN_HU = 35
SKULL_HU = 1000
MARKER_HU = 600


def phantom_slice_hu(index: int, rows: int = 64, columns: int = 64) -> np.ndarray:
    """Return an int16 head phantom in HU whose rows 1-2 encode ``index`` in binary.

    Bit b of ``index`` sets a 2x2 block of 600 HU at column 2 + 2b, so a test can read the
    slice order from the pixels alone (see :func:`marker_of`).
    """
    y, x = np.mgrid[0:rows, 0:columns]
    cy, cx = (rows - 1) / 2, (columns - 1) / 2
    radius = ((y - cy) / (rows * 0.42)) ** 2 + ((x - cx) / (columns * 0.36)) ** 2
    image = np.full((rows, columns), AIR_HU, dtype=np.int16)
    image[radius <= 1.0] = SKULL_HU
    image[radius <= 0.8] = BRAIN_HU
    for bit in range(12):
        if index >> bit & 1:
            image[1:3, 2 + 2 * bit : 4 + 2 * bit] = MARKER_HU
    return image


def marker_of(slice_hu: np.ndarray) -> int:
    """Read the slice index burnt in by :func:`phantom_slice_hu`."""
    return sum(1 << bit for bit in range(12) if slice_hu[1, 2 + 2 * bit] > 300)


def write_ct_series(
    folder: Path,
    n_slices: int = 6,
    *,
    rows: int = 64,
    columns: int = 64,
    positions_mm: Sequence[float] | None = None,
    spacing_mm: float = 5.0,
    pixel_spacing_mm: float = 3.5,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    tilt_deg: float = 0.0,
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    pixel_representation: int = 0,
    bits_stored: int = 16,
    padding_value: int | None = None,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = ExplicitVRLittleEndian,
    preamble: bool = True,
    names: Sequence[str] | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    series_number: int = 2,
    description: str = "Head 5mm",
    kernel: str | None = None,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    sop_class: str = CTImageStorage,
    modality: str = "CT",
    instance_numbers: Sequence[int] | None = None,
    window: tuple[Any, Any] | None = ("40", "80"),
    charset: str | None = "ISO_IR 100",
    raw_description: bytes | None = None,
    hu_of: Callable[[int], np.ndarray] | None = None,
) -> list[Path]:
    """Write a synthetic axial CT series and return the file paths in slice order.

    ``positions_mm`` are positions along the stacking axis (default ``i * spacing_mm``).
    ``tilt_deg`` tilts the image plane about the x axis while positions move along z, as a
    scanner with gantry tilt writes them. ``slope``/``intercept`` None leaves the tag out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    positions = (
        list(positions_mm)
        if positions_mm is not None
        else [i * spacing_mm for i in range(n_slices)]
    )
    tilt = np.radians(tilt_deg)
    if tilt_deg:
        orientation = (1, 0, 0, 0, float(np.cos(tilt)), float(np.sin(tilt)))
    paths = []
    for index, z in enumerate(positions):
        hu = hu_of(index) if hu_of is not None else phantom_slice_hu(index, rows, columns)
        used_slope = slope if slope is not None else 1.0
        used_intercept = intercept if intercept is not None else 0.0
        stored = np.round((hu.astype(np.float64) - used_intercept) / used_slope)
        if pixel_representation == 1:
            stored_array = stored.astype(np.int16)
        else:
            stored_array = stored.astype(np.uint16)
        if padding_value is not None:
            stored_array[:, :3] = padding_value
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
        sop_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if charset:
            ds.SpecificCharacterSet = charset
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.ImageType = list(image_type)
        ds.PatientName = "SYNTHETIC^TEST"
        ds.PatientID = "SYN-0"
        if raw_description is None:
            ds.SeriesDescription = description
        ds.SeriesNumber = series_number
        ds.InstanceNumber = instance_numbers[index] if instance_numbers else index + 1
        if kernel is not None:
            ds.ConvolutionKernel = kernel
        ds.SliceThickness = f"{spacing_mm:g}"
        # With gantry tilt the table still moves along z, so the positions do too while the
        # image plane is tilted: the stack is sheared.
        ds.ImagePositionPatient = [-100.0, -100.0, z]
        if tilt_deg:
            ds.GantryDetectorTilt = f"{tilt_deg:g}"
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = pixel_representation
        if slope is not None:
            ds.RescaleSlope = f"{slope:g}"
        if intercept is not None:
            ds.RescaleIntercept = f"{intercept:g}"
        if padding_value is not None:
            ds.PixelPaddingValue = padding_value
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        ds.PixelData = stored_array.tobytes()
        if transfer_syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            ds.compress(transfer_syntax, stored_array)
        name = names[index] if names else f"IM{index + 1:04d}.dcm"
        path = folder / name
        if preamble:
            ds.save_as(path, enforce_file_format=True)
        else:
            del ds.file_meta
            pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
        if raw_description is not None:
            _append_raw_description(path, raw_description)
        paths.append(path)
    return paths


def _append_raw_description(path: Path, value: bytes) -> None:
    """Rewrite SeriesDescription as raw bytes, bypassing pydicom's encoding."""
    ds = pydicom.dcmread(path)
    padded = value + (b" " if len(value) % 2 else b"")
    ds.add(pydicom.DataElement(0x0008103E, "LO", padded))
    ds.save_as(path)


@pytest.fixture
def ct_series_factory(tmp_path: Path) -> Callable[..., list[Path]]:
    """Return ``write(subfolder, **options)`` writing a series under this test's tmp_path."""

    def write(subfolder: str = "series", **options: Any) -> list[Path]:
        return write_ct_series(tmp_path / subfolder, **options)

    return write


@pytest.fixture(scope="session")
def large_series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-slice 256x256 series written once per test session."""
    folder = tmp_path_factory.mktemp("large_series")
    write_ct_series(folder, 20, rows=256, columns=256, pixel_spacing_mm=0.9)
    return folder
