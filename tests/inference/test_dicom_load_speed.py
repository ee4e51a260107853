"""The shortcuts that make loading fast give exactly what the general code gives.

The native reader reads a file whose header matches the previous file's layout by comparing
bytes. The header description copies the series' first InstanceInfo. The loader allocates its
arrays aligned or as unwritten mappings, and the scan recognises zip archives from the bytes
it reads anyway. Each test checks one of these against the slow path or against plain values.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID, ImplicitVRLittleEndian

from inference.dicom import headers, load_study, native, scan_paths
from inference.dicom import load as dicom_load
from inference.dicom.headers import HeaderSkip, read_header
from inference.dicom.pixels import HUGE_PAGE_BYTES, empty_aligned, zeros_unwritten
from inference.errors import GeometryError


def rewrite(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def layout_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the files read by the previous file's layout, and those it did not fit."""
    counts = {"matched": 0, "rejected": 0}
    original = native._parse_like_layout

    def counting(layout, data, size_bytes):
        header = original(layout, data, size_bytes)
        counts["matched" if header is not None else "rejected"] += 1
        return header

    monkeypatch.setattr(native, "_parse_like_layout", counting)
    monkeypatch.setattr(native, "_last_layout", None)
    return counts


def full_parse(path: Path) -> native.NativeHeader:
    """Parse ``path`` by walking its elements, with no layout to compare against."""
    saved = native._last_layout
    native._last_layout = None
    try:
        with open(path, "rb") as handle:
            return native.parse_native_header(
                handle, handle.read(native.HEAD_BYTES), os.path.getsize(path)
            )
    finally:
        native._last_layout = saved


def assert_same_header(fast: native.NativeHeader, slow: native.NativeHeader) -> None:
    assert fast._values == slow._values
    assert fast._present == slow._present
    assert fast.file_meta == slow.file_meta
    assert fast.is_implicit_VR == slow.is_implicit_VR
    assert (fast.pixel_data_offset, fast.pixel_data_length) == (
        slow.pixel_data_offset,
        slow.pixel_data_length,
    )


def read_both_ways(monkeypatch: pytest.MonkeyPatch, paths: list[Path]):
    """Describe ``paths`` in order with every shortcut, then each with pydicom alone."""
    fast = [read_header(str(path))[1] for path in paths]
    monkeypatch.setattr(headers, "native_headers_enabled", False)
    slow = [read_header(str(path))[1] for path in paths]
    monkeypatch.setattr(headers, "native_headers_enabled", True)
    return fast, slow


def test_layout_reads_values_of_other_lengths(monkeypatch, ct_series_factory, layout_reads) -> None:
    # UIDs, instance numbers and positions whose text gets longer and shorter, so each
    # file's per-image elements, and the file meta group length, differ in length.
    positions = [0.0, -12.25, 100.125, 7.5, -1234.0625]
    paths = ct_series_factory(
        n_slices=5, positions_mm=positions, instance_numbers=[9, 10, 1000, 7, 123456]
    )
    for index, path in enumerate(paths):
        uid = UID("1.2.826.0.1.3680043.8.498." + "7" * (index * 3 + 1))

        def set_uid(ds: pydicom.Dataset, uid: UID = uid) -> None:
            ds.SOPInstanceUID = uid
            ds.file_meta.MediaStorageSOPInstanceUID = uid

        rewrite(path, set_uid)

    fast, slow = read_both_ways(monkeypatch, paths)
    assert fast == slow
    assert layout_reads == {"matched": 4, "rejected": 0}
    assert [info[0].position_xyz_mm[2] for info in fast] == positions
    assert [info[0].instance_number for info in fast] == [9, 10, 1000, 7, 123456]
    assert fast[4][0].sop_instance_uid.endswith("7" * 13)
    for path in paths:
        with open(path, "rb") as handle:
            header = native.parse_native_header(
                handle, handle.read(native.HEAD_BYTES), os.path.getsize(path)
            )
        assert_same_header(header, full_parse(path))


def test_layout_rejects_changed_shared_value(monkeypatch, ct_series_factory, layout_reads) -> None:
    paths = ct_series_factory(n_slices=3, window=("40", "80"))
    # Same length, other value: only the bytes differ, not the layout of the elements.
    rewrite(paths[1], lambda ds: setattr(ds, "WindowCenter", "35"))
    fast, slow = read_both_ways(monkeypatch, paths)
    assert fast == slow
    assert [info[0].windows[0].center_hu for info in fast] == [40.0, 35.0, 40.0]
    # The second file does not fit the first one's layout, the third does not fit the
    # second's (the layout kept is the last file parsed in full).
    assert layout_reads == {"matched": 0, "rejected": 2}


def test_layout_reads_implicit_vr_series(monkeypatch, ct_series_factory, layout_reads) -> None:
    paths = ct_series_factory(n_slices=4, positions_mm=[0.0, 5.0, 10.0, 15.5])
    for path in paths:
        rewrite(path, lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", ImplicitVRLittleEndian))
    fast, slow = read_both_ways(monkeypatch, paths)
    assert fast == slow
    assert layout_reads == {"matched": 3, "rejected": 0}
    assert fast[3][0].position_xyz_mm == (-100.0, -100.0, 15.5)


def test_layout_rejects_truncated_or_extended_file(ct_series_factory, layout_reads) -> None:
    paths = ct_series_factory(n_slices=3)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-100])
    paths[2].write_bytes(paths[2].read_bytes() + b"\x00" * 8)
    read_header(str(paths[0]))
    with pytest.raises(HeaderSkip) as skip:
        read_header(str(paths[1]))
    assert skip.value.reason == "truncated"
    read_header(str(paths[0]))
    header, infos = read_header(str(paths[2]))
    # Bytes after the pixel data are left to pydicom, as without the layout.
    assert isinstance(header, pydicom.Dataset)
    assert infos[0].pixel_data_offset is not None
    assert infos[0].pixel_data_length == len(data) - infos[0].pixel_data_offset
    # Only the second reading of the first file fits the layout (its own).
    assert layout_reads == {"matched": 1, "rejected": 2}


