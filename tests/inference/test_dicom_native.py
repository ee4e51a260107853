"""The native header reader gives what pydicom gives, and hands unusual files to pydicom."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from inference.dicom import headers, load_study, scan_paths
from inference.dicom import load as dicom_load
from inference.dicom.headers import PixelEncoding
from inference.dicom.native import HEAD_BYTES, NativeHeader, NeedsPydicom, parse_native_header
from inference.dicom.pixels import stored_to_hu
from inference.errors import PixelDataError
from tests.inference.conftest import marker_of
from tests.shared_data import CASES_DIR, PHILIPS_STUDY_DIR, require


def native_reason(path: Path) -> str:
    """Return "native" when the fast reader takes the file, else its reason for pydicom."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
        try:
            parse_native_header(handle, head, os.path.getsize(path))
        except NeedsPydicom as reason:
            return str(reason)
    return "native"


def scan_both_ways(monkeypatch: pytest.MonkeyPatch, folder: Path, **options):
    """Scan ``folder`` with the native reader, then with pydicom alone."""
    fast = scan_paths(folder, **options)
    monkeypatch.setattr(headers, "native_headers_enabled", False)
    slow = scan_paths(folder, **options)
    monkeypatch.setattr(headers, "native_headers_enabled", True)
    return fast, slow


def assert_same_scan(fast, slow) -> None:
    # InstanceInfo and SeriesInfo are dataclasses, so == compares every field of every image.
    assert fast.series == slow.series
    assert fast.skipped == slow.skipped
    assert fast.to_dict() == slow.to_dict()


def assert_same_volume(fast, slow) -> None:
    assert np.array_equal(fast.hu, slow.hu)
    assert np.array_equal(fast.padding_mask, slow.padding_mask)
    assert fast.spacing_zyx_mm == slow.spacing_zyx_mm
    assert fast.origin_xyz_mm == slow.origin_xyz_mm
    assert fast.sop_instance_uids == slow.sop_instance_uids
    assert [note.to_dict() for note in fast.notes] == [note.to_dict() for note in slow.notes]


def shared_case_folders() -> list[str]:
    if not CASES_DIR.exists():
        return []
    folders = set()
    for root, _, files in os.walk(CASES_DIR):
        if any(not name.endswith((".json", ".md")) for name in files):
            folders.add(os.path.relpath(root, CASES_DIR))
    return sorted(folders)


@pytest.mark.parametrize("relative", shared_case_folders() or ["(shared cases absent)"])
def test_shared_case_scans_the_same_both_ways(monkeypatch, relative: str) -> None:
    folder = require(CASES_DIR / relative)
    fast, slow = scan_both_ways(monkeypatch, folder)
    assert_same_scan(fast, slow)


def test_zip_upload_scans_the_same_both_ways(monkeypatch, tmp_path: Path) -> None:
    archive = require(CASES_DIR / "C17" / "upload.zip")
    fast = scan_paths(archive, archive_dir=tmp_path / "extract")
    shutil.rmtree(tmp_path / "extract")
    monkeypatch.setattr(headers, "native_headers_enabled", False)
    slow = scan_paths(archive, archive_dir=tmp_path / "extract")
    assert_same_scan(fast, slow)


def test_philips_study_is_read_natively_and_equals_pydicom(monkeypatch) -> None:
    study = require(PHILIPS_STUDY_DIR)
    files = sorted(path for path in study.rglob("*") if path.is_file() and path.name != "LICENSE")
    reasons = [native_reason(path) for path in files]
    assert reasons.count("native") == 35
    assert len(files) == 35
    fast, slow = scan_both_ways(monkeypatch, study)
    assert_same_scan(fast, slow)
    fast_volume, _ = load_study(study)
    monkeypatch.setattr(headers, "native_headers_enabled", False)
    slow_volume, _ = load_study(study)
    assert_same_volume(fast_volume, slow_volume)


