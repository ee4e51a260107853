"""Automatic hyperdensity segmentation on synthetic heads and the shared fault cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from inference.segmentation import (
    SegmentationConfig,
    SegmentationResult,
    lesion_dice,
    segment_hyperdensities,
)
from inference.segmentation.evaluation import dice_coefficient, summarize_dice
from inference.synthetic import generate_case_volume
from inference.synthetic.lesions import CaseLabel
from inference.volume import Volume
from tests.shared_data import CASES_DIR, require

# Session fixtures shared with the other synthetic and segmentation test modules.
pytest_plugins = ["tests.inference.synthetic_fixtures"]

C23_VOXEL_ML = 5.0 * 3.59375 * 3.59375 / 1000.0


def _volume_like(volume: Volume, hu: np.ndarray) -> Volume:
    return Volume(
        hu=hu.astype(np.float32),
        spacing_zyx_mm=volume.spacing_zyx_mm,
        origin_xyz_mm=volume.origin_xyz_mm,
        direction=volume.direction,
        sop_instance_uids=[],
    )


@pytest.fixture(scope="module")
def ht_result(cases_by_label):
    case = cases_by_label["HT"][0]
    return case, segment_hyperdensities(case.baseline_volume())


def test_dice_per_class_on_synthetic_cases(cases_by_label):
    """Isolated lesions are scored alone; true lesions that touch as one hyperdensity.

    The first three HT+CE cases draw a CE cap against the hematoma. In seeds 0 and 2 the cap
    is denser (133 HU on 60 HU, 98 HU on 75 HU), and the segmenter splits it off as its own
    lesion. In seed 1 cap and hematoma have the same density (65 and 67 HU): one lesion is
    drawn over both, it counts for the hematoma, and the cap scores 0.
    """
    records: list[tuple[str, float]] = []
    caps: dict[int, float] = {}
    for label in ("HT", "CE", "HT+CE"):
        for seed, case in enumerate(cases_by_label[label]):
            result = segment_hyperdensities(case.baseline_volume())
            seen_groups: set[tuple[int, ...]] = set()
            for item in lesion_dice(case.true_labels, result.labels, case.grid.voxel_volume_ml):
                if not item.touching_label_values:
                    records.append((label, item.dice))
                    continue
                if case.lesions[item.true_label_values[0] - 1].pattern == "adjacent":
                    caps[seed] = item.dice
                group = tuple(sorted(item.true_label_values + item.touching_label_values))
                if group not in seen_groups:
                    seen_groups.add(group)
                    records.append((label, item.group_dice))
    summary = summarize_dice(records)
    assert set(summary) == {"HT", "CE", "HT+CE"}
    for label, figures in summary.items():
        assert figures["n_lesions"] >= 3, label
        assert figures["mean"] >= 0.93, (label, figures)
        assert figures["min"] >= 0.93, (label, figures)
    assert sorted(caps) == [0, 1, 2]
    assert caps[0] >= 0.95, caps
    assert caps[2] >= 0.83, caps
    assert caps[1] == 0.0, caps


def test_dicom_round_trip_dice(small_cohort):
    """Generated DICOM, read back by the loader: compact lesions keep Dice >= 0.9.

    Thin gyriform staining along the cortex is reported apart: its Dice is lower (median
    about 0.92 for isolated ribbons on the default cohort) because a 3 mm ribbon is only
    three pixels wide. Lesions that touch another true lesion are scored as one group.
    """
    from inference.dicom import load_study

    compact: list[float] = []
    ribbons: list[float] = []
    for case in small_cohort.cases:
        volume, _scan = load_study(case.baseline_dir)
        result = segment_hyperdensities(volume)
        truth = case.true_labels()
        assert result.labels.shape == truth.shape
        if case.label == "none":
            assert result.lesions == []
            continue
        for item in lesion_dice(truth, result.labels, volume.voxel_volume_ml):
            pattern = case.lesions[item.true_label_values[0] - 1]["pattern"]
            dice = item.group_dice if item.touching_label_values else item.dice
            (ribbons if pattern in {"cortical", "sulcal"} else compact).append(dice)
    assert len(compact) >= 4
    assert float(np.median(compact)) >= 0.9, compact
    assert min(compact) >= 0.85, compact
    assert all(dice >= 0.5 for dice in ribbons), ribbons


# Every CE seed below 40 whose staining follows the cortical ribbon at 80 HU or more (chosen by
# pattern and density, not by Dice).
DENSE_RIBBON_SEEDS = (5, 11, 12, 14, 20, 21, 22, 24, 25, 29, 31, 32, 33, 36, 39)


def test_dense_cortical_staining_is_segmented():
    """Ribbons of cortical staining: found whole next to the skull, borders at half lesion.

    The bone margin used to cut the ribbon under the convexity (recall about 0.2-0.6), and
    the border, placed at half of the ribbon's own partial-volume mean, took in voxels only
    a third lesion (median Dice about 0.66). Then the border reached out only from the
    ribbon's widest stretches, and left the narrow ones out (recall down to 0.7). With the
    peak read at the 90th percentile, the border took in a ring one pixel wide outside the
    ribbon (median Dice 0.913, 9 of 15 at 0.9 or more).
    """
    dice: list[float] = []
    for seed in DENSE_RIBBON_SEEDS:
        case = generate_case_volume("CE", seed=seed)
        ribbons = [
            lesion.label
            for lesion in case.lesions
            if lesion.pattern == "cortical" and lesion.baseline_density_hu >= 80.0
        ]
        assert ribbons, seed
        result = segment_hyperdensities(case.baseline_volume())
        for item in lesion_dice(case.true_labels, result.labels, case.grid.voxel_volume_ml):
            if item.true_label_values[0] not in ribbons:
                continue
            truth = case.true_labels == item.true_label_values[0]
            recall = np.count_nonzero(truth & (result.labels > 0)) / np.count_nonzero(truth)
            assert recall >= 0.88, (seed, recall)
            dice.append(item.dice)
    assert len(dice) == 15
    assert float(np.median(dice)) >= 0.93, dice
    assert min(dice) >= 0.88, dice
    # TODO: the target is Dice >= 0.9 for every lesion of 0.5 mL or more; 13 of these 15
    # reach it (docs/benchmarks.md).
    assert sum(value >= 0.9 for value in dice) >= 13, dice


# HT cases (in memory) whose single hemorrhage is drawn at 52-60 HU.
FAINT_HT_SEEDS = (0, 4, 9, 12, 13, 16, 17, 43, 50)


def test_faint_hemorrhage_keeps_its_end_slices():
    """Hemorrhage of 52-60 HU in edema: the border grows past the candidate's dense part.

    The candidate component (smoothed image >= 50 HU) contains only the denser part of such a
    lesion, so one border pass read its level too high and lost the end slices, where the
    lesion fills part of the 5 mm: median Dice 0.78, mean recall 0.61 on these nine.
    """
    dice: list[float] = []
    recalls: list[float] = []
    for seed in FAINT_HT_SEEDS:
        case = generate_case_volume("HT", seed=seed)
        (lesion,) = case.lesions
        assert lesion.baseline_density_hu <= 60.0, seed
        result = segment_hyperdensities(case.baseline_volume())
        (item,) = lesion_dice(case.true_labels, result.labels, case.grid.voxel_volume_ml)
        truth = case.true_labels == 1
        recalls.append(np.count_nonzero(truth & (result.labels > 0)) / np.count_nonzero(truth))
        dice.append(item.dice)
        # Growing must not leak into the gray matter around the lesion.
        assert item.predicted_volume_ml <= 1.05 * item.true_volume_ml, (seed, item)
    assert float(np.median(dice)) >= 0.87, dice
    assert float(np.mean(recalls)) >= 0.75, recalls
    assert sum(value >= 0.9 for value in dice) >= 2, dice


# Per class, the in-memory seeds 0-7 (not chosen by Dice) and three normal heads.
SMALL_COHORT_SEEDS = range(8)


def test_dice_per_lesion_on_small_cohort():
    """Dice of every true lesion of 0.5 mL or more, each scored on its own, per class.

    Figures of this run (median / mean, lesions at 0.9 or more): HT 0.946 / 0.904, 7 of 8;
    CE 0.943 / 0.906, 6 of 8; HT+CE 0.924 / 0.840, 10 of 15. Without the split of two-density
    lesions, HT+CE gave 0.810 / 0.634 and 6 of 15: a cap drawn over with its hematoma scored
    0, because the one predicted lesion counts for the hematoma.
    """
    expected: dict[CaseLabel, tuple[int, float, float, int]] = {
        # class: (lesions, minimum median, minimum mean, minimum count at 0.9 or more)
        "HT": (8, 0.93, 0.88, 6),
        "CE": (8, 0.93, 0.88, 5),
        "HT+CE": (15, 0.90, 0.80, 9),
    }
    for label, (count, median, mean, at_target) in expected.items():
        dice: list[float] = []
        for seed in SMALL_COHORT_SEEDS:
            case = generate_case_volume(label, seed=seed)
            result = segment_hyperdensities(case.baseline_volume())
            items = lesion_dice(case.true_labels, result.labels, case.grid.voxel_volume_ml)
            dice.extend(item.dice for item in items)
        assert len(dice) == count, (label, dice)
        assert float(np.median(dice)) >= median, (label, dice)
        assert float(np.mean(dice)) >= mean, (label, dice)
        assert sum(value >= 0.9 for value in dice) >= at_target, (label, dice)
    for seed in range(3):
        case = generate_case_volume("none", seed=seed)
        assert segment_hyperdensities(case.baseline_volume()).lesions == [], seed


# Every in-memory HT+CE seed below 30 whose hemorrhage touches its CE part, both of 0.5 mL or
# more, with densities at least 20 HU apart (chosen by pattern and density, not by Dice).
TOUCHING_PAIR_SEEDS = (0, 2, 4, 7, 8, 13, 14, 18, 19, 24, 27)


def test_touching_stain_is_split_from_blood():
    """Staining against blood is split off and each part scored alone.

    Joined again, the parts are the lesion the segmenter draws without the split, so the
    classifiers' case features do not change.

    This run: 10 of 11 split (seed 4, petechiae of 52 HU, is not), 14 of the 22 parts at 0.9
    or more, the lowest part in a split case 0.820. Without the split every cap scored 0
    except where the staining was the larger part.
    """
    dice: list[float] = []
    split_cases = 0
    for seed in TOUCHING_PAIR_SEEDS:
        case = generate_case_volume("HT+CE", seed=seed)
        blood, stain = case.lesions
        assert abs(stain.baseline_density_hu - blood.baseline_density_hu) >= 20.0, seed
        result = segment_hyperdensities(case.baseline_volume())
        items = lesion_dice(case.true_labels, result.labels, case.grid.voxel_volume_ml)
        assert [item.touching_label_values for item in items] == [(2,), (1,)], seed
        split = any(note.code == "two_densities_split" for note in result.notes)
        split_cases += split
        if split:
            for item in items:
                assert item.dice >= 0.8, (seed, item)
            _assert_parts_join_again(result)
            whole = segment_hyperdensities(
                case.baseline_volume(), SegmentationConfig(split_two_densities=False)
            )
            _assert_same_lesions(result.hyperdensity_labels()[0], whole.labels)
        dice.extend(item.dice for item in items)
    assert split_cases >= 10, split_cases
    assert float(np.median(dice)) >= 0.88, dice
    assert sum(value >= 0.9 for value in dice) >= 12, dice


def _assert_parts_join_again(result: SegmentationResult) -> None:
    """Both parts name each other, and the features' label image is the unsplit lesion."""
    pairs = {lesion.label: lesion.paired_with for lesion in result.lesions if lesion.paired_with}
    low, high = sorted(pairs)
    assert pairs == {low: high, high: low}
    joined, values = result.hyperdensity_labels()
    assert values == sorted({lesion.label for lesion in result.lesions} - {high})
    assert np.array_equal(joined == low, np.isin(result.labels, [low, high]))
    assert not np.any(joined == high)
    others = result.labels != high
    assert np.array_equal(joined[others], result.labels[others])


