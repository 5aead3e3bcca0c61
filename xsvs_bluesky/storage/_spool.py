"""A Tiled writer that never holds up its caller for the server (private).

:class:`SpoolingWriter` wraps the :class:`~xsvs_bluesky.storage.writer.RunWriter`
of one catalog.  For every document, in the caller's thread:

1. the document is appended to the run's backup file
   (``<backup dir>/<run uid>.jsonl``, :mod:`._backup`): a JSON encoding and
   a write to the local disk, whatever the server does;
2. ``queued=True``: it is put in a bounded queue (``max_queue`` documents,
   ``max_queue_mb`` of arrays) that one writer thread sends to Tiled.  A
   full queue never blocks: the writer is behind, so the runs it has open
   are given up on (their documents are in the backup already) and the
   queue holds only their start and stop marks from then on.
   ``queued=False`` (a replay): the document is sent at once.

When the server fails (no connection, a timeout, an HTTP 5xx) the Tiled
client retries, but never longer than ``retry_s`` (a guard on the writer's
own connection, :mod:`._health`); then every run the writer has open goes
to the backup, the writer is dropped, and the next runs go straight to the
backup while the server does not answer a probe.  A run whose stop was
stored has its backup file deleted; a run left in the backup is listed in
:attr:`SpoolingWriter.backed_up` and written again whole by
:func:`~xsvs_bluesky.storage.upload_backups` (``xsvs-bluesky upload``), or
by this writer itself once the server answers again (after the run's stop,
before the next run's start, and at :meth:`SpoolingWriter.close`).

What the caller waits for, per document: the encoding and a write of the
line to the local disk (measured: 0.006 ms for a StreamDatum, 2-4 ms per MiB of
inline array), nothing else (the writer thread ``fsync``s the file before it
sends the stop document); with ``queued=False``, also the server's answer,
at most ``retry_s`` plus one ``timeout_s`` (read timeout) per run when the
server fails.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xsvs_bluesky.errors import OptionError
from xsvs_bluesky.storage._backup import BackedUpRun, Journal, run_kind
from xsvs_bluesky.storage._health import describe_error, server_health, writer_root
from xsvs_bluesky.storage._upload import upload_backup
from xsvs_bluesky.storage.writer import DEFAULT_BATCH_SIZE, RunWriter, make_tiled_writer

__all__ = [
    "RETRY_ENV",
    "default_retry_s",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_QUEUE_MB",
    "DEFAULT_RETRY_S",
    "DEFAULT_TIMEOUT_S",
    "SpoolingWriter",
]

logger = logging.getLogger(__name__)

#: How long a failing server is retried before its runs go to the backup, s
#: (the environment variable ``XSVS_BLUESKY_RETRY_S`` replaces it).
DEFAULT_RETRY_S = 10.0
RETRY_ENV = "XSVS_BLUESKY_RETRY_S"
#: Read/write timeout of one request of the writers, s.
DEFAULT_TIMEOUT_S = 30.0
#: Documents the queue of a queued writer holds at most.
DEFAULT_MAX_QUEUE = 10_000
#: MB of arrays the queue of a queued writer holds at most.
DEFAULT_MAX_QUEUE_MB = 256.0

_CLOSE = object()
_DOCUMENT_OVERHEAD = 512  # bytes counted per queued document besides its arrays


def default_retry_s() -> float:
    """Return ``$XSVS_BLUESKY_RETRY_S`` if set, else :data:`DEFAULT_RETRY_S`.

    Raises
    ------
    OptionError
        The variable is not a number of seconds >= 0.
    """
    text = os.environ.get(RETRY_ENV, "").strip()
    if not text:
        return DEFAULT_RETRY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise OptionError(f"${RETRY_ENV} = {text!r}: give a number of seconds >= 0")
    return value


def _size(doc: Mapping[str, Any]) -> int:
    """Bytes of the arrays a document carries (an estimate of what it holds)."""
    total = _DOCUMENT_OVERHEAD
    data = doc.get("data")
    if isinstance(data, Mapping):
        for value in data.values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
            elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
                total += sum(v.nbytes for v in value if isinstance(v, np.ndarray))
    return total


@dataclass(eq=False)
class _Run:
    """One run the writer has open."""

    uid: str
    journal: Journal | None
    live: bool = True  # False: given up on; its documents are in the backup
    cause: str = ""
    keys: set[str] = field(default_factory=set)  # its descriptor/resource uids


class SpoolingWriter:
    """A ``(name, doc)`` writer of one Tiled catalog with a local backup.

    See the module notes: every document goes to the run's backup file
    first; a run whose stop Tiled stored has its backup deleted; runs the
    server failed (or, queued, that the writer could not keep up with) stay
    in the backup and are written again whole later.

    Parameters
    ----------
    container : tiled client container
        The ``CatalogOfBlueskyRuns`` to write to (its address, API key and
        path are used; the writer opens its own connection).
    backup_dir : path
        Folder of the backup files (created when a run starts).
    queued : bool
        Send the documents from a writer thread (the caller never waits for
        the server) or at once, in the caller's thread.
    batch_size : int
        Events or StreamDatum rows per write of raw runs (see
        :func:`~xsvs_bluesky.storage.make_tiled_writer`).
    retry_s : float, optional
        How long a failing server is retried before the runs go to the
        backup (default :func:`default_retry_s`: ``$XSVS_BLUESKY_RETRY_S``
        or 10 s).
    timeout_s : float
        Read and write timeout of one request.
    max_queue : int
        Documents the queue holds at most (``queued``).
    max_queue_mb : float
        MB of arrays the queue holds at most (``queued``).
    name : str
        Name of the writer thread.

    Attributes
    ----------
    backed_up : list of BackedUpRun
        Runs that are in the backup only (not written yet).
    uploaded : list of BackedUpRun
        Runs that went to the backup and that this writer wrote later.
    server : str
        The server's address.
    """

    def __init__(
        self,
        container: Any,
        *,
        backup_dir: str | Path,
        queued: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        retry_s: float | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_queue_mb: float = DEFAULT_MAX_QUEUE_MB,
        name: str = "xsvs-tiled-writer",
    ) -> None:
        self.container = container
        self.backup_dir = Path(backup_dir)
        self.server = str(container.context.api_uri).rstrip("/")
        self.catalog = tuple(str(p) for p in container.path_parts)
        self.batch_size = int(batch_size)
        self.retry_s = default_retry_s() if retry_s is None else float(retry_s)
        self.timeout_s = float(timeout_s)
        self.max_queue = max(int(max_queue), 1)
        self.max_queue_bytes = int(max_queue_mb * 2**20)
        self.backed_up: list[BackedUpRun] = []
        self.uploaded: list[BackedUpRun] = []
        self._health = server_health(self.server)
        self._cond = threading.Condition()
        self._queue: deque[Any] = deque()
        self._queued_bytes = 0
        self._busy = False
        self._runs: dict[str, _Run] = {}  # runs before their stop, by uid
        self._unfinished: dict[str, _Run] = {}  # runs whose stop is not handled
        self._routes: dict[str, _Run] = {}  # descriptor / resource uid -> run
        self._unrouted = False
        self._closed = False
        # used by the thread that sends (the writer thread, or the caller)
        self._root: Any = None
        self._writer: RunWriter | None = None
        self._in_writer: dict[str, _Run] = {}
        self._thread: threading.Thread | None = None
        if queued:
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ caller side
    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Take one document: into the backup, then to Tiled (queued or now)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("SpoolingWriter is closed")
            run = self._route(name, doc)
        if run is None:
            return
        if run.journal is not None:
            try:
                run.journal.write(name, doc)
            except OSError as err:
                self._lose_journal(run, err)
        if self._thread is None:
            self._process(run, name, doc)
            return
        size = _size(doc)
        with self._cond:
            if run.live and self._full(size):
                if run.journal is None:  # nothing else keeps it: wait
                    while self._full(size):
                        self._cond.wait(0.1)
                else:
                    self._overflow()
            if run.live or name in ("start", "stop"):
                self._queue.append((run, name, doc if run.live else None, size))
                self._queued_bytes += size
                self._cond.notify_all()

    def _full(self, size: int) -> bool:
        return bool(self._queue) and (
            len(self._queue) >= self.max_queue
            or self._queued_bytes + size > self.max_queue_bytes
        )

    def _route(self, name: str, doc: Mapping[str, Any]) -> _Run | None:
        """Return the open run of a document (called with the lock held)."""
        if name == "start":
            uid = str(doc["uid"])
            new = self._runs[uid] = _Run(uid, self._open_journal(uid, run_kind(doc)))
            self._unfinished[uid] = new
            return new
        run: _Run | None = None
        for key in ("run_start", "descriptor", "resource", "stream_resource"):
            ref = doc.get(key)
            if isinstance(ref, str):
                run = self._runs.get(ref) or self._routes.get(ref)
                if run is not None:
                    break
        if run is None and len(self._runs) == 1:
            run = next(iter(self._runs.values()))
        if run is None:
            if not self._unrouted:
                logger.warning(
                    "a %r document of no run this writer saw start: not written", name
                )
                self._unrouted = True
            return None
        if name in ("descriptor", "resource", "stream_resource"):
            self._routes[str(doc["uid"])] = run
            run.keys.add(str(doc["uid"]))
        elif name == "stop":
            self._runs.pop(run.uid, None)
            for key in run.keys:
                self._routes.pop(key, None)
        return run

    def _open_journal(self, uid: str, kind: str) -> Journal | None:
        try:
            return Journal(self.backup_dir, uid, self.catalog, self.server, kind)
        except OSError as err:
            logger.error(
                "cannot write the backup of run %s in %s (%s): it is written to "
                "Tiled without one",
                uid,
                self.backup_dir,
                describe_error(err),
            )
            return None

    def _lose_journal(self, run: _Run, err: OSError) -> None:
        assert run.journal is not None
        logger.error(
            "the backup %s of run %s cannot be written (%s): removed; the run is "
            "written to Tiled without one",
            run.journal.path,
            run.uid,
            describe_error(err),
        )
        run.journal.close(delete=True)
        run.journal = None

    def _overflow(self) -> None:
        """Give up on the open runs: the queue is full (lock held)."""
        cause = (
            f"the writer fell behind the documents ({len(self._queue)} waiting, "
            f"{self._queued_bytes / 2**20:.0f} MB)"
        )
        for run in self._runs.values():
            if run.live and run.journal is not None:
                run.live, run.cause = False, cause
        logger.info("Tiled writer of %s: %s", "/".join(self.catalog), cause)

    # ------------------------------------------------------------ sending side
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                item = self._queue.popleft()
                if item is _CLOSE:
                    return
                self._busy = True
            run, name, doc, size = item
            try:
                self._process(run, name, doc)
            except Exception:
                logger.exception("the Tiled writer failed on a %r document", name)
            finally:
                with self._cond:
                    self._queued_bytes -= size
                    self._busy = False
                    self._cond.notify_all()

    def _process(self, run: _Run, name: str, doc: Any) -> None:
        """Send one document of ``run`` (or skip it: the run is in the backup)."""
        if name == "stop" and run.journal is not None:
            run.journal.sync()  # on disk before the server is asked (not the caller)
        if name == "start" and run.live:
            if (self._health.down or self.backed_up) and not self._health.probe():
                self._give_up([run], self._health.cause or "no answer")
            elif self.backed_up:
                self._upload_pending()
        if run.live:
            try:
                self._live_writer()(name, doc)
                self._in_writer[run.uid] = run
            except Exception as err:
                self._give_up([run, *self._in_writer.values()], describe_error(err))
        elif run.uid in self._in_writer:
            self._give_up(list(self._in_writer.values()), run.cause)
        if name == "stop":
            self._finish(run)

    def _connect(self) -> Any:
        """Return the writer's own (guarded) root client, made on first use."""
        if self._root is None:
            self._root = writer_root(
                self.container, retry_s=self.retry_s, timeout_s=self.timeout_s
            )
        return self._root

    def _live_writer(self) -> RunWriter:
        if self._writer is None:
            from xsvs_bluesky.storage.server import ensure_run_catalog

            catalog = ensure_run_catalog(self._connect(), "/".join(self.catalog))
            self._writer = make_tiled_writer(catalog, batch_size=self.batch_size)
        return self._writer

    def _give_up(self, runs: list[_Run], cause: str) -> None:
        """Send no more of ``runs`` (the backup has them); drop the writer."""
        runs = list({id(r): r for r in runs}.values())
        for run in runs:
            if run.live:
                run.live, run.cause = False, cause
        paths = [str(r.journal.path) for r in runs if r.journal is not None]
        logger.warning(
            "Tiled server at %s failed (%s): run(s) %s go to the backup %s",
            self.server,
            cause,
            ", ".join(r.uid[:8] for r in runs),
            ", ".join(paths) or "(none: lost)",
        )
        if self._writer is not None:
            self._writer.discard(wait_s=self.timeout_s)
            self._writer = None
        self._in_writer.clear()

    def _finish(self, run: _Run) -> None:
        """Delete the backup of ``run``, whose stop was handled, or keep it."""
        self._in_writer.pop(run.uid, None)
        with self._cond:
            self._unfinished.pop(run.uid, None)
        journal = run.journal
        if run.live:
            if journal is not None:
                journal.close(delete=True)
            return
        if journal is None:
            logger.error("run %s is lost: Tiled failed and it has no backup", run.uid)
            return
        journal.close()
        self.backed_up.append(journal.entry(run.cause))
        if self._health.probe():
            self._upload_pending()

    def _upload_pending(self) -> None:
        """Write the runs this writer left in the backup, while the server answers."""
        for entry in list(self.backed_up):
            if not entry.path.exists():  # written meanwhile (``upload``)
                self.backed_up.remove(entry)
                continue
            try:
                done = upload_backup(
                    entry.path, self._connect(), batch_size=self.batch_size
                )
            except Exception as err:
                logger.info(
                    "run %s stays in the backup %s (%s)",
                    entry.uid,
                    entry.path,
                    describe_error(err),
                )
                return
            if done is not None:
                self.backed_up.remove(entry)
                self.uploaded.append(entry)

    def drop_backup(self, uid: str) -> bool:
        """Delete the backup of run ``uid`` left by this writer (never written).

        For a caller whose source sends the run's documents again (a NATS
        consumer that did not acknowledge them): the run is written anew
        then, and its backup would write it a second time.  Call it when
        the writer is idle (after :meth:`wait`).

        Returns
        -------
        bool
            Whether a backup of the run was deleted.
        """
        with self._cond:
            entries = [e for e in self.backed_up if e.uid == uid]
            for entry in entries:
                self.backed_up.remove(entry)
        for entry in entries:
            entry.path.unlink(missing_ok=True)
        return bool(entries)

    # ------------------------------------------------------------ lifetime
    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every document taken is sent or in the backup (True if so)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 1.0)
        return True

    def close(self, timeout: float | None = None) -> list[BackedUpRun]:
        """Send what is queued, try the backups once more, release everything.

        Runs still open (no stop document) keep their backup files, which
        ``upload`` completes with a ``fail`` stop.

        Returns
        -------
        list of BackedUpRun
            The runs left in the backup (:attr:`backed_up`).
        """
        with self._cond:
            self._closed = True
            if self._thread is not None and self._thread.is_alive():
                self._queue.append(_CLOSE)
                self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.backed_up and self._health.probe():
            self._upload_pending()
        with self._cond:
            open_runs = list(self._unfinished.values())
            self._unfinished.clear()
            self._runs.clear()
            self._routes.clear()
        for run in open_runs:  # interrupted: left for `upload`
            if run.journal is not None and not run.journal.closed:
                run.journal.close()
                self.backed_up.append(
                    run.journal.entry(run.cause or "not stored whole (interrupted)")
                )
        if self._writer is not None:
            self._writer.discard()
            self._writer = None
        if self._root is not None:
            self._root.context.close()
            self._root = None
        return list(self.backed_up)

    def __enter__(self) -> SpoolingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
