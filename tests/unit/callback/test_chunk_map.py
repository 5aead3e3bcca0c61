"""Frames read in place from the mapped HDF5 file (real HDF5 files)."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from xsvs_bluesky.callback import _chunk_map
from xsvs_bluesky.callback._chunk_map import (
    LOCAL_FILESYSTEMS,
    filesystem_type,
    open_chunk_map,
)
from xsvs_bluesky.callback._hdf5 import HDF5FrameReader

SHAPE = (16, 20)
NBYTES = 2 * SHAPE[0] * SHAPE[1]

pytestmark = [
    pytest.mark.skipif(
        not _chunk_map.chunk_iter_available(),
        reason="this h5py has no DatasetID.chunk_iter (HDF5 without "
        "H5Dchunk_iter): frames are read through HDF5 instead",
    ),
    pytest.mark.skipif(
        filesystem_type(Path(tempfile.gettempdir())) not in LOCAL_FILESYSTEMS,
        reason="the temporary folder is not on a local filesystem, whose "
        "files are read through HDF5 instead of mapped",
    ),
]


def frames_of(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 60000, (n, *SHAPE), np.uint16)


def swmr_writer(path: Path) -> tuple[h5py.File, h5py.Dataset]:
    """An empty, growable frame dataset in SWMR mode, as a detector opens it."""
    f = h5py.File(path, "w", libver="latest")
    ds = f.create_dataset(
        "d",
        shape=(0, *SHAPE),
        maxshape=(None, *SHAPE),
        chunks=(1, *SHAPE),
        dtype="<u2",
    )
    f.swmr_mode = True
    return f, ds


def append(ds: h5py.Dataset, frames: np.ndarray) -> None:
    """Grow, write, flush: one batch, as a detector writes it."""
    at = ds.shape[0]
    ds.resize(at + len(frames), axis=0)
    ds[at:] = frames
    ds.flush()


def swmr_file(path: Path, frames: np.ndarray, batch: int = 10) -> None:
    """A whole file written ``batch`` frames at a time."""
    f, ds = swmr_writer(path)
    with f:
        for i in range(0, len(frames), batch):
            append(ds, frames[i : i + batch])


def chunk_offsets(path: Path) -> np.ndarray:
    offsets: list[int] = []
    with h5py.File(path, "r") as f:
        f["d"].id.chunk_iter(lambda c: offsets.append(c.byte_offset))
    return np.asarray(offsets)


def reader_of(path: Path, reuse: bool = True) -> HDF5FrameReader:
    res: dict[str, Any] = {"uid": "r", "mimetype": "application/x-hdf5"}
    res["uri"] = path.as_uri()
    res["parameters"] = {"dataset": "d"}
    return HDF5FrameReader(res, SHAPE, reuse_buffer=reuse)


def test_offsets_are_hdf5s_and_views_hold_the_file_data(tmp_path):
    frames = frames_of(300)
    path = tmp_path / "f.h5"
    swmr_file(path, frames)
    offsets = chunk_offsets(path)
    # an index block written between two frames breaks the run of chunks
    (gaps,) = np.nonzero(np.diff(offsets) != NBYTES)
    assert gaps.size >= 1
    with h5py.File(path, "r", swmr=True) as f:
        chunks = open_chunk_map(f["d"], path, NBYTES)
        assert chunks is not None
        assert chunks.written(300) == [0, 299]
        np.testing.assert_array_equal(chunks._offsets, offsets)
        gap = int(gaps[0]) + 1  # first row after the break
        view = chunks.frames(gap - 5, gap + 5, 300)
        assert view is not None and view.shape == (5, *SHAPE)  # stops at it
        np.testing.assert_array_equal(view, frames[gap - 5 : gap])
        rest = chunks.frames(gap, gap + 5, 300)
        np.testing.assert_array_equal(rest, frames[gap : gap + 5])
        chunks.close()


def test_partial_reads_cover_every_frame_once_and_full_reads_copy(tmp_path):
    frames = frames_of(300)
    path = tmp_path / "f.h5"
    swmr_file(path, frames)
    reader = reader_of(path)
    got, sizes, start = [], [], 0
    while start < 300:
        piece = reader.read(start, min(300, start + 32), partial=True)
        assert piece is not None and len(piece) >= 1
        got.append(piece.copy())
        sizes.append(len(piece))
        start += len(piece)
    np.testing.assert_array_equal(np.concatenate(got), frames)
    assert min(sizes) < 32 and sum(sizes) == 300  # one piece ended at the gap
    # without partial, the same ranges come whole (the gap read through HDF5)
    for a in range(0, 300, 32):
        np.testing.assert_array_equal(
            reader.read(a, min(300, a + 32)), frames[a : a + 32]
        )
    reader.close()


def test_a_growing_file_is_walked_again_and_read_exactly(tmp_path):
    frames = frames_of(120)
    path = tmp_path / "g.h5"
    writer, ds = swmr_writer(path)
    reader = reader_of(path)
    try:
        for i in range(0, 120, 40):
            append(ds, frames[i : i + 40])
            np.testing.assert_array_equal(reader.read(i, i + 40), frames[i : i + 40])
        assert reader._map is not None and reader._map._offsets.shape[0] == 120
        assert reader._buffer is None  # nothing was copied
    finally:
        reader.close()
        writer.close()


def test_a_writer_thread_and_the_reader_share_the_hdf5_library(tmp_path):
    """The walk holds h5py's lock: a writer in another thread is safe."""
    frames = frames_of(400)
    path = tmp_path / "t.h5"
    writer, ds = swmr_writer(path)
    append(ds, frames[:8])
    written = [8]

    def write() -> None:
        for i in range(8, 400, 8):
            append(ds, frames[i : i + 8])
            written.append(i + 8)

    thread = threading.Thread(target=write)
    reader = reader_of(path)
    start = 0
    try:
        thread.start()
        while start < 400:
            stop = min(written[-1], start + 32)
            piece = reader.read(start, stop, partial=True) if stop > start else None
            if piece is None:
                continue
            np.testing.assert_array_equal(piece, frames[start : start + len(piece)])
            start += len(piece)
    finally:
        thread.join()
        reader.close()
        writer.close()
    assert start == 400


