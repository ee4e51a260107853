"""Case prediction with the slice U-Net: slice outputs aggregated by predicted lesion area."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from inference.errors import ModelArtifactError
from inference.models.unet.slices import prepare_slices, restore_mask
from inference.models.unet.training import TrainedUNet, torch_threads
from inference.volume import Volume

logger = logging.getLogger(__name__)


@dataclass
class UNetPrediction:
    """The U-Net's output for one volume.

    ``probabilities`` maps each class to its case probability. ``mask`` is a boolean lesion
    mask on the volume's (z, y, x) grid, all False when the model was trained without lesion
    labels. ``slice_probabilities`` has shape (z, classes) in the
    order of ``classes``, and ``slice_weights`` is each slice's share of the case probability
    (sums to 1). ``runtime_s`` covers preprocessing, the network and aggregation.
    """

    probabilities: dict[str, float]
    label: str
    mask: np.ndarray
    slice_probabilities: np.ndarray
    slice_weights: np.ndarray
    classes: tuple[str, ...]
    runtime_s: float


def aggregate_slices(
    slice_probabilities: np.ndarray,
    lesion_area_px: np.ndarray,
    empty_slice_weight: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Average slice class probabilities weighted by predicted lesion area.

    Each slice weighs its predicted lesion pixels plus ``empty_slice_weight`` (one value, or
    one per slice), so slices with lesion dominate. A volume without any predicted lesion falls
    back to the mean weighted by ``empty_slice_weight``, or the plain mean if all weights are
    0. Returns the case probabilities and the normalised slice weights.
    """
    weights = lesion_area_px.astype(np.float64) + empty_slice_weight
    total = weights.sum()
    if total <= 0:
        weights = np.full(len(weights), 1.0 / max(len(weights), 1))
    else:
        weights = weights / total
    return weights @ slice_probabilities, weights


def resolve_device(name: str) -> torch.device:
    """Return the torch device for a setting of ``cpu``, ``cuda`` or ``auto``.

    ``auto`` takes the first CUDA device when one is visible, else the CPU. ``cuda`` without a
    visible CUDA device is an error, so a misconfigured GPU worker reports the cause instead of
    running slowly on its CPU.
    """
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ModelArtifactError(
                "the inference device is set to cuda, but this worker sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                "set INFERENCE_DEVICE to cpu or auto, or run the worker on a GPU host",
                code="device_unavailable",
            )
        return torch.device("cuda")
    raise ModelArtifactError(
        f"unknown inference device {name!r}; use cpu, cuda or auto", code="device_unavailable"
    )


def predict_unet(volume: Volume, model: TrainedUNet, device: str = "cpu") -> UNetPrediction:
    """Segment hyperdensities and classify the case with a trained U-Net on ``device``.

    ``device`` is ``cpu``, ``cuda`` or ``auto`` (see ``resolve_device``). The network is
    moved there for the batches; probabilities come back to the CPU.
    """
    started = time.perf_counter()
    config = model.config
    target = resolve_device(device)
    network = model.network.to(target)
    network.eval()
    with torch_threads(config.num_threads), torch.inference_mode():
        prepared = prepare_slices(volume, None, config)
        mask_probabilities: list[torch.Tensor] = []
        class_probabilities: list[torch.Tensor] = []
        for start in range(0, prepared.images.shape[0], config.inference_batch_size):
            batch = prepared.images[start : start + config.inference_batch_size]
            mask_logits, class_logits = network(batch.to(target))
            mask_probabilities.append(torch.sigmoid(mask_logits[:, 0]).cpu())
            class_probabilities.append(torch.softmax(class_logits, dim=1).cpu())
        slice_masks = torch.cat(mask_probabilities)
        slice_probabilities = torch.cat(class_probabilities).double().numpy()
        if model.mask_case_count > 0:
            lesion_area_px = (slice_masks >= config.mask_threshold).sum(dim=(1, 2)).numpy()
            mask = restore_mask(slice_masks, prepared.grid, config.mask_threshold)
        else:
            # An untrained mask output is noise, so every slice that shows the head weighs the
            # same and no lesion mask is reported.
            lesion_area_px = np.zeros(len(slice_probabilities), dtype=np.int64)
            mask = np.zeros(volume.shape, dtype=bool)

    # Slices above or below the head carry no evidence, so lesions found there are false
    # positives and those slices get no weight.
    shows_head = prepared.head_fraction >= config.min_head_fraction
    if not shows_head.any():
        shows_head[:] = True
    if model.mask_case_count > 0:
        lesion_area_px = lesion_area_px * shows_head
        mask[~shows_head] = False
        case_probabilities, weights = aggregate_slices(
            slice_probabilities, lesion_area_px, config.empty_slice_weight * shows_head
        )
    else:
        case_probabilities, weights = aggregate_slices(
            slice_probabilities, shows_head.astype(np.int64), 0.0
        )
    probabilities = {
        name: float(value) for name, value in zip(model.classes, case_probabilities, strict=True)
    }
    label = model.classes[int(np.argmax(case_probabilities))]
    runtime_s = time.perf_counter() - started
    logger.info(
        "U-Net predicted %s for a %d-slice volume in %.2f s (%d slices with lesion)",
        label,
        volume.shape[0],
        runtime_s,
        int((lesion_area_px > 0).sum()),
    )
    return UNetPrediction(
        probabilities=probabilities,
        label=label,
        mask=mask,
        slice_probabilities=slice_probabilities,
        slice_weights=weights,
        classes=model.classes,
        runtime_s=runtime_s,
    )
