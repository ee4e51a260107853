"""Seeded training of the slice U-Net with augmentation and early stopping."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from inference.models.determinism import seed_everything
from inference.models.unet.network import SegmentClassifyUNet
from inference.models.unet.slices import CLASSES, UNetConfig, prepare_slices
from inference.volume import Volume

logger = logging.getLogger(__name__)


@dataclass
class TrainingCase:
    """One training case: its volume, optional lesion labels on the volume grid, and label.

    ``lesion_labels`` marks lesion voxels with values above 0; without it the case trains the
    class head only, on all slices that show the head.
    """

    volume: Volume
    lesion_labels: np.ndarray | None
    label: str


@dataclass
class TrainedUNet:
    """A trained network with the settings and record of the run that produced it.

    ``mask_case_count`` counts training cases that had lesion labels. When it is 0 the mask
    output was never trained, so prediction ignores it.
    """

    network: SegmentClassifyUNet
    config: UNetConfig
    seed: int
    classes: tuple[str, ...] = CLASSES
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    training_case_count: int = 0
    validation_case_count: int = 0
    mask_case_count: int = 0
    training_seconds: float = 0.0


@dataclass
class _SliceSet:
    images: torch.Tensor
    masks: torch.Tensor
    has_mask: torch.Tensor
    class_index: torch.Tensor
    has_class: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


@contextlib.contextmanager
def torch_threads(thread_count: int) -> Iterator[None]:
    """Use ``thread_count`` intra-op threads inside the block; 0 keeps the current count."""
    previous = torch.get_num_threads()
    if thread_count > 0:
        torch.set_num_threads(thread_count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def split_validation(labels: Sequence[str], fraction: float, seed: int) -> list[bool]:
    """Mark a stratified validation fold: about ``fraction`` of each class, at least one case
    of every class that has two or more cases, when ``fraction`` is above 0.
    """
    rng = np.random.default_rng(seed)
    is_validation = [False] * len(labels)
    if fraction <= 0:
        return is_validation
    for class_name in CLASSES:
        members = [index for index, label in enumerate(labels) if label == class_name]
        if len(members) < 2:
            continue
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        for index in rng.permutation(members)[:count]:
            is_validation[int(index)] = True
    return is_validation


def _select_slices(
    case: TrainingCase, config: UNetConfig, rng: np.random.Generator, case_number: int
) -> _SliceSet:
    prepared = prepare_slices(case.volume, case.lesion_labels, config)
    shows_head = prepared.head_fraction >= config.min_head_fraction
    class_index = CLASSES.index(case.label)

    if prepared.masks is None or prepared.lesion_area_px is None:
        chosen = np.flatnonzero(shows_head)
        masks = torch.zeros((len(chosen), 1, config.image_size, config.image_size))
        has_mask = torch.zeros(len(chosen), dtype=torch.bool)
        has_class = torch.ones(len(chosen), dtype=torch.bool)
    else:
        positive = np.flatnonzero(prepared.lesion_area_px > 0)
        negative = np.flatnonzero(shows_head & (prepared.lesion_area_px == 0))
        if positive.size == 0:
            logger.warning(
                "Training case %d (%s) has lesion labels without any lesion voxel; it adds "
                "no slice to training",
                case_number,
                case.label,
            )
        negative_count = min(
            negative.size, round(config.negative_slices_per_positive * positive.size)
        )
        sampled_negative = np.sort(rng.choice(negative, size=negative_count, replace=False))
        chosen = np.concatenate([positive, sampled_negative])
        masks = prepared.masks[chosen]
        has_mask = torch.ones(len(chosen), dtype=torch.bool)
        # Slices without lesion carry no evidence of the lesion's class, so they train the
        # mask only.
        has_class = torch.from_numpy(np.isin(chosen, positive))

    return _SliceSet(
        images=prepared.images[chosen],
        masks=masks,
        has_mask=has_mask,
        class_index=torch.full((len(chosen),), class_index, dtype=torch.long),
        has_class=has_class,
    )


def _concatenate(parts: Sequence[_SliceSet], config: UNetConfig) -> _SliceSet:
    if not parts:
        size = config.image_size
        return _SliceSet(
            images=torch.zeros((0, config.in_channels, size, size)),
            masks=torch.zeros((0, 1, size, size)),
            has_mask=torch.zeros(0, dtype=torch.bool),
            class_index=torch.zeros(0, dtype=torch.long),
            has_class=torch.zeros(0, dtype=torch.bool),
        )
    return _SliceSet(
        images=torch.cat([part.images for part in parts]),
        masks=torch.cat([part.masks for part in parts]),
        has_mask=torch.cat([part.has_mask for part in parts]),
        class_index=torch.cat([part.class_index for part in parts]),
        has_class=torch.cat([part.has_class for part in parts]),
    )


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    config: UNetConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip left-right, rotate slightly and shift attenuation, per slice, from ``generator``."""
    batch_size = images.shape[0]
    flip = torch.rand(batch_size, generator=generator) < config.flip_probability
    angle_rad = (torch.rand(batch_size, generator=generator) * 2.0 - 1.0) * math.radians(
        config.max_rotation_deg
    )
    shift_hu = (torch.rand(batch_size, generator=generator) * 2.0 - 1.0) * (
        config.intensity_jitter_hu
    )

    # A left-right flip is a mirrored x axis in the affine grid, so one resampling does both.
    x_sign = torch.where(flip, -1.0, 1.0)
    cos, sin = torch.cos(angle_rad), torch.sin(angle_rad)
    theta = torch.zeros((batch_size, 2, 3))
    theta[:, 0, 0] = cos * x_sign
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * x_sign
    theta[:, 1, 1] = cos
    sampling_grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # Zero is below every window, so the corners uncovered by rotation read as air.
    images = F.grid_sample(images, sampling_grid, mode="bilinear", align_corners=False)
    masks = F.grid_sample(masks, sampling_grid, mode="bilinear", align_corners=False)

    # A shift of s HU moves a channel of width w by s / w. Clipped pixels (air, bone) are left
    # alone because their true HU lies outside the window either way.
    widths_hu = torch.tensor([width for _, width in config.windows_hu])
    channel_shift = shift_hu[:, None] / widths_hu[None, :]
    inside = (images > 0.0) & (images < 1.0)
    images = torch.where(inside, images + channel_shift[:, :, None, None], images)
    return images.clamp_(0.0, 1.0), masks


