"""Simulated MAXIPIX: an ophyd-async detector writing speckle frames to HDF5.

Modelled on ``ophyd_async.sim.SimBlobDetector`` with the pattern generator
replaced by :class:`~xsvs_bluesky.sim.speckle.SpeckleModel`.  Each prepare
after a stage opens a new HDF5 file (``/entry/data/data``, uint16, one chunk
per frame, SWMR) and the frames are announced by StreamResource/StreamDatum
documents only: a fly scan (prepare, kickoff, complete, collect) emits no
Event documents.  The exposure time is the ``acquire_time`` signal, part of
the detector configuration, so it appears in every descriptor as
``configuration[<name>]["data"]["<name>-acquire_time"]`` (s).

Frames are drawn in chunks in a worker thread (the alias sampler releases
the GIL) as fast as possible, or paced by the acquire period with
``realtime=True``.  Frame ``i`` of the detector's life is reproducible from
the model seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ophyd_async.core import (
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTriggerLogic,
    PathProvider,
    SignalDict,
    SignalR,
    SignalRW,
    StandardDetector,
    StaticPathProvider,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StreamResourceInfo,
    TriggerInfo,
    UUIDFilenameProvider,
    soft_signal_r_and_setter,
    soft_signal_rw,
)

from xsvs_bluesky.options import hdf5_filters
from xsvs_bluesky.sim.speckle import FrameSampler, SpeckleModel

__all__ = ["DATA_PATH", "SimMaxipix", "SpeckleFileWriter", "directory_path_provider"]

#: Dataset of the frames in every HDF5 file.
DATA_PATH = "/entry/data/data"


def directory_path_provider(directory: str | Path) -> PathProvider:
    """Write files with UUID names into ``directory`` (created if absent)."""
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return StaticPathProvider(UUIDFilenameProvider(), path)


class SpeckleFileWriter:
    """Draws speckle frames and appends them to an HDF5 file, chunk by chunk.

    Parameters
    ----------
    model : SpeckleModel
        Physics of the frames.
    chunk_frames : int
        Frames drawn and written per step.
    threads : int
        Threads of the frame sampler.
    realtime : bool
        Pace the frames by the acquire period instead of going flat out.
    compression : str
        HDF5 compression of the frames, one of
        :data:`~xsvs_bluesky.options.COMPRESSIONS` (default ``"none"``).
    """

    def __init__(
        self,
        model: SpeckleModel,
        *,
        chunk_frames: int = 32,
        threads: int = 1,
        realtime: bool = False,
        compression: str = "none",
    ) -> None:
        self.model = model
        self.compression = compression
        self._filters = hdf5_filters(compression)  # an unknown name fails here
        self.chunk_frames = max(1, int(chunk_frames))
        self.threads = threads
        self.realtime = realtime
        self.frames_written, self._set_written = soft_signal_r_and_setter(int)
        self.next_frame = 0  # index of the next frame of the detector's life
        self.exposure_time = 1e-3
        self.period = 1e-3
        self.n_frames = 1
        self._file: h5py.File | None = None
        self._data: Any = None
        self._lock = threading.Lock()
        self._samplers: dict[float, FrameSampler] = {}
        self._buffer = np.empty(0, dtype=np.uint16)

    def open_file(self, path: Path) -> None:
        """Create ``path`` with an empty extensible frame dataset (SWMR)."""
        self.close_file()
        rows, cols = self.model.geometry.shape
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            f = h5py.File(path, "w", libver="latest")
            self._data = f.create_dataset(
                DATA_PATH,
                shape=(0, rows, cols),
                maxshape=(None, rows, cols),
                chunks=(1, rows, cols),
                dtype=np.uint16,
                **self._filters,
            )
            f.swmr_mode = True
            self._file = f
        self._set_written(0)

    def setup(self, exposure_time: float, period: float, n_frames: int) -> None:
        """Set the next acquisition: exposure time and period (s), frames."""
        self.exposure_time, self.period, self.n_frames = exposure_time, period, n_frames

    async def acquire(self) -> None:
        """Draw and write the frames of one acquisition."""
        t_e, period, n = self.exposure_time, self.period, self.n_frames
        sampler = await asyncio.to_thread(self._sampler, t_e)
        start, done = time.monotonic(), 0
        while done < n:
            m = min(self.chunk_frames, n - done)
            if self.realtime:
                await asyncio.sleep(
                    max(0.0, start + (done + m) * period - time.monotonic())
                )
            written = await asyncio.to_thread(self._write_chunk, sampler, m, t_e)
            done += m
            self._set_written(written)

    def close_file(self) -> None:
        """Close the file (waits for a chunk being written)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file = self._data = None

    def _sampler(self, exposure_time: float) -> FrameSampler:
        if exposure_time not in self._samplers:
            self._samplers[exposure_time] = self.model.sampler(exposure_time)
        return self._samplers[exposure_time]

    def _write_chunk(self, sampler: FrameSampler, m: int, t_e: float) -> int:
        rows, cols = self.model.geometry.shape
        if self._buffer.size < m * rows * cols:
            self._buffer = np.empty(self.chunk_frames * rows * cols, dtype=np.uint16)
        frames = self._buffer[: m * rows * cols].reshape(m, rows, cols)
        sampler.sample(m, self.next_frame, threads=self.threads, out=frames)
        with self._lock:
            if self._data is None:
                raise RuntimeError("SpeckleFileWriter: no open file (prepare first)")
            n0 = self._data.shape[0]
            self._data.resize(n0 + m, axis=0)
            self._data[n0:] = frames
            self._data.attrs["acquire_time"] = t_e
            self._data.flush()
        self.next_frame += m
        return n0 + m