def test_returned_description_is_a_copy(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3, window=("40", "80"))
    first = read_header(str(paths[0]))[1][0]
    first.windows.append(headers.WindowPreset(500.0, 2000.0, "BONE"))
    first.image_type = ("CHANGED",)
    second = read_header(str(paths[1]))[1][0]
    assert second.windows == [headers.WindowPreset(40.0, 80.0, "")]
    assert second.image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert second.path == str(paths[1])
    assert second.sop_instance_uid != first.sop_instance_uid


def test_zip_signature_in_preamble(ct_series_factory) -> None:
    path = ct_series_factory(n_slices=3)[0]
    data = bytearray(path.read_bytes())
    data[:4] = b"PK\x03\x04"
    path.write_bytes(bytes(data))
    # Without extraction the file is read as the DICOM file it also is; with extraction it is
    # first an archive, as the scan checked before reading headers.
    assert read_header(str(path))[1][0].rows == 64
    with pytest.raises(HeaderSkip) as skip:
        read_header(str(path), archives=True)
    assert skip.value.reason == "archive"


def test_nested_archives_keep_scan_order(ct_series_factory, tmp_path: Path) -> None:
    paths = ct_series_factory(n_slices=3)
    upload = tmp_path / "upload"
    upload.mkdir()
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as archive:
        archive.write(paths[1], "b.dcm")
        archive.writestr("notes.txt", "not dicom")
    with zipfile.ZipFile(upload / "m.zip", "w") as archive:
        archive.write(inner, "inner.zip")
        archive.write(paths[2], "c.dcm")
    shutil.copy(paths[0], upload / "a.dcm")
    (upload / "z.txt").write_text("junk")
    with tempfile.TemporaryDirectory() as archive_dir:
        scan = scan_paths(upload, archive_dir=archive_dir)
        assert scan.chosen is not None
        loaded_paths = [scan.display_path(path) for path in scan.chosen.paths]
    # a.dcm, then the outer archive's files in scan order (shorter names first), each
    # archive's files where the archive stood, then z.txt.
    outer = upload / "m.zip"
    assert loaded_paths == [str(upload / "a.dcm"), f"{outer}/c.dcm", f"{outer}/inner.zip/b.dcm"]
    assert scan.n_files == 5
    assert [(item.reason, Path(item.path).name) for item in scan.skipped] == [
        ("not_dicom", "notes.txt"),
        ("not_dicom", "z.txt"),
    ]


def test_plain_folder_needs_no_temporary_folder(
    monkeypatch, ct_series_factory, tmp_path: Path
) -> None:
    paths = ct_series_factory(n_slices=3)
    created_folders: list[str] = []
    original = tempfile.TemporaryDirectory

    def recording(*args, **kwargs):
        folder = original(*args, **kwargs)
        created_folders.append(folder.name)
        return folder

    monkeypatch.setattr(dicom_load.tempfile, "TemporaryDirectory", recording)
    volume, _ = load_study(paths[0].parent)
    assert volume.shape == (3, 64, 64)
    assert created_folders == []
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in paths:
            handle.write(path, path.name)
    volume, _ = load_study(archive)
    assert volume.shape == (3, 64, 64)
    assert len(created_folders) == 1
    assert not os.path.exists(created_folders[0])


@pytest.mark.parametrize("shape", [(3, 512, 512), (5, 512, 512), (1, 2, 3), (7, 300, 301)])
def test_empty_aligned_starts_on_a_huge_page(shape: tuple[int, ...]) -> None:
    array = empty_aligned(shape, np.float32)
    assert array.shape == shape
    assert array.dtype == np.float32
    assert array.flags.c_contiguous and array.flags.writeable
    if array.nbytes >= 2 * HUGE_PAGE_BYTES:
        assert array.ctypes.data % HUGE_PAGE_BYTES == 0
    array.fill(-1000.0)
    other = empty_aligned(shape, np.float32)
    other.fill(5.0)
    assert np.all(array == -1000.0)


@pytest.mark.parametrize("shape", [(40, 512, 512), (2, 8, 8)])
def test_zeros_unwritten_is_writable_and_false(shape: tuple[int, ...]) -> None:
    mask = zeros_unwritten(shape)
    assert mask.shape == shape and mask.dtype == np.bool_
    assert not mask.any()
    mask[-1, -1, -1] = True
    mask[0] |= True
    assert int(mask.sum()) == 1 + shape[1] * shape[2]
    assert not zeros_unwritten(shape).any()


def test_padding_mask_marks_padding(ct_series_factory) -> None:
    paths = ct_series_factory(
        n_slices=3, rows=512, columns=512, pixel_representation=1, padding_value=-2000
    )
    volume, _ = load_study(paths[0].parent)
    assert volume.padding_mask is not None
    # write_ct_series pads the first three columns of every slice.
    assert volume.padding_mask[:, :, :3].all()
    assert int(volume.padding_mask.sum()) == 3 * 512 * 3
    assert np.all(volume.hu[:, :, :3] == -1000.0)


def test_other_pixel_spacing_is_named(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=4)
    rewrite(paths[2], lambda ds: setattr(ds, "PixelSpacing", [3.6, 3.5]))
    with pytest.raises(GeometryError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "mixed_matrix"
    assert "IM0003.dcm" in error.value.message
    assert "IM0001.dcm" not in error.value.message.split(":")[0]
