"""Header-only de-identification: the pixel data element is copied through byte for byte.

Each test compares the fast path with a whole-file parse of the same input, so a difference in
the pixels, the header or the UIDs fails here before it reaches the stored files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from tests.webapp.test_ingest_support import write_study
from webapp.ingest.deid import DeidentifiedInstance, Deidentifier, pixel_data_end

SHARED_CASES = Path(__file__).resolve().parents[3] / "shared" / "cases"
PATIENT_NAME = "SANCHO^PANZA"
PIXEL_TAG = b"\xe0\x7f\x10\x00"


def identified_file(path: Path, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Return ``path`` with a patient name and id, encoded in ``syntax`` (little endian)."""
    dataset = pydicom.dcmread(path)
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = "MRN-31415926"
    dataset.file_meta.TransferSyntaxUID = UID(syntax)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pixel_element(data: bytes) -> bytes:
    """Return the bytes from the (last) top-level pixel data tag to the end of the file."""
    return data[data.rindex(PIXEL_TAG) :]


def whole_file_reference(deidentifier: Deidentifier, data: bytes) -> bytes:
    """De-identify by parsing and re-encoding everything (the path before the fast one)."""
    dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    deidentifier.apply(dataset)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def check_readable(result: DeidentifiedInstance, original: bytes) -> pydicom.Dataset:
    dataset = pydicom.dcmread(io.BytesIO(result.data))
    assert str(dataset.PatientName) == "CASE-7"
    assert str(dataset.PatientID) == "CASE-7"
    assert b"SANCHO" not in result.data
    assert b"31415926" not in result.data
    reference = pydicom.dcmread(io.BytesIO(original))
    np.testing.assert_array_equal(dataset.pixel_array, reference.pixel_array)
    return dataset


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_native_pixels_copied_unchanged(tmp_path: Path, syntax: str) -> None:
    (path,) = write_study(tmp_path, 1)
    original = identified_file(path, syntax)
    assert pydicom.dcmread(io.BytesIO(original)).original_encoding[0] == (
        syntax == ImplicitVRLittleEndian
    )
    deidentifier = Deidentifier("5eed" * 16, "CASE-7")

    result = deidentifier.deidentify_bytes(original)

    assert len(result.pixels) > 64 * 64 * 2, "the pixel element should be passed through"
    assert bytes(result.pixels) == pixel_element(original)
    assert result.data == whole_file_reference(deidentifier, original)
    dataset = check_readable(result, original)
    assert dataset.file_meta.TransferSyntaxUID == syntax
    assert result.size == len(result.data)


def test_file_without_preamble_gets_one(tmp_path: Path) -> None:
    (path,) = write_study(tmp_path, 1, transfer_syntax=ImplicitVRLittleEndian, preamble=False)
    original = path.read_bytes()
    assert original[128:132] != b"DICM"
    dataset = pydicom.dcmread(io.BytesIO(original), force=True)
    dataset.PatientName = PATIENT_NAME
    raw = io.BytesIO()
    dataset.save_as(raw, implicit_vr=True, little_endian=True)
    original = raw.getvalue()

    result = Deidentifier("5eed" * 16, "CASE-7").deidentify_bytes(original)

    assert result.data[128:132] == b"DICM"
    assert bytes(result.pixels) == pixel_element(original)
    read_back = pydicom.dcmread(io.BytesIO(result.data))
    assert read_back.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert read_back.PatientName == "CASE-7"
    reference = pydicom.dcmread(path, force=True)
    reference.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    np.testing.assert_array_equal(read_back.pixel_array, reference.pixel_array)


def test_encapsulated_pixels_are_copied_unchanged(tmp_path: Path) -> None:
    (path,) = write_study(tmp_path, 1)
    dataset = pydicom.dcmread(path)
    dataset.compress(RLELossless)
    dataset.PatientName = PATIENT_NAME
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    original = buffer.getvalue()
    deidentifier = Deidentifier("5eed" * 16, "CASE-7")

    result = deidentifier.deidentify_bytes(original)

    assert bytes(result.pixels) == pixel_element(original)
    assert result.data == whole_file_reference(deidentifier, original)
    read_back = pydicom.dcmread(io.BytesIO(result.data))
    assert read_back.file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(read_back.pixel_array, pydicom.dcmread(path).pixel_array)


