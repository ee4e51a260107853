"""pyradiomics features per lesion and per case, extracted on each lesion's bounding box.

Resampling the whole head to 1 mm with a B-spline costs far more than the features of a small
lesion, so each lesion is cropped first. The crop is resampled onto exactly the grid that
pyradiomics would build from the whole volume, because its ``resampleImage`` aligns the grid
to the image origin and the mask's bounding box. The crop keeps ``bbox_margin_voxels`` extra
voxels on each side: SimpleITK's B-spline coefficients depend on every input voxel, with a
weight that falls by a factor of about 0.27 per voxel (the cubic B-spline pole), so 16 voxels
bring the difference below float32 precision. The result equals the whole-volume extraction
(tested).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

from inference.radiomics.settings import RadiomicsSettings, load_settings
from inference.volume import Volume

logger = logging.getLogger(__name__)

# pyradiomics sets its logger to INFO on import and logs every extraction step. Both the
# logger and the stderr handler it installs are kept to warnings and errors.
logging.getLogger("radiomics").setLevel(logging.WARNING)
radiomics.setVerbosity(logging.WARNING)
# pykwalify validates pyradiomics' parameters and logs "validation.valid" at INFO each time.
logging.getLogger("pykwalify").setLevel(logging.WARNING)

FEATURE_CLASSES: tuple[str, ...] = (
    "firstorder",
    "shape",
    "glcm",
    "glrlm",
    "glszm",
    "gldm",
    "ngtdm",
)


def pyradiomics_version() -> str:
    """Return the installed pyradiomics distribution and version."""
    try:
        return f"pyradiomics-bhklab {metadata.version('pyradiomics-bhklab')}"
    except metadata.PackageNotFoundError:
        return f"pyradiomics {radiomics.__version__}"


def sha256_array(array: np.ndarray) -> str:
    """Return the sha256 of an array's dtype, shape and C-order bytes."""
    contiguous = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
    # Hashing the buffer directly gives the same digest as tobytes() without a second copy
    # of the volume (200 MiB for 200 slices of 512 x 512 float32).
    digest.update(contiguous.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


@dataclass(frozen=True)
class LesionFeatures:
    """Radiomics features of one lesion.

    ``features`` maps pyradiomics feature names (``original_glcm_Contrast`` …) to values. A
    feature class the lesion is too small for has NaN values and its name in ``too_small``.
    """

    label: int
    voxel_count: int
    volume_ml: float
    features: dict[str, float]
    too_small: list[str]
    mask_sha256: str
    crop_zyx: tuple[tuple[int, int], ...] | None
    seconds: float
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "voxel_count": self.voxel_count,
            "volume_ml": self.volume_ml,
            "features": {
                key: (value if math.isfinite(value) else None)
                for key, value in self.features.items()
            },
            "too_small": list(self.too_small),
            "mask_sha256": self.mask_sha256,
            "crop_zyx": None if self.crop_zyx is None else [list(pair) for pair in self.crop_zyx],
            "seconds": self.seconds,
            "message": self.message,
        }


@dataclass(frozen=True)
class CaseFeatures:
    """Per-lesion features, the per-case aggregate and their provenance."""

    lesions: list[LesionFeatures]
    aggregate: dict[str, float]
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lesions": [lesion.to_dict() for lesion in self.lesions],
            "aggregate": {
                key: (value if math.isfinite(value) else None)
                for key, value in self.aggregate.items()
            },
            "provenance": dict(self.provenance),
        }


def _to_sitk(array: np.ndarray, volume: Volume, start_zyx: Sequence[int]) -> sitk.Image:
    """Wrap a (z, y, x) array cut from ``volume`` at ``start_zyx`` with its true geometry."""
    image = sitk.GetImageFromArray(array)
    dz, dy, dx = volume.spacing_zyx_mm
    direction = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)
    offset_xyz = np.array([start_zyx[2] * dx, start_zyx[1] * dy, start_zyx[0] * dz])
    origin = np.asarray(volume.origin_xyz_mm, dtype=np.float64) + direction @ offset_xyz
    image.SetSpacing((float(dx), float(dy), float(dz)))
    image.SetOrigin(tuple(float(value) for value in origin))
    image.SetDirection(tuple(float(value) for value in direction.flatten()))
    return image


@dataclass(frozen=True)
class _Grid:
    """An output grid in the whole volume's continuous index space (x, y, z order)."""

    start_index_xyz: np.ndarray
    size_xyz: np.ndarray
    spacing_xyz_mm: np.ndarray
    step_xyz: np.ndarray  # output spacing in input voxels


