"""Frames of an HDF5 file seen in place: the file mapped into memory.

A chunked, unfiltered dataset whose chunks are whole frames stores frame
``i`` as ``nbytes`` raw bytes at some file offset.  Reading it through HDF5
(``read_direct_chunk``) copies those bytes from the page cache into a
buffer: ~25 us per 128 KiB frame, as much as histogramming it.  Mapping the
file and handing the kernels a view at the frame's offset skips the copy;
consecutive chunks (the usual layout of a detector writing frame after
frame) form one ``(n, rows, cols)`` view.

The offsets come from HDF5's chunk index, walked by h5py's
``DatasetID.chunk_iter`` (``H5Dchunk_iter``; ~1.5 us per chunk, under h5py's
lock, so a writer thread of the same process is safe).  A walk visits every
chunk of the dataset, so it is only made when the new frames are worth it
(:data:`WALK_RATIO`); a frame whose offset is unknown is read through HDF5
as before.  When h5py, the file driver or the layout do not allow it (a
network filesystem, a user block, another driver, an HDF5 without
``H5Dchunk_iter``), or the first or last written frame seen through the map
differs from what HDF5 reads, :func:`open_chunk_map` returns None and the
frames are read through HDF5.

A mapped view stays valid as long as it is referenced, but the callback's
contract is the reused buffer's (valid during ``on_frames`` only): the
file's size is checked before every view, since reading a page past the
end of a file cut shorter kills the process (SIGBUS).
"""

from __future__ import annotations

import logging
import mmap
import os
import subprocess
import time
from operator import itemgetter
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

__all__ = ["ChunkMap", "open_chunk_map"]

logger = logging.getLogger(__name__)

WALK_RATIO = 4
"""Walk the chunk index (~1.5 us per chunk of the dataset: a Python call per
chunk) only when it holds at most this many chunks per frame not yet walked
(a mapped frame saves ~15-25 us).  The walks of a growing series then visit
at most ``WALK_RATIO + 1`` chunks per frame: ~8 us, however long the
series."""

_UNKNOWN = -1


def chunk_iter_available() -> bool:
    """Whether h5py offers ``DatasetID.chunk_iter`` (HDF5 >= 1.12.3 or 1.10.10)."""
    return hasattr(h5py.h5d.DatasetID, "chunk_iter")


LOCAL_FILESYSTEMS = frozenset(
    {"ext2/ext3", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "overlayfs"}
)
"""Filesystems whose files are mapped.  On a network filesystem another host
may cut a file short without this one's size check seeing it in time, and
a mapped page past the end of a file kills the process (SIGBUS): such
files are read through HDF5."""


