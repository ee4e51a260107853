"""Decode stored pixel values and convert them to Hounsfield units.

Conversion follows the DICOM Modality LUT: HU = stored * RescaleSlope + RescaleIntercept,
computed in float32 from integers that are first widened, so unsigned storage with a negative
intercept never wraps. MONOCHROME1 changes only how an image is displayed (PS3.3 C.7.6.3.1.2:
the VOI and presentation steps come after the Modality LUT), so HU are computed the same way.
"""

from __future__ import annotations

import logging
import math
import mmap
from dataclasses import dataclass

import numpy as np
import pydicom.encaps
import pydicom.pixels

from ..errors import PixelDataError
from .headers import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_LITTLE_ENDIAN_SYNTAXES,
    HeaderSkip,
    InstanceInfo,
    PixelEncoding,
    read_header,
    transfer_syntax_name,
)

logger = logging.getLogger(__name__)

AIR_HU = -1000.0
# Values below this are not tissue: scanners write -2000, -3024 or similar outside the
# reconstructed circle. Air itself reads about -1000 HU, and -1024 is the lowest value of the
# usual 12-bit scale, so the threshold leaves a margin below it.
OUT_OF_FIELD_BELOW_HU = -1100.0
# Extended CT scales for metal reach about +30,000 HU; anything above cannot be a measurement.
MAX_PLAUSIBLE_HU = 30710.0
# Values below this are neither tissue nor a padding value in use (an estimate: vendors' padding
# values seen in practice lie between -1024 and -3072 HU, with margin).
MIN_PLAUSIBLE_HU = -8192.0
# Air reads about -1000 HU and every head CT slice contains some (outside the head, in sinuses or
# airways): a slice or volume without any value below this has a shifted HU scale.
AIR_CHECK_HU = -500.0
# A slice where more than this fraction of pixels is implausible has a wrong header, not a few
# hot pixels: it is rejected instead of capped.
IMPLAUSIBLE_FRACTION = 0.01
# Overlay graphics or text burnt into unused high bits cover a few percent of an image at most
# (an estimate). When more pixels use those bits, the bit layout in the header is wrong.
HIGH_BITS_FRACTION = 0.10


@dataclass
class SliceStats:
    """Counts of pixels that the conversion changed in one slice."""

    padding: int = 0
    out_of_field: int = 0
    capped: int = 0
    max_raw_hu: float = 0.0
    # Pixels below MIN_PLAUSIBLE_HU that all hold one value, taken as out-of-field fill
    # (they are also counted in out_of_field), and that value in HU.
    fill_pixels: int = 0
    fill_hu: float = 0.0

    def add(self, other: SliceStats) -> None:
        """Add the counts of ``other`` (one slice) to these totals."""
        self.padding += other.padding
        self.out_of_field += other.out_of_field
        self.capped += other.capped
        self.max_raw_hu = max(self.max_raw_hu, other.max_raw_hu)
        if other.fill_pixels:
            self.fill_pixels += other.fill_pixels
            self.fill_hu = other.fill_hu


# Size of a transparent huge page on x86-64 and arm64 Linux.
HUGE_PAGE_BYTES = 2 * 1024 * 1024