class _Losses:
    """Dice plus binary cross-entropy for the mask, cross-entropy for the class head."""

    def __init__(self, config: UNetConfig) -> None:
        # Dice over the whole batch, because a per-slice Dice is undefined on slices without
        # lesion. soft_label accepts the fractional masks made by down-sampling.
        self.dice = DiceLoss(sigmoid=True, batch=True, soft_label=True)
        self.class_loss_weight = config.class_loss_weight

    def __call__(
        self,
        mask_logits: torch.Tensor,
        class_logits: torch.Tensor,
        masks: torch.Tensor,
        has_mask: torch.Tensor,
        class_index: torch.Tensor,
        has_class: torch.Tensor,
    ) -> torch.Tensor:
        total = mask_logits.new_zeros(())
        if bool(has_mask.any()):
            segment_logits = mask_logits[has_mask]
            segment_targets = masks[has_mask]
            total = total + self.dice(segment_logits, segment_targets)
            total = total + F.binary_cross_entropy_with_logits(segment_logits, segment_targets)
        if bool(has_class.any()):
            total = total + self.class_loss_weight * F.cross_entropy(
                class_logits[has_class], class_index[has_class]
            )
        return total


def _run_epoch(
    network: SegmentClassifyUNet,
    slices: _SliceSet,
    losses: _Losses,
    config: UNetConfig,
    optimizer: torch.optim.Optimizer | None,
    generator: torch.Generator,
) -> dict[str, float]:
    training = optimizer is not None
    network.train(training)
    order = torch.randperm(len(slices), generator=generator) if training else None
    loss_sum = 0.0
    correct = 0
    class_count = 0
    grad_context = contextlib.nullcontext() if training else torch.no_grad()
    with grad_context:
        for start in range(0, len(slices), config.batch_size):
            if order is not None:
                batch = order[start : start + config.batch_size]
            else:
                batch = torch.arange(start, min(start + config.batch_size, len(slices)))
            images = slices.images[batch]
            masks = slices.masks[batch]
            if training and config.augment:
                images, masks = augment_batch(images, masks, config, generator)
            mask_logits, class_logits = network(images)
            loss = losses(
                mask_logits,
                class_logits,
                masks,
                slices.has_mask[batch],
                slices.class_index[batch],
                slices.has_class[batch],
            )
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            loss_sum += float(loss.detach()) * len(batch)
            has_class = slices.has_class[batch]
            predicted = class_logits.detach().argmax(dim=1)
            correct += int((predicted[has_class] == slices.class_index[batch][has_class]).sum())
            class_count += int(has_class.sum())
    return {
        "loss": loss_sum / max(len(slices), 1),
        "slice_accuracy": correct / class_count if class_count else float("nan"),
    }