def _pyradiomics_grid(
    volume: Volume, bbox_lo_xyz: np.ndarray, bbox_size_xyz: np.ndarray, settings: RadiomicsSettings
) -> _Grid | None:
    """Return the grid pyradiomics' ``resampleImage`` builds for this mask, or None if it
    would not interpolate because the spacing already matches.

    Mirrors pyradiomics 3.1 ``imageoperations.resampleImage``: axes where the mask spans one
    voxel keep their spacing, and the grid starts at the bounding box minus ``padDistance``
    output voxels, clipped to the image.
    """
    target = settings.resampled_spacing_xyz_mm
    if target is None:
        return None
    dz, dy, dx = volume.spacing_zyx_mm
    spacing = np.array([dx, dy, dz], dtype=np.float64)
    size = np.array(volume.shape[::-1], dtype=np.float64)
    resampled = np.array(target, dtype=np.float64)
    resampled = np.where(resampled == 0, spacing, resampled)
    resampled = np.where(bbox_size_xyz != 1, resampled, spacing)
    if np.allclose(spacing, resampled):
        return None
    pad = float(settings.pyradiomics["setting"].get("padDistance", 5))
    ratio = spacing / resampled
    lower = np.floor((bbox_lo_xyz - 0.5) * ratio - pad)
    upper = np.ceil((bbox_lo_xyz + bbox_size_xyz - 0.5) * ratio + pad)
    max_upper = np.ceil(size * ratio) - 1
    lower = np.where(lower < 0, 0, lower)
    upper = np.where(upper > max_upper, max_upper, upper)
    new_size = (upper - lower + 1).astype(int)
    origin_index = 0.5 * (resampled - spacing) / spacing + lower / ratio
    return _Grid(origin_index, new_size, resampled, 1.0 / ratio)


def _resample_crop(
    volume: Volume, mask: np.ndarray, grid: _Grid, margin: int
) -> tuple[sitk.Image, sitk.Image, tuple[tuple[int, int], ...]]:
    """Resample the image from a crop (the grid's region plus ``margin`` voxels) and the mask
    from the whole volume onto the grid."""
    first = grid.start_index_xyz
    last = grid.start_index_xyz + (grid.size_xyz - 1) * grid.step_xyz
    shape_xyz = np.array(volume.shape[::-1])
    lo_xyz = np.maximum(np.floor(first).astype(int) - margin, 0)
    hi_xyz = np.minimum(np.ceil(last).astype(int) + margin + 1, shape_xyz)
    lo_zyx, hi_zyx = lo_xyz[::-1], hi_xyz[::-1]
    region = tuple(slice(int(a), int(b)) for a, b in zip(lo_zyx, hi_zyx, strict=True))
    image = _to_sitk(np.ascontiguousarray(volume.hu[region], dtype=np.float32), volume, lo_zyx)
    # The mask is resampled from the whole volume: nearest-neighbour lookups that fall exactly
    # half-way between two voxels (0.45 mm onto 1 mm does, every 9th voxel) are decided by
    # rounding of the continuous index, which depends on the image origin. Without a B-spline
    # prefilter this costs only the output grid's voxels.
    mask_image = _to_sitk(np.ascontiguousarray(mask).view(np.uint8), volume, (0, 0, 0))

    # The grid origin is computed on the whole volume's geometry, so the crop lands on the
    # same physical points as pyradiomics' own resampling of the whole volume.
    whole = _to_sitk(np.zeros((1, 1, 1), dtype=np.uint8), volume, (0, 0, 0))
    origin = whole.TransformContinuousIndexToPhysicalPoint([float(value) for value in first])
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing([float(value) for value in grid.spacing_xyz_mm])
    resampler.SetOutputDirection(whole.GetDirection())
    resampler.SetSize([int(value) for value in grid.size_xyz])
    resampler.SetOutputOrigin(origin)
    resampler.SetOutputPixelType(image.GetPixelID())
    resampler.SetInterpolator(sitk.sitkBSpline)
    resampled_image = resampler.Execute(image)
    resampler.SetOutputPixelType(mask_image.GetPixelID())
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampled_mask = resampler.Execute(mask_image)
    crop = tuple((int(a), int(b)) for a, b in zip(lo_zyx, hi_zyx, strict=True))
    return resampled_image, resampled_mask, crop


def _new_extractor(params: dict[str, Any]) -> featureextractor.RadiomicsFeatureExtractor:
    with warnings.catch_warnings():
        # pykwalify, which validates the parameters, loads its schema extension with the
        # deprecated importlib load_module() on every call (pyradiomics-bhklab 3.1.4).
        warnings.simplefilter("ignore", DeprecationWarning)
        return featureextractor.RadiomicsFeatureExtractor(params)


_FEATURE_NAME_CACHE: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}


