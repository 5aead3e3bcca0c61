"""The publishing side: RunEngine documents onto a bus, never blocking it (private).

:class:`BufferedPublisher` puts each ``(name, doc)`` in a bounded queue and
returns; a thread hands them on to the real publisher.  When the bus is
down (``bluesky-nats``'s ``NATSPublisher`` waits up to 10 s per document
for the server's acknowledgement) the queue fills up and the RunEngine
waits at most ``put_timeout_s`` per document; past that the document is
dropped and counted, and the raw data, stored in Tiled by the RunEngine's
own TiledWriter, can be analysed later (``xsvs-bluesky reanalyze``).

:func:`zmq_publisher` and :func:`nats_publisher` build the two publishers
with a safe serializer (msgpack, never pickle).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from xsvs_bluesky.listen._wire import encode_msgpack

__all__ = ["BufferedPublisher", "nats_publisher", "zmq_publisher"]

logger = logging.getLogger(__name__)

_CLOSE: tuple[str, dict[str, Any]] = ("", {})


class BufferedPublisher:
    """Hand documents to a slow or blocking publisher from a worker thread.

    Parameters
    ----------
    publish : callable
        The ``(name, doc)`` publisher (may block, may raise).
    maxsize : int
        Documents buffered at most.
    put_timeout_s : float
        How long a caller (the RunEngine) waits for room in a full buffer
        before the document is dropped, s.
    close : callable, optional
        Called by :meth:`close` after the buffer is drained.
    name : str
        Name of the worker thread.

    Attributes
    ----------
    dropped : int
        Documents dropped (full buffer) so far.
    failed : int
        Documents the publisher raised on.
    """

    def __init__(
        self,
        publish: Callable[[str, dict[str, Any]], Any],
        *,
        maxsize: int = 10_000,
        put_timeout_s: float = 0.1,
        close: Callable[[], Any] | None = None,
        name: str = "xsvs-publisher",
    ) -> None:
        self._publish = publish
        self._close = close
        self.put_timeout_s = float(put_timeout_s)
        self._queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize)
        self.dropped = 0
        self.failed = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        """Buffer one document; waits at most ``put_timeout_s``."""
        if self._closed:
            return
        try:
            self._queue.put((name, doc), timeout=self.put_timeout_s)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "document bus not keeping up: %d documents dropped (the raw "
                    "run is still stored in Tiled; reanalyze it later)",
                    self.dropped,
                )

    @property
    def pending(self) -> int:
        """Documents waiting in the buffer."""
        return self._queue.qsize()

    def _work(self) -> None:
        failing = False
        while True:
            name, doc = self._queue.get()
            if not name:
                return
            try:
                self._publish(name, doc)
                failing = False
            except Exception as err:
                self.failed += 1
                if not failing:
                    logger.warning("publishing a %r document failed: %s", name, err)
                failing = True

    def close(self, timeout_s: float = 10.0) -> bool:
        """Publish what is buffered (up to ``timeout_s``), then stop.

        Returns
        -------
        bool
            True when everything buffered was handed on.
        """
        if self._closed:
            return True
        self._closed = True
        deadline = time.monotonic() + timeout_s
        try:
            self._queue.put(_CLOSE, timeout=timeout_s)
        except queue.Full:
            return False
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        done = not self._thread.is_alive()
        if self._close is not None:
            try:
                self._close()
            except Exception as err:
                logger.warning("closing the publisher: %s", err)
        return done


def zmq_publisher(address: str, **kwargs: Any) -> BufferedPublisher:
    """Return a buffered bluesky 0MQ ``Publisher`` (msgpack) to a proxy's input.

    Parameters
    ----------
    address : str
        ``HOST:PORT`` of the proxy's input (bluesky's ``Proxy(in, out)``).
    **kwargs
        Passed on to :class:`BufferedPublisher`.
    """
    from bluesky.callbacks.zmq import Publisher

    publisher = Publisher(address, serializer=encode_msgpack)
    return BufferedPublisher(publisher, close=publisher.close, **kwargs)


def nats_publisher(
    url: str, subject: str, *, timeout_s: float = 5.0, **kwargs: Any
) -> BufferedPublisher:
    """Return a buffered ``bluesky-nats`` ``NATSPublisher`` (JetStream, msgpack).

    Parameters
    ----------
    url : str
        NATS server, e.g. ``nats://localhost:4222``.
    subject : str
        Subject prefix; documents go to ``<subject>.<name>`` (a JetStream
        stream must hold them).
    timeout_s : float
        Connection timeout, s.
    **kwargs
        Passed on to :class:`BufferedPublisher`.
    """
    import nats
    from bluesky_nats.nats_publisher import NATSPublisher
    from bluesky_nats.nats_runtime import NatsRuntime
    from bluesky_nats.outbox import Delivery, Outbox

    runtime = NatsRuntime("xsvs-nats")
    try:
        client = runtime.connect(
            nats.connect(url, connect_timeout=timeout_s, max_reconnect_attempts=-1),
            timeout=timeout_s + 1,
        )
    except BaseException:
        runtime.close()
        raise
    outbox = Outbox(runtime, client, delivery=Delivery.CRITICAL)
    publisher = NATSPublisher(outbox, client.jetstream(), subject_factory=subject)
    return BufferedPublisher(publisher, close=runtime.close, **kwargs)
