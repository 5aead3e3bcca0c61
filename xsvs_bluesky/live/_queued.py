"""A ``(name, doc)`` callback run in a worker thread fed by a queue (private).

:class:`QueuedCallback` lets a RunEngine hand its documents on at once:
the analysis of :class:`~xsvs_bluesky.demo.LiveSession` and the storage of
its derived runs run in such workers, so acquisition never waits for them.
Re-exported by :mod:`xsvs_bluesky.demo`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

__all__ = ["Consumer", "QueuedCallback"]

logger = logging.getLogger(__name__)

Consumer = Callable[[str, dict[str, Any]], Any]
_STOP = object()


class _Call:
    """A call the worker makes in its turn (:meth:`QueuedCallback.interrupt`)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call


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
        self._discarding = False
        self._put_lock = threading.Lock()
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
        with self._put_lock:  # none slips in behind interrupt()
            if self._discarding:
                return
            self._queue.put((name, doc))

    def interrupt(self, call: Callable[[], Any], keep: Collection[str] = ()) -> int:
        """Drop the documents not processed yet; run ``call`` in the worker next.

        From then on documents are dropped as they come (the callback sees
        none).  For a consumer that must stop now: e.g. ``call`` ends the
        open derived runs (``XSVSCallback.abort_open``).  Thread-safe; a
        closed worker makes no call.

        Parameters
        ----------
        call : callable
            Called without arguments in the worker thread.
        keep : collection of str
            Names of the queued documents passed on before ``call`` all the
            same (e.g. ``start``: a run whose start is queued still gets
            its derived run).

        Returns
        -------
        int
            The documents dropped.
        """
        with self._put_lock:
            self._discarding = True
        kept: list[Any] = []
        dropped, stops = 0, 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stops += 1
            elif not isinstance(item, _Call) and item[0] in keep:
                kept.append(item)
            else:
                dropped += 1
            self._queue.task_done()
        if self._thread.is_alive():
            for item in kept:
                self._queue.put(item)
            self._queue.put(_Call(call))
        for _ in range(stops):  # a close() under way still ends the worker
            self._queue.put(_STOP)
        return dropped

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                start = time.perf_counter()
                try:
                    if isinstance(item, _Call):
                        item.call()
                    else:
                        self.callback(*item)
                except Exception:
                    what = "a call"
                    if not isinstance(item, _Call):
                        what = f"a {item[0]!r} document"
                    logger.exception("callback %r failed on %s", self.callback, what)
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
