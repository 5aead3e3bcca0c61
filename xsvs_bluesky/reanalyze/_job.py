"""The implementation of :mod:`xsvs_bluesky.reanalyze` (private; see its docstring)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from xsvs_bluesky.errors import (
    OptionError,
    RunError,
    RunNotFoundError,
    StorageError,
)
from xsvs_bluesky.options import (
    FRAME_SOURCES,
    AnalysisOptions,
    Estimator,
    FlatFieldMode,
    Limits,
)
from xsvs_bluesky.reanalyze._documents import (
    fetch_documents,
    local_files,
    n_frames,
    rebuild_documents,
    split_datums,
    via_tiled,
)
from xsvs_bluesky.reanalyze._inputs import merge_partitions, read_calibration
from xsvs_bluesky.reanalyze._settings import (
    latest_analysis,
    resolve_settings,
    setting_changes,
)
from xsvs_bluesky.storage import WriterGuard

__all__ = [
    "FRAME_SOURCES",
    "ReanalysisResult",
    "fetch_documents",
    "find_raw_run",
    "latest_analysis",
    "read_calibration",
    "reanalyze",
    "rebuild_documents",
]

logger = logging.getLogger(__name__)

_BIG_BATCH = 1_000_000
Progress = Callable[[int, int], None]
Report = Callable[[str], None]
"""``report(line)``: one line saying how the new analysis differs."""


@dataclass(frozen=True, eq=False)
class ReanalysisResult:
    """A new analysis of a stored raw run.

    Attributes
    ----------
    raw_uid : str
        The raw run analysed.
    derived_uid : str or None
        The new derived run (None if the analysis produced none).
    exit_status : str
        The new derived run's exit status; ``reason`` says why it failed.
    reason : str
    results : tuple of ExposureResult
        One per exposure.
    frames : str
        Where the frames were read: ``"file"`` or ``"tiled"``.
    seconds : float
        Wall time, s.
    baseline_uid : str or None
        The derived run whose settings the analysis started from (the
        latest successful one of the raw run), None when there was none.
    changes : tuple of str
        One line per setting that differs from the baseline's, with the
        reason (and when a better default estimator exists than the one kept).
    backed_up : tuple of BackedUpRun
        The derived run, when the Tiled server did not store it: it is in
        the local backup, whole (``xsvs-bluesky upload`` writes it).
    """

    raw_uid: str
    derived_uid: str | None
    exit_status: str
    reason: str
    results: tuple[Any, ...]
    frames: str
    seconds: float
    baseline_uid: str | None = None
    changes: tuple[str, ...] = ()
    backed_up: tuple[Any, ...] = ()


def find_raw_run(raw_catalog: Any, key: str) -> Any:
    """Find the raw run named by ``key``: uid, unique uid prefix, scan_id or -1.

    Raises
    ------
    XSVSError
        No such run, an ambiguous prefix, or a derived run.
    """
    text = str(key).strip()
    lookup: int | str = text
    if text.lstrip("-").isdigit() and len(text) < 5:
        lookup = int(text)
    try:
        run = raw_catalog[lookup]
    except (KeyError, IndexError, ValueError) as exc:
        raise RunNotFoundError(
            f"no raw run {text!r} in the raw catalog ({exc}); give a uid, a unique "
            "uid prefix of >= 5 characters, a scan_id or -1 (latest)"
        ) from None
    start = run.metadata.get("start", {})
    if "original_run_uid" in start:
        raise RunError(
            f"run {start.get('uid')} is a derived run of raw run "
            f"{start['original_run_uid']}; give the raw run's uid"
        )
    return run


def reanalyze(
    catalogs: Any,
    raw_uid: str,
    *,
    options: AnalysisOptions | None = None,
    estimator: Estimator | str | None = None,
    partitions: Mapping[str, Any] | None = None,
    flat_field: FlatFieldMode | str | None = None,
    limits: Limits | None = None,
    frames: str = "auto",
    frames_per_datum: int = 90,
    progress: Progress | None = None,
    report: Report | None = None,
) -> ReanalysisResult:
    """Analyse raw run ``raw_uid`` again into a new derived run.

    The new analysis starts from the settings recorded by the latest
    successful derived run of that raw run (estimator, flat-field mode,
    extra estimators, histogram and dynamics settings, q partitions) and
    the masks and flat field the raw run names; what is named here replaces
    them.  Every setting that then differs from that run's is said in one
    line with the reason (``report``, the log and
    :attr:`ReanalysisResult.changes`), and so is a better default estimator
    than the one kept: it is never switched to silently.

    Parameters
    ----------
    catalogs : xsvs_bluesky.storage.Catalogs
        ``raw`` (read) and ``processed`` (read, and written) catalogs.
    raw_uid : str
        uid, unique uid prefix, scan_id or -1 (see :func:`find_raw_run`).
    options : AnalysisOptions, optional
        Every option of the new analysis, named at once (the baseline's are
        then not used; ``estimator`` None there means the default).  Default:
        the baseline's, or ``AnalysisOptions()`` without one.
    estimator : str, optional
        Main estimator (default: the baseline's, else
        :func:`~xsvs_bluesky.options.default_estimator`).
    partitions : mapping, optional
        q partition parameters (1/Angstrom) replacing the baseline's (else
        the raw run's): ``q1``, ``q2``, ``qs``, ``dq`` (any subset; the
        others are kept) or ``centers`` and ``dq``.
    flat_field : {"weights", "divide-round", "record-only", "none"}, optional
        How the run's flat field is used (default: the baseline's, else
        ``weights``).
    limits : Limits, optional
        Resource limits (never recorded: default ``Limits()``, or those of
        ``options``).
    frames : {"auto", "file", "tiled"}
        Where frames are read (see :data:`FRAME_SOURCES`).
    frames_per_datum : int, optional
        Frames read and histogrammed at a time.
    progress : callable, optional
        ``progress(frames_done, frames_total)``.
    report : callable, optional
        ``report(line)`` for each line about the settings, before any frame
        is read (they are logged at INFO level in any case).

    Returns
    -------
    ReanalysisResult

    Raises
    ------
    XSVSError
        Unknown run or option, a run without geometry or partitions, frame
        files not readable here with ``frames="file"``.
    InputFileError
        Masks or flat field named by the raw run missing or changed.
    """
    import hdf5plugin  # noqa: F401  (registers the Blosc filter of replayed files)

    from xsvs_bluesky.callback import XSVSCallback
    from xsvs_bluesky.core.geometry import Geometry
    from xsvs_bluesky.storage import DEFAULT_DATA_DIR, SpoolingWriter

    t0 = time.perf_counter()
    if frames not in FRAME_SOURCES:
        raise OptionError(
            f"frames {frames!r} is unknown; give one of {', '.join(FRAME_SOURCES)}"
        )
    run = find_raw_run(catalogs.raw, raw_uid)
    start = run.metadata["start"]
    uid = str(start["uid"])
    stop = run.metadata.get("stop") or {}
    if stop.get("exit_status") != "success":
        raise RunError(
            f"raw run {uid} did not finish (exit_status "
            f"{stop.get('exit_status')!r}: {stop.get('reason', '')}); analyse a "
            "complete run"
        )
    if not isinstance(start.get("xsvs_geometry"), Mapping):
        raise RunError(f"raw run {uid} has no xsvs_geometry; cannot analyse it")
    geometry = Geometry.from_dict(start["xsvs_geometry"])
    baseline = latest_analysis(catalogs.processed, uid)
    settings = resolve_settings(
        baseline,
        start,
        options=options,
        estimator=estimator,
        flat_field=flat_field,
        partitions=partitions,
        limits=limits,
    )
    options = settings.options
    spec = merge_partitions({"uid": uid, "xsvs_partitions": settings.partitions}, {})
    masks, flat = read_calibration(
        start, geometry.shape, use_flat=options.uses_flat_field
    )
    changes = setting_changes(
        baseline,
        settings,
        raw_uid=uid,
        main=options.main_estimator(flat is not None),
        partitions=spec,
        masks=[{"name": n, "file_sha256": sha} for n, _, sha in masks],
        flat=None if flat is None else {"name": flat[0], "file_sha256": flat[2]},
        flat_named=isinstance(start.get("xsvs_flat_field"), Mapping),
    )
    for line in changes:
        logger.info("re-analysis of raw run %s: %s", uid, line)
        if report is not None:
            report(line)
    spool = SpoolingWriter(
        catalogs.processed,
        backup_dir=catalogs.backup_dir or (DEFAULT_DATA_DIR / "backup").resolve(),
        queued=False,
        batch_size=_BIG_BATCH,
    )
    writer = WriterGuard(spool, "derived")
    callback = XSVSCallback(
        geometry=geometry,
        partitions=spec,
        masks=masks,
        flat_field=flat,
        options=options,
        emit=writer,
    )
    docs = fetch_documents(run)
    source = frames
    if frames != "tiled":
        missing = [p for p in local_files(docs) if not p.is_file()]
        if missing and frames == "file":
            raise StorageError(
                f"raw run {uid}: {len(missing)} frame file(s) not readable here "
                f"(first: {missing[0]}); use frames='tiled' (--frames tiled)"
            )
        source = "tiled" if missing else "file"
    stream = (
        via_tiled(run, docs, frames_per_datum)
        if source == "tiled"
        else split_datums(docs, frames_per_datum)
    )
    total = int(start.get("num_points") or 0)
    done = 0
    try:
        for name, doc in stream:
            callback(name, doc)
            if progress is not None and name in ("stream_datum", "event_page"):
                done += n_frames(name, doc)
                progress(done, max(total, done))
    except BaseException as err:
        status = "abort" if isinstance(err, KeyboardInterrupt) else "fail"
        writer.end_open(status, f"{type(err).__name__}: {err}")
        spool.close()
        logger.error(
            "re-analysis of raw run %s stopped (%r); derived run %s %s; the raw "
            "run is unchanged",
            uid,
            err,
            writer.uid,
            "is marked " + repr(writer.stored_status)
            if writer.stored_status
            else "is incomplete (no stop document)",
        )
        raise
    backed_up = tuple(spool.close())
    record = callback.records.get(uid)
    if record is None:
        raise RunError(f"raw run {uid}: no frames were analysed")
    return ReanalysisResult(
        raw_uid=uid,
        derived_uid=record.derived_uid,
        exit_status=record.exit_status,
        reason=record.reason,
        results=tuple(record.results),
        frames=source,
        seconds=time.perf_counter() - t0,
        baseline_uid=None if baseline is None else baseline.uid,
        changes=tuple(changes),
        backed_up=backed_up,
    )
