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
from collections.abc import Callable
from typing import Any

__all__ = ["Consumer", "QueuedCallback"]

logger = logging.getLogger(__name__)

Consumer = Callable[[str, dict[str, Any]], Any]
_STOP = object()


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
