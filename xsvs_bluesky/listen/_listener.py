"""The consumer side of a document bus: documents in, derived runs stored (private).

:class:`Listener` owns one :class:`~xsvs_bluesky.callback.XSVSCallback`
writing its derived runs to the processed catalog through a
:class:`~xsvs_bluesky.storage.SpoolingWriter` (a writer thread, a local
backup: the analysis never waits for the server, and a derived run the
server fails is kept in the backup and written when it answers again, by
the writer itself or by ``xsvs-bluesky upload``), feeds it the documents a
transport delivers (:mod:`._zmq`, :mod:`._nats`) and, at every raw run's
stop document, says what became of the run (:class:`RunOutcome`): the
derived run's uid and status, frames per second, and whether its stop
document is really stored in Tiled (what a durable transport waits for
before it acknowledges the run's messages) or kept in the backup.  A
durable transport has the documents of a run not stored sent again: its
listener keeps no backup of it (``keep_backups=False``), so the run is not
written twice.  :func:`tiled_frames` is the fallback that reads a datum's
frames from the raw run stored in Tiled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsvs_bluesky.callback import FrameAccess, FrameFallback, XSVSCallback
from xsvs_bluesky.errors import RunNotStoredError
from xsvs_bluesky.storage import DEFAULT_DATA_DIR, BackedUpRun, SpoolingWriter

__all__ = ["Listener", "RunNotStoredError", "RunOutcome", "tiled_frames"]

logger = logging.getLogger(__name__)

_AT_STOP = 1_000_000
"""Batch size of the derived-run writer: everything is written at the stop."""


@dataclass(frozen=True)
class RunOutcome:
    """What became of one raw run received from a bus.

    Attributes
    ----------
    raw_uid : str
        The raw run.
    derived_uid : str or None
        Its derived run (None when the run was not analysed).
    exit_status : str
        ``success``, ``fail`` or ``abort`` (the derived run's), or
        ``skipped`` (not an XSVS run, or no frames).
    reason : str
        The derived run's reason, or why the run was skipped.
    frames : int
        Frames analysed.
    seconds : float
        From the start document's arrival to the derived run stored, s.
    stored : bool
        Whether the derived run's stop document is in Tiled (True for a
        skipped run: nothing to store).
    backup : BackedUpRun, optional
        Where the derived run is kept when the server did not store it (it
        is written when the server answers again); None otherwise, and
        with ``keep_backups=False``.
    """

    raw_uid: str
    derived_uid: str | None
    exit_status: str
    reason: str
    frames: int
    seconds: float
    stored: bool
    backup: BackedUpRun | None = None

    @property
    def frames_per_s(self) -> float:
        """Frames analysed per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One log line: raw uid, status, frames, frames/s, derived uid, reason."""
        text = (
            f"raw run {self.raw_uid}: {self.exit_status}, {self.frames} frames in "
            f"{self.seconds:.1f} s ({self.frames_per_s:.0f} frames/s)"
        )
        if self.derived_uid is not None:
            text += f" -> derived run {self.derived_uid}"
            if self.backup is not None:
                text += (
                    f" KEPT IN THE BACKUP {self.backup.path.parent} (the Tiled "
                    f"server failed: {self.backup.cause}; written when it answers)"
                )
            elif not self.stored:
                text += " NOT STORED"
        if self.reason:
            text += f"; {self.reason}"
        return text


def tiled_frames(raw_catalog: Any) -> FrameFallback:
    """Return a :data:`~xsvs_bluesky.callback.FrameFallback` reading Tiled.

    ``raw_catalog[raw_uid][stream][data_key][first:last]`` (frames of
    several per datum index are reshaped by the reader).  Returns None
    while the run, the stream or the frames are not stored yet.
    """
    runs: dict[str, Any] = {}

    def fallback(raw_uid: str, stream: str, key: str, start: int, stop: int) -> Any:
        run = runs.get(raw_uid)
        if run is None:
            try:
                run = raw_catalog[raw_uid]
            except KeyError:
                return None
            runs[raw_uid] = run
        try:
            array = run[stream][key]
        except KeyError:
            runs.pop(raw_uid, None)  # look again: the stream may come later
            return None
        if int(array.shape[0]) < stop:
            runs.pop(raw_uid, None)
            return None
        return array[start:stop]

    return fallback


class Listener:
    """Run the XSVS analysis on documents from a bus; store derived runs in Tiled.

    Parameters
    ----------
    catalogs : xsvs_bluesky.storage.Catalogs
        ``processed`` receives the derived runs; ``raw`` is where the
        fallback reads frames (when ``access`` has none, a fallback on it
        is added unless ``tiled_fallback=False``).
    access : FrameAccess, optional
        Path map and allowed roots of StreamResource files.  Default: files
        under the catalogs' data folder only.
    tiled_fallback : bool
        Read the frames of an unreadable file from the raw run in Tiled.
    options : mapping
        More keyword arguments of :class:`~xsvs_bluesky.callback.XSVSCallback`
        (estimator, accept, read_timeout_s, ...).
    backup_dir : path, optional
        Local backup of the derived runs (default ``catalogs.backup_dir``,
        else ``./xsvs-data/backup``).
    keep_backups : bool
        Keep a derived run the server did not store in the backup, to be
        written later (0MQ: nothing is sent again), or delete its backup
        (NATS: the documents are sent again and analysed anew).
    retry_s : float, optional
        How long the writer retries a failing server (default
        ``$XSVS_BLUESKY_RETRY_S`` or 10 s).

    Attributes
    ----------
    writer : SpoolingWriter
        The writer of the derived runs; :meth:`finish` closes it.
    """

    def __init__(
        self,
        catalogs: Any,
        *,
        access: FrameAccess | None = None,
        tiled_fallback: bool = True,
        options: Mapping[str, Any] | None = None,
        backup_dir: str | Path | None = None,
        keep_backups: bool = True,
        retry_s: float | None = None,
    ) -> None:
        self.catalogs = catalogs
        if access is None:
            roots = [p for p in (catalogs.data_dir, catalogs.external_dir) if p]
            access = FrameAccess.build(allowed_roots=roots)
        if tiled_fallback and access.fallback is None:
            access = FrameAccess(
                path_map=access.path_map,
                allowed_roots=access.allowed_roots,
                fallback=tiled_frames(catalogs.raw),
                fallback_timeout_s=access.fallback_timeout_s,
                fallback_frames=access.fallback_frames,
            )
        self.access = access
        backup = backup_dir or getattr(catalogs, "backup_dir", None)
        self.keep_backups = bool(keep_backups)
        self.writer = SpoolingWriter(
            catalogs.processed,
            backup_dir=Path(backup or DEFAULT_DATA_DIR / "backup").resolve(),
            batch_size=_AT_STOP,
            retry_s=retry_s,
            name="xsvs-listen-writer",
        )
        self.callback = XSVSCallback(
            emit=self.writer, frame_access=access, **dict(options or {})
        )
        self._t0: dict[str, float] = {}

    def feed(self, name: str, doc: dict[str, Any]) -> RunOutcome | None:
        """Process one document; the run's outcome at its stop document."""
        if name == "start":
            self._t0[str(doc.get("uid"))] = time.perf_counter()
        self.callback(name, doc)
        if name == "stop":
            uid = str(doc.get("run_start"))
            if uid in self._t0:
                return self._outcome(uid)
        return None

    @property
    def open_runs(self) -> list[str]:
        """Raw runs started and not stopped."""
        return list(self._t0)

    def close(self, reason: str) -> list[RunOutcome]:
        """Abort the derived run of every open raw run (``exit_status="abort"``).

        Returns
        -------
        list of RunOutcome
            One per raw run that was open.
        """
        self.callback.abort_open(reason)
        return [self._outcome(uid) for uid in list(self._t0)]

    def finish(self) -> list[BackedUpRun]:
        """Write what is queued, try the backups once more, close the writer.

        Call it after :meth:`close`.

        Returns
        -------
        list of BackedUpRun
            Derived runs left in the backup (none with ``keep_backups=False``).
        """
        left = self.writer.close()
        if not self.keep_backups:
            for run in left:
                self.writer.drop_backup(run.uid)
            return []
        return left

    def _outcome(self, uid: str) -> RunOutcome:
        t0 = self._t0.pop(uid)
        record = self.callback.records.get(uid)
        if record is None or record.derived_uid is None:
            return RunOutcome(
                uid, None, "skipped", "not an XSVS run or no frames", 0,
                time.perf_counter() - t0, True,
            )  # fmt: skip
        self.writer.wait()  # the derived run's stop handled: stored or kept
        backup = next(
            (r for r in self.writer.backed_up if r.uid == record.derived_uid), None
        )
        if backup is not None and not self.keep_backups:
            self.writer.drop_backup(backup.uid)  # sent again: analysed anew
            backup = None
        stored = backup is None and self.is_stored(record.derived_uid)
        return RunOutcome(
            raw_uid=uid,
            derived_uid=record.derived_uid,
            exit_status=record.exit_status,
            reason=record.reason,
            frames=sum(int(r.n_frames) for r in record.results),
            seconds=time.perf_counter() - t0,
            stored=stored,
            backup=backup,
        )

    def is_stored(self, derived_uid: str) -> bool:
        """Whether the derived run's stop document is in the processed catalog."""
        try:
            node = self.catalogs.processed[derived_uid]
            return bool(node.metadata.get("stop"))
        except Exception as err:
            logger.error("derived run %s is not in Tiled: %s", derived_uid, err)
            return False
