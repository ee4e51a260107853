"""User-supplied lesion masks (NIfTI or DICOM SEG) brought onto a volume's grid."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from inference.errors import MaskError
from inference.segmentation.brain import compute_brain_mask
from inference.segmentation.measures import CONNECTIVITY, measure_lesions
from inference.segmentation.result import SegmentationConfig, SegmentationResult
from inference.volume import Note, Volume

logger = logging.getLogger(__name__)

# Header differences up to these are rounding (for example PixelSpacing written with six
# significant digits) and the mask is used as it is.
SAME_GRID_TOLERANCE_MM = 0.05
SAME_DIRECTION_TOLERANCE = 1e-3
# NIfTI stores RAS; DICOM and Volume use LPS.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def volume_affine(volume: Volume) -> np.ndarray:
    """4x4 matrix from voxel (column, row, slice) indices to LPS millimetres."""
    dz, dy, dx = volume.spacing_zyx_mm
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(volume.direction, dtype=np.float64) @ np.diag([dx, dy, dz])
    affine[:3, 3] = volume.origin_xyz_mm
    return affine


def load_user_mask(
    path: str | Path, volume: Volume, config: SegmentationConfig | None = None
) -> SegmentationResult:
    """Read a NIfTI (.nii, .nii.gz) or DICOM SEG mask and measure its lesions on ``volume``.

    A mask on the volume's grid is used as it is; one on another grid is resampled by nearest
    neighbour, with a ``mask_resampled`` note. A binary mask (any single non-zero value, such
    as 1 or 255) is split into connected lesions. A mask with several values keeps each value
    as its own lesion, even when it is in several pieces. Raises ``MaskError`` when the file
    cannot be read, is not a label image or does not overlap the volume.
    """
    config = config or SegmentationConfig()
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"mask file {path} not found; upload the mask again", path=str(path))
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        data_xyz, affine = _read_nifti(path)
    else:
        data_xyz, affine = _read_dicom_seg(path)

    notes: list[Note] = []
    values_zyx = _on_volume_grid(data_xyz, affine, volume, path, notes)
    if volume.padding_mask is not None and (values_zyx[volume.padding_mask] != 0).any():
        count = int(np.count_nonzero(values_zyx[volume.padding_mask]))
        values_zyx[volume.padding_mask] = 0
        notes.append(
            Note(
                "warning",
                "mask_in_padding",
                f"{count} mask voxel(s) outside the scanned field were left out.",
            )
        )

    labels, source_values = _lesion_labels(values_zyx)
    hu = volume.hu if volume.hu.dtype == np.float32 else volume.hu.astype(np.float32)
    brain = compute_brain_mask(hu, volume.spacing_zyx_mm, config, volume.padding_mask)
    lesions = measure_lesions(hu, labels, volume, brain, config, source_values)
    if not lesions:
        notes.append(Note("warning", "mask_empty", f"The mask {path.name} contains no lesion."))
    logger.info("Read a user mask with %d lesion(s)", len(lesions))
    return SegmentationResult(labels, brain.mask, lesions, notes, source="user_mask", config=config)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            raise TypeError(f"{type(image).__name__} is not a NIfTI-1 or NIfTI-2 image")
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises several types for damaged files
        raise MaskError(
            f"mask file {path.name} is not a readable NIfTI image ({error}); export it again",
            path=str(path),
        ) from error
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise MaskError(
            f"mask {path.name} has shape {data.shape}; a 3D label image is needed",
            path=str(path),
        )
    affine = _RAS_TO_LPS @ np.asarray(image.affine, dtype=np.float64)
    return _as_labels(data, path), affine


def _read_dicom_seg(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import highdicom as hd
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises several types for non-DICOM input
        raise MaskError(
            f"mask file {path.name} is neither NIfTI (.nii, .nii.gz) nor DICOM ({error})",
            path=str(path),
        ) from error
    if getattr(dataset, "Modality", "") != "SEG":
        raise MaskError(
            f"mask file {path.name} is DICOM with Modality {getattr(dataset, 'Modality', '')!r}, "
            "not a Segmentation (SEG); upload a DICOM SEG or NIfTI mask",
            path=str(path),
        )
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset)
        seg_volume = seg.get_volume(combine_segments=True, relabel=False)
    except Exception as error:  # highdicom raises ValueError/RuntimeError for odd geometry
        raise MaskError(
            f"DICOM SEG {path.name} cannot be turned into one label volume ({error}); export "
            "non-overlapping segments on parallel, evenly spaced frames",
            path=str(path),
        ) from error
    # highdicom arrays are (slice, row, column); reorder to (column, row, slice).
    data = np.asarray(seg_volume.array).transpose(2, 1, 0)
    affine = np.asarray(seg_volume.affine, dtype=np.float64)[:, [2, 1, 0, 3]]
    return _as_labels(data, path), affine


def _as_labels(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
            raise MaskError(
                f"mask {path.name} has non-integer values (a probability map?); threshold it "
                "to integer labels first",
                path=str(path),
            )
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    if data.min() < 0:
        raise MaskError(
            f"mask {path.name} has negative values (min {data.min()}); labels must be >= 0",
            path=str(path),
        )
    return data.astype(np.int64)


def _on_volume_grid(
    data_xyz: np.ndarray, affine: np.ndarray, volume: Volume, path: Path, notes: list[Note]
) -> np.ndarray:
    """Return the mask values on the volume's (z, y, x) grid."""
    target = volume_affine(volume)
    nz, ny, nx = volume.shape
    same_shape = data_xyz.shape == (nx, ny, nz)
    position_error_mm = float(np.max(np.abs(affine[:3, 3] - target[:3, 3])))
    axes_error = float(np.max(np.abs(affine[:3, :3] - target[:3, :3])))
    if (
        same_shape
        and position_error_mm <= SAME_GRID_TOLERANCE_MM
        and axes_error <= (SAME_DIRECTION_TOLERANCE * max(volume.spacing_zyx_mm))
    ):
        if position_error_mm > 0 or axes_error > 0:
            notes.append(
                Note(
                    "info",
                    "mask_header_rounding",
                    f"The mask header differs from the volume by at most {position_error_mm:.3g} "
                    "mm; it was used on the volume's grid as it is.",
                )
            )
        return np.ascontiguousarray(data_xyz.transpose(2, 1, 0))

    try:
        to_mask = np.linalg.inv(affine) @ target
    except np.linalg.LinAlgError as error:
        raise MaskError(
            f"mask {path.name} has a singular affine; its header geometry is invalid",
            path=str(path),
        ) from error
    result = np.zeros((nz, ny, nx), dtype=np.int64)
    rows, columns = np.mgrid[0:ny, 0:nx]
    inside_any = False
    for k in range(nz):
        points = np.stack(
            [columns.ravel(), rows.ravel(), np.full(rows.size, k), np.ones(rows.size)]
        ).astype(np.float64)
        index = np.rint(to_mask @ points)[:3].astype(np.int64)
        inside = np.all((index >= 0) & (index < np.array(data_xyz.shape)[:, None]), axis=0)
        if inside.any():
            inside_any = True
            values = np.zeros(rows.size, dtype=np.int64)
            values[inside] = data_xyz[index[0, inside], index[1, inside], index[2, inside]]
            result[k] = values.reshape(ny, nx)
    if not inside_any:
        raise MaskError(
            f"mask {path.name} does not overlap the volume (its grid lies elsewhere in patient "
            "space); check that it belongs to this series",
            path=str(path),
        )
    notes.append(
        Note(
            "correction",
            "mask_resampled",
            f"The mask {path.name} is on another grid (shape {data_xyz.shape[::-1]} vs "
            f"{volume.shape}, origin off by {position_error_mm:.2f} mm); it was resampled to the "
            "volume by nearest neighbour.",
        )
    )
    return result


def _lesion_labels(values: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Number the mask's lesions 1..n and remember the mask value each came from."""
    present = np.unique(values)
    present = present[present != 0]
    labels = np.zeros(values.shape, dtype=np.int32)
    source_values: dict[int, int] = {}
    if present.size == 1:
        # A binary mask: each connected piece is one lesion.
        pieces, count = ndimage.label(values != 0, structure=CONNECTIVITY)
        labels[:] = pieces
        source_values = {index: int(present[0]) for index in range(1, count + 1)}
    else:
        for index, value in enumerate(present, start=1):
            labels[values == value] = index
            source_values[index] = int(value)
    return labels, source_values
