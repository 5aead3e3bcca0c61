"""Read EDF frames (plain or gzipped), masks and flat fields.

A fast path handles the single-frame EDF files ESRF detectors write
(optionally gzipped): gunzip with :mod:`zlib` (or ``isal`` when installed),
parse the ASCII header, :func:`numpy.frombuffer` the payload. It is
bit-identical to :mod:`fabio`, which reads everything else, and stricter on
damaged files (an error where fabio pads with zeros). See
``docs/explanation/reading-edf.md``.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.errors import InputFileError, OversizedFileError
from xsvs_bluesky.options import DEFAULT_LIMITS, Limits

__all__ = [
    "EDFFrame",
    "read_edf",
    "read_frame",
    "read_header",
    "read_mask",
    "read_flat_field",
    "GUNZIP_BACKEND",
]

logger = logging.getLogger(__name__)


_Decompressor = Callable[[int], Any]
"""``decompressobj(wbits)`` of zlib or isal_zlib."""


def _pick_inflate() -> tuple[_Decompressor, tuple[type[Exception], ...], str]:
    """Use python-isal (``pip install isal``, 2-5x faster) when installed."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.decompressobj, (zlib.error,), "zlib"
    isal_error = cast("type[Exception]", isal_zlib.IsalError)  # mistyped in its stubs
    errors: tuple[type[Exception], ...] = (isal_error, zlib.error)
    return isal_zlib.decompressobj, errors, "isal"


_decompressobj, _INFLATE_ERRORS, GUNZIP_BACKEND = _pick_inflate()
"""Name of the gunzip implementation in use: ``"isal"`` or ``"zlib"``."""
_GUNZIP_ERRORS: tuple[type[Exception], ...] = (*_INFLATE_ERRORS, OSError, EOFError)
_HEAD_BYTES = 64 * 1024
"""Bytes inflated first, for the EDF header's frame size to be checked."""

# EDF DataType names -> numpy types (the names fabio and ESRF software write).
_DATA_TYPES: dict[str, type[np.generic]] = {
    "SignedByte": np.int8,
    "Signed8": np.int8,
    "UnsignedByte": np.uint8,
    "Unsigned8": np.uint8,
    "SignedShort": np.int16,
    "Signed16": np.int16,
    "UnsignedShort": np.uint16,
    "Unsigned16": np.uint16,
    "UnsignedShortInteger": np.uint16,
    "SignedInteger": np.int32,
    "Signed32": np.int32,
    "UnsignedInteger": np.uint32,
    "Unsigned32": np.uint32,
    "SignedLong": np.int32,
    "UnsignedLong": np.uint32,
    "Signed64": np.int64,
    "Unsigned64": np.uint64,
    "FloatValue": np.float32,
    "FLOATVALUE": np.float32,
    "FLOAT": np.float32,
    "Float": np.float32,
    "FloatIEEE32": np.float32,
    "Float32": np.float32,
    "Double": np.float64,
    "DoubleValue": np.float64,
    "FloatIEEE64": np.float64,
    "DoubleIEEE64": np.float64,
}
# EDF_ keys the fast path understands; any other EDF_ key -> fabio.
_EDF_KEYS_OK = {"EDF_DATABLOCKID", "EDF_BINARYSIZE", "EDF_HEADERSIZE"}
_HEADER_END = re.compile(rb"}\r?\n")
_MAX_HEADER = 512 * 512  # bytes searched for the end of the header
_STRIP = b" \t\n\r\x0b\x0c\x00"
_GZIP_MAGIC = b"\x1f\x8b"


class _NotSimpleError(Exception):
    """The fast path does not handle this file; use fabio."""


@dataclass(frozen=True)
class EDFFrame:
    """One decoded frame.

    Attributes
    ----------
    data : numpy.ndarray
        The image, shape (rows, columns) = (Dim_2, Dim_1), native byte order.
    header : dict of str to str
        The EDF header key/value pairs, in file order.
    path : Path
        The file it came from.
    decoder : str
        ``"fast"`` or ``"fabio"``.
    """

    data: NDArray[np.generic]
    header: dict[str, str]
    path: Path
    decoder: str