def _assert_same_lesions(labels: np.ndarray, expected: np.ndarray) -> None:
    """The two label images hold the same voxel sets, whatever their label values."""
    assert np.array_equal(labels > 0, expected > 0)
    inside = expected > 0
    matches = set(zip(labels[inside].tolist(), expected[inside].tolist(), strict=True))
    assert len(matches) == len(np.unique(labels[inside])) == len(np.unique(expected[inside]))


def test_lesion_touching_a_calcification_is_kept(cases_by_label):
    """A small lesion against a calcified choroid plexus is found; the calcification is not.

    Together they make one small dense component in CSF, which used to be left out whole.
    TODO: a larger lesion there stops the component from reading as a calcification. It is
    then kept whole, and its border, drawn at half the calcification's contrast, drops the
    lesion.
    """
    case = cases_by_label["none"][0]
    volume = case.baseline_volume()
    dense = segment_hyperdensities(volume, SegmentationConfig(calcification_min_hu=10_000.0))
    # A calcification off the midline: the choroid plexus of one atrium.
    center_x = volume.shape[2] / 2.0
    glomus = max(
        dense.lesions,
        key=lambda lesion: abs(lesion.centroid_zyx_mm[2] / volume.spacing_zyx_mm[2] - center_x),
    )
    z0, y0, x0, z1, y1, x1 = glomus.bbox_zyx
    z_mid = (z0 + z1) // 2
    hu = volume.hu.copy()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : hu.shape[1], 0 : hu.shape[2]]
    # A disk of about 2 pixels' radius against the front of the calcification, on two slices.
    disk = (yy - (y0 - 2)) ** 2 + (xx - (x0 + x1) // 2) ** 2 <= 5
    blob = np.zeros(hu.shape, dtype=bool)
    blob[z_mid : z_mid + 2] = disk
    hu[blob] = 68.0 + rng.normal(0.0, 3.0, size=int(blob.sum()))
    touched = _volume_like(volume, hu)
    result = segment_hyperdensities(touched)
    assert len(result.lesions) == 1, result.lesions
    found = result.labels == result.lesions[0].label
    # The two pixels next to the calcification go with it (its partial volume).
    assert dice_coefficient(found, blob) >= 0.7
    assert result.lesions[0].max_hu < 100.0
    assert any(note.code == "calcification_excluded" for note in result.notes)


def test_normal_head_gives_empty_result(cases_by_label):
    for case in cases_by_label["none"]:
        result = segment_hyperdensities(case.baseline_volume())
        codes = [note.code for note in result.notes]
        assert result.lesions == []
        assert result.is_empty
        assert not result.labels.any()
        assert "no_hyperdensity" in codes
        assert json.loads(json.dumps(result.to_dict()))["n_lesions"] == 0


def test_calcifications_are_left_out(cases_by_label):
    case = cases_by_label["none"][0]
    assert case.notes["anatomy"]["pineal_calcification"]
    volume = case.baseline_volume()
    kept = segment_hyperdensities(volume, SegmentationConfig(calcification_min_hu=10_000.0))
    result = segment_hyperdensities(volume)
    excluded = next(note for note in result.notes if note.code == "calcification_excluded")
    assert len(kept.lesions) == 3
    assert all(lesion.max_hu > 200.0 for lesion in kept.lesions)
    assert all(lesion.volume_ml < 0.5 for lesion in kept.lesions)
    assert result.lesions == []
    assert excluded.message.startswith("3 small dense focus(es)")


def test_band_next_to_bone_is_ignored(cases_by_label):
    case = cases_by_label["none"][0]
    no_margin = segment_hyperdensities(case.baseline_volume(), SegmentationConfig(bone_margin_mm=0))
    assert len(no_margin.lesions) > 20
    assert segment_hyperdensities(case.baseline_volume()).lesions == []


def test_brain_mask_strips_skull_and_scalp(ht_result):
    case, result = ht_result
    brain = result.brain_mask
    brain_ml = int(np.count_nonzero(brain)) * case.grid.voxel_volume_ml
    assert brain.dtype == bool
    assert 900.0 <= brain_ml <= 2000.0
    assert not np.any(case.baseline_hu[brain] > 700.0)
    assert not brain[:, :, 0].any()
    # The scalp: soft tissue outside the skull on the central slice's midline row.
    k = case.baseline_hu.shape[0] // 2
    row = case.baseline_hu[k, 128]
    outer = int(np.argmax(row > 0))
    assert -50.0 < row[outer + 1] < 100.0
    assert not brain[k, 128, outer : outer + 4].any()
    # A skull-base slice between the petrous ridges keeps its brain and leaves out the bone.
    base = int(round((-30.0 - case.grid.origin_xyz_mm[2]) / case.grid.spacing_zyx_mm[0]))
    base_ml = int(np.count_nonzero(brain[base])) * case.grid.voxel_volume_ml
    assert base_ml > 5.0
    assert not np.any(case.baseline_hu[base][brain[base]] > 300.0)


def test_lesion_fields_are_consistent(ht_result):
    case, result = ht_result
    labels = result.labels
    assert labels.dtype == np.int32
    assert labels.shape == case.baseline_hu.shape
    assert sorted(np.unique(labels[labels > 0]).tolist()) == [
        lesion.label for lesion in result.lesions
    ]
    volumes = [lesion.volume_ml for lesion in result.lesions]
    assert volumes == sorted(volumes, reverse=True)
    spacing = np.array(case.grid.spacing_zyx_mm)
    for lesion in result.lesions:
        inside = labels == lesion.label
        z, y, x = np.nonzero(inside)
        z0, y0, x0, z1, y1, x1 = lesion.bbox_zyx
        assert lesion.n_voxels == z.size
        assert lesion.volume_ml == pytest.approx(z.size * case.grid.voxel_volume_ml, rel=1e-6)
        assert (z0, y0, x0) == (z.min(), y.min(), x.min())
        assert (z1, y1, x1) == (z.max() + 1, y.max() + 1, x.max() + 1)
        assert list(lesion.slices) == sorted(set(z.tolist()))
        assert lesion.largest_slice == int(np.argmax(np.bincount(z)))
        assert lesion.p10_hu <= lesion.p50_hu <= lesion.p90_hu <= lesion.max_hu
        assert lesion.mean_hu == pytest.approx(float(case.baseline_hu[inside].mean()), abs=0.01)
        expected = np.array([z.mean(), y.mean(), x.mean()]) * spacing
        assert lesion.centroid_zyx_mm == pytest.approx(expected.tolist(), abs=1e-2)
    main = result.lesions[0]
    assert main.compartment == "parenchymal"
    assert 50.0 <= main.mean_hu <= 90.0
    assert json.loads(json.dumps(result.to_dict()))["lesions"][0]["bbox_zyx"] == list(main.bbox_zyx)


def test_min_volume_drops_small_lesions(cases_by_label):
    case = cases_by_label["HT"][3]
    everything = segment_hyperdensities(case.baseline_volume())
    large = segment_hyperdensities(case.baseline_volume(), SegmentationConfig(min_volume_ml=0.5))
    note = next(note for note in large.notes if note.code == "below_min_volume")
    assert len(everything.lesions) > len(large.lesions)
    assert all(lesion.volume_ml >= 0.5 for lesion in large.lesions)
    assert "smaller than 0.5 mL" in note.message


def test_tilted_head_keeps_brain_and_lesion(cases_by_label):
    """A 15 degree gantry tilt left uncorrected shears each slice along y."""
    case = cases_by_label["CE"][1]
    volume = case.baseline_volume()
    dz, dy, _ = volume.spacing_zyx_mm
    shift_px = dz * np.tan(np.radians(15.0)) / dy
    sheared = np.empty_like(volume.hu)
    labels = np.empty_like(case.true_labels)
    for k in range(volume.hu.shape[0]):
        offset = (k - volume.hu.shape[0] / 2) * shift_px
        sheared[k] = ndimage.shift(volume.hu[k], (offset, 0), order=1, cval=-1000.0)
        labels[k] = ndimage.shift(case.true_labels[k], (offset, 0), order=0)
    upright = segment_hyperdensities(volume)
    tilted = segment_hyperdensities(_volume_like(volume, sheared))
    upright_brain = int(np.count_nonzero(upright.brain_mask))
    assert abs(int(np.count_nonzero(tilted.brain_mask)) - upright_brain) < 0.05 * upright_brain
    assert len(tilted.lesions) == 1
    assert dice_coefficient(tilted.labels > 0, labels > 0) >= 0.85


def test_blood_in_a_ventricle_is_intraventricular(cases_by_label):
    case = cases_by_label["none"][1]
    hu = case.baseline_hu.copy()
    # Find the lateral ventricle body: CSF voxels well inside the brain at its level.
    k = int(round((22.0 - case.grid.origin_xyz_mm[2]) / 5.0))
    csf = ndimage.binary_erosion(ndimage.uniform_filter(hu[k], 3) < 12.0, iterations=2)
    pieces, _ = ndimage.label(csf)
    sizes = np.bincount(pieces.ravel())
    sizes[0] = 0
    center = np.round(ndimage.center_of_mass(pieces == int(np.argmax(sizes)))).astype(int)
    hu[k, center[0] - 2 : center[0] + 3, center[1] - 1 : center[1] + 2] = 70.0
    result = segment_hyperdensities(_volume_like(case.baseline_volume(), hu))
    assert len(result.lesions) == 1
    assert result.lesions[0].compartment == "intraventricular"


def test_inverted_window_is_rejected():
    with pytest.raises(ValueError, match="low_hu 90.0 must be below high_hu 80.0"):
        SegmentationConfig(low_hu=90.0, high_hu=80.0)
    with pytest.raises(ValueError, match="use 0 to keep every lesion"):
        SegmentationConfig(min_volume_ml=-1.0)


def test_two_dimensional_input_is_rejected(ht_result):
    case, _ = ht_result
    flat = case.baseline_volume()
    flat.hu = flat.hu[0]
    with pytest.raises(ValueError, match="must be 3D"):
        segment_hyperdensities(flat)


def test_shared_normal_head_is_valid_empty_result():
    from inference.dicom import load_study

    volume, _ = load_study(require(CASES_DIR / "C22"))
    result = segment_hyperdensities(volume)
    assert result.lesions == []
    assert [note.code for note in result.notes] == ["no_hyperdensity"]
    assert result.brain_mask.any()
    assert result.to_dict()["total_volume_ml"] == 0.0


@pytest.mark.parametrize("min_volume_ml", [0.0, 0.02])
def test_shared_single_voxel_is_reported(min_volume_ml):
    from inference.dicom import load_study

    volume, _ = load_study(require(CASES_DIR / "C23" / "single_voxel"))
    result = segment_hyperdensities(volume, SegmentationConfig(min_volume_ml=min_volume_ml))
    assert len(result.lesions) == 1
    lesion = result.lesions[0]
    assert lesion.n_voxels == 1
    assert lesion.volume_ml == pytest.approx(C23_VOXEL_ML, abs=1e-5)
    assert lesion.mean_hu == 70.0
    assert lesion.max_hu == 70.0
    assert lesion.bbox_zyx == (2, 25, 40, 3, 26, 41)
    assert lesion.slices == (2,)


def test_shared_line_of_three_voxels_is_reported():
    from inference.dicom import load_study

    volume, _ = load_study(require(CASES_DIR / "C23" / "line_of_3_voxels"))
    result = segment_hyperdensities(volume, SegmentationConfig(min_volume_ml=0.0))
    assert len(result.lesions) == 1
    lesion = result.lesions[0]
    assert lesion.n_voxels == 3
    assert lesion.volume_ml == pytest.approx(3 * C23_VOXEL_ML, abs=1e-5)
    assert lesion.mean_hu == 70.0
    assert lesion.bbox_zyx == (2, 25, 40, 3, 26, 43)
    assert result.labels[2, 25, 40:43].tolist() == [1, 1, 1]


def test_single_voxel_below_minimum_is_noted():
    from inference.dicom import load_study

    volume, _ = load_study(require(CASES_DIR / "C23" / "single_voxel"))
    result = segment_hyperdensities(volume, SegmentationConfig(min_volume_ml=0.1))
    codes = [note.code for note in result.notes]
    assert result.lesions == []
    assert codes == ["below_min_volume", "no_hyperdensity"]
