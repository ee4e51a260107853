"""A 2D U-Net on windowed axial CT slices that segments hyperdensities and classifies the case
as HT, CE or HT+CE.
"""

from inference.models.unet.artifacts import load_unet, save_unet
from inference.models.unet.network import SegmentClassifyUNet
from inference.models.unet.oof import UNetOutOfFold, out_of_fold_probabilities
from inference.models.unet.prediction import (
    UNetPrediction,
    aggregate_slices,
    predict_unet,
    resolve_device,
)
from inference.models.unet.slices import (
    CLASSES,
    PreparedSlices,
    SliceGrid,
    UNetConfig,
    prepare_slices,
    restore_mask,
)
from inference.models.unet.training import TrainedUNet, TrainingCase, train_unet

__all__ = [
    "CLASSES",
    "PreparedSlices",
    "SegmentClassifyUNet",
    "SliceGrid",
    "TrainedUNet",
    "TrainingCase",
    "UNetConfig",
    "UNetOutOfFold",
    "UNetPrediction",
    "aggregate_slices",
    "load_unet",
    "out_of_fold_probabilities",
    "predict_unet",
    "prepare_slices",
    "resolve_device",
    "restore_mask",
    "save_unet",
    "train_unet",
]