def read_edf(
    path: str | PathLike[str], *, fast: bool = True, limits: Limits = DEFAULT_LIMITS
) -> EDFFrame:
    """Read an EDF or gzipped EDF file (first frame), or any image fabio reads.

    A file larger than ``limits.max_frame_bytes`` is refused before it is
    read; a gzip file is inflated in a stream that stops at that size, and
    refused as soon as its EDF header announces more (a "gzip bomb" costs
    at most the limit in memory).

    Parameters
    ----------
    path : str or path-like
        The file.
    fast : bool
        Try the fast decoder first (default). False: always use fabio
        (the size limits are still checked on the file and its inflated
        size first).
    limits : Limits, optional
        ``limits.max_frame_bytes`` bounds the file and its inflated size.

    Returns
    -------
    EDFFrame

    Raises
    ------
    InputFileError
        Missing, unreadable, truncated or corrupt file (message names it).
    OversizedFileError
        The file, its inflated content or the frame its header announces is
        larger than ``limits.max_frame_bytes`` (also an InputFileError).
    """
    file = Path(path)
    cap = limits.max_frame_bytes
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise InputFileError(f"{file}: frame file not found") from None
    except OSError as exc:
        raise InputFileError(f"{file}: cannot read frame file ({exc})") from None
    if size > cap:
        raise _oversized(file, limits, f"the file has {size} bytes")
    raw: bytes | None = None
    if fast or _is_gzip(file):
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise InputFileError(f"{file}: cannot read frame file ({exc})") from None
        if raw[:2] == _GZIP_MAGIC:
            raw = _gunzip(raw, file, limits)  # checks the sizes before fabio
    if fast and raw is not None:
        try:
            data, header = _decode_fast(raw, file)
        except _NotSimpleError as why:
            logger.debug("%s: fast EDF path declined (%s); using fabio", file, why)
        else:
            return EDFFrame(data, header, file, "fast")
    data, header = _decode_fabio(file)
    return EDFFrame(data, header, file, "fabio")


def read_frame(
    path: str | PathLike[str], *, fast: bool = True, limits: Limits = DEFAULT_LIMITS
) -> NDArray[np.generic]:
    """Read the image of an EDF / EDF.gz file (see :func:`read_edf`)."""
    return read_edf(path, fast=fast, limits=limits).data


def read_header(path: str | PathLike[str]) -> dict[str, str]:
    """Read the header of an EDF / EDF.gz file (key/value strings, file order)."""
    return read_edf(path).header


# -- fast path -----------------------------------------------------------------
def _is_gzip(file: Path) -> bool:
    try:
        with file.open("rb") as handle:
            return handle.read(2) == _GZIP_MAGIC
    except OSError:
        return False


def _oversized(file: Path, limits: Limits, size: str) -> OversizedFileError:
    err = limits.frame_bytes_exceeded(str(file), size)
    return OversizedFileError(*err.args)


def _announced_bytes(head: bytes) -> tuple[int, str] | None:
    """Frame bytes an EDF header announces, with how it says it, or None."""
    start = head.find(b"{", 0, 512)
    end = _HEADER_END.search(head, max(start, 0))
    if start < 0 or end is None:
        return None
    caps = {
        k.upper(): v for k, v in _parse_header(head[start + 1 : end.start()]).items()
    }
    found: list[tuple[int, str]] = []
    for key in ("EDF_BINARYSIZE", "SIZE"):
        try:
            found.append((int(float(caps[key])), f"{key.title()} = {caps[key]}"))
        except (KeyError, ValueError, OverflowError):
            pass
    scalar = _DATA_TYPES.get(caps.get("DATATYPE", ""))
    try:
        rows, cols = int(caps["DIM_2"]), int(caps["DIM_1"])
    except (KeyError, ValueError):
        rows = cols = 0
    if rows > 0 and cols > 0:
        itemsize = np.dtype(scalar).itemsize if scalar is not None else 1
        found.append(
            (rows * cols * itemsize, f"Dim_1 x Dim_2 = {cols} x {rows} pixels")
        )
    return max(found) if found else None


