r"""Live wiring of an XSVS acquisition, and the simulated series of the demo.

The live path of ``docs/how-to/live-at-beamline.md`` in one object,
:class:`LiveSession`::

    RunEngine --> TiledWriter(raw catalog)                   (synchronous)
              \-> QueuedCallback --worker--> XSVSCallback
                      --> QueuedCallback --worker--> TiledWriter(processed)
                      \-> live consumers: LiveXSVSTable, LiveXSVSFigure

The analysis runs in a worker thread fed by a queue (:class:`QueuedCallback`),
so the RunEngine never waits for a histogram, a fit or a Tiled request of
the derived run: acquisition matters more than live analysis.  The
``xsvs-bluesky demo`` command, the IPython ``profile_collection`` and the
tests use the same pieces.

The demo's physics (:func:`demo_model`): Brownian particles seen on a
simulated 256x256 MAXIPIX, q constant on rings 5e-4 1/Angstrom wide, so each
analysis partition is one ring and its contrast ``beta(q, t_e)`` is known
exactly (``SpeckleModel.beta_true``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xsvs_bluesky.sim.speckle import SpeckleModel

__all__ = [
    "DEMO_EXPOSURE_TIMES",
    "DEMO_FRAMES",
    "LiveSession",
    "QueuedCallback",
    "close_engine",
    "demo_model",
    "demo_partitions",
    "series_plan",
    "sim_detector",
]

logger = logging.getLogger(__name__)

#: Exposure times of the demo series: 8 doubling from 5e-5 s, in s.
DEMO_EXPOSURE_TIMES: tuple[float, ...] = tuple(5e-5 * 2.0**i for i in range(8))
#: Default frames per exposure of the demo (the series ends within a minute
#: on two cores, server start-up included).
DEMO_FRAMES = 500

Document = tuple[str, dict[str, Any]]
Consumer = Callable[[str, dict[str, Any]], Any]
_STOP = object()


def demo_model(seed: int = 0) -> SpeckleModel:
    """Physics of the demo: known ``beta(q, t_e)`` over the 8 exposures.

    Brownian particles with ``D = 4e7 Angstrom^2/s`` and ``beta0 = 0.2``
    seen with 2000 counts/px/s (``kbar`` ~0.1 at 5e-5 s to ~13 at 6.4e-3 s),
    10 % pixel efficiency spread (the flat field) and rings of constant q
    5e-4 1/Angstrom wide.

    Parameters
    ----------
    seed : int
        Seed of the pixel efficiencies and of the frames.

    Returns
    -------
    SpeckleModel
    """
    return SpeckleModel(count_rate=2000.0, ring_width=5e-4, seed=int(seed))


def demo_partitions(model: SpeckleModel) -> dict[str, Any]:
    """Return the q partitions of the demo: six single rings from 1.5e-3 to 7.5e-3 1/A.

    Every other ring, so that ``beta`` spans the range from nearly
    ``beta0`` to nearly 0 over the exposures.

    Parameters
    ----------
    model : SpeckleModel
        The simulated physics (its rings).

    Returns
    -------
    dict
        ``{"centers": [...], "dq": half_width}`` in 1/Angstrom, as recorded in
        the start document (``xsvs_partitions``); these select exactly the
        pixels of the rings.
    """
    rings = model.partitions(0.0015, 0.0075)
    centers = [float(c) for c in rings.centers[::2]]
    return {"centers": centers, "dq": float(rings.half_width)}


def sim_detector(
    directory: str | Path,
    model: SpeckleModel | None = None,
    *,
    name: str = "maxipix",
    chunk_frames: int = 64,
    threads: int = 1,
) -> Any:
    """Make a connected :class:`~xsvs_bluesky.sim.SimMaxipix` writing to ``directory``.

    Create the RunEngine first: ophyd-async connects devices in its event
    loop.

    Parameters
    ----------
    directory : path
        Where the HDF5 files go (for Tiled: inside its readable storage).
    model : SpeckleModel, optional
        Physics of the frames (default :func:`demo_model`).
    name : str
        Device name, the frame data key.
    chunk_frames : int
        Frames drawn and written per step.
    threads : int
        Threads of the frame sampler.

    Returns
    -------
    xsvs_bluesky.sim.SimMaxipix
    """
    from ophyd_async.core import init_devices

    from xsvs_bluesky.sim import SimMaxipix, directory_path_provider

    provider = directory_path_provider(directory)
    with init_devices():
        det = SimMaxipix(
            provider,
            model if model is not None else demo_model(),
            chunk_frames=chunk_frames,
            threads=threads,
            name=name,
        )
    return det


class QueuedCallback:
    """Run a ``(name, doc)`` callback in a worker thread fed by a queue.

    Subscribed to a RunEngine, it returns at once; the documents are passed
    on in order.  An exception of the wrapped callback is logged and the
    next documents are still delivered.

    Parameters
    ----------
    callback : callable
        The ``(name, doc)`` consumer (e.g. an XSVSCallback).
    maxsize : int
        Queue length; a full queue blocks the producer (back-pressure, so
        inline frames cannot fill the memory).  0 for unbounded.
    name : str
        Name of the worker thread.
    """

    def __init__(
        self, callback: Consumer, *, maxsize: int = 10_000, name: str = "xsvs-analysis"
    ) -> None:
        self.callback = callback
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._busy_s = 0.0
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def busy_s(self) -> float:
        """Time spent inside the wrapped callback so far, s."""
        return self._busy_s

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Queue one document."""
        if not self._thread.is_alive():
            raise RuntimeError("QueuedCallback is closed")
        self._queue.put((name, doc))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                start = time.perf_counter()
                try:
                    self.callback(*item)
                except Exception:
                    logger.exception(
                        "callback %r failed on a %r document", self.callback, item[0]
                    )
                self._busy_s += time.perf_counter() - start
            finally:
                self._queue.task_done()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every queued document is processed.

        Parameters
        ----------
        timeout : float, optional
            Give up after this many seconds (None: wait as long as needed).

        Returns
        -------
        bool
            True when the queue is drained.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Process what is queued, then stop the worker thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)


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
        Batch size of the derived-run TiledWriter.  The default writes the
        events at the stop document: one request per array key and run
        instead of one per key and event (progress shows through ``live``).
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


def series_plan(
    detector: Any,
    *,
    frames: int,
    exposure_times: Iterable[float] = DEMO_EXPOSURE_TIMES,
    partitions: Mapping[str, Any] | None = None,
    sample_name: str = "simulated Brownian latex",
    md: Mapping[str, Any] | None = None,
) -> Any:
    """Plan the demo's fly scan: one stream per exposure time.

    Parameters
    ----------
    detector : SimMaxipix
        The simulated detector (its model's geometry is recorded).
    frames : int
        Frames per exposure.
    exposure_times : iterable of float
        Exposure times, s.
    partitions : mapping, optional
        q partitions recorded in the start document (default
        :func:`demo_partitions` of the detector's model).
    sample_name : str
        Recorded as ``sample_name``.
    md : mapping, optional
        More start metadata.

    Returns
    -------
    generator
        The plan of :func:`xsvs_bluesky.sim.xsvs_series`.
    """
    from xsvs_bluesky.sim import xsvs_series

    parts = (
        dict(partitions) if partitions is not None else demo_partitions(detector.model)
    )
    return xsvs_series(
        detector,
        list(exposure_times),
        int(frames),
        sample_name=sample_name,
        partitions=parts,
        md=dict(md or {}),
    )
