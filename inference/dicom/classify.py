"""Series classification and the rule that chooses the series to analyse.

The rule, applied to every CT series that is a stack of cross-sectional images:

1. soft-tissue (brain) kernel before an unknown kernel before a bone or lung kernel;
2. ORIGINAL images before DERIVED ones (reformats);
3. slice thickness closest to the target (5 mm by default: the source study analysed 5 mm
   axial non-contrast CT);
4. the most complete series (most slices);
5. then the lowest series number, then the SeriesInstanceUID, so the choice is deterministic.

Localizers, secondary captures, derived summaries, non-CT modalities, non-axial reformats and
series with fewer than :data:`MIN_SLICES` images are never chosen. Every series gets a reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .headers import ENHANCED_CT_SOP_CLASS, InstanceInfo

TARGET_SLICE_THICKNESS_MM = 5.0
MIN_SLICES = 3
# An image whose slice normal is more than 45 degrees away from the patient's feet-head axis
# is sagittal or coronal, so it is not part of an axial stack.
AXIAL_MIN_ABS_NORMAL_Z = math.cos(math.radians(45.0))

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
LOCALIZER_WORDS = frozenset(
    {"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "REF_SURVIEW", "SCANOGRAM"}
)
SUMMARY_WORDS = ("DOSE", "SUMMARY", "PATIENT_INFO", "RESULTS", "REPORT", "SCREEN")
ELIGIBLE_KINDS = frozenset({"axial", "multiframe"})

KERNEL_RANK = {"soft_tissue": 0, "unknown": 1, "bone": 2}

# Kernel names follow vendor conventions. Siemens, and vendors that copy its scheme, write a
# letter (H head, B body, J, Q), an optional r/s/v/t and a two-digit sharpness. Below 50 is a
# smooth soft-tissue kernel, and 60 or above is a sharp bone or lung kernel. GE writes words
# (STANDARD, SOFT, BONE, LUNG). Philips writes UA-UC for brain and YA-YF, D, E, L for sharp
# kernels. NOTE: other names (Canon FCxx, for example) are classified "unknown".
_SIEMENS_KERNEL = re.compile(r"^(?:[HBJQI][RSVTF]?)(\d{2})")
_BONE_WORDS = ("BONE", "SHARP", "LUNG", "DETAIL", "EDGE", "KNOCHEN")
_SOFT_WORDS = ("STANDARD", "STND", "SOFT", "BRAIN", "HEAD", "SMOOTH", "HIRN", "CEREBRUM", "STD")
_PHILIPS_SOFT = frozenset({"UA", "UB", "UC", "A", "B", "C"})
_PHILIPS_BONE = frozenset({"YA", "YB", "YC", "YD", "YE", "YF", "D", "E", "L"})


def classify_kernel(kernel: str, description: str = "") -> str:
    """Return ``soft_tissue``, ``bone`` or ``unknown`` from ConvolutionKernel and the description.

    The kernel attribute decides when it is recognised; the series description is the fallback
    because several vendors leave ConvolutionKernel empty but name the series "... BONE".
    """
    for value in kernel.upper().split("\\"):
        value = value.strip()
        if not value:
            continue
        if value in _PHILIPS_SOFT:
            return "soft_tissue"
        if value in _PHILIPS_BONE:
            return "bone"
        match = _SIEMENS_KERNEL.match(value)
        if match:
            sharpness = int(match.group(1))
            if sharpness < 50:
                return "soft_tissue"
            if sharpness >= 60:
                return "bone"
        if any(word in value for word in ("BONE", "SHARP", "LUNG", "DETAIL", "EDGE")):
            return "bone"
        if any(word in value for word in ("STANDARD", "STND", "SOFT", "BRAIN", "SMOOTH")):
            return "soft_tissue"
    words = re.findall(r"[A-Z]+", description.upper())
    if any(word in _BONE_WORDS for word in words):
        return "bone"
    if any(word in _SOFT_WORDS for word in words):
        return "soft_tissue"
    return "unknown"


def slice_normal(orientation: Sequence[float] | np.ndarray) -> np.ndarray:
    """Return the unit normal (row direction x column direction) of ImageOrientationPatient."""
    # Every image of a series has the same orientation, and np.cross costs tens of
    # microseconds on 3-vectors, so normals are cached (a new array is returned each time).
    return np.array(_slice_normal(tuple(float(v) for v in orientation[:6])))


@lru_cache(maxsize=1024)
def _slice_normal(orientation: tuple[float, ...]) -> tuple[float, ...]:
    row = np.asarray(orientation[:3], dtype=np.float64)
    column = np.asarray(orientation[3:6], dtype=np.float64)
    normal = np.cross(row, column)
    length = float(np.linalg.norm(normal))
    unit = normal / length if length > 0 else normal
    return tuple(float(v) for v in unit)


def classify_instance(info: InstanceInfo) -> tuple[str, str]:
    """Return the kind of one image and the fact that decided it."""
    if info.modality and info.modality != "CT":
        return "non_ct", f"modality {info.modality}, not CT"
    if info.rows == 0 or info.columns == 0:
        return "non_image", "no image (Rows/Columns absent): a report or other non-image object"

    image_type = "\\".join(info.image_type) or "absent"
    if info.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX):
        return (
            "secondary_capture",
            "secondary capture (screenshot or report page), no reliable Hounsfield units",
        )
    if info.encoding.samples_per_pixel != 1:
        return "secondary_capture", "colour image (SamplesPerPixel > 1), not a CT slice"
    if LOCALIZER_WORDS.intersection(info.image_type):
        return "localizer", f"localizer/scout image (ImageType {image_type})"
    if info.image_type[:1] == ("DERIVED",) and (
        "SECONDARY" in info.image_type[1:2] or any(w in image_type for w in SUMMARY_WORDS)
    ):
        return "derived", f"derived secondary image (ImageType {image_type}), e.g. a summary"
    if any(word in info.image_type for word in ("DOSE_INFO", "DOSE_REPORT")):
        return "derived", f"dose information image (ImageType {image_type})"

    if info.orientation is None and info.geometry_problem:
        return "no_geometry", f"{info.geometry_problem}; re-export the series with valid geometry"
    # An invalid (not absent) position keeps the image in its stack, so that loading names it.
    if info.orientation is None or (info.position_xyz_mm is None and not info.geometry_problem):
        return (
            "no_geometry",
            "ImagePositionPatient or ImageOrientationPatient missing, so the slice position is "
            "unknown",
        )
    normal = slice_normal(info.orientation)
    if abs(float(normal[2])) < AXIAL_MIN_ABS_NORMAL_Z:
        plane = "sagittal" if abs(float(normal[0])) >= abs(float(normal[1])) else "coronal"
        return "non_axial", f"{plane} image (slice normal {_vector_text(normal)})"

    if info.number_of_frames > 1 and info.frame_index is None:
        return (
            "multiframe_unsupported",
            f"multi-frame image ({info.number_of_frames} frames) without per-frame functional "
            "groups, so the frame positions are unknown: not supported. Export the series as "
            "single-frame images or as Enhanced CT.",
        )
    if info.sop_class_uid == ENHANCED_CT_SOP_CLASS:
        return "multiframe", "Enhanced CT multi-frame image, read from its functional groups"
    return "axial", "axial CT image"


def _vector_text(vector: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in vector) + ")"


def rank_key(
    kernel_class: str,
    derived: bool,
    thickness_mm: float | None,
    n_instances: int,
    series_number: int | None,
    series_uid: str,
    target_thickness_mm: float = TARGET_SLICE_THICKNESS_MM,
) -> tuple[int, int, float, int, int, str]:
    """Return the sort key of the choice rule; the smallest key is chosen."""
    thickness_distance = (
        abs(thickness_mm - target_thickness_mm) if thickness_mm is not None else math.inf
    )
    return (
        KERNEL_RANK.get(kernel_class, 1),
        1 if derived else 0,
        round(thickness_distance, 3),
        -n_instances,
        series_number if series_number is not None else 1 << 30,
        series_uid,
    )