def _gunzip(raw: bytes, file: Path, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Inflate a gzip file, every member, checking CRC and length.

    The inflated size is bounded by ``limits.max_frame_bytes``: the first
    64 KiB are inflated, the frame size the EDF header announces is checked,
    then the rest is inflated in a stream that stops one byte past the
    limit.  Trailing zero bytes after the last member are ignored (as gzip
    does).

    Raises
    ------
    InputFileError
        Truncated or corrupt data.
    OversizedFileError
        More than ``limits.max_frame_bytes`` inflated or announced.
    """
    cap = limits.max_frame_bytes
    pieces: list[bytes] = []
    size = 0
    data = raw
    try:
        while True:
            inflater = _decompressobj(31)
            if not pieces:  # the first member holds the EDF header
                head = inflater.decompress(data, min(_HEAD_BYTES, cap + 1))
                announced = _announced_bytes(head)
                if announced is not None and announced[0] > cap:
                    raise _oversized(
                        file,
                        limits,
                        f"its EDF header announces {announced[1]}"
                        f" ({announced[0]} bytes)",
                    )
                pieces.append(head)
                size += len(head)
                data = inflater.unconsumed_tail
            while not inflater.eof and size <= cap:
                if not data:
                    raise EOFError("the gzip stream ends before its last block")
                piece = inflater.decompress(data, cap + 1 - size)
                pieces.append(piece)
                size += len(piece)
                data = inflater.unconsumed_tail
            if size > cap:
                raise _oversized(file, limits, f"it inflates to more than {cap} bytes")
            rest = inflater.unused_data
            if not rest.strip(b"\0"):
                break
            if rest[:2] != _GZIP_MAGIC:
                raise OSError(f"{len(rest)} bytes of garbage after the gzip data")
            data = rest
    except _GUNZIP_ERRORS as exc:
        raise InputFileError(
            f"{file}: corrupt or truncated gzip data ({exc}); re-copy the file "
            f"or skip it (skip_bad=True)"
        ) from None
    return b"".join(pieces)


def _parse_header(block: bytes) -> dict[str, str]:
    """Key/value pairs of an EDF header block (between '{' and '}')."""
    header: dict[str, str] = {}
    for item in block.split(b";"):
        if b"=" not in item:
            continue
        key_b, value_b = item.split(b"=", 1)
        try:
            key = key_b.strip(_STRIP).decode("ascii")
            value = value_b.strip(_STRIP).decode("ascii")
        except UnicodeDecodeError:
            continue  # fabio drops non-ASCII pairs too
        header[key] = value  # a duplicated key: the last one wins (as fabio)
    return header


def _split_header(buf: bytes, file: Path) -> tuple[dict[str, str], int]:
    """Header dict and the offset of the binary payload."""
    start = buf.find(b"{", 0, 512)
    if start < 0 or buf[:start].strip(_STRIP):
        raise _NotSimpleError("no EDF header start '{'")  # maybe another format
    end = _HEADER_END.search(buf, start, _MAX_HEADER)
    if end is None:
        raise InputFileError(
            f"{file}: EDF header never ends (no '}}' + newline within "
            f"{_MAX_HEADER} bytes); the file is truncated or not EDF"
        )
    return _parse_header(buf[start + 1 : end.start()]), end.end()


def _decode_fast(raw: bytes, file: Path) -> tuple[NDArray[np.generic], dict[str, str]]:
    """Decode a simple (inflated) EDF file; _NotSimpleError for anything unusual."""
    if raw[:3] == b"BZh":
        raise _NotSimpleError("bzip2 file")
    header, offset = _split_header(raw, file)
    caps = {key.upper(): value for key, value in header.items()}
    for key in caps:
        if key.startswith("EDF_") and key not in _EDF_KEYS_OK:
            raise _NotSimpleError(f"header key {key}")
        if key.startswith("DIM_") and key not in ("DIM_1", "DIM_2"):
            raise _NotSimpleError(f"header key {key}")
    compression = caps.get("COMPRESSION", "NONE").upper()
    if compression != "NONE" and not compression.startswith("NO"):
        raise _NotSimpleError(f"compressed payload ({compression})")
    scalar = _DATA_TYPES.get(caps.get("DATATYPE", ""))
    if scalar is None:
        raise _NotSimpleError(f"DataType {caps.get('DATATYPE')!r}")
    dtype = np.dtype(scalar)
    order = caps.get("BYTEORDER", "")
    if "Low" in order:
        stored = dtype.newbyteorder("<")
    elif "High" in order:
        stored = dtype.newbyteorder(">")
    elif dtype.itemsize == 1:
        stored = dtype
    else:
        raise _NotSimpleError(f"ByteOrder {order!r}")
    try:
        rows, cols = int(caps["DIM_2"]), int(caps["DIM_1"])
        size_text = caps.get("EDF_BINARYSIZE", caps.get("SIZE"))
        blob = None if size_text is None else int(float(size_text))
    except (KeyError, ValueError) as exc:
        raise _NotSimpleError(f"dimensions or size ({exc})") from None
    needed = rows * cols * dtype.itemsize
    blob = needed if blob is None else blob
    available = len(raw) - offset
    if rows <= 0 or cols <= 0:
        raise _NotSimpleError(f"shape ({rows}, {cols})")
    if min(blob, available) < needed:
        raise InputFileError(
            f"{file}: truncated EDF payload: {available} bytes after the "
            f"header (Size = {blob}) but {rows}x{cols} {dtype} needs {needed}; "
            f"re-copy the file or skip it (skip_bad=True)"
        )
    if available != blob:
        raise _NotSimpleError(f"payload {available} bytes != Size {blob}")
    data = np.frombuffer(raw, stored, rows * cols, offset).astype(dtype)
    return data.reshape(rows, cols), header


# -- fabio -------------------------------------------------------------------------
def _decode_fabio(file: Path) -> tuple[NDArray[np.generic], dict[str, str]]:
    """Read with fabio; turn its lenient handling of damage into errors."""
    import fabio

    if not file.is_file():
        raise InputFileError(f"{file}: frame file not found")
    try:
        image = fabio.open(str(file))
        data = np.asarray(image.data)
        incomplete = bool(getattr(image, "incomplete_file", False))
        header = {str(k): str(v) for k, v in image.header.items()}
    except Exception as exc:  # fabio raises many types for bad files
        raise InputFileError(
            f"{file}: cannot decode image file ({type(exc).__name__}: {exc}); "
            f"expected an EDF or another format fabio reads"
        ) from None
    if incomplete:
        raise InputFileError(
            f"{file}: incomplete image file (fabio: truncated data); re-copy "
            f"the file or skip it (skip_bad=True)"
        )
    if data.ndim != 2:
        raise InputFileError(
            f"{file}: image has {data.ndim} dimensions {data.shape}; expected a "
            f"2-D frame"
        )
    return data, header


# -- masks and flat fields ----------------------------------------------------------
def _check_shape(
    file: Path, what: str, shape: tuple[int, ...], expected: Sequence[int] | None
) -> None:
    if expected is None:
        return
    want = tuple(int(n) for n in expected)
    if shape != want:
        hint = " (transposed?)" if shape == want[::-1] else ""
        raise InputFileError(
            f"{file}: {what} shape {shape}{hint} does not match the frames' "
            f"shape {want}; expected a {what} of the detector's shape"
        )


def read_mask(
    path: str | PathLike[str],
    expected_shape: Sequence[int] | None = None,
    *,
    one_is_bad: bool = True,
) -> NDArray[np.bool_]:
    """Read a mask EDF as a boolean array, True = excluded pixel.

    Parameters
    ----------
    path : str or path-like
        The mask file (EDF, any integer or float type).
    expected_shape : sequence of int, optional
        The frames' shape (rows, columns); checked when given.
    one_is_bad : bool
        True (pyxsvs): nonzero = bad. False (older pyxpcs masks): zero = bad.

    Returns
    -------
    numpy.ndarray of bool

    Raises
    ------
    InputFileError
        Unreadable file or wrong shape (message names the file and both shapes).

    Warns
    -----
    MaskPolarityWarning
        When more than half of the pixels come out excluded (opposite polarity?).
    """
    from xsvs_bluesky.core.geometry import check_mask_polarity

    file = Path(path)
    data = read_frame(file)
    _check_shape(file, "mask", data.shape, expected_shape)
    nonzero = np.asarray(data != 0)
    bad = nonzero if one_is_bad else ~nonzero
    check_mask_polarity(bad, str(file))
    return bad


def read_flat_field(
    path: str | PathLike[str],
    expected_shape: Sequence[int] | None = None,
    *,
    mask: NDArray[np.bool_] | None = None,
) -> NDArray[np.float64]:
    """Read a flat-field EDF as float64, checked finite and > 0 where used.

    Parameters
    ----------
    path : str or path-like
        The flat-field file (relative pixel efficiency, mean ~1).
    expected_shape : sequence of int, optional
        The frames' shape (rows, columns); checked when given.
    mask : numpy.ndarray of bool, optional
        Excluded pixels (True): their flat-field values are not checked.

    Returns
    -------
    numpy.ndarray of float64

    Raises
    ------
    InputFileError
        Unreadable file, wrong shape, or a non-finite or non-positive value
        at a used pixel (the message gives how many and the first one).
    """
    file = Path(path)
    flat = read_frame(file).astype(np.float64)
    _check_shape(file, "flat field", flat.shape, expected_shape)
    bad = ~(np.isfinite(flat) & (flat > 0))
    if mask is not None:
        _check_shape(file, "flat field", flat.shape, mask.shape)
        bad &= ~mask
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputFileError(
            f"{file}: flat field has {int(bad.sum())} non-finite or non-positive "
            f"values at used pixels (first at row {row}, column {col}: "
            f"{flat[row, col]!r}); expected finite values > 0 (mask those pixels)"
        )
    return flat
