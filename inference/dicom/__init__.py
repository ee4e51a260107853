"""DICOM input: find series among arbitrary files, choose one, and load it as an HU volume."""

from .headers import InstanceInfo, PixelEncoding, WindowPreset
from .load import LoadLimits, load_study, load_volume
from .pixels import read_instance_hu
from .scan import ScanResult, SeriesInfo, SkippedFile, StudyInfo, scan_buffers, scan_paths

__all__ = [
    "InstanceInfo",
    "LoadLimits",
    "PixelEncoding",
    "ScanResult",
    "SeriesInfo",
    "SkippedFile",
    "StudyInfo",
    "WindowPreset",
    "load_study",
    "load_volume",
    "read_instance_hu",
    "scan_buffers",
    "scan_paths",
]
