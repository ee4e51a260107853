"""Faults in the values that map stored pixels to HU: rescale tags, sign, bit layout, fill.

Every case is written with pydicom into tmp_path. Header faults are read both by the native
header reader and by pydicom alone, because both must give the same result.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from inference.dicom import headers, load_study, load_volume, scan_paths
from inference.errors import PixelDataError
from tests.inference.conftest import AIR_HU, BRAIN_HU, SKULL_HU, marker_of, phantom_slice_hu

CENTER = (32, 32)
CORNER = (0, 63)


def rewrite(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def patch_ds(path: Path, tag: int, raw: bytes) -> None:
    """Replace the bytes of the DS value of ``tag``, as a broken writer would store them.

    pydicom raises an error when writing such values, so the explicit VR little endian file is patched.
    """
    data = path.read_bytes()
    start = data.index(struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"DS")
    (length,) = struct.unpack_from("<H", data, start + 6)
    padded = raw + (b" " if len(raw) % 2 else b"")
    path.write_bytes(
        data[: start + 6] + struct.pack("<H", len(padded)) + padded + data[start + 8 + length :]
    )


INTERCEPT_TAG = 0x00281052
SLOPE_TAG = 0x00281053


@pytest.fixture(params=[True, False], ids=["native_headers", "pydicom_headers"])
def header_reader(request, monkeypatch) -> bool:
    monkeypatch.setattr(headers, "native_headers_enabled", request.param)
    return request.param


def notes_by_code(volume) -> dict[str, str]:
    return {note.code: note.message for note in volume.notes}


# malformed rescale values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "raw", "slope", "intercept", "expected_text"),
    [
        (INTERCEPT_TAG, b"-1024\\-1024", 1.0, -1024.0, "2 equal values"),
        (INTERCEPT_TAG, "\u22121024".encode(), 1.0, -1024.0, "non-ASCII minus sign"),
        (INTERCEPT_TAG, "\u20131024".encode(), 1.0, -1024.0, "non-ASCII minus sign"),
        (SLOPE_TAG, b"2,5", 2.5, -1000.0, "decimal comma"),
        (SLOPE_TAG, b"0,25", 0.25, -1024.0, "decimal comma"),
    ],
)
def test_unambiguous_malformed_rescale_is_read(
    ct_series_factory, header_reader, tag, raw, slope, intercept, expected_text
) -> None:
    paths = ct_series_factory(n_slices=4, slope=slope, intercept=intercept)
    for path in paths:
        patch_ds(path, tag, raw)
    volume, _ = load_study(paths[0].parent)
    assert volume.hu[0][CENTER] == pytest.approx(BRAIN_HU)
    assert volume.hu[0][CORNER] == pytest.approx(AIR_HU)
    assert float(volume.hu.max()) == pytest.approx(SKULL_HU)
    assert [marker_of(s) for s in volume.hu] == [0, 1, 2, 3]
    notes = notes_by_code(volume)
    assert "rescale_repaired" in notes
    assert expected_text in notes["rescale_repaired"]
    assert "rescale_missing" not in notes


@pytest.mark.parametrize(
    ("tag", "raw", "keyword"),
    [
        (INTERCEPT_TAG, b"-1024\\0", "RescaleIntercept"),
        (INTERCEPT_TAG, b"-1,024", "RescaleIntercept"),
        (INTERCEPT_TAG, b"minus 1024", "RescaleIntercept"),
        (SLOPE_TAG, b"nan", "RescaleSlope"),
        (SLOPE_TAG, b"inf", "RescaleSlope"),
    ],
)
def test_unreadable_rescale_raises_invalid_rescale(
    ct_series_factory, header_reader, tag, raw, keyword
) -> None:
    paths = ct_series_factory(n_slices=3)
    for path in paths:
        patch_ds(path, tag, raw)
    with pytest.raises(PixelDataError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "invalid_rescale"
    assert error.value.message.startswith("IM000")
    assert keyword in error.value.message
    assert raw.decode() in error.value.message
    assert "re-export" in error.value.message
    assert error.value.path is not None and error.value.path.endswith(".dcm")


def test_missing_intercept_with_stored_hu_is_a_warning(ct_series_factory, header_reader) -> None:
    # Signed storage of HU itself: the absent intercept really is 0.
    paths = ct_series_factory(n_slices=3, intercept=None, pixel_representation=1)
    volume, _ = load_study(paths[0].parent)
    assert volume.hu[0][CENTER] == pytest.approx(BRAIN_HU)
    assert volume.hu[0][CORNER] == pytest.approx(AIR_HU)
    notes = notes_by_code(volume)
    assert "RescaleIntercept absent" in notes["rescale_missing"]
    assert "intercept 0 were assumed" in notes["rescale_missing"]


def test_missing_slope_with_intercept_is_a_warning(ct_series_factory, header_reader) -> None:
    paths = ct_series_factory(n_slices=3, slope=None, intercept=-1024.0)
    volume, _ = load_study(paths[0].parent)
    assert volume.hu[0][CENTER] == pytest.approx(BRAIN_HU)
    assert "RescaleSlope absent" in notes_by_code(volume)["rescale_missing"]


@pytest.mark.parametrize("empty", [False, True], ids=["absent", "empty"])
def test_dropped_intercept_that_leaves_no_air_is_rejected(
    ct_series_factory, header_reader, empty: bool
) -> None:
    # Stored = HU + 1024: assuming intercept 0 would read air as +24 HU.
    paths = ct_series_factory(n_slices=3, intercept=-1024.0)
    for path in paths:
        if empty:
            patch_ds(path, INTERCEPT_TAG, b"")
        else:
            rewrite(path, lambda ds: delattr(ds, "RescaleIntercept"))
    expected_fault = "RescaleIntercept empty" if empty else "RescaleIntercept absent"
    with pytest.raises(PixelDataError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "implausible_hu"
    assert expected_fault in error.value.message
    assert "lowest 24 HU" in error.value.message


def test_zero_slope_is_assumed_one(ct_series_factory, header_reader) -> None:
    paths = ct_series_factory(n_slices=3)
    for path in paths:
        patch_ds(path, SLOPE_TAG, b"0")
    volume, _ = load_study(paths[0].parent)
    assert volume.hu[0][CENTER] == pytest.approx(BRAIN_HU)
    assert "RescaleSlope 0 (invalid)" in notes_by_code(volume)["rescale_missing"]


def test_malformed_rescale_scans_the_same_with_both_readers(monkeypatch, ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3)
    patch_ds(paths[0], INTERCEPT_TAG, b"-1024\\-1024")
    patch_ds(paths[1], INTERCEPT_TAG, b"")
    patch_ds(paths[2], SLOPE_TAG, b"1,0")
    fast = scan_paths(paths[0].parent)
    monkeypatch.setattr(headers, "native_headers_enabled", False)
    slow = scan_paths(paths[0].parent)
    assert fast.series == slow.series
    encodings = [info.encoding for info in fast.series[0].instances]
    assert [e.rescale_intercept for e in encodings] == [-1024.0, 0.0, -1024.0]
    assert [e.rescale_missing for e in encodings] == [(), ("RescaleIntercept empty",), ()]
    assert encodings[2].rescale_note == "RescaleSlope '1,0' read as 1 (it has a decimal comma)"


# sign mislabelled on a few pixels -----------------------------------------------------


def head_filling_the_field(index: int) -> np.ndarray:
    """A head that fills the field: only 2x2 corners (0.4% of pixels) are air."""
    image = np.full((64, 64), BRAIN_HU, dtype=np.int16)
    image[0, :] = image[-1, :] = image[:, 0] = image[:, -1] = SKULL_HU
    for rows in (slice(0, 2), slice(62, 64)):
        for columns in (slice(0, 2), slice(62, 64)):
            image[rows, columns] = AIR_HU
    return image


def test_sign_mislabel_on_few_pixels_is_rejected(ct_series_factory) -> None:
    paths = ct_series_factory(
        n_slices=3, intercept=0.0, pixel_representation=1, hu_of=head_filling_the_field
    )
    for path in paths:
        rewrite(path, lambda ds: setattr(ds, "PixelRepresentation", 0))
    with pytest.raises(PixelDataError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "implausible_hu"
    assert "PixelRepresentation (0028,0103) says unsigned" in error.value.message
    assert "-1000 to 1000 HU" in error.value.message


def test_hot_pixel_is_still_capped(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3, intercept=-1024.0)
    rewrite(paths[1], lambda ds: setattr(ds, "PixelData", _with_pixel(ds, CENTER, 65535)))
    volume, _ = load_study(paths[0].parent)
    assert volume.hu[1][CENTER] == pytest.approx(30710.0)
    assert volume.hu[1][CORNER] == pytest.approx(AIR_HU)
    assert "outlier_capped" in notes_by_code(volume)


def _with_pixel(ds: pydicom.Dataset, where: tuple[int, int], value: int) -> bytes:
    pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(64, 64).copy()
    pixels[where] = value
    return pixels.tobytes()


# signed 12-bit data with sign-extended high bits ---------------------------------------


@pytest.mark.parametrize("sign_extended", [True, False], ids=["sign_extended", "high_bits_zero"])
def test_signed_12_bit_data_is_read(ct_series_factory, sign_extended: bool) -> None:
    paths = ct_series_factory(n_slices=3, intercept=0.0, pixel_representation=1, bits_stored=12)
    if not sign_extended:
        for path in paths:
            rewrite(
                path,
                lambda ds: setattr(
                    ds,
                    "PixelData",
                    (np.frombuffer(ds.PixelData, dtype=np.uint16) & 0x0FFF).tobytes(),
                ),
            )
    volume, _ = load_study(paths[0].parent)
    assert volume.hu[0][CENTER] == pytest.approx(BRAIN_HU)
    assert volume.hu[0][CORNER] == pytest.approx(AIR_HU)
    assert float(volume.hu.max()) == pytest.approx(SKULL_HU)
    assert [marker_of(s) for s in volume.hu] == [0, 1, 2]


# one fill value far below air, without PixelPaddingValue ------------------------------


def outside_field_filled(index: int) -> np.ndarray:
    image = phantom_slice_hu(index).astype(np.int32)
    y, x = np.mgrid[0:64, 0:64]
    image[np.hypot(y - 31.5, x - 31.5) > 30] = -40000  # replaced by the storage minimum
    return image


@pytest.mark.parametrize(("intercept", "fill_hu"), [(0.0, -32768), (-1024.0, -33792)])
def test_storage_minimum_outside_the_field_is_padding(
    ct_series_factory, intercept: float, fill_hu: int
) -> None:
    def hu_of(index: int) -> np.ndarray:
        image = outside_field_filled(index)
        image[image == -40000] = fill_hu
        return image

    paths = ct_series_factory(n_slices=3, intercept=intercept, pixel_representation=1, hu_of=hu_of)
    volume, _ = load_study(paths[0].parent)
    assert volume.hu[0][0, 0] == pytest.approx(AIR_HU)
    assert bool(volume.padding_mask[0][0, 0])
    assert not bool(volume.padding_mask[0][CENTER])
    assert volume.hu[0][CENTER] == pytest.approx(BRAIN_HU)
    notes = notes_by_code(volume)
    assert f"single value {fill_hu} HU" in notes["padding_fill_value"]


def test_spread_values_far_below_air_are_still_rejected(ct_series_factory) -> None:
    rng = np.random.default_rng(0)

    def hu_of(index: int) -> np.ndarray:
        image = phantom_slice_hu(index).astype(np.int32)
        image[:20, :] = rng.integers(-32768, -9000, size=(20, 64))
        return image

    paths = ct_series_factory(n_slices=3, intercept=0.0, pixel_representation=1, hu_of=hu_of)
    with pytest.raises(PixelDataError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "implausible_hu"


# deflated transfer syntax --------------------------------------------------------------


def test_deflated_explicit_vr_series_is_read(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=4)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    scan = scan_paths(paths[0].parent)
    assert scan.skipped == []
    volume = load_volume(scan.chosen)
    assert volume.shape == (4, 64, 64)
    assert volume.hu[0][CENTER] == pytest.approx(BRAIN_HU)
    assert volume.hu[0][CORNER] == pytest.approx(AIR_HU)
    assert [marker_of(s) for s in volume.hu] == [0, 1, 2, 3]


# a file removed between scan and load -------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["native", "rle"])
def test_file_removed_after_scan_is_a_typed_error(ct_series_factory, compressed: bool) -> None:
    options = {"transfer_syntax": RLELossless} if compressed else {}
    paths = ct_series_factory(n_slices=4, **options)
    scan = scan_paths(paths[0].parent)
    paths[2].unlink()
    with pytest.raises(PixelDataError) as error:
        load_volume(scan.chosen)
    assert error.value.code == "file_unreadable"
    assert error.value.message.startswith("IM0003.dcm can no longer be read")
    assert "Scan the study again" in error.value.message
    assert error.value.path == str(paths[2])


# lossy compression recorded in the header of an uncompressed file ---------------------------


def test_lossy_history_of_uncompressed_file_is_a_warning(ct_series_factory, header_reader) -> None:
    paths = ct_series_factory(n_slices=3)
    for path in paths:

        def mark_lossy(ds: pydicom.Dataset) -> None:
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionRatio = "10"
            ds.LossyImageCompressionMethod = "ISO_10918_1"

        rewrite(path, mark_lossy)
    volume, _ = load_study(paths[0].parent)
    message = notes_by_code(volume)["lossy_compression"]
    assert "compressed lossily before it was stored" in message
    assert "method ISO_10918_1, ratio 10" in message


def test_lossy_flag_00_adds_no_warning(ct_series_factory, header_reader) -> None:
    paths = ct_series_factory(n_slices=3)
    for path in paths:
        rewrite(path, lambda ds: setattr(ds, "LossyImageCompression", "00"))
    volume, _ = load_study(paths[0].parent)
    assert "lossy_compression" not in notes_by_code(volume)
