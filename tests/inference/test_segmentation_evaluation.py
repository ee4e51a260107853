"""Dice per true lesion: which voxels form a lesion and which predicted voxels it is scored on."""

from __future__ import annotations

import numpy as np
import pytest

from inference.segmentation.evaluation import dice_coefficient, lesion_dice

# 1 mm^3 voxels, so 1000 voxels are 1 mL and the 0.5 mL minimum is 500 voxels.
VOXEL_ML = 0.001


def _grid() -> np.ndarray:
    return np.zeros((10, 40, 40), dtype=np.int16)


def test_lesion_in_two_pieces_is_scored_as_one():
    """A ribbon the 5 mm grid cuts in two is one lesion, also when the segmenter joins it.

    Scored per connected piece, each piece met the whole joined prediction: 2 * 300 / 900 =
    0.667 for both, and no piece reached 0.5 mL alone.
    """
    truth = _grid()
    truth[0:5, 0:10, 0:6] = 1  # 300 voxels
    truth[0:5, 0:10, 8:14] = 1  # 300 voxels, two columns apart
    predicted = np.zeros(truth.shape, dtype=np.int32)
    predicted[0:5, 0:10, 0:14] = 1  # both pieces and the 100-voxel gap between them
    (item,) = lesion_dice(truth, predicted, VOXEL_ML)
    assert item.true_label_values == (1,)
    assert item.n_pieces == 2
    assert item.true_volume_ml == pytest.approx(0.6)
    assert item.predicted_volume_ml == pytest.approx(0.7)
    assert item.dice == pytest.approx(2 * 600 / 1300)
    assert item.touching_label_values == ()
    assert item.group_dice == item.dice


def test_every_predicted_lesion_over_the_true_one_counts():
    truth = _grid()
    truth[0:5, 0:10, 0:12] = 1  # 600 voxels
    predicted = np.zeros(truth.shape, dtype=np.int32)
    predicted[0:5, 0:10, 0:6] = 1
    predicted[0:5, 0:10, 6:14] = 2  # reaches 100 voxels past the lesion
    predicted[6:9, 30:40, 30:40] = 3  # elsewhere: not part of this lesion's score
    (item,) = lesion_dice(truth, predicted, VOXEL_ML)
    assert item.predicted_volume_ml == pytest.approx(0.7)
    assert item.dice == pytest.approx(2 * 600 / 1300)


def test_touching_lesions_scored_apart():
    """An HT core with a CE cap: two true lesions, one predicted lesion over both.

    The predicted lesion counts for the core, which it overlaps most, so the cap is missed.
    """
    truth = _grid()
    truth[0:5, 0:20, 0:10] = 1  # 1000 voxels
    truth[0:5, 0:20, 10:15] = 2  # 500 voxels, side by side with lesion 1
    predicted = np.zeros(truth.shape, dtype=np.int32)
    predicted[0:5, 0:20, 0:15] = 1
    core, cap = lesion_dice(truth, predicted, VOXEL_ML)
    assert core.true_label_values == (1,)
    assert cap.true_label_values == (2,)
    assert core.touching_label_values == (2,)
    assert cap.touching_label_values == (1,)
    assert core.dice == pytest.approx(2 * 1000 / 2500)
    assert cap.dice == 0.0
    assert cap.predicted_volume_ml == 0.0
    assert core.group_dice == pytest.approx(1.0)
    assert cap.group_dice == pytest.approx(1.0)