def _check_cases(cases: Sequence[TrainingCase]) -> None:
    if not cases:
        raise ValueError("train_unet got no training cases; pass at least one TrainingCase")
    for number, case in enumerate(cases):
        if case.label not in CLASSES:
            raise ValueError(
                f"training case {number} has label {case.label!r}; expected one of {CLASSES}"
            )


def train_unet(cases: Sequence[TrainingCase], config: UNetConfig, seed: int) -> TrainedUNet:
    """Train the U-Net on ``cases`` and return the weights of the best validation epoch.

    A stratified fraction (``config.validation_fraction``) of the cases is held out for early
    stopping. When no class has two or more cases, or the fraction is 0, training runs all
    ``max_epochs`` and keeps the last weights. The call seeds Python, NumPy and PyTorch globally and turns on
    PyTorch's deterministic mode, so the same inputs, seed and thread count give the same
    weights.
    """
    _check_cases(cases)
    started = time.perf_counter()
    seed_everything(seed)
    with torch_threads(config.num_threads):
        labels = [case.label for case in cases]
        is_validation = split_validation(labels, config.validation_fraction, seed)
        rng = np.random.default_rng(seed)
        training_parts: list[_SliceSet] = []
        validation_parts: list[_SliceSet] = []
        for number, case in enumerate(cases):
            part = _select_slices(case, config, rng, number)
            (validation_parts if is_validation[number] else training_parts).append(part)
        mask_case_count = sum(case.lesion_labels is not None for case in cases)
        if mask_case_count == 0:
            logger.warning(
                "No training case has lesion labels: the U-Net's mask output stays untrained, "
                "and predictions weigh all slices that show the head equally"
            )
        training_slices = _concatenate(training_parts, config)
        validation_slices = _concatenate(validation_parts, config)
        if len(training_slices) == 0:
            raise ValueError(
                "no training slice was selected: every training case lacks lesion voxels in "
                "its lesion labels; check the labels or pass None for cases without a mask"
            )
        logger.info(
            "Training U-Net on %d slices from %d cases, validating on %d slices from %d cases",
            len(training_slices),
            len(training_parts),
            len(validation_slices),
            len(validation_parts),
        )

        network = SegmentClassifyUNet(config)
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        losses = _Losses(config)
        generator = torch.Generator().manual_seed(seed)
        history: list[dict[str, float]] = []
        best_loss = math.inf
        best_epoch = 0
        best_state: dict[str, Any] | None = None
        stale_epochs = 0

        for epoch in range(1, config.max_epochs + 1):
            epoch_started = time.perf_counter()
            train_metrics = _run_epoch(
                network, training_slices, losses, config, optimizer, generator
            )
            record = {
                "epoch": float(epoch),
                "train_loss": train_metrics["loss"],
                "train_slice_accuracy": train_metrics["slice_accuracy"],
            }
            if len(validation_slices):
                validation_metrics = _run_epoch(
                    network, validation_slices, losses, config, None, generator
                )
                record["validation_loss"] = validation_metrics["loss"]
                record["validation_slice_accuracy"] = validation_metrics["slice_accuracy"]
            record["seconds"] = time.perf_counter() - epoch_started
            history.append(record)
            logger.info(
                "U-Net epoch %d: train loss %.4f, validation loss %.4f, %.1f s",
                epoch,
                record["train_loss"],
                record.get("validation_loss", float("nan")),
                record["seconds"],
            )

            if not len(validation_slices):
                best_epoch = epoch
                continue
            if record["validation_loss"] < best_loss:
                best_loss = record["validation_loss"]
                best_epoch = epoch
                best_state = copy.deepcopy(network.state_dict())
                stale_epochs = 0
            else:
                stale_epochs += 1
                if stale_epochs >= config.patience:
                    logger.info(
                        "Early stop after epoch %d: no validation improvement for %d epochs",
                        epoch,
                        config.patience,
                    )
                    break

        if best_state is not None:
            network.load_state_dict(best_state)
        network.eval()

    return TrainedUNet(
        network=network,
        config=config,
        seed=seed,
        best_epoch=best_epoch,
        history=history,
        training_case_count=len(training_parts),
        validation_case_count=len(validation_parts),
        mask_case_count=mask_case_count,
        training_seconds=time.perf_counter() - started,
    )
