"""The CT volume in Hounsfield units that every later pipeline step consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

NoteLevel = Literal["info", "warning", "correction"]


@dataclass(frozen=True)
class Note:
    """One decision, correction or warning recorded while building a volume."""

    level: NoteLevel
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "code": self.code, "message": self.message}


@dataclass
class Volume:
    """A CT volume on a regular grid.

    ``hu`` has shape (z, y, x) and dtype float32, in Hounsfield units. ``padding_mask`` marks
    voxels that were padding or outside the scanned field; they hold -1000 HU in ``hu`` and are
    excluded from statistics. ``direction`` is a 3x3 matrix whose columns are the patient-space
    (LPS) unit vectors of the x (column), y (row) and z (slice) axes. ``origin_xyz_mm`` is the
    patient-space position of voxel (0, 0, 0).

    ``sop_instance_uids`` has one entry per slice in slice order, except after resampling
    along z (a ``resampled`` or ``gap`` note), where it lists the source images in order.
    ``frame_numbers`` gives the 1-based frame of each entry when the slices come from a
    multi-frame image (the SOPInstanceUID then repeats); it is empty otherwise.
    """

    hu: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: np.ndarray
    sop_instance_uids: list[str]
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    padding_mask: np.ndarray | None = None
    notes: list[Note] = field(default_factory=list)
    frame_numbers: list[int] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.hu.shape
        return (int(z), int(y), int(x))

    @property
    def voxel_volume_ml(self) -> float:
        dz, dy, dx = self.spacing_zyx_mm
        return dz * dy * dx / 1000.0

    @property
    def warnings(self) -> list[Note]:
        return [note for note in self.notes if note.level != "info"]

    def add_note(self, level: NoteLevel, code: str, message: str) -> None:
        self.notes.append(Note(level, code, message))
