"""Replay a legacy pyxsvs series as the raw run an ophyd-async MAXIPIX would make.

:class:`LegacyReplay` checks everything first (INI file, frame files, masks,
flat field, q partitions) and hashes the inputs, before any document exists.
:meth:`LegacyReplay.run` then writes each exposure's frames once, compressed,
into one HDF5 file (one chunk per frame) and emits ONE raw run laid out as
:func:`xsvs_bluesky.sim.xsvs_series` lays out a fly scan: one stream per
exposure, frames announced by StreamResource/StreamDatum only (no Event
documents), the exposure time in the detector configuration.  The documents
go to a TiledWriter on the raw catalog and to an
:class:`~xsvs_bluesky.callback.XSVSCallback` whose derived run goes to a
TiledWriter on the processed catalog.

The content hash (:attr:`LegacyReplay.content_hash`) is stored in the start
document as ``xsvs_replay["content_hash"]``; a series already replayed with
success is found by it (:func:`find_replays`) and not replayed again unless
``force=True``.  See ``docs/how-to/replay-legacy.md``.

Helpers live in private modules (``_replay_scan``, ``_replay_docs``,
``_replay_write``, ``_replay_catalog``, ``_replay_result``); their public
names are re-exported here.

Examples
--------
>>> from xsvs_bluesky.replay import LegacyReplay  # doctest: +SKIP
>>> from xsvs_bluesky.storage import open_catalogs  # doctest: +SKIP
>>> with open_catalogs() as cats:  # doctest: +SKIP
...     out = LegacyReplay("analysis/xsvs/xsvs_input.txt").run(cats)
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from xsvs_bluesky._version import __version__
from xsvs_bluesky.errors import InputFileError, XSVSError
from xsvs_bluesky.replay._catalog import derived_runs, find_replays, next_scan_id
from xsvs_bluesky.replay._docs import (
    COMPRESSIONS,
    DETECTOR,
    REPLAY_KEY,
    Emitter,
    RawRunComposer,
    stream_names,
)
from xsvs_bluesky.replay._result import ReplayResult
from xsvs_bluesky.replay._scan import scan_inputs
from xsvs_bluesky.replay._write import Progress, write_series

__all__ = [
    "COMPRESSIONS",
    "DETECTOR",
    "FLAT_FIELD_CHOICES",
    "REPLAY_KEY",
    "LegacyReplay",
    "ReplayResult",
    "find_replays",
    "replay_legacy",
    "stream_names",
]

logger = logging.getLogger(__name__)

_FLAT_MODES = {
    "weights": "weighted",
    "divide-round": "divide-round",
    "none": "weighted",
}
FLAT_FIELD_CHOICES: tuple[str, ...] = tuple(_FLAT_MODES)
"""``flat_field`` choices, as for ``xsvs-bluesky analyze``."""
_BIG_BATCH = 1_000_000  # the writers register data once, at the stop document


class LegacyReplay:
    """A legacy series checked, hashed and ready to be replayed.

    Everything that can be wrong with the inputs raises here, before any run
    is opened.  Only XSVS-mode INI files ([Exp_n] sections, one file list per
    exposure) can be replayed: XPCS-mode binning analyses one series several
    ways, it is not raw data.

    Parameters
    ----------
    source : str or path-like
        The pyxsvs INI file.
    estimator : str, optional
        Main estimator of the derived run (default ``mle-weighted`` with the
        flat field used as weights, else ``mle``).
    flat_field : {"weights", "divide-round", "none"}
        How the derived run uses the INI's flat field (as ``analyze``).
    skip_bad : bool, optional
        Leave out (and record) missing, damaged or mis-shaped frame files.
    threads : int, optional
        Threads hashing and decoding the frame files (default 2).
    frames_per_datum : int, optional
        Frames announced per StreamDatum document (default 60).
    compression : str, optional
        HDF5 compression, a key of :data:`COMPRESSIONS`; default
        ``"blosc-lz4"`` (Blosc LZ4 with bit shuffle, via hdf5plugin).

    Attributes
    ----------
    config : LegacyConfig
        The parsed INI file.
    content_hash : str
        SHA-256 of the inputs (hex), see :meth:`replay_record`.
    shape, dtype
        Frame shape (rows, columns) and dtype.

    Raises
    ------
    InputFileError
        INI, frame, mask or flat-field files missing or invalid.
    XSVSError
        XPCS-mode INI, unknown estimator, flat-field mode or compression.
    GeometryError
        Partitions that do not fit the detector.
    """

    def __init__(
        self,
        source: str | PathLike[str],
        *,
        estimator: str | None = None,
        flat_field: str = "weights",
        skip_bad: bool = False,
        threads: int = 2,
        frames_per_datum: int = 60,
        compression: str = "blosc-lz4",
    ) -> None:
        from xsvs_bluesky.callback import XSVSCallback
        from xsvs_bluesky.core.estimators import check_estimator
        from xsvs_bluesky.legacy import read_frame, read_ini, read_inputs
        from xsvs_bluesky.options import default_estimator

        if flat_field not in _FLAT_MODES:
            raise XSVSError(
                f"flat-field mode {flat_field!r} is unknown; give one of "
                f"{', '.join(_FLAT_MODES)}"
            )
        if compression not in COMPRESSIONS:
            raise XSVSError(
                f"compression {compression!r} is unknown; give one of "
                f"{', '.join(COMPRESSIONS)}"
            )
        if frames_per_datum < 1:
            raise XSVSError(f"frames per datum = {frames_per_datum}; give >= 1")
        if estimator is not None:
            check_estimator(estimator)
        config = read_ini(source)
        if config.mode != "XSVS" or any(e.bin_factor != 1 for e in config.exposures):
            raise XSVSError(
                f"{config.path}: mode {config.mode} bins one frame series into "
                "several exposures; replay needs an XSVS-mode INI file ([Exp_n] "
                "sections); use 'xsvs-bluesky analyze' for XPCS mode"
            )
        self.config = config
        self.skip_bad = bool(skip_bad)
        self.threads = max(int(threads), 0)
        self.frames_per_datum = int(frames_per_datum)
        self.compression = compression
        self.scan = scan_inputs(config, skip_bad=self.skip_bad, threads=self.threads)
        first = None
        for path in self.scan.usable_files():
            try:
                first = read_frame(path)
                break
            except InputFileError as exc:
                if not self.skip_bad:
                    raise InputFileError(f"{config.path}: {exc}") from None
                self.scan.skip(path, str(exc).removeprefix(f"{path}: "))
        if first is None or first.ndim != 2:
            raise InputFileError(
                f"{config.path}: no readable 2-D frame file; check the data dir "
                "and the frame files"
            )
        self.shape: tuple[int, int] = (int(first.shape[0]), int(first.shape[1]))
        self.dtype = np.dtype(first.dtype)
        self.inputs = read_inputs(
            config, self.shape, self.dtype, use_flat=flat_field != "none"
        )
        has_flat = self.inputs.flat_field is not None
        self.estimator = estimator or default_estimator(has_flat, flat_field)
        self.flat_field_choice = flat_field
        self.partitions = {
            "q1": config.q1,
            "q2": config.q2,
            "qs": config.qs,
            "dq": config.dq,
        }
        self.callback_options: dict[str, Any] = {
            "geometry": self.inputs.geometry,
            "partitions": dict(self.partitions),
            "masks": self.inputs.masks,
            "flat_field": self.inputs.flat_field_labelled(),
            "flat_field_mode": _FLAT_MODES[flat_field],
            "estimator": self.estimator,
            "detector_key": DETECTOR,
        }
        XSVSCallback(**self.callback_options)  # bad partitions fail here
        self.content_hash = self.scan.content_hash(self.inputs)

    def replay_record(self) -> dict[str, Any]:
        """Return the ``xsvs_replay`` dict of the start document (plain JSON)."""
        return {
            "content_hash": self.content_hash,
            "hash_method": (
                "sha256 over the INI file's bytes, the sha256 of each mask and "
                "flat-field file, and per exposure each frame file's name and sha256"
            ),
            "package_version": __version__,
            "skip_bad_frames": self.skip_bad,
            "estimator": self.estimator,
            "flat_field": self.flat_field_choice,
            "compression": self.compression,
            "frames_per_datum": self.frames_per_datum,
            "n_files": self.scan.n_files,
            "input_bytes": self.scan.n_bytes,
        }

    def run(
        self,
        catalogs: Any,
        *,
        force: bool = False,
        output_dir: str | PathLike[str] | None = None,
        progress: Progress | None = None,
        extra_targets: Iterable[Emitter] = (),
        scan_id: int | None = None,
    ) -> ReplayResult:
        """Replay the series into ``catalogs``, unless it is there already.

        Parameters
        ----------
        catalogs : xsvs_bluesky.storage.Catalogs
            Raw and processed catalogs (``raw``, ``processed``, ``external_dir``).
        force : bool, optional
            Replay even if a successful raw run with this content hash exists.
        output_dir : path, optional
            Folder of the HDF5 files (one subfolder per run, named by its uid);
            default ``catalogs.external_dir / "replay"``.  The Tiled server
            must be allowed to read it.
        progress : callable, optional
            ``progress(files_done, files_total)`` after every datum.
        extra_targets : iterable of callables
            More ``(name, doc)`` consumers of the raw run's documents.
        scan_id : int, optional
            Default: one more than the last raw run's.

        Returns
        -------
        ReplayResult

        Raises
        ------
        XSVSError
            No folder for the HDF5 files.  Any error during the replay stops
            the raw run with ``exit_status="fail"`` (``"abort"`` on
            KeyboardInterrupt), removes its HDF5 files and is re-raised.
        """
        t0 = time.perf_counter()
        existing = [] if force else find_replays(catalogs.raw, self.content_hash)
        if existing:
            raw_uid = existing[-1]
            logger.info("series already replayed as raw run %s", raw_uid)
            return ReplayResult(
                raw_uid=raw_uid,
                derived_uids=derived_runs(catalogs.processed, raw_uid),
                content_hash=self.content_hash,
                duplicate=True,
                seconds=time.perf_counter() - t0,
            )
        if output_dir is None and catalogs.external_dir is None:
            raise XSVSError(
                "no folder for the replayed HDF5 files: give an output folder "
                "the Tiled server may read (its readable storage)"
            )
        folder = (
            Path(catalogs.external_dir) / "replay"
            if output_dir is None
            else Path(output_dir)
        ).resolve()
        from xsvs_bluesky.callback import XSVSCallback
        from xsvs_bluesky.storage import make_tiled_writer

        raw_writer = make_tiled_writer(catalogs.raw, batch_size=_BIG_BATCH)
        derived_writer = make_tiled_writer(catalogs.processed, batch_size=_BIG_BATCH)
        callback = XSVSCallback(emit=derived_writer, **self.callback_options)
        # the analysis first: at the raw stop document the derived run is
        # completed and stored before the raw writer flushes its batch
        composer = RawRunComposer(
            self,
            [callback, raw_writer, *extra_targets],
            scan_id=next_scan_id(catalogs.raw) if scan_id is None else scan_id,
        )
        run_dir = folder / composer.uid
        try:
            run_dir.mkdir(parents=True)
        except OSError as exc:
            raise XSVSError(
                f"cannot create {run_dir} ({exc}); give a writable output folder"
            ) from None
        try:
            n_frames = write_series(self, composer, run_dir, progress)
            composer.stop("success", composer.skipped_reason())
        except BaseException as err:
            status = "abort" if isinstance(err, KeyboardInterrupt) else "fail"
            composer.stop_quietly(status, f"{type(err).__name__}: {err}")
            shutil.rmtree(run_dir, ignore_errors=True)
            logger.error(
                "replay of %s stopped (%s); raw run %s marked %r, its HDF5 files "
                "removed",
                self.config.path,
                err,
                composer.uid,
                status,
            )
            raise
        record = callback.records.get(composer.uid)
        return ReplayResult(
            raw_uid=composer.uid,
            derived_uids=(record.derived_uid,) if record and record.derived_uid else (),
            content_hash=self.content_hash,
            duplicate=False,
            files=tuple(composer.files),
            n_frames=tuple(n_frames),
            skipped=tuple(composer.skipped),
            results=tuple(record.results) if record is not None else (),
            seconds=time.perf_counter() - t0,
            analysis_status=record.exit_status if record is not None else "fail",
            analysis_reason=record.reason if record is not None else "no analysis",
        )


def replay_legacy(
    source: str | PathLike[str],
    catalogs: Any,
    *,
    force: bool = False,
    output_dir: str | PathLike[str] | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ReplayResult:
    """Check, hash and replay a legacy series in one call.

    Parameters
    ----------
    source : str or path-like
        The pyxsvs INI file.
    catalogs : xsvs_bluesky.storage.Catalogs
        Where the raw and derived runs go.
    force, output_dir, progress
        See :meth:`LegacyReplay.run`.
    **options
        Keyword arguments of :class:`LegacyReplay`.

    Returns
    -------
    ReplayResult

    Raises
    ------
    XSVSError
        See :class:`LegacyReplay` and :meth:`LegacyReplay.run`.
    """
    job = LegacyReplay(source, **options)
    return job.run(catalogs, force=force, output_dir=output_dir, progress=progress)
