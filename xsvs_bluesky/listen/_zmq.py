"""Documents from bluesky's 0MQ proxy (private).

bluesky's ``Proxy`` forwards what RunEngines publish
(``bluesky.callbacks.zmq.Publisher``) to subscribers as
``b"<prefix> <name> <payload>"``.  :func:`listen_zmq` subscribes to the
proxy's output port and feeds a :class:`~._listener.Listener`.  0MQ keeps
nothing for a subscriber that is away: documents published while the
listener is down are lost (use NATS JetStream for that, :mod:`._nats`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from xsvs_bluesky.errors import OptionError
from xsvs_bluesky.listen._listener import Listener, RunOutcome
from xsvs_bluesky.listen._wire import (
    PickleRefusedError,
    WireFormatError,
    decode_payload,
    split_zmq_message,
)

__all__ = ["listen_zmq", "zmq_address"]

logger = logging.getLogger(__name__)


def zmq_address(text: str) -> str:
    """``HOST:PORT`` (or ``tcp://HOST:PORT``) as a 0MQ address.

    Raises
    ------
    OptionError
        Not of the form HOST:PORT with a port from 1 to 65535.
    """
    address = text if "://" in text else f"tcp://{text}"
    host, _, port = address.split("://", 1)[1].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionError(
            f"0MQ address {text!r}: give HOST:PORT of the proxy's output, e.g. "
            "localhost:5578"
        )
    return address


def listen_zmq(
    listener: Listener,
    address: str,
    *,
    stop: threading.Event,
    on_outcome: Callable[[RunOutcome], None],
    prefix: bytes = b"",
    ready: Callable[[], None] | None = None,
) -> None:
    """Analyse the documents a 0MQ proxy forwards until ``stop`` is set.

    Parameters
    ----------
    listener : Listener
        Runs the analysis and stores the derived runs.
    address : str
        The proxy's output, ``HOST:PORT``.
    stop : threading.Event
        Set it (e.g. from a signal handler) to return; open runs are left
        to the caller (:meth:`Listener.close`).
    on_outcome : callable
        Called with each run's :class:`RunOutcome`.
    prefix : bytes
        Only messages with this publisher prefix (default: all).
    ready : callable, optional
        Called once subscribed.

    Raises
    ------
    PickleRefusedError
        The publisher sends pickles (a one-line reason; nothing unpickled).
    """
    import zmq

    url = zmq_address(address)
    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    try:
        socket.connect(url)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        if ready is not None:
            ready()
        warned = False
        while not stop.is_set():
            if not socket.poll(200):
                continue
            message = socket.recv()
            try:
                their_prefix, name, payload = split_zmq_message(message)
                if prefix and their_prefix != prefix:
                    continue
                doc = decode_payload(payload, where=f"the 0MQ publisher at {address}")
            except PickleRefusedError:
                raise
            except WireFormatError as err:
                if not warned:
                    logger.warning("%s (dropped; later ones at debug level)", err)
                    warned = True
                else:
                    logger.debug("%s", err)
                continue
            outcome = listener.feed(name, doc)
            if outcome is not None:
                on_outcome(outcome)
    finally:
        socket.close(linger=0)
        context.term()
