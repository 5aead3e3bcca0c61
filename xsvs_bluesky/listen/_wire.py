"""Bluesky documents on the wire: JSON or msgpack, never pickle (private).

bluesky's 0MQ ``Publisher`` sends ``b"<prefix> <name> <payload>"`` where the
payload is what its serializer returns (``pickle.dumps`` by default);
``bluesky-nats`` publishes ``ormsgpack.packb(doc)`` to the subject
``<prefix>.<name>``.  :func:`decode_payload` reads JSON and msgpack (plain
msgpack: no extension hooks, so nothing is ever unpickled) and refuses a
pickle payload with :class:`PickleRefusedError`; :func:`encode_json` and
:func:`encode_msgpack` are the matching serializers for publishers (numpy
arrays become nested lists, numpy scalars plain numbers).
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import numpy as np

from xsvs_bluesky.errors import PickleRefusedError, WireFormatError

__all__ = [
    "PickleRefusedError",
    "WireFormatError",
    "decode_payload",
    "encode_json",
    "encode_msgpack",
    "split_zmq_message",
]


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    raise TypeError(f"cannot serialize {type(obj).__name__} in a bluesky document")


def encode_json(doc: Any) -> bytes:
    """Return the JSON bytes of a document (numpy arrays as nested lists)."""
    return json.dumps(doc, default=_plain, allow_nan=True).encode()


def encode_msgpack(doc: Any) -> bytes:
    """Return the msgpack bytes of a document (numpy arrays as nested lists)."""
    return bytes(msgpack.packb(doc, default=_plain, use_bin_type=True))


def _is_pickle(payload: bytes) -> bool:
    # protocol 2+ starts with PROTO (0x80) and its number, ends with STOP (".")
    return (
        len(payload) > 2
        and payload[0] == 0x80
        and 2 <= payload[1] <= 5
        and payload.endswith(b".")
    )


def decode_payload(payload: bytes, *, where: str = "the publisher") -> dict[str, Any]:
    """Decode one document: JSON (starts with ``{``) or msgpack.

    Parameters
    ----------
    payload : bytes
        The serialized document.
    where : str
        Names the source in error messages.

    Returns
    -------
    dict
        The document.

    Raises
    ------
    PickleRefusedError
        The payload is a pickle.
    WireFormatError
        Neither JSON nor msgpack, or not a mapping.
    """
    data = bytes(payload)
    if _is_pickle(data):
        raise PickleRefusedError(
            f"{where} sends pickled documents: refused (unpickling runs arbitrary "
            "code); publish JSON or msgpack, e.g. Publisher(address, serializer="
            "xsvs_bluesky.listen.encode_msgpack)"
        )
    try:
        if data[:1] in (b"{", b" ", b"\n"):
            doc = json.loads(data)
        else:
            doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as err:
        raise WireFormatError(
            f"{where}: a message is neither JSON nor msgpack ({type(err).__name__}: "
            f"{err}); first bytes {data[:16]!r}"
        ) from None
    if not isinstance(doc, dict):
        raise WireFormatError(
            f"{where}: a message holds a {type(doc).__name__}, not a document"
        )
    return doc


def split_zmq_message(message: bytes) -> tuple[bytes, str, bytes]:
    """Split bluesky's 0MQ message ``b"<prefix> <name> <payload>"``.

    Raises
    ------
    WireFormatError
        Fewer than three space-separated parts, or a name that is not text.
    """
    try:
        prefix, name, payload = bytes(message).split(b" ", 2)
        return prefix, name.decode(), payload
    except (ValueError, UnicodeDecodeError) as err:
        raise WireFormatError(
            f"a 0MQ message is not '<prefix> <name> <document>' ({err}); first bytes "
            f"{bytes(message)[:32]!r}"
        ) from None
