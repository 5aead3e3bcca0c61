"""Frames a StreamDatum points to in an HDF5 file, read in SWMR mode.

Public names are re-exported by :mod:`xsvs_bluesky.callback._frames`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import h5py
import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.callback._chunk_map import ChunkMap, open_chunk_map
from xsvs_bluesky.errors import DocumentError, FrameDataError

__all__ = ["HDF5FrameReader", "uri_to_path"]

logger = logging.getLogger(__name__)

_HDF5_MIMETYPES = {"application/x-hdf5", "application/x-hdf"}


def uri_to_path(uri: str) -> Path:
    """Local path of a ``file://`` URI (or of a plain path)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path if parsed.scheme else uri))
    raise DocumentError(
        f"stream resource URI {uri!r} is not a local file; give a file:// URI"
    )


class HDF5FrameReader:
    """Read the frames a StreamDatum points to in an HDF5 dataset.

    The file is opened lazily (at the first read, a StreamResource may come
    before the file has data) in SWMR read mode when the writer allows it,
    and the dataset is refreshed before each read so a growing file is seen.

    Parameters
    ----------
    stream_resource : mapping
        A StreamResource document (``mimetype`` ``application/x-hdf5``,
        ``uri``, ``parameters["dataset"]``).
    datum_shape : sequence of int
        Shape of one datum index from the descriptor, e.g. ``(H, W)`` or
        ``(frames_per_index, H, W)``.
    reuse_buffer : bool
        If True, :meth:`read` returns frames valid until the next read only:
        where the layout allows it a view of the file mapped in memory (see
        :mod:`xsvs_bluesky.callback._chunk_map`: no copy at all), else a view of one
        buffer the reader keeps (a new 4 MiB array per read costs page
        faults and cache misses: ~6 % of the live callback's time).  Default
        False: every read a new array.

    Raises
    ------
    XSVSError
        On an unsupported mimetype, a multi-file template or a non-local URI.
    """

    def __init__(
        self,
        stream_resource: Mapping[str, Any],
        datum_shape: Sequence[int],
        *,
        reuse_buffer: bool = False,
    ) -> None:
        mimetype = stream_resource.get("mimetype", "")
        params: Mapping[str, Any] = stream_resource.get("parameters", {}) or {}
        if mimetype not in _HDF5_MIMETYPES or params.get("template"):
            raise DocumentError(
                f"stream resource {stream_resource.get('uid')!r}: mimetype "
                f"{mimetype!r} (template {params.get('template')!r}) is not "
                "supported; give a single application/x-hdf5 file"
            )
        self.path = uri_to_path(str(stream_resource["uri"]))
        self.dataset_path = str(params.get("dataset") or params.get("path") or "")
        if not self.dataset_path:
            raise DocumentError(
                f"stream resource {stream_resource.get('uid')!r} has no "
                "parameters['dataset']; give the HDF5 dataset path"
            )
        shape = tuple(int(s) for s in datum_shape)
        if len(shape) < 2:
            raise DocumentError(
                f"data key shape {list(datum_shape)} is not a frame shape; give "
                "[rows, cols] or [frames, rows, cols]"
            )
        self.frame_shape: tuple[int, int] = (shape[-2], shape[-1])
        multiplier = params.get("multiplier")
        self.frames_per_index = int(multiplier or math.prod(shape[:-2]) or 1)
        self._file: h5py.File | None = None
        self._dataset: h5py.Dataset | None = None
        # chunk bytes of one leading index when whole unfiltered chunks can be
        # read directly (see _chunk_bytes), else 0
        self._direct_bytes = 0
        self._direct_dtype: np.dtype[Any] | None = None
        # dataset shape at the last SWMR refresh: frames below it are
        # written, so reading them needs no refresh (~0.2 ms each)
        self._shape: tuple[int, ...] | None = None
        self._reuse = reuse_buffer
        self._buffer: NDArray[Any] | None = None
        # the mapped file (reuse_buffer only); None until tried or if it
        # cannot be used, _map_tried after the first try
        self._map: ChunkMap | None = None
        self._map_tried = False
        self.waiting_for = ""
        """Why the last :meth:`read` returned None (empty after a read)."""

    def _open(self) -> h5py.Dataset | None:
        if self._dataset is not None:
            return self._dataset
        if not self.path.is_file():
            self.waiting_for = (
                "the file does not exist"
                if not self.path.exists()
                else "the path is not a file"
            )
            return None
        try:
            handle = h5py.File(self.path, "r", swmr=True)
        except OSError:
            # a file written without SWMR support (or still locked)
            try:
                handle = h5py.File(self.path, "r")
            except OSError as err:
                logger.debug("cannot open %s yet: %s", self.path, err)
                self.waiting_for = f"the file cannot be opened ({err})"
                return None
        if self.dataset_path not in handle:
            handle.close()
            self.waiting_for = f"the file has no dataset {self.dataset_path!r}"
            return None
        self._file = handle
        self._dataset = handle[self.dataset_path]
        self._direct_bytes = _chunk_bytes(self._dataset)
        self._direct_dtype = self._dataset.dtype
        return self._dataset

    def read(
        self, start: int, stop: int, *, partial: bool = False
    ) -> NDArray[Any] | None:
        """Frames of datum indices ``[start, stop)``, None if not yet written.

        Parameters
        ----------
        start, stop : int
            Datum indices.
        partial : bool
            Allow the frames of fewer indices, ``[start, s)`` with
            ``start < s <= stop`` (never none), when that saves a copy: with
            ``reuse_buffer``, the frames that lie one after the other in the
            mapped file.  The caller reads the rest with another call.

        Returns
        -------
        numpy.ndarray or None
            ``(n, rows, cols)`` with ``n = (s - start) * frames_per_index``
            (``s = stop`` unless ``partial``): a new array the caller owns,
            or with ``reuse_buffer`` a view of the mapped file or of the
            reader's buffer, valid until the next read.
        """
        ds = self._open()
        if ds is None:
            return None
        shape = self._shape
        lo, hi = (0, 0) if shape is None else self._rows(shape, start, stop)
        if shape is None or hi > shape[0]:
            try:
                ds.refresh()
            except (OSError, ValueError, RuntimeError):  # not in SWMR mode
                pass
            shape = self._shape = ds.shape  # each ``ds.shape`` asks HDF5
            lo, hi = self._rows(shape, start, stop)
        if hi < 0:
            return np.asarray(ds[()])[None]
        if shape[0] < hi:
            self.waiting_for = (
                f"its dataset {self.dataset_path!r} holds {shape[0]} of the "
                f"{hi} frames needed"
            )
            return None
        self.waiting_for = ""
        data = None
        if self._reuse:
            data = self._read_mapped(ds, shape, (lo, hi), start, partial)
        if data is None:
            data = self._read_chunks(ds, shape, lo, hi)
        if data is None:
            data = np.asarray(ds[lo:hi])
        return data.reshape(-1, *self.frame_shape)

    def _rows(self, shape: tuple[int, ...], start: int, stop: int) -> tuple[int, int]:
        """Return the dataset rows ``[lo, hi)`` holding datum indices.

        ``shape`` is the dataset's; ``(0, -1)`` means a single 2-d frame.

        Raises
        ------
        XSVSError
            If ``shape`` does not hold frames of :attr:`frame_shape`.
        """
        rows, cols = self.frame_shape
        if len(shape) == 3 and shape[1:] == (rows, cols):
            fpi = self.frames_per_index
            return start * fpi, stop * fpi
        if len(shape) == 4 and shape[2:] == (rows, cols):
            return start, stop
        if len(shape) == 2 and shape == (rows, cols) and (start, stop) == (0, 1):
            return 0, -1
        raise FrameDataError(
            f"{self.path}:{self.dataset_path} has shape {shape}; expected "
            f"(n, {rows}, {cols}) frames"
        )

    def _read_chunks(
        self, ds: h5py.Dataset, shape: tuple[int, ...], lo: int, hi: int
    ) -> NDArray[Any] | None:
        """Rows ``[lo, hi)`` of ``ds`` (of ``shape``), read chunk by chunk.

        Only for datasets whose chunks are one whole leading index with no
        filter (``_direct_bytes > 0``): the raw chunk bytes then are the
        array in the file's dtype and byte order, as ``ds[lo:hi]`` gives it,
        and ``read_direct_chunk`` copies them straight into the output,
        bypassing HDF5's selection and type-conversion machinery.  Returns
        None (use the normal read) otherwise, e.g. for a chunk not allocated
        yet, which the normal read gives as its fill value.
        """
        nbytes = self._direct_bytes
        if not nbytes or self._direct_dtype is None:
            return None
        n, row = hi - lo, shape[1:]
        out = self._output(n, row, self._direct_dtype)
        raw = out.reshape(n, -1).view(np.uint8)
        read_chunk = ds.id.read_direct_chunk
        tail = (0,) * (len(shape) - 1)
        try:
            for i in range(lo, hi):
                mask, got = read_chunk((i, *tail), out=raw[i - lo])
                if mask or len(got) != nbytes:
                    return None
        except (KeyError, OSError, RuntimeError, TypeError, ValueError) as err:
            logger.debug("direct chunk read of %s failed: %s", self.path, err)
            return None
        return out

    def _read_mapped(
        self,
        ds: h5py.Dataset,
        shape: tuple[int, ...],
        rows: tuple[int, int],
        start: int,
        partial: bool,
    ) -> NDArray[Any] | None:
        """Rows ``rows = [lo, hi)`` as a view of the mapped file, or None.

        With ``partial``, the rows of the first indices from ``start`` on
        that lie one after the other in the file, if not all do.
        """
        nbytes = self._direct_bytes
        if not nbytes:
            return None
        if not self._map_tried:
            self._map_tried = True
            self._map = open_chunk_map(ds, self.path, nbytes)
        if self._map is None:
            return None
        lo, hi = rows
        mapped = self._map.frames(lo, hi, shape[0])
        if mapped is None:
            return None
        if mapped.shape[0] == hi - lo:
            return mapped
        # rows per datum index: a piece must end at an index boundary
        unit = self._rows(shape, start, start + 1)[1] - lo
        whole = mapped.shape[0] - mapped.shape[0] % unit
        return mapped[:whole] if partial and whole else None

    def _output(
        self, n: int, row: tuple[int, ...], dtype: np.dtype[Any]
    ) -> NDArray[Any]:
        """``(n, *row)`` array for a read: new, or a view of the kept buffer."""
        if not self._reuse:
            return np.empty((n, *row), dtype=dtype)  # the caller owns it
        buf = self._buffer
        if (
            buf is None
            or buf.shape[0] < n
            or buf.shape[1:] != row
            or buf.dtype != dtype
        ):
            buf = self._buffer = np.empty((n, *row), dtype=dtype)
        return buf[:n]

    def close(self) -> None:
        """Close the file (a later read reopens it)."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
                self._dataset = None
                self._direct_bytes = 0
                self._direct_dtype = None
                self._shape = None
                self._buffer = None
                if self._map is not None:
                    self._map.close()
                self._map = None
                self._map_tried = False


def _chunk_bytes(ds: h5py.Dataset) -> int:
    """Bytes of one chunk if a chunk is one whole, unfiltered leading index.

    Such chunks hold the raw array bytes of ``ds[i]``, which
    ``read_direct_chunk`` copies straight into the output (no selection or
    type-conversion machinery).  Returns 0 for any other layout: contiguous,
    virtual, multi-frame or partial-frame chunks, filtered (compressed)
    data, or a non-numeric dtype.  Filtered data loads :mod:`hdf5plugin` so
    the Blosc/LZ4 frames written by replay can be decoded.
    """
    if ds.id.get_create_plist().get_nfilters():
        import hdf5plugin  # noqa: F401  (registers the Blosc/LZ4 filters)

        return 0
    chunks = ds.chunks
    if (
        chunks is None
        or ds.is_virtual
        or ds.ndim < 2
        or chunks[0] != 1
        or tuple(chunks[1:]) != tuple(ds.shape[1:])
        or ds.dtype.kind not in "biuf"
    ):
        return 0
    return int(ds.dtype.itemsize * math.prod(chunks))