@pytest.mark.skipif(not (SHARED_CASES / "C14").is_dir(), reason="shared cases not present")
def test_shared_jpeg_lossless_file_keeps_its_compressed_fragments() -> None:
    source = SHARED_CASES / "C14" / "jpeg_lossless_sv1" / "IM0002.dcm"
    original = source.read_bytes()

    result = Deidentifier("5eed" * 16, "CASE-7").deidentify_bytes(original)

    assert bytes(result.pixels) == pixel_element(original)
    assert pixel_data_end(original, len(original) - len(result.pixels), False) == len(original)
    read_back = pydicom.dcmread(io.BytesIO(result.data))
    assert read_back.PatientName == "CASE-7"
    assert read_back.PixelData == pydicom.dcmread(source).PixelData


def test_element_after_pixels_is_removed(tmp_path: Path) -> None:
    """A private element in group 7FE1 follows the pixel data; copying the tail would leak it."""
    (path,) = write_study(tmp_path, 1)
    dataset = pydicom.dcmread(path)
    dataset.PatientName = PATIENT_NAME
    dataset.private_block(0x7FE1, "CEHT TAIL", create=True).add_new(0x01, "LO", PATIENT_NAME)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    original = buffer.getvalue()
    assert original.rindex(b"SANCHO") > original.rindex(PIXEL_TAG)

    result = Deidentifier("5eed" * 16, "CASE-7").deidentify_bytes(original)

    assert result.pixels == b"", "the file should be re-encoded whole"
    check_readable(result, original)


def test_big_endian_file_is_reencoded_whole(tmp_path: Path) -> None:
    (path,) = write_study(tmp_path, 1)
    dataset = pydicom.dcmread(path)
    dataset.PatientName = PATIENT_NAME
    dataset.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    # pydicom writes OW values as given, so the pixels are swapped to big endian first.
    dataset.PixelData = dataset.pixel_array.byteswap().tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, implicit_vr=False, little_endian=False, force_encoding=True)
    original = buffer.getvalue()
    assert pydicom.dcmread(io.BytesIO(original)).original_encoding == (False, False)

    result = Deidentifier("5eed" * 16, "CASE-7").deidentify_bytes(original)

    assert result.pixels == b""
    check_readable(result, original)


def test_same_seed_gives_same_uids_on_both_paths(tmp_path: Path) -> None:
    """Fast and whole-file paths must agree, or re-uploads would stop being duplicates."""
    first, second = write_study(tmp_path, 2)
    deidentifier = Deidentifier("5eed" * 16, "CASE-7")
    fast = deidentifier.deidentify_bytes(identified_file(first))
    dataset = pydicom.dcmread(first)
    whole = pydicom.dcmread(io.BytesIO(whole_file_reference(deidentifier, first.read_bytes())))
    other = deidentifier.deidentify_bytes(identified_file(second))

    assert fast.sop_instance_uid == whole.SOPInstanceUID != dataset.SOPInstanceUID
    assert fast.study_instance_uid == other.study_instance_uid == whole.StudyInstanceUID
    assert fast.series_instance_uid == other.series_instance_uid != dataset.SeriesInstanceUID
    assert Deidentifier("0ther" * 12, "CASE-7").deidentify_bytes(
        identified_file(first)
    ).sop_instance_uid not in (fast.sop_instance_uid, dataset.SOPInstanceUID)


def test_pixel_data_end_rejects_truncated_and_foreign_elements() -> None:
    native = PIXEL_TAG + b"OW\x00\x00" + (8).to_bytes(4, "little") + bytes(8)
    assert pixel_data_end(native, 0, False) == len(native)
    assert pixel_data_end(native[:-1], 0, False) is None
    assert pixel_data_end(b"\x10\x00\x10\x00" + native[4:], 0, False) is None
    implicit = PIXEL_TAG + (4).to_bytes(4, "little") + bytes(4)
    assert pixel_data_end(implicit, 0, True) == len(implicit)

    item = b"\xfe\xff\x00\xe0"
    fragments = (
        PIXEL_TAG
        + b"OB\x00\x00\xff\xff\xff\xff"
        + item
        + bytes(4)
        + item
        + (6).to_bytes(4, "little")
        + bytes(6)
        + b"\xfe\xff\xdd\xe0"
        + bytes(4)
    )
    assert pixel_data_end(fragments, 0, False) == len(fragments)
    assert pixel_data_end(fragments[:-8], 0, False) is None
    broken = fragments.replace(item + (6).to_bytes(4, "little"), b"\x08\x00\x10\x00" + bytes(4))
    assert pixel_data_end(broken, 0, False) is None