def _expected_feature_names(settings: RadiomicsSettings) -> tuple[str, ...]:
    """Return every feature name the settings produce, from a reference sphere of 4 mm radius."""
    key = (settings.sha256, settings.enabled_optional)
    if key not in _FEATURE_NAME_CACHE:
        _FEATURE_NAME_CACHE[key] = _reference_feature_names(settings)
    return _FEATURE_NAME_CACHE[key]


def _reference_feature_names(settings: RadiomicsSettings) -> tuple[str, ...]:
    z, y, x = np.mgrid[-8:9, -8:9, -8:9]
    sphere = (x**2 + y**2 + z**2 <= 16).astype(np.uint8)
    rng = np.random.default_rng(0)
    hu = (60.0 + 20.0 * rng.standard_normal(sphere.shape)).astype(np.float32)
    reference = Volume(
        hu=hu,
        spacing_zyx_mm=(1.0, 1.0, 1.0),
        origin_xyz_mm=(0.0, 0.0, 0.0),
        direction=np.eye(3),
        sop_instance_uids=[],
    )
    image = _to_sitk(reference.hu, reference, (0, 0, 0))
    mask = _to_sitk(sphere, reference, (0, 0, 0))
    extractor = _new_extractor(settings.extractor_params(resample=False))
    result = extractor.execute(image, mask, label=1)
    return tuple(name for name in result if not name.startswith("diagnostics_"))


def _feature_class(name: str) -> str:
    # Names are <image type>_<feature class>_<feature>, e.g. original_glcm_Contrast.
    parts = name.split("_")
    return parts[1] if len(parts) >= 3 else "unknown"


