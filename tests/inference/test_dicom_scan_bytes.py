"""Header scan of files held in memory: the same records and skip reasons as the scan on disk."""

from __future__ import annotations

import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ImplicitVRLittleEndian

from inference.dicom import ScanResult, headers, scan_buffers, scan_paths
from inference.dicom.headers import HeaderSkip, read_header, read_header_bytes
from inference.dicom.scan import iter_files
from tests.inference.conftest import write_ct_series
from tests.shared_data import CASES_DIR, PHILIPS_STUDY_DIR, require


def file_list(root: Path) -> list[str]:
    return list(iter_files([root]))


def scan_from_memory(root: Path, keep_on_disk: Collection[str] = ()) -> ScanResult:
    """Scan every file under ``root`` from its bytes, except those in ``keep_on_disk``."""
    paths = file_list(root)
    buffers = {path: Path(path).read_bytes() for path in paths if path not in keep_on_disk}
    return scan_buffers(paths, buffers)


def assert_same_scan(from_memory: ScanResult, from_disk: ScanResult) -> None:
    assert from_memory.to_dict() == from_disk.to_dict()
    assert from_memory.n_files == from_disk.n_files
    assert [item.to_dict() for item in from_memory.skipped] == [
        item.to_dict() for item in from_disk.skipped
    ]
    assert [series.paths for series in from_memory.series] == [
        series.paths for series in from_disk.series
    ]
    memory_instances = [vars(item) for series in from_memory.series for item in series.instances]
    disk_instances = [vars(item) for series in from_disk.series for item in series.instances]
    assert memory_instances == disk_instances


SHARED_CASE_FOLDERS = (
    sorted(path.name for path in CASES_DIR.iterdir() if path.is_dir()) if CASES_DIR.is_dir() else []
)


@pytest.mark.parametrize("name", SHARED_CASE_FOLDERS)
def test_shared_case_scans_alike_from_bytes(name: str) -> None:
    root = require(CASES_DIR / name)

    from_disk = scan_paths(file_list(root))
    from_memory = scan_from_memory(root)

    assert_same_scan(from_memory, from_disk)


def test_philips_study_scans_alike_from_bytes() -> None:
    root = require(PHILIPS_STUDY_DIR)

    from_disk = scan_paths(file_list(root))
    from_memory = scan_from_memory(root)

    assert from_disk.chosen is not None
    assert_same_scan(from_memory, from_disk)


def test_pydicom_headers_scan_alike_from_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_ct_series(tmp_path / "s", 6)
    # Every header goes through pydicom, with deferred values read back from the buffer.
    monkeypatch.setattr(headers, "native_headers_enabled", False)
    monkeypatch.setattr(headers, "DEFER_SIZE_BYTES", 16)

    from_disk = scan_paths(paths[0].parent)
    from_memory = scan_from_memory(paths[0].parent)

    assert len(from_disk.series) == 1
    assert from_disk.series[0].n_instances == 6
    assert_same_scan(from_memory, from_disk)


@pytest.mark.parametrize(
    "options",
    [{"preamble": False}, {"transfer_syntax": ImplicitVRLittleEndian}],
    ids=["no_preamble", "implicit_vr"],
)
def test_other_encodings_scan_alike_from_bytes(tmp_path: Path, options: dict[str, Any]) -> None:
    paths = write_ct_series(tmp_path / "s", 4, **options)

    from_disk = scan_paths(paths[0].parent)
    from_memory = scan_from_memory(paths[0].parent)

    assert from_disk.chosen is not None
    assert from_disk.chosen.n_instances == 4
    assert_same_scan(from_memory, from_disk)


def test_mixed_memory_and_disk_keep_order(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "s", 5)
    copy = paths[0].parent / "copy_of_first.dcm"
    shutil.copyfile(paths[0], copy)
    # The copy on disk is found to be a duplicate of the original in memory.
    on_disk = {str(copy), str(paths[3])}

    from_disk = scan_paths(paths[0].parent)
    from_memory = scan_from_memory(paths[0].parent, keep_on_disk=on_disk)

    assert [item.reason for item in from_disk.skipped] == ["duplicate"]
    assert_same_scan(from_memory, from_disk)


def test_buffer_path_need_not_exist(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "s", 3)
    virtual = [str(tmp_path / "nowhere" / f"{index}.dcm") for index in range(3)]
    buffers = {name: path.read_bytes() for name, path in zip(virtual, paths, strict=True)}

    scan = scan_buffers(virtual, buffers)

    assert scan.skipped == []
    assert scan.chosen is not None
    assert scan.chosen.paths == virtual


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"PK\x03\x04" + b"\x00" * 40, "archive"),
        (b"just some text, no DICOM here", "not_dicom"),
    ],
    ids=["empty", "zip", "text"],
)
def test_bytes_skip_reason_matches_disk(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "file.dcm"
    path.write_bytes(content)

    with pytest.raises(HeaderSkip) as on_disk:
        read_header(str(path))
    with pytest.raises(HeaderSkip) as in_memory:
        read_header_bytes(str(path), content)

    assert on_disk.value.reason == reason
    assert in_memory.value.reason == reason
    assert in_memory.value.detail == on_disk.value.detail


@pytest.mark.parametrize("keep", [0.25, 0.6, 0.95], ids=["head", "middle", "pixels"])
def test_truncated_bytes_match_disk(tmp_path: Path, keep: float) -> None:
    original = write_ct_series(tmp_path / "s", 1)[0].read_bytes()
    cut = tmp_path / "cut" / "cut.dcm"
    cut.parent.mkdir()
    cut.write_bytes(original[: int(len(original) * keep)])

    from_disk = scan_paths(cut.parent)
    from_memory = scan_from_memory(cut.parent)

    assert len(from_disk.skipped) + sum(s.n_instances for s in from_disk.series) == 1
    assert_same_scan(from_memory, from_disk)
