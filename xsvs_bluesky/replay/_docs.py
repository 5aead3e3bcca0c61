"""Files and documents of a replayed raw run (private; see :mod:`.replay`).

- :class:`ExposureFile`: the HDF5 file of one exposure, laid out as the
  simulated ophyd-async MAXIPIX writes it (``/entry/data/data``, one chunk
  per frame), compressed, with per-frame EDF header values under
  ``/entry/instrument/NDAttributes``;
- :class:`RawRunComposer`: the documents of the raw run, laid out as
  :func:`xsvs_bluesky.sim.xsvs_series` lays out a fly scan.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.callback import BINNING_KEY
from xsvs_bluesky.legacy.config import ExposureSpec, LegacyConfig
from xsvs_bluesky.options import COMPRESSIONS, hdf5_filters

__all__ = [
    "COMPRESSIONS",
    "DETECTOR",
    "REPLAY_KEY",
    "ExposureFile",
    "RawRunComposer",
    "stream_names",
]

logger = logging.getLogger(__name__)

DETECTOR = "maxipix"
"""Device name and frame data key of the replayed detector."""
REPLAY_KEY = "xsvs_replay"
"""Start-document key of the replay record (``content_hash`` and options)."""
DATA_PATH = "/entry/data/data"  # as xsvs_bluesky.sim.maxipix.DATA_PATH
ATTRIBUTES = "/entry/instrument/NDAttributes"


def stream_names(n_exposures: int) -> list[str]:
    """``exposure_0, exposure_1, ...`` zero-padded, as the simulated plan names them."""
    width = len(str(max(n_exposures - 1, 0)))
    return [f"exposure_{i:0{width}d}" for i in range(n_exposures)]


class ExposureFile:
    """HDF5 file of one exposure, written in blocks of ``chunk_frames`` frames.

    Layout: ``/entry/data/data`` (n, rows, cols) frames, one chunk per frame,
    attribute ``acquire_time`` (s); ``/entry/instrument/NDAttributes/``
    ``time_of_day`` (s since 1970, NaN if unknown), ``frame_number`` (-1 if
    unknown) and ``source_file`` (EDF file name) per frame.  Readers in this
    process (the analysis callback) see each block as soon as it is written:
    HDF5 shares one open file between the handles of a process.  Other
    processes should wait for the run's stop document (files closed).
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int],
        dtype: np.dtype,
        *,
        exposure_time: float,
        chunk_frames: int,
        compression: str,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        import h5py

        rows, cols = shape
        self.path = path
        self.chunk_frames = chunk_frames
        self._buffer = np.empty((chunk_frames, rows, cols), dtype=dtype)
        self._info: list[tuple[float, int, str]] = []
        self.n_frames = 0
        self._written = (0, 0)  # frames of the last block written, in _buffer
        self._file = h5py.File(path, "w", libver="latest")
        for key, value in (attrs or {}).items():
            self._file.attrs[key] = value
        self._data = self._file.create_dataset(
            DATA_PATH,
            shape=(0, rows, cols),
            maxshape=(None, rows, cols),
            chunks=(1, rows, cols),
            dtype=dtype,
            **hdf5_filters(compression),
        )
        self._data.attrs["acquire_time"] = float(exposure_time)
        group = self._file.require_group(ATTRIBUTES)
        kinds = {"time_of_day": "<f8", "frame_number": "<i8", "source_file": "S256"}
        self._attributes = {
            name: group.create_dataset(
                name, shape=(0,), maxshape=(None,), chunks=(chunk_frames,), dtype=kind
            )
            for name, kind in kinds.items()
        }

    @property
    def pending(self) -> int:
        """Frames added but not written yet."""
        return len(self._info)

    def add(self, frame: NDArray[Any], name: str, info: tuple[float, int]) -> bool:
        """Buffer one frame; True when a block is full (call :meth:`flush`)."""
        if not self._info:
            self._written = (0, 0)  # the buffer no longer holds the last block
        self._buffer[len(self._info)] = frame
        self._info.append((info[0], info[1], name))
        return len(self._info) == self.chunk_frames

    def flush(self) -> tuple[int, int]:
        """Write the buffered frames; return their ``(start, stop)`` indices."""
        n, start = len(self._info), self.n_frames
        stop = start + n
        self._data.resize(stop, axis=0)
        self._data[start:stop] = self._buffer[:n]
        columns = list(zip(*self._info, strict=True)) if n else [(), (), ()]
        for (name, ds), values in zip(self._attributes.items(), columns, strict=True):
            ds.resize(stop, axis=0)
            if name == "source_file":
                ds[start:stop] = np.array([v.encode() for v in values], dtype="S256")
            else:
                ds[start:stop] = np.asarray(values, dtype=ds.dtype)
        self._info.clear()
        self.n_frames = stop
        self._written = (start, stop)
        return start, stop

    def held(self, start: int, stop: int) -> NDArray[Any] | None:
        """Frames ``[start, stop)`` if the last block written holds them all.

        A view of the buffer, valid until the next :meth:`add`; None when
        they are not all in the last block.
        """
        first, last = self._written
        if first <= start < stop <= last:
            return self._buffer[start - first : stop - first]
        return None

    def close(self) -> None:
        """Close the file."""
        if self._file.id.valid:
            self._file.close()