def test_shared_cases_mostly_take_the_native_path() -> None:
    require(CASES_DIR)
    reasons = [
        native_reason(Path(root) / name) for root, _, names in os.walk(CASES_DIR) for name in names
    ]
    assert reasons.count("native") >= 120
    assert "transfer syntax 1.2.840.10008.1.2.4.70" in reasons
    assert "element (5200,9229)" in reasons
    assert "element (0004,1220)" in reasons
    assert "pixel data does not end at the end of the file" in reasons


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"pixel_representation": 1, "intercept": 0.0, "padding_value": -2000},
        {"slope": 0.5, "intercept": -1024.0, "bits_stored": 12},
        {"slope": None, "intercept": None, "pixel_representation": 1},
        {"window": (["40", "400"], ["80", "1500"]), "kernel": "Hr38\\3"},
        {"window": (["40", "400"], ["80"]), "charset": None, "description": "Head 5mm "},
        {"image_type": ("DERIVED", "SECONDARY", "DOSE_INFO"), "modality": "CT"},
        {"orientation": (0, 1, 0, 0, 0, -1), "tilt_deg": 0.0},
        {"tilt_deg": 12.0},
        {"charset": "ISO_IR 192", "photometric": "MONOCHROME1"},
    ],
    ids=lambda options: ",".join(options) or "default",
)
def test_synthetic_series_scan_and_load_the_same_both_ways(
    monkeypatch, ct_series_factory, options: dict
) -> None:
    paths = ct_series_factory(n_slices=4, **options)
    assert native_reason(paths[0]) == "native"
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)
    if fast.chosen is not None:
        fast_volume = dicom_load.load_volume(fast.chosen)
        slow_volume = dicom_load.load_volume(slow.chosen)
        assert_same_volume(fast_volume, slow_volume)


def rewrite(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def test_implicit_vr_file_is_read_natively(monkeypatch, ct_series_factory) -> None:
    paths = ct_series_factory(
        n_slices=3, pixel_representation=1, intercept=0.0, padding_value=-2000
    )
    for path in paths:
        rewrite(path, lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", ImplicitVRLittleEndian))
    assert native_reason(paths[0]) == "native"
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)
    assert fast.chosen.instances[0].encoding.padding_value == -2000


def test_undefined_length_sequences_are_skipped(monkeypatch, ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3)

    def add_sequences(ds: pydicom.Dataset) -> None:
        inner = pydicom.Dataset()
        inner.ReferencedSOPInstanceUID = generate_uid()
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = generate_uid()
        item.SourceImageSequence = Sequence([inner])
        item["SourceImageSequence"].is_undefined_length = True
        ds.ReferencedImageSequence = Sequence([item, item])
        ds["ReferencedImageSequence"].is_undefined_length = True
        for sequence_item in (item, inner):
            sequence_item.is_undefined_length_sequence_item = True

    for path in paths:
        rewrite(path, add_sequences)
    assert b"\xfe\xff\xdd\xe0" in paths[0].read_bytes()  # a sequence delimiter was written
    assert native_reason(paths[0]) == "native"
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)


def test_header_longer_than_first_read_is_read_natively(monkeypatch, ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3)

    def add_long_values(ds: pydicom.Dataset) -> None:
        # A long comment before the geometry and a large private blob after it.
        ds.add_new(0x00204000, "LT", "x" * (HEAD_BYTES + 100))
        ds.add_new(0x00291010, "OB", b"\x01" * (3 * HEAD_BYTES))
        ds.add_new(0x00290010, "LO", "VENDOR")

    for path in paths:
        rewrite(path, add_long_values)
    assert native_reason(paths[0]) == "native"
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)
    assert fast.chosen.n_instances == 3


def test_file_without_preamble_goes_to_pydicom(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3, preamble=False)
    assert native_reason(paths[0]) == "no DICM preamble"


def test_big_endian_syntax_goes_to_pydicom(ct_series_factory) -> None:
    path = ct_series_factory(n_slices=3)[0]
    data = path.read_bytes()
    explicit = b"1.2.840.10008.1.2.1\x00"
    assert data.count(explicit) == 1
    path.write_bytes(data.replace(explicit, b"1.2.840.10008.1.2.2\x00"))
    assert native_reason(path) == "transfer syntax 1.2.840.10008.1.2.2"


def test_deflated_file_goes_to_pydicom(monkeypatch, ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3)
    for path in paths:
        rewrite(
            path,
            lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", DeflatedExplicitVRLittleEndian),
        )
    assert native_reason(paths[0]) == f"transfer syntax {DeflatedExplicitVRLittleEndian}"
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)


def test_multiframe_file_goes_to_pydicom(monkeypatch, ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3)

    def two_frames(ds: pydicom.Dataset) -> None:
        ds.NumberOfFrames = 2
        ds.PixelData = ds.PixelData * 2

    for path in paths:
        rewrite(path, two_frames)
    assert native_reason(paths[0]) == "multi-frame image"
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)


