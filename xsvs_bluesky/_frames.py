"""Where the detector frames of a raw bluesky run come from.

Three sources, one result (a ``(n, rows, cols)`` stack per document):

- inline arrays in Event/EventPage data (:func:`stack_frames`);
- HDF5 files referenced by StreamResource/StreamDatum documents, read with
  h5py in SWMR mode, one read per datum (:class:`HDF5FrameReader`);
- legacy Resource/Datum documents, which the callback first normalises to
  StreamResource/StreamDatum with bluesky_tiled_plugins' ``RunNormalizer``.

Also here: which data key holds the frames (:func:`find_frame_key`) and
the exposure time read from a descriptor's configuration, an event or a
start document (:func:`find_exposure_time`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import h5py
import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.errors import XSVSError

__all__ = [
    "FrameBatch",
    "HDF5FrameReader",
    "RunFrames",
    "StreamInfo",
    "find_exposure_time",
    "find_frame_key",
    "frame_source_kind",
    "stack_frames",
]

logger = logging.getLogger(__name__)

# name endings of exposure-time keys, most specific first
_EXPOSURE_SUFFIXES = (
    "acquire_time",
    "exposure_time",
    "acquisition_time",
    "count_time",
    "integration_time",
    "exposure",
)
_NOT_EXPOSURE = ("period", "num", "dead", "delay", "latency", "readout")
_HDF5_MIMETYPES = {"application/x-hdf5", "application/x-hdf"}


def _shape(data_key: Mapping[str, Any]) -> tuple[int, ...]:
    shape = data_key.get("shape") or ()
    return tuple(-1 if s is None else int(s) for s in shape)


def find_frame_key(
    descriptor: Mapping[str, Any],
    *,
    detector_key: str | None = None,
    frame_shape: tuple[int, int] | None = None,
) -> str | None:
    """Find the data key holding detector frames in a descriptor.

    Parameters
    ----------
    descriptor : mapping
        An EventDescriptor document.
    detector_key : str, optional
        The key to use; None picks the largest data key of at least two
        dimensions, preferring those whose last two match ``frame_shape``.
    frame_shape : tuple of int, optional
        Expected ``(rows, cols)`` of a frame.

    Returns
    -------
    str or None
        The key, or None when the descriptor holds no frames.
    """
    data_keys: Mapping[str, Any] = descriptor.get("data_keys", {})
    if detector_key is not None:
        return detector_key if detector_key in data_keys else None
    best: tuple[bool, int, str] | None = None
    for key, dk in data_keys.items():
        shape = _shape(dk)
        if len(shape) < 2 or min(shape[-2:]) < 2:
            continue
        # a key of the expected shape wins; another one is still taken, so
        # a wrong geometry fails the derived run instead of going unnoticed
        fits = frame_shape is None or shape[-2:] == tuple(frame_shape)
        rank = (fits, shape[-1] * shape[-2], key)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return None if best is None else best[2]


def frame_source_kind(descriptor: Mapping[str, Any], key: str) -> str:
    """How a frame key's data arrive: ``"inline"``, ``"stream"`` or ``"legacy"``.

    ``"stream"`` is StreamResource/StreamDatum (``external="STREAM:"``),
    ``"legacy"`` is Resource/Datum (any other ``external`` value).
    """
    external = descriptor["data_keys"][key].get("external")
    if not external:
        return "inline"
    return "stream" if str(external).upper().startswith("STREAM") else "legacy"


def _positive_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def exposure_keys(keys: Iterable[str]) -> list[str]:
    """Keys that name an exposure time (``*acquire_time``, ...), best first."""
    candidates: list[tuple[int, str]] = []
    for key in keys:
        name = key.lower()
        if any(bad in name for bad in _NOT_EXPOSURE):
            continue
        for rank, suffix in enumerate(_EXPOSURE_SUFFIXES):
            if name.endswith(suffix):
                candidates.append((rank, key))
                break
    return [key for _, key in sorted(candidates)]


def _match_exposure(values: Mapping[str, Any]) -> float | None:
    """Exposure time in s from the best-matching key of a flat mapping."""
    for key in exposure_keys(values):
        value = _positive_number(values[key])
        if value is not None:
            return value
    return None


def find_exposure_time(
    *,
    descriptor: Mapping[str, Any] | None = None,
    frame_key: str | None = None,
    event_data: Mapping[str, Any] | None = None,
    start: Mapping[str, Any] | None = None,
) -> tuple[float | None, str]:
    """Exposure time of one frame in s, and where it was found.

    Looked for, in order: the configuration of the detector object that
    owns ``frame_key`` (its ``*acquire_time``/``*exposure_time``/... key),
    the configuration of any other object, the event data, the start
    document (``xsvs_exposure_time``, ``exposure_time``, ``acquire_time``).

    Returns
    -------
    value : float or None
        Exposure time in s, None when none was found.
    origin : str
        ``"configuration"``, ``"event"``, ``"start"`` or ``""``.
    """
    if descriptor is not None:
        config: Mapping[str, Any] = descriptor.get("configuration", {}) or {}
        owner = None
        if frame_key is not None:
            owner = (
                descriptor.get("data_keys", {}).get(frame_key, {}).get("object_name")
            )
            for obj, keys in (descriptor.get("object_keys") or {}).items():
                if frame_key in keys:
                    owner = obj
        first = [owner] if isinstance(owner, str) and owner in config else []
        objects = first + [o for o in config if o != owner]
        for obj in objects:
            value = _match_exposure(config[obj].get("data", {}) or {})
            if value is not None:
                return value, "configuration"
    if event_data is not None:
        value = _match_exposure(event_data)
        if value is not None:
            return value, "event"
    if start is not None:
        for key in ("xsvs_exposure_time", "exposure_time", "acquire_time"):
            value = _positive_number(start.get(key))
            if value is not None:
                return value, "start"
    return None, ""


def stack_frames(value: Any, frame_shape: tuple[int, ...]) -> NDArray[Any]:
    """Return inline frame data as a ``(n, rows, cols)`` stack.

    Parameters
    ----------
    value : array_like
        One frame, a stack, or a list of those (EventPage data).
    frame_shape : tuple of int
        ``(rows, cols)``.

    Raises
    ------
    XSVSError
        If the data cannot be viewed as frames of that shape.
    """
    arr = np.asarray(value)
    rows, cols = frame_shape[-2:]
    if arr.ndim < 2 or arr.shape[-2:] != (rows, cols):
        raise XSVSError(
            f"inline frame data of shape {arr.shape} do not end with the frame "
            f"shape {(rows, cols)}"
        )
    return arr.reshape(-1, rows, cols)


def uri_to_path(uri: str) -> Path:
    """Local path of a ``file://`` URI (or of a plain path)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path if parsed.scheme else uri))
    raise XSVSError(
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

    Raises
    ------
    XSVSError
        On an unsupported mimetype, a multi-file template or a non-local URI.
    """

    def __init__(
        self, stream_resource: Mapping[str, Any], datum_shape: Sequence[int]
    ) -> None:
        mimetype = stream_resource.get("mimetype", "")
        params: Mapping[str, Any] = stream_resource.get("parameters", {}) or {}
        if mimetype not in _HDF5_MIMETYPES or params.get("template"):
            raise XSVSError(
                f"stream resource {stream_resource.get('uid')!r}: mimetype "
                f"{mimetype!r} (template {params.get('template')!r}) is not "
                "supported; give a single application/x-hdf5 file"
            )
        self.path = uri_to_path(str(stream_resource["uri"]))
        self.dataset_path = str(params.get("dataset") or params.get("path") or "")
        if not self.dataset_path:
            raise XSVSError(
                f"stream resource {stream_resource.get('uid')!r} has no "
                "parameters['dataset']; give the HDF5 dataset path"
            )
        shape = tuple(int(s) for s in datum_shape)
        if len(shape) < 2:
            raise XSVSError(
                f"data key shape {list(datum_shape)} is not a frame shape; give "
                "[rows, cols] or [frames, rows, cols]"
            )
        self.frame_shape: tuple[int, int] = (shape[-2], shape[-1])
        multiplier = params.get("multiplier")
        self.frames_per_index = int(multiplier or math.prod(shape[:-2]) or 1)
        self._file: h5py.File | None = None
        self._dataset: h5py.Dataset | None = None

    def _open(self) -> h5py.Dataset | None:
        if self._dataset is not None:
            return self._dataset
        if not self.path.is_file():
            return None
        try:
            handle = h5py.File(self.path, "r", swmr=True)
        except OSError:
            # a file written without SWMR support (or still locked)
            try:
                handle = h5py.File(self.path, "r")
            except OSError as err:
                logger.debug("cannot open %s yet: %s", self.path, err)
                return None
        if self.dataset_path not in handle:
            handle.close()
            return None
        self._file = handle
        self._dataset = handle[self.dataset_path]
        return self._dataset

    def read(self, start: int, stop: int) -> NDArray[Any] | None:
        """Frames of datum indices ``[start, stop)``, None if not yet written.

        Returns
        -------
        numpy.ndarray or None
            ``(n, rows, cols)`` with ``n = (stop - start) * frames_per_index``.
        """
        ds = self._open()
        if ds is None:
            return None
        try:
            ds.refresh()
        except (OSError, ValueError, RuntimeError):  # not in SWMR mode
            pass
        fpi = self.frames_per_index
        rows, cols = self.frame_shape
        if ds.ndim == 3 and ds.shape[1:] == (rows, cols):
            lo, hi = start * fpi, stop * fpi
        elif ds.ndim == 4 and ds.shape[2:] == (rows, cols):
            lo, hi = start, stop
        elif ds.ndim == 2 and ds.shape == (rows, cols) and (start, stop) == (0, 1):
            return np.asarray(ds[()])[None]
        else:
            raise XSVSError(
                f"{self.path}:{self.dataset_path} has shape {ds.shape}; expected "
                f"(n, {rows}, {cols}) frames"
            )
        if ds.shape[0] < hi:
            return None
        data = np.asarray(ds[lo:hi])
        return data.reshape(-1, rows, cols)

    def close(self) -> None:
        """Close the file (a later read reopens it)."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
                self._dataset = None


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
    """Frames of one stream and exposure time, ``(n, rows, cols)``."""

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
    """

    def __init__(
        self,
        start: Mapping[str, Any],
        on_frames: Callable[[FrameBatch], None],
        *,
        detector_key: str | None = None,
        frame_shape: tuple[int, int] | None = None,
    ) -> None:
        self._start = start
        self._on_frames = on_frames
        self._detector_key = detector_key
        self._frame_shape = frame_shape
        self.streams: dict[str, StreamInfo] = {}
        self._resources: dict[str, Mapping[str, Any]] = {}
        self._readers: dict[str, HDF5FrameReader] = {}
        self._pending: deque[tuple[HDF5FrameReader, StreamInfo, int, int]] = deque()
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
            datum_shape=_shape(doc["data_keys"][key]),
            exposure_time=value,
            exposure_origin=origin if value is not None else "",
            event_exposure_key=event_keys[0] if event_keys else None,
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
            times = [_positive_number(v) or info.exposure_time for v in read]
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
        reader = self._readers.get(resource["uid"])
        if reader is None:
            reader = HDF5FrameReader(resource, info.datum_shape)
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
        missing = sum((b - a) * r.frames_per_index for r, _, a, b in self._pending)
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
            frames = reader.read(a, b)
            if frames is None:
                break
            self._pending.popleft()
            self._on_frames(FrameBatch(info.name, info.exposure_time, frames))
        return len(self._pending)

    def close(self) -> None:
        """Close every open file."""
        for reader in self._readers.values():
            reader.close()

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
