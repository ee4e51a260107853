"""Faults in the input files themselves: encrypted zips, pipes, partial extraction."""

from __future__ import annotations

import json
import os
import threading
import zipfile
from pathlib import Path

import pytest

from inference.cli import main
from inference.dicom import archive, load_study, scan_paths
from inference.errors import DicomReadError, GeometryError, NoUsableSeriesError
from tests.inference.conftest import write_ct_series


def encrypted_zip(tmp_path: Path) -> Path:
    """Zip six slices and set the 'encrypted' flag, as a password-protected export has it."""
    paths = write_ct_series(tmp_path / "src", 6)
    target = tmp_path / "upload" / "secret.zip"
    target.parent.mkdir()
    with zipfile.ZipFile(target, "w") as handle:
        for path in paths:
            handle.write(path, path.name)
    raw = bytearray(target.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        index = 0
        while (index := raw.find(signature, index)) >= 0:
            raw[index + flag_offset] |= 1
            index += 4
    target.write_bytes(bytes(raw))
    return target


# password-protected zip -----------------------------------------------------------------


def test_encrypted_zip_is_skipped_with_its_reason(tmp_path: Path) -> None:
    upload = encrypted_zip(tmp_path)
    scan = scan_paths(upload, archive_dir=tmp_path / "extracted")
    assert scan.skipped_by_reason() == {"archive": 1}
    assert "password-protected" in scan.skipped[0].detail
    assert "upload it without a password" in scan.skipped[0].detail
    assert list((tmp_path / "extracted").rglob("*.dcm")) == []


def test_encrypted_zip_load_names_the_archive_reason(tmp_path: Path) -> None:
    upload = encrypted_zip(tmp_path)
    with pytest.raises(NoUsableSeriesError) as error:
        load_study(upload)
    assert "secret.zip: the archive is password-protected" in error.value.message


def test_cli_encrypted_zip_one_line_error(tmp_path: Path, capsys) -> None:
    upload = encrypted_zip(tmp_path)
    status = main(["inspect", str(upload), "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert status == 1
    assert report["error"]["code"] == "no_usable_series"
    assert "Traceback" not in captured.err
    assert report["scan"]["skipped"][0]["reason"] == "archive"


def test_extract_zip_raises_typed_error_for_encryption(tmp_path: Path) -> None:
    upload = encrypted_zip(tmp_path)
    with pytest.raises(DicomReadError) as error:
        archive.extract_zip(str(upload), tmp_path / "out")
    assert error.value.code == "archive_encrypted"
    assert not (tmp_path / "out").exists()


# rejected extraction leaves nothing behind ------------------------------------------


def test_archive_over_the_limit_leaves_no_partial_output(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "src", 6)
    upload = tmp_path / "study.zip"
    with zipfile.ZipFile(upload, "w") as handle:
        for path in paths:
            handle.write(path, path.name)
    with pytest.raises(DicomReadError) as error:
        archive.extract_zip(str(upload), tmp_path / "out", max_bytes=20_000)
    assert error.value.code == "archive_too_large"
    assert not (tmp_path / "out").exists()


# a named pipe among the files ----------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_skipped_without_opening_it(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    write_ct_series(folder, 4)
    os.mkfifo(folder / "a_fifo.dcm")
    assert archive.is_zip(str(folder / "a_fifo.dcm")) is False
    result: dict[str, object] = {}

    def scan() -> None:
        result["scan"] = scan_paths(folder, archive_dir=tmp_path / "extracted")

    # Opening the pipe for reading would block forever; a thread keeps the test from hanging.
    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "scan_paths blocked on the named pipe"
    found = result["scan"]
    assert [(Path(item.path).name, item.reason) for item in found.skipped] == [
        ("a_fifo.dcm", "unreadable")
    ]
    assert found.chosen is not None
    assert found.chosen.n_instances == 4


# one bad zip entry, nested archives, the shared extraction budget --------------------------


def zip_of(target: Path, entries: dict[str, bytes | Path]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as handle:
        for name, content in entries.items():
            if isinstance(content, Path):
                handle.write(content, name)
            else:
                handle.writestr(name, content)
    return target


def test_one_unwritable_zip_entry_keeps_the_others(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "src", 6)
    entries: dict[str, bytes | Path] = {f"study/{p.name}": p for p in paths}
    entries["study/x"] = b"a file"
    entries["study/x/y"] = b"a file below a file"
    upload = zip_of(tmp_path / "upload" / "study.zip", entries)
    volume, scan = load_study(upload)
    assert volume.shape[0] == 6
    assert [
        (Path(item.path).name, item.reason) for item in scan.skipped if item.reason != "not_dicom"
    ] == [("y", "archive_entry")]
    detail = next(item.detail for item in scan.skipped if item.reason == "archive_entry")
    assert "the other entries were extracted" in detail


def test_archive_nested_too_deep_says_so(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "src", 4)
    inner = zip_of(tmp_path / "z" / "l3.zip", {p.name: p for p in paths})
    middle = zip_of(tmp_path / "z" / "l2.zip", {"l3.zip": inner})
    outer = zip_of(tmp_path / "upload" / "l1.zip", {"l2.zip": middle})
    with pytest.raises(NoUsableSeriesError) as error:
        load_study(outer)
    assert "nested more than 2 archives deep" in error.value.message
    assert "upload the inner archive" in error.value.message


def test_nested_archives_share_one_byte_budget(tmp_path: Path, monkeypatch) -> None:
    inner_zips = {
        f"part{k}.zip": zip_of(tmp_path / "z" / f"part{k}.zip", {"zeros.bin": bytes(300_000)})
        for k in range(4)
    }
    outer = zip_of(tmp_path / "upload" / "outer.zip", inner_zips)
    monkeypatch.setattr(archive, "MAX_EXTRACTED_BYTES", 1_000_000)
    scan = scan_paths(outer, archive_dir=tmp_path / "extracted")
    extracted = sum(p.stat().st_size for p in (tmp_path / "extracted").rglob("zeros.bin"))
    assert extracted <= 1_000_000
    too_large = [item for item in scan.skipped if item.reason == "archive"]
    assert len(too_large) == 1
    assert "exceeds 0.0 GiB for one upload (nested archives included)" in too_large[0].detail


# truncated files -------------------------------------------------------------------------


def test_truncated_files_are_named_truncated(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    paths = write_ct_series(folder, 6)
    data = paths[5].read_bytes()
    pixel_tag = data.index(b"\xe0\x7f\x10\x00")
    paths[5].write_bytes(data[:pixel_tag])
    paths[4].write_bytes(data[:500])
    volume, scan = load_study(folder)
    reasons = {Path(item.path).name: item.reason for item in scan.skipped}
    assert reasons == {"IM0005.dcm": "truncated", "IM0006.dcm": "truncated"}
    assert volume.shape[0] == 4
    notes = {note.code: note.message for note in volume.notes}
    assert "2 truncated file(s) left out (IM0005.dcm, IM0006.dcm)" in notes["truncated_files"]


def test_missing_slice_error_names_the_truncated_file(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    paths = write_ct_series(folder, 6)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 1000])
    with pytest.raises(GeometryError) as error:
        load_study(folder)
    assert error.value.code == "missing_slices"
    assert "1 file(s) of this series are truncated" in error.value.message
    assert "IM0003.dcm: pixel data needs 8192 bytes" in error.value.message


# terminal control characters in the text report -------------------------------------------


def test_inspect_text_escapes_control_characters(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "s"
    write_ct_series(folder, 4, description="Head\x1b[2J\rFAKE\nline")
    (folder / "junk\x1b]0;title\x07.txt").write_text("not dicom")
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\r" not in out
    assert "junk\\x1b]0;title\\x07.txt" in out


def test_truncated_last_slice_is_reported_on_its_series(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    paths = write_ct_series(folder, 6)
    data = paths[5].read_bytes()
    paths[5].write_bytes(data[: len(data) - 2000])
    volume, _ = load_study(folder)
    assert volume.shape[0] == 5
    message = {note.code: note.message for note in volume.notes}["truncated_in_series"]
    assert "1 file(s) of this series are truncated" in message
    assert "IM0006.dcm: pixel data needs 8192 bytes" in message
    assert "(image at z = 25 mm)" in message
