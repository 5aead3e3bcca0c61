"""The implementation of :mod:`xsvs_bluesky.replay` (private; see its docstring)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from xsvs_bluesky._version import __version__
from xsvs_bluesky.errors import InputFileError, OptionError, StorageError
from xsvs_bluesky.options import (
    FLAT_FIELD_MODES,
    AnalysisOptions,
    Estimator,
    FlatFieldMode,
)
from xsvs_bluesky.replay._catalog import (
    ReplayedRun,
    derived_runs,
    find_replays,
    remove_partial_run,
    remove_run_files,
    replays_of,
)
from xsvs_bluesky.replay._docs import (
    COMPRESSIONS,
    DETECTOR,
    REPLAY_KEY,
    Emitter,
    RawRunComposer,
    stream_names,
)
from xsvs_bluesky.replay._feed import ExposureFeed
from xsvs_bluesky.replay._result import ReplayResult
from xsvs_bluesky.replay._scan import scan_inputs
from xsvs_bluesky.replay._write import Progress, write_series
from xsvs_bluesky.storage import WriterGuard, allocate_scan_id, hold_lock, locks_folder

__all__ = [
    "COMPRESSIONS",
    "DETECTOR",
    "FLAT_FIELD_MODES",
    "REPLAY_KEY",
    "LegacyReplay",
    "ReplayedRun",
    "ReplayResult",
    "find_replays",
    "replay_legacy",
    "replays_of",
    "stream_names",
]

logger = logging.getLogger(__name__)

_BIG_BATCH = 1_000_000  # the derived writer: pages, not batches


class LegacyReplay:
    """A legacy series checked, hashed and ready to be replayed.

    Everything that can be wrong with the inputs raises here, before any run
    is opened.  An XSVS-mode INI file ([Exp_n] sections) gives one stream per
    exposure.  An XPCS-mode one ([Exp_bins]) gives one stream of the frames
    as acquired, and the start document records its binning factors
    (``xsvs_binning``), so the callback analyses them binned, as ``analyze``
    does: the derived run holds one exposure per factor.

    Parameters
    ----------
    source : str or path-like
        The pyxsvs INI file.
    options : AnalysisOptions, optional
        Options of the derived run; ``estimator`` and ``flat_field`` below,
        when given, replace those fields.
    estimator : str, optional
        Main estimator of the derived run (default
        :func:`~xsvs_bluesky.options.default_estimator`: ``mle-intensity``,
        ``mle`` in the ``divide-round`` mode).
    flat_field : {"weights", "divide-round", "record-only", "none"}, optional
        How the derived run uses the INI's flat field (as ``analyze``;
        default ``weights``).
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
    exposures : tuple of ExposureSpec
        The exposures as acquired, one stream each
        (:meth:`~xsvs_bluesky.legacy.LegacyConfig.acquired_exposures`).
    options : AnalysisOptions
        Options of the derived run, main estimator resolved.
    content_hash : str
        SHA-256 of the inputs (hex), see :meth:`replay_record`.
    shape, dtype
        Frame shape (rows, columns) and dtype.

    Raises
    ------
    InputFileError
        INI, frame, mask or flat-field files missing or invalid.
    XSVSError
        Unknown estimator, flat-field mode or compression.
    GeometryError
        Partitions that do not fit the detector.
    """

    def __init__(
        self,
        source: str | PathLike[str],
        *,
        options: AnalysisOptions | None = None,
        estimator: Estimator | str | None = None,
        flat_field: FlatFieldMode | str | None = None,
        skip_bad: bool = False,
        threads: int = 2,
        frames_per_datum: int = 60,
        compression: str = "blosc-lz4",
    ) -> None:
        from xsvs_bluesky.callback import XSVSCallback
        from xsvs_bluesky.legacy import read_frame, read_ini, read_inputs

        options = AnalysisOptions.merge(
            options, estimator=estimator, flat_field_mode=flat_field
        )
        if compression not in COMPRESSIONS:
            raise OptionError(
                f"compression {compression!r} is unknown; give one of "
                f"{', '.join(COMPRESSIONS)}"
            )
        if frames_per_datum < 1:
            raise OptionError(f"frames per datum = {frames_per_datum}; give >= 1")
        config = read_ini(source)
        self.config = config
        self.exposures = config.acquired_exposures()
        self.skip_bad = bool(skip_bad)
        self.threads = max(int(threads), 0)
        self.frames_per_datum = int(frames_per_datum)
        self.compression = compression
        self.scan = scan_inputs(
            config,
            skip_bad=self.skip_bad,
            threads=self.threads,
            limits=options.limits,
        )
        first = first_path = None
        for path in self.scan.usable_files():
            try:
                first = read_frame(path, limits=options.limits)
                first_path = path
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
            config,
            self.shape,
            self.dtype,
            use_flat=options.uses_flat_field,
            first_frame=first_path,
        )
        has_flat = self.inputs.flat_field is not None
        self.options = options.replace(estimator=options.main_estimator(has_flat))
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
            "options": self.options,
            "detector_key": DETECTOR,
        }
        XSVSCallback(**self.callback_options)  # bad partitions fail here
        self.content_hash = self.scan.content_hash(self.inputs)

    @property
    def estimator(self) -> Estimator:
        """Main estimator of the derived run."""
        assert self.options.estimator is not None
        return self.options.estimator

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
            "estimator": self.estimator.value,
            "flat_field": self.options.flat_field_mode.value,
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
        on_wait: Callable[[str], None] | None = None,
    ) -> ReplayResult:
        """Replay the series into ``catalogs``, unless it is there already.

        Parameters
        ----------
        catalogs : xsvs_bluesky.storage.Catalogs
            Raw and processed catalogs (``raw``, ``processed``, ``external_dir``).
        force : bool, optional
            Replay even if a complete raw run with this content hash exists.
        output_dir : path, optional
            Folder of the HDF5 files (one subfolder per run, named by its uid);
            default ``catalogs.external_dir / "replay"``.  The Tiled server
            must be allowed to read it.
        progress : callable, optional
            ``progress(files_done, files_total)`` after every datum.
        extra_targets : iterable of callables
            More ``(name, doc)`` consumers of the raw run's documents.
        scan_id : int, optional
            Default: one more than the last raw run's and than the last one
            given to a writer of these catalogs
            (:func:`~xsvs_bluesky.storage.allocate_scan_id`).
        on_wait : callable, optional
            Called with one line when another process replays the same
            series into these catalogs: this one waits for it, then finds
            its run (default: a log warning).

        Returns
        -------
        ReplayResult

        Raises
        ------
        XSVSError
            No folder for the HDF5 files, or one the catalogs' own data-folder
            server may not read.  Any error during the replay stops
            the runs still open with ``exit_status="fail"`` (``"abort"`` on
            KeyboardInterrupt) and is re-raised; the HDF5 files of a raw run
            whose start reached Tiled are kept.

        Notes
        -----
        First the raw runs with this content hash are looked up, whatever
        their state: partial ones (abort, fail, no stop document) are
        removed from Tiled with their derived runs, then their files (a run
        that cannot be removed is kept, with its files, and recorded in the
        new run's ``xsvs_replay["supersedes"]``).  A complete one without a
        successful derived run is analysed again (``completed``); one with
        a successful derived run is returned as ``duplicate`` unless
        ``force``.  ``ReplayResult.notes`` says what was found and done.

        One replay of a series at a time: the look-up and the replay hold a
        lock named by the content hash in the catalogs' locks folder
        (:func:`~xsvs_bluesky.storage.locks_folder`: the data folder, else
        the folder of detector files or of the HDF5 files), so a second
        replay of the series waits and then finds the first one's run
        instead of taking it for a partial one.
        """
        t0 = time.perf_counter()
        folder = None
        if output_dir is not None or catalogs.external_dir is not None:
            folder = (
                Path(catalogs.external_dir) / "replay"
                if output_dir is None
                else Path(output_dir)
            ).resolve()
        with self._series_lock(catalogs, folder, on_wait):
            return self._run(
                catalogs, folder, t0, force, progress, extra_targets, scan_id
            )

    def _series_lock(
        self,
        catalogs: Any,
        folder: Path | None,
        on_wait: Callable[[str], None] | None,
    ) -> AbstractContextManager[None]:
        """Return the lock of this series in the catalogs' locks folder (if any)."""
        locks = locks_folder(catalogs, folder)
        if locks is None:
            return nullcontext()
        say = on_wait or (lambda line: logger.warning("%s", line))

        def waiting(holder: str) -> None:
            say(
                f"waiting for {holder}, which replays the same series "
                f"({self.config.path}) into these catalogs"
            )

        return hold_lock(locks / f"replay-{self.content_hash[:32]}.lock", waiting)

    def _run(
        self,
        catalogs: Any,
        folder: Path | None,
        t0: float,
        force: bool,
        progress: Progress | None,
        extra_targets: Iterable[Emitter],
        scan_id: int | None,
    ) -> ReplayResult:
        """:meth:`run` once the series is ours."""
        runs = replays_of(catalogs, self.content_hash)
        notes: list[str] = []
        supersedes = self._replace_partial(catalogs, runs, notes)
        complete = [r for r in runs if r.complete]
        if complete and not force:
            found = complete[-1]
            if found.analysed:
                logger.info("series already replayed as raw run %s", found.uid)
                return ReplayResult(
                    raw_uid=found.uid,
                    derived_uids=derived_runs(catalogs.processed, found.uid),
                    content_hash=self.content_hash,
                    duplicate=True,
                    seconds=time.perf_counter() - t0,
                    notes=tuple(notes),
                )
            return self._complete_analysis(catalogs, found, notes, t0)
        if folder is None:
            raise OptionError(
                "no folder for the replayed HDF5 files: give an output folder "
                "the Tiled server may read (its readable storage)"
            )
        if catalogs.can_serve(folder) is False:
            readable = ", ".join(str(p) for p in catalogs.readable_storage)
            raise StorageError(
                f"the output folder {folder} is outside the folders the Tiled "
                f"server of {catalogs.data_dir} reads ({readable}): the replayed "
                "frames could not be read back; give a folder under "
                f"{catalogs.readable_storage[0]}"
            )
        from xsvs_bluesky.callback import FrameAccess, XSVSCallback

        # at once (no queue: a replay may wait), each run in the local
        # backup until Tiled stored it; runs the server fails stay there
        spools = _spooling_writers(catalogs)
        raw_writer = WriterGuard(spools[0], "raw")
        # the raw run's writer registers each exposure's frames as soon as the
        # exposure is written, from a worker thread (ExposureFeed)
        raw_feed = ExposureFeed(raw_writer)
        derived_writer = WriterGuard(spools[1], "derived")
        composer = RawRunComposer(
            self,
            [],
            scan_id=allocate_scan_id(catalogs, folder) if scan_id is None else scan_id,
            folder=folder,
            supersedes=supersedes,
        )
        # the frames of each datum come from the composer's buffer, not read
        # back from the HDF5 block just written and compressed
        callback = XSVSCallback(
            emit=derived_writer,
            frame_access=FrameAccess(held=composer.held_frames),
            **self.callback_options,
        )
        # the analysis first: at the raw stop document the derived run is
        # completed and stored before the raw writer writes the stop
        composer.targets[:] = [callback, raw_feed, *extra_targets]
        run_dir = composer.run_dir
        assert run_dir is not None
        try:
            try:
                run_dir.mkdir(parents=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create {run_dir} ({exc}); give a writable output folder"
                ) from None
            try:
                n_frames = write_series(self, composer, run_dir, progress)
                raw_feed.flush()  # the last exposure's frames, during the final fits
                composer.stop("success", composer.skipped_reason())
            except BaseException as err:
                self._end_stopped(err, composer, callback, raw_writer, derived_writer)
                raise
        finally:
            backed_up = tuple(run for spool in spools for run in spool.close())
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
            notes=tuple(notes),
            backed_up=backed_up,
        )

    def _replace_partial(
        self, catalogs: Any, runs: list[ReplayedRun], notes: list[str]
    ) -> list[str]:
        """Remove the partial raw runs of this series; return those that stay.

        Each is removed from Tiled (its derived runs first), then its files.
        One that cannot be removed keeps its files and is returned, to be
        recorded as superseded by the new run.
        """
        kept = []
        for run in [r for r in runs if not r.complete]:
            try:
                remove_partial_run(catalogs, run)
            except Exception as exc:
                logger.warning("could not remove raw run %s", run.uid, exc_info=True)
                notes.append(
                    f"found partial {run.describe()}; could not remove it ({exc}): "
                    "its files are kept and the new run records it as superseded"
                )
                kept.append(run.uid)
            else:
                notes.append(
                    f"found partial {run.describe()}; removed it and its files, "
                    "replaying anew"
                )
        runs[:] = [r for r in runs if r.complete]
        return kept

    def _complete_analysis(
        self, catalogs: Any, run: ReplayedRun, notes: list[str], t0: float
    ) -> ReplayResult:
        """Analyse the complete raw run ``run`` whose analysis did not finish."""
        from xsvs_bluesky.reanalyze import reanalyze

        states = ", ".join(f"{u} ({s or 'no stop'})" for u, s in run.derived)
        notes.append(
            f"raw run {run.uid} holds this series complete but has no successful "
            f"analysis (derived runs: {states or 'none'}); analysing it again"
        )
        # light catalogs (plain containers): reanalyze reads Bluesky runs
        out = reanalyze(catalogs.with_bluesky_clients(), run.uid, options=self.options)
        return ReplayResult(
            raw_uid=run.uid,
            derived_uids=(out.derived_uid,) if out.derived_uid else (),
            content_hash=self.content_hash,
            duplicate=False,
            completed=True,
            results=out.results,
            seconds=time.perf_counter() - t0,
            analysis_status=out.exit_status,
            analysis_reason=out.reason,
            notes=tuple(notes),
        )

    def _end_stopped(
        self,
        err: BaseException,
        composer: RawRunComposer,
        callback: Any,
        raw_writer: WriterGuard,
        derived_writer: WriterGuard,
    ) -> None:
        """Stop what is open after ``err``; keep every file a stored run names.

        Interrupted (KeyboardInterrupt, SIGTERM in the CLI): the raw run, if
        not stopped yet, and its open derived run are marked ``abort``; the
        analysis is not finished (the next replay does it).  Any other
        error: ``fail``, and the callback analyses the frames it had.  The
        HDF5 files are deleted only if the raw run's start never reached
        its writer (then there are none: the folder goes).
        """
        interrupted = isinstance(err, KeyboardInterrupt)
        status = "abort" if interrupted else "fail"
        reason = f"{type(err).__name__}: {err}"
        if interrupted:
            reason = f"interrupted ({err or 'SIGINT, Ctrl-C'})"
        composer.stop_quietly(status, reason, skip=[callback] if interrupted else ())
        derived_writer.end_open(status, reason)
        run_dir = composer.run_dir
        assert run_dir is not None
        what = f"replay of {self.config.path} stopped ({reason})"
        if not raw_writer.started:
            remove_run_files(run_dir, composer.uid)
            logger.error("%s before raw run %s was stored", what, composer.uid)
            return
        if raw_writer.stored_status == "success":
            raw = f"raw run {composer.uid} is stored complete"
        elif raw_writer.stored_status is not None:
            raw = f"raw run {composer.uid} is marked {raw_writer.stored_status!r}"
        else:
            raw = f"raw run {composer.uid} may be stored without a stop document"
        if derived_writer.stored_status is not None:
            derived = (
                f"derived run {derived_writer.uid} is marked "
                f"{derived_writer.stored_status!r}"
            )
        elif derived_writer.started:
            derived = f"derived run {derived_writer.uid} is incomplete"
        else:
            derived = "no derived run was stored"
        logger.error(
            "%s: %s, its HDF5 files are kept in %s; %s; the next replay of this "
            "series %s",
            what,
            raw,
            run_dir,
            derived,
            "analyses it again"
            if raw_writer.stored_status == "success"
            else "replaces it",
        )


def _spooling_writers(catalogs: Any) -> tuple[Any, Any]:
    """Return the writers of the raw and derived runs (at once, with a backup)."""
    from xsvs_bluesky.storage import DEFAULT_DATA_DIR, SpoolingWriter

    backup = catalogs.backup_dir or (DEFAULT_DATA_DIR / "backup").resolve()
    raw, derived = (
        SpoolingWriter(cat, backup_dir=backup, queued=False, batch_size=_BIG_BATCH)
        for cat in (catalogs.raw, catalogs.processed)
    )
    return raw, derived


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
