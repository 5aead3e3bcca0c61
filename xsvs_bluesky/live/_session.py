r"""Live wiring of an XSVS acquisition: a RunEngine, Tiled and the analysis (private).

The live path of ``docs/how-to/live-at-beamline.md`` in one object,
:class:`LiveSession`::

    RunEngine --> TiledWriter(raw catalog)                   (synchronous)
              \-> QueuedCallback --worker--> XSVSCallback
                      --> QueuedCallback --worker--> TiledWriter(processed)
                      \-> live consumers: LiveXSVSTable, LiveXSVSFigure

The analysis runs in a worker thread fed by a queue
(:class:`~xsvs_bluesky.demo.QueuedCallback`), so the RunEngine never waits
for a histogram, a fit or a Tiled request of the derived run: acquisition
matters more than live analysis.  :func:`close_engine` ends the event loop
of a RunEngine made by a command or a test.  Re-exported by
:mod:`xsvs_bluesky.demo`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from xsvs_bluesky.live._queued import Consumer, QueuedCallback

__all__ = ["LiveSession", "close_engine"]


class LiveSession:
    """A RunEngine wired to Tiled and to the live XSVS analysis.

    Subscribes, in this order: a TiledWriter of the raw runs (synchronous,
    as at any beamline) and an :class:`~xsvs_bluesky.callback.XSVSCallback`
    whose derived runs go to a TiledWriter of the processed catalog and to
    the ``live`` consumers (e.g. :class:`xsvs_bluesky.live.LiveXSVSTable`).
    With ``queued=True`` the analysis and the storage of the derived runs
    run in two worker threads: after a plan, :meth:`wait_analysis` returns
    when the results are known, :meth:`wait` when they are in Tiled.

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
        Subscribe the raw TiledWriter (False when ``RE`` already has one).
    **callback_options
        Keyword arguments of :class:`~xsvs_bluesky.callback.XSVSCallback`
        (geometry, partitions, masks, flat_field, estimator, ...).

    Attributes
    ----------
    RE, catalogs, callback, raw_writer, processed_writer
        The pieces; ``callback`` is the XSVSCallback itself.
    consumer : QueuedCallback or XSVSCallback
        What is subscribed to the RunEngine.
    writer_consumer : QueuedCallback or TiledWriter
        What receives the derived runs for Tiled.
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
        **callback_options: Any,
    ) -> None:
        from bluesky import RunEngine

        from xsvs_bluesky.callback import XSVSCallback
        from xsvs_bluesky.storage import DEFAULT_BATCH_SIZE, make_tiled_writer

        self.catalogs = catalogs
        self.RE = RE if RE is not None else RunEngine({})
        self.raw_writer = None
        if write_raw:
            self.raw_writer = make_tiled_writer(
                catalogs.raw, batch_size=raw_batch_size or DEFAULT_BATCH_SIZE
            )
        self.processed_writer = make_tiled_writer(
            catalogs.processed, batch_size=processed_batch_size
        )
        # the derived run is stored by its own worker: the analysis never
        # waits for Tiled, and the derived run's stop (when every array is
        # written) overlaps with whatever comes next
        self.writer_consumer: Any = (
            QueuedCallback(self.processed_writer, name="xsvs-derived-writer")
            if queued
            else self.processed_writer
        )
        extra = [live] if callable(live) else list(live)
        self.callback = XSVSCallback(
            emit=[self.writer_consumer, *extra],
            on_result=on_result,
            **callback_options,
        )
        self.consumer: Any = QueuedCallback(self.callback) if queued else self.callback
        self._tokens: list[int] = []
        if self.raw_writer is not None:
            self._tokens.append(self.RE.subscribe(self.raw_writer))
        self._tokens.append(self.RE.subscribe(self.consumer))

    def wait_analysis(self, timeout: float | None = None) -> bool:
        """Wait until the analysis has processed every document (True if so).

        The derived run's documents may still be on their way to Tiled.
        """
        if isinstance(self.consumer, QueuedCallback):
            return self.consumer.wait(timeout)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the derived runs are analysed and stored (True if so)."""
        start = time.monotonic()
        if not self.wait_analysis(timeout):
            return False
        if isinstance(self.writer_consumer, QueuedCallback):
            left = None if timeout is None else timeout - (time.monotonic() - start)
            return self.writer_consumer.wait(left)
        return True

    def record(self, raw_uid: str) -> Any:
        """Return the ``RunRecord`` of an analysed raw run (None if unknown)."""
        self.wait_analysis()
        return self.callback.records.get(raw_uid)

    def close(self) -> None:
        """Finish the analysis and storage; unsubscribe (catalogs stay open)."""
        for token in self._tokens:
            self.RE.unsubscribe(token)
        self._tokens.clear()
        for consumer in (self.consumer, self.writer_consumer):
            if isinstance(consumer, QueuedCallback):
                consumer.close()

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
