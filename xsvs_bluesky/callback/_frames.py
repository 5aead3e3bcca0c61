"""Where the detector frames of a raw bluesky run come from.

Three sources, one result (a ``(n, rows, cols)`` stack per document):

- inline arrays in Event/EventPage data (:func:`stack_frames`);
- HDF5 files referenced by StreamResource/StreamDatum documents, read with
  h5py in SWMR mode, one read per datum (:class:`HDF5FrameReader`);
- legacy Resource/Datum documents, which the callback first normalises to
  StreamResource/StreamDatum with bluesky_tiled_plugins' ``RunNormalizer``.

:class:`RunFrames` turns the documents of one run into :class:`FrameBatch` es.
Re-exported here: which data key holds the frames (:func:`find_frame_key`)
and the exposure time read from a descriptor's configuration, an event or a
start document (:func:`find_exposure_time`), from ``_descriptors``; the HDF5
reader from ``_hdf5``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from numpy.typing import NDArray

from xsvs_bluesky.callback._access import (
    FallbackReader,
    FrameAccess,
    HeldFrames,
    RefusedReader,
    unreadable_reason,
)
from xsvs_bluesky.callback._descriptors import (
    data_key_shape,
    exposure_keys,
    find_exposure_time,
    find_frame_key,
    frame_source_kind,
    positive_number,
    stack_frames,
)
from xsvs_bluesky.callback._hdf5 import HDF5FrameReader, uri_to_path
from xsvs_bluesky.callback._shards import DatumTask
from xsvs_bluesky.errors import XSVSError
from xsvs_bluesky.options import DEFAULT_LIMITS, Limits

__all__ = [
    "FrameBatch",
    "HDF5FrameReader",
    "RunFrames",
    "StreamInfo",
    "exposure_keys",
    "find_exposure_time",
    "find_frame_key",
    "frame_source_kind",
    "stack_frames",
    "uri_to_path",
]


PIECE_FRAMES = 32
"""Frames read and analysed at a time from the HDF5 range of one StreamDatum."""
_HDF5_MIMETYPES = {"application/x-hdf5", "application/x-hdf"}


class _Reader(Protocol):
    frames_per_index: int

    def read(
        self, start: int, stop: int, *, partial: bool = False
    ) -> NDArray[Any] | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StreamInfo:
    """What a descriptor says about the frames of its stream."""

    uid: str
    name: str
    frame_key: str
    kind: str
    datum_shape: tuple[int, ...]
    exposure_time: float | None
    exposure_origin: str
    event_exposure_key: str | None


@dataclass(frozen=True, eq=False)
class FrameBatch:
    """Frames of one stream and exposure time, ``(n, rows, cols)``.

    ``frames`` may be the HDF5 reader's buffer: valid only until the
    ``on_frames`` call that receives the batch returns (copy to keep it).
    """

    stream: str
    exposure_time: float | None
    frames: NDArray[Any]


class RunFrames:
    """Turn the documents of one raw run into :class:`FrameBatch` es.

    Feed it the run's documents (the method names are the document names);
    it calls ``on_frames`` with every batch, in acquisition order.  HDF5
    datums whose frames are not in the file yet are kept and retried on
    the next document and in :meth:`stop`.

    The exposure time of a batch is an exposure-time key read with the
    frames in the Event data, else the one in the descriptor's
    configuration, else the start document's (see :func:`find_exposure_time`
    for the key names); None when none is found.

    Parameters
    ----------
    start : mapping
        The run's start document (exposure-time fallback).
    on_frames : callable
        Called with each :class:`FrameBatch`.
    detector_key : str, optional
        Data key of the frames (default: see :func:`find_frame_key`).
    frame_shape : tuple of int, optional
        Expected ``(rows, cols)``.
    access : FrameAccess, optional
        Path map, allowed roots and fallback of StreamResource files (see
        :class:`~xsvs_bluesky.callback.FrameAccess`); None reads any file
        as named.
    limits : Limits, optional
        ``limits.max_pixels`` is checked on the frame shape of every
        descriptor (a :class:`~xsvs_bluesky.errors.LimitError`) before any
        frame is read.
    on_datum : callable, optional
        Offered each HDF5 StreamDatum whose (mapped) file may be read, as a
        :class:`DatumTask`, when no datum waits before it; returns True when
        it takes the datum (read elsewhere), False to have it read here.

    Attributes
    ----------
    problems : list of str
        After :meth:`stop`: per file, how many frames could not be read in
        time and why.
    """

    def __init__(
        self,
        start: Mapping[str, Any],
        on_frames: Callable[[FrameBatch], None],
        *,
        detector_key: str | None = None,
        frame_shape: tuple[int, int] | None = None,
        access: FrameAccess | None = None,
        limits: Limits = DEFAULT_LIMITS,
        on_datum: Callable[[DatumTask], bool] | None = None,
    ) -> None:
        self._start = start
        self._limits = limits
        self._on_frames = on_frames
        self._on_datum = on_datum
        self._detector_key = detector_key
        self._frame_shape = frame_shape
        self._access = access
        self.streams: dict[str, StreamInfo] = {}
        self._resources: dict[str, Mapping[str, Any]] = {}
        self._readers: dict[str, _Reader] = {}
        self._pending: deque[tuple[_Reader, StreamInfo, int, int]] = deque()
        self._lost: list[tuple[int, str]] = []
        self.problems: list[str] = []
        self._normalizer: Any = None

    # ------------------------------------------------------------ documents
    def descriptor(self, doc: Mapping[str, Any]) -> StreamInfo | None:
        """Register a descriptor; its :class:`StreamInfo` if it has frames."""
        key = find_frame_key(
            doc, detector_key=self._detector_key, frame_shape=self._frame_shape
        )
        if key is None:
            return None
        value, origin = find_exposure_time(descriptor=doc, frame_key=key)
        if value is None:
            value, origin = find_exposure_time(start=self._start)
        scalars = [k for k, v in doc["data_keys"].items() if not v.get("shape")]
        event_keys = exposure_keys(scalars)
        info = StreamInfo(
            uid=doc["uid"],
            name=str(doc.get("name", "primary")),
            frame_key=key,
            kind=frame_source_kind(doc, key),
            datum_shape=data_key_shape(doc["data_keys"][key]),
            exposure_time=value,
            exposure_origin=origin if value is not None else "",
            event_exposure_key=event_keys[0] if event_keys else None,
        )
        self._limits.check_pixels(
            info.datum_shape[-2:], f"frame data key {key!r} of stream {info.name!r}"
        )
        self.streams[info.uid] = info
        if info.kind == "legacy":
            self._legacy().descriptor(doc)
        return info

    def event_page(self, doc: Mapping[str, Any]) -> None:
        """Frames inline in an EventPage (legacy references are resolved)."""
        info = self.streams.get(doc["descriptor"])
        if info is None:
            return
        if info.kind == "legacy":
            self._legacy().event_page(doc)
            return
        values = doc["data"].get(info.frame_key)
        if info.kind != "inline" or values is None:
            return
        # a value read with the frame wins: bluesky caches the configuration
        # in the descriptor, which goes stale if a plan changes it with mv()
        times: list[float | None] = [info.exposure_time] * len(values)
        if info.event_exposure_key in doc["data"]:
            read = doc["data"][info.event_exposure_key]
            times = [positive_number(v) or info.exposure_time for v in read]
        i = 0
        while i < len(values):  # consecutive events of one exposure time
            j = i + 1
            while j < len(values) and times[j] == times[i]:
                j += 1
            frames = stack_frames(values[i:j], info.datum_shape)
            self._on_frames(FrameBatch(info.name, times[i], frames))
            i = j

    def stream_resource(self, doc: Mapping[str, Any]) -> None:
        """Register a StreamResource (its file may not exist yet)."""
        if "mimetype" not in doc:  # event-model < 1.20 schema: normalise first
            self._legacy().stream_resource(doc)
            return
        self.flush()
        self._resources[doc["uid"]] = doc

    def stream_datum(self, doc: Mapping[str, Any]) -> None:
        """Read (or queue) the frames a StreamDatum points to."""
        info = self.streams.get(doc["descriptor"])
        resource = self._resources.get(doc["stream_resource"])
        if info is None or resource is None or resource["data_key"] != info.frame_key:
            self.flush()
            return
        if self._on_datum is not None and not self._pending:
            task = self._datum_task(resource, info, doc["indices"])
            if task is not None and self._on_datum(task):
                return  # read and analysed elsewhere (a Dask worker)
        reader = self._readers.get(resource["uid"])
        if reader is None:
            reader = self._reader_for(resource, info)
            self._readers[resource["uid"]] = reader
        indices = doc["indices"]
        self._pending.append(
            (reader, info, int(indices["start"]), int(indices["stop"]))
        )
        self.flush()

    def resource(self, doc: Mapping[str, Any]) -> None:
        """Register a legacy Resource (normalised to a StreamResource)."""
        self._legacy().resource(doc)

    def datum_page(self, doc: Mapping[str, Any]) -> None:
        """Legacy Datum documents (normalised to StreamDatum)."""
        self._legacy().datum_page(doc)

    def stop(self, doc: Mapping[str, Any], *, timeout_s: float = 5.0) -> int:
        """End of the run: resolve what is left; frames never read.

        Parameters
        ----------
        doc : mapping
            The raw run's stop document.
        timeout_s : float
            How long to wait for HDF5 frames not yet written, s.

        Returns
        -------
        int
            Number of frames that could not be read in time.
        """
        if self._normalizer is not None:
            self._normalizer.stop(dict(doc))
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while self.flush() and time.monotonic() < deadline:
            time.sleep(0.02)
        access = self._access
        if self._pending and access is not None and access.fallback is not None:
            # files never readable here: the frames of the stored raw run
            self._pending = deque(
                (self._fallback_for(r, info), info, a, b)
                for r, info, a, b in self._pending
            )
            deadline = time.monotonic() + max(access.fallback_timeout_s, 0.0)
            while self.flush() and time.monotonic() < deadline:
                time.sleep(0.1)
        missing = 0
        per_file: dict[Any, int] = {}
        for reader, _, a, b in self._pending:
            per_file[reader] = (
                per_file.get(reader, 0) + (b - a) * reader.frames_per_index
            )
        reasons = []
        for reader, count in per_file.items():
            missing += count
            why = getattr(reader, "waiting_for", "") or _problem(reader)
            where = getattr(reader, "path", "the stored raw run")
            reasons.append(
                f"{count} frames of {where} could not be read within "
                f"{max(timeout_s, 0.0):g} s: {why}"
            )
        missing += sum(n for n, _ in self._lost)
        reasons += [w for _, w in self._lost]
        self.problems = list(dict.fromkeys(reasons))
        self._pending.clear()
        self.close()
        return missing

    # ------------------------------------------------------------- helpers
    def flush(self) -> int:
        """Read the queued datums whose frames are available, in order.

        Returns
        -------
        int
            Datums still waiting.
        """
        while self._pending:
            reader, info, a, b = self._pending[0]
            if isinstance(reader, RefusedReader):
                self._pending.popleft()
                self._lost.append(((b - a) * reader.frames_per_index, reader.why))
                continue
            # a datum may span hundreds of frames: read and analyse them in
            # pieces whose memory the allocator reuses (a fresh 30 MB array
            # per datum costs a page fault per 4 KiB, as much as the read)
            piece = PIECE_FRAMES
            if isinstance(reader, FallbackReader) and self._access is not None:
                piece = self._access.fallback_frames  # one request per piece
            stop = min(b, a + max(1, piece // reader.frames_per_index))
            # partial: the reader may stop early where the frames stop lying
            # one after the other in the file (a view of them needs no copy)
            frames = reader.read(a, stop, partial=True)
            if frames is None:
                break
            stop = a + max(1, frames.shape[0] // reader.frames_per_index)
            if stop < b:
                self._pending[0] = (reader, info, stop, b)
            else:
                self._pending.popleft()
            self._on_frames(FrameBatch(info.name, info.exposure_time, frames))
        return len(self._pending)

    def close(self) -> None:
        """Close every open file."""
        for reader in self._readers.values():
            reader.close()

    def _datum_task(
        self, resource: Mapping[str, Any], info: StreamInfo, indices: Mapping[str, Any]
    ) -> DatumTask | None:
        """Return the datum for a worker, its file mapped; None if not allowed."""
        if resource.get("mimetype") not in _HDF5_MIMETYPES:
            return None
        local = resource
        if self._access is not None:
            try:
                path = self._access.map(uri_to_path(str(resource["uri"])))
            except XSVSError:
                return None
            if self._access.check(path):
                return None  # refused here: read (or reported) in process
            local = {**resource, "uri": path.absolute().as_uri()}
        return DatumTask(
            stream=info.name,
            exposure_time=info.exposure_time,
            resource=local,
            datum_shape=tuple(int(s) for s in info.datum_shape),
            start=int(indices["start"]),
            stop=int(indices["stop"]),
        )

    def _reader_for(self, resource: Mapping[str, Any], info: StreamInfo) -> _Reader:
        """Return the reader of a StreamResource's frames, as ``_access`` allows."""
        access = self._access
        if access is None:
            return HDF5FrameReader(resource, info.datum_shape, reuse_buffer=True)
        try:
            path = access.map(uri_to_path(str(resource["uri"])))
        except XSVSError as err:
            why = str(err)
        else:
            why = access.check(path)
            if not why:
                local = {**resource, "uri": path.resolve().as_uri()}
                if access.held is not None:
                    return _HeldFirstReader(local, info.datum_shape, access.held)
                return HDF5FrameReader(local, info.datum_shape, reuse_buffer=True)
        params = resource.get("parameters") or {}
        fpi = int(params.get("multiplier") or math.prod(info.datum_shape[:-2]) or 1)
        if access.fallback is None:
            return RefusedReader(f"frames of stream {info.name!r} not read: {why}", fpi)
        return self._fallback_reader(info, fpi, why)

    def _fallback_for(self, reader: _Reader, info: StreamInfo) -> _Reader:
        if not isinstance(reader, HDF5FrameReader):
            return reader
        key = f"fallback-{id(reader)}"
        if key not in self._readers:
            why = unreadable_reason(reader.path)
            self._readers[key] = self._fallback_reader(
                info, reader.frames_per_index, why
            )
        return self._readers[key]

    def _fallback_reader(self, info: StreamInfo, fpi: int, why: str) -> _Reader:
        assert self._access is not None and self._access.fallback is not None
        shape = info.datum_shape
        return FallbackReader(
            self._access.fallback,
            raw_uid=str(self._start.get("uid")),
            stream=info.name,
            data_key=info.frame_key,
            frame_shape=(int(shape[-2]), int(shape[-1])),
            frames_per_index=fpi,
            why=f"frames of stream {info.name!r}: {why}",
        )

    def _legacy(self) -> Any:
        if self._normalizer is None:
            from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer

            self._normalizer = RunNormalizer()
            self._normalizer.subscribe(self._normalized)
        return self._normalizer

    def _normalized(self, name: str, doc: dict[str, Any]) -> None:
        # only the external-data documents matter; the normalised events
        # come before their stream_resource and carry no frames
        if name == "stream_resource":
            self.stream_resource(doc)
        elif name == "stream_datum":
            self.stream_datum(doc)


class _HeldFirstReader(HDF5FrameReader):
    """The frames the producer of this process still holds, else the file's.

    See :attr:`FrameAccess.held`: the replay of a legacy series writes each
    block of frames to its HDF5 file and announces it with a StreamDatum;
    the callback then takes the block from the replay's buffer (a view,
    valid until the replay writes again, as the file reader's own buffer)
    instead of reading back and decompressing what was just written.
    """

    def __init__(
        self,
        stream_resource: Mapping[str, Any],
        datum_shape: Sequence[int],
        held: HeldFrames,
    ) -> None:
        super().__init__(stream_resource, datum_shape, reuse_buffer=True)
        self._resource_uid = str(stream_resource["uid"])
        self._held = held
        self.held_reads = 0
        """Reads answered from the producer's memory (for tests)."""

    def read(
        self, start: int, stop: int, *, partial: bool = False
    ) -> NDArray[Any] | None:
        frames = self._held(self._resource_uid, start, stop)
        if frames is not None:
            self.held_reads += 1
            return frames
        return super().read(start, stop, partial=partial)


def _problem(reader: Any) -> str:
    if isinstance(reader, HDF5FrameReader):
        return unreadable_reason(reader.path)
    return str(reader.problem())
