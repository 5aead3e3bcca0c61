r"""Live wiring of an XSVS acquisition: a RunEngine, Tiled and the analysis (private).

The live path of ``docs/how-to/live-at-beamline.md`` in one object,
:class:`LiveSession`::

    RunEngine --> SpoolingWriter(raw catalog) --worker--> Tiled
              \-> QueuedCallback --worker--> XSVSCallback
                      --> SpoolingWriter(processed) --worker--> Tiled
                      \-> live consumers: LiveXSVSTable, LiveXSVSFigure

The analysis runs in a worker thread fed by a queue
(:class:`~xsvs_bluesky.demo.QueuedCallback`), so the RunEngine never waits
for a histogram or a fit: acquisition matters more than live analysis.
Both runs are written to Tiled by
:class:`~xsvs_bluesky.storage.SpoolingWriter` threads: the RunEngine (and
the analysis) wait for a line written to the local backup per document,
never for the server; a run the server fails stays in the backup
(``<data dir>/backup``) and is written whole when the server answers again
(or by ``xsvs-bluesky upload``).  :func:`close_engine` ends the event loop
of a RunEngine made by a command or a test.  Re-exported by
:mod:`xsvs_bluesky.demo`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xsvs_bluesky.live._queued import Consumer, QueuedCallback

__all__ = ["LiveSession", "close_engine"]

#: documents an interrupted analysis still processes: they open runs, streams
#: and files, and cost nothing
_RUN_OPENING = frozenset({"start", "descriptor", "stream_resource", "resource"})


class LiveSession:
    """A RunEngine wired to Tiled and to the live XSVS analysis.

    Subscribes, in this order: a writer of the raw runs and an
    :class:`~xsvs_bluesky.callback.XSVSCallback` whose derived runs go to a
    writer of the processed catalog and to the ``live`` consumers (e.g.
    :class:`xsvs_bluesky.live.LiveXSVSTable`).  The writers are
    :class:`~xsvs_bluesky.storage.SpoolingWriter`: each document goes to the
    run's backup file, then through a bounded queue to a writer thread, so
    a slow or dead Tiled server never holds up the RunEngine; runs the
    server fails stay in the backup (:attr:`backed_up`) and are written
    whole once it answers again.  With ``queued=True`` the analysis runs
    in a worker thread too: after a plan, :meth:`wait_analysis` returns
    when the results are known, :meth:`wait` when they are in Tiled (or in
    the backup).

    Parameters
    ----------
    catalogs : xsvs_bluesky.storage.Catalogs
        Raw and processed catalogs (embedded or named server).
    RE : bluesky.RunEngine, optional
        The RunEngine (default a new one, without metadata store).
    live : callable or sequence of callables
        More ``(name, doc)`` consumers of the derived runs (live table,
        figure), called in the analysis thread.
    on_result : callable or sequence of callables
        Called with every :class:`~xsvs_bluesky.analysis.ExposureResult`.
    queued : bool
        Run the analysis in a worker thread (default) or in the RunEngine's
        callback thread.
    raw_batch_size : int, optional
        Batch size of the raw TiledWriter (default
        :data:`~xsvs_bluesky.storage.DEFAULT_BATCH_SIZE`).
    processed_batch_size : int
        Batch size of the processed catalog's TiledWriter.  Derived runs of
        layout 2 are written page by page whatever it is (each exposure's
        rows as soon as it is complete).
    write_raw : bool
        Subscribe the raw writer (False when ``RE`` already has one).
    backup_dir : path, optional
        Local backup of the runs (default ``catalogs.backup_dir``, else
        ``./xsvs-data/backup``).
    retry_s : float, optional
        How long the writers retry a failing server before its runs go to
        the backup (default ``$XSVS_BLUESKY_RETRY_S`` or 10 s).
    **callback_options
        Keyword arguments of :class:`~xsvs_bluesky.callback.XSVSCallback`
        (geometry, partitions, masks, flat_field, estimator, ...).

    Attributes
    ----------
    RE, catalogs, callback, raw_writer, processed_writer
        The pieces; ``callback`` is the XSVSCallback itself.
    consumer : QueuedCallback or XSVSCallback
        What is subscribed to the RunEngine.
    writer_consumer : SpoolingWriter
        What receives the derived runs for Tiled (``processed_writer``).
    """

    def __init__(
        self,
        catalogs: Any,
        *,
        RE: Any = None,
        live: Consumer | Sequence[Consumer] = (),
        on_result: Any = (),
        queued: bool = True,
        raw_batch_size: int | None = None,
        processed_batch_size: int = 1_000_000,
        write_raw: bool = True,
        backup_dir: str | Path | None = None,
        retry_s: float | None = None,
        **callback_options: Any,
    ) -> None:
        from bluesky import RunEngine

        from xsvs_bluesky.callback import XSVSCallback
        from xsvs_bluesky.storage import (
            DEFAULT_BATCH_SIZE,
            DEFAULT_DATA_DIR,
            SpoolingWriter,
        )

        self.catalogs = catalogs
        self.RE = RE if RE is not None else RunEngine({})
        backup = backup_dir or getattr(catalogs, "backup_dir", None)
        self.backup_dir = Path(backup or DEFAULT_DATA_DIR / "backup").resolve()
        self.raw_writer: SpoolingWriter | None = None
        if write_raw:
            self.raw_writer = SpoolingWriter(
                catalogs.raw,
                backup_dir=self.backup_dir,
                batch_size=raw_batch_size or DEFAULT_BATCH_SIZE,
                retry_s=retry_s,
                name="xsvs-raw-writer",
            )
        # the derived run is stored by its own worker: the analysis never
        # waits for Tiled, and the derived run's stop (when every array is
        # written) overlaps with whatever comes next
        self.processed_writer = SpoolingWriter(
            catalogs.processed,
            backup_dir=self.backup_dir,
            queued=queued,
            batch_size=processed_batch_size,
            retry_s=retry_s,
            name="xsvs-derived-writer",
        )
        self.writer_consumer: Any = _hooked(self.processed_writer, "derived")
        extra = [live] if callable(live) else list(live)
        self.callback = XSVSCallback(
            emit=[self.writer_consumer, *extra],
            on_result=on_result,
            **callback_options,
        )
        self.consumer: Any = QueuedCallback(self.callback) if queued else self.callback
        self._tokens: list[int] = []
        if self.raw_writer is not None:
            self._tokens.append(self.RE.subscribe(_hooked(self.raw_writer, "raw")))
        self._tokens.append(self.RE.subscribe(self.consumer))

    def wait_analysis(self, timeout: float | None = None) -> bool:
        """Wait until the analysis has processed every document (True if so).

        The derived run's documents may still be on their way to Tiled.
        """
        if isinstance(self.consumer, QueuedCallback):
            return self.consumer.wait(timeout)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the runs are analysed and stored or backed up (True if so)."""
        start = time.monotonic()
        if not self.wait_analysis(timeout):
            return False
        for writer in (self.processed_writer, self.raw_writer):
            if writer is None:
                continue
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if not writer.wait(left):
                return False
        return True

    @property
    def backed_up(self) -> list[Any]:
        """Runs kept in the local backup only: the server did not store them.

        :class:`~xsvs_bluesky.storage.BackedUpRun` each (uid, file, server,
        cause); written whole by the writers once the server answers again,
        or by ``xsvs-bluesky upload``.
        """
        writers = (self.raw_writer, self.processed_writer)
        return [run for w in writers if w is not None for run in w.backed_up]

    def interrupt(self, reason: str) -> None:
        """Stop the analysis now: its open derived runs end ``abort``, ``reason``.

        For a command stopped by a signal (:class:`~xsvs_bluesky.live.AbortOnSignal`
        calls it once the plan is stopped).  The frames and stop documents
        the analysis has not processed yet are dropped (those that open a
        run or a stream are not: every raw run started gets its derived
        run); the frames analysed so far are stored in the derived run,
        whose stop document (``exit_status="abort"``) goes to its writer as
        usual; :meth:`wait` then returns once it is stored (or in the
        backup).  The analysis takes no more documents afterwards.  Without
        ``queued`` the derived runs are ended in the calling thread: call it
        when the RunEngine is idle.
        """
        if isinstance(self.consumer, QueuedCallback):
            self.consumer.interrupt(
                lambda: self.callback.abort_open(reason), keep=_RUN_OPENING
            )
        else:
            self.callback.abort_open(reason)

    def record(self, raw_uid: str) -> Any:
        """Return the ``RunRecord`` of an analysed raw run (None if unknown)."""
        self.wait_analysis()
        return self.callback.records.get(raw_uid)

    def close(self) -> None:
        """Finish the analysis and storage; unsubscribe (catalogs stay open).

        Runs the server did not store stay in the backup (:attr:`backed_up`).
        """
        for token in self._tokens:
            self.RE.unsubscribe(token)
        self._tokens.clear()
        if isinstance(self.consumer, QueuedCallback):
            self.consumer.close()
        for writer in (self.processed_writer, self.raw_writer):
            if writer is not None:
                writer.close()

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hooked(writer: Any, label: str) -> Any:
    """Return the writer, behind the test hook if the tests set it (``WriterGuard``)."""
    from xsvs_bluesky.storage import TEST_SIGNAL_ENV, WriterGuard

    if os.environ.get(TEST_SIGNAL_ENV):
        return WriterGuard(writer, label)
    return writer


def close_engine(RE: Any) -> None:
    """Stop and close the event loop of a RunEngine (its thread ends).

    For RunEngines made by a command or a test; the RunEngine cannot be
    used afterwards.
    """
    loop = RE.loop
    if loop.is_closed():
        return
    loop.call_soon_threadsafe(loop.stop)
    thread = getattr(RE, "_th", None)
    if thread is not None:
        thread.join(timeout=10)
    if not loop.is_running():
        loop.close()
