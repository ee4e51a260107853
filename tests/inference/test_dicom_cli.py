"""``python -m inference inspect``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from inference.cli import main
from tests.inference.conftest import write_ct_series

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_inspect_json_reports_choice_and_geometry(tmp_path: Path, capsys) -> None:
    write_ct_series(tmp_path / "s", 4)
    status = main(["inspect", str(tmp_path / "s"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert report["volume"]["shape_zyx"] == [4, 64, 64]
    assert report["volume"]["spacing_zyx_mm"] == [5.0, 3.5, 3.5]
    assert report["scan"]["series"][0]["chosen"] is True
    assert report["error"] is None


def test_inspect_text_lists_skipped_files(tmp_path: Path, capsys) -> None:
    write_ct_series(tmp_path / "s", 4)
    (tmp_path / "s" / "README.TXT").write_text("hello")
    assert main(["inspect", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 files" in out
    assert "not_dicom" in out
    assert "volume [4, 64, 64]" in out


def test_inspect_bad_input_exits_nonzero_with_one_line(tmp_path: Path, capsys) -> None:
    write_ct_series(tmp_path / "s", 4, positions_mm=[0, 5, 15, 20])
    status = main(["inspect", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1
    assert err.startswith("error: missing_slices:")


def test_inspect_missing_path_exits_1(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "absent")]) == 1
    assert "file or folder not found" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path: Path) -> None:
    write_ct_series(tmp_path / "s", 3)
    completed = subprocess.run(
        [sys.executable, "-m", "inference", "inspect", "--no-load", "--json", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert completed.returncode == 0
    assert json.loads(completed.stdout)["volume"] is None


def test_inspect_folder_without_dicom_exits_1(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    status = main(["inspect", "--json", str(tmp_path)])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert status == 1
    assert report["error"]["code"] == "no_usable_series"
    assert report["scan"]["skipped_by_reason"] == {"not_dicom": 1}
    assert captured.err.startswith("error: no_usable_series:")