def empty_aligned(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """Return an uninitialised array whose data starts on a :data:`HUGE_PAGE_BYTES` boundary.

    numpy requests transparent huge pages from Linux on arrays of 4 MiB and more, so first
    touching a new volume costs one page fault per 2 MiB. malloc returns memory 16 bytes past a page
    boundary, though, so the partial 2 MiB blocks at both ends of an array fall back to 4 KiB
    pages: about 500 faults, 1 ms for a 40-slice volume on the development machine. Here the
    array is a view starting at the first boundary of a block 2 MiB larger; the unused part is
    never touched, so it takes address space but no memory.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < 2 * HUGE_PAGE_BYTES:
        return np.empty(shape, dtype=dtype)
    block = np.empty(nbytes + HUGE_PAGE_BYTES, dtype=np.uint8)
    start = -block.ctypes.data % HUGE_PAGE_BYTES
    return block[start : start + nbytes].view(dtype).reshape(shape)


# The dtype of native pixel data by (BitsAllocated, signed).
_NATIVE_DTYPES: dict[tuple[int, bool], np.dtype] = {
    (8, False): np.dtype(np.uint8),
    (8, True): np.dtype(np.int8),
    (16, False): np.dtype("<u2"),
    (16, True): np.dtype("<i2"),
    (32, False): np.dtype("<u4"),
    (32, True): np.dtype("<i4"),
}


def zeros_unwritten(shape: tuple[int, ...]) -> np.ndarray:
    """Return a new all-False boolean array whose memory is not touched until written.

    np.zeros calls calloc, which clears with memset any block it reuses from the heap (glibc
    reuses blocks of up to 32 MiB): 0.25 ms and 10 MiB of written pages for the padding mask
    of 40 slices, which usually stays all False. A private anonymous mapping reads as zeros
    and takes memory only for the pages written. tracemalloc does not see such a mapping.
    """
    nbytes = math.prod(shape)
    if nbytes < HUGE_PAGE_BYTES or not hasattr(mmap, "MAP_PRIVATE"):
        return np.zeros(shape, dtype=bool)
    block = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(block, dtype=np.bool_).reshape(shape)


def _native_dtype(encoding: PixelEncoding) -> np.dtype | None:
    return _NATIVE_DTYPES.get((encoding.bits_allocated, encoding.pixel_representation == 1))


def _apply_bit_layout(
    values: np.ndarray, encoding: PixelEncoding, label: str, path: str
) -> np.ndarray:
    """Keep only the BitsStored bits that end at HighBit, sign-extending signed data.

    Unused high bits can hold overlay data or garbage, which is masked off. When more than
    :data:`HIGH_BITS_FRACTION` of the pixels use them, the header is wrong (typically signed
    16-bit data labelled as 12-bit unsigned) and PixelDataError is raised.
    """
    bits_stored = encoding.bits_stored
    high_bit = encoding.high_bit
    if bits_stored >= encoding.bits_allocated and high_bit == bits_stored - 1:
        return values
    shift = max(high_bit - bits_stored + 1, 0)
    mask = (1 << bits_stored) - 1
    if (
        encoding.pixel_representation == 0
        and shift == 0
        and values.dtype.kind == "u"
        and int(values.max()) <= mask
    ):
        # No pixel uses the unused high bits (the usual 12-of-16-bit case), so masking would
        # change nothing: one reduction replaces the count and the masking pass.
        return values
    if encoding.pixel_representation == 1 and shift == 0 and values.dtype.kind == "i":
        lowest, highest = -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
        if int(values.min()) >= lowest and int(values.max()) <= highest:
            # Many writers fill the bits above HighBit with copies of the sign bit, so the
            # stored integers already are the values (air -1000 is 0xFC18 in 12 bits).
            return values
    unsigned = values.view(np.dtype(values.dtype.str.replace("i", "u")))
    used_mask = unsigned.dtype.type(mask << shift)
    unused = (unsigned & ~used_mask) != 0
    if encoding.pixel_representation == 1:
        # Bits above HighBit that copy the sign bit are sign extension, not overlay data.
        above = unsigned >> (high_bit + 1)
        all_ones = (1 << max(encoding.bits_allocated - high_bit - 1, 0)) - 1
        sign_extended = (above == all_ones) & (((unsigned >> high_bit) & 1) == 1)
        unused &= ~sign_extended
    outside = np.count_nonzero(unused)
    if outside > HIGH_BITS_FRACTION * unsigned.size:
        raise PixelDataError(
            f"{label}: {100.0 * outside / unsigned.size:.0f}% of pixels have bits set outside "
            f"the {bits_stored} stored bits (BitsStored {bits_stored}, HighBit {high_bit}, "
            f"BitsAllocated {encoding.bits_allocated}); the values would be cut. The header "
            "probably mislabels the data (often signed 16-bit data declared as 12-bit "
            "unsigned). Correct BitsStored/PixelRepresentation or re-export the series.",
            path=path,
            code="implausible_bits_stored",
        )
    if encoding.pixel_representation == 0:
        if shift == 0:
            # The common case (12 of 16 bits): one bitwise pass in the stored dtype.
            return unsigned & unsigned.dtype.type(mask)
        return (unsigned >> shift) & unsigned.dtype.type(mask)
    stored = (unsigned.astype(np.int32) >> shift) & mask
    sign_bit = 1 << (bits_stored - 1)
    return (stored ^ sign_bit) - sign_bit


def buffer_dtype(info: InstanceInfo) -> np.dtype | None:
    """Return the dtype native pixel data of ``info`` is read as, or None if not native."""
    if info.transfer_syntax_uid not in NATIVE_LITTLE_ENDIAN_SYNTAXES:
        return None
    return _native_dtype(info.encoding)


def frame_buffer(info: InstanceInfo) -> np.ndarray | None:
    """Return an empty array to read one native frame of ``info`` into, or None if compressed."""
    dtype = buffer_dtype(info)
    if dtype is None:
        return None
    return np.empty((info.rows, info.columns), dtype=dtype)


def native_stored_range(info: InstanceInfo) -> tuple[int, int] | None:
    """Return the range that :func:`decode_stored` guarantees for native frames of ``info``.

    Native frames pass through the bit layout, which keeps BitsStored bits, so their values
    lie in that range. None for frames decoded by pydicom, whose range is not checked here.
    """
    dtype = buffer_dtype(info)
    if dtype is None or info.pixel_data_offset is None or info.pixel_data_length is None:
        return None
    bits = min(info.encoding.bits_stored, dtype.itemsize * 8)
    if info.encoding.pixel_representation == 1:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    # The limits of the dtype itself (np.iinfo, without the cost of building one per slice).
    if dtype.kind == "i":
        lowest, highest = -(1 << (dtype.itemsize * 8 - 1)), (1 << (dtype.itemsize * 8 - 1)) - 1
    else:
        lowest, highest = 0, (1 << (dtype.itemsize * 8)) - 1
    return max(low, lowest), min(high, highest)


def decode_stored(info: InstanceInfo, buffer: np.ndarray | None = None) -> np.ndarray:
    """Return the stored values of one frame as a 2D integer array (rows, columns).

    Native pixel data is read into ``buffer`` when it has the frame's shape and dtype, so a
    loader can reuse one buffer for every slice; the result may then be ``buffer`` itself.
    Raises PixelDataError naming the file and transfer syntax when it cannot be decoded.
    """
    encoding = info.encoding
    if encoding.samples_per_pixel != 1:
        raise PixelDataError(
            f"{info.label}: {encoding.samples_per_pixel} samples per pixel "
            f"({encoding.photometric_interpretation}); a CT slice has one. Choose a "
            "grayscale CT series.",
            path=info.path,
            code="not_grayscale",
        )
    dtype = _native_dtype(encoding)
    frame_pixels = info.rows * info.columns
    if (
        info.transfer_syntax_uid in NATIVE_LITTLE_ENDIAN_SYNTAXES
        and dtype is not None
        and info.pixel_data_offset is not None
        and info.pixel_data_length is not None
    ):
        frame_bytes = frame_pixels * dtype.itemsize
        index = info.frame_index or 0
        if (index + 1) * frame_bytes <= info.pixel_data_length:
            shape = (info.rows, info.columns)
            if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
                buffer = np.empty(shape, dtype=dtype)
            # readinto fills the array without an intermediate bytes object; an unbuffered
            # file avoids copying the data through Python's read buffer.
            try:
                with open(info.path, "rb", buffering=0) as handle:
                    handle.seek(info.pixel_data_offset + index * frame_bytes)
                    n_read = handle.readinto(buffer.data.cast("B"))
            except OSError as exc:
                raise _unreadable(info, exc) from exc
            if n_read == frame_bytes:
                return _apply_bit_layout(buffer, encoding, info.label, info.path)
        raise PixelDataError(
            f"{info.label}: pixel data is shorter than {info.rows}x{info.columns} pixels of "
            f"{encoding.bits_allocated} bits; the file is truncated or its header is wrong. "
            "Copy the file again from its source.",
            path=info.path,
            code="pixel_data_short",
        )
    return _decode_with_pydicom(info)


def _unreadable(info: InstanceInfo, exc: OSError) -> PixelDataError:
    return PixelDataError(
        f"{info.label} can no longer be read ({exc.strerror or exc}); it was moved or deleted "
        "after the scan. Scan the study again.",
        path=info.path,
        code="file_unreadable",
    )


def _decode_with_pydicom(info: InstanceInfo) -> np.ndarray:
    syntax = transfer_syntax_name(info.transfer_syntax_uid)
    try:
        decoder = pydicom.pixels.get_decoder(info.transfer_syntax_uid)
    except NotImplementedError as exc:
        raise PixelDataError(
            f"{info.label}: no decoder exists for the transfer syntax {syntax}; ask the "
            "sender to export uncompressed or JPEG Lossless / JPEG 2000 / RLE images.",
            path=info.path,
            code="codec_missing",
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise PixelDataError(
            f"{info.label}: cannot decode the transfer syntax {syntax} because no decoder "
            f"plugin is installed (needs {missing}); install one or export uncompressed.",
            path=info.path,
            code="codec_missing",
        )
    try:
        source: str | pydicom.Dataset = info.path
        if info.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            # pixel_array() on a path parses the raw, still deflated stream; a dataset read
            # by dcmread has been inflated.
            source = pydicom.dcmread(info.path)
        values = pydicom.pixels.pixel_array(source, index=info.frame_index, raw=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise _unreadable(info, exc) from exc
    except (ValueError, RuntimeError, NotImplementedError, EOFError, OSError) as exc:
        raise PixelDataError(
            f"{info.label}: decoding pixel data ({syntax}) failed: {exc}. The file may be "
            "corrupt; copy it again from its source.",
            path=info.path,
            code="pixel_decode_failed",
        ) from exc
    if values.ndim == 3 and info.frame_index is None:
        values = values[0]
    if values.shape != (info.rows, info.columns):
        raise PixelDataError(
            f"{info.label}: decoded image is {values.shape}, but the header expects "
            f"{info.rows}x{info.columns}. Re-export the series.",
            path=info.path,
            code="pixel_shape_mismatch",
        )
    return values


JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
_STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def codestream_near(codestream: bytes) -> int | None:
    """Return NEAR of the first scan of a JPEG-LS codestream, or None if it has no valid SOS.

    NEAR is the largest difference allowed between a decoded and an original sample; 0 means
    lossless. The start-of-scan segment is Ls (2 bytes), Ns (1), Ns component specifications
    (2 bytes each), then NEAR (1), ILV and the point transform (ITU-T T.87, C.2.3).
    """
    position = 0
    end = len(codestream)
    while position + 1 < end:
        if codestream[position] != 0xFF:
            position += 1
            continue
        marker = codestream[position + 1]
        if marker == 0xFF:
            # A fill byte before the marker.
            position += 1
            continue
        if marker in _STANDALONE_MARKERS or marker == 0x00:
            position += 2
            continue
        if position + 4 > end:
            return None
        length = int.from_bytes(codestream[position + 2 : position + 4], "big")
        if marker == 0xDA:
            segment = codestream[position + 2 : position + 2 + length]
            if len(segment) < 3:
                return None
            n_components = segment[2]
            near_at = 3 + 2 * n_components
            if n_components == 0 or length != 6 + 2 * n_components or len(segment) <= near_at:
                return None
            return int(segment[near_at])
        position += 2 + length
    return None


def jpeg_ls_near(info: InstanceInfo) -> int | None:
    """Return NEAR of the JPEG-LS frame of ``info``, or None when it is not JPEG-LS.

    Returns None too, with a logged warning, when the codestream cannot be read.
    """
    if info.transfer_syntax_uid not in (JPEG_LS_LOSSLESS, JPEG_LS_NEAR_LOSSLESS):
        return None
    try:
        dataset = pydicom.dcmread(info.path)
        frame = pydicom.encaps.get_frame(
            dataset.PixelData, info.frame_index or 0, number_of_frames=info.number_of_frames
        )
    except (OSError, ValueError, KeyError, AttributeError, EOFError) as exc:
        logger.warning("JPEG-LS NEAR of %s not readable: %r", info.label, exc)
        return None
    near = codestream_near(frame)
    if near is None:
        logger.warning("JPEG-LS NEAR of %s not found: no valid start-of-scan segment", info.label)
    return near


def stored_to_hu(
    stored: np.ndarray,
    encoding: PixelEncoding,
    label: str,
    path: str,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, SliceStats]:
    """Convert stored values to float32 HU, with padding and out-of-field pixels set to air.

    Returns the HU array, the padding mask (True where the pixel is padding or outside the
    field and is set to -1000 HU) and the counts. Raises PixelDataError when more than
    :data:`IMPLAUSIBLE_FRACTION` of the pixels are outside the plausible HU range, which is what
    a mislabelled PixelRepresentation produces. Isolated extreme pixels are capped instead.
    """
    hu = out if out is not None else np.empty(stored.shape, dtype=np.float32)
    padding = np.zeros(stored.shape, dtype=bool)
    stats = stored_to_hu_into(stored, encoding, label, path, hu, padding)
    return hu, padding, stats


def stored_to_hu_into(
    stored: np.ndarray,
    encoding: PixelEncoding,
    label: str,
    path: str,
    hu: np.ndarray,
    padding: np.ndarray,
    stored_range: tuple[int, int] | None = None,
) -> SliceStats:
    """Convert like :func:`stored_to_hu`, writing into ``hu`` and an all-False ``padding``.

    ``padding`` is written only where a pixel is padding or out of field, so a mask slice in
    freshly zeroed memory stays untouched (and unallocated by the OS) in the common case.
    ``stored_range`` is a range the caller guarantees ``stored`` lies in (see
    :func:`native_stored_range`): when every value of it maps to a plausible HU above the
    out-of-field limit, the two passes that find the slice's own range are skipped, with the
    same result.
    """
    if encoding.rescale_error:
        raise PixelDataError(
            f"{label}: {encoding.rescale_error}", path=path, code="invalid_rescale"
        )
    stats = SliceStats()
    pad: np.ndarray | None = None
    if encoding.padding_value is not None:
        if encoding.padding_range_limit is not None:
            low = min(encoding.padding_value, encoding.padding_range_limit)
            high = max(encoding.padding_value, encoding.padding_range_limit)
            pad = (stored >= low) & (stored <= high)
        else:
            pad = stored == encoding.padding_value
        stats.padding = int(np.count_nonzero(pad))
        if not stats.padding:
            pad = None

    slope = np.float32(encoding.rescale_slope)
    intercept = np.float32(encoding.rescale_intercept)
    # float32 represents every 16-bit integer exactly, and multiplying by a slope adds at most a
    # relative error of 6e-8 (below 0.01 HU for any CT value). A plain cast followed by in-place
    # float32 arithmetic is faster than one mixed-type ufunc, which casts through a buffer.
    np.copyto(hu, stored, casting="unsafe")
    if encoding.rescale_slope != 1.0:
        hu *= slope
    if encoding.rescale_intercept != 0.0:
        hu += intercept

    # The HU range follows from the stored range, because rounding to float32 is monotonic;
    # reducing the integer array reads half the bytes of the HU array.
    if stored_range is not None:
        bound_ends = [float(np.float32(value) * slope + intercept) for value in stored_range]
        if min(bound_ends) < OUT_OF_FIELD_BELOW_HU or max(bound_ends) > MAX_PLAUSIBLE_HU:
            stored_range = None
    ends = []
    for value in (
        (np.float32(stored_range[0]), np.float32(stored_range[1]))
        if stored_range is not None
        else (np.float32(stored.min()), np.float32(stored.max()))
    ):
        if encoding.rescale_slope != 1.0:
            value = value * slope
        if encoding.rescale_intercept != 0.0:
            value = value + intercept
        ends.append(float(value))
    lowest, highest = min(ends), max(ends)

    if highest > MAX_PLAUSIBLE_HU or lowest < MIN_PLAUSIBLE_HU:
        if pad is None:
            pad = np.zeros(stored.shape, dtype=bool)
        valid = ~pad
        too_high = (hu > MAX_PLAUSIBLE_HU) & valid
        too_low = (hu < MIN_PLAUSIBLE_HU) & valid
        if too_low.any():
            low_stored = stored[too_low]
            if int(low_stored.min()) == int(low_stored.max()):
                # One constant far below air (often the storage type's minimum, -32768) is
                # what converters write outside the reconstructed field when they declare no
                # PixelPaddingValue. A wrong header would spread over many values instead.
                stats.fill_pixels = int(low_stored.size)
                stats.fill_hu = float(hu[too_low][0])
                stats.out_of_field += stats.fill_pixels
                pad |= too_low
                valid = ~pad
                too_low = np.zeros_like(too_low)
        n_implausible = int(too_high.sum()) + int(too_low.sum())
        if n_implausible:
            stats.max_raw_hu = float(hu[too_high].max()) if too_high.any() else 0.0
            if n_implausible > IMPLAUSIBLE_FRACTION * max(int(valid.sum()), 1) or _sign_mislabelled(
                stored, encoding, hu, too_high, too_low, valid
            ):
                raise PixelDataError(
                    _implausible_message(stored, encoding, label, hu, n_implausible, valid),
                    path=path,
                    code="implausible_hu",
                )
            hu[too_high] = MAX_PLAUSIBLE_HU
            stats.capped = int(too_high.sum())
            stats.out_of_field += int(too_low.sum())
            pad |= too_low

    if lowest < OUT_OF_FIELD_BELOW_HU:
        out_of_field = hu < OUT_OF_FIELD_BELOW_HU
        if pad is not None:
            out_of_field &= ~pad
            stats.out_of_field += int(np.count_nonzero(out_of_field))
            pad |= out_of_field
        else:
            stats.out_of_field += int(np.count_nonzero(out_of_field))
            pad = out_of_field
    if pad is not None and (stats.padding or stats.out_of_field):
        np.copyto(hu, np.float32(AIR_HU), where=pad)
        np.copyto(padding, pad)
    return stats


def _sign_mislabelled(
    stored: np.ndarray,
    encoding: PixelEncoding,
    hu: np.ndarray,
    too_high: np.ndarray,
    too_low: np.ndarray,
    valid: np.ndarray,
) -> bool:
    """Return True when the too-high pixels are air stored as signed but labelled unsigned.

    Then they read as air under the other signedness, and the rest of the slice has no air at
    all, which an image of a head never lacks. A hot pixel in an otherwise correct unsigned
    image (air present elsewhere) is not affected and is capped instead.
    """
    if encoding.pixel_representation != 0 or not too_high.any():
        return False
    bits = encoding.bits_stored
    high_stored = stored[too_high].astype(np.int64)
    if int(high_stored.min()) < 1 << (bits - 1):
        return False
    as_signed_hu = (high_stored - (1 << bits)) * encoding.rescale_slope + encoding.rescale_intercept
    if float(as_signed_hu.max()) > AIR_CHECK_HU:
        return False
    rest = valid & ~too_high & ~too_low
    return bool(rest.any()) and float(hu[rest].min()) > AIR_CHECK_HU


def _implausible_message(
    stored: np.ndarray,
    encoding: PixelEncoding,
    label: str,
    hu: np.ndarray,
    n_implausible: int,
    valid: np.ndarray,
) -> str:
    percent = 100.0 * n_implausible / max(int(valid.sum()), 1)
    low, high = float(hu[valid].min()), float(hu[valid].max())
    message = (
        f"{label}: {percent:.2g}% of pixels convert to implausible CT values "
        f"({low:.0f} to {high:.0f} HU, plausible range {MIN_PLAUSIBLE_HU:.0f} to "
        f"{MAX_PLAUSIBLE_HU:.0f})."
    )
    bits = encoding.bits_stored
    if encoding.pixel_representation == 0 and int(stored.max()) >= 1 << (bits - 1):
        signed = stored.astype(np.int64)
        signed = np.where(signed >= 1 << (bits - 1), signed - (1 << bits), signed)
        alt = signed * encoding.rescale_slope + encoding.rescale_intercept
        message += (
            f" PixelRepresentation (0028,0103) says unsigned, but read as signed the values "
            f"would be {float(alt.min()):.0f} to {float(alt.max()):.0f} HU: the header "
            "probably mislabels the pixel sign. Correct PixelRepresentation or re-export "
            "the series from the scanner."
        )
    else:
        message += (
            " Check RescaleSlope/RescaleIntercept and PixelRepresentation, or re-export the "
            "series from the scanner."
        )
    return message


def read_instance_hu(path: str, frame: int | None = None) -> np.ndarray:
    """Read one image (or one frame, 0-based) as float32 HU, padding set to -1000 HU.

    Raises PixelDataError or DicomReadError (from the header) with the file name and fault.
    """
    from ..errors import DicomReadError

    try:
        _, infos = read_header(str(path))
    except HeaderSkip as skip:
        raise DicomReadError(
            f"{path}: {skip.detail}", path=str(path), code=f"dicom_{skip.reason}"
        ) from skip
    if frame is None:
        info = infos[0]
    else:
        if frame < 0 or frame >= len(infos):
            raise PixelDataError(
                f"{path}: frame {frame} requested but the file has {len(infos)} frame(s)",
                path=str(path),
                code="frame_out_of_range",
            )
        info = infos[frame]
    hu, _, _ = stored_to_hu(decode_stored(info), info.encoding, info.label, info.path)
    return hu
