"""Stored values to HU: rescale, signedness, bit layout, padding, codecs, MONOCHROME1."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, JPEGLSNearLossless, RLELossless

from inference.dicom import load_study, read_instance_hu
from inference.dicom.headers import PixelEncoding
from inference.dicom.pixels import codestream_near, stored_to_hu
from inference.errors import PixelDataError
from tests.inference.conftest import phantom_slice_hu


def encoding(**changes) -> PixelEncoding:
    values = dict(
        bits_allocated=16,
        bits_stored=16,
        high_bit=15,
        pixel_representation=0,
        samples_per_pixel=1,
        photometric_interpretation="MONOCHROME2",
        rescale_slope=1.0,
        rescale_intercept=-1024.0,
        rescale_present=True,
        padding_value=None,
        padding_range_limit=None,
    )
    values.update(changes)
    return PixelEncoding(**values)


def test_uint16_with_negative_intercept_does_not_wrap() -> None:
    stored = np.array([[0, 24, 1059, 4095]], dtype=np.uint16)
    hu, padding, _ = stored_to_hu(stored, encoding(), "x", "x")
    assert hu.tolist() == [[-1024.0, -1000.0, 35.0, 3071.0]]
    assert not padding.any()


def test_padding_value_becomes_masked_air() -> None:
    stored = np.array([[63536, 1059]], dtype=np.uint16)
    hu, padding, stats = stored_to_hu(stored, encoding(padding_value=63536), "x", "x")
    assert hu.tolist() == [[-1000.0, 35.0]]
    assert padding.tolist() == [[True, False]]
    assert stats.padding == 1


def test_padding_range_is_masked() -> None:
    stored = np.array([[-2000, -1990, 35]], dtype=np.int16)
    hu, padding, _ = stored_to_hu(
        stored,
        encoding(
            pixel_representation=1,
            rescale_intercept=0.0,
            padding_value=-2000,
            padding_range_limit=-1990,
        ),
        "x",
        "x",
    )
    assert padding.tolist() == [[True, True, False]]
    assert hu[0, 2] == 35.0


def test_out_of_field_values_become_masked_air() -> None:
    stored = np.array([[-3024, -1024, 40]], dtype=np.int16)
    hu, padding, stats = stored_to_hu(
        stored, encoding(pixel_representation=1, rescale_intercept=0.0), "x", "x"
    )
    assert hu.tolist() == [[-1000.0, -1024.0, 40.0]]
    assert padding.tolist() == [[True, False, False]]
    assert stats.out_of_field == 1


def test_padding_value_written_in_file_is_masked(ct_series_factory) -> None:
    paths = ct_series_factory(pixel_representation=1, intercept=0.0, padding_value=-2000)
    volume, _ = load_study(paths[0].parent)
    assert volume.padding_mask[:, :, :3].all()
    assert (volume.hu[:, :, :3] == -1000.0).all()
    assert "padding" in [note.code for note in volume.notes]


def test_bits_stored_12_ignores_overlay_bits(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3, bits_stored=12)
    ds = pydicom.dcmread(paths[0])
    raw = np.frombuffer(ds.PixelData, dtype="<u2").copy().reshape(64, 64)
    raw[20:28, 20:28] |= 0x8000  # an overlay burnt into bit 15, above the 12 stored bits
    ds.PixelData = raw.tobytes()
    ds.save_as(paths[0])
    hu = read_instance_hu(paths[0])
    assert np.array_equal(hu, phantom_slice_hu(0).astype(np.float32))


def test_signed_data_labelled_12_bit_unsigned_is_rejected(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3, pixel_representation=1, intercept=0.0)
    ds = pydicom.dcmread(paths[0])
    ds.PixelRepresentation = 0
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(paths[0])
    with pytest.raises(PixelDataError) as error:
        read_instance_hu(paths[0])
    assert error.value.code == "implausible_bits_stored"
    assert "BitsStored 12" in error.value.message


def test_signed_12_bit_values_are_sign_extended(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3, bits_stored=12, pixel_representation=1, intercept=0.0)
    ds = pydicom.dcmread(paths[0])
    raw = np.frombuffer(ds.PixelData, dtype="<u2").copy() & 0x0FFF  # 12-bit two's complement
    ds.PixelData = raw.tobytes()
    ds.save_as(paths[0])
    hu = read_instance_hu(paths[0])
    assert hu.min() == -1000.0
    assert np.array_equal(hu, phantom_slice_hu(0).astype(np.float32))


def test_monochrome1_keeps_hu(ct_series_factory) -> None:
    paths = ct_series_factory(photometric="MONOCHROME1")
    volume, _ = load_study(paths[0].parent)
    assert np.array_equal(volume.hu[0], phantom_slice_hu(0).astype(np.float32))
    assert "monochrome1" in [note.code for note in volume.notes]


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_series_gives_identical_hu(ct_series_factory, syntax) -> None:
    plain = ct_series_factory("plain", n_slices=3, pixel_representation=1, intercept=0.0)
    packed = ct_series_factory(
        "packed", n_slices=3, pixel_representation=1, intercept=0.0, transfer_syntax=syntax
    )
    reference, _ = load_study(plain[0].parent)
    volume, _ = load_study(packed[0].parent)
    assert np.array_equal(volume.hu, reference.hu)


def test_missing_codec_names_transfer_syntax(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3)
    for path in paths:
        ds = pydicom.dcmread(path)
        # MPEG-2 video: a valid transfer syntax for which pydicom has no image decoder.
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
        ds["PixelData"].VR = "OB"
        ds.save_as(path)
    with pytest.raises(PixelDataError) as error:
        load_study(paths[0].parent)
    assert error.value.code == "codec_missing"
    assert "1.2.840.10008.1.2.4.100" in error.value.message
    assert "IM0001.dcm" in error.value.message


def test_isolated_hot_pixel_is_capped(ct_series_factory) -> None:
    def hot(index: int) -> np.ndarray:
        image = phantom_slice_hu(index).astype(np.int32)
        if index == 1:
            image[40, 40] = 65535 - 1024
        return image

    paths = ct_series_factory(n_slices=3, hu_of=hot)
    volume, _ = load_study(paths[0].parent)
    assert volume.hu[1, 40, 40] == 30710.0
    assert volume.hu.min() == -1000.0


# JPEG-LS coded near-lossless ------------------------------------------------------------------


def _recode_near_lossless(paths, near: int, declared: str) -> None:
    """Re-encode each file as JPEG-LS with ``near``, then declare ``declared`` in its meta."""
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(JPEGLSNearLossless, ds.pixel_array, jls_error=near)
        ds.file_meta.TransferSyntaxUID = declared
        ds.save_as(path)


@pytest.mark.parametrize("declared", [JPEGLSLossless, JPEGLSNearLossless])
def test_jpeg_ls_near_lossless_is_reported(ct_series_factory, declared) -> None:
    plain = ct_series_factory("plain", n_slices=3, pixel_representation=1, intercept=0.0)
    paths = ct_series_factory("near", n_slices=3, pixel_representation=1, intercept=0.0)
    _recode_near_lossless(paths, near=3, declared=declared)
    reference, _ = load_study(plain[0].parent)
    volume, _ = load_study(paths[0].parent)
    difference = np.abs(volume.hu - reference.hu)
    assert 0 < difference.max() <= 3.0
    notes = {note.code: note for note in volume.notes}
    if declared == JPEGLSLossless:
        note = notes["jpeg_ls_near_lossless"]
        assert note.level == "warning"
        assert note.message.startswith("3 slice(s) are declared JPEG-LS Lossless")
        assert "NEAR up to 3" in note.message
        assert "each within 3 HU" in note.message
        assert "IM0001.dcm" in note.message
        assert "jpeg_ls_near" not in notes
    else:
        note = notes["jpeg_ls_near"]
        assert "JPEG-LS Near-Lossless with NEAR up to 3" in note.message
        assert "HU are approximate, each within 3 HU" in note.message
        assert "lossy_compression" in notes
        assert "jpeg_ls_near_lossless" not in notes


def test_truly_lossless_jpeg_ls_adds_no_warning(ct_series_factory) -> None:
    paths = ct_series_factory(n_slices=3, transfer_syntax=JPEGLSLossless)
    volume, _ = load_study(paths[0].parent)
    codes = [note.code for note in volume.notes]
    assert "jpeg_ls_near_lossless" not in codes
    assert "jpeg_ls_near" not in codes
    first = pydicom.dcmread(paths[0])
    frame = pydicom.encaps.get_frame(first.PixelData, 0, number_of_frames=1)
    assert codestream_near(frame) == 0


def test_codestream_near_reads_the_start_of_scan() -> None:
    # SOI, an SOF55 frame header, a fill byte, then SOS for one component with NEAR 5.
    sof = bytes.fromhex("fff7000b0c0040004001011100")
    sos = bytes.fromhex("ffda0008010100050000")
    assert codestream_near(b"\xff\xd8" + sof + b"\xff" + sos + b"\x12\x34") == 5
    # Three components (interleaved): NEAR follows three specifications.
    sos3 = bytes.fromhex("ffda000c03010002000300020002")
    assert codestream_near(b"\xff\xd8" + sos3) == 2
    assert codestream_near(b"\xff\xd8" + sof) is None
    assert codestream_near(b"\xff\xd8" + sos[:5]) is None
    # A length that does not match Ns is not a valid start-of-scan segment.
    assert codestream_near(b"\xff\xd8" + bytes.fromhex("ffda000901010005000000")) is None
