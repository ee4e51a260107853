"""Load a chosen series as a float32 HU volume on a regular grid."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import GeometryError, NoUsableSeriesError, PixelDataError, VolumeTooLargeError
from ..volume import Volume
from .geometry import GeometryPlan, file_names, plan_geometry
from .headers import InstanceInfo, transfer_syntax_name
from .pixels import (
    AIR_CHECK_HU,
    AIR_HU,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    SliceStats,
    buffer_dtype,
    decode_stored,
    empty_aligned,
    frame_buffer,
    jpeg_ls_near,
    native_stored_range,
    stored_to_hu,
    stored_to_hu_into,
    zeros_unwritten,
)
from .scan import ScanResult, SeriesInfo, scan_paths

logger = logging.getLogger(__name__)

# Transfer syntaxes whose codecs may discard information (PS3.5 section 8 and 10). JPEG 2000
# "Image Compression" (.91) and HTJ2K (.203) allow lossy coding, so they count as lossy here
# even though some files are coded losslessly.
LOSSY_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.203",
    }
)


# Threads that read and convert slices. File reads and numpy release the GIL, but on a busy
# 2-core machine a second thread made loading 5% slower at the median of 25 runs, so the
# default is 1. NOTE: the fastest of those runs was 12% faster with 2 threads, so a machine
# with idle cores may gain from 2 (not measured).
LOAD_THREADS = 1


@dataclass(frozen=True)
class LoadLimits:
    """Size limits checked from headers before any pixel is decoded.

    The defaults admit a 2,000-slice series of 512x512 images (2 GiB as float32); a
    1024x1024 series of more than 512 slices needs a larger ``max_voxels``.
    """

    max_slices: int = 2000
    max_voxels: int = 512 * 512 * 2048


def _check_limits(
    series: SeriesInfo, n_slices: int, plan_rows: int, plan_cols: int, limits: LoadLimits
) -> None:
    voxels = n_slices * plan_rows * plan_cols
    if n_slices > limits.max_slices or voxels > limits.max_voxels:
        raise VolumeTooLargeError(
            f"{series.label} would be {n_slices} slices of {plan_rows}x{plan_cols} "
            f"({voxels / 1e6:.0f} million voxels, {voxels * 4 / 2**30:.1f} GiB as float32); the "
            f"limit is {limits.max_slices} slices and {limits.max_voxels / 1e6:.0f} million "
            "voxels. Choose a thicker reconstruction, or raise LoadLimits if the machine has "
            "the memory.",
            path=series.instances[0].path if series.instances else None,
            code="volume_too_large",
        )


def _read_slice(
    info: InstanceInfo, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, SliceStats]:
    return stored_to_hu(decode_stored(info), info.encoding, info.label, info.path, out=out)


def _check_duplicates(plan: GeometryPlan) -> list[str]:
    """Compare images that share a position; return notes for exact copies dropped.

    Raises GeometryError for different images at one position, because stacking or averaging
    them would invent anatomy and only a person can decide which one is right. Every file at
    every conflicting position is named, so that one correction fixes them all.
    """
    messages: list[str] = []
    conflicts: list[str] = []
    first_conflict: InstanceInfo | None = None
    for index, others in plan.duplicates.items():
        reference = plan.slices[index]
        reference_hu, _, _ = _read_slice(reference)
        differing: list[InstanceInfo] = []
        for other in others:
            other_hu, _, _ = _read_slice(other)
            offset_mm = float(
                np.linalg.norm(
                    np.subtract(
                        other.position_xyz_mm or (0.0, 0.0, 0.0),
                        reference.position_xyz_mm or (0.0, 0.0, 0.0),
                    )
                )
            )
            if np.array_equal(reference_hu, other_hu):
                moved = f", position {offset_mm:.2f} mm apart" if offset_mm > 0.05 else ""
                messages.append(f"{other.label} (copy of {reference.label}{moved})")
                continue
            differing.append(other)
        if differing:
            first_conflict = first_conflict or differing[0]
            conflicts.append(
                f"at {plan.positions_mm[index]:.1f} mm: "
                + ", ".join(info.label for info in [reference, *differing])
            )
    if conflicts:
        raise GeometryError(
            f"different images at the same position along the slice normal ({'; '.join(conflicts)}). "
            "They were not stacked or averaged; remove the wrong ones, or upload them as "
            "separate series.",
            path=first_conflict.path if first_conflict else None,
            code="conflicting_slices",
        )
    return messages


def load_volume(
    series: SeriesInfo,
    *,
    limits: LoadLimits | None = None,
    allow_gaps: bool = False,
    target_spacing_mm: float | None = None,
) -> Volume:
    """Load ``series`` as a Volume in HU, ordered along the slice normal.

    Every correction and warning is recorded in ``Volume.notes``. Raises GeometryError,
    PixelDataError or VolumeTooLargeError with the file and fault named.
    """
    limits = limits or LoadLimits()
    if not series.instances:
        raise NoUsableSeriesError(
            f"{series.label} has no images to load ({series.reason})",
            code="empty_series",
        )
    first = series.instances[0]
    # Reject oversized input from the header alone, before geometry work or decoding.
    _check_limits(series, len(series.instances), first.rows, first.columns, limits)
    plan = plan_geometry(
        series.instances, allow_gaps=allow_gaps, target_spacing_mm=target_spacing_mm
    )
    n_out = len(plan.grid_positions_mm)
    _check_limits(series, n_out, first.rows, first.columns, limits)

    dropped = _check_duplicates(plan)
    hu = empty_aligned((n_out, first.rows, first.columns), np.float32)
    padding = zeros_unwritten(hu.shape)
    totals = SliceStats()
    missing_rescale: list[InstanceInfo] = []

    def source(index: int, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        info = plan.slices[index]
        slice_hu, slice_padding, stats = _read_slice(info, out=out)
        totals.add(stats)
        if not info.encoding.rescale_present:
            missing_rescale.append(info)
        shift = plan.shift_rc_px[index]
        if np.any(np.abs(shift) > 1e-3):
            slice_hu = ndimage.shift(slice_hu, shift, order=1, mode="constant", cval=AIR_HU)
            moved = ndimage.shift(
                slice_padding.astype(np.float32), shift, order=1, mode="constant", cval=1.0
            )
            slice_padding = moved > 0.5
            slice_hu[slice_padding] = AIR_HU
        return slice_hu, slice_padding

    if not plan.needs_resampling:
        needs_shift = (np.abs(plan.shift_rc_px) > 1e-3).any(axis=1).tolist()
        for index, stats in enumerate(_read_slices_into(plan, needs_shift, hu, padding)):
            info = plan.slices[index]
            if stats is None:
                # A sheared slice (gantry tilt) is moved in-plane, the slow path.
                slice_hu, padding[index] = source(index)
                hu[index] = slice_hu
                continue
            totals.add(stats)
            if not info.encoding.rescale_present:
                missing_rescale.append(info)
    else:
        _resample_along_normal(plan, source, hu, padding)

    volume = Volume(
        hu=hu,
        spacing_zyx_mm=(
            float(plan.spacing_mm),
            float(plan.pixel_spacing_rc_mm[0]),
            float(plan.pixel_spacing_rc_mm[1]),
        ),
        origin_xyz_mm=tuple(float(v) for v in plan.origin_xyz_mm),  # type: ignore[arg-type]
        direction=plan.direction,
        sop_instance_uids=[info.sop_instance_uid for info in plan.slices],
        series_instance_uid=series.series_instance_uid,
        study_instance_uid=series.study_instance_uid,
        padding_mask=padding,
        frame_numbers=[
            info.frame_index + 1 for info in plan.slices if info.frame_index is not None
        ],
    )
    if missing_rescale:
        _check_assumed_rescale(hu, padding, missing_rescale)
    _record_notes(volume, series, plan, dropped, totals, missing_rescale)
    logger.info(
        "loaded series: %d slices of %dx%d, spacing %.3f mm, %d notes",
        n_out,
        first.rows,
        first.columns,
        plan.spacing_mm,
        len(volume.notes),
    )
    return volume


def _check_assumed_rescale(
    hu: np.ndarray, padding: np.ndarray, missing_rescale: list[InstanceInfo]
) -> None:
    """Reject a volume whose assumed rescale values leave it without any air.

    Slope 1 and intercept 0 are right for scanners that store HU directly, but when a value
    was merely dropped (often the intercept -1024), every HU is shifted and air reads near 0.
    """
    lowest = float(np.min(hu, where=~padding, initial=np.inf))
    if lowest > AIR_CHECK_HU:
        first = missing_rescale[0]
        assumed = ", ".join(first.encoding.rescale_missing)
        raise PixelDataError(
            f"{first.label}: {assumed}, so slope 1 and intercept 0 were assumed, but then no "
            f"voxel of the volume is below {AIR_CHECK_HU:g} HU (lowest {lowest:.0f} HU), while "
            "air reads about -1000 HU: the assumption is wrong. Add the missing "
            "RescaleIntercept/RescaleSlope or re-export the series from the scanner.",
            path=first.path,
            code="implausible_hu",
        )


def _read_slices_into(
    plan: GeometryPlan, needs_shift: list[bool], hu: np.ndarray, padding: np.ndarray
) -> Iterator[SliceStats | None]:
    """Decode every unshifted slice of ``plan`` into ``hu`` and ``padding``, in order.

    Yields the counts of each slice, or None for a slice that needs an in-plane shift, which
    the caller reads itself. File reading and numpy conversion release the GIL, so
    :data:`LOAD_THREADS` threads overlap them; each uses one frame buffer, so memory beyond
    the volume stays a few slices. ``padding`` must be all False.
    """
    local = threading.local()

    def read(index: int) -> SliceStats | None:
        if needs_shift[index]:
            return None
        info = plan.slices[index]
        buffer = getattr(local, "buffer", None)
        if (
            buffer is None
            or buffer.shape != (info.rows, info.columns)
            or buffer.dtype != buffer_dtype(info)
        ):
            buffer = local.buffer = frame_buffer(info)
        stored = decode_stored(info, buffer)
        return stored_to_hu_into(
            stored,
            info.encoding,
            info.label,
            info.path,
            hu[index],
            padding[index],
            native_stored_range(info),
        )

    indices = range(len(plan.slices))
    if LOAD_THREADS <= 1 or len(plan.slices) < 2 * LOAD_THREADS:
        yield from map(read, indices)
        return
    with ThreadPoolExecutor(max_workers=LOAD_THREADS, thread_name_prefix="dicom-load") as pool:
        # map() returns results in slice order and re-raises the first slice's error.
        yield from pool.map(read, indices)


def _resample_along_normal(
    plan: GeometryPlan,
    source: Callable[[int], tuple[np.ndarray, np.ndarray]],
    hu: np.ndarray,
    padding: np.ndarray,
) -> None:
    """Fill the regular grid by linear interpolation between the two nearest source slices.

    Source slices are decoded once each, in order, and at most two are held at a time.
    """
    positions = plan.positions_mm
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for out_index, position in enumerate(plan.grid_positions_mm):
        upper = int(np.searchsorted(positions, position - 1e-6))
        upper = min(max(upper, 0), len(positions) - 1)
        if abs(positions[upper] - position) <= 1e-6 or upper == 0:
            lower, weight = upper, 0.0
        else:
            lower = upper - 1
            weight = float((position - positions[lower]) / (positions[upper] - positions[lower]))
        for stale in [k for k in cache if k < lower]:
            del cache[stale]
        for needed in {lower, upper}:
            if needed not in cache:
                cache[needed] = source(needed)
        low_hu, low_padding = cache[lower]
        if weight == 0.0:
            hu[out_index] = low_hu
            padding[out_index] = low_padding
            continue
        high_hu, high_padding = cache[upper]
        hu[out_index] = (1.0 - weight) * low_hu + weight * high_hu
        padding[out_index] = low_padding | high_padding
        hu[out_index][padding[out_index]] = AIR_HU


def _record_jpeg_ls_notes(volume: Volume, plan: GeometryPlan) -> None:
    """Warn when JPEG-LS slices were coded with NEAR > 0, so their HU are approximate.

    Rule: a slice declared JPEG-LS Lossless whose codestream has NEAR > 0 is loaded with a
    warning (its values are within NEAR stored units of the originals, not equal to them);
    a JPEG-LS Near-Lossless slice gets its NEAR recorded. Nothing is rejected: the error
    is bounded and small next to image noise, and the note makes it visible.
    """
    near_by_syntax: dict[str, list[tuple[int, InstanceInfo]]] = {}
    for info in plan.slices:
        if info.transfer_syntax_uid not in (JPEG_LS_LOSSLESS, JPEG_LS_NEAR_LOSSLESS):
            continue
        near = jpeg_ls_near(info)
        if near is not None:
            near_by_syntax.setdefault(info.transfer_syntax_uid, []).append((near, info))

    coded_lossy = [(near, info) for near, info in near_by_syntax.get(JPEG_LS_LOSSLESS, []) if near]
    if coded_lossy:
        near, info = max(coded_lossy, key=lambda item: item[0])
        volume.add_note(
            "warning",
            "jpeg_ls_near_lossless",
            f"{len(coded_lossy)} slice(s) are declared JPEG-LS Lossless "
            f"({JPEG_LS_LOSSLESS}) but were coded near-lossless (NEAR up to {near}, e.g. "
            f"{info.label}): HU are approximate, each within {_near_hu(near, info)} HU of the "
            "scanner's value. Ask the sender for a lossless or uncompressed export if exact "
            "values matter.",
        )
    declared = near_by_syntax.get(JPEG_LS_NEAR_LOSSLESS, [])
    if declared:
        near, info = max(declared, key=lambda item: item[0])
        if near:
            detail = f"HU are approximate, each within {_near_hu(near, info)} HU"
        else:
            detail = "NEAR is 0, so the values equal the originals"
        volume.add_note(
            "info",
            "jpeg_ls_near",
            f"{len(declared)} slice(s) are JPEG-LS Near-Lossless with NEAR up to {near} "
            f"(e.g. {info.label}): {detail}.",
        )


def _near_hu(near: int, info: InstanceInfo) -> str:
    return f"{near * abs(info.encoding.rescale_slope):g}"


def _record_notes(
    volume: Volume,
    series: SeriesInfo,
    plan: GeometryPlan,
    dropped: list[str],
    totals: SliceStats,
    missing_rescale: list[InstanceInfo],
) -> None:
    for note in series.notes:
        volume.notes.append(note)
    for note in plan.notes:
        volume.notes.append(note)

    if dropped:
        volume.add_note(
            "correction",
            "duplicate_dropped",
            f"{len(dropped)} exact copy(ies) of a slice dropped: {'; '.join(dropped)}",
        )

    if missing_rescale:
        assumed = sorted({part for i in missing_rescale for part in i.encoding.rescale_missing})
        volume.add_note(
            "warning",
            "rescale_missing",
            f"{', '.join(assumed)} in {len(missing_rescale)} image(s) "
            f"(e.g. {missing_rescale[0].label}); slope 1 and intercept 0 were assumed where a "
            "value is missing. Check that air reads about -1000 HU.",
        )
    repaired = sorted({i.encoding.rescale_note for i in plan.slices if i.encoding.rescale_note})
    if repaired:
        volume.add_note(
            "warning",
            "rescale_repaired",
            f"malformed rescale values read by their unambiguous meaning: {'; '.join(repaired)}",
        )

    if totals.padding or totals.out_of_field:
        volume.add_note(
            "correction",
            "padding",
            f"{totals.padding} padding pixels (PixelPaddingValue) and {totals.out_of_field} "
            "pixels outside the reconstructed field set to -1000 HU and excluded via "
            "padding_mask",
        )

    if totals.fill_pixels:
        volume.add_note(
            "correction",
            "padding_fill_value",
            f"{totals.fill_pixels} pixels hold the single value {totals.fill_hu:.0f} HU, far "
            "below air, without a PixelPaddingValue; they were taken as fill outside the "
            "reconstructed field (set to -1000 HU and excluded via padding_mask)",
        )

    if totals.capped:
        volume.add_note(
            "warning",
            "outlier_capped",
            f"{totals.capped} pixel(s) above 30710 HU (up to {totals.max_raw_hu:.0f} HU) capped "
            "to 30710 HU; such values are not measurements (a hot pixel or a corrupt value)",
        )
    monochrome1 = [i for i in plan.slices if i.encoding.photometric_interpretation == "MONOCHROME1"]
    if monochrome1:
        volume.add_note(
            "info",
            "monochrome1",
            "images are MONOCHROME1 (high values displayed dark); HU are unaffected, only the "
            "display is inverted",
        )
    syntaxes = sorted({i.transfer_syntax_uid for i in plan.slices})
    lossy = [s for s in syntaxes if s in LOSSY_TRANSFER_SYNTAXES]
    if lossy:
        volume.add_note(
            "warning",
            "lossy_compression",
            "pixel data was compressed lossily ("
            + ", ".join(transfer_syntax_name(s) for s in lossy)
            + "); HU may differ by a few units from the scanner's values",
        )

    _record_jpeg_ls_notes(volume, plan)

    histories = sorted({i.lossy_history for i in plan.slices if i.lossy_history})
    if histories and not lossy:
        # An uncompressed file can hold pixels that a PACS decompressed from lossy JPEG; the
        # header records it in LossyImageCompression even when the transfer syntax does not.
        volume.add_note(
            "warning",
            "lossy_compression",
            f"pixel data was compressed lossily before it was stored ({'; '.join(histories)}); "
            "HU may differ by a few units from the scanner's values",
        )

    if any(s not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1") for s in syntaxes):
        volume.add_note(
            "info",
            "compressed",
            "pixel data decoded from " + ", ".join(transfer_syntax_name(s) for s in syntaxes),
        )

    if plan.needs_resampling:
        volume.add_note(
            "info",
            "source_instances",
            f"{len(plan.slices)} source images resampled to {len(plan.grid_positions_mm)} "
            "slices; sop_instance_uids lists the source images in order, not one per slice",
        )

    if any(info.frame_index is not None for info in plan.slices):
        volume.add_note(
            "info",
            "multiframe",
            f"{len(plan.slices)} frames read from the per-frame functional groups of "
            f"{file_names([plan.slices[0]])} and sorted by position",
        )


class _LazyTemporaryFolder:
    """A temporary folder that is created when first used as a path and removed on exit.

    ``scan_paths`` uses its archive folder only for zip archives, so a plain folder of images
    is loaded without creating and removing a folder.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def __fspath__(self) -> str:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix=self._prefix)
        return self._folder.name

    def __enter__(self) -> _LazyTemporaryFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()


