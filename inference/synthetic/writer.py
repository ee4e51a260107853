"""Write synthetic studies as CT Image Storage DICOM files and true masks as NIfTI and npz.

Every byte depends only on the arguments: UIDs are hashes of the cohort seed and the case code,
dates and times come from the case's invented timeline, and the compressed mask files carry
fixed timestamps.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from inference.synthetic.phantom import Grid

# Stored value = HU + 1024 in 12 unsigned bits, as most scanners write head CT.
RESCALE_INTERCEPT_HU = -1024.0
_MAX_STORED = 4095
# The earliest date a ZIP entry can hold; fixed so that the same mask gives the same bytes.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class SeriesInfo:
    """The invented identifiers and timeline of one synthetic study."""

    cohort_seed: int
    code: str
    role: str
    acquired_at: datetime
    series_number: int
    generator_version: str
    patient_sex: str
    patient_age_years: int

    def uid(self, *parts: object) -> str:
        return synthetic_uid(self.cohort_seed, self.code, *parts)


def synthetic_uid(*parts: object) -> str:
    """Derive a UID under the 2.25 root from a hash of ``parts``, the same on every run.

    pydicom's ``generate_uid`` ignores its entropy sources under the 2.25 root and draws a
    random UUID, so the 128-bit integer is taken from SHA-256 here instead.
    """
    text = "\x1f".join(["ceht-review-synthetic", *map(str, parts)])
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def write_series(hu: np.ndarray, grid: Grid, out_dir: Path, info: SeriesInfo) -> list[Path]:
    """Write one axial series, one file per slice named IM0001.dcm upwards from the skull base."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = np.clip(np.rint(hu - RESCALE_INTERCEPT_HU), 0, _MAX_STORED).astype(np.uint16)
    study_uid = info.uid(info.role, "study")
    series_uid = info.uid(info.role, "series")
    frame_uid = info.uid(info.role, "frame-of-reference")
    template = _series_template(info, study_uid, series_uid, frame_uid, grid, stored.shape)
    x0, y0, z0 = grid.origin_xyz_mm
    dz = grid.spacing_zyx_mm[0]
    paths: list[Path] = []
    for k in range(stored.shape[0]):
        sop_uid = UID(info.uid(info.role, "image", k))
        # A new dict of the template's elements: the per-slice attributes below are absent
        # from the template, so setting them never changes the shared elements.
        ds = Dataset(dict(template))
        ds.file_meta = _file_meta(sop_uid)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        z_mm = z0 + k * dz
        ds.ImagePositionPatient = [f"{x0:.6g}", f"{y0:.6g}", f"{z_mm:.6g}"]
        ds.SliceLocation = f"{z_mm:.6g}"
        ds.PixelData = stored[k].tobytes()
        path = out_dir / f"IM{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _series_template(
    info: SeriesInfo,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    grid: Grid,
    shape: tuple[int, ...],
) -> Dataset:
    """Build the attributes that every slice of the series shares."""
    date_text = info.acquired_at.strftime("%Y%m%d")
    time_text = info.acquired_at.strftime("%H%M%S")
    dz, dy, dx = grid.spacing_zyx_mm
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date_text
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time_text
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "ceht-review"
    ds.InstitutionName = "SYNTHETIC"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC head NCCT"
    ds.SeriesDescription = f"SYNTHETIC head NCCT {dz:g} mm {info.role.replace('_', '-')}"
    ds.ManufacturerModelName = "synthetic head phantom"

    ds.PatientName = f"SYNTHETIC^{info.code}"
    ds.PatientID = info.code
    ds.PatientBirthDate = ""
    ds.PatientSex = info.patient_sex
    ds.PatientAge = f"{info.patient_age_years:03d}Y"
    ds.PatientIdentityRemoved = "NO"
    ds.BodyPartExamined = "HEAD"

    ds.SliceThickness = f"{dz:g}"
    ds.KVP = "120"
    ds.SoftwareVersions = info.generator_version
    ds.ConvolutionKernel = "SOFT TISSUE"
    ds.PatientPosition = "HFS"

    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = info.code.replace("SYN-", "")
    ds.SeriesNumber = info.series_number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = int(shape[1])
    ds.Columns = int(shape[2])
    ds.PixelSpacing = [f"{dy:.6g}", f"{dx:.6g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "80"
    ds.RescaleIntercept = f"{RESCALE_INTERCEPT_HU:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _file_meta(sop_uid: UID) -> FileMetaDataset:
    """File meta information for Explicit VR Little Endian CT images."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def nifti_affine(grid: Grid) -> np.ndarray:
    """Voxel (i = column, j = row, k = slice) to RAS millimetres; DICOM LPS flips x and y."""
    dz, dy, dx = grid.spacing_zyx_mm
    x0, y0, z0 = grid.origin_xyz_mm
    affine = np.diag([-dx, -dy, dz, 1.0])
    affine[:3, 3] = [-x0, -y0, z0]
    return affine


def write_masks(
    labels: np.ndarray, grid: Grid, out_dir: Path, component_types: list[str]
) -> tuple[Path, Path]:
    """Write the true label image as ``lesions.nii.gz`` and ``lesions.npz``.

    The NIfTI contains the labels in (x, y, z) order with a RAS affine. The npz contains
    ``labels`` in (z, y, x) order on the baseline grid, ``component_types`` (HT or CE for label i at
    index i - 1), ``spacing_zyx_mm`` and ``origin_xyz_mm``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # The transposed view is Fortran-ordered, which is how NIfTI stores voxels: no copy.
    image = nib.Nifti1Image(labels.transpose(2, 1, 0), nifti_affine(grid))
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = b"SYNTHETIC true lesion labels"
    nifti_path = out_dir / "lesions.nii.gz"
    # gzip with mtime 0, so the file does not change with the clock.
    nifti_path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))

    arrays = {
        "labels": labels,
        "component_types": np.array(component_types, dtype="<U2"),
        "spacing_zyx_mm": np.array(grid.spacing_zyx_mm),
        "origin_xyz_mm": np.array(grid.origin_xyz_mm),
    }
    npz_path = out_dir / "lesions.npz"
    with zipfile.ZipFile(npz_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, buffer.getvalue())
    return nifti_path, npz_path
