"""The raw run's documents to its Tiled writer, off the replay's thread (private).

:class:`ExposureFeed` sits between the replay's documents and the raw run's
writer (the raw-run writer of :func:`~xsvs_bluesky.storage.make_tiled_writer`,
behind the local backup):

- the StreamDatum documents of an exposure are joined into one, handed on
  when the exposure is complete (the next descriptor, :meth:`flush`, or the
  stop), so the writer registers each exposure's frames with one request,
  with their final shape, while the next exposure is decoded, instead of
  all of them after the stop document;
- the writer is called from one worker thread, in document order, so its
  requests (a stream node per descriptor, the registration per exposure)
  never hold up the decoding and analysis;
- the stop document waits for everything before it, then for the writer's
  stop: the raw run is stored whole when the stop returns.

An error of the writer is raised at the next document; from then on only
the stop document is handed on, so the run can be marked.  An error not
raised yet when the stop comes is raised after the stop, which is then
written with ``exit_status="fail"`` (the run is not whole).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ExposureFeed"]

logger = logging.getLogger(__name__)

_END: tuple[str, dict[str, Any]] = ("", {})


def _follows(first: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Whether StreamDatum ``doc`` continues ``first`` (same resource, no gap)."""
    return (
        doc["stream_resource"] == first["stream_resource"]
        and doc["descriptor"] == first["descriptor"]
        and doc["indices"]["start"] == first["indices"]["stop"]
        and doc["seq_nums"]["start"] == first["seq_nums"]["stop"]
    )


class ExposureFeed:
    """A ``(name, doc)`` consumer handing a raw run's documents to ``writer``.

    Parameters
    ----------
    writer : callable
        The raw run's writer (called from the feed's worker thread).
    """

    def __init__(self, writer: Callable[[str, dict[str, Any]], Any]) -> None:
        self.writer = writer
        self._pending: dict[str, Any] | None = None
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._error: BaseException | None = None  # the first, until raised
        self._failed = False
        self._stop_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Take one document of the raw run."""
        if name == "stream_datum" and not self._failed:
            pending = self._pending
            if pending is not None and _follows(pending, doc):
                pending["indices"] = {
                    **pending["indices"],
                    "stop": doc["indices"]["stop"],
                }
                pending["seq_nums"] = {
                    **pending["seq_nums"],
                    "stop": doc["seq_nums"]["stop"],
                }
                return
            self.flush()
            self._pending = {
                **doc,
                "indices": dict(doc["indices"]),
                "seq_nums": dict(doc["seq_nums"]),
            }
            self._raise()
            return
        self.flush()
        if name == "stop":
            self._stop(doc)
            return
        self._raise()
        self._put(name, doc)

    def flush(self) -> None:
        """Hand on the StreamDatum joined so far (an exposure is complete)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._put("stream_datum", pending)

    def _put(self, name: str, doc: dict[str, Any]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name="xsvs-raw-writer", daemon=True
            )
            self._thread.start()
        self._queue.put((name, doc))

    def _stop(self, doc: dict[str, Any]) -> None:
        self._put("stop", doc)
        self._queue.put(_END)
        assert self._thread is not None
        self._thread.join()
        self._thread = None
        if self._stop_error is not None:
            raise self._stop_error
        self._raise()

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _work(self) -> None:
        while True:
            name, doc = self._queue.get()
            if not name:
                return
            if self._failed and name != "stop":
                continue  # after an error only the stop is written
            if name == "stop" and self._error is not None:
                # a failure the replay has not seen yet: the run is not whole
                doc = {
                    **doc,
                    "exit_status": "fail",
                    "reason": f"{type(self._error).__name__}: {self._error}",
                }
            try:
                self.writer(name, doc)
            except BaseException as err:  # raised in the replay's thread
                logger.debug("the raw run's writer failed at %s", name, exc_info=True)
                if name == "stop":
                    self._stop_error = err
                elif not self._failed:
                    self._failed, self._error = True, err