def load_study(
    path_or_paths: str | Path | Sequence[str | Path],
    *,
    limits: LoadLimits | None = None,
    allow_gaps: bool = False,
) -> tuple[Volume, ScanResult]:
    """Scan files, folders or zip archives, choose a series, and load it.

    Zip archives are extracted to a temporary folder that is removed before returning, so the
    paths of their files in the ScanResult no longer exist. ``ScanResult.to_dict`` shows them
    as ``archive.zip/name``. Raises NoUsableSeriesError, listing every series and why it was
    not chosen, when none qualifies.
    """
    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    for path in paths:
        if not os.path.exists(path):
            raise NoUsableSeriesError(
                f"{path}: file or folder not found; check the path",
                path=str(path),
                code="path_not_found",
            )
    with _LazyTemporaryFolder(prefix="ceht-archive-") as archive_dir:
        scan = scan_paths(paths, archive_dir=archive_dir)
        chosen = scan.chosen
        if chosen is None:
            raise NoUsableSeriesError(
                "no series qualifies for analysis (an axial CT series of at least 3 images "
                f"is needed): {describe_rejections(scan)}",
                path=str(paths[0]) if paths else None,
            )
        truncated = [note for note in scan.notes if note.code == "truncated_files"]
        try:
            volume = load_volume(chosen, limits=limits, allow_gaps=allow_gaps)
        except GeometryError as exc:
            lost = [note for note in chosen.notes if note.code == "truncated_in_series"]
            if exc.code == "missing_slices" and (lost or truncated):
                exc.message = f"{exc.message} Note: {(lost or truncated)[0].message}"
                exc.args = (exc.message,)
            raise
        volume.notes.extend(truncated)
    return volume, scan


def describe_rejections(scan: ScanResult) -> str:
    """Summarise why no series of ``scan`` was chosen, for error messages."""
    if scan.series:
        return "; ".join(f"{s.label}: {s.reason}" for s in scan.series)
    details = f"no DICOM image among {scan.n_files} file(s)"
    if scan.skipped:
        details += f" (skipped: {scan.skipped_by_reason()})"
    # An archive may have held the whole study, so its reason is the one the user needs.
    archives = [item for item in scan.skipped if item.reason == "archive"]
    for item in archives[:3]:
        details += f"; {item.detail}"
    return details