class _TriggerLogic(DetectorTriggerLogic):
    def __init__(
        self,
        writer: SpeckleFileWriter,
        acquire_time: SignalRW[float],
        acquire_period: SignalRW[float],
        readout_time: float,
    ) -> None:
        self.writer = writer
        self.acquire_time = acquire_time
        self.acquire_period = acquire_period
        self.readout_time = readout_time

    def config_sigs(self) -> set[SignalR]:
        return {self.acquire_time, self.acquire_period}

    def get_deadtime(self, config_values: SignalDict) -> float:
        return self.readout_time

    async def prepare_internal(
        self, num: int, livetime: float, deadtime: float
    ) -> None:
        if livetime > 0:
            await self.acquire_time.set(livetime)
        t_e = await self.acquire_time.get_value()
        period = t_e + max(deadtime, self.readout_time)
        await self.acquire_period.set(period)
        self.writer.setup(t_e, period, num)

    async def default_trigger_info(self) -> TriggerInfo:
        return TriggerInfo(livetime=await self.acquire_time.get_value())


class _AcquireLogic(DetectorAcquireLogic):
    def __init__(self, writer: SpeckleFileWriter) -> None:
        self.writer = writer
        self.task: asyncio.Task[None] | None = None

    async def start_acquiring(self) -> None:
        self.task = asyncio.create_task(self.writer.acquire())

    async def wait_for_idle(self) -> None:
        if self.task:
            await self.task

    async def ensure_stopped(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


class _DataLogic(DetectorDataLogic):
    def __init__(self, path_provider: PathProvider, writer: SpeckleFileWriter) -> None:
        self.path_provider = path_provider
        self.writer = writer

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        info = self.path_provider(datakey_name)
        self.writer.open_file(Path(str(info.directory_path)) / f"{info.filename}.h5")
        shape = self.writer.model.geometry.shape
        resource = StreamResourceInfo(
            data_key=datakey_name,
            shape=shape,
            chunk_shape=(1, *shape),
            dtype_numpy=np.dtype(np.uint16).str,
            parameters={"dataset": DATA_PATH},
            source=f"sim://{datakey_name}",
        )
        return StreamResourceDataProvider(
            uri=f"{info.directory_uri}{info.filename}.h5",
            resources=[resource],
            mimetype="application/x-hdf5",
            collections_written_signal=self.writer.frames_written,
        )

    async def stop(self) -> None:
        self.writer.close_file()

    def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
        return [datakey_name]


class SimMaxipix(StandardDetector):
    """Simulated MAXIPIX (ophyd-async) writing speckle frames to HDF5.

    The frame data key is the detector name; frames are uint16 of the model
    geometry's shape.  Each stage/prepare cycle writes a new file, so a plan
    that wants one file (and one StreamResource) per stream stages and
    unstages around each stream (see :func:`xsvs_bluesky.sim.plans.xsvs_series`).

    Parameters
    ----------
    path_provider : ophyd_async.core.PathProvider
        Where files go (e.g. :func:`directory_path_provider`); for Tiled to
        serve them, inside the server's readable storage.
    model : SpeckleModel, optional
        Physics of the frames (default ``SpeckleModel()``, 256x256).
    chunk_frames : int
        Frames drawn and written per step (progress granularity).
    threads : int
        Threads of the frame sampler.
    realtime : bool
        Pace frames by the acquire period (default: as fast as possible).
    readout_time : float
        Minimum dead time between frames, s (acquire_period = acquire_time
        + max(deadtime, readout_time)).
    compression : str
        HDF5 compression of the frames, one of
        :data:`~xsvs_bluesky.options.COMPRESSIONS` (default ``"none"``;
        ``"blosc-lz4"`` needs ``hdf5plugin`` in every reader, as replayed
        files do).
    name : str
        Device name (the frame data key).

    Attributes
    ----------
    acquire_time : SignalRW[float]
        Exposure time per frame, s (configuration).
    acquire_period : SignalRW[float]
        Frame period, s (configuration).
    """

    def __init__(
        self,
        path_provider: PathProvider,
        model: SpeckleModel | None = None,
        *,
        chunk_frames: int = 32,
        threads: int = 1,
        realtime: bool = False,
        readout_time: float = 0.0,
        compression: str = "none",
        name: str = "",
    ) -> None:
        self.model = model if model is not None else SpeckleModel()
        self.writer = SpeckleFileWriter(
            self.model,
            chunk_frames=chunk_frames,
            threads=threads,
            realtime=realtime,
            compression=compression,
        )
        self.acquire_time = soft_signal_rw(float, initial_value=1e-3, units="s")
        self.acquire_period = soft_signal_rw(float, initial_value=1e-3, units="s")
        self.add_detector_logics(
            _TriggerLogic(
                self.writer, self.acquire_time, self.acquire_period, readout_time
            ),
            _AcquireLogic(self.writer),
            _DataLogic(path_provider, self.writer),
        )
        super().__init__(name=name)