@pytest.mark.parametrize(
    ("charset", "raw", "reason"),
    [
        ("ISO_IR 100", "Schädel".encode("latin-1"), "non-ASCII text"),
        ("ISO_IR 192", b"Kopf \xe4 \xff", "non-ASCII text"),
        ("ISO_IR 999", b"Kopf", "character set 'ISO_IR 999'"),
        ("ISO 2022 IR 87", b"Kopf", "character set 'ISO 2022 IR 87'"),
    ],
)
def test_text_needing_a_character_set_goes_to_pydicom(
    monkeypatch, ct_series_factory, charset: str, raw: bytes, reason: str
) -> None:
    with warnings.catch_warnings():
        # pydicom warns while writing an unknown character set; reading is what is tested.
        warnings.simplefilter("ignore")
        paths = ct_series_factory(n_slices=3, charset=charset, raw_description=raw)
    assert native_reason(paths[0]) == reason
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("5_0", "a number pydicom might read differently"),
        ("inf", "a number pydicom might read differently"),
    ],
)
def test_unusual_number_goes_to_pydicom(
    monkeypatch, ct_series_factory, value: str, reason: str
) -> None:
    paths = ct_series_factory(n_slices=3)
    for path in paths:
        rewrite(path, lambda ds: setattr(ds, "SliceThickness", value))
    assert native_reason(paths[0]) == reason
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"1\\1 ", "RescaleSlope is empty or has several values"),
        (b"1e400 ", "a number too large for a float"),
        (b"0,5 ", "a number pydicom might read differently"),
    ],
)
def test_unusual_rescale_slope_goes_to_pydicom(
    monkeypatch, ct_series_factory, raw: bytes, reason: str
) -> None:
    # pydicom rejects such values when writing, so a placeholder of the same length is written
    # and its bytes are replaced.
    placeholder = "9" * len(raw)
    element_head = b"\x28\x00\x53\x10DS" + len(raw).to_bytes(2, "little")
    paths = ct_series_factory(n_slices=3, slope=float(placeholder))
    for path in paths:
        data = path.read_bytes()
        assert data.count(element_head + placeholder.encode()) == 1
        path.write_bytes(data.replace(element_head + placeholder.encode(), element_head + raw))
    assert native_reason(paths[0]) == reason
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)


def test_data_after_pixel_data_goes_to_pydicom(monkeypatch, ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3)
    for path in paths:
        rewrite(path, lambda ds: ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 64))
    assert native_reason(paths[0]) == "pixel data does not end at the end of the file"
    fast, slow = scan_both_ways(monkeypatch, paths[0].parent)
    assert_same_scan(fast, slow)


def test_truncated_file_is_still_reported_truncated(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=4)
    paths[1].write_bytes(paths[1].read_bytes()[:-500])
    assert native_reason(paths[1]) == "pixel data does not end at the end of the file"
    scan = scan_paths(paths[0].parent)
    assert [(Path(item.path).name, item.reason) for item in scan.skipped] == [
        ("IM0002.dcm", "truncated")
    ]


def test_native_header_answers_like_a_dataset(ct_series_factory) -> None:
    path = ct_series_factory(n_slices=3, window=(["40", "400"], ["80", "1500"]))[0]
    header, infos = headers.read_header(str(path))
    assert isinstance(header, NativeHeader)
    assert header.get("WindowCenter") == (40.0, 400.0)
    assert header.get("Rows") == 64
    assert header.get("ImageType") == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert "Modality" in header
    assert "NumberOfFrames" not in header
    assert header.pixel_data_offset + header.pixel_data_length == path.stat().st_size
    assert infos[0].pixel_data_length == 64 * 64 * 2


# Pixel conversion: the optimised conversion must equal the straightforward one.


