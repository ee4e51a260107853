"""Typed errors raised by the pipeline.

Each error carries a stable ``code`` for machines and a message for people that names the file
or field, the fault, and what to do next.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base class of every error the pipeline raises on bad input."""

    code = "inference_error"

    def __init__(self, message: str, *, path: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "path": self.path}


class DicomReadError(InferenceError):
    """A file is not readable DICOM, or lacks an attribute the pipeline needs."""

    code = "dicom_read_error"


class NoUsableSeriesError(InferenceError):
    """No series in the input qualifies for analysis."""

    code = "no_usable_series"


class GeometryError(InferenceError):
    """Slice positions or orientations do not form a valid volume."""

    code = "geometry_error"


class PixelDataError(InferenceError):
    """Pixel data cannot be decoded or converted to Hounsfield units."""

    code = "pixel_data_error"


class VolumeTooLargeError(InferenceError):
    """A series exceeds the configured size limit."""

    code = "volume_too_large"


class MaskError(InferenceError):
    """A user-supplied lesion mask does not fit the volume."""

    code = "mask_error"


class ModelArtifactError(InferenceError):
    """A model artifact is missing, tampered with, or in an unsafe format."""

    code = "model_artifact_error"