Emitter = Callable[[str, dict[str, Any]], Any]


class RawRunComposer:
    """Compose and emit the documents of one replayed raw run.

    Parameters
    ----------
    job : LegacyReplay
        The checked series (config, scan, inputs, shape, dtype, options).
    targets : sequence of callables
        ``(name, doc)`` consumers; an exception of one is raised.
    scan_id : int
        scan_id of the run.
    folder : Path, optional
        Folder of the runs' HDF5 files: this run's go to ``folder / uid``
        (:attr:`run_dir`, recorded as ``xsvs_replay["run_dir"]``).
    supersedes : sequence of str
        uids of partial runs of the same series that could not be removed
        (recorded as ``xsvs_replay["supersedes"]``).
    """

    def __init__(
        self,
        job: Any,
        targets: Sequence[Emitter],
        *,
        scan_id: int,
        folder: Path | None = None,
        supersedes: Sequence[str] = (),
    ) -> None:
        from event_model import compose_run

        self.uid: str = str(uuid.uuid4())
        self.run_dir: Path | None = None if folder is None else folder / self.uid
        self._supersedes = list(supersedes)
        self.job = job
        self.targets = list(targets)
        self.streams = stream_names(len(job.exposures))
        self.files: list[Path] = []
        self.skipped: list[tuple[str, str, str]] = []
        self._frames = [0] * len(self.streams)
        self._descriptors: list[Any] = []
        self._resources: list[Any] = []
        self._outputs: dict[str, ExposureFile] = {}  # stream resource uid -> file
        self._stopped: set[int] = set()  # targets that had the stop document
        self.headers: list[dict[str, Any]] = []
        self._bundle = compose_run(uid=self.uid, metadata=self._metadata(job, scan_id))

    def _metadata(self, job: Any, scan_id: int) -> dict[str, Any]:
        config: LegacyConfig = job.config
        inputs = job.inputs
        times = [e.exposure_time for e in job.exposures]
        frames = [len(job.scan.usable(e)) for e in job.exposures]
        legacy = config.to_dict()
        legacy.update(
            ini_text=config.path.read_text(encoding="utf-8", errors="replace"),
            ini_sha256=job.scan.ini_sha256,
        )
        headers = self.headers = [job.scan.exposure_metadata(e) for e in job.exposures]
        masks = [
            {"key": key, "path": str(path), "name": path.name, "sha256": sha}
            | {"one_is_bad": one_is_bad}
            for (key, path, one_is_bad), (_, _, sha) in zip(
                _mask_files(config), inputs.masks, strict=True
            )
        ]
        flat = None
        if inputs.flat_field is not None and config.flat_field is not None:
            flat = {
                "path": str(config.flat_field),
                "name": inputs.flat_field_name,
                "sha256": inputs.flat_field_sha256,
            }
        md: dict[str, Any] = {
            "scan_id": int(scan_id),
            "plan_name": "xsvs_series",
            "plan_type": "legacy_replay",
            "detectors": [DETECTOR],
            "plan_args": {"exposure_times": times, "frames_per_exposure": frames},
            "num_points": sum(frames),
            "sample_name": config.sample_name,
            "xsvs_exposure_times": times,
            "xsvs_frames_per_exposure": frames,
            "xsvs_streams": self.streams,
            "xsvs_acquisition": "fly",
            "xsvs_geometry": inputs.geometry.to_dict(),
            "xsvs_partitions": dict(job.partitions),
            "xsvs_masks": masks,
            "xsvs_flat_field": flat,
            "xsvs_legacy": legacy,
            "xsvs_edf_headers": headers,
            REPLAY_KEY: job.replay_record(),
        }
        if config.bin_factors:  # XPCS mode: one series, analysed binned
            md[BINNING_KEY] = {self.streams[0]: list(config.bin_factors)}
        if self.run_dir is not None:
            md[REPLAY_KEY]["run_dir"] = str(self.run_dir)
        if self._supersedes:
            md[REPLAY_KEY]["supersedes"] = self._supersedes
        stamps = [h[k] for h in headers for k in ("start", "end") if k in h]
        if stamps:
            md["xsvs_acquisition_start"], md["xsvs_acquisition_end"] = (
                min(stamps),
                max(stamps),
            )
        return md

    def _emit(self, name: str, doc: Mapping[str, Any]) -> None:
        for target in self.targets:
            target(name, dict(doc))

    def start(self) -> None:
        """Emit the start document."""
        self._emit("start", self._bundle.start_doc)

    def begin_exposure(self, index: int, out: ExposureFile) -> None:
        """Emit the descriptor and StreamResource of exposure ``index``."""
        job = self.job
        spec: ExposureSpec = job.exposures[index]
        rows, cols = job.shape
        now = time.time()
        config_data = {f"{DETECTOR}-acquire_time": float(spec.exposure_time)}
        period = self.headers[index].get("frame_period")
        if period is not None:
            config_data[f"{DETECTOR}-acquire_period"] = float(period)
        origin = f"legacy://{job.config.path}#{spec.name}"
        descriptor = self._bundle.compose_descriptor(
            name=self.streams[index],
            data_keys={
                DETECTOR: {
                    "source": f"{origin}/{spec.data_prefix}NNNN{spec.data_suffix}",
                    "shape": [1, rows, cols],
                    "dtype": "array",
                    "dtype_numpy": np.dtype(job.dtype).str,
                    "external": "STREAM:",
                    "object_name": DETECTOR,
                }
            },
            configuration={
                DETECTOR: {
                    "data": config_data,
                    "timestamps": dict.fromkeys(config_data, now),
                    "data_keys": {
                        key: {
                            "dtype": "number",
                            "shape": [],
                            "dtype_numpy": "<f8",
                            "source": origin,
                            "units": "s",
                        }
                        for key in config_data
                    },
                }
            },
            object_keys={DETECTOR: [DETECTOR]},
            hints={DETECTOR: {"fields": [DETECTOR]}},
        ).descriptor_doc
        assert self._bundle.compose_stream_resource is not None
        resource = self._bundle.compose_stream_resource(
            mimetype="application/x-hdf5",
            uri=f"file://localhost{out.path.as_posix()}",
            data_key=DETECTOR,
            parameters={"dataset": DATA_PATH, "chunk_shape": [1, rows, cols]},
        )
        self._descriptors.append(descriptor)
        self._resources.append(resource)
        self._outputs[resource.stream_resource_doc["uid"]] = out
        self.files.append(out.path)
        self._emit("descriptor", descriptor)
        self._emit("stream_resource", resource.stream_resource_doc)

    def held_frames(
        self, stream_resource: str, start: int, stop: int
    ) -> NDArray[Any] | None:
        """Return a datum's frames still in its file's buffer (``FrameAccess.held``).

        The analysis callback of this process takes them from here instead
        of reading back the block just written; None when the buffer no
        longer holds them (they are then read from the file).
        """
        out = self._outputs.get(stream_resource)
        return None if out is None else out.held(start, stop)

    def datum(self, index: int, indices: tuple[int, int]) -> None:
        """Emit a StreamDatum of frames ``[start, stop)`` of exposure ``index``."""
        from event_model.documents.stream_datum import StreamRange

        start, stop = indices
        doc = self._resources[index].compose_stream_datum(
            indices=StreamRange(start=start, stop=stop),
            seq_nums=StreamRange(start=start + 1, stop=stop + 1),
            descriptor=self._descriptors[index],
        )
        self._frames[index] = stop
        self._emit("stream_datum", doc)

    def skipped_reason(self) -> str:
        """Stop reason listing the bad frame files left out ("" when none)."""
        if not self.skipped:
            return ""
        listed = "; ".join(f"[{e}] {Path(f).name} ({r})" for e, f, r in self.skipped)
        return f"skipped {len(self.skipped)} bad frame file(s): {listed}"

    def _stop_doc(self, status: str, reason: str) -> dict[str, Any]:
        from event_model import DocumentNames, schema_validators

        doc = {
            "uid": str(uuid.uuid4()),
            "time": time.time(),
            "run_start": self.uid,
            "exit_status": status,
            "reason": reason,
            "num_events": {
                self.streams[i]: self._frames[i] for i in range(len(self._descriptors))
            },
        }
        schema_validators[DocumentNames.stop].validate(doc)
        return doc

    def stop(self, status: str, reason: str) -> None:
        """Emit the stop document to every target that has not had one.

        Raises the first target's exception (the targets after it get none:
        call :meth:`stop_quietly` then).  A target whose stop raised counts
        as stopped: a TiledWriter must not get a second stop.
        """
        doc = self._stop_doc(status, reason)
        for i, target in enumerate(self.targets):
            if i not in self._stopped:
                self._stopped.add(i)
                target("stop", dict(doc))

    def stop_quietly(
        self, status: str, reason: str, *, skip: Sequence[Emitter] = ()
    ) -> None:
        """Emit the stop document to every target that has not had one; log errors.

        Targets in ``skip`` get none.
        """
        doc = self._stop_doc(status, reason)
        for i, target in enumerate(self.targets):
            if i in self._stopped or any(target is t for t in skip):
                continue
            self._stopped.add(i)
            try:
                target("stop", dict(doc))
            except Exception:
                logger.exception("could not stop raw run %s in %r", self.uid, target)


def _mask_files(config: LegacyConfig) -> list[tuple[str, Path, bool]]:
    """``(INI key, path, one_is_bad)`` of each mask, in the order read_inputs reads."""
    out = []
    for key, path, one_is_bad in (
        ("default mask", config.default_mask, True),
        ("mask", config.mask, config.mask_one_is_bad),
    ):
        if path is not None:
            out.append((key, path, one_is_bad))
    return out