def test_split_lesion_stray_voxels_do_not_count():
    """A core and a cap predicted apart: a border off by one column leaves the other alone.

    Under a rule that took every predicted lesion overlapping a true one, the cap's
    prediction, which reaches 100 voxels into the core, would join the core's score
    (2 * 1000 / 2500 = 0.8).
    """
    truth = _grid()
    truth[0:5, 0:20, 0:10] = 1  # 1000 voxels
    truth[0:5, 0:20, 10:15] = 2  # 500 voxels
    predicted = np.zeros(truth.shape, dtype=np.int32)
    predicted[0:5, 0:20, 0:9] = 1  # 900 voxels of the core
    predicted[0:5, 0:20, 9:15] = 2  # the cap and one column (100 voxels) of the core
    core, cap = lesion_dice(truth, predicted, VOXEL_ML)
    assert core.predicted_volume_ml == pytest.approx(0.9)
    assert core.dice == pytest.approx(2 * 900 / 1900)
    assert cap.predicted_volume_ml == pytest.approx(0.6)
    assert cap.dice == pytest.approx(2 * 500 / 1100)
    assert core.group_dice == pytest.approx(1.0)


def test_predicted_lesion_goes_to_larger_overlap():
    """Equal overlaps go to the lower true label value; otherwise the larger overlap wins."""
    truth = _grid()
    truth[0:5, 0:10, 0:10] = 1  # 500 voxels
    truth[0:5, 0:10, 10:20] = 2  # 500 voxels
    predicted = np.zeros(truth.shape, dtype=np.int32)
    predicted[0:5, 0:10, 0:20] = 1  # 500 voxels of each
    first, second = lesion_dice(truth, predicted, VOXEL_ML)
    assert first.dice == pytest.approx(2 * 500 / 1500)
    assert second.dice == 0.0

    predicted[0:5, 0:10, 0:20] = 0
    predicted[0:5, 0:10, 4:20] = 1  # 300 voxels of lesion 1, 500 of lesion 2
    first, second = lesion_dice(truth, predicted, VOXEL_ML)
    assert first.dice == 0.0
    assert second.dice == pytest.approx(2 * 500 / 1300)


def test_false_positive_far_away_is_not_assigned():
    truth = _grid()
    truth[0:5, 0:10, 0:10] = 1
    predicted = np.zeros(truth.shape, dtype=np.int32)
    predicted[6:9, 30:40, 30:40] = 1  # overlaps no true voxel
    (item,) = lesion_dice(truth, predicted, VOXEL_ML)
    assert item.dice == 0.0
    assert item.predicted_volume_ml == 0.0


def test_lesions_touching_through_a_third_form_one_group():
    truth = _grid()
    truth[0:5, 0:10, 0:10] = 1
    truth[0:5, 0:10, 10:20] = 2
    truth[0:5, 0:10, 20:30] = 3
    predicted = np.zeros(truth.shape, dtype=np.int32)
    predicted[0:5, 0:10, 0:20] = 1  # lesion 3 is missed
    first, second, third = lesion_dice(truth, predicted, VOXEL_ML)
    assert first.touching_label_values == (2, 3)
    assert third.touching_label_values == (1, 2)
    assert third.dice == 0.0
    assert third.predicted_volume_ml == 0.0
    assert third.group_dice == pytest.approx(2 * 1000 / 2500)


def test_minimum_volume_applies_to_the_whole_lesion():
    truth = _grid()
    truth[0:5, 0:10, 0:6] = 1  # two pieces of 300 voxels: 0.6 mL together
    truth[0:5, 0:10, 8:14] = 1
    truth[6:9, 30:40, 30:40] = 2  # 300 voxels in one piece: below 0.5 mL
    predicted = np.zeros(truth.shape, dtype=np.int32)
    items = lesion_dice(truth, predicted, VOXEL_ML)
    assert [item.true_label_values for item in items] == [(1,)]
    assert items[0].dice == 0.0
    assert [item.true_label_values for item in lesion_dice(truth, predicted, VOXEL_ML, 0.3)] == [
        (1,),
        (2,),
    ]


def test_empty_truth_and_mismatched_grids():
    truth = _grid()
    assert lesion_dice(truth, np.ones(truth.shape, dtype=np.int32), VOXEL_ML) == []
    with pytest.raises(ValueError, match=r"true mask shape \(10, 40, 40\) differs"):
        lesion_dice(truth, np.zeros((10, 40, 41), dtype=np.int32), VOXEL_ML)
    assert dice_coefficient(truth > 0, truth > 0) == 1.0
