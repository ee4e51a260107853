"""The ``segment`` and ``make-cohort`` subcommands through the CLI's main()."""

from __future__ import annotations

import json

import pytest

from inference import cli
from tests.shared_data import CASES_DIR, require

# Session fixtures shared with the other synthetic and segmentation test modules.
pytest_plugins = ["tests.inference.synthetic_fixtures"]

OWN_MODULES = ["inference.segmentation.cli", "inference.synthetic.cli"]


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    modules = list(cli.SUBCOMMAND_MODULES)
    modules += [name for name in OWN_MODULES if name not in modules]
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", modules)


def test_segment_json_lists_lesions(small_cohort, capsys):
    case = next(case for case in small_cohort.cases if case.label == "HT")
    status = cli.main(["segment", str(case.baseline_dir), "--json"])
    output = json.loads(capsys.readouterr().out)
    segmentation = output["segmentation"]
    assert status == 0
    assert segmentation["source"] == "automatic"
    assert segmentation["n_lesions"] >= 1
    assert segmentation["lesions"][0]["volume_ml"] > 0.5
    assert output["volume_shape_zyx"][1:] == [256, 256]


def test_segment_text_reports_empty_study(capsys):
    status = cli.main(["segment", str(require(CASES_DIR / "C22"))])
    output = capsys.readouterr().out
    assert status == 0
    assert output.startswith("no hyperdensity found")


def test_segment_with_user_mask(small_cohort, capsys):
    case = next(case for case in small_cohort.cases if case.label == "HT+CE")
    status = cli.main(
        ["segment", str(case.baseline_dir), "--mask", str(case.masks_nifti), "--json"]
    )
    segmentation = json.loads(capsys.readouterr().out)["segmentation"]
    assert status == 0
    assert segmentation["source"] == "user_mask"
    assert [lesion["source_value"] for lesion in segmentation["lesions"]] == [1, 2]


def test_segment_missing_path_fails_with_message(tmp_path, capsys):
    status = cli.main(["segment", str(tmp_path / "absent")])
    error = capsys.readouterr().err
    assert status == 1
    assert "error: path_not_found:" in error
    assert "absent" in error


def test_segment_bad_mask_fails_with_message(small_cohort, tmp_path, capsys):
    junk = tmp_path / "mask.nii.gz"
    junk.write_bytes(b"junk")
    status = cli.main(["segment", str(small_cohort.cases[0].baseline_dir), "--mask", str(junk)])
    error = capsys.readouterr().err
    assert status == 1
    assert error.startswith("error: mask_error: mask file mask.nii.gz is not a readable NIfTI")


def test_make_cohort_json_summary(tmp_path, capsys):
    out = tmp_path / "cohort"
    status = cli.main(["make-cohort", str(out), "--cases", "3", "--normal", "1", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert status == 0
    assert summary["n_cases"] == 4
    assert summary["class_counts"] == {"HT": 1, "CE": 1, "HT+CE": 1, "none": 1}
    assert summary["train"] + summary["test"] == 4
    assert (out / "cohort.json").is_file()


def test_make_cohort_refuses_existing_folder(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert cli.main(["make-cohort", str(out), "--cases", "1", "--normal", "0"]) == 0
    capsys.readouterr()
    status = cli.main(["make-cohort", str(out), "--cases", "1", "--normal", "0"])
    error = capsys.readouterr().err
    assert status == 1
    assert "already exists" in error