def reference_stored_to_hu(stored: np.ndarray, encoding: PixelEncoding):
    """The conversion written plainly: cast, rescale, mask padding and out-of-field pixels."""
    padding = np.zeros(stored.shape, dtype=bool)
    if encoding.padding_value is not None:
        if encoding.padding_range_limit is not None:
            low = min(encoding.padding_value, encoding.padding_range_limit)
            high = max(encoding.padding_value, encoding.padding_range_limit)
            padding |= (stored >= low) & (stored <= high)
        else:
            padding |= stored == encoding.padding_value
    hu = stored.astype(np.float32)
    if encoding.rescale_slope != 1.0:
        hu *= np.float32(encoding.rescale_slope)
    if encoding.rescale_intercept != 0.0:
        hu += np.float32(encoding.rescale_intercept)
    valid = ~padding
    too_high = (hu > 30710.0) & valid
    too_low = (hu < -8192.0) & valid
    hu[too_high] = 30710.0
    padding |= too_low
    padding |= (hu < -1100.0) & ~padding
    hu[padding] = -1000.0
    return hu, padding


@pytest.mark.parametrize(
    ("dtype", "slope", "intercept", "padding_value", "padding_range_limit"),
    [
        (np.uint16, 1.0, -1024.0, None, None),
        (np.int16, 1.0, 0.0, None, None),
        (np.uint16, 0.5, -1024.0, 63536, None),
        (np.uint16, 2.5, -3000.0, None, None),
        (np.int16, 1.0, 0.0, -2000, -1990),
        (np.int16, -1.0, 0.0, None, None),
        (np.int16, 1.0, -1024.0, -3024, None),
        (np.int32, 0.75, -5.5, None, None),
    ],
)
def test_conversion_equals_plain_reference(
    dtype, slope: float, intercept: float, padding_value, padding_range_limit
) -> None:
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    low, high = max(info.min, -3100), min(info.max, 4000)
    stored = rng.integers(low, high, (64, 64)).astype(dtype)
    # A head image always contains air; without it, a hot pixel reads as a mislabelled sign.
    stored[20:30, :] = round((-1000.0 - intercept) / slope)
    if padding_value is not None:
        stored[:, :4] = padding_value
    stored[10, 10] = min(info.max, 40000 if dtype != np.int16 else info.max)
    encoding = PixelEncoding(
        bits_allocated=np.dtype(dtype).itemsize * 8,
        bits_stored=np.dtype(dtype).itemsize * 8,
        high_bit=np.dtype(dtype).itemsize * 8 - 1,
        pixel_representation=int(np.issubdtype(dtype, np.signedinteger)),
        samples_per_pixel=1,
        photometric_interpretation="MONOCHROME2",
        rescale_slope=slope,
        rescale_intercept=intercept,
        rescale_present=True,
        padding_value=padding_value,
        padding_range_limit=padding_range_limit,
    )
    expected_hu, expected_padding = reference_stored_to_hu(stored, encoding)
    hu, padding, _ = stored_to_hu(stored, encoding, "x", "x")
    assert np.array_equal(hu, expected_hu)
    assert np.array_equal(padding, expected_padding)


def test_overlay_bits_above_bits_stored_are_masked(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3, bits_stored=12)
    clean, _ = load_study(paths[0].parent)

    def set_overlay_bit(ds: pydicom.Dataset) -> None:
        pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).copy()
        pixels[:50] |= 1 << 13
        ds.PixelData = pixels.tobytes()

    rewrite(paths[1], set_overlay_bit)
    with_overlay, _ = load_study(paths[0].parent)
    assert np.array_equal(with_overlay.hu, clean.hu)
    assert with_overlay.hu[1].reshape(-1)[:50].tolist() == clean.hu[1].reshape(-1)[:50].tolist()


def test_threaded_load_equals_sequential_load(monkeypatch, large_series_dir: Path) -> None:
    monkeypatch.setattr(dicom_load, "LOAD_THREADS", 1)
    sequential, _ = load_study(large_series_dir)
    monkeypatch.setattr(dicom_load, "LOAD_THREADS", 3)
    threaded, _ = load_study(large_series_dir)
    assert_same_volume(threaded, sequential)
    assert [marker_of(s) for s in threaded.hu] == list(range(20))


def test_threaded_load_reports_the_first_bad_slice(monkeypatch, ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=8, pixel_representation=1, intercept=0.0)

    def mislabel_sign(ds: pydicom.Dataset) -> None:
        ds.PixelRepresentation = 0

    for index in (3, 6):
        rewrite(paths[index], mislabel_sign)
    monkeypatch.setattr(dicom_load, "LOAD_THREADS", 2)
    with pytest.raises(PixelDataError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "implausible_hu"
    assert error.value.message.startswith("IM0004.dcm")