def test_a_file_cut_short_is_not_read_through_the_map(tmp_path):
    frames = frames_of(50)
    path = tmp_path / "cut.h5"
    swmr_file(path, frames)
    f = h5py.File(path, "r")
    chunks = open_chunk_map(f["d"], path, NBYTES)
    assert chunks is not None
    last = int(chunks._offsets[49])
    os.truncate(path, last)  # the last frame is gone: its page would SIGBUS
    assert chunks.frames(49, 50, 50) is None
    np.testing.assert_array_equal(chunks.frames(10, 12, 50), frames[10:12])
    chunks.close()
    f.close()


def test_files_that_cannot_be_mapped_are_read_through_hdf5(tmp_path):
    frames = frames_of(20)
    path = tmp_path / "ub.h5"
    # a user block shifts every address: the map is refused
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("d", data=frames, chunks=(1, *SHAPE))
    with h5py.File(path, "r") as f:
        assert open_chunk_map(f["d"], path, NBYTES) is None
    reader = reader_of(path)
    first, second = reader.read(0, 4), reader.read(10, 14)
    assert np.shares_memory(first, second)  # one reused buffer instead
    np.testing.assert_array_equal(second, frames[10:14])
    reader.close()
    # a reader that owns its results never maps
    reader = reader_of(tmp_path / "ub.h5", reuse=False)
    np.testing.assert_array_equal(reader.read(0, 20), frames)
    assert reader._map is None
    reader.close()


def test_files_on_other_filesystems_are_read_through_hdf5(tmp_path, monkeypatch):
    frames = frames_of(40)
    path = tmp_path / "nfs.h5"
    swmr_file(path, frames)
    assert filesystem_type(path) in LOCAL_FILESYSTEMS
    assert filesystem_type(Path("/proc/self")) == "proc"
    # as if the folder were on NFS: a file cut short there could go unseen
    monkeypatch.setattr(_chunk_map, "LOCAL_FILESYSTEMS", frozenset())
    with h5py.File(path, "r") as f:
        assert open_chunk_map(f["d"], path, NBYTES) is None
    reader = reader_of(path)
    np.testing.assert_array_equal(reader.read(0, 40), frames)
    assert reader._map is None
    reader.close()


def test_the_filesystem_type_is_asked_once_a_minute_per_device(tmp_path, monkeypatch):
    asked: list[Path] = []

    def counted(path: Path) -> str:
        asked.append(path)
        return filesystem_type(path)

    monkeypatch.setattr(_chunk_map, "filesystem_type", counted)
    monkeypatch.setattr(_chunk_map, "_fs_types", {})
    paths = [tmp_path / f"{i}.h5" for i in range(3)]
    for path in paths:
        swmr_file(path, frames_of(4))
        with h5py.File(path, "r") as f:
            chunks = open_chunk_map(f["d"], path, NBYTES)
            assert chunks is not None
            chunks.close()
    assert asked == paths[:1]  # one folder, one device: asked once
    monkeypatch.setattr(_chunk_map, "FS_TYPE_TTL_S", 0.0)  # the minute is over
    assert _chunk_map.known_filesystem_type(paths[2]) in LOCAL_FILESYSTEMS
    assert asked == [paths[0], paths[2]]
    # a type not known (no such path) is not remembered
    assert _chunk_map.known_filesystem_type(tmp_path / "missing") == ""
    assert len(_chunk_map._fs_types) == 1


def test_rows_not_allocated_yet_have_no_offset_and_read_as_hdf5_does(tmp_path):
    frames = frames_of(12)
    path = tmp_path / "holes.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "d", shape=(12, *SHAPE), chunks=(1, *SHAPE), dtype="<u2", fillvalue=7
        )
        for row in (0, 1, 2, 5, 6, 11):  # rows 3, 4, 7-10: never written
            ds[row] = frames[row]
    with h5py.File(path, "r") as f:
        chunks = open_chunk_map(f["d"], path, NBYTES)
        assert chunks is not None
        assert chunks.written(12) == [0, 11]
        assert np.flatnonzero(chunks._offsets < 0).tolist() == [3, 4, 7, 8, 9, 10]
        assert chunks.frames(3, 5, 12) is None
        np.testing.assert_array_equal(chunks.frames(0, 3, 12), frames[:3])
        chunks.close()
    reader = reader_of(path)
    expected = frames.copy()
    expected[[3, 4, 7, 8, 9, 10]] = 7
    got = []
    for i in range(12):
        frame = reader.read(i, i + 1)
        assert frame is not None
        got.append(frame.copy())
    np.testing.assert_array_equal(np.concatenate(got), expected)
    reader.close()
