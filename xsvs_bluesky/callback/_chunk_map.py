"""Frames of an HDF5 file seen in place: the file mapped into memory.

A chunked, unfiltered dataset whose chunks are whole frames stores frame
``i`` as ``nbytes`` raw bytes at some file offset.  Reading it through HDF5
(``read_direct_chunk``) copies those bytes from the page cache into a
buffer: ~25 us per 128 KiB frame, as much as histogramming it.  Mapping the
file and handing the kernels a view at the frame's offset skips the copy;
consecutive chunks (the usual layout of a detector writing frame after
frame) form one ``(n, rows, cols)`` view.

The offsets come from HDF5's chunk index, walked by ``H5Dchunk_iter`` of the
HDF5 library h5py has loaded, with a compiled callback (~0.2 us per chunk,
under h5py's lock, so a writer thread of the same process is safe).  A walk
visits every chunk of the dataset, so it is only made when the new frames
are worth it (:data:`WALK_RATIO`); a frame whose offset is unknown is read
through HDF5 as before.  When the library, the file driver or the layout
do not allow it (no ``/proc/self/maps``, a network filesystem, a user
block, another driver, HDF5 older than 1.14), or the first or last written
frame seen through the map differs from what HDF5 reads,
:func:`open_chunk_map` returns None and the frames are read through HDF5.

A mapped view stays valid as long as it is referenced, but the callback's
contract is the reused buffer's (valid during ``on_frames`` only): the
file's size is checked before every view, since reading a page past the
end of a file cut shorter kills the process (SIGBUS).
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numba as nb
import numpy as np
from numba import types
from numpy.typing import NDArray

__all__ = ["ChunkMap", "open_chunk_map"]

logger = logging.getLogger(__name__)

WALK_RATIO = 32
"""Walk the chunk index (~0.17 us per chunk of the dataset) only when it
holds at most this many chunks per frame not yet walked (a mapped frame
saves ~15-20 us): at most ~5 us per frame, however long the series."""

_UNKNOWN = -1

_SIGNATURE = types.int32(
    types.CPointer(types.uint64),  # chunk coordinates (hsize_t *)
    types.uint32,  # filter mask
    types.uint64,  # file address (haddr_t)
    types.uint64,  # stored size (hsize_t)
    types.CPointer(types.int64),  # op_data: [nbytes, n_rows, offsets...]
)


def _record_chunk(coords, filter_mask, address, size, table):  # pragma: no cover
    """``H5Dchunk_iter`` callback: the offset of a whole, unfiltered chunk."""
    row = np.int64(coords[0])
    if row < table[1]:
        whole = filter_mask == 0 and np.int64(size) == table[0]
        table[2 + row] = np.int64(address) if whole else _UNKNOWN
    return 0  # H5_ITER_CONT


_walker: Any = None
_callback: Any = None


def _chunk_walker() -> Any:
    """``H5Dchunk_iter`` of the HDF5 library h5py uses, or None.

    Also compiles the callback (:func:`_record_chunk`) the first time.
    """
    global _walker, _callback
    if _walker is None:
        _walker = False
        path = _h5py_library()
        if path is None:
            return None
        try:
            # PyDLL keeps the GIL: h5py's calls cannot interleave with ours
            func = ctypes.PyDLL(path).H5Dchunk_iter
        except (OSError, AttributeError):  # HDF5 < 1.14 has no H5Dchunk_iter
            return None
        func.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        func.argtypes += [ctypes.c_void_p]
        func.restype = ctypes.c_int
        _callback = nb.cfunc(_SIGNATURE, cache=True)(_record_chunk)
        _walker = func
    return _walker or None


def _h5py_library() -> str | None:
    """Path of the HDF5 library h5py has loaded (Linux), or None.

    Its identifiers (``hid_t``) mean nothing to another copy of HDF5 that
    some other package may have loaded: the copy in h5py's own wheel wins,
    else the only one loaded; with several and none of h5py's, None.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            maps = fh.read()
    except OSError:
        return None
    pattern = r"(/\S*/libhdf5(?:_serial|_openmpi|_mpich)?(?:-[0-9a-f]+)?\.so[^/\s]*)"
    names = sorted(set(re.findall(pattern, maps)))
    wheel = str(Path(h5py.__file__).parent.parent / "h5py.libs")
    own = [n for n in names if n.startswith(wheel)]
    if own:
        return own[0]
    return names[0] if len(names) == 1 else None


LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "overlay"}
)
"""Filesystems whose files are mapped.  On a network filesystem another host
may cut a file short without this one's size check seeing it in time, and
a mapped page past the end of a file kills the process (SIGBUS): such
files are read through HDF5."""


def filesystem_type(path: Path) -> str:
    """Type of the filesystem holding ``path`` (Linux), or ``""``."""
    try:
        target = os.path.realpath(path)
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            mounts = fh.read().splitlines()
    except OSError:
        return ""
    best, kind = "", ""
    for line in mounts:
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        # mount points escape blanks and backslashes as octal (\040)
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[fields.index("-", 6) + 1]
    return kind


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
        walker = _chunk_walker()
        if walker is None:
            return False
        table = np.full(n_rows + 2, _UNKNOWN, dtype=np.int64)
        table[0], table[1] = self._nbytes, n_rows
        with h5py._objects.phil:  # h5py's lock on the library
            status = walker(self._ds.id.id, 0, _callback.address, table.ctypes.data)
        if status < 0:
            logger.debug("H5Dchunk_iter failed on %s", self._path)
            return False
        self._offsets = table[2:]
        off = self._offsets
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
    block, ``H5Dchunk_iter`` is available, and the first and last
    frames written so far read through the map equal those HDF5 reads.
    """
    try:
        plist = ds.file.id.get_create_plist()
        if ds.file.driver != "sec2" or plist.get_userblock() != 0:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    if filesystem_type(path) not in LOCAL_FILESYSTEMS:
        return None
    if _chunk_walker() is None or not ds.shape or ds.shape[0] < 1:
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
