"""Hyperdensity segmentation: automatic, or from a user-supplied mask."""

from inference.segmentation.evaluation import dice_coefficient, lesion_dice
from inference.segmentation.hyperdensity import segment_hyperdensities
from inference.segmentation.masks import load_user_mask
from inference.segmentation.result import Lesion, SegmentationConfig, SegmentationResult

__all__ = [
    "Lesion",
    "SegmentationConfig",
    "SegmentationResult",
    "dice_coefficient",
    "lesion_dice",
    "load_user_mask",
    "segment_hyperdensities",
]