def extract_lesion_features(
    volume: Volume,
    labels: np.ndarray,
    label: int,
    settings: RadiomicsSettings | None = None,
    *,
    crop: bool = True,
) -> LesionFeatures:
    """Compute radiomics features of one labelled lesion.

    With ``crop=False`` pyradiomics resamples the whole volume itself (the slow reference
    path). A lesion that is empty after resampling, or too small for a feature class, keeps
    its row with NaN values and the affected classes in ``too_small``.
    """
    settings = settings or load_settings()
    started = time.perf_counter()
    mask = labels == label
    voxel_count = int(mask.sum())
    volume_ml = voxel_count * volume.voxel_volume_ml
    # bool and uint8 share one byte per voxel, so a view hashes the same bytes without a copy.
    mask_sha256 = sha256_array(mask.view(np.uint8))
    expected = _expected_feature_names(settings)
    nan_features = dict.fromkeys(expected, math.nan)
    all_classes = sorted({_feature_class(name) for name in expected})
    if voxel_count == 0:
        return LesionFeatures(
            label,
            0,
            0.0,
            nan_features,
            all_classes,
            mask_sha256,
            None,
            0.0,
            "label not present in the mask",
        )

    nonzero = np.nonzero(mask)
    lo_zyx = np.array([int(axis.min()) for axis in nonzero])
    hi_zyx = np.array([int(axis.max()) for axis in nonzero])
    grid = _pyradiomics_grid(
        volume, lo_zyx[::-1].astype(float), (hi_zyx - lo_zyx + 1)[::-1].astype(float), settings
    )

    crop_zyx: tuple[tuple[int, int], ...] | None = None
    if crop and grid is not None:
        image, mask_image, crop_zyx = _resample_crop(
            volume, mask, grid, settings.bbox_margin_voxels
        )
        params = settings.extractor_params(resample=False)
    elif crop:
        # No interpolation needed: cut the bounding box with pyradiomics' own padding.
        pad = int(settings.pyradiomics["setting"].get("padDistance", 5))
        lo = np.maximum(lo_zyx - pad, 0)
        hi = np.minimum(hi_zyx + pad + 1, np.array(volume.shape))
        region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        image = _to_sitk(np.ascontiguousarray(volume.hu[region], dtype=np.float32), volume, lo)
        mask_image = _to_sitk(mask[region].astype(np.uint8), volume, lo)
        crop_zyx = tuple((int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        params = settings.extractor_params(resample=True)
    else:
        image = _to_sitk(np.ascontiguousarray(volume.hu, dtype=np.float32), volume, (0, 0, 0))
        mask_image = _to_sitk(mask.astype(np.uint8), volume, (0, 0, 0))
        params = settings.extractor_params(resample=True)

    extractor = _new_extractor(params)
    try:
        with warnings.catch_warnings():
            # numpy warns "Mean of empty slice" inside pyradiomics' first-order features of
            # lesions with very few voxels; the NaN it returns is reported via too_small.
            warnings.simplefilter("ignore", RuntimeWarning)
            result = extractor.execute(image, mask_image, label=1)
    except ValueError as error:
        # pyradiomics' checkMask raises ValueError when the label vanished after resampling
        # (a lesion thinner than the 1 mm grid can fall between grid points).
        logger.warning("Lesion %d has no voxels left for radiomics: %s", label, error)
        return LesionFeatures(
            label,
            voxel_count,
            volume_ml,
            nan_features,
            all_classes,
            mask_sha256,
            crop_zyx,
            time.perf_counter() - started,
            f"no features: {error}",
        )

    features = dict(nan_features)
    for name in expected:
        value = result.get(name)
        if value is not None:
            features[name] = float(value)
    too_small = {
        _feature_class(name) for name, value in features.items() if not math.isfinite(value)
    }
    grid_spacing = grid.spacing_xyz_mm if grid is not None else np.array(volume.spacing_zyx_mm)
    resampled_voxels = _resampled_voxel_count(features, float(np.prod(grid_spacing)))
    for feature_class, minimum in settings.minimum_voxels.items():
        if resampled_voxels < minimum:
            too_small.add(feature_class)
    for name in features:
        if _feature_class(name) in too_small:
            features[name] = math.nan
    return LesionFeatures(
        label,
        voxel_count,
        volume_ml,
        features,
        sorted(too_small),
        mask_sha256,
        crop_zyx,
        time.perf_counter() - started,
    )


def _resampled_voxel_count(features: dict[str, float], grid_voxel_mm3: float) -> float:
    """Return the ROI's voxel count on the grid the features were computed on.

    pyradiomics' shape VoxelVolume is the voxel count times the grid's voxel volume. When the
    shape class is off or failed, the count is unknown and returned as infinite.
    """
    voxel_volume = features.get("original_shape_VoxelVolume", math.nan)
    if not math.isfinite(voxel_volume):
        return math.inf
    return voxel_volume / grid_voxel_mm3


def aggregate_lesions(
    lesions: Sequence[LesionFeatures], feature_names: Sequence[str]
) -> dict[str, float]:
    """Aggregate lesion features to one case vector.

    ``largest_<feature>`` is the value of the lesion with the most voxels and ``wmean_<feature>``
    the volume-weighted mean over lesions where the feature is finite. ``n_lesions`` and
    ``total_volume_ml`` are added; a case without lesions has NaN features.
    """
    aggregate: dict[str, float] = {
        "n_lesions": float(len(lesions)),
        "total_volume_ml": float(sum(lesion.volume_ml for lesion in lesions)),
    }
    largest = max(lesions, key=lambda lesion: lesion.voxel_count, default=None)
    for name in feature_names:
        aggregate[f"largest_{name}"] = (
            math.nan if largest is None else largest.features.get(name, math.nan)
        )
        values = np.array(
            [lesion.features.get(name, math.nan) for lesion in lesions], dtype=np.float64
        )
        weights = np.array([lesion.volume_ml for lesion in lesions], dtype=np.float64)
        finite = np.isfinite(values) & (weights > 0)
        aggregate[f"wmean_{name}"] = (
            float(np.average(values[finite], weights=weights[finite])) if finite.any() else math.nan
        )
    return aggregate


def case_feature_names(settings: RadiomicsSettings | None = None) -> list[str]:
    """Return the names of the per-case aggregate vector, in a fixed order."""
    names = _expected_feature_names(settings or load_settings())
    return ["n_lesions", "total_volume_ml"] + [
        f"{prefix}_{name}" for name in names for prefix in ("largest", "wmean")
    ]


def extract_case_features(
    volume: Volume,
    labels: np.ndarray,
    lesion_labels: Sequence[int] | None = None,
    settings: RadiomicsSettings | None = None,
) -> CaseFeatures:
    """Compute features of every lesion in ``labels`` (int zyx, 0 = background) and the case.

    ``lesion_labels`` restricts extraction to those labels; by default every non-zero label.
    """
    settings = settings or load_settings()
    if labels.shape != volume.shape:
        raise ValueError(f"label array has shape {labels.shape} but the volume has {volume.shape}")
    if lesion_labels is None:
        lesion_labels = [int(value) for value in np.unique(labels) if value != 0]
    started = time.perf_counter()
    lesions = [
        extract_lesion_features(volume, labels, int(label), settings) for label in lesion_labels
    ]
    names = _expected_feature_names(settings)
    aggregate = aggregate_lesions(lesions, names)
    provenance = {
        "pyradiomics_version": pyradiomics_version(),
        **settings.provenance(),
        "image_sha256": sha256_array(np.asarray(volume.hu, dtype=np.float32)),
        # asarray copies only when the labels are not int32 already.
        "mask_sha256": sha256_array(np.asarray(labels, dtype=np.int32)),
        "series_instance_uid": volume.series_instance_uid,
        "seconds": time.perf_counter() - started,
    }
    logger.info("Extracted radiomics for %d lesions in %.2f s", len(lesions), provenance["seconds"])
    return CaseFeatures(lesions, aggregate, provenance)
