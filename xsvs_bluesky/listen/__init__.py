"""Analysis off the acquisition host: documents from a bus, derived runs to Tiled.

``xsvs-bluesky listen`` (:mod:`xsvs_bluesky.cli.listen`) runs
:class:`Listener` (an :class:`~xsvs_bluesky.callback.XSVSCallback` whose
derived runs go to the processed catalog) on the documents of

- bluesky's 0MQ proxy (:func:`listen_zmq`; JSON or msgpack, a pickle
  payload is refused with :class:`PickleRefusedError`), or
- NATS JetStream in ``bluesky-nats``'s message format through a durable
  consumer (:func:`listen_nats`, :class:`JetStreamSettings`): messages are
  acknowledged only once the run's derived run is stored in Tiled.

Frames: StreamResource paths are mapped (``--path-map``), checked against
the allowed roots, and when unreadable read from the raw run in Tiled
(:func:`tiled_frames`).  The publishing side, for the RunEngine's process:
:class:`BufferedPublisher`, :func:`zmq_publisher`, :func:`nats_publisher`
(a bounded queue and a thread, so a bus that is down never blocks the
RunEngine for long) and the serializers :func:`encode_msgpack`,
:func:`encode_json`.
"""

from __future__ import annotations

from xsvs_bluesky.listen._listener import (
    Listener,
    RunNotStoredError,
    RunOutcome,
    tiled_frames,
)
from xsvs_bluesky.listen._nats import DELIVER_CHOICES, JetStreamSettings, listen_nats
from xsvs_bluesky.listen._publish import (
    BufferedPublisher,
    nats_publisher,
    zmq_publisher,
)
from xsvs_bluesky.listen._wire import (
    PickleRefusedError,
    WireFormatError,
    decode_payload,
    encode_json,
    encode_msgpack,
)
from xsvs_bluesky.listen._zmq import listen_zmq, zmq_address

__all__ = [
    "DELIVER_CHOICES",
    "BufferedPublisher",
    "JetStreamSettings",
    "Listener",
    "PickleRefusedError",
    "RunNotStoredError",
    "RunOutcome",
    "WireFormatError",
    "decode_payload",
    "encode_json",
    "encode_msgpack",
    "listen_nats",
    "listen_zmq",
    "nats_publisher",
    "tiled_frames",
    "zmq_address",
    "zmq_publisher",
]