def filesystem_type(path: Path) -> str:
    """Type of the filesystem holding ``path``, or ``""`` when unknown.

    Asked of coreutils' ``stat --file-system`` (statfs(2)): the names it
    prints, e.g. ``ext2/ext3`` (ext4 too), ``xfs``, ``tmpfs``, ``nfs``.
    """
    try:
        out = subprocess.run(
            ["stat", "--file-system", "--format=%T", os.path.realpath(path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


FS_TYPE_TTL_S = 60.0
"""How long the filesystem type of a device (``st_dev``) is taken as known, s.
The files of a scan, and of the scans after it, usually lie on one
filesystem: asking ``stat`` (a process, 1-4 ms) once a minute is enough."""

_fs_types: dict[int, tuple[float, str]] = {}  # st_dev -> (when asked, type)


def known_filesystem_type(path: Path) -> str:
    """:func:`filesystem_type`, remembered per device for :data:`FS_TYPE_TTL_S`."""
    try:
        device = os.stat(path).st_dev
    except OSError:
        return ""
    now = time.monotonic()
    known = _fs_types.get(device)
    if known is not None and now - known[0] < FS_TYPE_TTL_S:
        return known[1]
    kind = filesystem_type(path)
    if kind:
        _fs_types[device] = (now, kind)
    return kind


def _offsets_of(chunks: list[Any], n_rows: int, nbytes: int) -> NDArray[np.int64]:
    """File offsets of rows ``[0, n_rows)`` from ``chunk_iter``'s records.

    A row whose chunk is filtered, of another size or not allocated gets
    ``-1`` (read through HDF5).  The records are named tuples
    ``(chunk_offset, filter_mask, byte_offset, size)``: transposed in C.
    """
    offsets = np.full(n_rows, _UNKNOWN, dtype=np.int64)
    if not chunks:
        return offsets
    corner, masks, where, sizes = zip(*chunks, strict=True)
    n = len(chunks)
    rows = np.fromiter(map(itemgetter(0), corner), np.int64, n)
    whole = (np.fromiter(masks, np.int64, n) == 0) & (
        np.fromiter(sizes, np.int64, n) == nbytes
    )
    keep = (rows < n_rows) & (rows >= 0)
    table = np.fromiter(where, np.int64, n)
    offsets[rows[keep]] = np.where(whole[keep], table[keep], _UNKNOWN)
    return offsets


class ChunkMap:
    """Offsets of a dataset's frame chunks and the file mapped in memory.

    Use :func:`open_chunk_map`, which checks that the layout allows it.
    """

    def __init__(self, ds: h5py.Dataset, path: Path, nbytes: int) -> None:
        self._ds = ds
        self._path = path
        self._nbytes = nbytes
        self._dtype = ds.dtype
        self._row = tuple(int(s) for s in ds.shape[1:])
        self._offsets: NDArray[np.int64] = np.empty(0, np.int64)
        # rows that do not follow the row before them in the file (or whose
        # offset is unknown), found once per walk, not once per piece
        self._breaks: NDArray[np.intp] = np.empty(0, np.intp)
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._bytes: NDArray[np.uint8] = np.empty(0, np.uint8)

    def frames(self, lo: int, hi: int, n_rows: int) -> NDArray[Any] | None:
        """Rows ``[lo, h)`` as a view of the mapped file, or None.

        ``h <= hi`` ends the rows that lie one after the other in the file
        from row ``lo`` on (a chunk index block written between two frames
        breaks them).  ``n_rows`` is the dataset's length at its last
        refresh.  None when row ``lo``'s offset is unknown (the caller reads
        it through HDF5).
        """
        if hi > self._offsets.shape[0] and not self._walk(n_rows):
            hi = min(hi, self._offsets.shape[0])
        if lo >= hi or self._offsets[lo] < 0:
            return None
        after = np.searchsorted(self._breaks, lo, side="right")
        if after < self._breaks.shape[0]:
            hi = min(hi, int(self._breaks[after]))
        n = hi - lo
        first = int(self._offsets[lo])
        end = first + n * self._nbytes
        # a file cut shorter than a mapped page would kill the process with
        # SIGBUS when the page is read: check the size before every view
        if self._size() < end:
            return None
        if end > self._bytes.shape[0] and not self._remap():
            return None
        return self._bytes[first:end].view(self._dtype).reshape(n, *self._row)

    def written(self, n_rows: int) -> list[int]:
        """First and last of the first ``n_rows`` rows whose offset is known."""
        if n_rows > self._offsets.shape[0]:
            self._walk(n_rows)
        rows = np.flatnonzero(self._offsets[:n_rows] >= 0)
        return sorted({int(rows[0]), int(rows[-1])}) if rows.shape[0] else []

    def _walk(self, n_rows: int) -> bool:
        """Learn the offsets of rows up to ``n_rows`` if worth it."""
        known = self._offsets.shape[0]
        if n_rows <= known or n_rows > WALK_RATIO * (n_rows - known):
            return False
        if not chunk_iter_available():
            return False
        chunks: list[Any] = []
        try:
            # list.append returns None, which lets the walk go on; h5py holds
            # its lock on the library during the walk (a writer thread of the
            # same process is safe)
            self._ds.id.chunk_iter(chunks.append)
        except (OSError, RuntimeError, ValueError) as err:
            logger.debug("chunk walk of %s failed: %s", self._path, err)
            return False
        self._offsets = off = _offsets_of(chunks, n_rows, self._nbytes)
        apart = (np.diff(off) != self._nbytes) | (off[1:] < 0) | (off[:-1] < 0)
        self._breaks = np.flatnonzero(apart) + 1
        return True

    def _size(self) -> int:
        """Return the file's size now (0 if it cannot be opened)."""
        try:
            if self._fd < 0:
                self._fd = os.open(self._path, os.O_RDONLY)
            return os.fstat(self._fd).st_size
        except OSError:
            return 0

    def _remap(self) -> bool:
        """Map the whole file again (it grew past the mapped length)."""
        try:
            # a private mapping gives writable arrays (numba's usual type)
            # and can never change the file
            self._map = mmap.mmap(self._fd, 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as err:
            logger.debug("cannot map %s: %s", self._path, err)
            return False
        # earlier maps stay alive while views of them do
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)
        return True

    def close(self) -> None:
        """Close the file; views already handed out stay valid."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._map = None
        self._bytes = np.empty(0, np.uint8)


def open_chunk_map(ds: h5py.Dataset, path: Path, nbytes: int) -> ChunkMap | None:
    """Return a :class:`ChunkMap` of ``ds`` if its file can be read in place.

    ``nbytes`` is the bytes of one whole-frame, unfiltered chunk (the
    caller's check).  None unless the file is on a local filesystem
    (:data:`LOCAL_FILESYSTEMS`), uses the default driver with no user
    block, ``chunk_iter`` is available, and the first and last
    frames written so far read through the map equal those HDF5 reads.
    """
    try:
        plist = ds.file.id.get_create_plist()
        if ds.file.driver != "sec2" or plist.get_userblock() != 0:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    if known_filesystem_type(path) not in LOCAL_FILESYSTEMS:
        return None
    if not chunk_iter_available() or not ds.shape or ds.shape[0] < 1:
        return None
    chunks = ChunkMap(ds, path, nbytes)
    n_rows = int(ds.shape[0])
    written = chunks.written(n_rows)
    if not written or not all(_same(ds, chunks, row, n_rows) for row in written):
        logger.debug("chunk offsets of %s do not match its data", path)
        chunks.close()
        return None
    return chunks


def _same(ds: h5py.Dataset, chunks: ChunkMap, row: int, n_rows: int) -> bool:
    """Whether row ``row`` seen through the map is what HDF5 reads."""
    mapped = chunks.frames(row, row + 1, n_rows)
    if mapped is None:
        return False
    try:
        _, expected = ds.id.read_direct_chunk((row,) + (0,) * (ds.ndim - 1))
    except (KeyError, OSError, RuntimeError, ValueError):
        return False
    return mapped.tobytes() == bytes(expected)
